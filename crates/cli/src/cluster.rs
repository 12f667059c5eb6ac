//! Objects read from a live cluster (`--kubeconfig`), with what was read reported on stderr so
//! that stdout stays the same as from files.

use anyhow::{Context, Result};
use cellwall_policy::load::Located;
use std::path::Path;

/// Every object of the kinds Cellwall reads, from `kubeconfig`'s context (or its current one).
pub fn read(kubeconfig: &Path, context: Option<&str>) -> Result<Vec<Located>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the Kubernetes client's runtime")?;
    let c = rt.block_on(cellwall_kube::read_cluster(kubeconfig, context))?;
    let counts: Vec<String> = c
        .counts
        .iter()
        .map(|(r, n)| format!("{n} {}", r.plural))
        .collect();
    eprintln!(
        "read context {:?} ({}): {}",
        c.context,
        c.server,
        counts.join(", ")
    );
    if !c.not_served.is_empty() {
        let names: Vec<String> = c
            .not_served
            .iter()
            .map(|r| format!("{}.{}", r.plural, r.group))
            .collect();
        eprintln!("not served by this cluster (skipped): {}", names.join(", "));
    }
    Ok(c.objects)
}

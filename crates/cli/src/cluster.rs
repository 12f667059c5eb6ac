//! Objects read from a live cluster (`--kubeconfig`), with what was read reported on stderr so
//! that stdout stays the same as from files.

use anyhow::{Context, Result};
use cellwall_policy::load::Located;
use std::path::Path;

/// The objects of the contexts `--context` names (its current one when none): one context as
/// it is; several (or a NAME=) qualified with each cluster's name, as the manager does
/// (`cellwall_policy::clusters`).
pub fn read_all(kubeconfig: &Path, contexts: &[String]) -> Result<Vec<Located>> {
    if contexts.is_empty() {
        return read(kubeconfig, None);
    }
    let named = cellwall_policy::clusters::named_contexts(contexts);
    cellwall_policy::clusters::check_names(named.iter().map(|(n, _)| n.as_deref()))
        .map_err(|e| anyhow::anyhow!("--context: {e}"))?;
    let mut out = Vec::new();
    for (name, ctx) in named {
        let objects = read(kubeconfig, Some(&ctx))?;
        match name {
            Some(name) => out.extend(objects.into_iter().map(|o| Located {
                object: o.object.qualified(&name),
                source: o.source,
            })),
            None => out.extend(objects),
        }
    }
    Ok(out)
}

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

//! `cellwall quarantine`, `release` and `import`.

use super::Target;
use anyhow::{Context, Result};
use cellwall_api::{ImportRequest, QuarantineRequest};
use std::path::PathBuf;
use std::time::Duration;

/// How long `--wait` waits for every node.
const WAIT: Duration = Duration::from_secs(15);

#[derive(clap::Args, Debug)]
pub struct QuarantineArgs {
    /// The workload to cut off, NAMESPACE/NAME.
    #[arg(value_parser = crate::analyze::parse_key)]
    pub workload: cellwall_policy::WorkloadKey,
    /// Management exception: pods with these labels (k=v[,k=v]) in any namespace, or
    /// cidr:ADDR/LEN, may still connect to it (e.g. a forensics host).
    #[arg(long)]
    pub allow_from: Option<String>,
    /// Why (kept in the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait until every node enforces it.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Cuts a workload off in both directions, established connections included, ahead of every
/// allow rule.
pub fn quarantine(a: QuarantineArgs) -> Result<()> {
    let c = a.target.client()?;
    let r = c.quarantine(&QuarantineRequest {
        workload: a.workload.to_string(),
        reason: a.reason,
        allow_from: a.allow_from,
    })?;
    if a.wait {
        c.wait_applied(r.revision, WAIT)?;
    }
    println!("{} quarantined (revision {})", a.workload, r.revision);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[arg(value_parser = crate::analyze::parse_key)]
    pub workload: cellwall_policy::WorkloadKey,
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn release(a: ReleaseArgs) -> Result<()> {
    let c = a.target.client()?;
    let r = c.release(&a.workload.to_string())?;
    if a.wait {
        c.wait_applied(r.revision, WAIT)?;
    }
    println!("{} released (revision {})", a.workload, r.revision);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Name of the source (e.g. cmdb, scanner): labels get the key prefix
    /// SOURCE.import.cellwall.io/ and a new import from the same source replaces the last.
    #[arg(long)]
    pub source: String,
    /// A CSV (header with one of ip, hostname, workload; other columns are labels) or JSON
    /// (array of objects) file, imported now.
    #[arg(short = 'f', long = "filename", conflicts_with = "location")]
    pub file: Option<PathBuf>,
    /// Instead: a path on the manager's host or an http:// URL the manager reads itself.
    #[arg(long, required_unless_present = "file")]
    pub location: Option<String>,
    /// With --location: re-import this often (e.g. 1h); a failed run changes nothing.
    #[arg(long, requires = "location")]
    pub every: Option<String>,
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn import(a: ImportArgs) -> Result<()> {
    let c = a.target.client()?;
    let mut req = ImportRequest {
        source: a.source.clone(),
        location: a.location.clone(),
        every: a.every.clone(),
        ..Default::default()
    };
    if let Some(f) = &a.file {
        req.text = Some(
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?,
        );
        req.file = Some(f.display().to_string());
    }
    let r = c.import(&req)?;
    if a.wait {
        c.wait_applied(r.revision, WAIT)?;
    }
    println!(
        "{}: {} entries, {} workloads labelled, {} entries matched nothing ({}, revision {})",
        a.source,
        r.entries,
        r.matched_workloads,
        r.unmatched_entries,
        r.changes.first().map_or("?", |c| c.action.as_str()),
        r.revision
    );
    Ok(())
}

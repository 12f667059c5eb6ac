//! `cellwall apply` and `cellwall delete`.

use super::{print_structured, Format, Target};
use anyhow::{bail, Result};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest files or directories (same kinds as `cellwall analyze`).
    #[arg(short = 'f', long = "filename", required_unless_present = "draft", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// A reviewed draft (cellwall review): apply writes its approved rules only; delete
    /// deletes the draft.
    #[arg(long, conflicts_with = "files")]
    pub draft: Option<String>,
    /// Wait until every node enforces the change.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long)]
    pub ignore_unknown_kinds: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// Reads manifest files into an apply request, parsing them here first: the same errors as the
/// manager's, without a round trip.
pub fn documents(files: &[PathBuf], ignore_unknown: bool) -> Result<cellwall_api::ApplyRequest> {
    if files.iter().any(|f| f.as_os_str() == "-") {
        bail!("- (standard input) is not supported with the manager yet; pass files");
    }
    let read = cellwall_manifests::read_files(files)?;
    crate::manifests::report_skipped(cellwall_manifests::parse_files(&read, ignore_unknown)?);
    Ok(cellwall_api::ApplyRequest {
        documents: read
            .into_iter()
            .map(|f| cellwall_api::Document {
                file: f.name,
                text: f.text,
            })
            .collect(),
        ignore_unknown_kinds: ignore_unknown,
    })
}

pub fn apply(a: ApplyArgs, delete: bool) -> Result<()> {
    let c = a.target.client()?;
    let parts = match (&a.draft, delete) {
        (Some(name), false) => {
            let r = c.apply_draft(name)?;
            eprintln!(
                "draft {name}: approved rules of {} applied{}",
                r.policies.join(", "),
                if r.left_out.is_empty() {
                    String::new()
                } else {
                    format!("; left out (no rule decided): {}", r.left_out.join(", "))
                }
            );
            vec![r.committed]
        }
        (Some(name), true) => {
            // A draft is not enforced: there is nothing for nodes to apply.
            c.delete_draft(name)?;
            eprintln!("draft {name} deleted (its versions stay in the audit trail)");
            return Ok(());
        }
        (None, _) => c.apply_in_parts(&documents(&a.files, a.ignore_unknown_kinds)?, delete)?,
    };
    if parts.len() > 1 {
        eprintln!(
            "the manifests were larger than the manager takes at once: sent in {} parts, each applied all or nothing",
            parts.len()
        );
    }
    let r = cellwall_api::Committed {
        revision: parts.iter().map(|c| c.revision).max().unwrap_or(0),
        changes: parts.into_iter().flat_map(|c| c.changes).collect(),
    };
    if a.output == Format::Table {
        let mut out = std::io::stdout().lock();
        for ch in &r.changes {
            writeln!(
                out,
                "{} {} {}",
                ch.kind.as_str().to_lowercase(),
                ch.key,
                ch.action.as_str()
            )?;
        }
        writeln!(out, "revision {}", r.revision)?;
    }
    if a.wait {
        let t0 = Instant::now();
        c.wait_applied(r.revision, Duration::from_secs(a.timeout))?;
        if a.output == Format::Table {
            println!("enforced on every node in {:?}", t0.elapsed());
        }
    }
    print_structured(a.output, &r)?;
    Ok(())
}

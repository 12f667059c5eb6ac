//! Manifests as the CLI reads them: [`cellwall_manifests`] with skipped objects reported on
//! stderr.

use anyhow::Result;
pub use cellwall_manifests::{assemble, DEFAULT_POD_POOL};
use cellwall_policy::load::Located;
use std::path::PathBuf;

/// Prints what `--ignore-unknown-kinds` skipped; returns the objects.
pub fn report_skipped(l: cellwall_manifests::Loaded) -> Vec<Located> {
    for u in &l.skipped {
        eprintln!("warning: skipped: {u}");
    }
    l.objects
}

/// Reads and parses every file `paths` expands to.
pub fn load_objects(paths: &[PathBuf], ignore_unknown: bool) -> Result<Vec<Located>> {
    Ok(report_skipped(cellwall_manifests::load_objects(
        paths,
        ignore_unknown,
    )?))
}

//! Talking to the manager's REST API through the typed client of `cellwall-api`, and the
//! kubectl-style commands that do: `apply`, `delete`, `get`, `flows`, `explain`, `quarantine`,
//! `release`, `import`, `alerts`.
//!
//! Where the manager is and which token to use, first match wins: `--server`/`--token`;
//! `CELLWALL_SERVER`/`CELLWALL_TOKEN`; the config file in `--config` or `CELLWALL_CONFIG`;
//! `--lab NAME` (that lab's manager); the manager's default `client.json`
//! (/var/lib/cellwall or ~/.local/share/cellwall); the only lab that is up. An `https://`
//! manager is verified against `--ca`, `CELLWALL_CA` or the config file's `ca`.

mod apply;
mod flows;
mod get;
mod respond;

pub use apply::{apply, documents, ApplyArgs};
#[cfg(feature = "lab")]
pub use flows::flow_line;
pub use flows::{alerts, flows, AlertsArgs, FlowsArgs};
pub use get::{get, GetArgs};
pub use respond::{import, quarantine, release, ImportArgs, QuarantineArgs, ReleaseArgs};

use anyhow::Result;
pub use cellwall_api::client::Client;
use serde::Serialize;
use std::path::PathBuf;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Manager API URL, e.g. http://127.0.0.1:7480 or https://manager.example:7480
    /// [env: CELLWALL_SERVER]
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// Bearer token [env: CELLWALL_TOKEN]
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Client config file ({"server": ..., "token": ..., "ca": ...}) [env: CELLWALL_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// CA certificate (the manager's ca.pem) verifying an https:// manager [env: CELLWALL_CA]
    #[arg(long, global = true, value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Target the manager of this lab.
    #[arg(long = "lab", global = true)]
    pub lab: Option<String>,
}

impl Target {
    /// A client of the manager this target names; warns when its token would cross the
    /// network in clear text (not refused: the manager's operator may have chosen
    /// `--api-insecure-http` behind something that encrypts).
    pub fn client(&self) -> Result<Client> {
        let c = Client::from_target(&cellwall_api::client::Target {
            server: self.server.clone(),
            token: self.token.clone(),
            config: self.config.clone(),
            lab: self.lab.clone(),
            ca: self.ca.clone(),
        })?;
        if c.sends_token_in_clear() {
            eprintln!(
                "warning: {} is plain HTTP beyond this host: the token crosses the network in \
                 clear text (use https:// unless the manager runs with --api-insecure-http \
                 behind something that encrypts)",
                c.server
            );
        }
        Ok(c)
    }
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

/// Prints `v` as JSON (pretty) or YAML; false for the table format (the caller renders it).
pub fn print_structured(format: Format, v: &impl Serialize) -> Result<bool> {
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(v)?),
        Format::Yaml => print!("{}", yaml(v)?),
        Format::Table => return Ok(false),
    }
    Ok(true)
}

/// `v` as YAML text.
pub fn yaml(v: &impl Serialize) -> Result<String> {
    Ok(serde_saphyr::to_string(v)?)
}

/// The name a value serializes to (enums in their wire spelling, e.g. `admin`).
pub fn wire_name(v: &impl Serialize) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        Ok(other) => other.to_string(),
        Err(_) => "?".into(),
    }
}

/// How long ago a Unix-ms time was, shortly.
pub fn age(ms: i64) -> String {
    let s = ((crate::analyze::now_unix() * 1000 - ms) / 1000).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// Seconds left, shortly (`-` when none, `expired` at zero).
pub fn left(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(0) => "expired".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) if s < 172_800 => format!("{}h", s / 3600),
        Some(s) => format!("{}d", s / 86_400),
    }
}

/// Rows as aligned columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let w: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

/// A header row.
pub fn header(cols: &[&str]) -> Vec<String> {
    cols.iter().map(|c| c.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_on_characters_not_bytes() {
        let t = table(&[header(&["A", "B"]), vec!["µs".into(), "x".into()]]);
        assert_eq!(t, "A   B\nµs  x\n");
    }

    #[test]
    fn durations_read_shortly() {
        assert_eq!(left(None), "-");
        assert_eq!(left(Some(0)), "expired");
        assert_eq!(left(Some(90)), "90s");
        assert_eq!(left(Some(600)), "10m");
        assert_eq!(left(Some(36_000)), "10h");
    }
}

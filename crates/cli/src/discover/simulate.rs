//! `cellwall simulate`: replays history against a candidate on the manager, showing progress
//! on large histories, then the classes with the breakage listed first.

use crate::client::{header, table, wire_name, Target};
use anyhow::{bail, Context, Result};
use cellwall_api::{SimulateLine, SimulateRequest, SimulateResult};
use cellwall_policy::discover::{SimClass, SimVerdict};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Candidate policy manifests: added to the policies in force (replacing those of the same
    /// kind, namespace and name).
    #[arg(short = 'f', long = "filename", required_unless_present = "draft", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// The approved rules of a draft (cellwall review), added to the files' policies.
    #[arg(long)]
    pub draft: Option<String>,
    /// History window to replay.
    #[arg(long, default_value = "24h")]
    pub since: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: TableOrJson,
    /// Exit with status 3 when the candidate would reject traffic that happened and is allowed
    /// today (for CI pipelines).
    #[arg(long)]
    pub fail_on_breakage: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Reads the NDJSON answer: progress (shown on large histories), then the result.
fn read_answer(reader: impl std::io::Read) -> Result<SimulateResult> {
    let mut shown = false;
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.context("reading the manager's answer")?;
        match serde_json::from_str(&line).context("the manager sent a malformed line")? {
            SimulateLine::Progress { done, total } => {
                if total >= 50_000 {
                    eprint!(
                        "\rreplaying {done}/{total} flows ({:.0}%)",
                        done as f64 * 100.0 / total as f64
                    );
                    shown = true;
                }
            }
            SimulateLine::Error(e) => bail!("simulation failed: {}", e.message),
            SimulateLine::Result(r) => {
                if shown {
                    eprintln!();
                }
                return Ok(*r);
            }
        }
    }
    bail!("the manager ended the answer without a result")
}

pub fn simulate(a: SimulateArgs) -> Result<()> {
    let c = a.target.client()?;
    let docs = if a.files.is_empty() {
        Vec::new()
    } else {
        crate::client::documents(&a.files, false)?.documents
    };
    let reader = c.post_stream(
        "/v1/simulate",
        &SimulateRequest {
            documents: docs,
            since: Some(a.since.clone()),
            draft: a.draft.clone(),
        },
    )?;
    let r = read_answer(reader)?;
    let mut out = std::io::stdout().lock();
    match a.output {
        TableOrJson::Json => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
        TableOrJson::Table => write!(out, "{}", render(&r, &a.since))?,
    }
    out.flush()?;
    if a.fail_on_breakage && r.breakage > 0 {
        eprintln!(
            "breakage: the candidate rejects {} flows that are allowed today",
            r.breakage
        );
        std::process::exit(3);
    }
    Ok(())
}

const CLASSES: [(SimClass, &str); 5] = [
    (SimClass::Permitted, "happened, and the candidate allows it"),
    (
        SimClass::WouldBeRejected,
        "BREAKAGE: allowed today, the candidate denies it",
    ),
    (
        SimClass::Escaped,
        "happened although the policy in force denies it",
    ),
    (SimClass::Rejected, "denied today and by the candidate"),
    (
        SimClass::WouldBeOpened,
        "denied today, the candidate would allow it",
    ),
];

fn verdict(v: &SimVerdict) -> String {
    format!(
        "{}{}",
        if v.allowed { "allowed" } else { "denied" },
        v.rule
            .as_deref()
            .map(|r| format!(" by {r}"))
            .unwrap_or_default()
    )
}

/// The summary per class, then every flow whose fate changes or that escaped.
fn render(r: &SimulateResult, since: &str) -> String {
    let mut s = format!(
        "Replayed {} aggregated flows of the last {since} against the policies in force and the candidate ({}) in {} ms:\n",
        r.flows,
        r.candidate.join(", "),
        r.replay_ms
    );
    for (class, what) in CLASSES {
        let c = r.summary.get(&class).copied().unwrap_or_default();
        s += &format!(
            "  {:<18} {:>6} flows {:>8} connections  ({what})\n",
            wire_name(&class),
            c.flows,
            c.connections
        );
    }
    let details: Vec<_> = r
        .details
        .iter()
        .filter(|d| !matches!(d.class, SimClass::Permitted | SimClass::Rejected))
        .collect();
    if !details.is_empty() {
        let mut rows = vec![header(&[
            "CLASS",
            "FROM",
            "TO",
            "PORT",
            "CONNECTIONS",
            "TODAY",
            "CANDIDATE",
        ])];
        for d in details {
            rows.push(vec![
                wire_name(&d.class),
                d.src.clone(),
                d.dst.clone(),
                format!("{}/{}", d.protocol, d.port),
                d.connections.to_string(),
                verdict(&d.current),
                verdict(&d.candidate),
            ]);
        }
        s.push('\n');
        s += &table(&rows);
    }
    s
}

//! `cellwall map`, `propose` and `simulate`: the manager computes them from its flow history;
//! this renders them for people and scripts.

use crate::client::{table, Format, Target};
use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::{BufRead, Write};
use std::path::PathBuf;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupBy {
    App,
    Namespace,
    Workload,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOutput {
    Table,
    Json,
    Dot,
}

#[derive(clap::Args, Debug)]
pub struct MapArgs {
    /// History window: 30m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Map nodes: applications (by app label), namespaces, or single workloads.
    #[arg(long, value_enum, default_value = "app")]
    pub group_by: GroupBy,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: MapOutput,
    #[command(flatten)]
    pub target: Target,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        o => o.to_string(),
    }
}

pub fn map(a: MapArgs) -> Result<()> {
    let c = a.target.client()?;
    let v: Value = c.get_json(
        "/v1/map",
        &[
            ("since", a.since.clone()),
            ("group_by", format!("{:?}", a.group_by).to_lowercase()),
            (
                "format",
                if a.output == MapOutput::Dot {
                    "dot"
                } else {
                    "json"
                }
                .into(),
            ),
        ],
    )?;
    match a.output {
        MapOutput::Json => println!("{}", serde_json::to_string_pretty(&v["map"])?),
        MapOutput::Dot => print!("{}", v["dot"].as_str().unwrap_or("")),
        MapOutput::Table => {
            let nodes = v["map"]["nodes"].as_array().cloned().unwrap_or_default();
            let edges = v["map"]["edges"].as_array().cloned().unwrap_or_default();
            let mut rows = vec![[
                "FROM",
                "TO",
                "PORT",
                "ALLOWED",
                "DENIED",
                "AUDIT",
                "DECIDED BY",
            ]
            .map(String::from)
            .to_vec()];
            for e in &edges {
                let rules: Vec<String> =
                    e["rules"].as_array().into_iter().flatten().map(s).collect();
                rows.push(vec![
                    s(&e["src"]),
                    s(&e["dst"]),
                    format!("{}/{}", s(&e["protocol"]), e["port"]),
                    s(&e["allowed"]),
                    s(&e["denied"]),
                    s(&e["audit"]),
                    if rules.is_empty() {
                        "-".into()
                    } else {
                        rules.join("; ")
                    },
                ]);
            }
            print!("{}", table(&rows));
            println!(
                "{} services, {} edges in the last {}",
                nodes.len(),
                edges.len(),
                a.since
            );
        }
    }
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProposalFormat {
    Cellwall,
    Networkpolicy,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum YamlOrJson {
    Yaml,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct ProposeArgs {
    /// History window the proposal learns from.
    #[arg(long, default_value = "24h")]
    pub since: String,
    /// Only propose policies for workloads of this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Cellwall's own Policy kind, or standard Kubernetes NetworkPolicy.
    #[arg(long, value_enum, default_value = "cellwall")]
    pub format: ProposalFormat,
    /// Rules seen fewer times than this are flagged for review.
    #[arg(long, default_value_t = 3)]
    pub review_below: u64,
    /// yaml: manifests with each rule's evidence as comments; json: a v1 List whose policies
    /// carry their evidence in the cellwall.io/evidence annotation. Both apply as they are.
    #[arg(short = 'o', long = "output", value_enum, default_value = "yaml")]
    pub output: YamlOrJson,
    #[command(flatten)]
    pub target: Target,
}

pub fn propose(a: ProposeArgs) -> Result<()> {
    let c = a.target.client()?;
    let mut q = vec![
        ("since", a.since.clone()),
        ("format", format!("{:?}", a.format).to_lowercase()),
        ("review_below", a.review_below.to_string()),
    ];
    if let Some(ns) = &a.namespace {
        q.push(("namespace", ns.clone()));
    }
    let v: Value = c.get_json("/v1/propose", &q)?;
    let yaml = v["yaml"].as_str().unwrap_or("");
    let policies = v["proposal"]["policies"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let review = policies
        .iter()
        .flat_map(|p| {
            p["ingress"]
                .as_array()
                .into_iter()
                .chain(p["egress"].as_array())
                .flatten()
        })
        .filter(|r| r["evidence"]["review"] == true)
        .count();
    eprintln!(
        "{} policies from {} observed connections ({} rules flagged for review, {} flows excluded)",
        policies.len(),
        v["proposal"]["flows_considered"],
        review,
        v["proposal"]["excluded"]
            .as_array()
            .map(|e| e.len())
            .unwrap_or(0)
    );
    match a.output {
        YamlOrJson::Yaml => print!("{yaml}"),
        YamlOrJson::Json => {
            let mut items = Vec::new();
            let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
                .context("the manager's proposal is not valid YAML")?;
            for (mut item, p) in docs.into_iter().zip(&policies) {
                item["metadata"]["annotations"] = json!({
                    "cellwall.io/evidence": serde_json::to_string(&json!({
                        "ingress": p["ingress"], "egress": p["egress"],
                    }))?,
                });
                items.push(item);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&json!({
                    "apiVersion": "v1", "kind": "List", "items": items,
                    "excluded": v["proposal"]["excluded"],
                }))?
            );
        }
    }
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableOrJson {
    Table,
    Json,
}

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Candidate policy manifests: added to the policies in force (replacing those of the same
    /// kind, namespace and name).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
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

pub fn simulate(a: SimulateArgs) -> Result<()> {
    let c = a.target.client()?;
    let docs = crate::client::documents(&a.files, false)?.documents;
    let reader = c.post_stream(
        "/v1/simulate",
        &json!({"documents": docs, "since": a.since}),
    )?;
    let mut result = None;
    let mut shown = false;
    for line in std::io::BufReader::new(reader).lines() {
        let line = line.context("reading the manager's answer")?;
        let v: Value = serde_json::from_str(&line).context("the manager sent a malformed line")?;
        if let Some(p) = v.get("progress") {
            let (done, total) = (
                p["done"].as_u64().unwrap_or(0),
                p["total"].as_u64().unwrap_or(0),
            );
            if total >= 50_000 {
                eprint!(
                    "\rreplaying {done}/{total} flows ({:.0}%)",
                    done as f64 * 100.0 / total as f64
                );
                shown = true;
            }
        } else if let Some(e) = v.get("error") {
            bail!("simulation failed: {}", s(&e["message"]));
        } else if let Some(r) = v.get("result") {
            result = Some(r.clone());
        }
    }
    if shown {
        eprintln!();
    }
    let r = result.context("the manager ended the answer without a result")?;
    let mut out = std::io::stdout().lock();
    match a.output {
        TableOrJson::Json => writeln!(out, "{}", serde_json::to_string_pretty(&r)?)?,
        TableOrJson::Table => {
            writeln!(
                out,
                "Replayed {} aggregated flows of the last {} against the policies in force and the candidate ({}) in {} ms:",
                r["flows"],
                a.since,
                r["candidate"].as_array().map(|c| c.iter().map(s).collect::<Vec<_>>().join(", ")).unwrap_or_default(),
                r["replay_ms"]
            )?;
            for (class, what) in [
                ("permitted", "happened, and the candidate allows it"),
                (
                    "would-be-rejected",
                    "BREAKAGE: allowed today, the candidate denies it",
                ),
                ("escaped", "happened although the policy in force denies it"),
                ("rejected", "denied today and by the candidate"),
                (
                    "would-be-opened",
                    "denied today, the candidate would allow it",
                ),
            ] {
                let c = &r["summary"][class];
                writeln!(
                    out,
                    "  {:<18} {:>6} flows {:>8} connections  ({what})",
                    class,
                    c["flows"].as_u64().unwrap_or(0),
                    c["connections"].as_u64().unwrap_or(0)
                )?;
            }
            let details: Vec<&Value> = r["details"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|d| d["class"] != "permitted" && d["class"] != "rejected")
                .collect();
            if !details.is_empty() {
                let mut rows = vec![[
                    "CLASS",
                    "FROM",
                    "TO",
                    "PORT",
                    "CONNECTIONS",
                    "TODAY",
                    "CANDIDATE",
                ]
                .map(String::from)
                .to_vec()];
                let verdict = |v: &Value| {
                    format!(
                        "{}{}",
                        if v["allowed"] == true {
                            "allowed"
                        } else {
                            "denied"
                        },
                        v["rule"]
                            .as_str()
                            .map(|r| format!(" by {r}"))
                            .unwrap_or_default()
                    )
                };
                for d in details {
                    rows.push(vec![
                        s(&d["class"]),
                        s(&d["src"]),
                        s(&d["dst"]),
                        format!("{}/{}", s(&d["protocol"]), d["port"]),
                        s(&d["connections"]),
                        verdict(&d["current"]),
                        verdict(&d["candidate"]),
                    ]);
                }
                writeln!(out)?;
                out.write_all(table(&rows).as_bytes())?;
            }
        }
    }
    out.flush()?;
    if a.fail_on_breakage && r["breakage"].as_u64().unwrap_or(0) > 0 {
        eprintln!(
            "breakage: the candidate rejects {} flows that are allowed today",
            r["breakage"]
        );
        std::process::exit(3);
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[arg(value_parser = crate::analyze::parse_key)]
    pub from: cellwall_policy::WorkloadKey,
    #[arg(value_parser = crate::analyze::parse_key)]
    pub to: cellwall_policy::WorkloadKey,
    /// PROTO/PORT, e.g. TCP/5432.
    #[arg(value_parser = crate::analyze::parse_probe)]
    pub probe: (cellwall_policy::Protocol, u16),
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

pub fn explain(a: ExplainArgs) -> Result<()> {
    let c = a.target.client()?;
    let v: Value = c.get_json(
        "/v1/explain",
        &[
            ("from", a.from.to_string()),
            ("to", a.to.to_string()),
            ("probe", format!("{}/{}", a.probe.0, a.probe.1)),
        ],
    )?;
    match a.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v["explanation"])?),
        Format::Yaml => print!("{}", crate::client::yaml(&v["explanation"])?),
        Format::Table => print!("{}", v["text"].as_str().unwrap_or("")),
    }
    Ok(())
}

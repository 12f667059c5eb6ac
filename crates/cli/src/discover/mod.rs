//! `cellwall map`, `propose`, `simulate` and `explain`: the manager computes them from its flow
//! history and the policy in force; this renders them for people and scripts.

mod propose;
mod review;
mod simulate;

pub use propose::{propose, ProposeArgs};
pub use review::{review, ReviewArgs};
pub use simulate::{simulate, SimulateArgs};

use crate::client::{header, print_structured, table, wire_name, Format, Target};
use anyhow::Result;
use cellwall_api::{ExplainQuery, GroupBy, MapFormat, MapQuery};

/// `--group-by`'s help, shared by `map` and `propose`.
pub const GROUP_BY_HELP: &str = "How workloads are grouped into applications. auto (default): \
the controller (Deployment, StatefulSet, DaemonSet, Job), else the well-known labels \
(app.kubernetes.io/name, instance, component, app, k8s-app, name, component, role, env), then \
behaviour: members that serve or call different ports are split when a label tells them apart. \
Overrides: label:KEY[,KEY], owner, workload, namespace, app (the app label alone)";

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
    #[arg(long, default_value = "auto", help = GROUP_BY_HELP)]
    pub group_by: GroupBy,
    /// Print the groups (members, the evidence that decided, splits) instead of the edges.
    #[arg(long)]
    pub groups: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: MapOutput,
    #[command(flatten)]
    pub target: Target,
}

pub fn map(a: MapArgs) -> Result<()> {
    let c = a.target.client()?;
    let v = c.dependency_map(&MapQuery {
        since: Some(a.since.clone()),
        group_by: Some(a.group_by.clone()),
        format: (a.output == MapOutput::Dot).then_some(MapFormat::Dot),
    })?;
    match a.output {
        MapOutput::Json => println!("{}", serde_json::to_string_pretty(&v.map)?),
        MapOutput::Dot => print!("{}", v.dot.unwrap_or_default()),
        MapOutput::Table if a.groups => {
            let mut rows = vec![header(&["GROUP", "EVIDENCE", "MEMBERS", "SPLIT"])];
            for n in &v.map.nodes {
                rows.push(vec![
                    n.id.clone(),
                    n.evidence.clone().unwrap_or_else(|| "network".into()),
                    n.members.iter().cloned().collect::<Vec<_>>().join(","),
                    n.split.clone().unwrap_or_else(|| "-".into()),
                ]);
            }
            print!("{}", table(&rows));
        }
        MapOutput::Table => {
            let mut rows = vec![header(&[
                "FROM",
                "TO",
                "PORT",
                "ALLOWED",
                "DENIED",
                "AUDIT",
                "DECIDED BY",
            ])];
            for e in &v.map.edges {
                rows.push(vec![
                    e.src.clone(),
                    e.dst.clone(),
                    format!("{}/{}", e.protocol, e.port),
                    e.allowed.to_string(),
                    e.denied.to_string(),
                    e.audit.to_string(),
                    if e.rules.is_empty() {
                        "-".into()
                    } else {
                        e.rules.iter().cloned().collect::<Vec<_>>().join("; ")
                    },
                ]);
            }
            print!("{}", table(&rows));
            println!(
                "{} services, {} edges in the last {}",
                v.map.nodes.len(),
                v.map.edges.len(),
                a.since
            );
        }
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[arg(value_parser = crate::analyze::parse_key)]
    pub from: cellwall_policy::WorkloadKey,
    /// NS/POD, an IP address, or a DNS name (FQDN policy: explained at the address the latest
    /// recorded flow to it went to, with the names recorded then; NAME=IP gives the address).
    pub to: String,
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
    let v = c.explain(&ExplainQuery {
        from: a.from.to_string(),
        to: a.to.clone(),
        probe: format!("{}/{}", wire_name(&a.probe.0), a.probe.1),
    })?;
    if !print_structured(a.output, &v.explanation)? {
        print!("{}", v.text);
    }
    Ok(())
}

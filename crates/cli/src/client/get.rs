//! `cellwall get`: one renderer per resource, each from its typed list.

use super::{age, header, left, print_structured, table, wire_name, Format, Target};
use anyhow::Result;
use cellwall_api::*;
use std::collections::BTreeMap;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    #[value(alias = "policy")]
    Policies,
    #[value(alias = "workload", alias = "pods")]
    Workloads,
    #[value(alias = "node")]
    Nodes,
    #[value(alias = "ns", alias = "namespace")]
    Namespaces,
    /// Who changed what and when.
    Audit,
    /// Workloads in quarantine.
    #[value(alias = "quarantine")]
    Quarantines,
    /// Label imports (sources, schedules).
    Imports,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub resource: Resource,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

pub fn get(a: GetArgs) -> Result<()> {
    let c = a.target.client()?;
    /// Prints `v` structured, or its rows.
    fn show<T: serde::Serialize>(
        f: Format,
        v: T,
        rows: impl Fn(&T) -> Vec<Vec<String>>,
    ) -> Result<()> {
        if !print_structured(f, &v)? {
            print!("{}", table(&rows(&v)));
        }
        Ok(())
    }
    let f = a.output;
    match a.resource {
        Resource::Policies => show(f, c.policies()?, policy_rows),
        Resource::Workloads => show(f, c.workloads()?, workload_rows),
        Resource::Nodes => show(f, c.nodes()?, node_rows),
        Resource::Namespaces => show(f, c.namespaces()?, namespace_rows),
        Resource::Audit => show(f, c.audit(100)?, audit_rows),
        Resource::Quarantines => show(f, c.quarantines()?, quarantine_rows),
        Resource::Imports => show(f, c.imports()?, import_rows),
    }
}

/// Labels as `k=v,...`, without the automatic namespace-name label.
fn labels(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .filter(|(k, _)| *k != "kubernetes.io/metadata.name")
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn policy_rows(l: &PolicyList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "POLICY",
        "TIER",
        "MODE",
        "RULES",
        "VERSION",
        "CHANGED BY",
        "AGE",
        "EXPIRES IN",
    ])];
    for p in &l.items {
        rows.push(vec![
            p.id.clone(),
            wire_name(&p.tier),
            wire_name(&p.mode),
            p.rules.to_string(),
            p.version.to_string(),
            p.changed_by.clone(),
            age(p.changed_at_ms),
            left(p.seconds_left),
        ]);
    }
    rows
}

fn workload_rows(l: &WorkloadList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["WORKLOAD", "NODE", "IPS", "LABELS"])];
    for w in &l.items {
        rows.push(vec![
            w.key().to_string(),
            w.node.clone().unwrap_or_else(|| "-".into()),
            w.ips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            labels(&w.labels),
        ]);
    }
    rows
}

fn namespace_rows(l: &NamespaceList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["NAMESPACE", "LABELS"])];
    for n in &l.items {
        rows.push(vec![n.name.clone(), labels(&n.labels)]);
    }
    rows
}

fn node_rows(l: &NodeList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "NODE",
        "APPLIED",
        "LAG",
        "LAST APPLY",
        "SEEN",
        "WORKLOADS",
        "FLOW LOSS",
        "REFUSED",
        "CERT",
        "ERROR",
    ])];
    let now_ms = crate::analyze::now_unix() * 1000;
    for n in &l.items {
        let loss = n.kernel_events_lost + n.agent_records_dropped;
        // Refused reports and flow records: what a misbehaving (or compromised) node sent.
        let refused = format!("{}/{}", n.refused.reports, n.refused.flows);
        let cert = match (n.has_cert, n.cert_expires_ms) {
            (false, _) => "withdrawn".into(),
            (true, None) => "no expiry".into(),
            (true, Some(ms)) if ms <= now_ms => "expired".into(),
            (true, Some(ms)) => format!("{} left", super::left(Some((ms - now_ms) / 1000))),
        };
        rows.push(vec![
            n.name.clone(),
            format!("{}/{}", n.applied_version, l.revision),
            match n.pending_ms {
                // A compile (or an unreachable node) in progress, and for how long.
                Some(ms) if n.lag > 0 => format!("{} (pending {:.1}s)", n.lag, ms as f64 / 1e3),
                _ => n.lag.to_string(),
            },
            format!("{}µs", n.apply_micros),
            format!("{}s ago", n.seconds_since_seen),
            n.workloads.len().to_string(),
            format!("{loss} ({} batches missed)", n.flow_batches_missed),
            refused,
            cert,
            if n.last_error.is_empty() {
                "-".into()
            } else {
                n.last_error.clone()
            },
        ]);
    }
    rows
}

fn quarantine_rows(l: &QuarantineList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&["WORKLOAD", "SINCE", "BY", "EXCEPTION", "REASON"])];
    for q in &l.items {
        rows.push(vec![
            q.workload.clone(),
            age(q.since_ms) + " ago",
            q.by.clone(),
            q.allow_from.clone().unwrap_or_else(|| "-".into()),
            q.reason.clone(),
        ]);
    }
    rows
}

fn import_rows(l: &ImportList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "SOURCE", "ENTRIES", "FROM", "EVERY", "VERSION", "BY", "AGE",
    ])];
    for i in &l.items {
        rows.push(vec![
            i.source.clone(),
            i.entries.to_string(),
            i.origin.clone(),
            i.every_ms
                .map(|ms| format!("{}s", ms / 1000))
                .unwrap_or("-".into()),
            i.version.to_string(),
            i.by.clone(),
            age(i.changed_at_ms),
        ]);
    }
    rows
}

fn audit_rows(l: &AuditLog) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "REVISION", "WHEN", "WHO", "KIND", "OBJECT", "VERSION", "CHANGE",
    ])];
    for e in &l.changes {
        rows.push(vec![
            e.revision.to_string(),
            age(e.at_ms) + " ago",
            e.actor.clone(),
            e.kind.as_str().to_string(),
            e.key.clone(),
            e.version.to_string(),
            if e.deleted {
                "deleted"
            } else if e.version == 1 {
                "created"
            } else {
                "configured"
            }
            .into(),
        ]);
    }
    rows
}

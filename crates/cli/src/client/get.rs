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
    /// Rule hygiene: each rule in force with the connections it decided (--since), unused
    /// and overly broad rules flagged.
    #[value(alias = "rule")]
    Rules,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub resource: Resource,
    /// With policies: list the rules nothing hit in this window instead (e.g. 30d).
    #[arg(long, value_name = "DURATION")]
    pub unused: Option<String>,
    /// With rules: the history window counted.
    #[arg(long, default_value = "7d")]
    pub since: String,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// Prints `v` structured, or its rows.
fn show<T: serde::Serialize>(f: Format, v: T, rows: impl Fn(&T) -> Vec<Vec<String>>) -> Result<()> {
    if !print_structured(f, &v)? {
        print!("{}", table(&rows(&v)));
    }
    Ok(())
}

pub fn get(a: GetArgs) -> Result<()> {
    let c = a.target.client()?;
    let f = a.output;
    match (a.resource, a.unused) {
        (Resource::Policies, Some(window)) => {
            let q = RulesQuery {
                since: Some(window),
                unused: Some(true),
            };
            show(f, c.rules(&q)?, rule_rows)
        }
        (Resource::Rules, _) => {
            let q = RulesQuery {
                since: Some(a.since.clone()),
                unused: None,
            };
            show(f, c.rules(&q)?, rule_rows)
        }
        (r, Some(_)) => anyhow::bail!("--unused applies to policies only, not {r:?}"),
        (r, None) => get_one(&c, f, r),
    }
}

fn get_one(c: &cellwall_api::client::Client, f: Format, r: Resource) -> Result<()> {
    match r {
        Resource::Rules => unreachable!("handled by get"),
        Resource::Policies => show(f, c.policies()?, policy_rows),
        Resource::Workloads => show(f, c.workloads()?, workload_rows),
        Resource::Nodes => show(f, c.nodes()?, node_rows),
        Resource::Namespaces => show(f, c.namespaces()?, namespace_rows),
        Resource::Audit => show(f, c.audit(100)?, audit_rows),
        Resource::Quarantines => show(f, c.quarantines()?, quarantine_rows),
        Resource::Imports => show(f, c.imports()?, import_rows),
    }
}

fn rule_rows(l: &RuleList) -> Vec<Vec<String>> {
    let mut rows = vec![header(&[
        "RULE",
        "ACTION",
        "CONNECTIONS",
        "LAST HIT",
        "PEERS",
        "FLAGS",
    ])];
    for r in &l.items {
        let mut flags = Vec::new();
        if r.unused {
            flags.push(format!("unused in {}", l.since));
        }
        if let Some(b) = &r.broad {
            flags.push(format!("broad: {b}"));
        }
        if let Some(s) = &r.shadowed {
            flags.push(format!("never decides: {s}"));
        }
        rows.push(vec![
            r.rule.clone(),
            r.action.clone(),
            r.connections.to_string(),
            r.last_ns
                .map(|t| cellwall_policy::de::format_rfc3339((t / 1_000_000_000) as i64))
                .unwrap_or_else(|| "-".into()),
            r.peers.join(","),
            if flags.is_empty() {
                "-".into()
            } else {
                flags.join("; ")
            },
        ]);
    }
    rows
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

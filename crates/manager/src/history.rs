//! Flow history: agents' per-direction records become connections, attributed to workloads by
//! the labels they had at that moment, aggregated per minute. The map, proposals and simulation
//! read it back summed over a time window.

use crate::store::{FlowRow, HistRow};
use cellwall_policy::discover::{Endpoint, HistFlow, Observed};
use cellwall_policy::{Protocol, Workload};
use std::collections::{BTreeMap, HashMap};

/// History is kept per minute.
pub const BUCKET_NS: u64 = 60_000_000_000;

#[derive(Default)]
struct Dirs {
    /// [egress, ingress] × [allowed, denied, audit]
    n: [[u64; 3]; 2],
    rule: [[Option<String>; 3]; 2],
    first: u64,
    last: u64,
}

fn endpoint(index: &HashMap<String, std::sync::Arc<Workload>>, name: &str, ip: &str) -> Endpoint {
    match index.get(name) {
        Some(w) => Endpoint::Workload {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            labels: w.labels.clone(),
        },
        None => Endpoint::External {
            ip: ip
                .parse()
                .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)),
        },
    }
}

/// Connections from one batch of per-direction records. A connection between two policed
/// workloads is seen twice (leaving its source, entering its destination); it counts once:
/// denied if either side denied it, audit if either side's audit policy would have.
/// `index`: the published revision's workloads by `namespace/name`.
pub fn connections(
    index: &HashMap<String, std::sync::Arc<Workload>>,
    rows: &[FlowRow],
) -> Vec<HistRow> {
    let mut by: BTreeMap<(String, String, String, String, String, u16), Dirs> = BTreeMap::new();
    for r in rows {
        let v = match r.verdict.as_str() {
            "allowed" => 0,
            "denied" => 1,
            "audit" => 2,
            _ => continue, // revocations end connections already counted
        };
        let d = if r.direction == "egress" { 0 } else { 1 };
        let e = by
            .entry((
                r.src.clone(),
                r.dst.clone(),
                r.src_ip.clone(),
                r.dst_ip.clone(),
                r.protocol.clone(),
                r.port,
            ))
            .or_insert_with(|| Dirs {
                first: r.time_unix_ns,
                last: r.time_unix_ns,
                ..Default::default()
            });
        e.n[d][v] += r.count;
        if r.rule.is_some() {
            e.rule[d][v] = r.rule.clone();
        }
        e.first = e.first.min(r.time_unix_ns);
        e.last = e.last.max(r.time_unix_ns);
    }
    let mut out = Vec::new();
    for ((src, dst, sip, dip, proto, port), d) in by {
        let [eg, ing] = d.n;
        let denied = eg[1] + ing[1];
        let audit = eg[2].max(ing[2]);
        let allowed = ing[0]
            .saturating_sub(eg[2])
            .max(eg[0].saturating_sub(ing[1] + ing[2]));
        let Some(protocol) = Protocol::parse(&proto) else {
            continue;
        };
        let (s, t) = (endpoint(index, &src, &sip), endpoint(index, &dst, &dip));
        for (v, n, rule) in [
            (
                Observed::Allowed,
                allowed,
                d.rule[1][0].clone().or(d.rule[0][0].clone()),
            ),
            (
                Observed::Denied,
                denied,
                d.rule[0][1].clone().or(d.rule[1][1].clone()),
            ),
            (
                Observed::Audit,
                audit,
                d.rule[1][2].clone().or(d.rule[0][2].clone()),
            ),
        ] {
            if n == 0 {
                continue;
            }
            out.push(HistRow {
                bucket: d.first / BUCKET_NS,
                flow: HistFlow {
                    src: s.clone(),
                    dst: t.clone(),
                    protocol,
                    port,
                    observed: v,
                    rule,
                    connections: n,
                    first_ns: d.first,
                    last_ns: d.last,
                },
            });
        }
    }
    out
}

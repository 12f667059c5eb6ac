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
    // Keys borrow from the records: a batch is thousands of them.
    let mut by: BTreeMap<(&str, &str, &str, &str, &str, u16), Dirs> = BTreeMap::new();
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
                r.src.as_str(),
                r.dst.as_str(),
                r.src_ip.as_str(),
                r.dst_ip.as_str(),
                r.protocol.as_str(),
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
        let Some(protocol) = Protocol::parse(proto) else {
            continue;
        };
        let (s, t) = (endpoint(index, src, sip), endpoint(index, dst, dip));
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

/// Connections waiting to be written to the per-minute history, summed: steady traffic repeats
/// the same connections every few seconds, so the store and the compliance checks see each
/// connection once per flush instead of once per agent batch.
#[derive(Default)]
pub struct Buffer {
    /// Key hash → indices into `rows` (the key holds labelled endpoints: hashed, not copied).
    by_hash: HashMap<u64, Vec<usize>>,
    rows: Vec<HistRow>,
}

fn key_hash(r: &HistRow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let f = &r.flow;
    (
        r.bucket, &f.src, &f.dst, f.protocol, f.port, f.observed, &f.rule,
    )
        .hash(&mut h);
    h.finish()
}

fn same_key(a: &HistRow, b: &HistRow) -> bool {
    let (x, y) = (&a.flow, &b.flow);
    a.bucket == b.bucket
        && x.port == y.port
        && x.protocol == y.protocol
        && x.observed == y.observed
        && x.rule == y.rule
        && x.src == y.src
        && x.dst == y.dst
}

impl Buffer {
    pub fn add(&mut self, rows: Vec<HistRow>) {
        let Buffer {
            by_hash,
            rows: held,
        } = self;
        for r in rows {
            let slot = by_hash.entry(key_hash(&r)).or_default();
            match slot.iter().find(|i| same_key(&held[**i], &r)) {
                Some(i) => {
                    let f = &mut held[*i].flow;
                    f.connections += r.flow.connections;
                    f.first_ns = f.first_ns.min(r.flow.first_ns);
                    f.last_ns = f.last_ns.max(r.flow.last_ns);
                }
                None => {
                    slot.push(held.len());
                    held.push(r);
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    pub fn take(&mut self) -> Vec<HistRow> {
        self.by_hash.clear();
        std::mem::take(&mut self.rows)
    }
}

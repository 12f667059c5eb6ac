//! Flow history: agents' per-direction records become connections, attributed to workloads by
//! the labels they had at that moment, aggregated per minute. The map, proposals and simulation
//! read it back summed over a time window.

pub use crate::store::BUCKET_NS;
use crate::store::{FlowDirection, FlowRow, HistRow, Verdict};
use cellwall_policy::discover::{Endpoint, HistFlow, Observed};
use cellwall_policy::{Protocol, Workload};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Default)]
struct Dirs {
    /// [egress, ingress] × [allowed, denied, audit]
    n: [[u64; 3]; 2],
    rule: [[Option<String>; 3]; 2],
    first: u64,
    last: u64,
    /// The destination's DNS names, as the first record that had any reported them.
    dst_names: Vec<String>,
}

fn endpoint(
    index: &HashMap<String, Arc<Workload>>,
    name: &str,
    ip: IpAddr,
    names: &[String],
) -> Endpoint {
    match index.get(name) {
        Some(w) => Endpoint::Workload {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            labels: cellwall_policy::Labels::clone(&w.labels),
        },
        None => Endpoint::External {
            ip,
            names: names.to_vec(),
        },
    }
}

/// The connections in `rows`, attributed with `index` (see [`Buffer`]).
pub fn connections(index: &HashMap<String, Arc<Workload>>, rows: &[FlowRow]) -> Vec<HistRow> {
    let mut b = Buffer::default();
    b.add(0, rows);
    b.take(|_| Some(index))
}

/// What identifies a connection in the buffer: its minute, the revision whose labels attribute
/// it, its ends by name and address, protocol and port.
#[derive(PartialEq, Eq, Hash)]
struct Key {
    bucket: u64,
    revision: u64,
    src: String,
    dst: String,
    src_ip: IpAddr,
    dst_ip: IpAddr,
    protocol: String,
    port: u16,
}

/// Per-direction records waiting to become per-minute history, summed by connection: steady
/// traffic repeats the same connections every few seconds, so the store and the compliance
/// checks see each connection once per flush instead of once per agent batch, and records cost
/// a hash of their names here (workload labels are attached once per connection, at flush).
///
/// A connection between two policed workloads is reported twice (leaving its source, entering
/// its destination, often by two agents); it counts once: denied if either side denied it,
/// audit if either side's audit policy would have.
#[derive(Default)]
pub struct Buffer {
    /// Hash of a record's key → indices into `keys`/`dirs` (looked up without building a key).
    by_hash: HashMap<u64, Vec<usize>>,
    keys: Vec<Key>,
    dirs: Vec<Dirs>,
}

fn record_hash(bucket: u64, revision: u64, r: &FlowRow) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        bucket,
        revision,
        &r.src,
        &r.dst,
        &r.src_ip,
        &r.dst_ip,
        &r.protocol,
        r.port,
    )
        .hash(&mut h);
    h.finish()
}

impl Buffer {
    /// Adds records seen while `revision` was published (its labels attribute them).
    pub fn add(&mut self, revision: u64, rows: &[FlowRow]) {
        let Buffer {
            by_hash,
            keys,
            dirs,
        } = self;
        for r in rows {
            let v = match r.verdict {
                Verdict::Allowed => 0,
                Verdict::Denied => 1,
                Verdict::Audit => 2,
                Verdict::Revoked => continue, // revocations end connections already counted
            };
            let d = match r.direction {
                FlowDirection::Egress => 0,
                FlowDirection::Ingress => 1,
            };
            let bucket = r.time_unix_ns / BUCKET_NS;
            let slot = by_hash.entry(record_hash(bucket, revision, r)).or_default();
            let found = slot.iter().copied().find(|i| {
                let k = &keys[*i];
                k.bucket == bucket
                    && k.revision == revision
                    && k.port == r.port
                    && k.src == r.src
                    && k.dst == r.dst
                    && k.src_ip == r.src_ip
                    && k.dst_ip == r.dst_ip
                    && k.protocol == r.protocol
            });
            let i = match found {
                Some(i) => i,
                None => {
                    slot.push(keys.len());
                    keys.push(Key {
                        bucket,
                        revision,
                        src: r.src.clone(),
                        dst: r.dst.clone(),
                        src_ip: r.src_ip,
                        dst_ip: r.dst_ip,
                        protocol: r.protocol.clone(),
                        port: r.port,
                    });
                    dirs.push(Dirs {
                        first: r.time_unix_ns,
                        last: r.time_unix_ns,
                        ..Default::default()
                    });
                    keys.len() - 1
                }
            };
            let e = &mut dirs[i];
            e.n[d][v] = e.n[d][v].saturating_add(r.count);
            if r.rule.is_some() && e.rule[d][v] != r.rule {
                e.rule[d][v] = r.rule.clone();
            }
            e.first = e.first.min(r.time_unix_ns);
            e.last = e.last.max(r.time_unix_ns);
            if e.dst_names.is_empty() && !r.dst_names.is_empty() {
                e.dst_names.clone_from(&r.dst_names);
            }
        }
    }

    /// Connections waiting.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Empties the buffer into history rows; `index(revision)` gives the workloads of a
    /// revision by `namespace/name` (ends it does not know are external addresses).
    pub fn take<'a>(
        &mut self,
        index: impl Fn(u64) -> Option<&'a HashMap<String, Arc<Workload>>>,
    ) -> Vec<HistRow> {
        self.by_hash.clear();
        let keys = std::mem::take(&mut self.keys);
        let dirs = std::mem::take(&mut self.dirs);
        let empty = HashMap::new();
        let mut out = Vec::new();
        for (k, d) in keys.into_iter().zip(dirs) {
            let idx = index(k.revision).unwrap_or(&empty);
            let [eg, ing] = d.n;
            let denied = eg[1].saturating_add(ing[1]);
            let audit = eg[2].max(ing[2]);
            let allowed = ing[0]
                .saturating_sub(eg[2])
                .max(eg[0].saturating_sub(ing[1].saturating_add(ing[2])));
            let Some(protocol) = Protocol::parse(&k.protocol) else {
                continue;
            };
            let (s, t) = (
                endpoint(idx, &k.src, k.src_ip, &[]),
                endpoint(idx, &k.dst, k.dst_ip, &d.dst_names),
            );
            let [[ea, ed, eu], [ia, id, iu]] = d.rule;
            for (v, n, rule) in [
                (Observed::Allowed, allowed, ia.or(ea)),
                (Observed::Denied, denied, ed.or(id)),
                (Observed::Audit, audit, iu.or(eu)),
            ] {
                if n == 0 {
                    continue;
                }
                out.push(HistRow {
                    bucket: k.bucket,
                    flow: HistFlow {
                        src: s.clone(),
                        dst: t.clone(),
                        protocol,
                        port: k.port,
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
}

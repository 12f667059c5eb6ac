//! Flow records: kernel events aggregated per collection interval, and the bounded queue that
//! holds them for the manager. A long outage cannot exhaust memory: what does not fit is
//! counted as dropped (exported, and reported to the manager in every batch), never lost
//! silently.

use crate::node::Attribution;
use cellwall_datapath::{abi, ktime_to_unix_ns, Event};
use cellwall_proto::{Direction, FlowRecord, Verdict};
use prometheus_client::metrics::counter::Counter;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Flow records waiting for the manager.
#[derive(Debug)]
pub struct FlowQueue {
    q: Mutex<VecDeque<FlowRecord>>,
    cap: usize,
    /// Connections (records weighted by their count) that did not fit.
    dropped: Counter,
    /// Batches sent in this run (the manager spots gaps).
    seq: AtomicU64,
}

impl FlowQueue {
    /// A queue of at most `cap` records counting what does not fit into `dropped`.
    pub fn new(cap: usize, dropped: Counter) -> Self {
        Self {
            q: Mutex::new(VecDeque::new()),
            cap,
            dropped,
            seq: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<FlowRecord>> {
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `recs`; returns how many connections were dropped for lack of room.
    pub fn push(&self, recs: Vec<FlowRecord>) -> u64 {
        let mut q = self.lock();
        let mut dropped = 0;
        for r in recs {
            if q.len() >= self.cap {
                dropped += r.count.max(1);
            } else {
                q.push_back(r);
            }
        }
        self.dropped.inc_by(dropped);
        dropped
    }

    /// Takes up to `n` records, oldest first.
    pub fn take(&self, n: usize) -> Vec<FlowRecord> {
        let mut q = self.lock();
        let n = n.min(q.len());
        q.drain(..n).collect()
    }

    /// Returns records a failed send took, ahead of the rest (counting what no longer fits).
    pub fn put_back(&self, recs: Vec<FlowRecord>) -> u64 {
        let mut q = self.lock();
        let mut dropped = 0;
        for r in recs.into_iter().rev() {
            if q.len() >= self.cap {
                dropped += r.count.max(1);
            } else {
                q.push_front(r);
            }
        }
        self.dropped.inc_by(dropped);
        dropped
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Connections dropped so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// The sequence number of the next batch.
    pub fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed) + 1
    }

    /// Gives back a sequence number whose batch was not delivered.
    pub fn unsend_seq(&self) {
        self.seq.fetch_sub(1, Relaxed);
    }
}

fn ip(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    v6.to_ipv4_mapped()
        .map(IpAddr::V4)
        .unwrap_or(IpAddr::V6(v6))
}

/// Aggregates events into records: one per (src, dst, proto, port, verdict, direction, rule)
/// with its count, oldest first. Names come from `who`, rule descriptions from `rule`, the
/// DNS names of destinations outside the inventory from `dns` (FQDN policy).
pub fn aggregate(
    evs: &[Event],
    who: &Attribution,
    rule: impl Fn(u32) -> Option<String>,
    dns: impl Fn(IpAddr) -> Vec<String>,
) -> Vec<FlowRecord> {
    // Keyed by the raw event fields with the Fx hash: every event of a busy node passes here
    // (SipHash and address conversions per event were a third of the agent's CPU).
    type Key = ([u8; 16], [u8; 16], u8, u16, u8, u8, u32);
    let mut agg: cellwall_policy::fxhash::FxHashMap<Key, FlowRecord> = Default::default();
    for e in evs {
        let port = u16::from_be(e.dport);
        let k = (e.saddr, e.daddr, e.proto, port, e.kind, e.dir, e.rule);
        let r = agg.entry(k).or_insert_with(|| {
            let (s, d) = (ip(e.saddr), ip(e.daddr));
            FlowRecord {
                time_unix_ns: ktime_to_unix_ns(e.ts_ns),
                src: who.name(s),
                dst: who.name(d),
                src_ip: s.to_string(),
                dst_ip: d.to_string(),
                protocol: e.proto as u32,
                port: port as u32,
                verdict: match e.kind {
                    abi::EV_ALLOW => Verdict::Allowed,
                    abi::EV_DENY => Verdict::Denied,
                    abi::EV_AUDIT => Verdict::Audit,
                    abi::EV_REVOKE => Verdict::Revoked,
                    _ => Verdict::Unspecified,
                } as i32,
                direction: if e.dir == abi::DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                } as i32,
                rule: rule(e.rule).unwrap_or_default(),
                count: 0,
                dst_names: if who.owns(d) { Vec::new() } else { dns(d) },
            }
        });
        r.count += 1;
    }
    let mut recs: Vec<FlowRecord> = agg.into_values().collect();
    recs.sort_by_key(|r| r.time_unix_ns);
    recs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(count: u64) -> FlowRecord {
        FlowRecord {
            count,
            ..Default::default()
        }
    }

    #[test]
    fn a_full_queue_counts_what_it_drops() {
        let dropped = Counter::default();
        let q = FlowQueue::new(3, dropped.clone());
        assert_eq!(q.push(vec![rec(1), rec(2)]), 0);
        // One fits; the next two (5 and 0 connections: a record counts at least one) do not.
        assert_eq!(q.push(vec![rec(4), rec(5), rec(0)]), 6);
        assert_eq!((q.len(), dropped.get()), (3, 6));
        let sent = q.take(2);
        assert_eq!(sent.iter().map(|r| r.count).collect::<Vec<_>>(), [1, 2]);
        // While the send fails, new records arrive; putting the batch back overflows.
        q.push(vec![rec(7)]);
        assert_eq!(q.put_back(sent), 1, "the older record that no longer fits");
        assert_eq!(
            q.take(10).iter().map(|r| r.count).collect::<Vec<_>>(),
            [2, 4, 7]
        );
        assert_eq!(q.dropped(), 7);
        assert!(q.is_empty());
    }

    #[test]
    fn events_become_one_record_per_connection_kind_with_names() {
        let a = abi::addr16("10.0.0.1".parse().unwrap());
        let b = abi::addr16("10.0.0.2".parse().unwrap());
        let ev = |s, d, kind, rule| Event {
            saddr: s,
            daddr: d,
            proto: 6,
            dport: 80u16.to_be(),
            kind,
            dir: abi::DIR_EGRESS,
            rule,
            ..Event::default()
        };
        let evs = [
            ev(a, b, abi::EV_ALLOW, 3),
            ev(a, b, abi::EV_ALLOW, 3),
            ev(a, b, abi::EV_DENY, 4),
            ev(b, a, abi::EV_ALLOW, 3),
        ];
        let who = Attribution {
            owners: [("10.0.0.1".parse().unwrap(), "x/a".to_string())].into(),
        };
        let mut recs = aggregate(
            &evs,
            &who,
            |r| (r == 3).then(|| "rule three".to_string()),
            |_| Vec::new(),
        );
        recs.sort_by(|x, y| (&x.src, x.verdict).cmp(&(&y.src, y.verdict)));
        let got: Vec<_> = recs
            .iter()
            .map(|r| {
                (
                    r.src.as_str(),
                    r.dst.as_str(),
                    r.verdict,
                    r.count,
                    r.rule.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.2", "x/a", Verdict::Allowed as i32, 1, "rule three"),
                ("x/a", "10.0.0.2", Verdict::Allowed as i32, 2, "rule three"),
                ("x/a", "10.0.0.2", Verdict::Denied as i32, 1, ""),
            ]
        );
        assert!(recs.iter().all(|r| r.port == 80 && r.protocol == 6));
    }
}

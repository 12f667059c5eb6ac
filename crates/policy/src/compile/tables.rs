//! What compiling produces: per-node tables shaped like the kernel maps, and the lookup the
//! kernel does on them (so tests can compare a node's tables with the evaluator directly).

use crate::engine::RuleInfo;
use crate::identity::{ID_ANY, ID_WORLD};
use crate::model::{Protocol, WorkloadKey};
use crate::net::Cidr;
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Verdict stored in a table entry: enforced, and with audit-mode policies enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct EntryVerdict {
    pub allow: bool,
    pub rule: u32,
    pub audit_allow: bool,
    pub audit_rule: u32,
}

impl EntryVerdict {
    pub const DEFAULT_ALLOW: EntryVerdict = EntryVerdict {
        allow: true,
        rule: 0,
        audit_allow: true,
        audit_rule: 0,
    };
}

/// One row: a protocol and inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct PortEntry {
    pub protocol: Protocol,
    pub lo: u16,
    pub hi: u16,
    pub verdict: EntryVerdict,
}

/// One direction of one endpoint: rows per peer identity (`0` = wildcard, complete).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Table {
    pub rows: BTreeMap<u32, Vec<PortEntry>>,
}

impl Table {
    pub(super) fn find(rows: &[PortEntry], proto: Protocol, port: u16) -> Option<EntryVerdict> {
        rows.iter()
            .find(|e| e.protocol == proto && e.lo <= port && port <= e.hi)
            .map(|e| e.verdict)
    }

    /// Kernel lookup semantics: exact peer row, else the wildcard row, else allow.
    pub fn lookup(&self, peer: u32, proto: Protocol, port: u16) -> EntryVerdict {
        self.rows
            .get(&peer)
            .and_then(|r| Self::find(r, proto, port))
            .or_else(|| {
                self.rows
                    .get(&ID_ANY)
                    .and_then(|r| Self::find(r, proto, port))
            })
            .unwrap_or(EntryVerdict::DEFAULT_ALLOW)
    }

    /// Number of (peer, protocol, range) entries: what the kernel map holds.
    pub fn len(&self) -> usize {
        self.rows.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The compiled policy of one local endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EndpointPolicy {
    pub ips: Vec<IpAddr>,
    /// The endpoint's own peer identity (what others' tables key it by).
    pub identity: u32,
    pub ingress: Arc<Table>,
    pub egress: Arc<Table>,
    /// Its egress rules name DNS domains: the DNS answers it receives must be learned (and
    /// their addresses programmed) before they reach it.
    pub learns_names: bool,
}

/// Everything one node enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NodePolicy {
    pub node: String,
    /// IP/CIDR → peer identity; resolve by longest prefix.
    pub ipcache: BTreeMap<Cidr, u32>,
    pub endpoints: BTreeMap<WorkloadKey, EndpointPolicy>,
    /// Rule ids referenced by the tables.
    pub rules: BTreeMap<u32, RuleInfo>,
}

impl NodePolicy {
    /// Longest-prefix match in the ipcache; `ID_WORLD` when nothing matches.
    pub fn identity_of(&self, ip: IpAddr) -> u32 {
        let bits = if ip.is_ipv4() { 32 } else { 128 };
        for p in (0..=bits).rev() {
            if let Some(c) = Cidr::new(ip, p) {
                if let Some(id) = self.ipcache.get(&c) {
                    return *id;
                }
            }
        }
        ID_WORLD
    }

    /// What the datapath of this node decides for a flow: egress at the source if it is local,
    /// ingress at the destination if it is local. Returns (allowed, audit_allowed).
    pub fn decide(
        &self,
        src: IpAddr,
        dst: IpAddr,
        proto: Protocol,
        port: u16,
    ) -> (EntryVerdict, EntryVerdict) {
        let ep_of = |ip: IpAddr| self.endpoints.values().find(|e| e.ips.contains(&ip));
        let eg = ep_of(src)
            .map(|e| e.egress.lookup(self.identity_of(dst), proto, port))
            .unwrap_or(EntryVerdict::DEFAULT_ALLOW);
        let ing = ep_of(dst)
            .map(|e| e.ingress.lookup(self.identity_of(src), proto, port))
            .unwrap_or(EntryVerdict::DEFAULT_ALLOW);
        (eg, ing)
    }

    /// Total table entries over all endpoints (kernel map occupancy).
    pub fn entry_count(&self) -> usize {
        self.endpoints
            .values()
            .map(|e| e.ingress.len() + e.egress.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(rule: u32) -> EntryVerdict {
        EntryVerdict {
            allow: false,
            rule,
            audit_allow: false,
            audit_rule: rule,
        }
    }

    fn row(protocol: Protocol, lo: u16, hi: u16, verdict: EntryVerdict) -> PortEntry {
        PortEntry {
            protocol,
            lo,
            hi,
            verdict,
        }
    }

    #[test]
    fn lookup_is_exact_row_then_wildcard_then_allow() {
        let mut t = Table::default();
        t.rows
            .insert(ID_ANY, vec![row(Protocol::Tcp, 0, 65535, deny(7))]);
        t.rows.insert(
            500,
            vec![row(Protocol::Tcp, 80, 80, EntryVerdict::DEFAULT_ALLOW)],
        );
        assert_eq!(
            t.lookup(500, Protocol::Tcp, 80),
            EntryVerdict::DEFAULT_ALLOW
        );
        assert_eq!(t.lookup(500, Protocol::Tcp, 81), deny(7));
        assert_eq!(t.lookup(600, Protocol::Tcp, 80), deny(7));
        assert_eq!(
            t.lookup(600, Protocol::Udp, 53),
            EntryVerdict::DEFAULT_ALLOW
        );
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn identity_of_is_longest_prefix_else_world() {
        let np = NodePolicy {
            node: "n1".into(),
            ipcache: [
                ("10.0.0.0/8".parse().unwrap(), 300),
                ("10.1.0.0/16".parse().unwrap(), 301),
            ]
            .into_iter()
            .collect(),
            endpoints: BTreeMap::new(),
            rules: BTreeMap::new(),
        };
        assert_eq!(np.identity_of("10.1.2.3".parse().unwrap()), 301);
        assert_eq!(np.identity_of("10.2.2.3".parse().unwrap()), 300);
        assert_eq!(np.identity_of("192.0.2.1".parse().unwrap()), ID_WORLD);
    }
}

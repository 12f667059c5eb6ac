//! The flattened, kernel-shaped form of a `NodePolicy`: exactly the entries the maps must hold
//! for one slot. Pure (no kernel access), so both the kernel datapath and the fake use it.

use crate::abi::*;
use cellwall_policy::compile::{NodePolicy, PortEntry};
use cellwall_policy::identity::fnv1a;
use cellwall_policy::{Cidr, WorkloadKey};
use std::collections::BTreeMap;

/// An LPM entry: key data with its prefix length.
pub type Lpm<K> = (u32, K);

/// Everything one policy slot holds (the slot field of keys is filled in when written).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub ipcache: BTreeMap<([u8; 16], u32), u32>,
    /// Endpoint address → (ep id, ifindex, has-policy flags).
    pub endpoints: BTreeMap<[u8; 16], (u32, u32, u32)>,
    /// (ep id, peer, dir, proto, port prefix value, port prefix bits) → value.
    pub policy: BTreeMap<(u32, u32, u8, u8, u16, u32), PolicyVal>,
}

/// A stable endpoint id from its name (nonzero; agents restart without renumbering).
pub fn endpoint_id(key: &WorkloadKey) -> u32 {
    let h = fnv1a(&key.to_string());
    ((h ^ (h >> 32)) as u32) | 1
}

/// Splits an inclusive port range into aligned (value, prefix bits) blocks for an LPM trie.
pub fn port_prefixes(lo: u16, hi: u16) -> Vec<(u16, u32)> {
    let mut out = Vec::new();
    let (mut lo, hi) = (lo as u32, hi as u32);
    while lo <= hi {
        let mut size = 1u32;
        // Grow the block while it stays aligned and inside the range.
        while size < 65536 && lo % (size * 2) == 0 && lo + size * 2 - 1 <= hi {
            size *= 2;
        }
        out.push((lo as u16, 16 - size.trailing_zeros()));
        lo += size;
    }
    out
}

fn cidr_key(c: &Cidr) -> ([u8; 16], u32) {
    let bits = if c.is_ipv4() {
        96 + c.prefix() as u32
    } else {
        c.prefix() as u32
    };
    (addr16(c.addr()), bits)
}

impl Desired {
    /// Flattens a node policy. `ifindex` gives the host-side interface of each endpoint (0 = do
    /// not check the arrival interface).
    pub fn from_node_policy(np: &NodePolicy, ifindex: impl Fn(&WorkloadKey) -> u32) -> Self {
        let mut d = Desired::default();
        for (c, id) in &np.ipcache {
            d.ipcache.insert(cidr_key(c), *id);
        }
        for (wk, ep) in &np.endpoints {
            let id = endpoint_id(wk);
            let mut flags = 0;
            if !ep.ingress.is_empty() {
                flags |= EP_HAS_INGRESS_POLICY;
            }
            if !ep.egress.is_empty() {
                flags |= EP_HAS_EGRESS_POLICY;
            }
            if ep.learns_names {
                flags |= EP_LEARNS_NAMES;
            }
            for ip in &ep.ips {
                d.endpoints.insert(addr16(*ip), (id, ifindex(wk), flags));
            }
            for (dir, table) in [(DIR_INGRESS, &ep.ingress), (DIR_EGRESS, &ep.egress)] {
                for (peer, rows) in &table.rows {
                    for PortEntry {
                        protocol,
                        lo,
                        hi,
                        verdict,
                    } in rows
                    {
                        let v = PolicyVal {
                            allow: verdict.allow as u8,
                            audit_allow: verdict.audit_allow as u8,
                            pad: 0,
                            rule: verdict.rule,
                            audit_rule: verdict.audit_rule,
                        };
                        for (port, bits) in port_prefixes(*lo, *hi) {
                            d.policy
                                .insert((id, *peer, dir, protocol.number(), port, bits), v);
                        }
                    }
                }
            }
        }
        d
    }

    /// Emergency isolation (a quarantine that must not wait behind a compile): the endpoint at
    /// `addr` denies everything in the given directions, whatever its tables said. Only the
    /// endpoint's own entries change, so the switch is as quick as any small apply. Returns
    /// false when `addr` is no endpoint of this state.
    pub fn isolate(&mut self, addr: [u8; 16], ingress: bool, egress: bool) -> bool {
        let Some(ep) = self.endpoints.get(&addr).copied() else {
            return false;
        };
        let id = ep.0;
        let dirs: Vec<u8> = [(DIR_INGRESS, ingress), (DIR_EGRESS, egress)]
            .into_iter()
            .filter_map(|(d, on)| on.then_some(d))
            .collect();
        let mine: Vec<_> = self
            .policy
            .range((id, 0, 0, 0, 0, 0)..=(id, u32::MAX, u8::MAX, u8::MAX, u16::MAX, u32::MAX))
            .filter(|(k, _)| dirs.contains(&k.2))
            .map(|(k, _)| *k)
            .collect();
        for k in mine {
            self.policy.remove(&k);
        }
        let deny = PolicyVal {
            allow: 0,
            audit_allow: 0,
            pad: 0,
            rule: 0,
            audit_rule: 0,
        };
        for dir in &dirs {
            for proto in [6u8, 17, 132] {
                self.policy.insert((id, 0, *dir, proto, 0, 0), deny);
            }
        }
        let flags = (if ingress { EP_HAS_INGRESS_POLICY } else { 0 })
            | (if egress { EP_HAS_EGRESS_POLICY } else { 0 });
        for v in self.endpoints.values_mut().filter(|v| v.0 == id) {
            v.2 |= flags;
        }
        true
    }

    /// The same lookup the kernel program does, for the fake datapath and for tests.
    pub fn lookup(
        &self,
        ep_id: u32,
        flags: u32,
        dir: u8,
        peer_addr: [u8; 16],
        proto: u8,
        port: u16,
    ) -> (bool, bool, u32, u32) {
        let has = flags
            & if dir == DIR_EGRESS {
                EP_HAS_EGRESS_POLICY
            } else {
                EP_HAS_INGRESS_POLICY
            };
        if has == 0 {
            return (true, true, 0, 0);
        }
        if proto != 6 && proto != 17 && proto != 132 {
            return (false, false, 0, 0);
        }
        let peer = self.identity(peer_addr);
        for p in [peer, 0] {
            for bits in (0..=16u32).rev() {
                let mask = if bits == 0 {
                    0
                } else {
                    u16::MAX << (16 - bits)
                };
                if let Some(v) = self.policy.get(&(ep_id, p, dir, proto, port & mask, bits)) {
                    return (v.allow == 1, v.audit_allow == 1, v.rule, v.audit_rule);
                }
            }
        }
        (false, false, 0, 0)
    }

    pub fn identity(&self, addr: [u8; 16]) -> u32 {
        for bits in (0..=128u32).rev() {
            let mut a = addr;
            for (i, byte) in a.iter_mut().enumerate() {
                let keep = bits.saturating_sub(i as u32 * 8).min(8);
                *byte &= if keep == 0 { 0 } else { 0xffu8 << (8 - keep) };
            }
            if let Some(id) = self.ipcache.get(&(a, bits)) {
                return *id;
            }
        }
        cellwall_policy::identity::ID_WORLD
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_denies_everything_in_its_directions_and_nothing_else() {
        let a = [1u8; 16];
        let b = [2u8; 16];
        let mut d = Desired::default();
        d.endpoints.insert(a, (7, 0, 0));
        d.endpoints.insert(b, (9, 0, EP_HAS_INGRESS_POLICY));
        let allow = PolicyVal {
            allow: 1,
            audit_allow: 1,
            pad: 0,
            rule: 3,
            audit_rule: 3,
        };
        d.policy.insert((9, 0, DIR_INGRESS, 6, 0, 0), allow);
        d.policy.insert((7, 5, DIR_EGRESS, 6, 80, 16), allow);
        assert!(d.isolate(a, true, true));
        assert!(!d.isolate([3u8; 16], true, true));
        let flags = d.endpoints[&a].2;
        for dir in [DIR_INGRESS, DIR_EGRESS] {
            for proto in [6, 17, 132] {
                assert!(!d.lookup(7, flags, dir, b, proto, 80).0);
            }
        }
        // The other endpoint keeps its tables.
        assert!(d.lookup(9, d.endpoints[&b].2, DIR_INGRESS, a, 6, 80).0);
        assert!(!d.policy.contains_key(&(7, 5, DIR_EGRESS, 6, 80, 16)));
    }

    #[test]
    fn port_prefixes_cover_exactly() {
        for (lo, hi) in [
            (0u16, 65535u16),
            (80, 80),
            (1000, 2000),
            (1, 65534),
            (8080, 8081),
            (0, 0),
            (65535, 65535),
        ] {
            let p = port_prefixes(lo, hi);
            let mut covered = 0u32;
            for (v, bits) in &p {
                let size = 1u32 << (16 - bits);
                assert_eq!(*v as u32 % size, 0, "aligned");
                assert!(*v as u32 >= lo as u32 && *v as u32 + size - 1 <= hi as u32);
                covered += size;
            }
            assert_eq!(covered, hi as u32 - lo as u32 + 1, "{lo}-{hi}");
        }
        assert_eq!(port_prefixes(0, 65535), vec![(0, 0)]);
        assert_eq!(port_prefixes(80, 80), vec![(80, 16)]);
    }
}

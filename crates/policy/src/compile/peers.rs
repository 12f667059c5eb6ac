//! Peer identities and the ipcache: every address source (a workload, a node) is bound to the
//! peer identity of its labels, named ports and longest matching policy CIDR; policy CIDRs that
//! hold no source become region identities of their own.

use super::{Compiler, PeerIdent, PeerKind};
use crate::engine::{Addr, Changes, EndpointView, Engine};
use crate::identity::ID_WORLD;
use crate::model::{Peer, WorkloadKey};
use crate::net::{Cidr, DomainPattern};
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Every CIDR (and `except`) and every domain pattern that some policy rule names.
fn policy_cidrs_and_domains(engine: &Engine) -> (BTreeSet<Cidr>, BTreeSet<DomainPattern>) {
    let (mut s, mut d) = (BTreeSet::new(), BTreeSet::new());
    for p in engine.policies() {
        for r in &p.rules {
            for peer in &r.peers {
                match peer {
                    Peer::Cidr { cidr, except } => {
                        s.insert(*cidr);
                        s.extend(except.iter().copied());
                    }
                    Peer::Domain(pattern) => {
                        d.insert(pattern.clone());
                    }
                    _ => {}
                }
            }
        }
    }
    (s, d)
}

/// The longest of `cidrs` that contains `ip`.
fn lpm(cidrs: &BTreeSet<Cidr>, ip: IpAddr) -> Option<Cidr> {
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    (0..=bits)
        .rev()
        .filter_map(|p| Cidr::new(ip, p))
        .find(|c| cidrs.contains(c))
}

fn addr_of(r: Option<Cidr>) -> Addr {
    r.map(Addr::Region).unwrap_or(Addr::Outside)
}

/// What binding an address source yields: its identity key, kind, CIDR position and prefixes.
type Derived = (String, PeerKind, Addr, Vec<Cidr>);

impl Compiler {
    /// Re-reads the policy CIDRs when policies changed. Networks that appeared or went get or
    /// lose their region identity; only the sources inside them can change their longest match,
    /// so only those are returned for rebinding (a firewall export's one-rule change must not
    /// rebind the cluster). The world identity and the default routes are kept in place.
    pub(super) fn refresh_regions(
        &mut self,
        engine: &Engine,
        changes: &Changes,
        changed: &mut BTreeSet<u32>,
    ) -> BTreeSet<String> {
        let mut sources = BTreeSet::new();
        // Without policy changes the CIDR set cannot have changed.
        if !changes.policies.is_empty() {
            let (cidrs, domains) = policy_cidrs_and_domains(engine);
            if cidrs != self.cidrs {
                let moved: Vec<Cidr> = cidrs.symmetric_difference(&self.cidrs).copied().collect();
                sources.extend(
                    self.member_of
                        .iter()
                        .filter(|(_, (_, prefixes))| {
                            prefixes
                                .iter()
                                .any(|p| moved.iter().any(|m| m.contains_net(p)))
                        })
                        .map(|(s, _)| s.clone()),
                );
                self.replace_regions(cidrs, changed);
            }
            // New patterns regroup every named address (bound or not).
            if domains != self.domains {
                self.domains = domains;
                sources.extend(
                    self.member_of
                        .keys()
                        .filter(|s| s.starts_with("dns:"))
                        .cloned(),
                );
                sources.extend(engine.named_addresses().map(|ip| format!("dns:{ip}")));
            }
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(ID_WORLD) {
            e.insert(PeerIdent {
                kind: PeerKind::World,
                addr: Addr::Outside,
                key: "world".into(),
                members: BTreeSet::new(),
            });
            changed.insert(ID_WORLD);
        }
        for any in ["0.0.0.0/0", "::/0"] {
            self.regions
                .entry(any.parse().expect("valid"))
                .or_insert(ID_WORLD);
        }
        sources
    }

    /// Region identities for a new CIDR set: those of networks that went are released, those
    /// of new networks created; the others stay as they are.
    fn replace_regions(&mut self, cidrs: BTreeSet<Cidr>, changed: &mut BTreeSet<u32>) {
        let gone: Vec<Cidr> = self.cidrs.difference(&cidrs).copied().collect();
        let new: Vec<Cidr> = cidrs.difference(&self.cidrs).copied().collect();
        self.cidrs = cidrs;
        for c in gone {
            let Some(id) = self.regions.get(&c).copied() else {
                continue;
            };
            if id == ID_WORLD {
                continue;
            }
            self.regions.remove(&c);
            let key = self.peers[&id].key.clone();
            self.alloc.release(&key);
            self.peers.remove(&id);
            changed.insert(id);
        }
        for c in new {
            let key = format!("cidr={c}");
            let (id, _) = self.alloc.acquire(&key);
            self.peers.insert(
                id,
                PeerIdent {
                    kind: PeerKind::Region,
                    addr: Addr::Region(c),
                    key,
                    members: BTreeSet::new(),
                },
            );
            // A policy CIDR that is a default route gets a region of its own.
            self.regions.insert(c, id);
            changed.insert(id);
        }
    }

    /// Unbinds every source, then binds each again (a source can move between identities).
    pub(super) fn rebind(
        &mut self,
        engine: &Engine,
        sources: &BTreeSet<String>,
        changed: &mut BTreeSet<u32>,
    ) {
        // Addresses that workloads or nodes leave or take may be named ones: those rebind too
        // (a named address is an FQDN peer only while the inventory does not hold it).
        let mut named: BTreeSet<String> = BTreeSet::new();
        let mut note = |this: &Self, s: &String| {
            if s.starts_with("dns:") {
                return;
            }
            if let Some((_, prefixes)) = this.member_of.get(s) {
                for c in prefixes {
                    if !engine.names_of(c.addr()).is_empty() {
                        named.insert(format!("dns:{}", c.addr()));
                    }
                }
            }
        };
        for s in sources {
            note(self, s);
        }
        for s in sources {
            self.unbind(s, changed);
        }
        for s in sources {
            self.bind(engine, s, changed);
        }
        for s in sources {
            note(self, s);
        }
        named.retain(|s| !sources.contains(s));
        for s in &named {
            self.unbind(s, changed);
        }
        for s in &named {
            self.bind(engine, s, changed);
        }
    }

    /// What a peer identity looks like to policy, through its representative.
    pub(super) fn peer_view<'e>(
        &self,
        engine: &'e Engine,
        p: &PeerIdent,
    ) -> Option<EndpointView<'e>> {
        match &p.kind {
            PeerKind::Workload { rep, ip } => engine.workload_view(rep, *ip, p.addr).map(|v| v.0),
            PeerKind::Node { name } => engine.node_view(name, p.addr),
            PeerKind::Region | PeerKind::World => Some(EndpointView::external(p.addr)),
            PeerKind::Fqdn { rep } => Some(EndpointView::named(p.addr, engine.names_of(*rep))),
        }
    }

    /// Views of the given peer identities (those that still have one).
    pub(super) fn views<'e>(
        &self,
        engine: &'e Engine,
        ids: impl Iterator<Item = u32>,
    ) -> Vec<(u32, EndpointView<'e>)> {
        ids.filter_map(|id| {
            self.peers
                .get(&id)
                .and_then(|p| self.peer_view(engine, p))
                .map(|v| (id, v))
        })
        .collect()
    }

    /// Derives the peer identity of an address source (`node:NAME` or `wl:NS/NAME`).
    fn derive_peer(&self, engine: &Engine, source: &str) -> Option<Derived> {
        if let Some(ip) = source.strip_prefix("dns:") {
            return self.derive_named(engine, ip.parse().ok()?);
        }
        match source.strip_prefix("node:") {
            Some(name) => self.derive_node(engine, name),
            None => self.derive_workload(engine, WorkloadKey::parse(source.strip_prefix("wl:")?)?),
        }
    }

    /// An address DNS named: an identity per set of policy patterns its names match (and
    /// CIDR position). None when no pattern matches (it stays in its region) or when the
    /// address is the inventory's (labels decide there, never names).
    fn derive_named(&self, engine: &Engine, ip: IpAddr) -> Option<Derived> {
        let names = engine.names_of(ip);
        if self.domains.is_empty() || names.is_empty() || engine.is_inventory_address(ip) {
            return None;
        }
        let matched: Vec<String> = self
            .domains
            .iter()
            .filter(|d| names.iter().any(|n| d.matches(n)))
            .map(|d| d.to_string())
            .collect();
        if matched.is_empty() {
            return None;
        }
        let r = lpm(&self.cidrs, ip);
        let key = format!(
            "fqdn={}{}",
            matched.join(","),
            r.map(|c| format!("|cidr={c}")).unwrap_or_default()
        );
        Some((
            key,
            PeerKind::Fqdn { rep: ip },
            addr_of(r),
            vec![Cidr::host(ip)],
        ))
    }

    fn derive_node(&self, engine: &Engine, name: &str) -> Option<Derived> {
        let n = engine.inventory().nodes.get(name)?;
        let ip = *n.ips.first()?;
        let r = lpm(&self.cidrs, ip);
        let key = format!(
            "node={name}{}",
            r.map(|c| format!("|cidr={c}")).unwrap_or_default()
        );
        let kind = PeerKind::Node {
            name: name.to_string(),
        };
        let prefixes = n.ips.iter().map(|i| Cidr::host(*i)).collect();
        Some((key, kind, addr_of(r), prefixes))
    }

    fn derive_workload(&self, engine: &Engine, wk: WorkloadKey) -> Option<Derived> {
        let w = engine.inventory().workloads.get(&wk)?;
        if w.host_network || w.ips.is_empty() {
            return None;
        }
        let info = engine.identity(engine.workload_identity(&wk)?)?;
        let r = lpm(&self.cidrs, w.ips[0]);
        // Named ports are part of the peer identity so egress rules on named ports stay exact
        // even if pods with the same labels name their ports differently.
        let mut named: Vec<String> = w
            .ports
            .iter()
            .filter_map(|p| {
                p.name
                    .as_ref()
                    .map(|n| format!("{n}={}/{}", p.protocol, p.port))
            })
            .collect();
        named.sort();
        let key = format!(
            "{}{}{}",
            info.key(),
            if named.is_empty() {
                String::new()
            } else {
                format!("|ports={}", named.join(","))
            },
            r.map(|c| format!("|cidr={c}")).unwrap_or_default()
        );
        let prefixes = w.ips.iter().map(|i| Cidr::host(*i)).collect();
        let kind = PeerKind::Workload {
            rep: wk,
            ip: Some(w.ips[0]),
        };
        Some((key, kind, addr_of(r), prefixes))
    }

    fn unbind(&mut self, source: &str, changed: &mut BTreeSet<u32>) {
        let Some((id, prefixes)) = self.member_of.remove(source) else {
            return;
        };
        for c in prefixes {
            if self.ipcache.get(&c) == Some(&id) {
                self.ipcache.remove(&c);
            }
        }
        let p = self.peers.get_mut(&id).expect("bound peer exists");
        p.members.remove(source);
        let key = p.key.clone();
        if self.alloc.release(&key) {
            self.peers.remove(&id);
        } else {
            self.keep_live_representative(id, source);
        }
        changed.insert(id);
    }

    /// When the representative of a workload (or named address) identity leaves, another
    /// member stands in.
    fn keep_live_representative(&mut self, id: u32, leaving: &str) {
        let Some(p) = self.peers.get(&id) else {
            return;
        };
        if let PeerKind::Fqdn { rep } = &p.kind {
            if format!("dns:{rep}") != leaving {
                return;
            }
            let next = p
                .members
                .iter()
                .find_map(|m| m.strip_prefix("dns:")?.parse::<IpAddr>().ok());
            if let Some(next) = next {
                self.peers.get_mut(&id).expect("present").kind = PeerKind::Fqdn { rep: next };
            }
            return;
        }
        let PeerKind::Workload { rep, .. } = &p.kind else {
            return;
        };
        if format!("wl:{rep}") != leaving {
            return;
        }
        let Some(next) = p
            .members
            .iter()
            .next()
            .and_then(|m| m.strip_prefix("wl:"))
            .and_then(WorkloadKey::parse)
        else {
            return;
        };
        let ip = self
            .member_of
            .get(&format!("wl:{next}"))
            .and_then(|(_, prefixes)| prefixes.first())
            .map(Cidr::addr);
        self.peers.get_mut(&id).expect("present").kind = PeerKind::Workload { rep: next, ip };
    }

    fn bind(&mut self, engine: &Engine, source: &str, changed: &mut BTreeSet<u32>) {
        let Some((key, kind, addr, prefixes)) = self.derive_peer(engine, source) else {
            return;
        };
        let (id, created) = self.alloc.acquire(&key);
        if created {
            self.peers.insert(
                id,
                PeerIdent {
                    kind,
                    addr,
                    key,
                    members: BTreeSet::new(),
                },
            );
        }
        self.peers
            .get_mut(&id)
            .expect("just ensured")
            .members
            .insert(source.to_string());
        for c in &prefixes {
            if source.starts_with("dns:") {
                // An address the inventory also holds keeps its workload's entry.
                self.ipcache.entry(*c).or_insert(id);
            } else {
                self.ipcache.insert(*c, id);
            }
        }
        self.member_of.insert(source.to_string(), (id, prefixes));
        changed.insert(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lpm_picks_the_longest_containing_cidr() {
        let cidrs: BTreeSet<Cidr> = ["10.0.0.0/8", "10.1.0.0/16", "192.0.2.0/24"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let at = |ip: &str| lpm(&cidrs, ip.parse().unwrap()).map(|c| c.to_string());
        assert_eq!(at("10.1.2.3").as_deref(), Some("10.1.0.0/16"));
        assert_eq!(at("10.2.2.3").as_deref(), Some("10.0.0.0/8"));
        assert_eq!(at("198.51.100.1"), None);
        assert_eq!(addr_of(None), Addr::Outside);
    }
}

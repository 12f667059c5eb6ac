//! Compiling the engine's policy into per-node tables shaped like the kernel maps:
//! - `ipcache`: IP/CIDR → peer identity (longest prefix match),
//! - per local endpoint and direction: (peer identity, protocol, port range) → verdict + rule,
//!   with peer identity 0 as the wildcard row that covers every port of every protocol.
//!
//! Lookup: the exact peer identity's row for the port if there is one, otherwise the wildcard's.
//! Every entry is produced by calling the evaluator on a representative of the identity and port
//! interval, so the tables agree with [`Engine::evaluate`] by construction (and a test checks it).
//!
//! Peer identities refine label identities by address: a pod whose IP falls in a policy CIDR gets
//! an identity for (labels, longest matching policy CIDR), so CIDR rules that single out one pod
//! of a replica set stay exact without per-IP rules.
//!
//! Incremental: [`Compiler::update`] re-derives only what a change touches: the endpoints whose
//! applicable policies changed are recomputed, and for every other endpoint only the rows of peer
//! identities that appeared, disappeared or changed.

use crate::engine::{identity_key, peer_matches, Addr, Changes, EpKind, EpView, RuleInfo};
use crate::identity::{IdentityAllocator, ID_ANY, ID_WORLD};
use crate::model::*;
use crate::net::Cidr;
use crate::Engine;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    fn find(rows: &[PortEntry], proto: Protocol, port: u16) -> Option<EntryVerdict> {
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

#[derive(Debug, Clone, PartialEq, Eq)]
enum PeerKind {
    /// Member workload standing for the identity (same labels and CIDR position as all members),
    /// and an address of it: the engine's record at that address, when it is this workload's,
    /// gives the view without searching the inventory.
    Workload {
        rep: WorkloadKey,
        ip: Option<IpAddr>,
    },
    Node {
        name: String,
    },
    Region,
    World,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerIdent {
    kind: PeerKind,
    addr: Addr,
    key: String,
    members: BTreeSet<String>,
}

type ProfileKey = (u32, Vec<ContainerPort>);

/// Peer identities each distinct rule peer matched among one list of candidates.
type PeerMemo<'e> = HashMap<&'e Peer, Vec<u32>>;

#[derive(Debug, Clone)]
struct Profile {
    tables: [Arc<Table>; 2],
    /// Rule ids applicable per direction (so rows for new peers can be decided).
    rules: [Vec<u32>; 2],
}

/// Incremental per-node compiler.
#[derive(Debug, Clone)]
pub struct Compiler {
    node: String,
    alloc: IdentityAllocator,
    cidrs: BTreeSet<Cidr>,
    peers: BTreeMap<u32, PeerIdent>,
    /// Which peer identity each address source (workload or node) holds.
    member_of: HashMap<String, (u32, Vec<Cidr>)>,
    /// Address entries of workloads and nodes (these win over a region with the same prefix).
    ipcache: BTreeMap<Cidr, u32>,
    /// Policy CIDR regions and the world defaults.
    regions: BTreeMap<Cidr, u32>,
    /// Peer identities each rule's non-wildcard peers match.
    rule_peers: HashMap<u32, BTreeSet<u32>>,
    profiles: HashMap<ProfileKey, Profile>,
    endpoints: BTreeMap<WorkloadKey, (ProfileKey, Vec<IpAddr>, u32)>,
}

/// Full compile: `compile(inventory, policies, node)` in one call.
pub fn compile(inventory: Inventory, policies: Vec<Policy>, node: &str, now: i64) -> NodePolicy {
    let engine = Engine::build(inventory, policies, now);
    Compiler::new(node).full(&engine)
}

fn policy_cidrs(engine: &Engine) -> BTreeSet<Cidr> {
    let mut s = BTreeSet::new();
    for p in engine.policies() {
        for r in &p.rules {
            for peer in &r.peers {
                if let Peer::Cidr { cidr, except } = peer {
                    s.insert(*cidr);
                    s.extend(except.iter().copied());
                }
            }
        }
    }
    s
}

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

impl Compiler {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            alloc: IdentityAllocator::default(),
            cidrs: BTreeSet::new(),
            peers: BTreeMap::new(),
            member_of: HashMap::new(),
            ipcache: BTreeMap::new(),
            regions: BTreeMap::new(),
            rule_peers: HashMap::new(),
            profiles: HashMap::new(),
            endpoints: BTreeMap::new(),
        }
    }

    /// Compiles from scratch.
    pub fn full(&mut self, engine: &Engine) -> NodePolicy {
        *self = Self::new(&self.node);
        let all = Changes {
            policies: engine.policies().map(|p| p.id.clone()).collect(),
            identities: engine.identities().map(|i| i.id).collect(),
            workloads: engine.inventory().workloads.keys().cloned().collect(),
            nodes: engine.inventory().nodes.keys().cloned().collect(),
        };
        self.update(engine, &all)
    }

    fn peer_view<'e>(
        &self,
        engine: &'e Engine,
        p: &PeerIdent,
    ) -> Option<(EpView<'e>, Option<u32>)> {
        let inv = engine.inventory();
        Some(match &p.kind {
            PeerKind::Workload { rep, ip } => {
                if let Some(r) = ip.and_then(|ip| engine.workload_at(ip)).filter(|r| {
                    r.workload.namespace == rep.namespace && r.workload.name == rep.name
                }) {
                    let lid = r.identity?;
                    return Some((
                        EpView::workload(&r.workload, &r.ns_labels, p.addr),
                        Some(lid),
                    ));
                }
                let w = inv.workloads.get(rep)?;
                let lid = engine.workload_identity(rep)?;
                let info = engine.identity(lid)?;
                (
                    EpView::workload(w, &info.namespace_labels, p.addr),
                    Some(lid),
                )
            }
            PeerKind::Node { name } => {
                let n = inv.nodes.get(name)?;
                (
                    EpView {
                        kind: EpKind::Node {
                            name: &n.name,
                            labels: &n.labels,
                        },
                        addr: p.addr,
                    },
                    None,
                )
            }
            PeerKind::Region | PeerKind::World => (
                EpView {
                    kind: EpKind::External,
                    addr: p.addr,
                },
                None,
            ),
        })
    }

    /// Derives the peer identity key of every address source; returns them with their ipcache
    /// prefixes.
    fn derive_peer(
        &self,
        engine: &Engine,
        source: &str,
    ) -> Option<(String, PeerKind, Addr, Vec<Cidr>)> {
        let inv = engine.inventory();
        if let Some(name) = source.strip_prefix("node:") {
            let n = inv.nodes.get(name)?;
            let ip = *n.ips.first()?;
            let r = lpm(&self.cidrs, ip);
            let key = format!(
                "node={name}{}",
                r.map(|c| format!("|cidr={c}")).unwrap_or_default()
            );
            return Some((
                key,
                PeerKind::Node {
                    name: name.to_string(),
                },
                addr_of(r),
                n.ips.iter().map(|i| Cidr::host(*i)).collect(),
            ));
        }
        let wk = WorkloadKey::parse(source.strip_prefix("wl:")?)?;
        let w = inv.workloads.get(&wk)?;
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
            identity_key(&info.namespace, &info.namespace_labels, &info.labels),
            if named.is_empty() {
                String::new()
            } else {
                format!("|ports={}", named.join(","))
            },
            r.map(|c| format!("|cidr={c}")).unwrap_or_default()
        );
        Some((
            key,
            PeerKind::Workload {
                rep: wk,
                ip: Some(w.ips[0]),
            },
            addr_of(r),
            w.ips.iter().map(|i| Cidr::host(*i)).collect(),
        ))
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
        } else if let PeerKind::Workload { rep, .. } = &p.kind {
            // Keep a live representative.
            if format!("wl:{rep}") == source {
                if let Some(next) = p
                    .members
                    .iter()
                    .next()
                    .and_then(|m| m.strip_prefix("wl:"))
                    .and_then(WorkloadKey::parse)
                {
                    let ip = self
                        .member_of
                        .get(&format!("wl:{next}"))
                        .and_then(|(_, prefixes)| prefixes.first())
                        .map(Cidr::addr);
                    p.kind = PeerKind::Workload { rep: next, ip };
                }
            }
        }
        changed.insert(id);
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
            self.ipcache.insert(*c, id);
        }
        self.member_of.insert(source.to_string(), (id, prefixes));
        changed.insert(id);
    }

    fn rules_of(engine: &Engine, lid: u32, dir: Direction) -> Vec<u32> {
        let mut out = Vec::new();
        for p in engine.applicable(lid, dir) {
            if let Some((pol, ids, iso)) = engine.slot_rules(&p.id) {
                out.push(iso[dir.index()]);
                out.extend(
                    pol.rules
                        .iter()
                        .zip(ids)
                        .filter(|(r, _)| r.direction == dir)
                        .map(|(_, id)| *id),
                );
            }
        }
        out
    }

    fn rule_def(engine: &Engine, rid: u32) -> Option<(&Policy, &Rule)> {
        let info = engine.rule(rid)?;
        let (pol, ids, _) = engine.slot_rules(&info.policy)?;
        let pos = ids.iter().position(|x| *x == rid)?;
        Some((pol, &pol.rules[pos]))
    }

    /// Ids of the rules (not the isolation defaults) of one direction of the policies applicable
    /// to a label identity: the rules whose peer sets a profile of that identity reads.
    fn rule_ids_of(engine: &Engine, lid: u32, dir: Direction) -> impl Iterator<Item = u32> + '_ {
        engine.applicable(lid, dir).flat_map(move |p| {
            engine
                .slot_rules(&p.id)
                .into_iter()
                .flat_map(move |(pol, ids, _)| {
                    pol.rules
                        .iter()
                        .zip(ids)
                        .filter(move |(r, _)| r.direction == dir)
                        .map(|(_, id)| *id)
                })
        })
    }

    /// Peer identities matched by a rule's non-wildcard peers, plus (egress named ports with a
    /// wildcard peer) every workload identity that has such a port. `memo` holds the matches of
    /// peers already seen against the same candidates.
    fn match_rule<'e>(
        &self,
        engine: &'e Engine,
        rid: u32,
        candidates: &[(u32, EpView)],
        memo: &mut PeerMemo<'e>,
    ) -> BTreeSet<u32> {
        let Some((_, rule)) = Self::rule_def(engine, rid) else {
            return BTreeSet::new();
        };
        let wildcard_named = rule.direction == Direction::Egress
            && rule
                .peers
                .iter()
                .any(|p| matches!(p, Peer::Any | Peer::Entity(Entity::All)))
            && rule
                .ports
                .iter()
                .any(|p| matches!(p, PortSpec::Named { .. }));
        let specific: Vec<&Peer> = rule
            .peers
            .iter()
            .filter(|p| !matches!(p, Peer::Any | Peer::Entity(Entity::All)))
            .collect();
        if specific.is_empty() && !wildcard_named {
            return BTreeSet::new();
        }
        let local_node = Some(self.node.as_str());
        let mut ids: Vec<u32> = Vec::new();
        for peer in specific {
            let matched = memo.entry(peer).or_insert_with(|| {
                candidates
                    .iter()
                    .filter(|(_, view)| peer_matches(peer, local_node, view))
                    .map(|(id, _)| *id)
                    .collect()
            });
            ids.extend_from_slice(matched);
        }
        if wildcard_named {
            ids.extend(
                candidates
                    .iter()
                    .filter(|(_, view)| matches!(view.kind, EpKind::Workload { .. }))
                    .map(|(id, _)| *id),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().collect()
    }

    fn views<'e>(
        &self,
        engine: &'e Engine,
        ids: impl Iterator<Item = u32>,
    ) -> Vec<(u32, EpView<'e>)> {
        ids.filter_map(|id| {
            self.peers
                .get(&id)
                .and_then(|p| self.peer_view(engine, p))
                .map(|(v, _)| (id, v))
        })
        .collect()
    }

    /// Applies engine changes and returns the node's compiled policy.
    pub fn update(&mut self, engine: &Engine, changes: &Changes) -> NodePolicy {
        let mut changed_peers: BTreeSet<u32> = BTreeSet::new();
        // 1. Policy CIDRs: if the set changed, every address source may move region.
        // Without policy changes the CIDR set and the rule set cannot have changed.
        let cidrs = if changes.policies.is_empty() {
            self.cidrs.clone()
        } else {
            policy_cidrs(engine)
        };
        let mut sources: BTreeSet<String> = BTreeSet::new();
        if cidrs != self.cidrs {
            self.cidrs = cidrs;
            sources.extend(self.member_of.keys().cloned());
            for (_, id) in std::mem::take(&mut self.regions) {
                if id != ID_WORLD {
                    let key = self.peers[&id].key.clone();
                    self.alloc.release(&key);
                    self.peers.remove(&id);
                }
                changed_peers.insert(id);
            }
            for c in self.cidrs.clone() {
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
                self.regions.insert(c, id);
                changed_peers.insert(id);
            }
        }
        if let std::collections::btree_map::Entry::Vacant(e) = self.peers.entry(ID_WORLD) {
            e.insert(PeerIdent {
                kind: PeerKind::World,
                addr: Addr::Outside,
                key: "world".into(),
                members: BTreeSet::new(),
            });
            changed_peers.insert(ID_WORLD);
        }
        for any in ["0.0.0.0/0", "::/0"] {
            self.regions
                .entry(any.parse().expect("valid"))
                .or_insert(ID_WORLD);
        }
        // 2. Address sources that changed: workloads (and all in a namespace whose labels moved,
        //    which the engine reports as workload changes), nodes.
        sources.extend(changes.workloads.iter().map(|k| format!("wl:{k}")));
        sources.extend(changes.nodes.iter().map(|n| format!("node:{n}")));
        for s in &sources {
            self.unbind(s, &mut changed_peers);
        }
        for s in &sources {
            self.bind(engine, s, &mut changed_peers);
        }
        // Peer identities whose content changed but id stayed are in changed_peers too.
        // 3. Local endpoints: only changed workloads (and those whose peer identity moved).
        let inv = engine.inventory();
        let mut touched: BTreeSet<WorkloadKey> = changes.workloads.clone();
        if sources.len() > changes.workloads.len() {
            touched.extend(
                sources
                    .iter()
                    .filter_map(|s| s.strip_prefix("wl:"))
                    .filter_map(WorkloadKey::parse),
            );
        }
        for k in touched {
            self.endpoints.remove(&k);
            let Some(w) = inv.workloads.get(&k) else {
                continue;
            };
            if w.host_network || w.node.as_deref() != Some(self.node.as_str()) {
                continue;
            }
            let (Some(lid), Some((pid, _))) = (
                engine.workload_identity(&k),
                self.member_of.get(&format!("wl:{k}")),
            ) else {
                continue;
            };
            self.endpoints
                .insert(k, ((lid, w.ports.clone()), w.ips.clone(), *pid));
        }
        // 4. Rule → peer sets, for the rules of this node's endpoints only (no other rule is
        //    read): at 10,000 policies most rules select no local endpoint.
        let mut local_ids: BTreeSet<u32> = BTreeSet::new();
        for ((lid, _), _, _) in self.endpoints.values() {
            local_ids.insert(*lid);
        }
        let mut live_rules: BTreeSet<u32> = BTreeSet::new();
        for lid in &local_ids {
            for dir in Direction::BOTH {
                live_rules.extend(Self::rule_ids_of(engine, *lid, dir));
            }
        }
        self.rule_peers.retain(|rid, _| live_rules.contains(rid));
        let changed_policy_rules: BTreeSet<u32> = changes
            .policies
            .iter()
            .filter_map(|p| engine.slot_rules(p).map(|(_, ids, _)| ids.to_vec()))
            .flatten()
            .collect();
        let needs_all = live_rules
            .iter()
            .any(|rid| changed_policy_rules.contains(rid) || !self.rule_peers.contains_key(rid));
        let all_views = if needs_all {
            self.views(engine, self.peers.keys().copied())
        } else {
            Vec::new()
        };
        let gone: Vec<u32> = changed_peers
            .iter()
            .copied()
            .filter(|p| !self.peers.contains_key(p))
            .collect();
        let present_views = self.views(
            engine,
            changed_peers
                .iter()
                .copied()
                .filter(|p| self.peers.contains_key(p)),
        );
        // Many rules name the same peer (every admin deny here names the same namespaces): each
        // distinct peer is matched against the candidates once per pass.
        let (mut memo_all, mut memo_present) = (PeerMemo::default(), PeerMemo::default());
        for rid in &live_rules {
            if changed_policy_rules.contains(rid) || !self.rule_peers.contains_key(rid) {
                let set = self.match_rule(engine, *rid, &all_views, &mut memo_all);
                self.rule_peers.insert(*rid, set);
            } else if !changed_peers.is_empty() {
                let add = self.match_rule(engine, *rid, &present_views, &mut memo_present);
                let set = self.rule_peers.get_mut(rid).expect("present");
                for g in gone.iter().chain(present_views.iter().map(|(id, _)| id)) {
                    set.remove(g);
                }
                set.extend(add);
            }
        }
        // 5. Profiles: recompute those whose subject's policies changed, patch the rows of changed
        //    peers in the others, drop unused ones.
        let mut reps: HashMap<&ProfileKey, &WorkloadKey> = HashMap::new();
        for (wk, (pk, _, _)) in &self.endpoints {
            reps.entry(pk).or_insert(wk);
        }
        let dirty_subjects = &changes.identities;
        let mut profiles = std::mem::take(&mut self.profiles);
        profiles.retain(|k, _| reps.contains_key(k) && !dirty_subjects.contains(&k.0));
        let mut fresh: Vec<(ProfileKey, Profile)> = Vec::new();
        for (k, rep) in &reps {
            match profiles.get(*k) {
                None => fresh.push(((*k).clone(), self.compute_profile(engine, rep, k.0, None))),
                Some(_) if changed_peers.is_empty() => {}
                Some(prof) => {
                    let relevant = |p: &u32| {
                        prof.tables.iter().any(|t| t.rows.contains_key(p))
                            || prof
                                .rules
                                .iter()
                                .flatten()
                                .any(|r| self.rule_peers.get(r).is_some_and(|s| s.contains(p)))
                    };
                    if changed_peers.iter().any(relevant) {
                        let old = profiles.remove(*k).expect("present");
                        fresh.push((
                            (*k).clone(),
                            self.compute_profile(engine, rep, k.0, Some((old, &changed_peers))),
                        ));
                    }
                }
            }
        }
        drop(reps);
        profiles.extend(fresh);
        self.profiles = profiles;
        self.snapshot(engine)
    }

    fn snapshot(&self, engine: &Engine) -> NodePolicy {
        let mut rules = BTreeMap::new();
        for prof in self.profiles.values() {
            for r in prof.rules.iter().flatten() {
                if let Some(info) = engine.rule(*r) {
                    rules.insert(*r, info.clone());
                }
            }
        }
        let endpoints = self
            .endpoints
            .iter()
            .map(|(wk, (pk, ips, pid))| {
                let prof = &self.profiles[pk];
                (
                    wk.clone(),
                    EndpointPolicy {
                        ips: ips.clone(),
                        identity: *pid,
                        ingress: prof.tables[0].clone(),
                        egress: prof.tables[1].clone(),
                    },
                )
            })
            .collect();
        // Address entries win over a region with the same prefix. Cloned whole (one entry per
        // address of the cluster), then the few regions added.
        let mut ipcache = self.ipcache.clone();
        for (c, id) in &self.regions {
            ipcache.entry(*c).or_insert(*id);
        }
        NodePolicy {
            node: self.node.clone(),
            ipcache,
            endpoints,
            rules,
        }
    }

    /// Computes a profile's tables; with `patch`, reuses the old tables and recomputes only the
    /// rows of the given peer identities. Peers that match the same set of rules (and, for egress
    /// named ports, name the same ports) get the same rows, so each group is evaluated once.
    fn compute_profile(
        &self,
        engine: &Engine,
        rep: &WorkloadKey,
        lid: u32,
        mut patch: Option<(Profile, &BTreeSet<u32>)>,
    ) -> Profile {
        let w = &engine.inventory().workloads[rep];
        let info = engine.identity(lid).expect("live identity");
        let subject = EpView::workload(w, &info.namespace_labels, Addr::Outside);
        let rules = [
            Self::rules_of(engine, lid, Direction::Ingress),
            Self::rules_of(engine, lid, Direction::Egress),
        ];
        let mut tables: [Arc<Table>; 2] = [Arc::default(), Arc::default()];
        for dir in Direction::BOTH {
            let d = dir.index();
            let audit = engine.has_audit(Some(lid), dir);
            let rule_defs: Vec<(u32, &Rule)> = rules[d]
                .iter()
                .filter_map(|r| Self::rule_def(engine, *r).map(|x| (*r, x.1)))
                .collect();
            let has_policy = !rules[d].is_empty();
            if !has_policy {
                continue;
            }
            // Port boundaries per protocol (numeric ranges and, for ingress, our named ports).
            let mut bounds: BTreeMap<Protocol, BTreeSet<u32>> = Protocol::ALL
                .iter()
                .map(|p| (*p, BTreeSet::new()))
                .collect();
            for (_, r) in &rule_defs {
                for ps in &r.ports {
                    match ps {
                        PortSpec::Range { protocol, lo, hi } => {
                            let b = bounds.entry(*protocol).or_default();
                            b.insert(*lo as u32);
                            b.insert(*hi as u32 + 1);
                        }
                        PortSpec::Named { name, protocol } => {
                            if dir == Direction::Ingress {
                                if let Some(cp) = w.named_port(name, *protocol) {
                                    let b = bounds.entry(cp.protocol).or_default();
                                    b.insert(cp.port as u32);
                                    b.insert(cp.port as u32 + 1);
                                }
                            }
                        }
                    }
                }
            }
            let named_egress: Vec<(&str, Option<Protocol>)> = if dir == Direction::Egress {
                rule_defs
                    .iter()
                    .flat_map(|(_, r)| r.ports.iter())
                    .filter_map(|p| match p {
                        PortSpec::Named { name, protocol } => Some((name.as_str(), *protocol)),
                        _ => None,
                    })
                    .collect()
            } else {
                Vec::new()
            };
            let eval_rows = |peer: &EpView,
                             peer_ports: Option<&[ContainerPort]>|
             -> Vec<PortEntry> {
                let mut rows: Vec<PortEntry> = Vec::new();
                for (proto, b) in &bounds {
                    let mut b = b.clone();
                    if let Some(ports) = peer_ports {
                        for (name, pr) in &named_egress {
                            for cp in ports.iter().filter(|cp| {
                                cp.name.as_deref() == Some(*name)
                                    && pr.is_none_or(|x| x == cp.protocol)
                            }) {
                                if cp.protocol == *proto {
                                    b.insert(cp.port as u32);
                                    b.insert(cp.port as u32 + 1);
                                }
                            }
                        }
                    }
                    b.insert(0);
                    b.insert(65536);
                    let pts: Vec<u32> = b.into_iter().filter(|x| *x <= 65536).collect();
                    for win in pts.windows(2) {
                        let (lo, hi) = (win[0] as u16, (win[1] - 1) as u16);
                        let v = engine.eval_dir(
                            dir,
                            Some(lid),
                            &subject,
                            peer,
                            *proto,
                            lo,
                            false,
                            None,
                        );
                        let a = if audit {
                            engine.eval_dir(dir, Some(lid), &subject, peer, *proto, lo, true, None)
                        } else {
                            v
                        };
                        let verdict = EntryVerdict {
                            allow: v.allowed,
                            rule: v.rule,
                            audit_allow: a.allowed,
                            audit_rule: a.rule,
                        };
                        match rows.last_mut() {
                            Some(last)
                                if last.protocol == *proto
                                    && last.verdict == verdict
                                    && last.hi as u32 + 1 == lo as u32 =>
                            {
                                last.hi = hi
                            }
                            _ => rows.push(PortEntry {
                                protocol: *proto,
                                lo,
                                hi,
                                verdict,
                            }),
                        }
                    }
                }
                rows
            };
            // Copy-on-write: no copy when the last snapshot handed out has been dropped.
            let mut table_arc = match patch.as_mut() {
                Some((old, _)) => std::mem::take(&mut old.tables[d]),
                None => Arc::default(),
            };
            let table = Arc::make_mut(&mut table_arc);
            // The wildcard row: an endpoint that matches only "anyone" peers.
            let wildcard = match table.rows.get(&ID_ANY) {
                Some(w) if patch.is_some() => w.clone(),
                _ => eval_rows(
                    &EpView {
                        kind: EpKind::Anonymous,
                        addr: Addr::Outside,
                    },
                    None,
                ),
            };
            table.rows.insert(ID_ANY, wildcard.clone());
            let sets: Vec<Option<&BTreeSet<u32>>> = rule_defs
                .iter()
                .map(|(r, _)| self.rule_peers.get(r))
                .collect();
            // Peers some rule matches: all of them for a full profile; for a patch, the changed
            // ones only (without building the union, which is large when many rules name the
            // same namespaces).
            let targets: Vec<u32> = match &patch {
                Some((_, changed)) => {
                    for c in changed.iter() {
                        table.rows.remove(c);
                    }
                    changed
                        .iter()
                        .copied()
                        .filter(|c| sets.iter().flatten().any(|s| s.contains(c)))
                        .collect()
                }
                None => {
                    let mut all: Vec<u32> = sets
                        .iter()
                        .flatten()
                        .flat_map(|s| s.iter().copied())
                        .collect();
                    all.sort_unstable();
                    all.dedup();
                    all
                }
            };
            // Group peers by signature: which rules they match, and their named ports if named
            // egress ports are in play.
            let mut groups: BTreeMap<(Vec<bool>, Vec<ContainerPort>), Vec<u32>> = BTreeMap::new();
            for pid in targets {
                let Some(p) = self.peers.get(&pid) else {
                    continue;
                };
                let sig: Vec<bool> = sets
                    .iter()
                    .map(|s| s.is_some_and(|s| s.contains(&pid)))
                    .collect();
                let ports = match (&p.kind, named_egress.is_empty()) {
                    (PeerKind::Workload { rep, .. }, false) => engine
                        .inventory()
                        .workloads
                        .get(rep)
                        .map(|w| w.ports.clone())
                        .unwrap_or_default(),
                    _ => Vec::new(),
                };
                // Kinds behave differently under named ports (only workloads resolve them).
                let mut sig = sig;
                sig.push(matches!(p.kind, PeerKind::Workload { .. }));
                groups.entry((sig, ports)).or_default().push(pid);
            }
            for members in groups.values() {
                let Some((view, _)) = members
                    .iter()
                    .find_map(|m| self.peers.get(m).and_then(|p| self.peer_view(engine, p)))
                else {
                    continue;
                };
                let peer_ports = match view.kind {
                    EpKind::Workload { ports, .. } => Some(ports),
                    _ => None,
                };
                // Keep only rows that differ from the wildcard somewhere in their range: lookup
                // falls back to the wildcard for the rest.
                let rows: Vec<PortEntry> = eval_rows(&view, peer_ports)
                    .into_iter()
                    .filter(|r| differs_from(&wildcard, r))
                    .collect();
                if !rows.is_empty() {
                    for m in members {
                        table.rows.insert(*m, rows.clone());
                    }
                }
            }
            tables[d] = table_arc;
        }
        Profile { tables, rules }
    }
}

/// True when `r` gives a different verdict than the wildcard rows at some port of its range.
fn differs_from(wildcard: &[PortEntry], r: &PortEntry) -> bool {
    let mut points = vec![r.lo];
    points.extend(
        wildcard
            .iter()
            .filter(|w| w.protocol == r.protocol && w.lo > r.lo && w.lo <= r.hi)
            .map(|w| w.lo),
    );
    points
        .into_iter()
        .any(|p| Table::find(wildcard, r.protocol, p) != Some(r.verdict))
}

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
//!
//! Modules: `tables` (the output and its lookup), `peers` (peer identities and the ipcache),
//! `rules` (which peer identities each rule matches), `profile` (the tables of one label identity
//! with one set of ports). The compiler reads the engine only through its public API
//! (`engine::query` and the lookups).

mod peers;
mod profile;
mod rules;
mod sweep;
mod tables;

pub use tables::{EndpointPolicy, EntryVerdict, NodePolicy, PortEntry, Table};

use crate::engine::{Addr, Changes, Engine};
use crate::identity::IdentityAllocator;
use crate::model::{ContainerPort, Direction, Inventory, Peer, Policy, WorkloadKey};
use crate::net::{Cidr, DomainPattern};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

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
    /// Addresses DNS answers named, whose names match the same policy domain patterns; `rep`
    /// is a member address (its names give the view).
    Fqdn {
        rep: IpAddr,
    },
}

/// A peer identity: what its members look like to policy, and who they are.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PeerIdent {
    kind: PeerKind,
    addr: Addr,
    key: String,
    /// Address sources (`wl:ns/name`, `node:name`, `dns:ip`) holding this identity.
    members: BTreeSet<String>,
}

/// A profile is shared by the local endpoints with one label identity and one set of ports.
type ProfileKey = (u32, Vec<ContainerPort>);

/// Peer identities each distinct rule peer matched among one list of candidates.
type PeerMemo<'e> = HashMap<&'e Peer, Vec<u32>>;

#[derive(Debug, Clone)]
struct Profile {
    tables: [Arc<Table>; 2],
    /// Rule ids applicable per direction (so rows for new peers can be decided).
    rules: [Vec<u32>; 2],
    /// Whether an egress rule names a domain (the agent then learns DNS answers).
    names_domains: bool,
    /// Per direction, what the rows were walked from: a later change of some rules only
    /// re-walks the peers those rules match.
    prints: [sweep::Prints; 2],
}

/// Incremental per-node compiler.
#[derive(Debug, Clone)]
pub struct Compiler {
    node: String,
    alloc: IdentityAllocator,
    cidrs: BTreeSet<Cidr>,
    /// Every domain pattern some policy rule names (FQDN peer identities are keyed by the
    /// patterns their names match).
    domains: BTreeSet<DomainPattern>,
    peers: BTreeMap<u32, PeerIdent>,
    /// Which peer identity each address source (workload or node) holds.
    member_of: HashMap<String, (u32, Vec<Cidr>)>,
    /// Address entries of workloads and nodes (these win over a region with the same prefix).
    ipcache: BTreeMap<Cidr, u32>,
    /// Policy CIDR regions and the world defaults.
    regions: BTreeMap<Cidr, u32>,
    /// Peer identities each rule's non-wildcard peers match.
    rule_peers: HashMap<u32, BTreeSet<u32>>,
    /// What each rule's peer set was matched from (its direction, peers, named ports): a rule
    /// whose policy changed elsewhere keeps its set.
    rule_keys: HashMap<u32, u64>,
    /// The sets this update replaced (rules matched again): the peers a changed rule matched
    /// before need new rows too.
    replaced: HashMap<u32, BTreeSet<u32>>,
    profiles: HashMap<ProfileKey, Profile>,
    endpoints: BTreeMap<WorkloadKey, (ProfileKey, Vec<IpAddr>, u32)>,
}

/// Full compile: `compile(inventory, policies, node)` in one call.
pub fn compile(inventory: Inventory, policies: Vec<Policy>, node: &str, now: i64) -> NodePolicy {
    let engine = Engine::build(inventory, policies, now);
    Compiler::new(node).full(&engine)
}

impl Compiler {
    pub fn new(node: &str) -> Self {
        Self {
            node: node.to_string(),
            alloc: IdentityAllocator::default(),
            cidrs: BTreeSet::new(),
            domains: BTreeSet::new(),
            peers: BTreeMap::new(),
            member_of: HashMap::new(),
            ipcache: BTreeMap::new(),
            regions: BTreeMap::new(),
            rule_peers: HashMap::new(),
            rule_keys: HashMap::new(),
            replaced: HashMap::new(),
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
            names: engine.named_addresses().collect(),
        };
        self.update(engine, &all)
    }

    /// Applies engine changes and returns the node's compiled policy.
    pub fn update(&mut self, engine: &Engine, changes: &Changes) -> NodePolicy {
        let mut changed_peers: BTreeSet<u32> = BTreeSet::new();
        // 1. Policy CIDRs: if the set changed, every address source may move region.
        let mut sources = self.refresh_regions(engine, changes, &mut changed_peers);
        // 2. Address sources that changed: workloads (and all in a namespace whose labels moved,
        //    which the engine reports as workload changes), nodes. Peer identities whose content
        //    changed but id stayed end up in `changed_peers` too.
        sources.extend(changes.workloads.iter().map(|k| format!("wl:{k}")));
        sources.extend(changes.nodes.iter().map(|n| format!("node:{n}")));
        sources.extend(changes.names.iter().map(|ip| format!("dns:{ip}")));
        self.rebind(engine, &sources, &mut changed_peers);
        // 3. Local endpoints: only changed workloads (and those whose peer identity moved).
        self.refresh_endpoints(engine, changes, &sources);
        // 4. Rule → peer sets, for the rules of this node's endpoints only.
        self.refresh_rule_peers(engine, changes, &changed_peers);
        // 5. Profiles: recompute those whose subject's policies changed, patch the rows of changed
        //    peers in the others, drop unused ones.
        self.refresh_profiles(engine, changes, &changed_peers);
        self.snapshot(engine)
    }

    /// Re-derives the local endpoints among the touched workloads.
    fn refresh_endpoints(
        &mut self,
        engine: &Engine,
        changes: &Changes,
        sources: &BTreeSet<String>,
    ) {
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
    }

    /// The node's policy as it stands: tables shared with the profiles (`Arc`), the ipcache,
    /// and the rules the tables name.
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
                let learns_names = !self.domains.is_empty() && prof.names_domains;
                (
                    wk.clone(),
                    EndpointPolicy {
                        ips: ips.clone(),
                        identity: *pid,
                        ingress: prof.tables[Direction::Ingress.index()].clone(),
                        egress: prof.tables[Direction::Egress.index()].clone(),
                        learns_names,
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{into_model, parse_file};
    use crate::model::Protocol;

    const YAML: &str = "
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
spec: {nodeName: n1}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
spec: {nodeName: n2}
status: {podIP: 10.0.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}, {ipBlock: {cidr: 192.0.2.0/24}}]}]
";

    fn engine() -> Engine {
        let objects = parse_file("t.yaml", YAML).unwrap().objects;
        let (inv, policies) = into_model(objects.into_iter().map(|o| o.object));
        Engine::build(inv, policies, 0)
    }

    #[test]
    fn a_node_compiles_its_own_endpoints_and_the_whole_ipcache() {
        let e = engine();
        let n1 = Compiler::new("n1").full(&e);
        assert_eq!(
            n1.endpoints.keys().collect::<Vec<_>>(),
            [&WorkloadKey::new("a", "web")]
        );
        assert!(n1.rules.is_empty(), "no rule selects n1's endpoints");
        let mut c2 = Compiler::new("n2");
        let n2 = c2.full(&e);
        let db = &n2.endpoints[&WorkloadKey::new("a", "db")];
        // web's address and the policy CIDR have peer identities of their own.
        let web_id = n2.identity_of("10.0.0.1".parse().unwrap());
        let region = n2.identity_of("192.0.2.9".parse().unwrap());
        assert_ne!(web_id, region);
        assert!(db.ingress.lookup(web_id, Protocol::Tcp, 80).allow);
        assert!(db.ingress.lookup(region, Protocol::Udp, 53).allow);
        assert!(!db.ingress.lookup(2, Protocol::Tcp, 80).allow);
        assert_eq!(n1.ipcache, n2.ipcache);
        // Nothing changed: the same tables, shared.
        let again = c2.update(&e, &Changes::default());
        assert_eq!(again, n2);
        assert!(Arc::ptr_eq(
            &again.endpoints[&WorkloadKey::new("a", "db")].ingress,
            &db.ingress
        ));
    }

    #[test]
    fn rule_peer_sets_are_kept_for_local_endpoints_only() {
        let e = engine();
        let mut c1 = Compiler::new("n1");
        c1.full(&e);
        assert!(c1.rule_peers.is_empty());
        let mut c2 = Compiler::new("n2");
        c2.full(&e);
        // The NetworkPolicy's one ingress rule, matching web's identity and the region.
        assert_eq!(c2.rule_peers.len(), 1);
        assert_eq!(c2.rule_peers.values().next().unwrap().len(), 2);
    }

    #[test]
    fn named_addresses_become_fqdn_peers_when_a_rule_names_them() {
        let yaml = format!(
            "{YAML}---
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {{name: out, namespace: a}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  egress:
  - to: [{{domain: \"*.example.com\"}}]
    ports: [{{port: 443}}]
"
        );
        let objects = parse_file("t.yaml", &yaml).unwrap().objects;
        let (inv, policies) = into_model(objects.into_iter().map(|o| o.object));
        let mut e = Engine::build(inv, policies, 0);
        let mut c = Compiler::new("n1");
        let before = c.full(&e);
        let web = &before.endpoints[&WorkloadKey::new("a", "web")];
        assert!(web.learns_names);
        let api: IpAddr = "203.0.113.5".parse().unwrap();
        assert!(
            !web.egress
                .lookup(before.identity_of(api), Protocol::Tcp, 443)
                .allow
        );
        // The agent learns a name: only that address changes identity.
        e.set_names(api, vec!["API.example.com.".into()]);
        e.set_names("203.0.113.6".parse().unwrap(), vec!["example.org".into()]);
        let changes = e.take_changes();
        assert_eq!(changes.names.len(), 2);
        let after = c.update(&e, &changes);
        let web = &after.endpoints[&WorkloadKey::new("a", "web")];
        assert!(
            web.egress
                .lookup(after.identity_of(api), Protocol::Tcp, 443)
                .allow
        );
        assert!(
            !web.egress
                .lookup(after.identity_of(api), Protocol::Tcp, 80)
                .allow
        );
        let other = after.identity_of("203.0.113.6".parse().unwrap());
        assert!(!web.egress.lookup(other, Protocol::Tcp, 443).allow);
        // A pod's address is never an FQDN peer, whatever DNS says of it.
        e.set_names("10.0.0.2".parse().unwrap(), vec!["db.example.com".into()]);
        let changes = e.take_changes();
        let after = c.update(&e, &changes);
        assert_eq!(after, Compiler::new("n1").full(&e));
        assert!(
            !after.endpoints[&WorkloadKey::new("a", "web")]
                .egress
                .lookup(
                    after.identity_of("10.0.0.2".parse().unwrap()),
                    Protocol::Tcp,
                    443
                )
                .allow
        );
        // Forgetting the name takes the address back to the world.
        e.set_names(api, vec![]);
        let changes = e.take_changes();
        let after = c.update(&e, &changes);
        assert_eq!(after.identity_of(api), crate::identity::ID_WORLD);
    }
}

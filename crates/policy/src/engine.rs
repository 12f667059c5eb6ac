//! The evaluator: inventory + policies, indexed by identity so a flow is decided by looking only
//! at the policies that select its two ends. `evaluate` is the reference semantics that the
//! compiled tables and the kernel datapath are tested against; `explain` walks the same code with
//! a trace.
//!
//! Precedence, per direction (egress at the source, ingress at the destination; both must allow):
//! 1. admin tier (AdminNetworkPolicy, Cellwall `tier: admin`): policies by priority, rules in
//!    order, first match decides; `Pass` skips to the application tier.
//! 2. application tier (NetworkPolicy, Cellwall `tier: application`): if any policy isolates the
//!    workload in this direction, a matching deny wins, else a matching allow admits, else denied.
//! 3. baseline tier (BaselineAdminNetworkPolicy, Cellwall `tier: baseline`): first match decides.
//! 4. otherwise allowed.
//!
//! Audit-mode policies are left out of the enforced verdict; the audit verdict is the same walk
//! with them included. Expired policies and rules are left out of both.

use crate::fxhash::FxHashMap;
use crate::identity::IdentityAllocator;
use crate::labels::Labels;
use crate::model::*;
use crate::net::Cidr;
use serde::Serialize;
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

/// A connection attempt to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// Why a direction got its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The endpoint is not a workload Cellwall enforces on (external, a node, hostNetwork).
    NotManaged,
    /// No policy decided: default allow.
    Default,
    /// A rule matched.
    Rule,
    /// Selected by an application-tier policy and no allow rule matched.
    Isolated,
}

/// The verdict of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DirVerdict {
    pub allowed: bool,
    /// Deciding rule id (see [`Engine::rule`]); 0 when no rule decided.
    pub rule: u32,
    pub tier: Option<Tier>,
    pub reason: Reason,
}

impl DirVerdict {
    const UNMANAGED: DirVerdict = DirVerdict {
        allowed: true,
        rule: 0,
        tier: None,
        reason: Reason::NotManaged,
    };
    const DEFAULT: DirVerdict = DirVerdict {
        allowed: true,
        rule: 0,
        tier: None,
        reason: Reason::Default,
    };
}

/// The decision for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    pub allowed: bool,
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
    /// What the verdict would be with audit-mode policies enforced; `None` when no audit-mode
    /// policy applies to either end.
    pub audit: Option<AuditOutcome>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct AuditOutcome {
    pub allowed: bool,
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
}

impl Decision {
    /// The direction verdict that decided the flow: the denying side, else the side whose rule
    /// admitted it (ingress first), else egress.
    pub fn deciding(&self) -> (Direction, &DirVerdict) {
        decisive(&self.egress, &self.ingress)
    }
}

fn decisive<'a>(eg: &'a DirVerdict, ing: &'a DirVerdict) -> (Direction, &'a DirVerdict) {
    if !eg.allowed {
        (Direction::Egress, eg)
    } else if !ing.allowed || ing.rule != 0 {
        (Direction::Ingress, ing)
    } else {
        (Direction::Egress, eg)
    }
}

/// What a rule id stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleInfo {
    pub id: u32,
    pub policy: PolicyId,
    pub direction: Direction,
    /// Position in the policy's rules of that direction; `None` for the implicit
    /// "isolated, nothing allowed" default deny of an application-tier policy.
    pub index: Option<usize>,
    pub name: Option<String>,
    pub action: Action,
    pub tier: Tier,
    pub mode: Mode,
}

impl RuleInfo {
    /// `NetworkPolicy/x/deny-all ingress[0] "name"` or `... ingress (default deny)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.policy, self.direction.as_str());
        match self.index {
            Some(i) => s.push_str(&format!("[{i}]")),
            None => s.push_str(" (isolation: no rule allows)"),
        }
        if let Some(n) = &self.name {
            s.push_str(&format!(" \"{n}\""));
        }
        s
    }
}

/// A label identity of managed workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    pub id: u32,
    pub namespace: String,
    pub namespace_labels: Labels,
    pub labels: Labels,
}

impl PolicySlot {
    /// This policy's rules of one direction, with their ids, in order.
    fn dir_rules(&self, dir: Direction) -> impl Iterator<Item = (&Rule, &u32)> {
        self.policy
            .rules
            .iter()
            .zip(&self.rule_ids)
            .filter(move |(r, _)| r.direction == dir)
    }

    fn trace(&self) -> PolicyTrace {
        PolicyTrace {
            policy: self.policy.id.to_string(),
            mode: self.policy.mode,
            rules: Vec::new(),
        }
    }
}

#[derive(Debug, Clone)]
struct PolicySlot {
    policy: Policy,
    /// Parallel to `policy.rules`.
    rule_ids: Vec<u32>,
    /// Implicit isolation rule per direction.
    isolation_rule: [u32; 2],
    subjects: BTreeSet<u32>,
}

/// What an address belongs to. Workload entries carry everything evaluation needs, so deciding a
/// flow costs one hash lookup per end.
#[derive(Debug, Clone)]
pub(crate) enum EpRef {
    Workload(std::sync::Arc<WlRec>),
    Node(String),
}

#[derive(Debug)]
pub(crate) struct WlRec {
    pub workload: Workload,
    pub identity: Option<u32>,
    pub ns_labels: Labels,
}

impl EpRef {
    fn is_workload(&self, key: &WorkloadKey) -> bool {
        matches!(self, EpRef::Workload(r) if r.workload.namespace == key.namespace && r.workload.name == key.name)
    }
}

/// Where an address stands relative to policy CIDRs: a real address, or (for compiled tables) a
/// region of addresses whose longest policy-CIDR match is the given network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Addr {
    Ip(IpAddr),
    Region(Cidr),
    /// Inside no policy CIDR.
    Outside,
}

impl Addr {
    fn in_cidr(&self, c: &Cidr) -> bool {
        match self {
            Addr::Ip(ip) => c.contains(ip),
            Addr::Region(r) => c.contains_net(r),
            Addr::Outside => false,
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum EpKind<'a> {
    Workload {
        ns: &'a str,
        ns_labels: &'a Labels,
        labels: &'a Labels,
        ports: &'a [ContainerPort],
        node: Option<&'a str>,
    },
    Node {
        name: &'a str,
        labels: &'a Labels,
    },
    External,
    /// Matches only peers that match anything (`Any`, entity `all`): the wildcard table entry.
    Anonymous,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct EpView<'a> {
    pub kind: EpKind<'a>,
    pub addr: Addr,
}

impl<'a> EpView<'a> {
    /// A workload as policy sees it: its namespace (and that namespace's labels), labels, ports
    /// and node.
    pub(crate) fn workload(w: &'a Workload, ns_labels: &'a Labels, addr: Addr) -> Self {
        EpView {
            kind: EpKind::Workload {
                ns: &w.namespace,
                ns_labels,
                labels: &w.labels,
                ports: &w.ports,
                node: w.node.as_deref(),
            },
            addr,
        }
    }
}

/// Policies selecting one identity, per direction, in evaluation order, and whether any of them
/// is in audit mode (so the audit pass can be skipped when none is).
#[derive(Debug, Clone, Default)]
struct Applicable {
    lists: [Vec<usize>; 2],
    audit: [bool; 2],
}

/// Changes since the last [`Engine::take_changes`], for incremental compilation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Policies added, changed or removed.
    pub policies: BTreeSet<PolicyId>,
    /// Label identities whose subject policies changed, or that appeared or disappeared.
    pub identities: BTreeSet<u32>,
    /// Workloads added, changed (labels, IPs, ports, node) or removed.
    pub workloads: BTreeSet<WorkloadKey>,
    /// Nodes added, changed or removed.
    pub nodes: BTreeSet<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
            && self.identities.is_empty()
            && self.workloads.is_empty()
            && self.nodes.is_empty()
    }
}

/// The policy engine. All mutation is incremental: a relabel touches one identity against all
/// policies, a policy change touches one policy against all identities.
#[derive(Debug, Clone, Default)]
pub struct Engine {
    inv: Inventory,
    now: i64,
    slots: Vec<Option<PolicySlot>>,
    free: Vec<usize>,
    by_id: HashMap<PolicyId, usize>,
    ids: IdentityAllocator,
    identities: HashMap<u32, IdentityInfo>,
    /// Label identities per namespace: a policy whose subject names its namespace (every
    /// namespaced kind) is matched against these only, not against every identity.
    ns_identities: HashMap<String, BTreeSet<u32>>,
    wl_identity: HashMap<WorkloadKey, (u32, String)>,
    members: HashMap<u32, BTreeSet<WorkloadKey>>,
    /// Per identity, per direction: policy slots sorted by (tier, priority, id).
    applicable: FxHashMap<u32, Applicable>,
    ip_index: FxHashMap<IpAddr, EpRef>,
    rule_ids: IdentityAllocator,
    rules: HashMap<u32, RuleInfo>,
    changes: Changes,
}

fn ns_matches(m: &NamespaceMatch, ns: &str, ns_labels: &Labels) -> bool {
    match m {
        NamespaceMatch::Named(n) => n == ns,
        NamespaceMatch::Selector(s) => s.matches(ns_labels),
    }
}

fn subject_matches(s: &Subject, id: &IdentityInfo) -> bool {
    ns_matches(&s.namespaces, &id.namespace, &id.namespace_labels) && s.pods.matches(&id.labels)
}

pub(crate) fn peer_matches(peer: &Peer, subject_node: Option<&str>, v: &EpView) -> bool {
    match peer {
        Peer::Any | Peer::Entity(Entity::All) => true,
        Peer::Pods { namespaces, pods } => match v.kind {
            EpKind::Workload {
                ns,
                ns_labels,
                labels,
                ..
            } => ns_matches(namespaces, ns, ns_labels) && pods.matches(labels),
            _ => false,
        },
        Peer::Nodes(sel) => matches!(v.kind, EpKind::Node { labels, .. } if sel.matches(labels)),
        Peer::Cidr { cidr, except } => {
            v.addr.in_cidr(cidr) && !except.iter().any(|e| v.addr.in_cidr(e))
        }
        Peer::Entity(Entity::World) => matches!(v.kind, EpKind::External),
        Peer::Entity(Entity::Host) => {
            matches!(v.kind, EpKind::Node { name, .. } if Some(name) == subject_node)
        }
        Peer::Entity(Entity::Cluster) => {
            matches!(v.kind, EpKind::Workload { .. } | EpKind::Node { .. })
        }
    }
}

pub(crate) fn port_matches(
    spec: &PortSpec,
    proto: Protocol,
    port: u16,
    dst_ports: Option<&[ContainerPort]>,
) -> bool {
    match spec {
        PortSpec::Range { protocol, lo, hi } => *protocol == proto && *lo <= port && port <= *hi,
        PortSpec::Named { protocol, name } => dst_ports.is_some_and(|ports| {
            ports.iter().any(|cp| {
                cp.name.as_deref() == Some(name.as_str())
                    && protocol.is_none_or(|p| p == cp.protocol)
                    && cp.protocol == proto
                    && cp.port == port
            })
        }),
    }
}

pub(crate) fn identity_key(ns: &str, ns_labels: &Labels, labels: &Labels) -> String {
    let mut k = format!("ns={ns}");
    for (a, b) in ns_labels {
        k.push_str(&format!(";nsl:{a}={b}"));
    }
    for (a, b) in labels {
        k.push_str(&format!(";l:{a}={b}"));
    }
    k
}

/// One considered rule in an explanation.
#[derive(Debug, Clone, Serialize)]
pub struct RuleTrace {
    pub rule: u32,
    pub description: String,
    pub action: Action,
    pub matched: bool,
}

/// One policy considered in a tier.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyTrace {
    pub policy: String,
    pub mode: Mode,
    pub rules: Vec<RuleTrace>,
}

/// What one tier did.
#[derive(Debug, Clone, Serialize)]
pub struct TierTrace {
    pub tier: Tier,
    pub policies: Vec<PolicyTrace>,
    /// `no policy`, `no rule matched`, `Allow`, `Deny`, `Pass`, `isolated: no rule allows`.
    pub outcome: String,
}

/// The explanation of one direction.
#[derive(Debug, Clone, Serialize)]
pub struct DirectionTrace {
    pub direction: Direction,
    pub endpoint: String,
    pub tiers: Vec<TierTrace>,
    pub verdict: DirVerdict,
    pub rule: Option<String>,
}

/// The explanation of a flow.
#[derive(Debug, Clone, Serialize)]
pub struct Explanation {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub decision: Decision,
    pub deciding_rule: Option<String>,
    pub egress: DirectionTrace,
    pub ingress: DirectionTrace,
    /// With audit-mode policies enforced, when any apply.
    pub audit: Option<(DirectionTrace, DirectionTrace)>,
}

impl Engine {
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds an engine from a whole inventory and policy set.
    pub fn build(inv: Inventory, policies: impl IntoIterator<Item = Policy>, now: i64) -> Self {
        let mut e = Engine {
            now,
            ..Default::default()
        };
        for n in inv.namespaces.into_values() {
            e.set_namespace(n);
        }
        for n in inv.nodes.into_values() {
            e.set_node(n);
        }
        for w in inv.workloads.into_values() {
            e.set_workload(w);
        }
        let mut ps: Vec<Policy> = policies.into_iter().collect();
        ps.sort_by(|a, b| a.id.cmp(&b.id));
        for p in ps {
            e.set_policy(p);
        }
        e.take_changes();
        e
    }

    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    pub fn now(&self) -> i64 {
        self.now
    }

    /// Sets the clock used for expiry (Unix seconds). The engine never reads a clock itself.
    /// Policies and rules whose expiry falls between the old and new time are reported as
    /// changed, so incremental compilation retires them.
    pub fn set_now(&mut self, now: i64) {
        let (a, b) = (self.now.min(now), self.now.max(now));
        let crosses = |t: Option<i64>| t.is_some_and(|t| a < t && t <= b);
        let mut touched = Vec::new();
        for s in self.slots.iter().flatten() {
            if crosses(s.policy.expires_at) || s.policy.rules.iter().any(|r| crosses(r.expires_at))
            {
                touched.push((s.policy.id.clone(), s.subjects.clone()));
            }
        }
        for (id, subjects) in touched {
            self.changes.policies.insert(id);
            self.changes.identities.extend(subjects);
        }
        self.now = now;
    }

    /// The earliest expiry after now of any policy or rule (when to call `set_now` next).
    pub fn next_expiry(&self) -> Option<i64> {
        self.slots
            .iter()
            .flatten()
            .flat_map(|s| {
                std::iter::once(s.policy.expires_at)
                    .chain(s.policy.rules.iter().map(|r| r.expires_at))
            })
            .flatten()
            .filter(|t| *t > self.now)
            .min()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.slots.iter().flatten().map(|s| &s.policy)
    }

    pub fn policy(&self, id: &PolicyId) -> Option<&Policy> {
        self.by_id
            .get(id)
            .and_then(|i| self.slots[*i].as_ref())
            .map(|s| &s.policy)
    }

    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }

    pub fn identity(&self, id: u32) -> Option<&IdentityInfo> {
        self.identities.get(&id)
    }

    pub fn identities(&self) -> impl Iterator<Item = &IdentityInfo> {
        self.identities.values()
    }

    /// The label identity of a managed (non-hostNetwork) workload.
    pub fn workload_identity(&self, key: &WorkloadKey) -> Option<u32> {
        self.wl_identity.get(key).map(|(id, _)| *id)
    }

    pub fn identity_members(&self, id: u32) -> impl Iterator<Item = &WorkloadKey> {
        self.members.get(&id).into_iter().flatten()
    }

    /// Policies (in evaluation order) that select this identity in this direction.
    pub fn applicable(&self, id: u32, dir: Direction) -> impl Iterator<Item = &Policy> {
        self.applicable
            .get(&id)
            .map(|a| a.lists[dir.index()].as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| self.slots[*i].as_ref().map(|s| &s.policy))
    }

    /// Returns and clears what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    // ------------------------------------------------------------ inventory updates

    pub fn set_namespace(&mut self, ns: Namespace) {
        let name = ns.name.clone();
        if self.inv.namespaces.get(&name) == Some(&ns) {
            return;
        }
        self.inv.namespaces.insert(name.clone(), ns);
        self.refresh_namespace(&name);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.inv.namespaces.remove(name).is_some() {
            self.refresh_namespace(name);
        }
    }

    fn refresh_namespace(&mut self, name: &str) {
        let keys: Vec<WorkloadKey> = self
            .inv
            .workloads
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in keys {
            self.unindex_workload(&k);
            self.refresh_identity(&k);
            self.index_workload(&k);
            self.changes.workloads.insert(k);
        }
    }

    pub fn set_node(&mut self, node: Node) {
        if let Some(old) = self.inv.nodes.get(&node.name) {
            if *old == node {
                return;
            }
            for ip in old.ips.clone() {
                self.ip_index.remove(&ip);
            }
        }
        for ip in &node.ips {
            self.ip_index.insert(*ip, EpRef::Node(node.name.clone()));
        }
        self.changes.nodes.insert(node.name.clone());
        self.inv.nodes.insert(node.name.clone(), node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(old) = self.inv.nodes.remove(name) {
            for ip in old.ips {
                self.ip_index.remove(&ip);
            }
            self.changes.nodes.insert(name.to_string());
        }
    }

    /// Adds or replaces a workload (a relabel, a new IP, a move): only its identity is re-matched.
    pub fn set_workload(&mut self, w: Workload) {
        let key = w.key();
        if self.inv.workloads.get(&key) == Some(&w) {
            return;
        }
        self.unindex_workload(&key);
        self.inv.workloads.insert(key.clone(), w);
        self.refresh_identity(&key);
        self.index_workload(&key);
        self.changes.workloads.insert(key);
    }

    pub fn remove_workload(&mut self, key: &WorkloadKey) {
        if self.inv.workloads.contains_key(key) {
            self.unindex_workload(key);
            self.inv.workloads.remove(key);
            self.refresh_identity(key);
            self.changes.workloads.insert(key.clone());
        }
    }

    fn unindex_workload(&mut self, key: &WorkloadKey) {
        if let Some(old) = self.inv.workloads.get(key) {
            for ip in &old.ips {
                let owned = match self.ip_index.get(ip) {
                    Some(r @ EpRef::Workload(_)) => r.is_workload(key),
                    // A hostNetwork pod's address that no declared node owns.
                    Some(EpRef::Node(n)) => {
                        old.host_network
                            && old.node.as_deref().unwrap_or_default() == n
                            && !self
                                .inv
                                .nodes
                                .get(n)
                                .is_some_and(|node| node.ips.contains(ip))
                    }
                    None => false,
                };
                if owned {
                    self.ip_index.remove(ip);
                }
            }
        }
    }

    fn index_workload(&mut self, key: &WorkloadKey) {
        let Some(w) = self.inv.workloads.get(key) else {
            return;
        };
        if w.host_network {
            for ip in &w.ips {
                // A node's own address stays the node's.
                if !self.ip_index.contains_key(ip) {
                    self.ip_index
                        .insert(*ip, EpRef::Node(w.node.clone().unwrap_or_default()));
                }
            }
            return;
        }
        let identity = self.wl_identity.get(key).map(|x| x.0);
        let ns_labels = self.inv.namespace_labels(&w.namespace);
        let rec = std::sync::Arc::new(WlRec {
            workload: w.clone(),
            identity,
            ns_labels,
        });
        for ip in &w.ips {
            self.ip_index.insert(*ip, EpRef::Workload(rec.clone()));
        }
    }

    /// Re-derives a workload's identity after its labels or namespace labels changed.
    fn refresh_identity(&mut self, key: &WorkloadKey) {
        let new_key = self
            .inv
            .workloads
            .get(key)
            .filter(|w| !w.host_network)
            .map(|w| {
                let nsl = self.inv.namespace_labels(&w.namespace);
                (identity_key(&w.namespace, &nsl, &w.labels), nsl)
            });
        let old = self.wl_identity.get(key).cloned();
        if old.as_ref().map(|o| &o.1) == new_key.as_ref().map(|n| &n.0) {
            return;
        }
        if let Some((old_id, old_key)) = old {
            self.wl_identity.remove(key);
            if let Some(m) = self.members.get_mut(&old_id) {
                m.remove(key);
            }
            if self.ids.release(&old_key) {
                self.members.remove(&old_id);
                if let Some(info) = self.identities.remove(&old_id) {
                    if let Some(ids) = self.ns_identities.get_mut(&info.namespace) {
                        ids.remove(&old_id);
                        if ids.is_empty() {
                            self.ns_identities.remove(&info.namespace);
                        }
                    }
                }
                if let Some(app) = self.applicable.remove(&old_id) {
                    for slot in app.lists.iter().flatten() {
                        if let Some(s) = self.slots[*slot].as_mut() {
                            s.subjects.remove(&old_id);
                        }
                    }
                }
                self.changes.identities.insert(old_id);
            }
        }
        if let Some((k, nsl)) = new_key {
            let (id, created) = self.ids.acquire(&k);
            self.wl_identity.insert(key.clone(), (id, k));
            self.members.entry(id).or_default().insert(key.clone());
            if created {
                let w = &self.inv.workloads[key];
                let info = IdentityInfo {
                    id,
                    namespace: w.namespace.clone(),
                    namespace_labels: nsl,
                    labels: w.labels.clone(),
                };
                // One identity against every policy: O(policies).
                let mut app: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
                for (i, s) in self.slots.iter_mut().enumerate() {
                    let Some(s) = s else { continue };
                    if subject_matches(&s.policy.subject, &info) {
                        s.subjects.insert(id);
                        for d in Direction::BOTH {
                            if Self::policy_has_direction(&s.policy, d) {
                                app[d.index()].push(i);
                            }
                        }
                    }
                }
                for list in app.iter_mut() {
                    let slots = &self.slots;
                    list.sort_by(|a, b| {
                        let pa = &slots[*a].as_ref().expect("live").policy;
                        let pb = &slots[*b].as_ref().expect("live").policy;
                        pa.order_key().cmp(&pb.order_key())
                    });
                }
                let mut a = Applicable {
                    lists: app,
                    audit: [false; 2],
                };
                self.refresh_audit(&mut a);
                self.applicable.insert(id, a);
                self.ns_identities
                    .entry(info.namespace.clone())
                    .or_default()
                    .insert(id);
                self.identities.insert(id, info);
                self.changes.identities.insert(id);
            }
        }
    }

    /// Whether a policy takes part in decisions of this direction at all.
    fn policy_has_direction(p: &Policy, d: Direction) -> bool {
        match p.tier {
            Tier::Application => p.isolates[d.index()],
            _ => p.rules(d).next().is_some(),
        }
    }

    // ------------------------------------------------------------ policy updates

    /// Adds or replaces a policy: it is matched against every identity (O(identities)), or, when
    /// its subject names a namespace, against that namespace's identities.
    pub fn set_policy(&mut self, p: Policy) {
        if self.policy(&p.id) == Some(&p) {
            return;
        }
        let id = p.id.clone();
        self.remove_policy(&id);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let mut rule_ids = Vec::with_capacity(p.rules.len());
        for r in &p.rules {
            let key = format!("{}|{}|{}", p.id, r.direction.as_str(), r.index);
            let (rid, _) = self.rule_ids.acquire(&key);
            self.rules.insert(
                rid,
                RuleInfo {
                    id: rid,
                    policy: p.id.clone(),
                    direction: r.direction,
                    index: Some(r.index),
                    name: r.name.clone(),
                    action: r.action,
                    tier: p.tier,
                    mode: p.mode,
                },
            );
            rule_ids.push(rid);
        }
        let mut isolation_rule = [0u32; 2];
        for d in Direction::BOTH {
            let key = format!("{}|{}|isolation", p.id, d.as_str());
            let (rid, _) = self.rule_ids.acquire(&key);
            self.rules.insert(
                rid,
                RuleInfo {
                    id: rid,
                    policy: p.id.clone(),
                    direction: d,
                    index: None,
                    name: None,
                    action: Action::Deny,
                    tier: p.tier,
                    mode: p.mode,
                },
            );
            isolation_rule[d.index()] = rid;
        }
        let candidates: Vec<u32> = match &p.subject.namespaces {
            NamespaceMatch::Named(ns) => self
                .ns_identities
                .get(ns)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
            NamespaceMatch::Selector(_) => self.identities.keys().copied().collect(),
        };
        let mut subjects = BTreeSet::new();
        for iid in candidates {
            if subject_matches(&p.subject, &self.identities[&iid]) {
                subjects.insert(iid);
            }
        }
        let key = p.order_key();
        let key = (key.0, key.1, key.2.clone());
        let dirs: Vec<Direction> = Direction::BOTH
            .into_iter()
            .filter(|d| Self::policy_has_direction(&p, *d))
            .collect();
        self.slots[slot] = Some(PolicySlot {
            policy: p,
            rule_ids,
            isolation_rule,
            subjects: subjects.clone(),
        });
        for iid in &subjects {
            let mut app = self.applicable.remove(iid).unwrap_or_default();
            for d in &dirs {
                let list = &mut app.lists[d.index()];
                let slots = &self.slots;
                let pos = list
                    .binary_search_by(|o| {
                        let po = &slots[*o].as_ref().expect("live").policy;
                        let k = po.order_key();
                        (k.0, k.1, k.2).cmp(&(key.0, key.1, &key.2))
                    })
                    .unwrap_or_else(|e| e);
                list.insert(pos, slot);
            }
            self.refresh_audit(&mut app);
            self.applicable.insert(*iid, app);
            self.changes.identities.insert(*iid);
        }
        self.by_id.insert(id.clone(), slot);
        self.changes.policies.insert(id);
    }

    pub fn remove_policy(&mut self, id: &PolicyId) -> Option<Policy> {
        let slot = self.by_id.remove(id)?;
        let s = self.slots[slot].take().expect("indexed slot is live");
        for iid in &s.subjects {
            if let Some(mut app) = self.applicable.remove(iid) {
                for list in app.lists.iter_mut() {
                    list.retain(|x| *x != slot);
                }
                self.refresh_audit(&mut app);
                self.applicable.insert(*iid, app);
            }
            self.changes.identities.insert(*iid);
        }
        for r in &s.policy.rules {
            let key = format!("{}|{}|{}", s.policy.id, r.direction.as_str(), r.index);
            if let Some(rid) = self.rule_ids.get(&key) {
                self.rules.remove(&rid);
            }
            self.rule_ids.release(&key);
        }
        for d in Direction::BOTH {
            let key = format!("{}|{}|isolation", s.policy.id, d.as_str());
            if let Some(rid) = self.rule_ids.get(&key) {
                self.rules.remove(&rid);
            }
            self.rule_ids.release(&key);
        }
        self.free.push(slot);
        self.changes.policies.insert(id.clone());
        Some(s.policy)
    }

    // ------------------------------------------------------------ evaluation

    /// The indexed record of the workload at an address (one hash lookup).
    pub(crate) fn workload_at(&self, ip: IpAddr) -> Option<&WlRec> {
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => Some(r),
            _ => None,
        }
    }

    /// Resolves an address to what the inventory knows of it.
    pub(crate) fn view_of_ip(&self, ip: IpAddr) -> (EpView<'_>, Option<u32>) {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => (
                EpView::workload(&r.workload, &r.ns_labels, Addr::Ip(ip)),
                r.identity,
            ),
            Some(EpRef::Node(n)) => {
                let labels = self
                    .inv
                    .nodes
                    .get(n)
                    .map(|x| &x.labels)
                    .unwrap_or_else(|| EMPTY.get_or_init(Labels::new));
                (
                    EpView {
                        kind: EpKind::Node { name: n, labels },
                        addr: Addr::Ip(ip),
                    },
                    None,
                )
            }
            None => (
                EpView {
                    kind: EpKind::External,
                    addr: Addr::Ip(ip),
                },
                None,
            ),
        }
    }

    fn refresh_audit(&self, a: &mut Applicable) {
        for d in 0..2 {
            a.audit[d] = a.lists[d].iter().any(|s| {
                self.slots[*s]
                    .as_ref()
                    .is_some_and(|s| s.policy.mode == Mode::Audit)
            });
        }
    }

    pub(crate) fn has_audit(&self, id: Option<u32>, dir: Direction) -> bool {
        id.and_then(|i| self.applicable.get(&i))
            .is_some_and(|a| a.audit[dir.index()])
    }

    /// Decides a flow. This is the reference semantics.
    pub fn evaluate(&self, flow: &Flow) -> Decision {
        let (src, src_id) = self.view_of_ip(flow.src);
        let (dst, dst_id) = self.view_of_ip(flow.dst);
        self.decide(src_id, &src, dst_id, &dst, flow.protocol, flow.port)
    }

    pub(crate) fn decide(
        &self,
        src_id: Option<u32>,
        src: &EpView,
        dst_id: Option<u32>,
        dst: &EpView,
        proto: Protocol,
        port: u16,
    ) -> Decision {
        // Both directions, with or without audit-mode policies.
        let both = |audit: bool| {
            let eg = self.eval_dir(
                Direction::Egress,
                src_id,
                src,
                dst,
                proto,
                port,
                audit,
                None,
            );
            let ing = self.eval_dir(
                Direction::Ingress,
                dst_id,
                dst,
                src,
                proto,
                port,
                audit,
                None,
            );
            (eg, ing)
        };
        let (egress, ingress) = both(false);
        let audit = (self.has_audit(src_id, Direction::Egress)
            || self.has_audit(dst_id, Direction::Ingress))
        .then(|| {
            let (egress, ingress) = both(true);
            AuditOutcome {
                allowed: egress.allowed && ingress.allowed,
                egress,
                ingress,
            }
        });
        Decision {
            allowed: egress.allowed && ingress.allowed,
            egress,
            ingress,
            audit,
        }
    }

    /// Evaluates one direction at `subject` (the workload whose policy applies) against `peer`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn eval_dir(
        &self,
        dir: Direction,
        subject_id: Option<u32>,
        subject: &EpView,
        peer: &EpView,
        proto: Protocol,
        port: u16,
        include_audit: bool,
        mut trace: Option<&mut Vec<TierTrace>>,
    ) -> DirVerdict {
        let (
            Some(sid),
            EpKind::Workload {
                node: subject_node,
                ports: subject_ports,
                ..
            },
        ) = (subject_id, subject.kind)
        else {
            return DirVerdict::UNMANAGED;
        };
        let Some(app) = self.applicable.get(&sid) else {
            return DirVerdict::DEFAULT;
        };
        // The destination's ports resolve named ports.
        let dst_ports: Option<&[ContainerPort]> = match dir {
            Direction::Ingress => Some(subject_ports),
            Direction::Egress => match peer.kind {
                EpKind::Workload { ports, .. } => Some(ports),
                _ => None,
            },
        };
        let now = self.now;
        let list = &app.lists[dir.index()];
        let live = |slot: &usize| -> Option<&PolicySlot> {
            let s = self.slots[*slot].as_ref()?;
            let p = &s.policy;
            (p.is_active(now) && (include_audit || p.mode == Mode::Enforce)).then_some(s)
        };
        let rule_matches = |r: &Rule| -> bool {
            r.expires_at.is_none_or(|t| now < t)
                && (r.ports.is_empty()
                    || r.ports
                        .iter()
                        .any(|ps| port_matches(ps, proto, port, dst_ports)))
                && r.peers.iter().any(|p| peer_matches(p, subject_node, peer))
        };
        let mut i = 0;
        for tier in Tier::ALL {
            let start = i;
            while i < list.len()
                && self.slots[list[i]]
                    .as_ref()
                    .is_some_and(|s| s.policy.tier == tier)
            {
                i += 1;
            }
            let segment = &list[start..i];
            let mut tt = trace.as_ref().map(|_| TierTrace {
                tier,
                policies: Vec::new(),
                outcome: String::new(),
            });
            let outcome: Option<DirVerdict> = match tier {
                Tier::Admin | Tier::Baseline => {
                    let mut decided = None;
                    let mut passed = false;
                    'policies: for s in segment.iter().filter_map(live) {
                        let mut pt = tt.as_ref().map(|_| s.trace());
                        for (r, rid) in s.dir_rules(dir) {
                            let m = rule_matches(r);
                            if let Some(pt) = pt.as_mut() {
                                pt.rules.push(self.rule_trace(r, *rid, m));
                            }
                            if m {
                                match r.action {
                                    Action::Allow | Action::Deny => {
                                        decided = Some(DirVerdict {
                                            allowed: r.action == Action::Allow,
                                            rule: *rid,
                                            tier: Some(tier),
                                            reason: Reason::Rule,
                                        });
                                    }
                                    Action::Pass => passed = true,
                                }
                                if let (Some(tt), Some(pt)) = (tt.as_mut(), pt.take()) {
                                    tt.policies.push(pt);
                                }
                                break 'policies;
                            }
                        }
                        if let (Some(tt), Some(pt)) = (tt.as_mut(), pt) {
                            tt.policies.push(pt);
                        }
                    }
                    if let Some(tt) = tt.as_mut() {
                        tt.outcome = match (&decided, passed) {
                            (Some(d), _) => {
                                if d.allowed {
                                    "Allow".into()
                                } else {
                                    "Deny".into()
                                }
                            }
                            (None, true) => "Pass".into(),
                            (None, false) if tt.policies.is_empty() => "no policy".into(),
                            (None, false) => "no rule matched".into(),
                        };
                    }
                    decided
                }
                Tier::Application => {
                    let mut first_isolating = None;
                    let mut deny = None;
                    let mut allow = None;
                    for s in segment.iter().filter_map(live) {
                        if !s.policy.isolates[dir.index()] {
                            continue;
                        }
                        first_isolating.get_or_insert(s.isolation_rule[dir.index()]);
                        let mut pt = tt.as_ref().map(|_| s.trace());
                        for (r, rid) in s.dir_rules(dir) {
                            if deny.is_some() && r.action != Action::Deny && pt.is_none() {
                                continue;
                            }
                            let m = rule_matches(r);
                            if let Some(pt) = pt.as_mut() {
                                pt.rules.push(self.rule_trace(r, *rid, m));
                            }
                            if m {
                                match r.action {
                                    Action::Deny => {
                                        deny.get_or_insert(*rid);
                                    }
                                    _ => {
                                        allow.get_or_insert(*rid);
                                    }
                                }
                            }
                        }
                        if let (Some(tt), Some(pt)) = (tt.as_mut(), pt) {
                            tt.policies.push(pt);
                        }
                    }
                    let v = match (first_isolating, deny, allow) {
                        (None, _, _) => None,
                        (Some(_), Some(d), _) => Some(DirVerdict {
                            allowed: false,
                            rule: d,
                            tier: Some(tier),
                            reason: Reason::Rule,
                        }),
                        (Some(_), None, Some(a)) => Some(DirVerdict {
                            allowed: true,
                            rule: a,
                            tier: Some(tier),
                            reason: Reason::Rule,
                        }),
                        (Some(iso), None, None) => Some(DirVerdict {
                            allowed: false,
                            rule: iso,
                            tier: Some(tier),
                            reason: Reason::Isolated,
                        }),
                    };
                    if let Some(tt) = tt.as_mut() {
                        tt.outcome = match &v {
                            None => "no policy isolates this direction".into(),
                            Some(d) if d.reason == Reason::Isolated => {
                                "isolated: no rule allows".into()
                            }
                            Some(d) if d.allowed => "Allow".into(),
                            Some(_) => "Deny".into(),
                        };
                    }
                    v
                }
            };
            if let (Some(t), Some(tt)) = (trace.as_deref_mut(), tt) {
                t.push(tt);
            }
            if let Some(v) = outcome {
                return v;
            }
        }
        DirVerdict::DEFAULT
    }

    fn rule_trace(&self, r: &Rule, rid: u32, matched: bool) -> RuleTrace {
        RuleTrace {
            rule: rid,
            description: self.rules[&rid].describe(),
            action: r.action,
            matched,
        }
    }

    /// Explains a flow: per direction and tier, which policies and rules were considered, which
    /// matched, and the verdict.
    pub fn explain(&self, flow: &Flow) -> Explanation {
        let (src, src_id) = self.view_of_ip(flow.src);
        let (dst, dst_id) = self.view_of_ip(flow.dst);
        let decision = self.decide(src_id, &src, dst_id, &dst, flow.protocol, flow.port);
        let dir_trace = |dir: Direction, audit: bool| {
            let (sid, s, p, ip) = match dir {
                Direction::Egress => (src_id, &src, &dst, flow.src),
                Direction::Ingress => (dst_id, &dst, &src, flow.dst),
            };
            let mut tiers = Vec::new();
            let verdict = self.eval_dir(
                dir,
                sid,
                s,
                p,
                flow.protocol,
                flow.port,
                audit,
                Some(&mut tiers),
            );
            DirectionTrace {
                direction: dir,
                endpoint: self.describe_ip(ip),
                tiers,
                verdict,
                rule: self.rules.get(&verdict.rule).map(RuleInfo::describe),
            }
        };
        let audit = decision.audit.map(|_| {
            (
                dir_trace(Direction::Egress, true),
                dir_trace(Direction::Ingress, true),
            )
        });
        Explanation {
            src: self.describe_ip(flow.src),
            dst: self.describe_ip(flow.dst),
            protocol: flow.protocol,
            port: flow.port,
            deciding_rule: self
                .rules
                .get(&decision.deciding().1.rule)
                .map(RuleInfo::describe),
            decision,
            egress: dir_trace(Direction::Egress, false),
            ingress: dir_trace(Direction::Ingress, false),
            audit,
        }
    }

    /// `ns/pod (ip)`, `node NAME (ip)` or the bare address.
    pub fn describe_ip(&self, ip: IpAddr) -> String {
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => format!("{} ({ip})", r.workload.key()),
            Some(EpRef::Node(n)) => format!("node {n} ({ip})"),
            None => format!("{ip} (outside the inventory)"),
        }
    }

    /// A policy with its rule ids and its per-direction isolation rule ids.
    pub(crate) fn slot_rules(&self, p: &PolicyId) -> Option<(&Policy, &[u32], [u32; 2])> {
        let s = self.slots[*self.by_id.get(p)?].as_ref()?;
        Some((&s.policy, &s.rule_ids, s.isolation_rule))
    }
}

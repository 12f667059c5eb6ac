//! From visibility to policy, on aggregated flow history: the dependency map, least-privilege
//! proposals, and simulation of a candidate policy set. Pure: the manager reads history from its
//! store and passes it in; the same code runs in tests and benchmarks.

use crate::engine::{Engine, Flow};
use crate::labels::Labels;
use crate::model::{Action, Inventory, Namespace, Protocol, Workload, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// One end of a historical flow, as it was when the flow was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// A workload with its labels (and its namespace's) at the time.
    Workload {
        namespace: String,
        name: String,
        labels: Labels,
    },
    /// An address no workload owned.
    External { ip: IpAddr },
}

impl Endpoint {
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Workload {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            Endpoint::External { ip } => ip.to_string(),
        }
    }
    fn namespace(&self) -> Option<&str> {
        match self {
            Endpoint::Workload { namespace, .. } => Some(namespace),
            Endpoint::External { .. } => None,
        }
    }
}

/// What the datapath decided for the connections of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Observed {
    Allowed,
    Denied,
    /// Allowed, but an audit-mode policy would have denied it.
    Audit,
}

impl Observed {
    pub fn happened(self) -> bool {
        self != Observed::Denied
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "audit" => Self::Audit,
            _ => return None,
        })
    }
}

/// Connections between two endpoints on one port with one outcome, over a span of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistFlow {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub protocol: Protocol,
    pub port: u16,
    pub observed: Observed,
    /// The deciding rule, as the agent described it.
    pub rule: Option<String>,
    pub connections: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// How the map groups workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupBy {
    App,
    Namespace,
    Workload,
}

/// Labels that differ between replicas of one application: never part of its identity.
const REPLICA_LABELS: [&str; 4] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
];

/// The labels that select a workload's application: `app`, else `app.kubernetes.io/name`,
/// else every label but the per-replica ones. Empty when it has none.
pub fn app_selector(labels: &Labels) -> Labels {
    for k in ["app", "app.kubernetes.io/name", "k8s-app"] {
        if let Some(v) = labels.get(k) {
            let mut l = Labels::new();
            l.insert(k.to_string(), v.clone());
            return l;
        }
    }
    labels
        .iter()
        .filter(|(k, _)| !REPLICA_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn selector_text(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// External addresses are grouped by /24 (IPv4) or /64 (IPv6) on the map.
fn external_group(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// The map node an endpoint belongs to.
pub fn group(ep: &Endpoint, by: GroupBy) -> String {
    match ep {
        Endpoint::External { ip } => external_group(*ip),
        Endpoint::Workload {
            namespace,
            name,
            labels,
        } => match by {
            GroupBy::Namespace => namespace.clone(),
            GroupBy::Workload => format!("{namespace}/{name}"),
            GroupBy::App => {
                let sel = app_selector(labels);
                if sel.is_empty() {
                    format!("{namespace}/{name}")
                } else {
                    format!("{namespace}/{}", selector_text(&sel))
                }
            }
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapNode {
    pub id: String,
    /// workload | external
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub members: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MapEdge {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub allowed: u64,
    pub denied: u64,
    pub audit: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Rules that decided these connections.
    pub rules: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DependencyMap {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

pub fn dependency_map(flows: &[HistFlow], by: GroupBy) -> DependencyMap {
    let mut nodes: BTreeMap<String, MapNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, Protocol, u16), MapEdge> = BTreeMap::new();
    for f in flows {
        let ids = [&f.src, &f.dst].map(|ep| {
            let id = group(ep, by);
            let n = nodes.entry(id.clone()).or_insert_with(|| MapNode {
                id: id.clone(),
                kind: match ep {
                    Endpoint::Workload { .. } => "workload",
                    Endpoint::External { .. } => "external",
                },
                namespace: ep.namespace().map(str::to_string),
                members: BTreeSet::new(),
            });
            n.members.insert(ep.describe());
            id
        });
        let [s, d] = ids;
        let e = edges
            .entry((s.clone(), d.clone(), f.protocol, f.port))
            .or_insert_with(|| MapEdge {
                src: s,
                dst: d,
                protocol: f.protocol,
                port: f.port,
                allowed: 0,
                denied: 0,
                audit: 0,
                first_ns: f.first_ns,
                last_ns: f.last_ns,
                rules: BTreeSet::new(),
            });
        match f.observed {
            Observed::Allowed => e.allowed += f.connections,
            Observed::Denied => e.denied += f.connections,
            Observed::Audit => e.audit += f.connections,
        }
        e.first_ns = e.first_ns.min(f.first_ns);
        e.last_ns = e.last_ns.max(f.last_ns);
        if let Some(r) = &f.rule {
            e.rules.insert(r.clone());
        }
    }
    DependencyMap {
        nodes: nodes.into_values().collect(),
        edges: edges.into_values().collect(),
    }
}

/// Graphviz text of a map.
pub fn to_dot(m: &DependencyMap) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = String::from(
        "digraph cellwall {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n",
    );
    for n in &m.nodes {
        let shape = if n.kind == "external" {
            ", shape=ellipse"
        } else {
            ""
        };
        s.push_str(&format!(
            "  {}{};\n",
            q(&n.id),
            if shape.is_empty() {
                String::new()
            } else {
                format!(" [{}]", &shape[2..])
            }
        ));
    }
    for e in &m.edges {
        let color = if e.denied > 0 && e.allowed + e.audit == 0 {
            "red"
        } else if e.denied > 0 || e.audit > 0 {
            "orange"
        } else {
            "black"
        };
        s.push_str(&format!(
            "  {} -> {} [label={}, color={color}];\n",
            q(&e.src),
            q(&e.dst),
            q(&format!(
                "{}/{} ({} ok, {} denied{})",
                e.protocol,
                e.port,
                e.allowed + e.audit,
                e.denied,
                if e.audit > 0 {
                    format!(", {} audit", e.audit)
                } else {
                    String::new()
                }
            ))
        ));
    }
    s.push_str("}\n");
    s
}

// ---------------------------------------------------------------- proposal

/// Who a proposed rule admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposedPeer {
    /// Workloads with these labels in this namespace.
    Pods { namespace: String, labels: Labels },
    /// One external address, as a host CIDR.
    Cidr { cidr: String },
}

/// Why a rule is proposed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evidence {
    pub connections: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Share of the subject's observed connections in this direction that this rule covers.
    pub coverage: f64,
    /// Seen fewer times than the review threshold: check before applying.
    pub review: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProposedRule {
    pub peer: ProposedPeer,
    pub protocol: Protocol,
    pub port: u16,
    pub evidence: Evidence,
}

/// One policy: an application (labels) in a namespace, isolated both ways, with a rule per
/// observed peer and port.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProposedPolicy {
    pub namespace: String,
    pub name: String,
    pub selector: Labels,
    pub ingress: Vec<ProposedRule>,
    pub egress: Vec<ProposedRule>,
}

/// An observed flow the proposal does not allow, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Excluded {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub connections: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Proposal {
    pub policies: Vec<ProposedPolicy>,
    pub excluded: Vec<Excluded>,
    pub flows_considered: u64,
}

#[derive(Debug, Clone)]
pub struct ProposeOptions {
    /// Only propose policies for workloads of this namespace.
    pub namespace: Option<String>,
    /// Rules seen fewer times are flagged for review.
    pub review_below: u64,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            review_below: 3,
        }
    }
}

fn policy_name(sel: &Labels, fallback: &str) -> String {
    let base = sel
        .iter()
        .next()
        .map(|(_, v)| v.as_str())
        .unwrap_or(fallback);
    let mut n: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(50);
    format!("cw-{}", n.trim_matches('-'))
}

/// The address current policy would see for a historical endpoint, if it can say.
pub fn address(inv: &Inventory, ep: &Endpoint) -> Option<IpAddr> {
    match ep {
        Endpoint::External { ip } => Some(*ip),
        Endpoint::Workload {
            namespace, name, ..
        } => inv
            .workloads
            .get(&WorkloadKey::new(namespace, name))
            .and_then(|w| w.ips.first().copied()),
    }
}

/// Least privilege from history: for each application (by labels) in scope, one policy isolating
/// it both ways, with one ingress rule per observed (client application or external address,
/// port) and one egress rule per observed (server application or external address, port).
/// Only connections that happened are used; a flow the policy in force denies by an explicit
/// `Deny` rule is never proposed. Applications of the inventory with no traffic are isolated
/// (no rules). Output is sorted: the same history gives the same proposal.
pub fn propose(flows: &[HistFlow], current: &Engine, opts: &ProposeOptions) -> Proposal {
    #[derive(Default)]
    struct Acc {
        connections: u64,
        first: u64,
        last: u64,
    }
    type RuleKey = (ProposedPeer, Protocol, u16);
    let in_scope = |ns: &str| opts.namespace.as_deref().is_none_or(|n| n == ns);
    // (namespace, selector) → (ingress rules, egress rules)
    let mut subjects: BTreeMap<(String, Labels), [BTreeMap<RuleKey, Acc>; 2]> = BTreeMap::new();
    let mut excluded: BTreeMap<(String, String, Protocol, u16, String), u64> = BTreeMap::new();
    let mut considered = 0;
    let peer_of = |ep: &Endpoint| -> Option<ProposedPeer> {
        match ep {
            Endpoint::External { ip } => Some(ProposedPeer::Cidr {
                cidr: match ip {
                    IpAddr::V4(_) => format!("{ip}/32"),
                    IpAddr::V6(_) => format!("{ip}/128"),
                },
            }),
            Endpoint::Workload {
                namespace, labels, ..
            } => {
                let sel = app_selector(labels);
                (!sel.is_empty()).then(|| ProposedPeer::Pods {
                    namespace: namespace.clone(),
                    labels: sel,
                })
            }
        }
    };
    let inv = current.inventory();
    for f in flows {
        if !f.observed.happened() {
            continue;
        }
        considered += f.connections;
        let mut exclude = |reason: String| {
            *excluded
                .entry((
                    f.src.describe(),
                    f.dst.describe(),
                    f.protocol,
                    f.port,
                    reason,
                ))
                .or_default() += f.connections;
        };
        // Never propose what an explicit deny in force blocks.
        if let (Some(src), Some(dst)) = (address(inv, &f.src), address(inv, &f.dst)) {
            let d = current.evaluate(&Flow {
                src,
                dst,
                protocol: f.protocol,
                port: f.port,
            });
            let (_, v) = d.deciding();
            if !d.allowed
                && current
                    .rule(v.rule)
                    .is_some_and(|r| r.action == Action::Deny)
            {
                let r = current
                    .rule(v.rule)
                    .map(|r| r.describe())
                    .unwrap_or_default();
                exclude(format!("explicitly denied by {r}"));
                continue;
            }
        }
        let (Some(sp), Some(dp)) = (peer_of(&f.src), peer_of(&f.dst)) else {
            exclude("a workload without labels cannot be selected without naming it".into());
            continue;
        };
        let mut add = |subject: &ProposedPeer, peer: &ProposedPeer, dir: usize| {
            if let ProposedPeer::Pods { namespace, labels } = subject {
                if in_scope(namespace) {
                    let acc = subjects
                        .entry((namespace.clone(), labels.clone()))
                        .or_default()[dir]
                        .entry((peer.clone(), f.protocol, f.port))
                        .or_default();
                    if acc.connections == 0 {
                        acc.first = f.first_ns;
                    }
                    acc.connections += f.connections;
                    acc.first = acc.first.min(f.first_ns);
                    acc.last = acc.last.max(f.last_ns);
                }
            }
        };
        add(&dp, &sp, 0);
        add(&sp, &dp, 1);
    }
    // Applications of the inventory that showed no traffic are isolated too.
    for w in inv
        .workloads
        .values()
        .filter(|w| !w.host_network && in_scope(&w.namespace))
    {
        let sel = app_selector(&w.labels);
        if !sel.is_empty() {
            subjects.entry((w.namespace.clone(), sel)).or_default();
        }
    }
    let mut names: BTreeMap<(String, String), usize> = BTreeMap::new();
    let policies = subjects
        .into_iter()
        .map(|((namespace, selector), dirs)| {
            let mut name = policy_name(&selector, "app");
            let n = names.entry((namespace.clone(), name.clone())).or_default();
            *n += 1;
            if *n > 1 {
                name = format!("{name}-{n}");
            }
            let [ingress, egress] = dirs.map(|rules| {
                let total: u64 = rules.values().map(|a| a.connections).sum();
                rules
                    .into_iter()
                    .map(|((peer, protocol, port), a)| ProposedRule {
                        peer,
                        protocol,
                        port,
                        evidence: Evidence {
                            connections: a.connections,
                            first_ns: a.first,
                            last_ns: a.last,
                            coverage: if total == 0 {
                                0.0
                            } else {
                                a.connections as f64 / total as f64
                            },
                            review: a.connections < opts.review_below,
                        },
                    })
                    .collect()
            });
            ProposedPolicy {
                namespace,
                name,
                selector,
                ingress,
                egress,
            }
        })
        .collect();
    Proposal {
        policies,
        excluded: excluded
            .into_iter()
            .map(
                |((src, dst, protocol, port, reason), connections)| Excluded {
                    src,
                    dst,
                    protocol,
                    port,
                    connections,
                    reason,
                },
            )
            .collect(),
        flows_considered: considered,
    }
}

/// Output formats of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalFormat {
    Cellwall,
    NetworkPolicy,
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn time(ns: u64) -> String {
    crate::de::format_rfc3339((ns / 1_000_000_000) as i64)
}

fn labels_yaml(l: &Labels) -> String {
    let items: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
        .collect();
    format!("{{matchLabels: {{{}}}}}", items.join(", "))
}

/// YAML documents that `cellwall apply -f` (and kubectl, for NetworkPolicy) take as they are,
/// with each rule's evidence as a comment above it.
pub fn render_yaml(p: &Proposal, format: ProposalFormat) -> String {
    let mut s = String::new();
    for (i, pol) in p.policies.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        let seen: u64 = pol
            .ingress
            .iter()
            .chain(&pol.egress)
            .map(|r| r.evidence.connections)
            .sum();
        s.push_str(&format!(
            "# Proposed by cellwall from {seen} observed connections of {}/{}.\n",
            pol.namespace,
            selector_text(&pol.selector)
        ));
        let (api, kind) = match format {
            ProposalFormat::NetworkPolicy => ("networking.k8s.io/v1", "NetworkPolicy"),
            ProposalFormat::Cellwall => ("cellwall.io/v1alpha1", "Policy"),
        };
        s.push_str(&format!(
            "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  podSelector: {}\n",
            q(&pol.name),
            q(&pol.namespace),
            labels_yaml(&pol.selector)
        ));
        if format == ProposalFormat::NetworkPolicy {
            s.push_str("  policyTypes: [Ingress, Egress]\n");
        }
        for (dir, rules, field) in [
            ("ingress", &pol.ingress, "from"),
            ("egress", &pol.egress, "to"),
        ] {
            if rules.is_empty() {
                s.push_str(&format!("  {dir}: []\n"));
                continue;
            }
            s.push_str(&format!("  {dir}:\n"));
            for r in rules {
                let e = &r.evidence;
                s.push_str(&format!(
                    "  # {}{} connections, {} .. {}, {:.1}% of this direction's traffic\n",
                    if e.review {
                        "REVIEW: seen rarely: "
                    } else {
                        ""
                    },
                    e.connections,
                    time(e.first_ns),
                    time(e.last_ns),
                    e.coverage * 100.0
                ));
                let peer = match &r.peer {
                    ProposedPeer::Cidr { cidr } => match format {
                        ProposalFormat::NetworkPolicy => format!("{{ipBlock: {{cidr: {}}}}}", q(cidr)),
                        ProposalFormat::Cellwall => format!("{{cidr: {}}}", q(cidr)),
                    },
                    ProposedPeer::Pods { namespace, labels } if *namespace == pol.namespace => {
                        format!("{{podSelector: {}}}", labels_yaml(labels))
                    }
                    ProposedPeer::Pods { namespace, labels } => format!(
                        "{{namespaceSelector: {{matchLabels: {{\"kubernetes.io/metadata.name\": {}}}}}, podSelector: {}}}",
                        q(namespace),
                        labels_yaml(labels)
                    ),
                };
                let name = match format {
                    ProposalFormat::Cellwall => format!(
                        "    name: {}\n",
                        q(&format!(
                            "{}-{}-{}{}",
                            if dir == "ingress" { "from" } else { "to" },
                            match &r.peer {
                                ProposedPeer::Cidr { cidr } => cidr.replace(['/', ':'], "-"),
                                ProposedPeer::Pods { namespace, labels } => format!(
                                    "{namespace}-{}",
                                    labels.values().cloned().collect::<Vec<_>>().join("-")
                                ),
                            },
                            r.protocol.as_str().to_lowercase(),
                            r.port
                        ))
                    ),
                    ProposalFormat::NetworkPolicy => String::new(),
                };
                s.push_str(&format!(
                    "  - {field}: [{peer}]\n{name}    ports: [{{protocol: {}, port: {}}}]\n",
                    r.protocol, r.port
                ));
            }
        }
    }
    if !p.excluded.is_empty() {
        s.push_str("# Observed but not proposed:\n");
        for e in &p.excluded {
            s.push_str(&format!(
                "#   {} -> {} {}/{} ({} connections): {}\n",
                e.src, e.dst, e.protocol, e.port, e.connections, e.reason
            ));
        }
    }
    s
}

// ---------------------------------------------------------------- simulation

/// How a historical flow fares under a candidate policy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SimClass {
    /// Happened, and the candidate allows it.
    Permitted,
    /// Happened and is allowed today; the candidate denies it: breakage.
    WouldBeRejected,
    /// Happened although the policy in force denies it (audit mode, unprotected host).
    Escaped,
    /// Denied today and by the candidate.
    Rejected,
    /// Denied today; the candidate would allow it.
    WouldBeOpened,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimVerdict {
    pub allowed: bool,
    pub rule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimRow {
    pub class: SimClass,
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub connections: u64,
    pub observed: Observed,
    pub current: SimVerdict,
    pub candidate: SimVerdict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SimSummary {
    /// Per class: (aggregated flows, connections).
    pub classes: BTreeMap<SimClass, (u64, u64)>,
    pub flows: u64,
}

impl SimSummary {
    pub fn breakage(&self) -> u64 {
        self.classes
            .get(&SimClass::WouldBeRejected)
            .map(|c| c.0)
            .unwrap_or(0)
    }
}

/// An inventory and addresses that can evaluate history: current workloads as they are, and
/// historical ones whose labels changed or that are gone as stand-ins with the labels they had,
/// on addresses from 100.64.0.0/10 (no real workload uses them here).
pub struct Replay {
    pub inventory: Inventory,
    /// Source and destination address of each flow, by index.
    addrs: Vec<[IpAddr; 2]>,
}

impl Replay {
    pub fn new(current: &Inventory, flows: &[HistFlow]) -> Self {
        let mut inv = current.clone();
        // (namespace, name) → the label sets seen for it, with their addresses.
        let mut seen: crate::fxhash::FxHashMap<(&str, &str), Vec<(&Labels, IpAddr)>> =
            Default::default();
        let mut next: u32 = 0;
        let mut addrs = Vec::with_capacity(flows.len());
        for f in flows {
            let mut pair = [IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED); 2];
            for (slot, ep) in pair.iter_mut().zip([&f.src, &f.dst]) {
                *slot = match ep {
                    Endpoint::External { ip } => *ip,
                    Endpoint::Workload {
                        namespace,
                        name,
                        labels,
                    } => {
                        let known = seen.entry((namespace, name)).or_default();
                        if let Some((_, ip)) = known.iter().find(|(l, _)| *l == labels) {
                            *ip
                        } else {
                            let key = WorkloadKey::new(namespace, name);
                            let same = current
                                .workloads
                                .get(&key)
                                .filter(|w| &w.labels == labels && !w.ips.is_empty());
                            let ip = match same {
                                Some(w) => w.ips[0],
                                None => {
                                    next += 1;
                                    let ip = IpAddr::V4(std::net::Ipv4Addr::from(
                                        (100u32 << 24 | 64 << 16) + next,
                                    ));
                                    if !inv.namespaces.contains_key(namespace) {
                                        inv.namespaces.insert(
                                            namespace.clone(),
                                            Namespace::new(namespace, Labels::new()),
                                        );
                                    }
                                    let stand_in = Workload {
                                        namespace: namespace.clone(),
                                        name: format!("{name}~{next}"),
                                        labels: labels.clone(),
                                        ips: vec![ip],
                                        ports: current
                                            .workloads
                                            .get(&key)
                                            .map(|w| w.ports.clone())
                                            .unwrap_or_default(),
                                        node: None,
                                        host_network: false,
                                    };
                                    inv.workloads.insert(stand_in.key(), stand_in);
                                    ip
                                }
                            };
                            known.push((labels, ip));
                            ip
                        }
                    }
                };
            }
            addrs.push(pair);
        }
        Self {
            inventory: inv,
            addrs,
        }
    }
}

/// Detail rows kept per class besides breakage (which is always complete); the summary counts
/// everything.
const DETAIL_CAP: usize = 10_000;

/// Replays history against the policy in force and the candidate (both engines built on the
/// replay inventory). `progress` is called every `step` flows with (done, total).
pub fn simulate(
    replay: &Replay,
    current: &Engine,
    candidate: &Engine,
    flows: &[HistFlow],
    mut progress: impl FnMut(usize, usize),
) -> (SimSummary, Vec<SimRow>) {
    let mut summary = SimSummary::default();
    let mut rows: BTreeMap<(SimClass, String, String, Protocol, u16), SimRow> = BTreeMap::new();
    let mut kept: BTreeMap<SimClass, usize> = BTreeMap::new();
    let step = (flows.len() / 20).max(50_000);
    for (i, f) in flows.iter().enumerate() {
        if i % step == 0 {
            progress(i, flows.len());
        }
        let [src, dst] = replay.addrs[i];
        let flow = Flow {
            src,
            dst,
            protocol: f.protocol,
            port: f.port,
        };
        let verdict = |e: &Engine| {
            let d = e.evaluate(&flow);
            let (_, v) = d.deciding();
            (d.allowed, v.rule)
        };
        let (cur, cur_rule) = verdict(current);
        let (cand, cand_rule) = verdict(candidate);
        let class = match (f.observed.happened(), cur, cand) {
            (true, false, _) => SimClass::Escaped,
            (true, true, true) => SimClass::Permitted,
            (true, true, false) => SimClass::WouldBeRejected,
            (false, _, false) => SimClass::Rejected,
            (false, _, true) => SimClass::WouldBeOpened,
        };
        let c = summary.classes.entry(class).or_default();
        c.0 += 1;
        c.1 += f.connections;
        summary.flows += 1;
        // Details per edge (history splits an edge by rule and by labels over time).
        let key = (
            class,
            f.src.describe(),
            f.dst.describe(),
            f.protocol,
            f.port,
        );
        let kept = kept.entry(class).or_insert(0usize);
        if let Some(r) = rows.get_mut(&key) {
            r.connections += f.connections;
        } else if class == SimClass::WouldBeRejected || *kept < DETAIL_CAP {
            *kept += 1;
            rows.insert(
                key.clone(),
                SimRow {
                    class,
                    src: key.1,
                    dst: key.2,
                    protocol: f.protocol,
                    port: f.port,
                    connections: f.connections,
                    observed: f.observed,
                    current: SimVerdict {
                        allowed: cur,
                        rule: current.rule(cur_rule).map(|r| r.describe()),
                    },
                    candidate: SimVerdict {
                        allowed: cand,
                        rule: candidate.rule(cand_rule).map(|r| r.describe()),
                    },
                },
            );
        }
    }
    progress(flows.len(), flows.len());
    (summary, rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::parse_file;

    fn inv_and_policies(yaml: &str) -> (Inventory, Vec<crate::model::Policy>) {
        crate::load::into_model(
            parse_file("t.yaml", yaml)
                .unwrap()
                .objects
                .into_iter()
                .map(|o| o.object),
        )
    }

    const INV: &str = "
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: web-1, labels: {app: web, pod-template-hash: x1}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: web-2, labels: {app: web, pod-template-hash: x1}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db, labels: {app: db}}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {namespace: b, name: debug, labels: {app: debug}}
status: {podIP: 10.0.0.4}
";

    fn ep(inv: &Inventory, key: &str) -> Endpoint {
        let w = &inv.workloads[&WorkloadKey::parse(key).unwrap()];
        Endpoint::Workload {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            labels: w.labels.clone(),
        }
    }

    fn flow(src: Endpoint, dst: Endpoint, port: u16, observed: Observed, n: u64) -> HistFlow {
        HistFlow {
            src,
            dst,
            protocol: Protocol::Tcp,
            port,
            observed,
            rule: None,
            connections: n,
            first_ns: 1_000_000_000,
            last_ns: 2_000_000_000,
        }
    }

    #[test]
    fn map_groups_replicas_and_externals() {
        let (inv, _) = inv_and_policies(INV);
        let ext = Endpoint::External {
            ip: "203.0.113.9".parse().unwrap(),
        };
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                3,
            ),
            flow(
                ep(&inv, "a/web-2"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                2,
            ),
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Denied,
                1,
            ),
            flow(ep(&inv, "a/web-1"), ext, 443, Observed::Allowed, 1),
        ];
        let m = dependency_map(&flows, GroupBy::App);
        let e: Vec<_> = m
            .edges
            .iter()
            .map(|e| (e.src.as_str(), e.dst.as_str(), e.port, e.allowed, e.denied))
            .collect();
        assert_eq!(
            e,
            [
                ("a/app=web", "203.0.113.0/24", 443, 1, 0),
                ("a/app=web", "a/app=db", 5432, 5, 0),
                ("b/app=debug", "a/app=db", 5432, 0, 1)
            ]
        );
        let web = m.nodes.iter().find(|n| n.id == "a/app=web").unwrap();
        assert_eq!(web.members.len(), 2);
        assert!(to_dot(&m).contains("\"a/app=web\" -> \"a/app=db\""));
    }

    #[test]
    fn proposal_is_least_privilege_deterministic_and_respects_denies() {
        let deny = "
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: no-debug}
spec:
  tier: admin
  priority: 1
  ingress:
  - action: Deny
    from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]
";
        let (inv, pols) = inv_and_policies(&format!("{INV}---{deny}"));
        let engine = Engine::build(inv.clone(), pols, 0);
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                30,
            ),
            flow(
                ep(&inv, "a/web-2"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                20,
            ),
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                9999,
                Observed::Allowed,
                1,
            ),
            // Happened before the deny existed: still never proposed.
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                4,
            ),
            // Denied attempts are never proposed either.
            flow(
                ep(&inv, "a/db"),
                ep(&inv, "a/web-1"),
                22,
                Observed::Denied,
                9,
            ),
        ];
        let p = propose(&flows, &engine, &ProposeOptions::default());
        assert_eq!(p, propose(&flows, &engine, &ProposeOptions::default()));
        let db = p.policies.iter().find(|p| p.name == "cw-db").unwrap();
        let rules: Vec<_> = db
            .ingress
            .iter()
            .map(|r| (r.port, r.evidence.connections, r.evidence.review))
            .collect();
        assert_eq!(rules, [(5432, 50, false), (9999, 1, true)]);
        assert!(db.egress.is_empty());
        assert_eq!(p.excluded.len(), 1);
        assert!(
            p.excluded[0].reason.contains("ClusterPolicy/no-debug"),
            "{:?}",
            p.excluded
        );
        // Namespace b's debug pod sent nothing allowed, yet is isolated; with --namespace a it is
        // left alone.
        assert!(p
            .policies
            .iter()
            .any(|p| p.namespace == "b" && p.ingress.is_empty()));
        let only_a = propose(
            &flows,
            &engine,
            &ProposeOptions {
                namespace: Some("a".into()),
                ..Default::default()
            },
        );
        assert!(only_a.policies.iter().all(|p| p.namespace == "a"));
        // Both renderings parse back as policies.
        for f in [ProposalFormat::Cellwall, ProposalFormat::NetworkPolicy] {
            let y = render_yaml(&p, f);
            let parsed = parse_file("p.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"));
            assert_eq!(parsed.objects.len(), p.policies.len());
        }
    }

    #[test]
    fn simulation_classifies_and_replays_old_labels() {
        let allow_web = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";
        let (inv, cur) = inv_and_policies(&format!("{INV}---{allow_web}"));
        let (_, cand) = inv_and_policies(&allow_web.replace("5432", "5433"));
        // web-2 was labelled app=legacy when it connected; db's policy in force would not
        // have allowed that: it escaped (happened without isolation at the time).
        let mut old = ep(&inv, "a/web-2");
        if let Endpoint::Workload { labels, .. } = &mut old {
            labels.insert("app".into(), "legacy".into());
        }
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                10,
            ),
            flow(old, ep(&inv, "a/db"), 5432, Observed::Allowed, 2),
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Denied,
                1,
            ),
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5433,
                Observed::Denied,
                1,
            ),
        ];
        let replay = Replay::new(&inv, &flows);
        let current = Engine::build(replay.inventory.clone(), cur, 0);
        let candidate = Engine::build(replay.inventory.clone(), cand, 0);
        let (summary, rows) = simulate(&replay, &current, &candidate, &flows, |_, _| {});
        let classes: Vec<_> = rows
            .iter()
            .map(|r| (r.class, r.src.as_str(), r.port))
            .collect();
        assert_eq!(
            classes,
            [
                (SimClass::WouldBeRejected, "a/web-1", 5432),
                (SimClass::Escaped, "a/web-2", 5432),
                (SimClass::Rejected, "b/debug", 5432),
                (SimClass::WouldBeOpened, "a/web-1", 5433),
            ]
        );
        assert_eq!(summary.breakage(), 1);
        assert_eq!(summary.flows, 4);
    }
}

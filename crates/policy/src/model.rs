//! The policy model every input family is converted into: inventory (namespaces, workloads,
//! nodes) and policies (subjects, ordered rules, peers, ports) with their tier and mode.
//! Keeping one model means one evaluator, one compiler and one explanation format for all three
//! policy families.

use crate::labels::{LabelSelector, Labels};
use crate::net::Cidr;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// The label the API server puts on every namespace; the conformance suites select on it.
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

// Primitives of `crate::clusters`, here because the inventory's defaults need them.

/// The label every object of a watched cluster carries: the cluster's name.
pub const CLUSTER_LABEL: &str = "cellwall.io/cluster";

/// Between a cluster's name and an object's own name.
pub const SEPARATOR: char = ':';

/// The cluster and the cluster's own name of a qualified name; none for an unqualified one.
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
}

/// The cluster a qualified name belongs to; none for an unqualified one.
pub fn cluster_of(name: &str) -> Option<&str> {
    split(name).map(|(c, _)| c)
}

/// The labels of a namespace nobody declared: the automatic name label (the cluster's own
/// name of the namespace) and, for a qualified one, its cluster.
pub fn default_namespace_labels(ns: &str) -> Labels {
    let mut l = Labels::new();
    match split(ns) {
        Some((c, bare)) => {
            l.insert(NAMESPACE_NAME_LABEL.to_string(), bare.to_string());
            l.insert(CLUSTER_LABEL.to_string(), c.to_string());
        }
        None => {
            l.insert(NAMESPACE_NAME_LABEL.to_string(), ns.to_string());
        }
    }
    l
}

/// Transport protocols a policy can name.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Protocol {
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "TCP" => Self::Tcp,
            "UDP" => Self::Udp,
            "SCTP" => Self::Sctp,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "TCP",
            Self::Udp => "UDP",
            Self::Sctp => "SCTP",
        }
    }
    /// IANA protocol number, as the datapath sees it in the IP header.
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
            Self::Sctp => 132,
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A (possibly named) port a workload listens on.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Namespace {
    pub name: String,
    /// Includes `kubernetes.io/metadata.name`, added as the API server does.
    pub labels: Labels,
}

impl Namespace {
    pub fn new(name: impl Into<String>, mut labels: Labels) -> Self {
        let name = name.into();
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.clone());
        Self { name, labels }
    }
}

/// `namespace/name` of a workload.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WorkloadKey {
    pub namespace: String,
    pub name: String,
}

impl WorkloadKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
    /// Parses `NS/NAME`.
    pub fn parse(s: &str) -> Option<Self> {
        let (ns, name) = s.split_once('/')?;
        if ns.is_empty() || name.is_empty() || name.contains('/') {
            return None;
        }
        Some(Self::new(ns, name))
    }
}

impl fmt::Display for WorkloadKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A host an admin declared: the node whose host-mode agent may report it, its labels, and the
/// addresses it may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostDecl {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub node: String,
    pub addresses: Vec<Cidr>,
}

impl HostDecl {
    /// The host as a workload: its single addresses (networks are what its agent may report
    /// from; the agent's report fills them in).
    pub fn workload(&self) -> Workload {
        Workload {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            labels: self.labels.clone().into(),
            ips: self
                .addresses
                .iter()
                .filter(|c| c.prefix() == if c.is_ipv4() { 32 } else { 128 })
                .map(|c| c.addr())
                .collect(),
            ports: Vec::new(),
            node: Some(self.node.clone()),
            host_network: false,
            owner: None,
        }
    }
}

/// A pod, VM or host process group that policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Workload {
    pub namespace: String,
    pub name: String,
    pub labels: crate::labels::SharedLabels,
    pub ips: Vec<IpAddr>,
    pub ports: Vec<ContainerPort>,
    pub node: Option<String>,
    /// A hostNetwork pod shares its node's addresses: policy treats it as the node (it is never a
    /// subject, and peers see it through node selectors, `host` and CIDRs).
    pub host_network: bool,
    /// The controller that runs it (from the pod's ownerReferences): the strongest evidence of
    /// which application it belongs to, for learning. Policy never reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
}

/// A workload's controller, with a ReplicaSet resolved to its Deployment.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Owner {
    /// Deployment, StatefulSet, DaemonSet, Job, ReplicaSet, …
    pub kind: String,
    pub name: String,
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

impl Workload {
    pub fn key(&self) -> WorkloadKey {
        WorkloadKey::new(&self.namespace, &self.name)
    }
    /// Resolves a named port the way Kubernetes does: against this (destination) workload's ports.
    pub fn named_port(&self, name: &str, protocol: Option<Protocol>) -> Option<&ContainerPort> {
        self.ports
            .iter()
            .find(|p| p.name.as_deref() == Some(name) && protocol.is_none_or(|pr| pr == p.protocol))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Node {
    pub name: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
}

/// Which family a policy came from; also fixes the order of equal-priority policies.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Family {
    AdminNetworkPolicy,
    /// policy.networking.k8s.io/v1alpha2, both tiers (`spec.tier`).
    ClusterNetworkPolicy,
    ClusterPolicy,
    Policy,
    NetworkPolicy,
    BaselineAdminNetworkPolicy,
}

impl Family {
    pub fn kind(self) -> &'static str {
        match self {
            Self::AdminNetworkPolicy => "AdminNetworkPolicy",
            Self::ClusterNetworkPolicy => "ClusterNetworkPolicy",
            Self::ClusterPolicy => "ClusterPolicy",
            Self::Policy => "Policy",
            Self::NetworkPolicy => "NetworkPolicy",
            Self::BaselineAdminNetworkPolicy => "BaselineAdminNetworkPolicy",
        }
    }
    pub fn is_namespaced(self) -> bool {
        matches!(self, Self::Policy | Self::NetworkPolicy)
    }
}

/// Stable name of a policy: kind, namespace (namespaced kinds only) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PolicyId {
    pub family: Family,
    pub namespace: Option<String>,
    pub name: String,
}

impl PolicyId {
    pub fn new(family: Family, namespace: Option<&str>, name: &str) -> Self {
        Self {
            family,
            namespace: namespace.map(str::to_string),
            name: name.to_string(),
        }
    }
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{}/{}/{}", self.family.kind(), ns, self.name),
            None => write!(f, "{}/{}", self.family.kind(), self.name),
        }
    }
}

/// Evaluation tiers, in precedence order. See ARCHITECTURE.md "Policy precedence".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// ClusterNetworkPolicy `tier: Admin`, AdminNetworkPolicy and Cellwall policies with
    /// `tier: admin`: ordered, first match wins.
    Admin,
    /// NetworkPolicy and Cellwall policies with `tier: application`: selection isolates,
    /// deny beats allow, any allow admits, otherwise denied.
    Application,
    /// ClusterNetworkPolicy `tier: Baseline`, BaselineAdminNetworkPolicy and Cellwall policies
    /// with `tier: baseline`: ordered, first match.
    Baseline,
}

impl Tier {
    pub const ALL: [Tier; 3] = [Tier::Admin, Tier::Application, Tier::Baseline];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Application => "application",
            Self::Baseline => "baseline",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of this tier: the next tier decides (admin tier; ClusterNetworkPolicy's
    /// baseline tier too, where the default then decides).
    Pass,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize, Default,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    /// Never drops: its verdicts are reported as what would have happened.
    Audit,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, serde::Deserialize,
)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];
    pub fn index(self) -> usize {
        match self {
            Self::Ingress => 0,
            Self::Egress => 1,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ingress => "ingress",
            Self::Egress => "egress",
        }
    }
}

/// Which namespaces a pod selector looks in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum NamespaceMatch {
    /// Only this namespace (a NetworkPolicy peer with just `podSelector`).
    Named(String),
    /// Namespaces whose labels match.
    Selector(LabelSelector),
}

/// Named traffic classes that are not label-selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Entity {
    /// Everything outside the inventory (no workload and no node has the address).
    World,
    /// The node the subject workload runs on, including its hostNetwork pods.
    Host,
    /// Every workload and node in the inventory.
    Cluster,
    /// Anything.
    All,
}

/// Who is on the other side of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum Peer {
    /// Any endpoint (a NetworkPolicy rule with no `from`/`to`).
    Any,
    /// Pods (never hostNetwork ones) selected by namespace and pod labels.
    Pods {
        namespaces: NamespaceMatch,
        pods: LabelSelector,
    },
    /// Nodes selected by node labels (their addresses, so hostNetwork pods too).
    Nodes(LabelSelector),
    /// Addresses in `cidr` but in none of `except`.
    Cidr {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
    Entity(Entity),
    /// Egress to DNS names (ClusterNetworkPolicy `domainNames`, Cellwall `domains`): the
    /// addresses the subject's own DNS answers gave for a matching name. The engine knows no
    /// answers, so statically it matches nothing (fail closed: it never admits a pod).
    Domain(crate::net::DomainPattern),
}

/// A port condition of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub enum PortSpec {
    /// A protocol and an inclusive port range (a single port is `lo == hi`; all ports 0..=65535).
    Range {
        protocol: Protocol,
        lo: u16,
        hi: u16,
    },
    /// A container port name, resolved against the destination workload. `protocol: None` (ANP
    /// `namedPort`) accepts the named port's own protocol.
    Named {
        protocol: Option<Protocol>,
        name: String,
    },
}

/// One rule, in the order it appears in its policy.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Rule {
    pub direction: Direction,
    /// Position among the policy's rules of the same direction.
    pub index: usize,
    pub name: Option<String>,
    pub action: Action,
    /// Empty never happens: "anyone" is `[Peer::Any]`.
    pub peers: Vec<Peer>,
    /// Empty means every protocol and port.
    pub ports: Vec<PortSpec>,
    /// Unix seconds after which the rule no longer exists.
    pub expires_at: Option<i64>,
}

/// Which workloads a policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Subject {
    pub namespaces: NamespaceMatch,
    pub pods: LabelSelector,
}

/// A policy of any family, converted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Policy {
    pub id: PolicyId,
    pub tier: Tier,
    /// Lower runs first within a tier.
    pub priority: i32,
    pub mode: Mode,
    pub expires_at: Option<i64>,
    pub subject: Subject,
    /// Application tier only: whether selecting a workload isolates it in that direction
    /// (`[ingress, egress]`, the NetworkPolicy `policyTypes`).
    pub isolates: [bool; 2],
    pub rules: Vec<Rule>,
}

impl Policy {
    pub fn rules(&self, dir: Direction) -> impl Iterator<Item = &Rule> {
        self.rules.iter().filter(move |r| r.direction == dir)
    }
    /// Order inside a tier: priority, then family, then namespace/name (deterministic ties).
    pub fn order_key(&self) -> (Tier, i32, &PolicyId) {
        (self.tier, self.priority, &self.id)
    }
    pub fn is_active(&self, now: i64) -> bool {
        self.expires_at.is_none_or(|t| now < t)
    }
}

/// Everything policy is evaluated against. (No JSON Schema: its workload map is keyed by a
/// struct, which JSON cannot carry; the API sends workloads as lists.)
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Inventory {
    pub namespaces: BTreeMap<String, Namespace>,
    /// Shared: the agent's model, the engine's inventory and its address index hold one
    /// copy of each workload (three copies were ~250 MiB at 100,000 workloads).
    pub workloads: BTreeMap<WorkloadKey, std::sync::Arc<Workload>>,
    pub nodes: BTreeMap<String, Node>,
}

impl Inventory {
    /// Namespace labels, or just the automatic name label when the namespace was not declared.
    pub fn namespace_labels(&self, ns: &str) -> Labels {
        match self.namespaces.get(ns) {
            Some(n) => n.labels.clone(),
            None => default_namespace_labels(ns),
        }
    }

    /// Gives every non-hostNetwork workload without an address a deterministic one from `pool`
    /// (in namespace/name order, skipping addresses already used), and hostNetwork pods their
    /// node's addresses. Returns the workloads that could not get one (pool exhausted).
    pub fn assign_missing_ips(&mut self, pool: Cidr) -> Vec<WorkloadKey> {
        let mut used: std::collections::BTreeSet<IpAddr> = self
            .workloads
            .values()
            .flat_map(|w| w.ips.iter().copied())
            .collect();
        used.extend(self.nodes.values().flat_map(|n| n.ips.iter().copied()));
        let node_ips: BTreeMap<String, Vec<IpAddr>> = self
            .nodes
            .iter()
            .map(|(k, n)| (k.clone(), n.ips.clone()))
            .collect();
        let mut next: u128 = 1;
        let mut failed = Vec::new();
        for w in self.workloads.values_mut() {
            if !w.ips.is_empty() {
                continue;
            }
            let w = std::sync::Arc::make_mut(w);
            if w.host_network {
                if let Some(ips) = w.node.as_ref().and_then(|n| node_ips.get(n)) {
                    w.ips = ips.clone();
                }
                continue;
            }
            let size_bits = if pool.is_ipv4() { 32 } else { 128 } - pool.prefix() as u32;
            let limit: u128 = if size_bits >= 127 {
                u128::MAX
            } else {
                (1u128 << size_bits) - 1
            };
            let mut assigned = None;
            while next < limit {
                let ip = offset_ip(pool.addr(), next);
                next += 1;
                if !used.contains(&ip) {
                    assigned = Some(ip);
                    break;
                }
            }
            match assigned {
                Some(ip) => {
                    used.insert(ip);
                    w.ips.push(ip);
                }
                None => failed.push(w.key()),
            }
        }
        failed
    }
}

fn offset_ip(base: IpAddr, off: u128) -> IpAddr {
    match base {
        IpAddr::V4(a) => IpAddr::V4((u32::from(a).wrapping_add(off as u32)).into()),
        IpAddr::V6(a) => IpAddr::V6((u128::from(a).wrapping_add(off)).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workload_keys_parse_ns_slash_name() {
        assert_eq!(WorkloadKey::parse("a/b"), Some(WorkloadKey::new("a", "b")));
        assert_eq!(WorkloadKey::parse("a/b").unwrap().to_string(), "a/b");
        for bad in ["a", "/b", "a/", "a/b/c"] {
            assert_eq!(WorkloadKey::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn namespaces_carry_their_name_label() {
        let n = Namespace::new("x", Labels::new());
        assert_eq!(n.labels[NAMESPACE_NAME_LABEL], "x");
        let inv = Inventory::default();
        assert_eq!(inv.namespace_labels("y")[NAMESPACE_NAME_LABEL], "y");
    }

    #[test]
    fn missing_addresses_are_assigned_deterministically() {
        let w = |name: &str, ip: Option<&str>, host: bool| Workload {
            namespace: "a".into(),
            name: name.into(),
            labels: Labels::new().into(),
            ips: ip.map(|i| vec![i.parse().unwrap()]).unwrap_or_default(),
            ports: vec![],
            node: Some("n1".into()),
            host_network: host,
            owner: None,
        };
        let mut inv = Inventory::default();
        for x in [
            w("p1", None, false),
            w("p2", Some("10.0.0.1"), false),
            w("p3", None, false),
            w("h", None, true),
        ] {
            inv.workloads.insert(x.key(), x.into());
        }
        inv.nodes.insert(
            "n1".into(),
            Node {
                name: "n1".into(),
                labels: Labels::new(),
                ips: vec!["192.0.2.1".parse().unwrap()],
            },
        );
        let mut small = inv.clone();
        assert!(inv
            .assign_missing_ips("10.0.0.0/29".parse().unwrap())
            .is_empty());
        let ip = |n: &str| inv.workloads[&WorkloadKey::new("a", n)].ips.clone();
        assert_eq!(ip("p1"), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(ip("p3"), vec!["10.0.0.3".parse::<IpAddr>().unwrap()]);
        assert_eq!(ip("h"), vec!["192.0.2.1".parse::<IpAddr>().unwrap()]);
        // A /30 has two usable addresses, and p2 holds one of them.
        assert_eq!(
            small.assign_missing_ips("10.0.0.0/30".parse().unwrap()),
            vec![WorkloadKey::new("a", "p3")]
        );
    }

    #[test]
    fn policies_order_by_tier_priority_then_id() {
        let p = |tier, priority, name: &str| Policy {
            id: PolicyId::new(Family::ClusterPolicy, None, name),
            tier,
            priority,
            mode: Mode::Enforce,
            expires_at: Some(10),
            subject: Subject {
                namespaces: NamespaceMatch::Named("a".into()),
                pods: LabelSelector::everything(),
            },
            isolates: [false, false],
            rules: vec![],
        };
        let mut ps = [
            p(Tier::Baseline, 0, "a"),
            p(Tier::Admin, 5, "b"),
            p(Tier::Admin, 5, "a"),
            p(Tier::Admin, 1, "z"),
        ];
        ps.sort_by(|a, b| a.order_key().cmp(&b.order_key()));
        let names: Vec<&str> = ps.iter().map(|p| p.id.name.as_str()).collect();
        assert_eq!(names, ["z", "a", "b", "a"]);
        assert!(ps[0].is_active(9) && !ps[0].is_active(10));
        assert_eq!(ps[0].id.to_string(), "ClusterPolicy/z");
    }
}

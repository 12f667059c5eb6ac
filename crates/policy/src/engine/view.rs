//! How policy sees the two ends of a flow, and whether a rule's peer or port condition matches
//! them. Separate from the index so the evaluator and the compiler share one definition of
//! "matches": the compiler builds views of peer identities and asks the same questions.

use crate::labels::{Labels, SharedLabels};
use crate::model::{
    ContainerPort, Entity, NamespaceMatch, Peer, PortSpec, Protocol, Subject, Workload,
};
use crate::net::Cidr;
use std::net::IpAddr;
use std::sync::Arc;

use super::IdentityInfo;

/// Where an address stands relative to policy CIDRs: a real address, or (for compiled tables) a
/// region of addresses whose longest policy-CIDR match is the given network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Addr {
    Ip(IpAddr),
    Region(Cidr),
    /// Inside no policy CIDR.
    Outside,
}

impl Addr {
    /// Whether every address this stands for lies in `c`.
    pub fn in_cidr(&self, c: &Cidr) -> bool {
        match self {
            Addr::Ip(ip) => c.contains(ip),
            Addr::Region(r) => c.contains_net(r),
            Addr::Outside => false,
        }
    }
}

/// What kind of endpoint a view is, with what selectors look at.
#[derive(Debug, Clone, Copy)]
pub enum EndpointKind<'a> {
    /// Ports and node are read from `workload` only when a rule asks (named ports, entity
    /// `host`): at 100,000 workloads the record is a cache miss most flows need not pay.
    Workload {
        ns: &'a str,
        ns_labels: &'a Labels,
        labels: &'a Labels,
        workload: &'a Workload,
    },
    Node {
        name: &'a str,
        labels: &'a Labels,
    },
    External,
    /// Matches only peers that match anything (`Any`, entity `all`): the wildcard table entry.
    Anonymous,
}

/// One end of a flow as policy sees it.
#[derive(Debug, Clone, Copy)]
pub struct EndpointView<'a> {
    pub kind: EndpointKind<'a>,
    pub addr: Addr,
    /// DNS names of an external address (what `Peer::Domain` matches); empty otherwise.
    pub names: &'a [String],
}

impl<'a> EndpointView<'a> {
    /// A workload: its namespace (and that namespace's labels), labels, ports and node.
    pub fn workload(w: &'a Workload, ns_labels: &'a Labels, addr: Addr) -> Self {
        EndpointView {
            kind: EndpointKind::Workload {
                ns: &w.namespace,
                ns_labels,
                labels: &w.labels,
                workload: w,
            },
            addr,
            names: &[],
        }
    }

    /// A node (or a hostNetwork pod, which policy treats as its node).
    pub fn node(name: &'a str, labels: &'a Labels, addr: Addr) -> Self {
        EndpointView {
            kind: EndpointKind::Node { name, labels },
            addr,
            names: &[],
        }
    }

    /// An address outside the inventory.
    pub fn external(addr: Addr) -> Self {
        Self::named(addr, &[])
    }

    /// An address outside the inventory that DNS answers named.
    pub fn named(addr: Addr, names: &'a [String]) -> Self {
        EndpointView {
            kind: EndpointKind::External,
            addr,
            names,
        }
    }

    /// The stand-in for "any other peer": matched only by rules that match everyone.
    pub fn anonymous() -> Self {
        EndpointView {
            kind: EndpointKind::Anonymous,
            addr: Addr::Outside,
            names: &[],
        }
    }

    /// The container ports of a workload (named ports resolve against them).
    pub fn ports(&self) -> Option<&'a [ContainerPort]> {
        match self.kind {
            EndpointKind::Workload { workload, .. } => Some(&workload.ports),
            _ => None,
        }
    }

    /// The node a workload runs on (what entity `host` means for its rules).
    pub fn workload_node(&self) -> Option<&'a str> {
        match self.kind {
            EndpointKind::Workload { workload, .. } => workload.node.as_deref(),
            _ => None,
        }
    }

    pub fn is_workload(&self) -> bool {
        matches!(self.kind, EndpointKind::Workload { .. })
    }
}

/// What an address belongs to. Workload entries carry everything evaluation needs, so deciding a
/// flow costs one hash lookup per end; the record sits in the map itself (one cache miss less
/// per end than behind a pointer; a workload with several addresses has one copy per address).
#[derive(Debug, Clone)]
pub(super) enum EpRef {
    Workload(WlRec),
    Node(String),
}

/// A namespace as its indexed workloads share it.
#[derive(Debug)]
pub(super) struct NsRec {
    pub name: String,
    pub labels: Labels,
}

impl NsRec {
    /// The namespace's record in `recs`, replaced when its labels changed.
    pub(super) fn shared(
        recs: &mut std::collections::HashMap<String, Arc<NsRec>>,
        name: &str,
        labels: Labels,
    ) -> Arc<NsRec> {
        match recs.get(name) {
            Some(r) if r.labels == labels => r.clone(),
            _ => {
                let r = Arc::new(NsRec {
                    name: name.to_string(),
                    labels,
                });
                recs.insert(name.to_string(), r.clone());
                r
            }
        }
    }
}

/// A workload as indexed: its identity, and what evaluation reads of it where it stays in cache.
/// `evaluate` at 100,000 workloads is bound by memory latency; the records below are shared, so
/// the few maps every flow reads stay hot instead of one cold map per workload.
#[derive(Debug, Clone)]
pub(super) struct WlRec {
    /// The inventory's own copy, shared.
    pub workload: Arc<Workload>,
    pub identity: Option<u32>,
    /// One per namespace, not per workload (100,000 copies of the labels were ~85 MiB).
    pub ns: Arc<NsRec>,
    /// The workload's labels: one map for all workloads with equal labels (`LabelPool`).
    pub labels: SharedLabels,
}

impl WlRec {
    pub(super) fn view(&self, addr: Addr) -> EndpointView<'_> {
        EndpointView {
            kind: EndpointKind::Workload {
                ns: &self.ns.name,
                ns_labels: &self.ns.labels,
                labels: &self.labels,
                workload: &self.workload,
            },
            addr,
            names: &[],
        }
    }
}

impl EpRef {
    pub(super) fn is_workload(&self, namespace: &str, name: &str) -> bool {
        matches!(self, EpRef::Workload(r) if r.workload.namespace == namespace && r.workload.name == name)
    }
}

pub(super) fn ns_matches(m: &NamespaceMatch, ns: &str, ns_labels: &Labels) -> bool {
    match m {
        NamespaceMatch::Named(n) => n == ns,
        NamespaceMatch::Selector(s) => s.matches(ns_labels),
    }
}

/// Whether a policy subject selects a label identity.
pub(super) fn subject_matches(s: &Subject, id: &IdentityInfo) -> bool {
    subject_selects(s, &id.namespace, &id.namespace_labels, &id.labels)
}

/// Whether a policy subject selects a workload with these labels in namespace `ns` (whose labels
/// are `ns_labels`): the engine's index and the agent's emergency check ask the same question.
pub fn subject_selects(s: &Subject, ns: &str, ns_labels: &Labels, labels: &Labels) -> bool {
    ns_matches(&s.namespaces, ns, ns_labels) && s.pods.matches(labels)
}

/// Whether a rule's peer matches `v`, for a subject on node `subject_node` (entity `host`).
pub fn peer_matches(peer: &Peer, subject_node: Option<&str>, v: &EndpointView) -> bool {
    match peer {
        Peer::Any | Peer::Entity(Entity::All) => true,
        Peer::Pods { namespaces, pods } => match v.kind {
            EndpointKind::Workload {
                ns,
                ns_labels,
                labels,
                ..
            } => ns_matches(namespaces, ns, ns_labels) && pods.matches(labels),
            _ => false,
        },
        Peer::Nodes(sel) => {
            matches!(v.kind, EndpointKind::Node { labels, .. } if sel.matches(labels))
        }
        Peer::Cidr { cidr, except } => {
            v.addr.in_cidr(cidr) && !except.iter().any(|e| v.addr.in_cidr(e))
        }
        Peer::Entity(Entity::World) => matches!(v.kind, EndpointKind::External),
        // Only external addresses carry names (engine/names.rs).
        Peer::Domain(d) => v.names.iter().any(|n| d.matches(n)),
        Peer::Entity(Entity::Host) => {
            matches!(v.kind, EndpointKind::Node { name, .. } if Some(name) == subject_node)
        }
        Peer::Entity(Entity::Cluster) => {
            matches!(
                v.kind,
                EndpointKind::Workload { .. } | EndpointKind::Node { .. }
            )
        }
    }
}

/// Whether a rule's port condition matches; named ports resolve against the destination's ports
/// (`None` when the destination is not a workload: a named port never matches then).
pub fn port_matches(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelSelector;

    fn labels(p: &[(&str, &str)]) -> Labels {
        p.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    fn web() -> Workload {
        Workload {
            namespace: "shop".into(),
            name: "web".into(),
            labels: labels(&[("app", "web")]).into(),
            ips: vec!["10.0.0.1".parse().unwrap()],
            ports: vec![ContainerPort {
                name: Some("http".into()),
                port: 8080,
                protocol: Protocol::Tcp,
            }],
            node: Some("n1".into()),
            host_network: false,
            owner: None,
        }
    }

    #[test]
    fn peers_match_by_kind() {
        let w = web();
        let nsl = labels(&[("env", "prod")]);
        let nl = labels(&[("zone", "a")]);
        let ip = Addr::Ip("10.0.0.1".parse().unwrap());
        let wv = EndpointView::workload(&w, &nsl, ip);
        let nv = EndpointView::node("n1", &nl, ip);
        let ev = EndpointView::external(ip);
        let any = EndpointView::anonymous();
        let pods = Peer::Pods {
            namespaces: NamespaceMatch::Selector(LabelSelector::from_labels([("env", "prod")])),
            pods: LabelSelector::from_labels([("app", "web")]),
        };
        assert!(peer_matches(&pods, None, &wv));
        assert!(!peer_matches(&pods, None, &nv));
        let host = Peer::Entity(Entity::Host);
        assert!(peer_matches(&host, Some("n1"), &nv));
        assert!(!peer_matches(&host, Some("n2"), &nv));
        assert!(peer_matches(&Peer::Entity(Entity::World), None, &ev));
        assert!(!peer_matches(&Peer::Entity(Entity::World), None, &wv));
        assert!(peer_matches(&Peer::Entity(Entity::Cluster), None, &nv));
        // The wildcard view is matched by "anyone" peers only.
        assert!(peer_matches(&Peer::Any, None, &any));
        assert!(!peer_matches(&Peer::Entity(Entity::Cluster), None, &any));
        let cidr = Peer::Cidr {
            cidr: "10.0.0.0/8".parse().unwrap(),
            except: vec!["10.0.0.0/24".parse().unwrap()],
        };
        assert!(!peer_matches(&cidr, None, &wv));
        let region = EndpointView::external(Addr::Region("10.1.0.0/16".parse().unwrap()));
        assert!(peer_matches(&cidr, None, &region));
    }

    #[test]
    fn named_ports_resolve_against_the_destination() {
        let w = web();
        let named = PortSpec::Named {
            protocol: None,
            name: "http".into(),
        };
        assert!(port_matches(&named, Protocol::Tcp, 8080, Some(&w.ports)));
        assert!(!port_matches(&named, Protocol::Tcp, 80, Some(&w.ports)));
        assert!(!port_matches(&named, Protocol::Tcp, 8080, None));
        let range = PortSpec::Range {
            protocol: Protocol::Udp,
            lo: 50,
            hi: 60,
        };
        assert!(port_matches(&range, Protocol::Udp, 53, None));
        assert!(!port_matches(&range, Protocol::Tcp, 53, None));
    }
}

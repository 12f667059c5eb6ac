//! Several clusters in one model. A manager that watches more than one Kubernetes cluster
//! qualifies each cluster's objects with the cluster's name before they meet anyone else's:
//! namespaces, nodes and cluster-scoped policy names become `CLUSTER:NAME` (a `:` no
//! Kubernetes name can hold, and the loader refuses in any name, so a file or a REST write
//! cannot pose as a cluster's namespace), and every namespace, pod, node and host of the
//! cluster carries the label [`CLUSTER_LABEL`], set here over whatever the object said (a
//! pod cannot claim another cluster).
//!
//! A cluster's own policies keep their Kubernetes meaning inside that cluster: their
//! namespace and node selectors are ANDed with the cluster label (on the pods and nodes they
//! select, so a namespace not yet listed cannot widen them), a NetworkPolicy's own namespace
//! is the qualified one, and `entity: cluster` means that cluster's pods and nodes. Policies
//! written through REST or files are not qualified: they select across clusters with the
//! label (`cellwall.io/cluster: east`). CIDR peers stay addresses: clusters must not share
//! pod or node addresses (as Cilium's cluster mesh requires), or the ipcache cannot tell
//! them apart.

use crate::labels::{LabelSelector, Operator, Requirement};
use crate::load::Object;
use crate::model::{Entity, NamespaceMatch, Peer, Policy, Subject, NAMESPACE_NAME_LABEL};
use crate::Labels;

/// The label every object of a watched cluster carries: the cluster's name.
pub const CLUSTER_LABEL: &str = "cellwall.io/cluster";

/// Between a cluster's name and an object's own name.
pub const SEPARATOR: char = ':';

/// A cluster name: a DNS label (1-63 of a-z, 0-9, '-', alphanumeric at both ends), so it is
/// also a valid label value and never holds the separator.
pub fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `CLUSTER:NAME`.
pub fn qualified(cluster: &str, name: &str) -> String {
    format!("{cluster}{SEPARATOR}{name}")
}

/// The cluster and the cluster's own name of a qualified name; none for an unqualified one.
pub fn split(name: &str) -> Option<(&str, &str)> {
    name.split_once(SEPARATOR)
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

/// Why a name read from a file, a request or a cluster cannot be used as it is: the separator
/// is the manager's alone (see the module comment).
pub fn check_unqualified(name: &str) -> Result<(), String> {
    if name.contains(SEPARATOR) {
        return Err(format!(
            "{name:?} holds '{SEPARATOR}', which Cellwall keeps for cluster-qualified names \
             (CLUSTER{SEPARATOR}NAME); a Kubernetes name never holds it"
        ));
    }
    Ok(())
}

/// Which name of an object the loader refuses, with its field path.
pub fn unqualified_names(o: &Object) -> Result<(), (&'static str, String)> {
    let check = |path: &'static str, n: &str| check_unqualified(n).map_err(|e| (path, e));
    match o {
        Object::Namespace(n) => check("metadata.name", &n.name),
        Object::Pod(w) => {
            check("metadata.namespace", &w.namespace)?;
            check("metadata.name", &w.name)?;
            w.node
                .as_deref()
                .map_or(Ok(()), |n| check("spec.nodeName", n))
        }
        Object::Node(n) => check("metadata.name", &n.name),
        Object::Policy(p) => {
            if let Some(ns) = &p.id.namespace {
                check("metadata.namespace", ns)?;
            }
            check("metadata.name", &p.id.name)
        }
        Object::Host(h) => {
            check("metadata.namespace", &h.namespace)?;
            check("metadata.name", &h.name)?;
            check("spec.node", &h.node)
        }
    }
}

/// `o`, read from cluster `cluster`, as the model holds it beside other clusters' objects.
pub fn qualify(cluster: &str, o: Object) -> Object {
    let q = |n: &str| qualified(cluster, n);
    let mark = |labels: &mut Labels| {
        labels.insert(CLUSTER_LABEL.to_string(), cluster.to_string());
    };
    match o {
        Object::Namespace(mut n) => {
            n.name = q(&n.name);
            mark(&mut n.labels);
            Object::Namespace(n)
        }
        Object::Pod(mut w) => {
            w.namespace = q(&w.namespace);
            w.node = w.node.as_deref().map(q);
            mark(&mut w.labels);
            Object::Pod(w)
        }
        Object::Node(mut n) => {
            n.name = q(&n.name);
            mark(&mut n.labels);
            Object::Node(n)
        }
        Object::Host(mut h) => {
            h.namespace = q(&h.namespace);
            h.node = q(&h.node);
            mark(&mut h.labels);
            Object::Host(h)
        }
        Object::Policy(p) => Object::Policy(Box::new(qualify_policy(cluster, *p))),
    }
}

/// A cluster's policy, confined to that cluster.
fn qualify_policy(cluster: &str, mut p: Policy) -> Policy {
    match &mut p.id.namespace {
        Some(ns) => *ns = qualified(cluster, ns),
        None => p.id.name = qualified(cluster, &p.id.name),
    }
    let Subject { namespaces, pods } = p.subject;
    let (namespaces, pods) = confine(cluster, namespaces, pods);
    p.subject = Subject { namespaces, pods };
    for r in &mut p.rules {
        let peers = std::mem::take(&mut r.peers);
        r.peers = peers
            .into_iter()
            .flat_map(|peer| confine_peer(cluster, peer))
            .collect();
    }
    p
}

fn confine(
    cluster: &str,
    namespaces: NamespaceMatch,
    pods: LabelSelector,
) -> (NamespaceMatch, LabelSelector) {
    match namespaces {
        // The namespace itself is the cluster's (qualified), so its pods are too.
        NamespaceMatch::Named(ns) => (NamespaceMatch::Named(qualified(cluster, &ns)), pods),
        NamespaceMatch::Selector(s) => (NamespaceMatch::Selector(s), in_cluster(cluster, pods)),
    }
}

fn confine_peer(cluster: &str, peer: Peer) -> Vec<Peer> {
    match peer {
        Peer::Pods { namespaces, pods } => {
            let (namespaces, pods) = confine(cluster, namespaces, pods);
            vec![Peer::Pods { namespaces, pods }]
        }
        Peer::Nodes(s) => vec![Peer::Nodes(in_cluster(cluster, s))],
        Peer::Entity(Entity::Cluster) => vec![
            Peer::Pods {
                namespaces: NamespaceMatch::Selector(LabelSelector::everything()),
                pods: in_cluster(cluster, LabelSelector::everything()),
            },
            Peer::Nodes(in_cluster(cluster, LabelSelector::everything())),
        ],
        // Addresses, names and the subject's own node are not a cluster's to confine.
        other => vec![other],
    }
}

/// `s` AND "in this cluster". A requirement, not a matchLabels entry: a selector that named
/// another cluster must end up selecting nothing, not be rewritten to select this one.
fn in_cluster(cluster: &str, mut s: LabelSelector) -> LabelSelector {
    s.match_expressions.push(Requirement {
        key: CLUSTER_LABEL.to_string(),
        operator: Operator::In,
        values: [cluster.to_string()].into_iter().collect(),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Flow};
    use crate::load::parse_file;
    use crate::model::Inventory;

    const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: IPNET.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: IPNET.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: IPNET.0.2}
";

    /// Two clusters with the same names; `extra` is added to cluster `west` only.
    fn model(east_extra: &str, west_extra: &str) -> Engine {
        let mut inv = Inventory::default();
        let mut policies = Vec::new();
        for (c, net, extra) in [("east", "10.1", east_extra), ("west", "10.2", west_extra)] {
            let text = format!("{}---\n{extra}", CLUSTER.replace("IPNET", net));
            let parsed = parse_file(c, &text).unwrap();
            for o in parsed.objects {
                match qualify(c, o.object) {
                    Object::Namespace(n) => {
                        inv.namespaces.insert(n.name.clone(), n);
                    }
                    Object::Pod(w) => {
                        inv.workloads.insert(w.key(), std::sync::Arc::new(w));
                    }
                    Object::Node(n) => {
                        inv.nodes.insert(n.name.clone(), n);
                    }
                    Object::Policy(p) => policies.push(*p),
                    Object::Host(_) => unreachable!(),
                }
            }
        }
        Engine::build(inv, policies, 0)
    }

    /// The address of `CLUSTER:shop/NAME` in [`model`].
    fn ip(key: &str) -> std::net::IpAddr {
        let (c, name) = key.split_once(":shop/").unwrap();
        let net = if c == "east" { "10.1" } else { "10.2" };
        let host = match name {
            "web" => "0.1",
            "db" => "0.2",
            _ => "0.9",
        };
        format!("{net}.{host}").parse().unwrap()
    }

    fn allowed(e: &Engine, from: &str, to: &str) -> bool {
        let f = Flow {
            src: ip(from),
            dst: ip(to),
            protocol: crate::Protocol::Tcp,
            port: 5432,
        };
        e.evaluate(&f).allowed
    }

    const DB_FROM_WEB: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
";

    #[test]
    fn names_are_qualified_and_labels_forced() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns, labels: \
                   {cellwall.io/cluster: east}}\nspec: {nodeName: n1}\n";
        let o = parse_file("x", pod).unwrap().objects.remove(0).object;
        let Object::Pod(w) = qualify("west", o) else {
            panic!()
        };
        assert_eq!(w.key().to_string(), "west:ns/p");
        assert_eq!(w.node.as_deref(), Some("west:n1"));
        assert_eq!(
            w.labels[CLUSTER_LABEL], "west",
            "a pod cannot claim a cluster"
        );
        assert_eq!(split("west:n1"), Some(("west", "n1")));
        let l = default_namespace_labels("west:ns");
        assert_eq!(l[NAMESPACE_NAME_LABEL], "ns");
        assert_eq!(l[CLUSTER_LABEL], "west");
    }

    #[test]
    fn a_namespaced_policy_stays_in_its_cluster() {
        let e = model(DB_FROM_WEB, "");
        assert!(allowed(&e, "east:shop/web", "east:shop/db"));
        // The same names in another cluster are not the policy's peers.
        assert!(!allowed(&e, "west:shop/web", "east:shop/db"));
        // Nor its subjects: west's db is not isolated by east's policy.
        assert!(allowed(&e, "east:shop/web", "west:shop/db"));
    }

    #[test]
    fn selectors_and_entity_cluster_are_confined() {
        // East allows its db from every namespace's web, and from its whole cluster on 9000;
        // west's pod claims east's label: it gains nothing.
        let east = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]}]
";
        let west = "
apiVersion: v1
kind: Pod
metadata: {name: liar, namespace: shop, labels: {app: web, cellwall.io/cluster: east}}
spec: {nodeName: n1}
status: {podIP: 10.2.0.9}
";
        let e = model(east, west);
        assert!(allowed(&e, "east:shop/web", "east:shop/db"));
        assert!(!allowed(&e, "west:shop/web", "east:shop/db"));
        assert!(!allowed(&e, "west:shop/liar", "east:shop/db"));
    }

    #[test]
    fn a_selector_naming_another_cluster_selects_nothing() {
        let west = "
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: deny-east}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {cellwall.io/cluster: east}}}
  ingress: [{action: Deny, from: [{namespaces: {}}]}]
";
        let e = model("", west);
        let p = e
            .policies()
            .find(|p| p.id.name == "west:deny-east")
            .unwrap();
        assert!(p.subject.pods.match_expressions[0].key == CLUSTER_LABEL);
        // West's admin tier cannot deny traffic to east's pods.
        assert!(allowed(&e, "east:shop/web", "east:shop/db"));
    }

    #[test]
    fn the_loader_refuses_the_separator() {
        let err = parse_file(
            "f",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"east:shop\"}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("metadata.name") && err.contains("cluster-qualified"),
            "{err}"
        );
        assert!(
            valid_cluster_name("east-1")
                && !valid_cluster_name("East")
                && !valid_cluster_name("a:b")
        );
    }
}

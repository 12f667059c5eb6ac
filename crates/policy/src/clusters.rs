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
//! is the qualified one, `entity: cluster` means that cluster's pods and nodes, and `entity:
//! world` also the other clusters' (outside this cluster, as in Kubernetes). Policies
//! written through REST or files are not qualified: they select across clusters with the
//! label (`cellwall.io/cluster: east`). CIDR peers stay addresses: clusters must not share
//! pod or node addresses (as Cilium's cluster mesh requires), or the ipcache cannot tell
//! them apart.

use crate::labels::{LabelSelector, Operator, Requirement};
pub use crate::model::{cluster_of, default_namespace_labels, split, CLUSTER_LABEL, SEPARATOR};
use crate::model::{
    Entity, HostDecl, Namespace, NamespaceMatch, Node, Peer, Policy, Subject, Workload,
};
use crate::Labels;

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

/// The name without its `CLUSTER:` prefix, or the whole name when it has none; none when the
/// prefix is no valid cluster name. Callers then check the rest by their own rules (node
/// names, namespaces, token patterns).
pub fn without_valid_prefix(name: &str) -> Option<&str> {
    match split(name) {
        Some((c, rest)) => valid_cluster_name(c).then_some(rest),
        None => Some(name),
    }
}

/// `[NAME=]CONTEXT` arguments (the manager's `--kube-context`, `analyze --context`) as
/// (cluster name, context): one context stays unnamed unless `NAME=` is given; of several,
/// each is named (`NAME=`, else the context's own name). Check the names with
/// [`check_names`].
pub fn named_contexts(args: &[String]) -> Vec<(Option<String>, String)> {
    let several = args.len() > 1;
    args.iter()
        .map(|a| match a.split_once('=') {
            Some((name, ctx)) => (Some(name.to_string()), ctx.to_string()),
            None => (several.then(|| a.clone()), a.clone()),
        })
        .collect()
}

/// Several clusters' names: each named, each a valid cluster name, none twice (their objects
/// would collide, and a relist of one would delete the other's).
pub fn check_names<'a>(names: impl IntoIterator<Item = Option<&'a str>>) -> Result<(), String> {
    let names: Vec<Option<&str>> = names.into_iter().collect();
    let mut seen = std::collections::BTreeSet::new();
    for n in &names {
        match n {
            None if names.len() > 1 => {
                return Err(format!(
                    "watching {} clusters: name each (NAME=CONTEXT)",
                    names.len()
                ))
            }
            None => {}
            Some(c) if !valid_cluster_name(c) => {
                return Err(format!(
                    "cluster name {c:?}: expected 1-63 characters of a-z, 0-9 and '-' (it \
                     becomes a label value and a name prefix; give one as NAME=CONTEXT)"
                ))
            }
            Some(c) if !seen.insert(*c) => return Err(format!("cluster name {c:?} given twice")),
            Some(_) => {}
        }
    }
    Ok(())
}

/// `CLUSTER:NAME`.
pub fn qualified(cluster: &str, name: &str) -> String {
    format!("{cluster}{SEPARATOR}{name}")
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

/// `n`, of cluster `cluster`, as the model holds it beside other clusters' objects (the
/// whole object: `crate::load::Object::qualified`).
pub fn qualify_namespace(cluster: &str, n: &mut Namespace) {
    n.name = qualified(cluster, &n.name);
    mark(cluster, &mut n.labels);
}

pub fn qualify_workload(cluster: &str, w: &mut Workload) {
    w.namespace = qualified(cluster, &w.namespace);
    w.node = w.node.as_deref().map(|n| qualified(cluster, n));
    mark(cluster, &mut w.labels);
}

pub fn qualify_node(cluster: &str, n: &mut Node) {
    n.name = qualified(cluster, &n.name);
    mark(cluster, &mut n.labels);
}

pub fn qualify_host(cluster: &str, h: &mut HostDecl) {
    h.namespace = qualified(cluster, &h.namespace);
    h.node = qualified(cluster, &h.node);
    mark(cluster, &mut h.labels);
}

/// The cluster's label, over whatever the object said.
fn mark(cluster: &str, labels: &mut Labels) {
    labels.insert(CLUSTER_LABEL.to_string(), cluster.to_string());
}

/// A cluster's policy, confined to that cluster.
pub fn qualify_policy(cluster: &str, mut p: Policy) -> Policy {
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
        // Outside this cluster: outside every cluster and host the manager knows (what the
        // engine calls world), and also the other clusters' (and declared hosts') pods and
        // nodes, which are in the manager's inventory but not in this cluster.
        Peer::Entity(Entity::World) => vec![
            Peer::Entity(Entity::World),
            Peer::Pods {
                namespaces: NamespaceMatch::Selector(LabelSelector::everything()),
                pods: outside(cluster),
            },
            Peer::Nodes(outside(cluster)),
        ],
        // Addresses, names and the subject's own node are not a cluster's to confine.
        other => vec![other],
    }
}

/// Everything not labelled as this cluster's (`NotIn` matches objects without the label).
fn outside(cluster: &str) -> LabelSelector {
    LabelSelector {
        match_labels: Default::default(),
        match_expressions: vec![Requirement {
            key: CLUSTER_LABEL.to_string(),
            operator: Operator::NotIn,
            values: [cluster.to_string()].into_iter().collect(),
        }],
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

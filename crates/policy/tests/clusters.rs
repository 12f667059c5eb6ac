//! Several clusters in one model (`cellwall_policy::clusters`): the same names in two
//! clusters stay apart, a cluster's policies select only its own pods and nodes, and nothing
//! but the manager can write a qualified name. The attacks: a pod labelled as another
//! cluster's, and one cluster's admin tier aimed at the other's pods.

use cellwall_policy::clusters::*;
use cellwall_policy::engine::{Engine, Flow};
use cellwall_policy::load::parse_file;
use cellwall_policy::model::{Inventory, NAMESPACE_NAME_LABEL};
use cellwall_policy::Object;

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
            match o.object.qualified(c) {
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
        protocol: cellwall_policy::Protocol::Tcp,
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
    let Object::Pod(w) = o.qualified("west") else {
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
        valid_cluster_name("east-1") && !valid_cluster_name("East") && !valid_cluster_name("a:b")
    );
}

/// `entity: world` in a cluster's policy is everything outside that cluster, the other
/// clusters included: east's admin tier cutting its web off from the world cuts it off from
/// west too, not from east's own db.
#[test]
fn world_is_outside_the_cluster() {
    let east = "
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: web-no-world}
spec:
  tier: admin
  priority: 1
  podSelector: {matchLabels: {app: web}}
  egress: [{name: no-world, action: Deny, to: [{entity: world}]}]
";
    let e = model(east, "");
    assert!(allowed(&e, "east:shop/web", "east:shop/db"));
    assert!(!allowed(&e, "east:shop/web", "west:shop/db"));
    // West's web is not east's policy's subject.
    assert!(allowed(&e, "west:shop/web", "east:shop/db"));
}

/// `[NAME=]CONTEXT` lists as the manager and `analyze` read them, and the names they check.
#[test]
fn context_arguments_and_their_names() {
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let one = named_contexts(&args(&["prod"]));
    assert_eq!(one, [(None, "prod".to_string())]);
    let named = named_contexts(&args(&["east=prod-east", "west"]));
    assert_eq!(
        named,
        [
            (Some("east".to_string()), "prod-east".to_string()),
            (Some("west".to_string()), "west".to_string())
        ]
    );
    assert!(check_names(named.iter().map(|(n, _)| n.as_deref())).is_ok());
    assert!(check_names([None]).is_ok());
    assert!(check_names([Some("a"), None])
        .unwrap_err()
        .contains("name each"));
    assert!(check_names([Some("a"), Some("a")])
        .unwrap_err()
        .contains("twice"));
    assert!(check_names([Some("arn:aws:x")])
        .unwrap_err()
        .contains("NAME=CONTEXT"));
    assert_eq!(without_valid_prefix("east:n1"), Some("n1"));
    assert_eq!(without_valid_prefix("n1"), Some("n1"));
    assert_eq!(without_valid_prefix("East:n1"), None);
    assert_eq!(without_valid_prefix(":n1"), None);
}

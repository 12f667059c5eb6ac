//! Least privilege on labelling conventions nobody here chose: a shop's call graph under five
//! conventions, each proposed with `--group-by auto`, rendered in every format, parsed back and
//! checked exhaustively: every observed (client, server, port) connects, every unobserved
//! (workload, served port) pair is blocked — replicas of one service included.

use super::*;
use crate::engine::{Engine, Flow};
use crate::load::{parse_file, Object};
use crate::model::{Inventory, Policy, Protocol, WorkloadKey};
use std::collections::BTreeSet;
use std::fmt::Write;

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// Pods named `<svc>-<hash>-<n>`, with `pod-template-hash`.
    Deployment,
    /// `<svc>-<n>`, with the StatefulSet's per-pod labels.
    StatefulSet,
    /// Named `<svc>-<n>`, no controller (VMs, hand-made pods).
    Bare,
}

struct Svc {
    ns: &'static str,
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    kind: Kind,
    /// ownerReferences on the pods.
    owned: bool,
    ports: Vec<(u16, Protocol)>,
}

/// (client service, server service, port, protocol).
type Call = (&'static str, &'static str, u16, Protocol);

const TCP: Protocol = Protocol::Tcp;

fn shop_calls() -> Vec<Call> {
    vec![
        ("frontend", "cart", 7070, TCP),
        ("frontend", "catalog", 3550, TCP),
        ("frontend", "checkout", 5050, TCP),
        ("checkout", "cart", 7070, TCP),
        ("checkout", "payment", 50051, TCP),
        ("checkout", "shipping", 50051, TCP),
        ("checkout", "email", 8080, TCP),
        ("cart", "redis", 6379, TCP),
    ]
}

fn shop_ports(svc: &str) -> Vec<(u16, Protocol)> {
    let p = match svc {
        "frontend" => 8080,
        "cart" => 7070,
        "catalog" => 3550,
        "checkout" => 5050,
        "payment" | "shipping" => 50051,
        "email" => 8080,
        "redis" => 6379,
        _ => 9000,
    };
    vec![(p, TCP)]
}

const SHOP: [&str; 8] = [
    "frontend", "cart", "catalog", "checkout", "payment", "shipping", "email", "redis",
];

/// The cluster DNS, which every service asks on 53 over UDP and TCP.
fn dns() -> Svc {
    Svc {
        ns: "kube-system",
        name: "coredns",
        labels: vec![("k8s-app", "kube-dns".into())],
        kind: Kind::Deployment,
        owned: true,
        ports: vec![(53, Protocol::Udp), (53, TCP)],
    }
}

fn with_dns(mut calls: Vec<Call>, svcs: &[Svc]) -> Vec<Call> {
    for s in svcs.iter().filter(|s| s.name != "coredns") {
        calls.push((s.name, "coredns", 53, Protocol::Udp));
        calls.push((s.name, "coredns", 53, TCP));
    }
    calls
}

fn shop(
    labels: impl Fn(&'static str) -> Vec<(&'static str, String)>,
    kind: Kind,
    owned: bool,
) -> Vec<Svc> {
    let mut v: Vec<Svc> = SHOP
        .iter()
        .map(|n| Svc {
            ns: "shop",
            name: n,
            labels: labels(n),
            kind,
            owned,
            ports: shop_ports(n),
        })
        .collect();
    v.push(dns());
    v
}

/// Pods of every service (two replicas, three for StatefulSets) as manifests; returns the
/// YAML and each pod's (namespace/name, service).
fn manifests(svcs: &[Svc]) -> (String, Vec<(String, &'static str)>) {
    let mut y = String::new();
    let mut pods = Vec::new();
    for (si, s) in svcs.iter().enumerate() {
        let n = if s.kind == Kind::StatefulSet { 3 } else { 2 };
        for i in 0..n {
            let mut labels: Vec<(String, String)> = s
                .labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            let hash = format!("{:x}{:04x}", 7 + si, 0xbeef + si);
            let (name, owner) = match s.kind {
                Kind::Deployment => {
                    labels.push(("pod-template-hash".into(), hash.clone()));
                    (
                        format!("{}-{hash}-{:05x}", s.name, 0x1a2b3 + i),
                        ("ReplicaSet", format!("{}-{hash}", s.name)),
                    )
                }
                Kind::StatefulSet => {
                    let pod = format!("{}-{i}", s.name);
                    labels.push(("statefulset.kubernetes.io/pod-name".into(), pod.clone()));
                    labels.push((
                        "controller-revision-hash".into(),
                        format!("{}-{hash}", s.name),
                    ));
                    (pod, ("StatefulSet", s.name.to_string()))
                }
                Kind::Bare => (format!("{}-{i}", s.name), ("", String::new())),
            };
            let lab: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k:?}: {v:?}"))
                .collect();
            let refs = if s.owned && !owner.0.is_empty() {
                format!(
                    ", ownerReferences: [{{apiVersion: apps/v1, kind: {}, name: {:?}, controller: true, uid: u{si}}}]",
                    owner.0, owner.1
                )
            } else {
                String::new()
            };
            let ports: Vec<String> = s
                .ports
                .iter()
                .map(|(p, pr)| format!("{{containerPort: {p}, protocol: {}}}", pr.as_str()))
                .collect();
            writeln!(
                y,
                "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: {}, name: {name}, labels: {{{}}}{refs}}}\n\
                 spec: {{containers: [{{name: c, ports: [{}]}}]}}\nstatus: {{podIP: 10.{}.{}.{}}}",
                s.ns,
                lab.join(", "),
                ports.join(", "),
                1 + si / 200,
                si % 200,
                i + 1
            )
            .unwrap();
            pods.push((format!("{}/{name}", s.ns), s.name));
        }
    }
    (y, pods)
}

/// History: every replica of each client called every replica of its server, a few times.
fn history(inv: &Inventory, pods: &[(String, &'static str)], calls: &[Call]) -> Vec<HistFlow> {
    let ep = |k: &str| {
        let w = &inv.workloads[&WorkloadKey::parse(k).unwrap()];
        Endpoint::Workload {
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            labels: Labels::clone(&w.labels),
        }
    };
    let mut flows = Vec::new();
    for (c, s, port, protocol) in calls {
        for (cp, _) in pods.iter().filter(|(_, svc)| svc == c) {
            for (sp, _) in pods.iter().filter(|(_, svc)| svc == s) {
                flows.push(HistFlow {
                    src: ep(cp),
                    dst: ep(sp),
                    protocol: *protocol,
                    port: *port,
                    observed: Observed::Allowed,
                    rule: None,
                    connections: 5,
                    first_ns: 1_000_000_000,
                    last_ns: 9_000_000_000,
                });
            }
        }
    }
    flows
}

/// Proposes on the scenario, then checks every (pod, pod, served port) in every format.
/// Returns the proposal for scenario-specific checks.
fn least_privilege(svcs: &[Svc], calls: &[Call]) -> Proposal {
    let calls = with_dns(calls.to_vec(), svcs);
    let (yaml, pods) = manifests(svcs);
    let (inv, _) = crate::load::into_model(
        parse_file("shop.yaml", &yaml)
            .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
            .objects
            .into_iter()
            .map(|o| o.object),
    );
    let flows = history(&inv, &pods, &calls);
    let current = Engine::build(inv.clone(), Vec::<Policy>::new(), 0);
    let p = propose(&flows, &current, &ProposeOptions::default());
    assert!(p.excluded.is_empty(), "{:#?}", p.excluded);
    let want: BTreeSet<(&str, &str, u16, Protocol)> = calls.iter().copied().collect();
    let svc_of = |k: &str| pods.iter().find(|(p, _)| p == k).unwrap().1;
    for format in [
        ProposalFormat::Cellwall,
        ProposalFormat::NetworkPolicy,
        ProposalFormat::ClusterNetworkPolicy,
    ] {
        let text = render_yaml(&p, format);
        let policies: Vec<Policy> = parse_file("p.yaml", &text)
            .unwrap_or_else(|e| panic!("{e}\n{text}"))
            .objects
            .into_iter()
            .map(|o| match o.object {
                Object::Policy(p) => *p,
                other => panic!("{other:?}"),
            })
            .collect();
        let e = Engine::build(inv.clone(), policies, 0);
        let (mut observed, mut unobserved, mut wrong) = (0, 0, Vec::new());
        for src in inv.workloads.values() {
            for dst in inv.workloads.values() {
                for cp in &dst.ports {
                    let key = (
                        svc_of(&src.key().to_string()),
                        svc_of(&dst.key().to_string()),
                        cp.port,
                        cp.protocol,
                    );
                    let expect = want.contains(&key);
                    if expect {
                        observed += 1
                    } else {
                        unobserved += 1
                    }
                    let got = e
                        .evaluate(&Flow {
                            src: src.ips[0],
                            dst: dst.ips[0],
                            protocol: cp.protocol,
                            port: cp.port,
                        })
                        .allowed;
                    if got != expect {
                        wrong.push(format!(
                            "{} -> {} {}/{}: {got}",
                            src.key(),
                            dst.key(),
                            cp.protocol,
                            cp.port
                        ));
                    }
                }
            }
        }
        assert!(observed > 0 && unobserved > 0);
        assert!(
            wrong.is_empty(),
            "{format:?}: {} of {observed} observed + {unobserved} unobserved pairs decided wrongly:\n{}\n{text}",
            wrong.len(),
            wrong.join("\n")
        );
    }
    // Deterministic.
    assert_eq!(p, propose(&flows, &current, &ProposeOptions::default()));
    p
}

fn evidence_of<'p>(p: &'p Proposal, member: &str) -> &'p AppGroup {
    p.groups
        .iter()
        .find(|g| g.members.iter().any(|m| m.starts_with(member)))
        .unwrap_or_else(|| panic!("{member}: {:#?}", p.groups))
}

#[test]
fn a_shop_sharing_one_coarse_app_label_and_named_by_name() {
    let svcs = shop(
        |n| vec![("app", "shop".into()), ("name", n.into())],
        Kind::Deployment,
        false,
    );
    let p = least_privilege(&svcs, &shop_calls());
    let cart = evidence_of(&p, "shop/cart-");
    // No ownerReferences, but Kubernetes' pod names say Deployment.
    assert_eq!(cart.evidence, "owner Deployment/cart");
    assert_eq!(
        cart.selector,
        Some([("name".to_string(), "cart".to_string())].into())
    );
    // Overridden to the coarse label: one policy for the whole shop, as asked.
    let (yaml, pods) = manifests(&svcs);
    let (inv, _) = crate::load::into_model(
        parse_file("s.yaml", &yaml)
            .unwrap()
            .objects
            .into_iter()
            .map(|o| o.object),
    );
    let flows = history(&inv, &pods, &shop_calls());
    let coarse = propose(
        &flows,
        &Engine::build(inv, Vec::<Policy>::new(), 0),
        &ProposeOptions {
            group_by: "label:app".parse().unwrap(),
            ..Default::default()
        },
    );
    assert_eq!(
        coarse
            .policies
            .iter()
            .filter(|p| p.namespace == "shop")
            .count(),
        1
    );
}

#[test]
fn a_shop_labelled_the_recommended_kubernetes_way_with_owners() {
    let svcs = shop(
        |n| {
            vec![
                ("app.kubernetes.io/name", n.into()),
                ("app.kubernetes.io/instance", "shop-prod".into()),
                ("app.kubernetes.io/part-of", "shop".into()),
            ]
        },
        Kind::Deployment,
        true,
    );
    let p = least_privilege(&svcs, &shop_calls());
    let g = evidence_of(&p, "shop/checkout-");
    assert_eq!(g.evidence, "owner Deployment/checkout");
    assert_eq!(
        g.selector,
        Some([("app.kubernetes.io/name".to_string(), "checkout".to_string())].into())
    );
    // The DNS dependency is proposed like any edge, selected by the DNS pods' labels.
    let fe = p.policies.iter().find(|p| p.name == "cw-frontend").unwrap();
    assert!(fe.egress.iter().any(|r| r.port == 53
        && r.protocol == Protocol::Udp
        && r.peer
            == ProposedPeer::Pods {
                namespace: "kube-system".into(),
                labels: [("k8s-app".to_string(), "kube-dns".to_string())].into()
            }));
}

#[test]
fn services_told_apart_only_by_an_unknown_label_are_split_by_behaviour() {
    // Hand-made pods, no controller: the only well-known label is the coarse one.
    let svcs = shop(
        |n| vec![("app", "shop".into()), ("svc", n.into())],
        Kind::Bare,
        false,
    );
    let p = least_privilege(&svcs, &shop_calls());
    let cart = evidence_of(&p, "shop/cart-");
    assert_eq!(cart.evidence, "labels app=shop");
    assert!(
        p.policies.iter().any(|p| p.name == "cw-cart"),
        "{:?}",
        p.policies
    );
    assert!(
        cart.split
            .as_deref()
            .unwrap_or("")
            .contains("split from app=shop"),
        "{cart:?}"
    );
}

#[test]
fn a_statefulset_store_keeps_its_replicas_together() {
    let mut svcs = shop(
        |n| vec![("app", "shop".into()), ("name", n.into())],
        Kind::Deployment,
        true,
    );
    let redis = svcs.iter_mut().find(|s| s.name == "redis").unwrap();
    redis.kind = Kind::StatefulSet;
    let p = least_privilege(&svcs, &shop_calls());
    let g = evidence_of(&p, "shop/redis-");
    assert_eq!(g.evidence, "owner StatefulSet/redis");
    assert_eq!(g.members.len(), 3);
}

#[test]
fn vms_labelled_only_by_a_cmdb_import() {
    let vm = |name, role: &str, port| Svc {
        ns: "dc",
        name,
        labels: vec![
            ("cmdb.import.cellwall.io/role", role.into()),
            ("cmdb.import.cellwall.io/env", "prod".into()),
            ("cmdb.import.cellwall.io/site", "fra".into()),
        ],
        kind: Kind::Bare,
        owned: false,
        ports: vec![(port, TCP)],
    };
    let svcs = vec![
        vm("web", "web", 443),
        vm("api", "app", 8080),
        vm("pg", "db", 5432),
        vm("batch", "batch", 9000),
        dns(),
    ];
    let calls = vec![
        ("web", "api", 8080, TCP),
        ("api", "pg", 5432, TCP),
        ("batch", "pg", 5432, TCP),
    ];
    let p = least_privilege(&svcs, &calls);
    let g = evidence_of(&p, "dc/pg-");
    assert_eq!(
        g.evidence,
        "labels cmdb.import.cellwall.io/env=prod,cmdb.import.cellwall.io/role=db"
    );
    assert_eq!(
        g.selector,
        Some([("cmdb.import.cellwall.io/role".to_string(), "db".to_string())].into())
    );
    // Named by the role, not the environment every VM shares.
    assert!(
        p.policies.iter().any(|p| p.name == "cw-db"),
        "{:?}",
        p.policies
    );
}

#[test]
fn a_workload_no_label_set_separates_is_said_and_not_proposed() {
    let yaml = "
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: x, labels: {team: t}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: y, labels: {team: t}}
status: {podIP: 10.0.0.2}
";
    let (inv, _) = super::test_support::inv_and_policies(yaml);
    let e = Engine::build(inv.clone(), Vec::<Policy>::new(), 0);
    let flows = vec![super::test_support::flow(
        super::test_support::ep(&inv, "a/x"),
        super::test_support::ep(&inv, "a/y"),
        80,
        Observed::Allowed,
        3,
    )];
    let p = propose(&flows, &e, &ProposeOptions::default());
    assert!(p.policies.is_empty(), "{:#?}", p.policies);
    assert!(
        p.excluded[0].reason.contains("no label set selects"),
        "{:?}",
        p.excluded
    );
    assert!(p.groups.iter().all(|g| g.note.is_some()));
    assert!(render_yaml(&p, ProposalFormat::Cellwall).contains("no label set selects them alone"));
}

#[test]
fn policy_names_stay_unique_when_controllers_share_a_name() {
    // StatefulSet db, Deployment db and Deployment db-2 in one namespace.
    let yaml = "
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db-0, labels: {app: store, statefulset.kubernetes.io/pod-name: db-0}, ownerReferences: [{kind: StatefulSet, name: db, controller: true}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db-5c9-x1, labels: {app: cache, pod-template-hash: 5c9}}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: a, name: db-2-7f4-y1, labels: {app: queue, pod-template-hash: 7f4}}
status: {podIP: 10.0.0.3}
";
    let (inv, _) = super::test_support::inv_and_policies(yaml);
    let e = Engine::build(inv, Vec::<Policy>::new(), 0);
    let p = propose(&[], &e, &ProposeOptions::default());
    let names: BTreeSet<&str> = p.policies.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    let text = render_yaml(&p, ProposalFormat::Cellwall);
    parse_file("p.yaml", &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
}

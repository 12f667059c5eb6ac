//! Hand-written semantics tests: precedence between families, Cellwall extensions (deny, tiers,
//! audit, expiry, entities), and the explanation. Manifests are inline YAML, as users write them.

use cellwall_policy::*;
use std::net::IpAddr;

const INVENTORY: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Namespace
metadata: {name: dev, labels: {env: dev}}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {kubernetes.io/os: linux}}
status: {addresses: [{type: InternalIP, address: 10.250.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{ports: [{name: pg, containerPort: 5432}, {name: dns, containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: tool, namespace: dev, labels: {app: tool}}
spec: {nodeName: n1, containers: [{ports: [{containerPort: 22}]}]}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: agent, namespace: dev, labels: {app: agent}}
spec: {nodeName: n1, hostNetwork: true}
status: {podIP: 10.250.0.1}
"#;

const WEB: &str = "10.0.0.1";
const DB: &str = "10.0.0.2";
const TOOL: &str = "10.0.0.3";
const NODE: &str = "10.250.0.1";
const OUTSIDE: &str = "192.0.2.10";

fn engine(policies: &str, now: i64) -> Engine {
    let text = format!("{INVENTORY}\n---\n{policies}");
    let parsed = parse_file("test.yaml", &text).unwrap_or_else(|e| panic!("{e}"));
    let (inv, pols) =
        cellwall_policy::load::into_model(parsed.objects.into_iter().map(|o| o.object));
    Engine::build(inv, pols, now)
}

fn flow(src: &str, dst: &str, proto: Protocol, port: u16) -> Flow {
    Flow {
        src: src.parse::<IpAddr>().unwrap(),
        dst: dst.parse().unwrap(),
        protocol: proto,
        port,
    }
}

fn allowed(e: &Engine, src: &str, dst: &str, port: u16) -> bool {
    e.evaluate(&flow(src, dst, Protocol::Tcp, port)).allowed
}

fn deciding_rule(e: &Engine, src: &str, dst: &str, port: u16) -> String {
    let d = e.evaluate(&flow(src, dst, Protocol::Tcp, port));
    e.rule(d.deciding().1.rule)
        .map(|r| r.describe())
        .unwrap_or_else(|| "-".into())
}

const DB_ONLY_FROM_WEB: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: pg}]
"#;

#[test]
fn no_policy_means_allow() {
    let e = engine("", 0);
    assert!(allowed(&e, TOOL, DB, 5432));
    let d = e.evaluate(&flow(TOOL, DB, Protocol::Tcp, 5432));
    assert_eq!(d.ingress.reason, Reason::Default);
}

#[test]
fn network_policy_isolates_and_named_port_resolves_on_destination() {
    let e = engine(DB_ONLY_FROM_WEB, 0);
    assert!(allowed(&e, WEB, DB, 5432));
    assert!(!allowed(&e, WEB, DB, 5433), "only the named port");
    assert!(!allowed(&e, TOOL, DB, 5432), "other pods are isolated out");
    assert!(allowed(&e, DB, WEB, 8080), "egress is not isolated");
    let d = e.evaluate(&flow(TOOL, DB, Protocol::Tcp, 5432));
    assert_eq!(d.ingress.reason, Reason::Isolated);
    assert!(deciding_rule(&e, TOOL, DB, 5432).contains("isolation"));
}

#[test]
fn admin_deny_beats_network_policy_allow_and_pass_defers() {
    let anp = r#"
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: guard}
spec:
  priority: 10
  subject: {namespaces: {matchLabels: {env: prod}}}
  ingress:
  - name: pass-web
    action: Pass
    from: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}}]
  - name: no-dev
    action: Deny
    from: [{namespaces: {matchLabels: {env: dev}}}]
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: BaselineAdminNetworkPolicy
metadata: {name: default}
spec:
  subject: {namespaces: {}}
  ingress:
  - name: baseline-deny-all
    action: Deny
    from: [{namespaces: {}}]
"#;
    let e = engine(&format!("{anp}\n---\n{DB_ONLY_FROM_WEB}"), 0);
    assert!(!allowed(&e, TOOL, DB, 5432), "ANP deny");
    assert!(deciding_rule(&e, TOOL, DB, 5432).contains("\"no-dev\""));
    assert!(
        allowed(&e, WEB, DB, 5432),
        "Pass hands over to the NetworkPolicy, which allows"
    );
    assert!(
        !allowed(&e, WEB, DB, 1),
        "NetworkPolicy isolation denies other ports"
    );
    // web -> web is Passed, no NetworkPolicy selects web, so the baseline decides.
    assert!(!allowed(&e, WEB, WEB, 8080));
    assert!(deciding_rule(&e, WEB, WEB, 8080).contains("baseline-deny-all"));
}

#[test]
fn anp_priority_orders_policies() {
    let anp = |name: &str, prio: u32, action: &str| {
        format!(
            "apiVersion: policy.networking.k8s.io/v1alpha1\nkind: AdminNetworkPolicy\nmetadata: {{name: {name}}}\nspec:\n  priority: {prio}\n  subject: {{namespaces: {{}}}}\n  ingress:\n  - {{name: r, action: {action}, from: [{{namespaces: {{}}}}]}}\n"
        )
    };
    let e = engine(
        &format!("{}---\n{}", anp("a", 5, "Deny"), anp("b", 1, "Allow")),
        0,
    );
    assert!(
        allowed(&e, TOOL, DB, 5432),
        "priority 1 runs before priority 5"
    );
    let e = engine(
        &format!("{}---\n{}", anp("a", 0, "Deny"), anp("b", 1, "Allow")),
        0,
    );
    assert!(!allowed(&e, TOOL, DB, 5432));
}

#[test]
fn cellwall_deny_wins_within_application_tier() {
    let p = r#"
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: no-web-to-db-admin-port, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - action: Deny
    from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 5432}]
"#;
    let e = engine(&format!("{p}\n---\n{DB_ONLY_FROM_WEB}"), 0);
    assert!(
        !allowed(&e, WEB, DB, 5432),
        "explicit deny beats the NetworkPolicy allow"
    );
    assert!(deciding_rule(&e, WEB, DB, 5432).contains("Policy/shop/no-web-to-db-admin-port"));
}

#[test]
fn audit_mode_never_denies_but_reports() {
    let p = r#"
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: lockdown}
spec:
  mode: audit
  tier: admin
  namespaceSelector: {matchLabels: {env: prod}}
  ingress:
  - {name: deny-dev, action: Deny, from: [{namespaceSelector: {matchLabels: {env: dev}}}]}
"#;
    let e = engine(p, 0);
    let d = e.evaluate(&flow(TOOL, DB, Protocol::Tcp, 5432));
    assert!(d.allowed, "audit mode drops nothing");
    let a = d.audit.expect("audit policy applies");
    assert!(!a.allowed, "but it would have denied");
    assert_eq!(
        e.rule(a.ingress.rule).unwrap().name.as_deref(),
        Some("deny-dev")
    );
    assert!(
        e.evaluate(&flow(WEB, DB, Protocol::Tcp, 5432))
            .audit
            .unwrap()
            .allowed
    );
    assert!(
        e.evaluate(&flow(DB, TOOL, Protocol::Tcp, 22))
            .audit
            .is_none(),
        "nothing audits tool's ingress"
    );
}

#[test]
fn expiry_retires_policies_and_rules() {
    let p = r#"
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: temp-grant, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - {from: [{podSelector: {matchLabels: {app: web}}}]}
  - {name: vendor, from: [{namespaceSelector: {matchLabels: {env: dev}}}], expiresAt: "2026-12-01T00:00:00Z"}
"#;
    let before = de::parse_rfc3339("2026-11-30T23:59:59Z").unwrap();
    let after = de::parse_rfc3339("2026-12-01T00:00:00Z").unwrap();
    let mut e = engine(p, before);
    assert!(allowed(&e, TOOL, DB, 5432));
    assert_eq!(e.next_expiry(), Some(after));
    e.take_changes();
    e.set_now(after);
    assert!(!allowed(&e, TOOL, DB, 5432), "the grant ended on time");
    assert!(allowed(&e, WEB, DB, 5432), "the rest of the policy stays");
    let ch = e.take_changes();
    assert!(
        ch.policies.iter().any(|p| p.name == "temp-grant"),
        "expiry is reported as a change"
    );
}

#[test]
fn entities_and_cidrs() {
    let p = r#"
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: web-egress, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  egress:
  - {name: to-host, to: [{entity: host}]}
  - {name: to-internet, to: [{cidr: 0.0.0.0/0, except: [10.0.0.0/8]}], ports: [{port: 443}]}
  - {name: to-db, to: [{podSelector: {matchLabels: {app: db}}}]}
"#;
    let e = engine(p, 0);
    assert!(
        allowed(&e, WEB, NODE, 10250),
        "host entity: the pod's own node"
    );
    assert!(allowed(&e, WEB, OUTSIDE, 443));
    assert!(!allowed(&e, WEB, OUTSIDE, 80));
    assert!(
        !allowed(&e, WEB, "10.99.0.1", 443),
        "except carves out 10/8"
    );
    assert!(allowed(&e, WEB, DB, 5432));
    assert!(!allowed(&e, WEB, TOOL, 22));
}

#[test]
fn host_network_pods_are_not_subjects() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: dev}
spec: {podSelector: {}, policyTypes: [Ingress, Egress]}
"#;
    let e = engine(p, 0);
    assert!(!allowed(&e, WEB, TOOL, 22));
    assert!(
        allowed(&e, WEB, NODE, 22),
        "the hostNetwork pod is the node: not isolated"
    );
    assert!(!allowed(&e, TOOL, WEB, 8080), "egress isolated too");
}

#[test]
fn udp_named_port_needs_matching_protocol() {
    let p = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-only, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{ports: [{port: dns, protocol: UDP}]}]
"#;
    let e = engine(p, 0);
    assert!(e.evaluate(&flow(WEB, DB, Protocol::Udp, 53)).allowed);
    assert!(!e.evaluate(&flow(WEB, DB, Protocol::Tcp, 53)).allowed);
}

#[test]
fn explanation_names_every_tier_and_rule() {
    let e = engine(DB_ONLY_FROM_WEB, 0);
    let ex = e.explain(&flow(TOOL, DB, Protocol::Tcp, 5432));
    assert!(!ex.decision.allowed);
    assert_eq!(
        ex.ingress.tiers.len(),
        2,
        "admin, then application decides: {:#?}",
        ex.ingress.tiers
    );
    let app = &ex.ingress.tiers[1];
    assert_eq!(app.outcome, "isolated: no rule allows");
    assert_eq!(app.policies[0].policy, "NetworkPolicy/shop/db-from-web");
    assert!(!app.policies[0].rules[0].matched);
    assert!(ex.deciding_rule.unwrap().contains("isolation"));
}

#[test]
fn relabel_is_incremental_and_changes_verdicts() {
    let mut e = engine(DB_ONLY_FROM_WEB, 0);
    assert!(!allowed(&e, TOOL, DB, 5432));
    e.take_changes();
    let mut tool = Workload::clone(&e.inventory().workloads[&WorkloadKey::new("dev", "tool")]);
    tool.namespace = "dev".into();
    tool.labels.insert("app".into(), "web".into());
    e.set_workload(tool);
    let ch = e.take_changes();
    assert_eq!(ch.workloads.len(), 1);
    assert!(ch.policies.is_empty());
    // Still denied: the NetworkPolicy peer is limited to the shop namespace.
    assert!(!allowed(&e, TOOL, DB, 5432));
    let mut ns = e.inventory().namespaces["dev"].clone();
    ns.labels.insert("team".into(), "x".into());
    e.set_namespace(ns);
    assert_eq!(
        e.take_changes().workloads.len(),
        2,
        "both pods of dev change identity"
    );
}

//! A node is a witness for itself, not an authority: attacks by a holder of one node's
//! certificate (forged messages from a hand-rolled gRPC client, against a real manager on
//! loopback sockets). Each test is one finding of the security review; each failed on the
//! manager before node restriction and passes now.

mod common;

use cellwall_proto::{Direction, FlowBatch, FlowRecord, Verdict};
use common::*;

/// prod: frontend and db on node n1 (db admits app=frontend on 5432), prometheus on n2 in
/// monitoring (db admits monitoring too), and a pod `lonely` bound to n1 without an address.
const SHOP: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: prod}
---
apiVersion: v1
kind: Namespace
metadata: {name: monitoring}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: frontend, labels: {app: frontend}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.20.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: db, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.20.0.2}
---
apiVersion: v1
kind: Pod
metadata: {namespace: prod, name: lonely, labels: {app: lonely}}
spec: {nodeName: n1, containers: [{name: c}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: monitoring, name: prometheus-0, labels: {app: prometheus}}
spec: {nodeName: n2, containers: [{name: c}]}
status: {podIP: 10.30.0.1}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: prod, name: db-ingress}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchLabels: {app: frontend}}
    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}
    ports: [{port: 5432}]
";

async fn shop(tag: &str) -> World {
    World::with(tag, SHOP, |_| {}).await
}

fn host(key: &str, ip: &str, labels: &[(&str, &str)]) -> LocalWorkload {
    LocalWorkload {
        key: key.into(),
        ips: vec![ip.into()],
        interface: "eth0".into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        host: true,
    }
}

/// Finding 1: an agent on `zz-evil` reporting, in host mode, `prod/evil-host` labelled
/// app=frontend was allowed into prod/db; claiming a namespace a policy admits worked the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_grant_itself_access() {
    let w = shop("atk-self").await;
    let mut evil = w.node("zz-evil").await;
    w.report(
        &mut evil,
        "zz-evil",
        vec![
            host("prod/evil-host", "10.66.0.1", &[("app", "frontend")]),
            host(
                "monitoring/prometheus-0",
                "10.66.0.2",
                &[("app", "prometheus")],
            ),
        ],
    )
    .await;
    // Neither made-up workload exists; prometheus keeps its node and address.
    let all = w.workloads().await;
    assert!(all.iter().all(|x| x["name"] != "evil-host"), "{all:?}");
    let prom = all.iter().find(|x| x["name"] == "prometheus-0").unwrap();
    assert_eq!(prom["node"], "n2");
    assert_eq!(prom["ips"], json!(["10.30.0.1"]));
    let (s, v) = w.explain("prod/evil-host", "prod/db").await;
    assert_eq!(s, 404, "{v}");
    // Refused, counted, visible in get nodes.
    let n = w.node_item("zz-evil").await;
    assert_eq!(n["refused"]["reports"], 2, "{n}");
    assert!(n["refused"]["last"]
        .as_str()
        .unwrap()
        .contains("no host is declared"));
    w.stop().await;
}

/// Finding 1 (labels): reported labels and names were not validated and were applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_labels_and_malformed_names_never_reach_the_model() {
    let w = shop("atk-labels").await;
    // A declared host of n9 whose agent sends labels of its own.
    let decl = "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {name: vm, namespace: hosts, labels: {role: web}}\nspec: {node: n9, addresses: [10.40.0.1]}\n";
    let (s, v) = w
        .rest("POST", "/v1/apply", Some(apply_body("h.yaml", decl)))
        .await;
    assert_eq!(s, 200, "{v}");
    let mut n9 = w.node("n9").await;
    let long = "v".repeat(5000);
    let hostile: Vec<(&str, &str)> = vec![
        ("app", "frontend"),
        ("BAD KEY!!", "x"),
        ("ok", long.as_str()),
        ("quarantine.cellwall.io/pod", "x"),
        ("cmdb.import.cellwall.io/owner", "x"),
        ("nl", "a\nb"),
        ("rtl", "\u{202e}txt"),
    ];
    let mut reports = vec![host("hosts/vm", "10.40.0.1", &hostile)];
    for bad in [
        "prod/BAD KEY!!",
        "prod/a\nb",
        "prod/\u{202e}db",
        "noslash",
        &format!("prod/{}", "x".repeat(300)),
    ] {
        reports.push(host(bad, "10.40.0.9", &[]));
    }
    w.report(&mut n9, "n9", reports).await;
    let vm = w
        .workloads()
        .await
        .into_iter()
        .find(|x| x["name"] == "vm")
        .unwrap();
    // The host's labels are its declaration's, nothing the agent sent.
    assert_eq!(vm["labels"], json!({"role": "web"}), "{vm}");
    assert_eq!(vm["ips"], json!(["10.40.0.1"]));
    let n = w.node_item("n9").await;
    assert_eq!(n["refused"]["reports"], 5, "{n}");
    w.stop().await;
}

/// Finding 2: a host entry with db's address made explain resolve prod/db to the attacker; a
/// pod bound to n1 without an address took the address another node reported.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cannot_take_over_addresses() {
    let w = shop("atk-addr").await;
    let decl = "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {name: evil, namespace: hosts}\nspec: {node: zz-evil, addresses: [10.0.0.0/8]}\n";
    let (s, _) = w
        .rest("POST", "/v1/apply", Some(apply_body("h.yaml", decl)))
        .await;
    assert_eq!(s, 200);
    let mut evil = w.node("zz-evil").await;
    // Its declared network covers db's address: still refused, db owns it.
    w.report(
        &mut evil,
        "zz-evil",
        vec![host("hosts/evil", "10.20.0.2", &[])],
    )
    .await;
    let (s, v) = w.explain("prod/frontend", "prod/db").await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["explanation"]["dst"]
            .as_str()
            .unwrap()
            .starts_with("prod/db "),
        "{v}"
    );
    assert!(
        v["explanation"]["decision"]["allowed"].as_bool().unwrap(),
        "{v}"
    );
    // n2 claims n1's address-less pod: refused; n1's own report stands.
    let mut n2 = w.node("n2").await;
    let mut lonely = host("prod/lonely", "10.20.0.7", &[]);
    lonely.host = false;
    w.report(&mut n2, "n2", vec![lonely.clone()]).await;
    let mut n1 = w.node("n1").await;
    lonely.ips = vec!["10.20.0.8".into()];
    w.report(&mut n1, "n1", vec![lonely]).await;
    let l = w
        .workloads()
        .await
        .into_iter()
        .find(|x| x["name"] == "lonely")
        .unwrap();
    assert_eq!(l["ips"], json!(["10.20.0.8"]));
    assert_eq!(l["node"], "n1");
    // The address takeover raised a critical alert.
    let (_, a) = w.rest("GET", "/v1/alerts", None).await;
    let conflict: Vec<&Value> = a["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["kind"] == "address-conflict")
        .collect();
    assert_eq!(conflict.len(), 1, "{a}");
    assert_eq!(conflict[0]["dst"], "prod/db");
    assert_eq!(w.node_item("n2").await["refused"]["reports"], 1);
    w.stop().await;
}

fn record(src: &str, dst: &str, dir: Direction, port: u32, time_ns: u64, count: u64) -> FlowRecord {
    FlowRecord {
        time_unix_ns: time_ns,
        src: "made/up".into(),
        dst: "made/up".into(),
        src_ip: src.into(),
        dst_ip: dst.into(),
        protocol: 6,
        port,
        verdict: Verdict::Allowed as i32,
        direction: dir as i32,
        rule: String::new(),
        count,
        dst_names: Vec::new(),
    }
}

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Finding 4: a node reported connections between two other nodes' workloads; propose then
/// suggested them, a record dated 2036 entered the proposal, a fake `escaped` alert was raised,
/// and a count of u64::MAX wrapped sums.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_flows_teach_nothing_and_raise_nothing() {
    // A small per-node rate, so that the flood below exceeds it quickly.
    let w = World::with("atk-flows", SHOP, |c| {
        c.limits.flow_burst = 20_000;
        c.limits.flows_per_second = 1_000.0;
    })
    .await;
    let mut evil = w.node("zz-evil").await;
    // frontend -> db on 22 (denied by policy: it would be "escaped"), seen at neither end's node.
    let year_2036 = 2_082_758_400_000_000_000u64;
    let forged = vec![
        record("10.20.0.1", "10.20.0.2", Direction::Egress, 22, now_ns(), 5),
        record(
            "10.20.0.1",
            "10.20.0.2",
            Direction::Ingress,
            22,
            year_2036,
            u64::MAX,
        ),
    ];
    let r = evil
        .report_flows(FlowBatch {
            node: "zz-evil".into(),
            records: forged,
            kernel_events_lost: 0,
            agent_records_dropped: 0,
            seq: 1,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.accepted, 0);
    let n = w.node_item("zz-evil").await;
    assert_eq!(n["refused"]["flows"], 2, "{n}");
    // n1 really hosts db: its own record is attributed by the manager (not by the names the
    // agent wrote), its far-future time clamped and its count bounded.
    let mut n1 = w.node("n1").await;
    n1.report_flows(FlowBatch {
        node: "n1".into(),
        records: vec![record(
            "10.20.0.1",
            "10.20.0.2",
            Direction::Ingress,
            5432,
            year_2036,
            u64::MAX,
        )],
        kernel_events_lost: 0,
        agent_records_dropped: 0,
        seq: 1,
    })
    .await
    .unwrap();
    let (_, f) = w.rest("GET", "/v1/flows", None).await;
    let flows = f["flows"].as_array().unwrap();
    assert_eq!(flows.len(), 1, "{f}");
    assert_eq!(
        (flows[0]["src"].as_str(), flows[0]["dst"].as_str()),
        (Some("prod/frontend"), Some("prod/db"))
    );
    assert!(flows[0]["time_unix_ns"].as_u64().unwrap() <= now_ns());
    assert!(flows[0]["count"].as_u64().unwrap() <= 10_000_000);
    let (_, p) = w.rest("GET", "/v1/propose?since=1h", None).await;
    let yaml = p["yaml"].as_str().unwrap();
    assert!(!yaml.contains("port: 22"), "{yaml}");
    let (_, a) = w.rest("GET", "/v1/alerts", None).await;
    assert!(
        a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .all(|x| x["kind"] != "escaped"),
        "{a}"
    );
    // The per-node rate: a flood is refused, counted, and not stored.
    let flood: Vec<FlowRecord> = (0..5000)
        .map(|i| {
            record(
                "10.20.0.1",
                "10.20.0.2",
                Direction::Ingress,
                5432,
                now_ns(),
                1 + i % 3,
            )
        })
        .collect();
    let mut refused = 0;
    for seq in 2..20u64 {
        let r = n1
            .report_flows(FlowBatch {
                node: "n1".into(),
                records: flood.clone(),
                kernel_events_lost: 0,
                agent_records_dropped: 0,
                seq,
            })
            .await;
        if let Err(s) = r {
            assert_eq!(s.code(), Code::ResourceExhausted, "{s:?}");
            refused += 1;
            break;
        }
    }
    assert_eq!(refused, 1, "a node cannot send flow records without limit");
    w.stop().await;
}

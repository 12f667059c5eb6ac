//! Status back to the cluster, against the fake API server through kube-rs: a Cellwall policy
//! read from the cluster gets `status` with its generation, the revision holding it and how
//! many joined nodes enforce it (nodes ack over the real mTLS agent service); a refused one
//! says why (and gets one Event, not one per status write); a spec change starts over; and
//! an unchanged policy is not rewritten (no write loop through the manager's own watch).

mod common;

use cellwall_testkit::kube::{load_yaml, FakeApi};
use common::*;
use std::time::Instant;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
---
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: typo}
spec:
  tier: admin
  ingres: [{action: Deny}]
";

/// What the manager starts with through REST (a world needs one object).
const REST_ONLY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: rest-only}\n";

fn policy(api: &FakeApi, kind: &str, name: &str) -> Value {
    api.objects("cellwall.io/v1alpha1", kind)
        .into_iter()
        .find(|o| o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{kind} {name} is in the cluster"))
}

fn condition<'a>(p: &'a Value, ty: &str) -> &'a Value {
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == ty))
        .unwrap_or(&Value::Null)
}

/// Polls until `f` holds on the policy; returns it then.
async fn until(
    api: &FakeApi,
    kind: &str,
    name: &str,
    what: &str,
    f: impl Fn(&Value) -> bool,
) -> Value {
    let t = Instant::now();
    loop {
        let p = policy(api, kind, name);
        if f(&p) {
            return p;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}; status now: {}",
            p["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ack(c: &mut AgentClient<Channel>, node: &str, version: u64, error: &str) {
    c.ack(AckRequest {
        node: node.into(),
        version,
        error: error.into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_in_the_cluster_say_where_they_are_enforced() {
    let api = FakeApi::start().unwrap();
    load_yaml(&api, CLUSTER);
    let dir = tmpdir("kube-status-src");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("fake")).unwrap();
    let w = World::with("kube-status", REST_ONLY, |c| {
        c.kube = vec![cellwall_manager::config::KubeSource {
            kubeconfig: kubeconfig.clone(),
            context: None,
            cluster: None,
        }]
    })
    .await;

    // Read and stored, no node yet.
    let p = until(&api, "Policy", "db", "a status with no nodes", |p| {
        condition(p, "Enforced")["reason"] == "NoNodes"
    })
    .await;
    assert_eq!(p["status"]["observedGeneration"], 1);
    assert_eq!(condition(&p, "Accepted")["status"], "True");
    assert_eq!(p["status"]["enforced"], "0/0");
    assert_eq!(
        p["metadata"]["generation"], 1,
        "a status write is not a spec change"
    );

    // Two nodes join; one applies the revision, the other has not yet.
    let mut n1 = w.node("n1").await;
    let mut n2 = w.node("n2").await;
    let p = until(&api, "Policy", "db", "two nodes pending", |p| {
        p["status"]["enforced"] == "0/2"
    })
    .await;
    let rev = p["status"]["revision"].as_u64().unwrap();
    assert!(rev > 0);
    ack(&mut n1, "n1", rev, "").await;
    let p = until(&api, "Policy", "db", "one of two", |p| {
        p["status"]["enforced"] == "1/2"
    })
    .await;
    let enforced = condition(&p, "Enforced");
    assert_eq!(enforced["status"], "False");
    assert_eq!(enforced["reason"], "Pending");
    assert!(
        enforced["message"]
            .as_str()
            .unwrap()
            .contains("waiting for n2"),
        "{enforced}"
    );

    // The other fails to apply it: the status names the node and its error.
    ack(&mut n2, "n2", rev, "policy map full (65536 entries)").await;
    let p = until(&api, "Policy", "db", "a failing node", |p| {
        condition(p, "Enforced")["reason"] == "NodesFailing"
    })
    .await;
    let msg = condition(&p, "Enforced")["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        msg.contains("n2 could not apply") && msg.contains("policy map full"),
        "{msg}"
    );
    // ... and the cluster's users see it as a Warning Event on the policy.
    let t = Instant::now();
    while !api.objects("v1", "Event").iter().any(|e| {
        e["involvedObject"]["name"] == "db"
            && e["reason"] == "NotEnforced"
            && e["message"].as_str().unwrap().contains("policy map full")
    }) {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no NotEnforced Event"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Then applies it: enforced everywhere, and left alone while nothing changes.
    ack(&mut n2, "n2", rev, "").await;
    let p = until(&api, "Policy", "db", "all nodes", |p| {
        condition(p, "Enforced")["status"] == "True"
    })
    .await;
    assert_eq!(p["status"]["enforced"], "2/2");
    let rv = p["metadata"]["resourceVersion"].clone();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        policy(&api, "Policy", "db")["metadata"]["resourceVersion"],
        rv,
        "an unchanged status is not written again"
    );

    // A spec change: a new generation, a new revision, enforced nowhere until acked.
    let mut changed = policy(&api, "Policy", "db");
    changed["spec"]["ingress"][0]["ports"][0]["port"] = json!(5433);
    api.apply(&changed).unwrap();
    let p = until(&api, "Policy", "db", "the new generation", |p| {
        p["status"]["observedGeneration"] == 2
    })
    .await;
    assert!(p["status"]["revision"].as_u64().unwrap() > rev);
    assert_eq!(p["status"]["enforced"], "0/2");

    // The refused ClusterPolicy says why, and its status writes do not repeat the Event.
    let t = until(&api, "ClusterPolicy", "typo", "the refusal", |p| {
        condition(p, "Accepted")["status"] == "False"
    })
    .await;
    let why = condition(&t, "Accepted")["message"].as_str().unwrap();
    assert!(why.contains("ingres"), "{why}");
    assert_eq!(t["status"]["revision"], 0);
    assert_eq!(condition(&t, "Enforced")["reason"], "Refused");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let events = api
        .objects("v1", "Event")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == "typo")
        .count();
    assert_eq!(events, 1, "one Event per refused generation");
    let not_enforced = api
        .objects("v1", "Event")
        .into_iter()
        .filter(|e| e["involvedObject"]["name"] == "db" && e["reason"] == "NotEnforced")
        .count();
    assert_eq!(not_enforced, 1, "one NotEnforced Event per failing episode");
    w.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

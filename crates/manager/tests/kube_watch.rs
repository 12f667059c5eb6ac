//! The manager's Kubernetes source against the fake API server, through kube-rs' real client
//! and watcher: the initial list, changes as they happen, a relist after a partition and
//! `410 Gone`, objects the loader refuses, and the REST API refusing to change what the
//! cluster owns (the attack: an admin token widening a cluster's NetworkPolicy behind the
//! platform team's back).

mod common;

use cellwall_testkit::kube::{load_yaml, FakeApi};
use common::*;

const CLUSTER: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: 10.9.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}
status: {podIP: 10.9.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.9.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";

const REST_ONLY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: rest-only}\n";

/// The cluster's NetworkPolicy, word for word, written through REST before the manager lists
/// the cluster: an attempt to own it first and keep it writable through REST.
const PRE_CREATED: &str = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";

fn pod(name: &str, app: &str, ip: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"podIP": ip}})
}

async fn names(w: &World) -> Vec<String> {
    w.workload_names().await
}

async fn allowed(w: &World, from: &str, to: &str) -> bool {
    let (s, v) = w.explain(from, to).await;
    assert_eq!(s, 200, "{v}");
    v["explanation"]["decision"]["allowed"].as_bool().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manager_follows_a_cluster_and_refuses_to_rewrite_it() {
    let api = FakeApi::start().unwrap();
    load_yaml(&api, CLUSTER);
    let dir = tmpdir("kube-src");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("fake")).unwrap();
    let w = World::with("kube", &format!("{REST_ONLY}---\n{PRE_CREATED}"), |c| {
        c.kube = vec![cellwall_manager::config::KubeSource {
            kubeconfig: kubeconfig.clone(),
            context: None,
            cluster: None,
        }]
    })
    .await;

    // The initial list.
    let t = until("the cluster's pods", || async {
        names(&w).await == ["shop/db", "shop/web"]
    })
    .await;
    eprintln!("initial list in the manager after {t:?}");
    until("the cluster taking over the pre-created policy", || async {
        let (_, v) = w.rest("GET", "/v1/audit", None).await;
        v["changes"].as_array().unwrap().iter().any(|c| {
            c["key"].as_str().unwrap().contains("db-from-web")
                && c["actor"] == "kubernetes:fake/networkpolicies"
        })
    })
    .await;
    assert!(allowed(&w, "shop/web", "shop/db").await);

    // A pod added, a label changed, a policy narrowed: each followed.
    api.apply(&pod("cache", "web", "10.9.0.3")).unwrap();
    let t = until("the new pod", || async {
        names(&w).await.contains(&"shop/cache".into())
    })
    .await;
    eprintln!("pod added through the API visible in the manager after {t:?}");
    until("the new pod's access", || async {
        allowed(&w, "shop/cache", "shop/db").await
    })
    .await;
    api.apply(&pod("cache", "cache", "10.9.0.3")).unwrap();
    until("the relabel", || async {
        !allowed(&w, "shop/cache", "shop/db").await
    })
    .await;

    // The attack: the REST API may not rewrite or delete what the cluster declared.
    let widen = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {name: db-from-web, namespace: shop}\n\
spec: {podSelector: {matchLabels: {app: db}}, ingress: [{}]}\n";
    let (s, v) = w
        .rest("POST", "/v1/apply", Some(apply_body("widen.yaml", widen)))
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(
        v.to_string().contains("kubernetes:fake/networkpolicies"),
        "{v}"
    );
    let (s, v) = w
        .rest("POST", "/v1/delete", Some(apply_body("widen.yaml", widen)))
        .await;
    assert_eq!(s, 403, "{v}");
    let relabel =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: cache, namespace: shop, labels: {app: web}}\n\
spec: {nodeName: n1, containers: [{name: c}]}\nstatus: {podIP: 10.9.0.3}\n";
    let (s, v) = w
        .rest(
            "POST",
            "/v1/apply",
            Some(apply_body("relabel.yaml", relabel)),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(!allowed(&w, "shop/cache", "shop/db").await);
    // What REST wrote stays REST's to change.
    let (s, v) = w
        .rest("POST", "/v1/delete", Some(apply_body("ns.yaml", REST_ONLY)))
        .await;
    assert_eq!(s, 200, "{v}");

    // A partition: the watch hears nothing while a pod goes and another comes; the API
    // server restarts with its history compacted, so the watcher gets 410 Gone and lists
    // again, and the manager deletes what the list no longer holds.
    let gone_before = api.stats().gone;
    api.partition();
    assert!(api.delete("v1", "Pod", "shop", "cache"));
    api.apply(&pod("queue", "queue", "10.9.0.4")).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        names(&w).await.contains(&"shop/cache".into()),
        "nothing arrives while partitioned"
    );
    api.heal();
    until("the relist", || async {
        names(&w).await == ["shop/db", "shop/queue", "shop/web"]
    })
    .await;
    assert!(api.stats().gone > gone_before, "the watcher met 410 Gone");

    // An object the loader refuses is not enforced, is audited, and stops nothing else.
    let bad = json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "typo", "namespace": "shop"},
        "spec": {"podSelector": {}, "ingres": []}});
    api.apply(&bad).unwrap();
    api.apply(&pod("late", "web", "10.9.0.5")).unwrap();
    until("the pod after the bad policy", || async {
        names(&w).await.contains(&"shop/late".into())
    })
    .await;
    until("the refusal in the audit trail", || async {
        let (_, v) = w.rest("GET", "/v1/audit", None).await;
        v["events"].as_array().unwrap().iter().any(|e| {
            e["action"] == "kubernetes.refused" && e["detail"].as_str().unwrap().contains("ingres")
        })
    })
    .await;
    let (_, v) = w.rest("GET", "/v1/policies", None).await;
    assert!(!v.to_string().contains("typo"), "{v}");
    // ... and the cluster's users see why, on the object: a Warning Event.
    until("the Event", || async {
        api.objects("v1", "Event").iter().any(|e| {
            e["involvedObject"]["name"] == "typo"
                && e["involvedObject"]["kind"] == "NetworkPolicy"
                && e["type"] == "Warning"
                && e["reason"] == "Refused"
                && e["metadata"]["namespace"] == "shop"
                && e["message"].as_str().unwrap().contains("ingres")
        })
    })
    .await;

    // Deleting the policy in the cluster removes it here: the db is open again.
    assert!(!allowed(&w, "shop/queue", "shop/db").await);
    assert!(api.delete(
        "networking.k8s.io/v1",
        "NetworkPolicy",
        "shop",
        "db-from-web"
    ));
    until("the policy's deletion", || async {
        allowed(&w, "shop/queue", "shop/db").await
    })
    .await;
    w.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

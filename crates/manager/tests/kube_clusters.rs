//! One manager watching two clusters (two fake API servers, through kube-rs) that use the same
//! names: each cluster's objects are qualified with its name, each cluster's policies select
//! only that cluster's pods, and agents join as `CLUSTER:NODE` with a token of that cluster.
//! The attacks: a pod in one cluster labelled as the other's, one cluster's admin tier aimed
//! at the other's pods, a token of one cluster joining a node of the other, and a REST write
//! posing as a cluster's namespace.

mod common;

use cellwall_proto::tonic::Status;
use cellwall_testkit::kube::{load_yaml, FakeApi};
use common::*;
use std::time::Instant;

/// The same shop in both clusters (addresses differ: `NET`).
const SHOP: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Node
metadata: {name: n1}
status: {addresses: [{type: InternalIP, address: NET.1.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: NET.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: NET.0.2}
";

/// East admits its db from `web` pods of every namespace: "every namespace" is east's.
const EAST: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: web}}}]}]
---
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: web-out, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  egress: [{to: [{podSelector: {matchLabels: {app: db}}}]}]
";

/// West admits its db from its own namespace's web; a pod that claims to be east's; and an
/// admin-tier policy aimed at east's pods.
const WEST: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: liar, namespace: shop, labels: {app: web, cellwall.io/cluster: east}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.2.0.9}
---
apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: cut-east}
spec:
  tier: Admin
  priority: 1
  subject: {namespaces: {matchLabels: {cellwall.io/cluster: east}}}
  ingress: [{action: Deny, name: all, from: [{namespaces: {}}]}]
";

const REST_ONLY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: rest-only}\n";
const NS: &str = "cellwall-system";
const SA: &str = "cellwall-agent";

async fn names(w: &World) -> Vec<String> {
    w.workload_names().await
}

async fn allowed(w: &World, from: &str, to: &str) -> bool {
    let (s, v) = w.explain(from, to).await;
    assert_eq!(s, 200, "{from} -> {to}: {v}");
    v["explanation"]["decision"]["allowed"].as_bool().unwrap()
}

async fn join(w: &World, token: &str, node: &str) -> Result<cellwall_proto::JoinReply, Status> {
    w.join(token, node).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clusters_with_the_same_names_stay_apart() {
    let (east, west) = (FakeApi::start().unwrap(), FakeApi::start().unwrap());
    load_yaml(
        &east,
        &format!("{}---\n{EAST}", SHOP.replace("NET", "10.1")),
    );
    load_yaml(
        &west,
        &format!("{}---\n{WEST}", SHOP.replace("NET", "10.2")),
    );
    let dir = tmpdir("kube-clusters-src");
    let (ke, kw) = (dir.join("east.kubeconfig"), dir.join("west.kubeconfig"));
    std::fs::write(&ke, east.kubeconfig("east-ctx")).unwrap();
    std::fs::write(&kw, west.kubeconfig("west-ctx")).unwrap();
    let w = World::with("kube-clusters", REST_ONLY, |c| {
        let source = |k: &std::path::Path, name: &str| cellwall_manager::config::KubeSource {
            kubeconfig: k.to_path_buf(),
            context: None,
            cluster: Some(name.into()),
        };
        c.kube = vec![source(&ke, "east"), source(&kw, "west")];
        c.join_review = Some(cellwall_manager::config::JoinReview {
            service_account: format!("{NS}/{SA}"),
            audience: "cellwall".into(),
        });
    })
    .await;

    until("both clusters' pods", || async {
        names(&w).await
            == [
                "east:shop/db",
                "east:shop/web",
                "west:shop/db",
                "west:shop/liar",
                "west:shop/web",
            ]
    })
    .await;
    // Cluster-wide policies arrive on their own watch.
    until("both clusters' policies", || async {
        let (_, v) = w.rest("GET", "/v1/policies", None).await;
        v["items"].as_array().unwrap().len() == 4
    })
    .await;
    let (_, v) = w.rest("GET", "/v1/policies", None).await;
    let mut ids: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(
        ids,
        [
            "ClusterNetworkPolicy/west:cut-east",
            "NetworkPolicy/east:shop/db-from-web",
            "NetworkPolicy/west:shop/db-from-web",
            "Policy/east:shop/web-out"
        ],
        "{v}"
    );

    // Each cluster's policy admits its own web only.
    assert!(allowed(&w, "east:shop/web", "east:shop/db").await);
    assert!(allowed(&w, "west:shop/web", "west:shop/db").await);
    assert!(!allowed(&w, "west:shop/web", "east:shop/db").await);
    assert!(!allowed(&w, "east:shop/web", "west:shop/db").await);
    // Attack: west's pod labelled as east's is still west's (and east's "every namespace"
    // is east's namespaces only).
    assert!(!allowed(&w, "west:shop/liar", "east:shop/db").await);
    // Attack: west's admin tier aimed at east's pods cuts nothing in east (east's web still
    // reaches east's db; with the confinement removed the Deny would win).
    let (_, v) = w.explain("east:shop/web", "east:shop/db").await;
    assert!(
        !v.to_string().contains("cut-east"),
        "west's policy applies to east: {v}"
    );

    // A cluster's workload can be quarantined (the manager writes the policy into its
    // qualified namespace); west's web of the same name is untouched.
    let (s, v) = w
        .rest(
            "POST",
            "/v1/quarantine",
            Some(json!({"workload": "west:shop/web", "reason": "test"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(!allowed(&w, "west:shop/web", "west:shop/db").await);
    assert!(allowed(&w, "east:shop/web", "east:shop/db").await);

    // A change in one cluster touches only its own objects.
    assert!(east.delete("v1", "Pod", "shop", "web"));
    until("east's web gone", || async {
        !names(&w).await.contains(&"east:shop/web".to_string())
    })
    .await;
    assert!(names(&w).await.contains(&"west:shop/web".to_string()));

    // Attack: a REST write posing as a cluster's namespace.
    let bad = "apiVersion: v1\nkind: Namespace\nmetadata: {name: \"east:shop\"}\n";
    let (s, v) = w
        .rest("POST", "/v1/apply", Some(apply_body("ns.yaml", bad)))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(v.to_string().contains("cluster-qualified"), "{v}");
    // Attack: a REST pod (or host) labelled as east's, to be selected by east's policies.
    let posing = "apiVersion: v1\nkind: Pod\nmetadata: {name: web2, namespace: rest-only, \
                  labels: {app: web, cellwall.io/cluster: east}}\nstatus: {podIP: 10.7.0.1}\n";
    let (s, v) = w
        .rest("POST", "/v1/apply", Some(apply_body("pod.yaml", posing)))
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v.to_string().contains("the label cellwall.io/cluster"),
        "{v}"
    );

    // Agents join as CLUSTER:NODE, reviewed by that cluster's API server only.
    let t_west = west.issue_token(NS, SA, Some("n1"), Some("cellwall-agent-w1"), "cellwall");
    join(&w, &t_west, "west:n1")
        .await
        .expect("west's n1 joins with west's token");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let t_east = east.issue_token(NS, SA, Some("n1"), Some("cellwall-agent-e1"), "cellwall");
    join(&w, &t_east, "east:n1")
        .await
        .expect("east's n1 joins with east's token");
    // Attack: east's token for west's node of the same name (west never issued it).
    let e = join(&w, &t_east, "west:n1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    // Unqualified, no cluster vouches for the node.
    let e = join(&w, &t_east, "n1").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("CLUSTER:NODE"), "{}", e.message());
    // Nor does a cluster the manager does not watch.
    let e = join(&w, &t_east, "north:n1").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    // Attack: the bootstrap token meant for hosts outside the clusters (unbound) posing as a
    // cluster's node that has not joined yet; it still joins a host.
    let e = join(&w, &w.boot, "east:n9").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    join(&w, &w.boot, "vm-1").await.expect("a host joins");

    // East's policy status counts east's nodes only (west's n1 joined first).
    let t = Instant::now();
    loop {
        let p = east
            .objects("cellwall.io/v1alpha1", "Policy")
            .into_iter()
            .find(|o| o["metadata"]["name"] == "web-out")
            .unwrap();
        if p["status"]["nodes"] == 1 {
            assert_eq!(p["status"]["enforced"], "0/1", "{}", p["status"]);
            let msg = p["status"]["conditions"].to_string();
            assert!(msg.contains("east:n1") && !msg.contains("west:n1"), "{msg}");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "east's policy status: {}",
            p["status"]
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Overlapping pod networks: west starts a pod on east's db's address. The manager
    // cannot tell them apart by address, and says so.
    west.apply(&json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "copy", "namespace": "shop", "labels": {"app": "db"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c"}]},
        "status": {"podIP": "10.1.0.2"}}))
        .unwrap();
    until("an address-conflict alert", || async {
        let (_, v) = w.rest("GET", "/v1/alerts", None).await;
        v["alerts"].as_array().unwrap().iter().any(|a| {
            a["kind"] == "address-conflict"
                && a["message"]
                    .as_str()
                    .unwrap()
                    .contains("Pod west:shop/copy and Pod east:shop/db both hold 10.1.0.2")
        })
    })
    .await;
    // A node too (a kubelet may write its own node's addresses): west's n2 on east's db's.
    west.apply(
        &json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"},
        "status": {"addresses": [{"type": "InternalIP", "address": "10.1.0.2"}]}}),
    )
    .unwrap();
    until("an address-conflict alert about a node", || async {
        let (_, v) = w.rest("GET", "/v1/alerts", None).await;
        v.to_string()
            .contains("Node west:n2 and Pod east:shop/db both hold 10.1.0.2")
    })
    .await;

    w.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// A manager that watched one cluster unnamed is restarted watching it as one of several
/// (named): the cluster is re-read under qualified names and nothing of the unnamed read
/// stays (its pods' addresses would otherwise keep their old identities).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_renamed_or_no_longer_watched_leaves_nothing_stale() {
    let (east, west) = (FakeApi::start().unwrap(), FakeApi::start().unwrap());
    load_yaml(
        &east,
        &format!("{}---\n{EAST}", SHOP.replace("NET", "10.1")),
    );
    load_yaml(&west, &SHOP.replace("NET", "10.2"));
    let src = tmpdir("kube-rename-src");
    let (ke, kw) = (src.join("east.kubeconfig"), src.join("west.kubeconfig"));
    std::fs::write(&ke, east.kubeconfig("east-ctx")).unwrap();
    std::fs::write(&kw, west.kubeconfig("west-ctx")).unwrap();
    let source = |k: &std::path::Path, name: Option<&str>| cellwall_manager::config::KubeSource {
        kubeconfig: k.to_path_buf(),
        context: None,
        cluster: name.map(Into::into),
    };
    let w = World::with("kube-rename", REST_ONLY, |c| {
        c.kube = vec![source(&ke, None)]
    })
    .await;
    until("the unnamed cluster's pods", || async {
        names(&w).await == ["shop/db", "shop/web"]
    })
    .await;

    // Restart on the same data, now watching east and west by name.
    let w = w
        .restart(|c| c.kube = vec![source(&ke, Some("east")), source(&kw, Some("west"))])
        .await;
    until(
        "both clusters under their names, nothing unnamed",
        || async {
            names(&w).await
                == [
                    "east:shop/db",
                    "east:shop/web",
                    "west:shop/db",
                    "west:shop/web",
                ]
        },
    )
    .await;
    until("east's policies, qualified, and no unnamed one", || async {
        let (_, v) = w.rest("GET", "/v1/policies", None).await;
        let ids: Vec<&str> = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        ids == [
            "NetworkPolicy/east:shop/db-from-web",
            "Policy/east:shop/web-out",
        ]
    })
    .await;
    // The REST-written namespace is no cluster's: it stays.
    let (_, v) = w.rest("GET", "/v1/namespaces", None).await;
    assert!(v.to_string().contains("rest-only"), "{v}");
    // No stale address is left to conflict with the renamed pods.
    let (_, v) = w.rest("GET", "/v1/alerts", None).await;
    assert!(!v.to_string().contains("address-conflict"), "{v}");
    let (_, v) = w.rest("GET", "/v1/audit", None).await;
    assert!(v.to_string().contains("kubernetes.unwatched"), "{v}");

    // Restarted without west: west's objects go.
    let w = w
        .restart(|c| c.kube = vec![source(&ke, Some("east"))])
        .await;
    assert_eq!(names(&w).await, ["east:shop/db", "east:shop/web"]);
    w.stop().await;
    let _ = std::fs::remove_dir_all(src);
}

//! Agents joining with their pod's ServiceAccount token (`--join-service-account`), checked
//! by the manager with a TokenReview against the fake API server through kube-rs, over the real
//! mTLS join service. The attacks: a token bound to one node joining as another, another
//! ServiceAccount's token, a token for the API server's audience, an expired or unknown token,
//! a token bound to no node, and a node an admin withdrew coming back on its own.

mod common;

use cellwall_proto::tonic::Status;
use cellwall_testkit::kube::FakeApi;
use common::*;

const REST_ONLY: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: rest-only}\n";
const NS: &str = "cellwall-system";
const SA: &str = "cellwall-agent";

async fn join(w: &World, token: &str, node: &str) -> Result<cellwall_proto::JoinReply, Status> {
    w.join(token, node).await
}

/// A client holding the certificate a join returned.
async fn as_node(w: &World, j: &cellwall_proto::JoinReply) -> AgentClient<Channel> {
    let id = Identity::from_pem(&j.cert_pem, &j.key_pem);
    AgentClient::new(channel(w.running.grpc, &w.ca, Some(id)).await.unwrap())
}

async fn acks(c: &mut AgentClient<Channel>, node: &str) -> Result<(), Status> {
    c.ack(AckRequest {
        node: node.into(),
        version: 1,
        ..Default::default()
    })
    .await
    .map(|_| ())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_join_with_their_pods_token_and_only_as_their_own_node() {
    let api = FakeApi::start().unwrap();
    let dir = tmpdir("kube-join-src");
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig("fake")).unwrap();
    let w = World::with("kube-join", REST_ONLY, |c| {
        c.kube = vec![cellwall_manager::config::KubeSource {
            kubeconfig: kubeconfig.clone(),
            context: None,
            cluster: None,
        }];
        c.join_review = Some(cellwall_manager::config::JoinReview {
            service_account: format!("{NS}/{SA}"),
            audience: "cellwall".into(),
        });
    })
    .await;

    // The agent pod on n1 joins as n1 with its projected token, and its certificate works.
    let n1 = api.issue_token(NS, SA, Some("n1"), Some("cellwall-agent-abcde"), "cellwall");
    let j = join(&w, &n1, "n1")
        .await
        .expect("n1 joins with its own token");
    let mut c1 = as_node(&w, &j).await;
    acks(&mut c1, "n1").await.unwrap();

    // Attack: n1's token (stolen from its agent) used to join as n2.
    let e = join(&w, &n1, "n2").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(
        e.message().contains("runs on node n1, not n2"),
        "{}",
        e.message()
    );

    // Attack: any other pod's token (another ServiceAccount), even on n2 and for our audience.
    let other = api.issue_token("shop", "default", Some("n2"), Some("web-1"), "cellwall");
    let e = join(&w, &other, "n2").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("system:serviceaccount:shop:default"));

    // Attack: the agents' token for another audience (the API server's own).
    let wrong_aud = api.issue_token(NS, SA, Some("n2"), None, "https://kubernetes.default.svc");
    let e = join(&w, &wrong_aud, "n2").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    // Attack: a token that expired (or whose pod was deleted), and one never issued.
    let gone = api.issue_token(NS, SA, Some("n2"), None, "cellwall");
    api.invalidate_token(&gone);
    assert_eq!(
        join(&w, &gone, "n2").await.unwrap_err().code(),
        Code::Unauthenticated
    );
    let forged = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.";
    assert_eq!(
        join(&w, forged, "n2").await.unwrap_err().code(),
        Code::Unauthenticated
    );

    // A token bound to no node (a legacy Secret token) proves no node.
    let unbound = api.issue_token(NS, SA, None, None, "cellwall");
    let e = join(&w, &unbound, "n2").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(e.message().contains("not bound to a pod's node"));

    // n1's agent lost its state: its pod's token proves n1 again; the old certificate ends.
    let n1_again = api.issue_token(NS, SA, Some("n1"), Some("cellwall-agent-fghij"), "cellwall");
    let j2 = join(&w, &n1_again, "n1").await.expect("re-join as itself");
    let mut c1b = as_node(&w, &j2).await;
    acks(&mut c1b, "n1").await.unwrap();
    assert!(
        acks(&mut c1, "n1").await.is_err(),
        "the replaced certificate is refused"
    );

    // An admin withdraws n1: its ServiceAccount token does not bring it back.
    let (s, v) = w
        .rest("POST", "/v1/nodes/revoke", Some(json!({"node": "n1"})))
        .await;
    assert_eq!(s, 200, "{v}");
    let e = join(&w, &n1_again, "n1").await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    assert!(
        e.message().contains("withdrawn by an admin"),
        "{}",
        e.message()
    );

    // Bootstrap tokens still join (hosts outside the cluster), and every refusal is audited.
    join(&w, &w.boot, "vm-1").await.expect("bootstrap join");
    let (_, v) = w.rest("GET", "/v1/audit", None).await;
    let refused = v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "join-refused")
        .count();
    assert!(refused >= 7, "{refused} refusals audited");
    w.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Without `--join-service-account`, a ServiceAccount token is just not a bootstrap token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_flag_service_account_tokens_do_not_join() {
    let api = FakeApi::start().unwrap();
    let w = World::with("kube-join-off", REST_ONLY, |_| {}).await;
    let t = api.issue_token(NS, SA, Some("n1"), None, "cellwall");
    let e = join(&w, &t, "n1").await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    assert_eq!(api.stats().lists, 0);
    w.stop().await;
}

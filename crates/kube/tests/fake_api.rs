//! The fake API server through kube-rs' own client: writes (create, replace, delete) answered
//! with the real status codes, and reads that see them.

use cellwall_kube::fake::FakeApi;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn client(api: &FakeApi) -> kube::Client {
    let kc = Kubeconfig::from_yaml(&api.kubeconfig("fake")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    kube::Client::try_from(cfg).unwrap()
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("not an API error: {other}"),
    }
}

#[tokio::test]
async fn writes_through_kube_rs_get_the_real_answers() {
    let fake = FakeApi::start().unwrap();
    let c = client(&fake).await;
    let ar = ApiResource {
        group: "networking.k8s.io".into(),
        version: "v1".into(),
        api_version: "networking.k8s.io/v1".into(),
        kind: "NetworkPolicy".into(),
        plural: "networkpolicies".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(c, "shop", &ar);
    let mut np: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "db"}, "spec": {"podSelector": {}}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &np).await.unwrap();
    assert_eq!(created.metadata.namespace.as_deref(), Some("shop"));
    assert!(created.metadata.uid.is_some());
    assert_eq!(
        code(api.create(&PostParams::default(), &np).await.unwrap_err()),
        409
    );
    np.data["spec"]["policyTypes"] = serde_json::json!(["Ingress"]);
    let replaced = api
        .replace("db", &PostParams::default(), &np)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(
        api.get("db").await.unwrap().data["spec"]["policyTypes"][0],
        "Ingress"
    );
    assert_eq!(
        code(
            api.replace("nope", &PostParams::default(), &np)
                .await
                .unwrap_err()
        ),
        400,
        "the body's name must be the path's"
    );
    api.delete("db", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(api.get("db").await.unwrap_err()), 404);
    assert_eq!(
        code(
            api.delete("db", &DeleteParams::default())
                .await
                .unwrap_err()
        ),
        404
    );
    assert_eq!(fake.stats().lists, 0);
}

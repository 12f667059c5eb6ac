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

/// A Cellwall policy's status subresource: a merge patch changes the status only (same
/// generation, new resourceVersion), a write of the object keeps the status, and kinds without
/// the subresource have no such path.
#[tokio::test]
async fn the_status_subresource_is_written_apart_from_the_spec() {
    let fake = FakeApi::start().unwrap();
    let c = client(&fake).await;
    let policies = cellwall_kube::resource_of("cellwall.io/v1alpha1", "Policy").unwrap();
    let api: Api<DynamicObject> = Api::namespaced_with(c.clone(), "shop", &policies.api_resource());
    let mut p: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "cellwall.io/v1alpha1", "kind": "Policy",
        "metadata": {"name": "db", "namespace": "shop"}, "spec": {"ingress": [{}]},
        "status": {"enforced": "forged by the author"}
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &p).await.unwrap();
    assert!(
        created.data.get("status").is_none(),
        "a create does not set status"
    );
    let object = cellwall_kube::watch::ObjectRef {
        api_version: policies.api_version(),
        kind: "Policy".into(),
        namespace: Some("shop".into()),
        name: "db".into(),
        uid: created.metadata.uid.clone(),
        resource_version: created.metadata.resource_version.clone(),
        generation: created.metadata.generation,
    };
    let status = serde_json::json!({"observedGeneration": 1, "enforced": "2/3"});
    cellwall_kube::watch::write_status(&c, policies, &object, status.clone())
        .await
        .unwrap();
    let read = api.get("db").await.unwrap();
    assert_eq!(read.data["status"], status);
    assert_eq!(read.metadata.generation, Some(1));
    assert_ne!(
        read.metadata.resource_version,
        created.metadata.resource_version
    );
    // A spec change bumps the generation and leaves the manager's status alone.
    p.data["spec"]["egress"] = serde_json::json!([{}]);
    p.data["status"] = serde_json::json!({"enforced": "3/3"});
    let replaced = api.replace("db", &PostParams::default(), &p).await.unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    assert_eq!(replaced.data["status"], status);
    let hosts = cellwall_kube::resource_of("cellwall.io/v1alpha1", "Host").unwrap();
    let h = cellwall_kube::watch::ObjectRef {
        kind: "Host".into(),
        namespace: None,
        ..object
    };
    let err = cellwall_kube::watch::write_status(&c, hosts, &h, status)
        .await
        .unwrap_err();
    assert_eq!(code(err), 404, "a Host has no status subresource");
}

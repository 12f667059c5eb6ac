//! The REST API as a real manager serves it (in-process servers on loopback sockets):
//! authentication and roles, precise errors, and nothing lost across a restart. Needs no root.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_tokens_roles_errors_and_restart() {
    let dir = tmpdir("rest");
    let running = start(config(&dir)).await.unwrap();
    let base = format!("http://{}", running.api);
    let (admin, read) = (token(&dir, "admin.token"), token(&dir, "read.token"));
    let boot = token(&dir, "bootstrap.token");
    use std::os::unix::fs::PermissionsExt;
    for f in [
        "admin.token",
        "read.token",
        "bootstrap.token",
        "ca.key",
        "client.json",
    ] {
        let mode = std::fs::metadata(dir.join(f)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{f} must be private");
    }
    let b = base.clone();
    let (admin2, read2) = (admin.clone(), read.clone());
    tokio::task::spawn_blocking(move || {
        let base = b;
        let (admin, read) = (admin2, read2);
        // Authentication and roles: 401 without or with a wrong token, 403 for a read token
        // writing or a bootstrap token on the API; the error body is always the same shape.
        let (s, v) = call(&base, "GET", "/v1/policies", None, None);
        assert_eq!(s, 401);
        assert_eq!(v["error"]["status"], 401);
        assert!(v["error"]["message"].as_str().unwrap().contains("Bearer"));
        assert_eq!(call(&base, "GET", "/v1/policies", Some("nope"), None).0, 401);
        assert_eq!(call(&base, "GET", "/v1/policies", Some(&boot), None).0, 403);
        let (s, v) = call(&base, "POST", "/v1/apply", Some(&read), Some(apply_body("p.yaml", POLICY)));
        assert_eq!(s, 403, "{v}");
        assert_eq!(v["error"]["reason"], "Forbidden");
        assert_eq!(call(&base, "GET", "/v1/policies", Some(&read), None).0, 200);
        assert_eq!(call(&base, "GET", "/healthz", None, None).0, 200);
        let (s, v) = call(&base, "GET", "/v1/openapi.json", None, None);
        assert_eq!((s, v["openapi"].as_str()), (200, Some("3.0.3")));
        let (s, v) = call(&base, "GET", "/v1/nope", Some(&read), None);
        assert_eq!((s, v["error"]["status"].as_u64()), (404, Some(404)));

        // Bad manifests: a precise location, and nothing written.
        let broken = POLICY.replace("port: 5432", "port: 99999");
        let (s, v) = call(&base, "POST", "/v1/apply", Some(&admin), Some(apply_body("bad.yaml", &broken)));
        assert_eq!(s, 400);
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.starts_with("bad.yaml:7:"), "{msg}");
        let (s, v) = call(&base, "POST", "/v1/apply", Some(&admin), Some(json!({"documents": 3})));
        assert_eq!(s, 400, "{v}");

        // All or nothing: a good document beside a bad one writes neither.
        let (s, _) = call(
            &base,
            "POST",
            "/v1/apply",
            Some(&admin),
            Some(json!({"documents": [
                {"file": "inv.yaml", "text": INVENTORY},
                {"file": "bad.yaml", "text": broken}
            ]})),
        );
        assert_eq!(s, 400);
        let (_, v) = call(&base, "GET", "/v1/workloads", Some(&read), None);
        assert_eq!(v["items"].as_array().unwrap().len(), 0);

        let (s, v) = call(&base, "POST", "/v1/apply", Some(&admin), Some(json!({"documents": [
            {"file": "inv.yaml", "text": inventory_with_ips()}, {"file": "p.yaml", "text": POLICY}]})));
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["revision"], 1);
        let changed = POLICY.replace("5432", "5433");
        let (_, v) = call(&base, "POST", "/v1/apply", Some(&admin), Some(apply_body("p.yaml", &changed)));
        assert_eq!(v["revision"], 2);
        assert_eq!(v["changes"][0]["action"], "configured");
        let (_, v) = call(&base, "GET", "/v1/policies/history?id=NetworkPolicy/shop/db-from-web", Some(&read), None);
        assert_eq!(v["versions"].as_array().unwrap().len(), 2);
        assert_eq!(v["versions"][0]["actor"], "admin.token");
        let (s, v) = call(&base, "GET", "/v1/explain?from=shop/web&to=shop/db&probe=TCP/5432", Some(&read), None);
        assert_eq!(s, 200, "{v}");
        assert!(v["text"].as_str().unwrap().contains("ALLOWED"), "{v}");
        let (s, v) = call(&base, "GET", "/v1/flows?verdict=maybe", Some(&read), None);
        assert_eq!(s, 400);
        assert!(v["error"]["message"].as_str().unwrap().contains("allowed, denied, audit"));
    })
    .await
    .unwrap();
    running.stop().await.unwrap();

    // A restart keeps every acknowledged write, the tokens and the CA.
    let ca_before = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let running = start(config(&dir)).await.unwrap();
    assert!(!running.first_start.created);
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
        ca_before
    );
    let base = format!("http://{}", running.api);
    let (s, v) =
        tokio::task::spawn_blocking(move || call(&base, "GET", "/v1/policies", Some(&admin), None))
            .await
            .unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["version"], 2);
    assert_eq!(
        v["items"][0]["policy"]["rules"][0]["ports"][0]["Range"]["lo"], 5433,
        "{v}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! Attacks on the control plane itself: bootstrap tokens used beyond what they name, floods of
//! joins and oversized messages, a read-only user reaching for writes, hostile import locations,
//! and names built to break quarantine. Real manager, real sockets; each test is one finding of
//! the security review (or a boundary it showed we had not tested).

mod common;

use common::*;

const SHOP: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: web, labels: {app: web}}
spec: {nodeName: n1, containers: [{name: c}]}
status: {podIP: 10.40.0.1}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: db, labels: {app: db}}
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 5432}]}]}
status: {podIP: 10.40.0.2}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: db-from-web}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";

async fn join(w: &World, token: &str, node: &str) -> Result<(), Code> {
    let mut b = BootstrapClient::new(channel(w.running.grpc, &w.ca, None).await.unwrap());
    b.join(JoinRequest {
        token: token.into(),
        node: node.into(),
    })
    .await
    .map(|_| ())
    .map_err(|e| e.code())
}

async fn audit_events(w: &World, action: &str) -> usize {
    let (s, v) = w.rest("GET", "/v1/audit?limit=100000", None).await;
    assert_eq!(s, 200, "{v}");
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .count()
}

/// `GET path` as text (the metrics exposition is not JSON).
async fn text(w: &World, path: &str) -> String {
    let url = format!("{}{path}", w.base);
    let auth = format!("Bearer {}", w.admin);
    tokio::task::spawn_blocking(move || {
        ureq::get(&url)
            .set("Authorization", &auth)
            .call()
            .unwrap()
            .into_string()
            .unwrap()
    })
    .await
    .unwrap()
}

/// A bootstrap token joins only the nodes it names, only while it is valid, only as often as
/// it allows; no other kind of token joins; secrets are never listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_tokens_join_only_what_they_name() {
    let w = World::with("ctl-tokens", SHOP, |_| {}).await;
    let (_, pool) = w
        .new_token("bootstrap", json!({"node": "web-*", "ttl": "1h"}))
        .await;
    assert_eq!(join(&w, &pool, "db-1").await, Err(Code::PermissionDenied));
    assert_eq!(join(&w, &pool, "web-").await, Err(Code::InvalidArgument));
    assert_eq!(join(&w, &pool, "web-1").await, Ok(()));
    assert_eq!(join(&w, &pool, "web-7").await, Ok(()));

    let (_, short) = w
        .new_token("bootstrap", json!({"node": "n9", "ttl": "300ms"}))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(join(&w, &short, "n9").await, Err(Code::Unauthenticated));

    let (id, revoked) = w.new_token("bootstrap", json!({"node": "n8"})).await;
    let (s, v) = w
        .rest("POST", "/v1/tokens/revoke", Some(json!({"id": id})))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(join(&w, &revoked, "n8").await, Err(Code::Unauthenticated));

    let (_, once) = w
        .new_token("bootstrap", json!({"node": "n7-*", "single_use": true}))
        .await;
    assert_eq!(join(&w, &once, "n7-a").await, Ok(()));
    assert_eq!(join(&w, &once, "n7-b").await, Err(Code::Unauthenticated));

    // Admin and read tokens are not bootstrap tokens; a bootstrap token is not a REST token.
    let (_, read) = w.new_token("read", json!({})).await;
    assert_eq!(join(&w, &w.admin, "n6").await, Err(Code::Unauthenticated));
    assert_eq!(join(&w, &read, "n6").await, Err(Code::Unauthenticated));
    let (s, _) = w.rest_as(Some(&pool), "GET", "/v1/workloads", None).await;
    assert_eq!(s, 403);

    // A node that joined cannot be taken over by a token without `replace`, even one naming it.
    assert_eq!(join(&w, &pool, "web-7").await, Err(Code::PermissionDenied));
    // A replace token must be bound to a node: no wildcard takeover of every node.
    let (s, v) = w
        .rest(
            "POST",
            "/v1/tokens",
            Some(json!({"role": "bootstrap", "name": "x", "replace": true})),
        )
        .await;
    assert_eq!(s, 400, "{v}");

    // Listing shows what each token is, never the secret.
    let (s, v) = w.rest("GET", "/v1/tokens", None).await;
    assert_eq!(s, 200);
    let listed = v.to_string();
    for secret in [&pool, &short, &revoked, &once, &read, &w.admin, &w.boot] {
        assert!(!listed.contains(secret.as_str()), "a secret is listed");
    }
    let refused = audit_events(&w, "join-refused").await;
    assert!(refused >= 7, "every refused join is audited: {refused}");
    let m = text(&w, "/metrics").await;
    assert!(
        m.contains("cellwall_manager_joins_refused_total{reason=\"token\"}"),
        "{m}"
    );
    w.stop().await;
}

/// A read-only user reads; every write, token operation and response action is refused, and
/// none of them changes the revision.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_user_cannot_write_anything() {
    let w = World::with("ctl-read", SHOP, |_| {}).await;
    let (_, read) = w.new_token("read", json!({})).await;
    let (_, before) = w.rest("GET", "/v1/policies", None).await;
    let writes = [
        (
            "/v1/apply",
            apply_body("x.yaml", &SHOP.replace("5432", "1")),
        ),
        ("/v1/delete", apply_body("x.yaml", SHOP)),
        ("/v1/tokens", json!({"role": "admin", "name": "escalate"})),
        ("/v1/tokens/revoke", json!({"id": 1})),
        ("/v1/nodes/revoke", json!({"node": "n1"})),
        ("/v1/quarantine", json!({"workload": "shop/db"})),
        ("/v1/release", json!({"workload": "shop/db"})),
        (
            "/v1/imports",
            json!({"source": "cmdb", "file": "x.csv", "text": "workload,owner\nshop/db,me\n"}),
        ),
    ];
    for (path, body) in writes {
        let (s, v) = w.rest_as(Some(&read), "POST", path, Some(body)).await;
        assert_eq!(s, 403, "{path}: {v}");
        assert!(v["error"]["message"].is_string(), "{path}: {v}");
    }
    for (path, token) in [("/v1/tokens", Some(read.as_str())), ("/v1/workloads", None)] {
        let (s, _) = w.rest_as(token, "GET", path, None).await;
        assert!(s == 403 || s == 401, "{path}: {s}");
    }
    let (s, _) = w.rest_as(Some(&read), "GET", "/v1/workloads", None).await;
    assert_eq!(s, 200);
    let (_, after) = w.rest("GET", "/v1/policies", None).await;
    assert_eq!(before, after);
    w.stop().await;
}

/// Joins cost the attacker, not the manager: a 20 MiB node name is refused by size before it
/// is read into the log, and 1,000 guesses from one address mostly meet the rate limit, so the
/// audit trail grows by the burst, not by the flood.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_floods_and_oversized_joins_are_bounded() {
    let w = World::with("ctl-flood", SHOP, |_| {}).await;
    let huge = "a".repeat(20 << 20);
    let e = join(&w, &w.boot, &huge).await.unwrap_err();
    assert!(
        matches!(
            e,
            Code::ResourceExhausted | Code::OutOfRange | Code::Internal
        ),
        "{e:?}"
    );
    assert_eq!(audit_events(&w, "join-refused").await, 0);

    let mut b = BootstrapClient::new(channel(w.running.grpc, &w.ca, None).await.unwrap());
    let (mut limited, mut refused) = (0, 0);
    for i in 0..1000 {
        let r = b
            .join(JoinRequest {
                token: format!("cwb_guess{i}"),
                node: format!("n-{i}"),
            })
            .await
            .unwrap_err();
        match r.code() {
            Code::ResourceExhausted => limited += 1,
            Code::Unauthenticated => refused += 1,
            c => panic!("unexpected {c:?}"),
        }
    }
    assert!(limited >= 950, "limited {limited}, refused {refused}");
    let audited = audit_events(&w, "join-refused").await;
    assert!(
        audited <= 40,
        "the flood reached the audit trail: {audited}"
    );
    // The real agent still joins once the limiter refills (1/s).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(join(&w, &w.boot, "n1").await, Ok(()));
    let m = text(&w, "/metrics").await;
    assert!(
        m.contains("cellwall_manager_rate_limited_total{what=\"join\"}"),
        "{m}"
    );
    w.stop().await;
}

/// A node reporting 50,000 workloads (a 2.6 MB message) is refused whole and counted; the
/// state is unchanged and the node can still report what it really has.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_report_is_refused_and_counted() {
    let w = World::with("ctl-report", SHOP, |_| {}).await;
    let mut n1 = w.node("n1").await;
    let many: Vec<LocalWorkload> = (0..50_000u32)
        .map(|i| LocalWorkload {
            key: format!("shop/p{i}"),
            ips: vec![format!(
                "10.{}.{}.{}",
                100 + i / 65536,
                (i / 256) % 256,
                i % 256
            )],
            interface: format!("veth{i}"),
            labels: Default::default(),
            host: false,
        })
        .collect();
    let before = w.workloads().await;
    let e = n1
        .watch(WatchRequest {
            node: "n1".into(),
            workloads: many,
            agent_version: "forged".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(w.workloads().await, before);
    let n = w.node_item("n1").await;
    assert_eq!(n["refused"]["reports"], 50_000, "{n}");
    let real = LocalWorkload {
        key: "shop/web".into(),
        ips: vec!["10.40.0.1".into()],
        interface: "veth1".into(),
        labels: Default::default(),
        host: false,
    };
    w.report(&mut n1, "n1", vec![real]).await;
    w.stop().await;
}

/// Every refusal on the REST API carries a JSON error saying why (413, 405, 404 included); a
/// body over the operator's limit is refused before it is parsed; a large real manifest within
/// the limit is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_refusals_are_bounded_and_explained() {
    let w = World::with("ctl-rest", SHOP, |c| c.limits.api_body_bytes = 4 << 20).await;
    // 2.2 MB of pods: above axum's 2 MB default, within this manager's limit.
    let mut big = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: bulk}\n");
    let mut i = 0;
    while big.len() < 2_200_000 {
        big.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: bulk, name: pod-{i:06}, labels: {{app: a{}, tier: t{}}}}}\nspec: {{containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}\n",
            i % 97,
            i % 7
        ));
        i += 1;
    }
    let (s, v) = w
        .rest("POST", "/v1/apply", Some(apply_body("bulk.yaml", &big)))
        .await;
    assert_eq!(s, 200, "{v}");
    // Over the limit: 413 with the JSON error (a raw request sent whole: a client still
    // uploading when the refusal comes may see a broken pipe instead).
    let (status, body) = raw_post(&w, "/v1/apply", (4 << 20) + 1).await;
    assert_eq!(status, 413, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(
        v["error"]["message"].as_str().unwrap().contains("limit"),
        "{v}"
    );
    // The limit is advertised, and the API client splits a larger set by it before sending:
    // three 1.5 MB files (4.5 MB) go as two parts, each all or nothing.
    let mid = big.len() * 2 / 3;
    let cut = mid + big[mid..].find("---\n").unwrap();
    let part = |i: usize, text: &str| cellwall_api::Document {
        file: format!("bulk-{i}.yaml"),
        text: text
            .replace("name: bulk}", &format!("name: bulk{i}}}"))
            .replace("namespace: bulk,", &format!("namespace: bulk{i},")),
    };
    let third = &big[..cut];
    let req = cellwall_api::ApplyRequest {
        documents: (0..3).map(|i| part(i, third)).collect(),
        ignore_unknown_kinds: false,
    };
    let (base, admin) = (w.base.clone(), w.admin.clone());
    let parts = tokio::task::spawn_blocking(move || {
        let c = cellwall_api::client::Client::new(&base, &admin);
        assert_eq!(c.body_limit(), Some(4 << 20));
        c.apply_in_parts(&req, false).map(|p| p.len())
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(parts, 2);
    for (method, path, code) in [
        ("DELETE", "/v1/apply", 405),
        ("PUT", "/v1/tokens", 405),
        ("GET", "/v1/nope", 404),
    ] {
        let (s, v) = w.rest(method, path, None).await;
        assert_eq!(s, code, "{method} {path}");
        assert!(v["error"]["message"].is_string(), "{method} {path}: {v}");
    }
    w.stop().await;
}

/// An import location is read only where the operator allowed it, and a refusal tells the
/// caller nothing about the machine: which files exist, what they hold, which ports are open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_import_locations_reveal_nothing() {
    let allowed = tmpdir("ctl-import-allowed");
    std::fs::write(
        allowed.join("cmdb.csv"),
        "workload,owner\nshop/db,payments\n",
    )
    .unwrap();
    let secret = tmpdir("ctl-import-secret");
    std::fs::write(
        secret.join("key.csv"),
        "workload,owner\nshop/db,SECRET-VALUE\n",
    )
    .unwrap();
    let a = allowed.clone();
    let w = World::with("ctl-import", SHOP, move |c| c.imports.dirs = vec![a]).await;
    let import = |location: String| json!({"source": "cmdb", "location": location});
    let escape = format!(
        "{}/../{}/key.csv",
        allowed.display(),
        secret.file_name().unwrap().to_string_lossy()
    );
    for location in [
        secret.join("key.csv").display().to_string(),
        escape,
        "/etc/passwd".into(),
        "/proc/self/environ".into(),
        "http://127.0.0.1:1/".into(),
        "file:///etc/shadow".into(),
    ] {
        let (s, v) = w
            .rest("POST", "/v1/imports", Some(import(location.clone())))
            .await;
        assert_eq!(s, 403, "{location}: {v}");
        let said = v.to_string();
        for leak in ["SECRET-VALUE", "root:", "No such file", "refused", "PATH="] {
            assert!(!said.contains(leak), "{location}: {said}");
        }
    }
    // A symlink inside the allowed directory does not lead out of it.
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(secret.join("key.csv"), allowed.join("link.csv")).unwrap();
        let (s, v) = w
            .rest(
                "POST",
                "/v1/imports",
                Some(import(allowed.join("link.csv").display().to_string())),
            )
            .await;
        assert_eq!(s, 403, "{v}");
        assert!(!v.to_string().contains("SECRET-VALUE"));
    }
    let (s, v) = w
        .rest(
            "POST",
            "/v1/imports",
            Some(import(allowed.join("cmdb.csv").display().to_string())),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    w.stop().await;
    let _ = std::fs::remove_dir_all(&allowed);
    let _ = std::fs::remove_dir_all(&secret);
}

/// Any name Kubernetes allows can be quarantined (a 70-character name and a 253-character
/// one used to fail on the label value length), and the quarantine holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_valid_name_can_be_quarantined() {
    let long = "a".repeat(70);
    let longest = format!(
        "{}.{}.{}.{}",
        "b".repeat(63),
        "c".repeat(63),
        "d".repeat(63),
        "e".repeat(61)
    );
    let pods: String = [(&long, "10.40.1.1"), (&longest, "10.40.1.2")]
        .iter()
        .map(|(n, ip)| {
            format!("---\napiVersion: v1\nkind: Pod\nmetadata: {{namespace: shop, name: {n}, labels: {{app: web}}}}\nstatus: {{podIP: {ip}}}\n")
        })
        .collect();
    let w = World::with("ctl-quarantine", &format!("{SHOP}{pods}"), |_| {}).await;
    for name in [&long, &longest] {
        let (s, _) = w.explain(&format!("shop/{name}"), "shop/db").await;
        assert_eq!(s, 200);
        let (s, v) = w
            .rest(
                "POST",
                "/v1/quarantine",
                Some(json!({"workload": format!("shop/{name}"), "reason": "test"})),
            )
            .await;
        assert_eq!(s, 200, "{name}: {v}");
        let (_, v) = w.explain(&format!("shop/{name}"), "shop/db").await;
        assert_eq!(
            v["explanation"]["decision"]["allowed"], false,
            "{name}: {v}"
        );
    }
    // The other app=web pod is untouched.
    let (_, v) = w.explain("shop/web", "shop/db").await;
    assert_eq!(v["explanation"]["decision"]["allowed"], true, "{v}");
    w.stop().await;
}

/// The data directory holds the CA key and every token hash: only the manager's user reads it.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let w = World::with("ctl-perms", SHOP, |_| {}).await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.dir), 0o700);
    for entry in std::fs::read_dir(&w.dir).unwrap() {
        let p = entry.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name.ends_with(".key") || name.ends_with(".token") || name.contains(".db") {
            assert_eq!(mode(&p) & 0o077, 0, "{name} is readable by others");
        }
    }
    w.stop().await;
}

/// Withdrawing a node's certificate (revoked, or replaced by a new join) ends its open stream
/// at once: a stolen certificate stops receiving policy, not at its next reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_certificate_loses_its_open_stream() {
    let w = World::with("ctl-revoke", SHOP, |_| {}).await;
    for how in ["revoke", "replace"] {
        let mut stolen = w.node("n1").await;
        let mut s = stolen
            .watch(WatchRequest {
                node: "n1".into(),
                agent_version: "stolen".into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
        if how == "revoke" {
            let (st, v) = w
                .rest("POST", "/v1/nodes/revoke", Some(json!({"node": "n1"})))
                .await;
            assert_eq!(st, 200, "{v}");
        } else {
            let (_, t) = w
                .new_token("bootstrap", json!({"node": "n1", "replace": true}))
                .await;
            assert_eq!(join(&w, &t, "n1").await, Ok(()));
        }
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match s.message().await {
                    Ok(Some(_)) => continue,
                    other => return other.map(|_| ()),
                }
            }
        })
        .await
        .expect("the stream ends within 5 s");
        let _ = end;
        let e = stolen
            .ack(AckRequest {
                node: "n1".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated, "{how}: {e:?}");
        if how == "revoke" {
            // The revoked node joins again with a token (the first-start one here).
            assert_eq!(join(&w, &w.boot, "n1").await, Ok(()));
            let (st, v) = w
                .rest("POST", "/v1/nodes/revoke", Some(json!({"node": "n1"})))
                .await;
            assert_eq!(st, 200, "{v}");
        }
    }
    w.stop().await;
}

/// Renewal needs the node's own certificate: not another node's, not a token; it is rate
/// limited per node, and every certificate carries the configured lifetime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_is_for_the_certificate_holder_only() {
    let w = World::with("ctl-renew", SHOP, |c| {
        c.lifetimes.node = Duration::from_secs(3600)
    })
    .await;
    let mut n1 = w.node("n1").await;
    let renew = |node: &str| cellwall_proto::RenewRequest { node: node.into() };
    let e = n1.renew(renew("n2")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let anon = channel(w.running.grpc, &w.ca, None).await.unwrap();
    let e = AgentClient::new(anon).renew(renew("n1")).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);

    let r = n1.renew(renew("n1")).await.unwrap().into_inner();
    let life = r.not_after_unix_ms - r.issued_unix_ms;
    assert!((3_599_000..=3_600_000).contains(&life), "{life}");
    let mut limited = false;
    for _ in 0..10 {
        if let Err(e) = n1.renew(renew("n1")).await {
            assert_eq!(e.code(), Code::ResourceExhausted);
            limited = true;
            break;
        }
    }
    assert!(limited, "renewals are rate limited");
    let n = w.node_item("n1").await;
    assert!(
        n["cert_expires_ms"].as_i64().unwrap() >= r.not_after_unix_ms,
        "{n}"
    );
    w.stop().await;
}

/// A POST of `len` spaces, whole (so the answer is readable whenever it comes): (status, body).
async fn raw_post(w: &World, path: &str, len: usize) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(w.running.api).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\n\r\n",
        w.admin
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&vec![b' '; len]).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

//! The manager as a real process would run it (in-process servers on loopback sockets): REST
//! authentication and roles, precise errors, the agent join → mTLS watch → ack path, refused
//! credentials, and nothing lost across a restart. Needs no root.

use cellwall_manager::{start, Config};
use cellwall_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use cellwall_proto::tonic::Code;
use cellwall_proto::{AckRequest, AgentClient, JoinRequest, LocalWorkload, Payload, WatchRequest};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

const INVENTORY: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: web, labels: {app: web}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Pod
metadata: {namespace: shop, name: db, labels: {app: db}}
spec: {containers: [{name: c, ports: [{containerPort: 5432}]}]}
";

const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: db-from-web}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";

/// The same pods with addresses in their manifests (no agent reports them in the REST test).
fn inventory_with_ips() -> String {
    INVENTORY
        .replace(
            "ports: [{containerPort: 80}]}]}",
            "ports: [{containerPort: 80}]}]}\nstatus: {podIP: 10.9.0.1}",
        )
        .replace(
            "ports: [{containerPort: 5432}]}]}",
            "ports: [{containerPort: 5432}]}]}\nstatus: {podIP: 10.9.0.2}",
        )
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-mgr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        db: None,
        api_listen: "127.0.0.1:0".parse().unwrap(),
        grpc_listen: "127.0.0.1:0".parse().unwrap(),
        sans: vec![],
        retention_ms: 7 * 86_400_000,
        webhooks: vec![],
    }
}

fn token(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f))
        .unwrap()
        .trim()
        .to_string()
}

/// (status, body) of a REST call; never panics on an error status.
fn call(
    base: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = ureq::request(method, &format!("{base}{path}"));
    if let Some(t) = token {
        r = r.set("Authorization", &format!("Bearer {t}"));
    }
    let res = match body {
        Some(b) => r.send_json(b),
        None => r.call(),
    };
    match res {
        Ok(resp) => (resp.status(), resp.into_json().unwrap_or(Value::Null)),
        Err(ureq::Error::Status(code, resp)) => (code, resp.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("transport error: {e}"),
    }
}

fn apply_body(file: &str, text: &str) -> Value {
    json!({"documents": [{"file": file, "text": text}]})
}

async fn channel(
    addr: std::net::SocketAddr,
    ca: &str,
    id: Option<Identity>,
) -> Result<Channel, String> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some(id) = id {
        tls = tls.identity(id);
    }
    Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .map_err(|e| e.to_string())?
        .connect_timeout(Duration::from_secs(3))
        .connect()
        .await
        .map_err(|e| format!("{e:?}"))
}

/// Joins as `node` with the bootstrap token and returns a client holding the node certificate.
async fn joined(
    addr: std::net::SocketAddr,
    ca: &str,
    bootstrap: &str,
    node: &str,
) -> AgentClient<Channel> {
    let j = AgentClient::new(channel(addr, ca, None).await.unwrap())
        .join(JoinRequest {
            token: bootstrap.into(),
            node: node.into(),
        })
        .await
        .unwrap()
        .into_inner();
    let id = Identity::from_pem(&j.cert_pem, &j.key_pem);
    AgentClient::new(channel(addr, ca, Some(id)).await.unwrap())
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_join_watch_ack_and_refused_credentials() {
    let dir = tmpdir("grpc");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let boot = token(&dir, "bootstrap.token");
    let admin = token(&dir, "admin.token");
    let base = format!("http://{}", running.api);
    let g = running.grpc;

    // A wrong bootstrap token, or an API token, buys nothing.
    let mut c = AgentClient::new(channel(g, &ca, None).await.unwrap());
    for t in ["cwb_wrong".to_string(), admin.clone()] {
        let e = c
            .join(JoinRequest {
                token: t,
                node: "n1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // Without a certificate, nothing but Join.
    let e = c
        .watch(WatchRequest {
            node: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let j = c
        .join(JoinRequest {
            token: boot.clone(),
            node: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.ca_pem, ca);
    let id = Identity::from_pem(&j.cert_pem, &j.key_pem);
    let mut c = AgentClient::new(channel(g, &ca, Some(id.clone())).await.unwrap());

    // The certificate is n1's: claiming another node is refused.
    let e = c
        .ack(AckRequest {
            node: "n2".into(),
            version: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A certificate from another CA does not get through the handshake.
    let other = tmpdir("other-ca");
    let (fc, fk, _) = cellwall_manager::pki::Ca::load_or_create(&other)
        .unwrap()
        .0
        .node_cert("n1")
        .unwrap();
    let refused = match channel(g, &ca, Some(Identity::from_pem(fc, fk))).await {
        Err(_) => true,
        Ok(ch) => AgentClient::new(ch)
            .ack(AckRequest {
                node: "n1".into(),
                version: 1,
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a foreign certificate was accepted");

    // Watch: the current state at once (with the addresses this agent reports), then every
    // change pushed as it is written.
    let base2 = base.clone();
    let admin2 = admin.clone();
    tokio::task::spawn_blocking(move || {
        call(
            &base2,
            "POST",
            "/v1/apply",
            Some(&admin2),
            Some(apply_body("inv.yaml", INVENTORY)),
        )
    })
    .await
    .unwrap();
    let mut stream = c
        .watch(WatchRequest {
            node: "n1".into(),
            applied_version: 0,
            workloads: vec![LocalWorkload {
                key: "shop/web".into(),
                ips: vec!["10.9.0.1".into()],
                interface: "veth1".into(),
                ..Default::default()
            }],
            agent_version: "test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Payload::Snapshot(doc) = first.payload().unwrap() else {
        panic!("a new agent gets the whole model first");
    };
    let web = doc.workloads.iter().find(|w| w.name == "web").unwrap();
    assert_eq!(
        web.ips,
        vec!["10.9.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(web.node.as_deref(), Some("n1"));
    let (b, a) = (base.clone(), admin.clone());
    let rev = tokio::task::spawn_blocking(move || {
        call(
            &b,
            "POST",
            "/v1/apply",
            Some(&a),
            Some(apply_body("p.yaml", POLICY)),
        )
        .1["revision"]
            .as_u64()
            .unwrap()
    })
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.version, rev);
    // Then only what changed: the one policy, on top of the snapshot's version.
    match next.payload().unwrap() {
        Payload::Delta {
            base_version,
            delta,
        } => {
            assert_eq!(base_version, first.version);
            assert_eq!(delta.policies.len(), 1);
            assert_eq!(delta.len(), 1);
        }
        p => panic!("expected a delta, got {p:?}"),
    }
    // Reconnecting at the latest version costs a marker, not the model; at an older one, the
    // snapshot again.
    for (applied, snapshot) in [(rev, false), (first.version, true)] {
        let again = c
            .watch(WatchRequest {
                node: "n1".into(),
                applied_version: applied,
                workloads: vec![LocalWorkload {
                    key: "shop/web".into(),
                    ips: vec!["10.9.0.1".into()],
                    interface: "veth1".into(),
                    ..Default::default()
                }],
                agent_version: "test".into(),
            })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.version, rev);
        match again.payload().unwrap() {
            Payload::Snapshot(d) => {
                assert!(snapshot);
                assert_eq!(d.policies.len(), 1);
            }
            Payload::Delta {
                base_version,
                delta,
            } => {
                assert!(!snapshot);
                assert_eq!(base_version, rev);
                assert!(delta.is_empty());
            }
        }
    }
    c.ack(AckRequest {
        node: "n1".into(),
        version: rev,
        apply_micros: 1234,
        error: String::new(),
        applied_unix_micros: 1,
    })
    .await
    .unwrap();
    let (s, v) =
        tokio::task::spawn_blocking(move || call(&base, "GET", "/v1/nodes", Some(&admin), None))
            .await
            .unwrap();
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["applied_version"], rev);
    assert_eq!(v["items"][0]["lag"], 0);

    // A re-join replaces the certificate: the old one stops working.
    let mut c0 = AgentClient::new(channel(g, &ca, None).await.unwrap());
    c0.join(JoinRequest {
        token: boot,
        node: "n1".into(),
    })
    .await
    .unwrap();
    let e = c
        .ack(AckRequest {
            node: "n1".into(),
            version: rev,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// A local webhook receiver: counts POSTs and keeps their bodies.
fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let g = got.clone();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            g.lock()
                .unwrap()
                .push(serde_json::from_slice(&body).unwrap());
            let mut s = s;
            let _ = s.write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (url, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_flow_raises_exactly_one_alert_at_the_webhook() {
    let dir = tmpdir("alerts");
    let (url, got) = receiver();
    let mut cfg = config(&dir);
    cfg.webhooks = vec![url];
    let running = start(cfg).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let (b, a) = (base.clone(), admin.clone());
    tokio::task::spawn_blocking(move || {
        let (s, v) = call(&b, "POST", "/v1/apply", Some(&a), Some(json!({"documents": [
            {"file": "inv.yaml", "text": inventory_with_ips()}, {"file": "p.yaml", "text": POLICY}]})));
        assert_eq!(s, 200, "{v}");
    })
    .await
    .unwrap();
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    // db admits web on 5432 only; a connection on 9999 that the datapath let through escaped
    // (an agent lagging behind, a host Cellwall does not protect). Reported twice.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    for (seq, port) in [(1u64, 9999u32), (2, 9999), (3, 5432)] {
        let rec = cellwall_proto::FlowRecord {
            time_unix_ns: now,
            src: "shop/web".into(),
            dst: "shop/db".into(),
            src_ip: "10.9.0.1".into(),
            dst_ip: "10.9.0.2".into(),
            protocol: 6,
            port,
            verdict: cellwall_proto::Verdict::Allowed as i32,
            direction: cellwall_proto::Direction::Ingress as i32,
            rule: String::new(),
            count: 1,
        };
        c.report_flows(cellwall_proto::FlowBatch {
            node: "n1".into(),
            records: vec![rec],
            kernel_events_lost: 0,
            agent_records_dropped: 0,
            seq,
        })
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks = got.lock().unwrap().clone();
    let escaped: Vec<&Value> = hooks.iter().filter(|h| h["kind"] == "escaped").collect();
    assert_eq!(escaped.len(), 1, "{hooks:?}");
    assert_eq!(escaped[0]["src"], "shop/web");
    assert_eq!(escaped[0]["dst"], "shop/db");
    assert_eq!(escaped[0]["port"], 9999);
    assert!(
        escaped[0]["rule"].as_str().unwrap().contains("db-from-web"),
        "{hooks:?}"
    );
    // The allowed 5432 flow is no deviation (it is a new edge into a policed workload, though).
    assert!(
        hooks
            .iter()
            .all(|h| h["port"] != 5432 || h["kind"] == "new-edge"),
        "{hooks:?}"
    );
    let (s, v) =
        tokio::task::spawn_blocking(move || call(&base, "GET", "/v1/alerts", Some(&admin), None))
            .await
            .unwrap();
    assert_eq!(s, 200);
    let stored: Vec<&Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "escaped")
        .collect();
    assert_eq!(stored.len(), 1, "{v}");
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_import_follows_its_file_and_a_broken_run_changes_nothing() {
    let dir = tmpdir("import");
    let running = start(config(&dir)).await.unwrap();
    let admin = token(&dir, "admin.token");
    let base = format!("http://{}", running.api);
    let report = dir.join("report.csv");
    std::fs::write(&report, "ip,owner\n10.9.0.1,shop\n").unwrap();
    let label = |base: String, admin: String| -> Option<String> {
        let (_, v) = call(&base, "GET", "/v1/workloads", Some(&admin), None);
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "web")
            .and_then(|w| {
                w["labels"]["cmdb.import.cellwall.io/owner"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    let (b, a, r) = (base.clone(), admin.clone(), report.clone());
    tokio::task::spawn_blocking(move || {
        let (s, v) = call(
            &b,
            "POST",
            "/v1/apply",
            Some(&a),
            Some(apply_body("inv.yaml", &inventory_with_ips())),
        );
        assert_eq!(s, 200, "{v}");
        let (s, v) = call(
            &b,
            "POST",
            "/v1/imports",
            Some(&a),
            Some(json!({
            "source": "cmdb", "location": r.to_str().unwrap(), "every": "10s"})),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["matched_workloads"], 1);
        assert_eq!(label(b.clone(), a.clone()).as_deref(), Some("shop"));
        // An interval under 10 s, or a schedule without a location, is refused.
        let (s, _) = call(
            &b,
            "POST",
            "/v1/imports",
            Some(&a),
            Some(json!({
            "source": "cmdb", "location": r.to_str().unwrap(), "every": "1s"})),
        );
        assert_eq!(s, 400);
    })
    .await
    .unwrap();
    // The file changes: the next scheduled run picks it up.
    std::fs::write(&report, "ip,owner\n10.9.0.1,payments\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (b, a) = (base.clone(), admin.clone());
        let got = tokio::task::spawn_blocking(move || label(b, a))
            .await
            .unwrap();
        if got.as_deref() == Some("payments") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduled import never ran: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A broken file at the next run: an event, and the labels stay.
    std::fs::write(&report, "ip,owner\nnot-an-ip,x\n").unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (b, a) = (base.clone(), admin.clone());
    let (got, events) = tokio::task::spawn_blocking(move || {
        (
            label(b.clone(), a.clone()),
            call(&b, "GET", "/v1/audit", Some(&a), None).1,
        )
    })
    .await
    .unwrap();
    assert_eq!(got.as_deref(), Some("payments"));
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "import-failed"
                && e["detail"].as_str().unwrap().contains("report.csv:2:1")),
        "{events}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// An agent that reads its stream slowly (it fell more than 256 revisions behind) still ends
/// at exactly the manager's state: deltas apply in order on top of what it holds, and after
/// the gap it gets a snapshot again, never a delta from a version it does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_gets_a_snapshot_after_falling_behind_and_ends_in_step() {
    let dir = tmpdir("lag");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    let mut stream = c
        .watch(WatchRequest {
            node: "n1".into(),
            agent_version: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // 300 revisions while the agent reads nothing: pods come and go, labels change.
    let (b, a) = (base.clone(), admin.clone());
    let last = tokio::task::spawn_blocking(move || {
        let mut rev = 0;
        for i in 0..300 {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{}, namespace: shop, labels: {{v: \"{i}\"}}}}\nstatus: {{podIP: 10.9.1.{}}}\n",
                i % 7,
                i % 7 + 1
            );
            let path = if i % 5 == 4 { "/v1/delete" } else { "/v1/apply" };
            let (s, v) = call(&b, "POST", path, Some(&a), Some(apply_body("p.yaml", &pod)));
            if s == 200 {
                rev = v["revision"].as_u64().unwrap();
            }
        }
        rev
    })
    .await
    .unwrap();
    let mut held: Option<(u64, cellwall_proto::StateDoc)> = None;
    let mut snapshots = 0;
    while held.as_ref().map(|h| h.0) != Some(last) {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream reaches the last revision")
            .unwrap()
            .unwrap();
        match m.payload().unwrap() {
            Payload::Snapshot(d) => {
                snapshots += 1;
                held = Some((m.version, d));
            }
            Payload::Delta {
                base_version,
                delta,
            } => {
                let (v, d) = held.as_mut().expect("a snapshot comes first");
                assert_eq!(
                    base_version, *v,
                    "a delta from a version the agent does not hold"
                );
                d.apply(delta);
                *v = m.version;
            }
        }
    }
    assert!(snapshots >= 2, "falling behind should have cost a snapshot");
    let (_, doc) = held.unwrap();
    let p = running.manager.published();
    assert_eq!(p.revision, last);
    assert_eq!(&doc, p.doc.as_ref());
}

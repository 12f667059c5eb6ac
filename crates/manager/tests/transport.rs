//! How the REST API travels, as a real manager serves it on loopback sockets: over TLS with
//! `api_tls` (the server certificate the manager's CA issued), verified by an independent
//! rustls client, by the API client through `client.json`, and refused by a client trusting
//! another CA; plain HTTP gets no data. Beyond loopback TLS is the default (the decision is
//! tested on the configuration: tests bind loopback only).

mod common;

use cellwall_api::client::{Client, ClientConfig, ClientError, Target};
use cellwall_manager::ApiTransport;
use common::*;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::{self, pki_types};

/// A rustls client trusting `ca_pem` only (nothing of the manager's or the API client's code).
fn tls_client(ca_pem: &str) -> tokio_rustls::TlsConnector {
    use pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for c in pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// `GET path` over HTTPS to `127.0.0.1` verified against `ca_pem`: (status, body), or the
/// handshake's error.
async fn https_get(
    addr: std::net::SocketAddr,
    ca_pem: &str,
    path: &str,
    token: &str,
) -> Result<(u16, Value), String> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let mut s = tls_client(ca_pem)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Connection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await.map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&resp);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    Ok((status, serde_json::from_str(body).unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_over_tls_on_loopback() {
    let dir = tmpdir("tls");
    let mut cfg = config(&dir);
    cfg.api_tls = true;
    let running = start(cfg).await.unwrap();
    let api = running.api;
    assert_eq!(running.api_url, format!("https://{api}"));
    let (admin, ca) = (
        token(&dir, "admin.token"),
        std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
    );

    // client.json names the https:// URL and the CA file (absolute).
    let cj: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("client.json")).unwrap()).unwrap();
    assert_eq!(cj["server"], format!("https://{api}"));
    assert_eq!(cj["token"], admin.as_str());
    let ca_path = std::fs::canonicalize(dir.join("ca.pem")).unwrap();
    assert_eq!(cj["ca"], ca_path.display().to_string());

    // HTTPS trusting the manager's CA, with the admin token: served.
    let (s, v) = https_get(api, &ca, "/v1/policies", &admin).await.unwrap();
    assert_eq!(s, 200, "{v}");
    assert!(v["items"].is_array(), "{v}");
    let (s, _) = https_get(api, &ca, "/v1/policies", "nope").await.unwrap();
    assert_eq!(s, 401, "authentication works as over HTTP");

    // A client trusting another CA refuses the handshake (and the server goes on).
    let other = tmpdir("tls-other-ca");
    let (other_ca, _) =
        cellwall_manager::pki::Ca::load_or_create(&other, Duration::from_secs(86_400)).unwrap();
    let e = https_get(api, &other_ca.bundle_pem, "/v1/policies", &admin)
        .await
        .unwrap_err();
    assert!(e.contains("invalid peer certificate"), "{e}");

    // Hostile or broken clients do not stop the server: garbage instead of a ClientHello, a
    // connection that never says anything, one that closes mid-handshake.
    let mut junk = tokio::net::TcpStream::connect(api).await.unwrap();
    junk.write_all(b"\x16\x03\x01\x00\x05hello-not-tls")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), junk.read_to_end(&mut buf)).await;
    let _silent = tokio::net::TcpStream::connect(api).await.unwrap();
    let mut half = tokio::net::TcpStream::connect(api).await.unwrap();
    half.write_all(b"\x16\x03\x01").await.unwrap();
    drop(half);
    let (s, _) = https_get(api, &ca, "/healthz", "").await.unwrap();
    assert_eq!(s, 200, "served after failed handshakes");

    let base = format!("http://{api}");
    let (dir2, admin2, other2) = (dir.clone(), admin.clone(), other.clone());
    tokio::task::spawn_blocking(move || {
        let (dir, admin, other) = (dir2, admin2, other2);
        // Plain HTTP gets no data, only the advice to use https://.
        let (s, v) = call(&base, "GET", "/v1/policies", Some(&admin), None);
        assert_eq!(s, 400, "{v}");
        assert!(v.get("items").is_none(), "{v}");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains("HTTPS") && msg.contains("ca.pem"), "{msg}");

        // The API client, as the CLI finds it: through client.json.
        let c = Client::from_target(&Target {
            config: Some(dir.join("client.json")),
            ..Default::default()
        })
        .unwrap();
        assert!(!c.sends_token_in_clear());
        assert_eq!(c.policies().unwrap().items.len(), 0);
        // A copied client.json with a relative CA path next to it.
        let copy = other.join("client.json");
        std::fs::copy(dir.join("ca.pem"), other.join("manager-ca.pem")).unwrap();
        let rel =
            json!({"server": format!("https://{api}"), "token": admin, "ca": "manager-ca.pem"});
        std::fs::write(&copy, rel.to_string()).unwrap();
        let c = Client::with_config(&ClientConfig::read(&copy).unwrap()).unwrap();
        assert!(c.nodes().is_ok());

        // The wrong CA: an error that says verification failed, not "cannot reach".
        let c = Client::from_target(&Target {
            config: Some(dir.join("client.json")),
            ca: Some(other.join("ca.pem")),
            ..Default::default()
        })
        .unwrap();
        let e = c.policies().unwrap_err();
        assert!(matches!(e, ClientError::Untrusted { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.contains("failed verification")
                && text.contains(&other.join("ca.pem").display().to_string()),
            "{text}"
        );
        // https:// without a CA: nothing is sent, and the error says what to pass.
        let e = Client::from_target(&Target {
            server: Some(format!("https://{api}")),
            token: Some(admin.clone()),
            ..Default::default()
        })
        .err()
        .unwrap();
        assert!(matches!(e, ClientError::NoCa { .. }), "{e}");
        assert!(
            e.to_string().contains("--ca FILE or set CELLWALL_CA"),
            "{e}"
        );
        // http:// to the HTTPS API: the manager's advice comes through.
        let e = Client::new(&format!("http://{api}"), &admin)
            .policies()
            .unwrap_err();
        assert!(e.to_string().contains("over HTTPS"), "{e}");
        // https:// to a plain-HTTP server: a TLS error that asks whether it serves HTTPS.
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let plain_addr = plain.local_addr().unwrap();
        std::thread::spawn(move || {
            use std::io::{Read, Write};
            if let Ok((mut s, _)) = plain.accept() {
                // Read the ClientHello first: closing with it unread would reset the connection.
                let mut hello = [0u8; 4096];
                let _ = s.read(&mut hello);
                let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
                let _ = s.shutdown(std::net::Shutdown::Write);
                let _ = s.read_to_end(&mut Vec::new());
            }
        });
        let c = Client::with_config(&ClientConfig {
            server: format!("https://{plain_addr}"),
            token: admin,
            ca: Some(dir.join("ca.pem")),
        })
        .unwrap();
        let e = c.policies().unwrap_err();
        assert!(matches!(e, ClientError::Tls { .. }), "{e}");
        assert!(e.to_string().contains("does it serve HTTPS?"), "{e}");
    })
    .await
    .unwrap();

    // Graceful stop with a TLS connection open and idle: done within the grace period, and
    // nothing is accepted afterwards.
    let tcp = tokio::net::TcpStream::connect(api).await.unwrap();
    let name = pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let _idle = tls_client(&ca).connect(name, tcp).await.unwrap();
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), running.stop())
        .await
        .expect("stops")
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3), "{:?}", t0.elapsed());
    assert!(tokio::net::TcpStream::connect(api).await.is_err());
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loopback_stays_plain_http_and_client_json_names_no_ca() {
    let dir = tmpdir("plain");
    let running = start(config(&dir)).await.unwrap();
    assert_eq!(running.api_url, format!("http://{}", running.api));
    let cj: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("client.json")).unwrap()).unwrap();
    assert_eq!(cj["server"], running.api_url);
    assert!(cj.get("ca").is_none(), "{cj}");
    let c = ClientConfig::read(&dir.join("client.json")).unwrap();
    tokio::task::spawn_blocking(move || {
        let c = Client::with_config(&c).unwrap();
        assert!(!c.sends_token_in_clear(), "loopback needs no warning");
        assert!(c.nodes().is_ok());
    })
    .await
    .unwrap();
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn beyond_loopback_the_api_gets_tls_unless_explicitly_insecure() {
    let mut cfg = Config::local("/nonexistent");
    cfg.api_listen = "0.0.0.0:7480".parse().unwrap();
    assert_eq!(cfg.api_transport(), ApiTransport::Https);
    cfg.api_listen = "192.0.2.10:7480".parse().unwrap();
    assert_eq!(cfg.api_transport(), ApiTransport::Https);
    cfg.api_insecure_http = true;
    assert_eq!(cfg.api_transport(), ApiTransport::InsecureHttp);
    cfg.api_listen = "127.0.0.1:7480".parse().unwrap();
    assert_eq!(cfg.api_transport(), ApiTransport::Http);
}

//! What the manager's integration tests share: manifests, a manager on loopback ports in a
//! temporary directory, REST calls, and agents joined over mTLS.
#![allow(dead_code, unused_imports)] // each test file uses its own part

pub use cellwall_manager::{start, Config};
pub use cellwall_proto::tonic::transport::{
    Certificate, Channel, ClientTlsConfig, Endpoint, Identity,
};
pub use cellwall_proto::tonic::Code;
pub use cellwall_proto::{
    AckRequest, AgentClient, BootstrapClient, JoinRequest, LocalWorkload, Payload, Reassembly,
    WatchRequest, PART_BYTES,
};
pub use serde_json::{json, Value};
pub use std::path::{Path, PathBuf};
pub use std::time::Duration;

pub const INVENTORY: &str = "
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

pub const POLICY: &str = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: shop, name: db-from-web}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";

/// The same pods with addresses in their manifests (no agent reports them in the REST test).
pub fn inventory_with_ips() -> String {
    INVENTORY
        .replace(
            "ports: [{containerPort: 80}]}]}",
            "ports: [{containerPort: 80}]}]}\nstatus: {podIP: 10.9.0.1}",
        )
        .replace(
            "ports: [{containerPort: 5432}]}]}",
            "ports: [{containerPort: 5432}]}], nodeName: n1}\nstatus: {podIP: 10.9.0.2}",
        )
}

pub fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-mgr-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

pub fn config(dir: &Path) -> Config {
    Config::local(dir)
}

pub fn token(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f))
        .unwrap()
        .trim()
        .to_string()
}

/// (status, body) of a REST call; never panics on an error status.
pub fn call(
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

pub fn apply_body(file: &str, text: &str) -> Value {
    json!({"documents": [{"file": file, "text": text}]})
}

pub async fn channel(
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
pub async fn joined(
    addr: std::net::SocketAddr,
    ca: &str,
    bootstrap: &str,
    node: &str,
) -> AgentClient<Channel> {
    let j = BootstrapClient::new(channel(addr, ca, None).await.unwrap())
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

/// A local webhook receiver: counts POSTs and keeps their bodies.
pub fn receiver() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
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

/// A manager on loopback with `manifests` applied, and the credentials it wrote.
pub struct World {
    pub running: cellwall_manager::Running,
    pub dir: PathBuf,
    pub base: String,
    pub admin: String,
    pub ca: String,
    pub boot: String,
}

impl World {
    pub async fn with(tag: &str, manifests: &str, tune: impl FnOnce(&mut Config)) -> World {
        let w = Self::start_in(tmpdir(tag), tune).await;
        let (s, v) = w
            .rest(
                "POST",
                "/v1/apply",
                Some(apply_body("world.yaml", manifests)),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        w
    }

    /// A manager on `dir`'s data (a new one, or what a stopped one left).
    async fn start_in(dir: PathBuf, tune: impl FnOnce(&mut Config)) -> World {
        let mut cfg = config(&dir);
        tune(&mut cfg);
        let running = start(cfg).await.unwrap();
        World {
            base: format!("http://{}", running.api),
            admin: token(&dir, "admin.token"),
            ca: std::fs::read_to_string(dir.join("ca.pem")).unwrap(),
            boot: token(&dir, "bootstrap.token"),
            running,
            dir,
        }
    }

    /// Stops the manager and starts it again on the same data, configured by `tune`.
    pub async fn restart(self, tune: impl FnOnce(&mut Config)) -> World {
        let dir = self.dir.clone();
        self.running.stop().await.unwrap();
        Self::start_in(dir, tune).await
    }

    /// `NAMESPACE/NAME` of every workload, sorted.
    pub async fn workload_names(&self) -> Vec<String> {
        let mut n: Vec<String> = self
            .workloads()
            .await
            .iter()
            .map(|x| {
                format!(
                    "{}/{}",
                    x["namespace"].as_str().unwrap(),
                    x["name"].as_str().unwrap()
                )
            })
            .collect();
        n.sort();
        n
    }

    /// A join over the bootstrap service with `token` as `node`.
    pub async fn join(
        &self,
        token: &str,
        node: &str,
    ) -> Result<cellwall_proto::JoinReply, cellwall_proto::tonic::Status> {
        BootstrapClient::new(channel(self.running.grpc, &self.ca, None).await.unwrap())
            .join(JoinRequest {
                token: token.into(),
                node: node.into(),
            })
            .await
            .map(|r| r.into_inner())
    }

    pub async fn rest(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.rest_as(Some(&self.admin), method, path, body).await
    }

    /// A REST call with another bearer token (or none).
    pub async fn rest_as(
        &self,
        token: Option<&str>,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let (b, t, m, p) = (
            self.base.clone(),
            token.map(str::to_string),
            method.to_string(),
            path.to_string(),
        );
        tokio::task::spawn_blocking(move || call(&b, &m, &p, t.as_deref(), body))
            .await
            .unwrap()
    }

    /// A new token of `role` (`extra` adds fields of the request); returns (id, secret).
    pub async fn new_token(&self, role: &str, extra: Value) -> (i64, String) {
        let mut body = json!({"role": role, "name": format!("test {role}")});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let (s, v) = self.rest("POST", "/v1/tokens", Some(body)).await;
        assert_eq!(s, 200, "{v}");
        (
            v["id"].as_i64().unwrap(),
            v["token"].as_str().unwrap().into(),
        )
    }

    pub async fn node(&self, name: &str) -> AgentClient<Channel> {
        joined(self.running.grpc, &self.ca, &self.boot, name).await
    }

    /// Opens a watch for `node` reporting `workloads`; returns the first state it gets.
    pub async fn report(&self, c: &mut AgentClient<Channel>, node: &str, w: Vec<LocalWorkload>) {
        let mut s = c
            .watch(WatchRequest {
                node: node.into(),
                applied_version: 0,
                workloads: w,
                agent_version: "forged".into(),
                accepts_parts: false,
            })
            .await
            .unwrap()
            .into_inner();
        s.message().await.unwrap().unwrap();
    }

    pub async fn explain(&self, from: &str, to: &str) -> (u16, Value) {
        self.rest(
            "GET",
            &format!("/v1/explain?from={from}&to={to}&probe=TCP/5432"),
            None,
        )
        .await
    }

    pub async fn workloads(&self) -> Vec<Value> {
        let (_, v) = self.rest("GET", "/v1/workloads", None).await;
        v["items"].as_array().unwrap().clone()
    }

    pub async fn node_item(&self, name: &str) -> Value {
        let (_, v) = self.rest("GET", "/v1/nodes", None).await;
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|n| n["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    pub async fn stop(self) {
        self.running.stop().await.unwrap();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls until `f` holds (watches are asynchronous); returns how long it took.
pub async fn until<F, Fut>(what: &str, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let t = std::time::Instant::now();
    while !f().await {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t.elapsed()
}

/// A record of web -> db (the shared inventory's addresses), seen entering the db once.
pub fn record(time_unix_ns: u64, port: u32) -> cellwall_proto::FlowRecord {
    cellwall_proto::FlowRecord {
        time_unix_ns,
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
        dst_names: Vec::new(),
    }
}

pub fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

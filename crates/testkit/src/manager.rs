//! A throwaway `cellwall-manager` process on free loopback ports, in its own directory; killed
//! and removed however the test or bench ends.

use crate::bin::Bin;
use cellwall_api::{ApplyRequest, Committed, Document};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// What the manager writes at start (`endpoints.json`).
#[derive(serde::Deserialize)]
struct Endpoints {
    api: String,
    grpc: String,
    pid: u32,
}

/// The manager process; killed and its directory removed however the bench ends.
pub struct Manager {
    child: Child,
    pub dir: PathBuf,
    /// `http://ADDR` of the REST API.
    pub api: String,
    /// `ADDR` of the gRPC service.
    pub grpc: String,
    pub admin: String,
    pub bootstrap: String,
    /// The CA certificate (PEM).
    pub ca: String,
}

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Manager {
    /// Starts `bin` (the `cellwall-manager` binary) in `$TMP/cw-NAME-bench-PID` and waits until
    /// it serves.
    pub fn start(bin: &Bin, name: &str) -> Manager {
        let dir = std::env::temp_dir().join(format!("cw-{name}-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("manager.log")).unwrap();
        let child = bin
            .command()
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
                // Benchmarks join hundreds of simulated agents from one address at once.
                "--join-burst",
                "100000",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start cellwall-manager (cargo build --release -p cellwall-manager)");
        let mut m = Manager {
            child,
            dir: dir.clone(),
            api: String::new(),
            grpc: String::new(),
            admin: String::new(),
            bootstrap: String::new(),
            ca: String::new(),
        };
        let t = Instant::now();
        let ep: Endpoints = loop {
            if let Ok(b) = std::fs::read(dir.join("endpoints.json")) {
                if let Ok(e) = serde_json::from_slice::<Endpoints>(&b) {
                    if e.pid == m.child.id() {
                        break e;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the manager did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        m.api = format!("http://{}", ep.api);
        m.grpc = ep.grpc;
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .to_string()
        };
        m.admin = read("admin.token");
        m.bootstrap = read("bootstrap.token");
        m.ca = read("ca.pem");
        m
    }

    /// Applies documents; returns the revision.
    pub fn apply(&self, file: &str, text: &str) -> u64 {
        let body = ApplyRequest {
            documents: vec![Document {
                file: file.into(),
                text: text.into(),
            }],
            ignore_unknown_kinds: false,
        };
        let r: Committed = ureq::post(&format!("{}/v1/apply", self.api))
            .set("Authorization", &format!("Bearer {}", self.admin))
            .send_json(body)
            .unwrap_or_else(|e| panic!("apply {file}: {e}"))
            .into_json()
            .unwrap();
        r.revision
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts the manager's peak resident size over ([`crate::proc::reset_peak`]).
    pub fn reset_peak(&self) {
        crate::proc::reset_peak(self.child.id())
    }

    /// CPU seconds (user + system) and resident memory now and at peak, in MiB.
    pub fn usage(&self) -> (f64, f64, f64) {
        crate::proc::usage(self.child.id())
    }

    /// Stops the manager (SIGKILL: what it acked must already be on disk) and leaves its
    /// directory for inspection until drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An mTLS channel to the manager's gRPC service (with `id`, a node's identity).
#[cfg(feature = "grpc")]
pub async fn channel(
    grpc: &str,
    ca: &str,
    id: Option<cellwall_proto::tonic::transport::Identity>,
) -> cellwall_proto::tonic::transport::Channel {
    use cellwall_proto::tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("127.0.0.1");
    if let Some(id) = id {
        tls = tls.identity(id);
    }
    let mut tries = 0;
    loop {
        let ep = Endpoint::from_shared(format!("https://{grpc}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .connect_timeout(Duration::from_secs(10));
        match ep.connect().await {
            Ok(c) => return c,
            Err(e) => {
                tries += 1;
                assert!(tries < 20, "connecting to the manager: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

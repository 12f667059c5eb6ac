//! What the manager benchmarks share: a real manager process, mTLS channels, /proc readings.
#![allow(dead_code)] // each bench uses its part

use cellwall_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: expected a number"))
        })
        .unwrap_or(default)
}

/// The manager process; killed and its directory removed however the bench ends.
pub struct Manager {
    child: Child,
    pub dir: PathBuf,
    pub api: String,
    pub grpc: String,
    pub admin: String,
    pub bootstrap: String,
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
    pub fn start(name: &str) -> Manager {
        let dir = std::env::temp_dir().join(format!("cw-{name}-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = std::fs::File::create(dir.join("manager.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cellwall-manager"))
            .arg("--data-dir")
            .arg(&dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--grpc-listen",
                "127.0.0.1:0",
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
        let ep: serde_json::Value = loop {
            if let Ok(b) = std::fs::read(dir.join("endpoints.json")) {
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&b) {
                    if v["pid"].as_u64() == Some(m.child.id() as u64) {
                        break v;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "the manager did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        m.api = format!("http://{}", ep["api"].as_str().unwrap());
        m.grpc = ep["grpc"].as_str().unwrap().to_string();
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
        let body = serde_json::json!({"documents": [{"file": file, "text": text}]});
        let r: serde_json::Value = ureq::post(&format!("{}/v1/apply", self.api))
            .set("Authorization", &format!("Bearer {}", self.admin))
            .send_json(body)
            .unwrap_or_else(|e| panic!("apply {file}: {e}"))
            .into_json()
            .unwrap();
        r["revision"].as_u64().expect("revision")
    }

    /// CPU seconds (user + system) and resident memory now and at peak, in MiB.
    pub fn usage(&self) -> (f64, f64, f64) {
        usage(self.child.id())
    }

    /// Stops the manager (SIGKILL: what it acked must already be on disk) and leaves its
    /// directory for inspection until drop.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn usage(pid: u32) -> (f64, f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split(' ').collect();
    // Fields 14 and 15 of stat (utime, stime), counted from after the command name.
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib = |k: &str| -> f64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (
        ticks / 100.0,
        kib("VmRSS:") / 1024.0,
        kib("VmHWM:") / 1024.0,
    )
}

pub async fn channel(grpc: &str, ca: &str, id: Option<Identity>) -> Channel {
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

pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// Goal: p99 < 1 s. Past `CELLWALL_BENCH_NOISE_FACTOR` × the goal the run fails (CI's band).
pub fn goal(failures: &mut Vec<String>, name: &str, p99_ms: f64) {
    let factor: f64 = std::env::var("CELLWALL_BENCH_NOISE_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let limit = 1000.0;
    let verdict = if p99_ms <= limit {
        "OK"
    } else if p99_ms <= limit * factor {
        "MISSED (within the noise band)"
    } else {
        "MISSED"
    };
    println!("  goal {name} p99 < 1 s: {p99_ms:.0} ms {verdict}");
    if p99_ms > limit * factor {
        failures.push(name.to_string());
    }
}

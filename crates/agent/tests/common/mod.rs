//! Shared by the agent's in-process tests: a two-pod model, the policies the tests switch
//! between, an endpoints file, and a real manager run in-process.
#![allow(dead_code)]

use cellwall_agent::{Config, EndpointsFile, LocalEndpoint};
use cellwall_datapath::FakeDatapath;
use cellwall_proto::StateDoc;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const A: &str = "10.0.0.1";
pub const B: &str = "10.0.0.2";

/// Namespace x with pods x/a (10.0.0.1) and x/b (10.0.0.2) on node n1, both serving TCP 80.
pub const MODEL: &str = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: a, labels: {app: a}}\n\
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}\n\
status: {podIP: 10.0.0.1}\n---\n\
apiVersion: v1\nkind: Pod\nmetadata: {namespace: x, name: b, labels: {app: b}}\n\
spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}\n\
status: {podIP: 10.0.0.2}\n";

/// Closes x/b to every ingress.
pub const B_CLOSED: &str = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
metadata: {namespace: x, name: b-closed}\n\
spec: {podSelector: {matchLabels: {app: b}}, policyTypes: [Ingress]}\n";

/// Lets x/a reach x/b on TCP 80 until `expires` (Unix seconds).
pub fn grant(expires: i64) -> String {
    let t = time_rfc3339(expires);
    format!(
        "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {{name: grant, namespace: x}}\n\
         spec:\n  podSelector: {{matchLabels: {{app: b}}}}\n  ingress:\n  - name: until\n    \
         from: [{{podSelector: {{matchLabels: {{app: a}}}}}}]\n    ports: [{{port: 80}}]\n    \
         expiresAt: \"{t}\"\n"
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` of Unix seconds `t` (civil-from-days, proleptic Gregorian).
fn time_rfc3339(t: i64) -> String {
    let (days, secs) = (t.div_euclid(86_400), t.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// The model plus `policies` as the manager would send it.
pub fn doc(policies: &[&str]) -> StateDoc {
    let mut yaml = MODEL.to_string();
    for p in policies {
        yaml.push_str("---\n");
        yaml.push_str(p);
    }
    let parsed = cellwall_policy::load::parse_file("test.yaml", &yaml).expect("test model");
    let (inv, pols) =
        cellwall_policy::load::into_model(parsed.objects.into_iter().map(|l| l.object));
    StateDoc::new(&inv, &pols)
}

/// Both pods behind their host-side veths cwa and cwb.
pub fn endpoints() -> EndpointsFile {
    let ep = |key: &str, ip: &str, i: &str, n| LocalEndpoint {
        key: key.into(),
        ips: vec![ip.parse().unwrap()],
        interface: i.into(),
        ifindex: n,
        nic: false,
        node: None,
    };
    EndpointsFile {
        nodes: vec![],
        endpoints: vec![ep("x/a", A, "cwa", 11), ep("x/b", B, "cwb", 12)],
    }
}

/// Whether the datapath lets x/a open TCP 80 on x/b.
pub fn a_reaches_b(dp: &FakeDatapath) -> bool {
    let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
    dp.decide(ip(A), ip(B), 6, 80)
}

/// Polls `f` every 20 ms until it holds; panics with `what` after `limit`.
pub fn wait_until(limit: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A real manager in this process, restartable on the same data directory and ports.
///
/// A restart is a new runtime too: `Running::stop` stops the listeners, but connections already
/// open are served by tasks of their own until their runtime ends (as they would until the
/// process ends), and an agent must see its watch stream break as in a real restart.
pub struct Manager {
    rt: Option<tokio::runtime::Runtime>,
    pub dir: PathBuf,
    running: Option<cellwall_manager::Running>,
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    tune: fn(&mut cellwall_manager::Config),
}

impl Manager {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, |_| {})
    }

    /// Started with a configuration `tune` adjusts (at every restart too).
    pub fn start_with(dir: &Path, tune: fn(&mut cellwall_manager::Config)) -> Self {
        let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let mut m = Self {
            rt: None,
            dir: dir.to_path_buf(),
            running: None,
            api: any,
            grpc: any,
            tune,
        };
        m.restart();
        m
    }

    fn config(&self) -> cellwall_manager::Config {
        let mut c = cellwall_manager::Config {
            api_listen: self.api,
            grpc_listen: self.grpc,
            ..cellwall_manager::Config::local(&self.dir)
        };
        (self.tune)(&mut c);
        c
    }

    /// Starts it (again, on the same ports once it ran).
    pub fn restart(&mut self) {
        assert!(self.running.is_none(), "already running");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let r = rt
            .block_on(cellwall_manager::start(self.config()))
            .expect("manager starts");
        self.rt = Some(rt);
        (self.api, self.grpc) = (r.api, r.grpc);
        self.running = Some(r);
    }

    pub fn stop(&mut self) {
        if let (Some(r), Some(rt)) = (self.running.take(), self.rt.take()) {
            rt.block_on(r.stop()).expect("manager stops");
            rt.shutdown_timeout(Duration::from_secs(2));
        }
    }

    pub fn client(&self) -> cellwall_api::client::Client {
        let c = cellwall_api::client::ClientConfig::read(&self.dir.join("client.json"))
            .expect("client.json");
        cellwall_api::client::Client::new(&c.server, &c.token)
    }

    /// Applies `yaml` (or deletes its objects); returns the new revision.
    pub fn apply(&self, yaml: &str, delete: bool) -> u64 {
        let req = cellwall_api::ApplyRequest {
            documents: vec![cellwall_api::Document {
                file: "test.yaml".into(),
                text: yaml.into(),
            }],
            ignore_unknown_kinds: false,
        };
        self.client().apply(&req, delete).expect("apply").revision
    }

    /// The revision the manager publishes.
    pub fn revision(&self) -> u64 {
        self.client().nodes().expect("nodes").revision
    }

    /// Waits until `node` acked the revision the manager publishes; returns it.
    pub fn settled(&self, node: &str) -> u64 {
        let mut rev = 0;
        wait_until(
            Duration::from_secs(20),
            "the node acks the latest revision",
            || {
                rev = self.revision();
                self.acked(node) == rev
            },
        );
        rev
    }

    /// The revision `node` acked (0 before it did).
    pub fn acked(&self, node: &str) -> u64 {
        self.client()
            .nodes()
            .expect("nodes")
            .items
            .iter()
            .find(|n| n.name == node)
            .map_or(0, |n| n.applied_version)
    }

    /// An agent configuration for node `n1` with its state in `state`, joining this manager.
    pub fn agent_config(&self, state: &Path) -> Config {
        let endpoints = state.with_extension("endpoints.json");
        std::fs::write(&endpoints, serde_json::to_vec(&self::endpoints()).unwrap()).unwrap();
        let mut c = Config::new(self.grpc.to_string(), self.dir.join("ca.pem"), "n1", state);
        c.bootstrap_token_file = Some(self.dir.join("bootstrap.token"));
        c.endpoints = Some(endpoints);
        c.visibility = false;
        c.flow_interval = Duration::from_millis(50);
        c.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
        c
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.stop();
    }
}

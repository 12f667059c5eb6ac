//! The manager in-process: its real REST router (`cellwall_manager::rest::router`) over a real
//! `Manager` (SQLite store, CA, published state), and the two agent calls that carry data
//! (a workload report and a flow batch), through the same conversions as the gRPC service.
//!
//! One manager is opened per fuzzing process (opening one takes a CA and a schema; per input it
//! would cost more than the request), in `$CELLWALL_FUZZ_DIR` or a directory under the system's
//! temporary directory, and loaded once with `examples/shop` (namespaces, five pods on node-1,
//! policies), a workload report from node-1 and some flow history, so explain, map, propose and
//! simulate have something to work on. State carries over between inputs (what one input
//! applies, the next sees), so a crash found late may need the inputs before it to reproduce:
//! libFuzzer's `-runs=` on the crash file alone is the first thing to try.
//!
//! Input (text; the first line says what, the rest is the body):
//! - `METHOD TARGET [AUTH]`: an HTTP request to the router. AUTH is `admin` (the default),
//!   `read`, `none` (no Authorization header) or a raw `Authorization` header value.
//! - `AGENT join`: the body is a protobuf `JoinRequest` (the token `bootstrap` stands for the
//!   first start's bootstrap token, which the input cannot know);
//! - `AGENT watch NODE` / `AGENT flows NODE` / `AGENT renew NODE`: the body is a protobuf
//!   `WatchRequest` / `FlowBatch` / `RenewRequest` from NODE, sent with the certificate NODE
//!   got when it joined or last renewed (node-1 and node-2 join at start; a NODE without a
//!   valid certificate is refused, as mTLS would).
//!
//! Asserts: no panic (in a handler, a blocking task or the manager: libFuzzer's panic hook
//! aborts on any of them); no 5xx answer; every error answer is an `ErrorBody`; a redirect goes
//! only to the console (`/ui/`); a simulation stream is NDJSON ending in a result or an error
//! that is not a server error.
//!
//! Nothing leaves the process: imports from a `location` (a file on this host or an http URL)
//! are refused before the manager sees them, and no webhook is configured.

#![no_main]

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use cellwall_api::*;
use cellwall_manager::error::ManagerError;
use cellwall_manager::services::{Authenticate, Discover, Objects, Observe, Respond};
use cellwall_manager::store::{Committed, FlowDirection, FlowRow, ReportedWorkload, Role, Verdict};
use cellwall_manager::{Config, Manager};
use cellwall_policy::Policy;
use cellwall_proto::{FlowBatch, JoinRequest, RenewRequest, WatchRequest};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tower::ServiceExt;

type R<T> = Result<T, ManagerError>;

/// The manager behind the traits the router needs, with fixed test tokens (so an input that
/// revokes the admin token does not lock every later input out) and imports kept local.
struct Fuzzed(Arc<Manager>);

impl Authenticate for Fuzzed {
    fn authenticate(&self, token: &str) -> R<Option<(Role, String)>> {
        match token {
            "fuzz-admin" => Ok(Some((Role::Admin, "fuzz-admin".into()))),
            "fuzz-read" => Ok(Some((Role::Read, "fuzz-read".into()))),
            // Tokens the inputs created, and everything else, as the manager sees them.
            _ => self.0.authenticate(token),
        }
    }
}

impl Objects for Fuzzed {
    fn apply(&self, actor: &str, req: &ApplyRequest, delete: bool) -> R<Committed> {
        Objects::apply(&*self.0, actor, req, delete)
    }
    fn policies(&self) -> R<PolicyList> {
        Objects::policies(&*self.0)
    }
    fn policy_history(&self, id: &str) -> R<PolicyHistory> {
        Objects::policy_history(&*self.0, id)
    }
    fn workloads(&self) -> R<WorkloadList> {
        Objects::workloads(&*self.0)
    }
    fn namespaces(&self) -> R<NamespaceList> {
        Objects::namespaces(&*self.0)
    }
    fn audit(&self, limit: usize) -> R<AuditLog> {
        Objects::audit(&*self.0, limit)
    }
    fn create_token(&self, actor: &str, req: &TokenRequest) -> R<TokenCreated> {
        Objects::create_token(&*self.0, actor, req)
    }
    fn tokens(&self) -> R<TokenList> {
        Objects::tokens(&*self.0)
    }
    fn revoke_token(&self, actor: &str, id: i64) -> R<Revoked> {
        Objects::revoke_token(&*self.0, actor, id)
    }
    fn revoke_node(&self, actor: &str, node: &str) -> R<Revoked> {
        Objects::revoke_node(&*self.0, actor, node)
    }
}

impl Observe for Fuzzed {
    fn nodes(&self) -> R<NodeList> {
        Observe::nodes(&*self.0)
    }
    fn flows(&self, q: &FlowQuery) -> R<FlowList> {
        Observe::flows(&*self.0, q)
    }
    fn alerts(&self, q: &AlertQuery) -> R<AlertList> {
        Observe::alerts(&*self.0, q)
    }
    fn metrics(&self) -> R<String> {
        Observe::metrics(&*self.0)
    }
}

impl Discover for Fuzzed {
    fn explain(&self, q: &ExplainQuery) -> R<ExplainResponse> {
        Discover::explain(&*self.0, q)
    }
    fn dependency_map(&self, q: &MapQuery) -> R<MapResponse> {
        Discover::dependency_map(&*self.0, q)
    }
    fn propose(&self, q: &ProposeQuery) -> R<ProposeResponse> {
        Discover::propose(&*self.0, q)
    }
    fn simulate(
        &self,
        candidate: Vec<Policy>,
        since_ms: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> R<SimulateResult> {
        Discover::simulate(&*self.0, candidate, since_ms, progress)
    }
    fn rules(&self, q: &RulesQuery) -> R<RuleList> {
        Discover::rules(&*self.0, q)
    }
    fn save_draft(&self, actor: &str, req: &DraftRequest) -> R<Draft> {
        Discover::save_draft(&*self.0, actor, req)
    }
    fn drafts(&self) -> R<DraftList> {
        Discover::drafts(&*self.0)
    }
    fn draft(&self, name: &str) -> R<Draft> {
        Discover::draft(&*self.0, name)
    }
    fn review(&self, actor: &str, req: &ReviewRequest) -> R<Draft> {
        Discover::review(&*self.0, actor, req)
    }
    fn draft_documents(&self, name: &str) -> R<Vec<Document>> {
        Discover::draft_documents(&*self.0, name)
    }
    fn apply_draft(&self, actor: &str, name: &str) -> R<DraftApplyResult> {
        Discover::apply_draft(&*self.0, actor, name)
    }
    fn delete_draft(&self, actor: &str, name: &str) -> R<Committed> {
        Discover::delete_draft(&*self.0, actor, name)
    }
}

impl Respond for Fuzzed {
    fn quarantine(&self, actor: &str, req: &QuarantineRequest) -> R<Committed> {
        Respond::quarantine(&*self.0, actor, req)
    }
    fn release(&self, actor: &str, workload: &str) -> R<Committed> {
        Respond::release(&*self.0, actor, workload)
    }
    fn quarantines(&self) -> R<QuarantineList> {
        Respond::quarantines(&*self.0)
    }
    fn import(&self, actor: &str, req: &ImportRequest) -> R<ImportResult> {
        if req.location.is_some() {
            // A file on this host or an http URL: never read from a fuzz input.
            return Err(ManagerError::Invalid("fuzzing: no import locations".into()));
        }
        Respond::import(&*self.0, actor, req)
    }
    fn imports(&self) -> R<ImportList> {
        Respond::imports(&*self.0)
    }
}

struct World {
    rt: tokio::runtime::Runtime,
    manager: Arc<Manager>,
    router: Router,
    bootstrap: String,
    /// The certificate hash (SHA-256 of the DER) each node got when it joined.
    certs: Mutex<HashMap<String, String>>,
}

fn join(manager: &Manager, certs: &Mutex<HashMap<String, String>>, token: &str, node: &str) {
    match manager.join(token, node, None) {
        Ok(issued) => {
            certs
                .lock()
                .unwrap()
                .insert(node.to_string(), issued.sha256);
        }
        Err(e) => check_manager_error::<()>(Err(e)),
    }
}

fn doc(file: &str, text: &str) -> Document {
    Document {
        file: file.into(),
        text: text.into(),
    }
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let dir = match std::env::var_os("CELLWALL_FUZZ_DIR") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::env::temp_dir().join(format!("cellwall-fuzz-rest-{}", std::process::id())),
        }
        .join(format!("manager-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (manager, _) = Manager::open(&Config::local(&dir)).expect("opening the manager");
        manager
            .apply(
                "fuzz",
                &[
                    doc(
                        "inventory.yaml",
                        include_str!("../../examples/shop/inventory.yaml"),
                    ),
                    doc(
                        "policies.yaml",
                        include_str!("../../examples/shop/policies.yaml"),
                    ),
                ],
                false,
                false,
            )
            .expect("the shop example applies");
        let bootstrap = std::fs::read_to_string(dir.join("bootstrap.token"))
            .expect("the bootstrap token")
            .trim()
            .to_string();
        let certs = Mutex::new(HashMap::new());
        join(&manager, &certs, &bootstrap, "node-1");
        join(&manager, &certs, &bootstrap, "node-2");
        assert_eq!(certs.lock().unwrap().len(), 2, "node-1 and node-2 join");
        // node-1 reports its pods (the manifests give them no address) and some traffic.
        let published = manager.published();
        let pods: Vec<_> = published.doc.workloads.to_vec();
        let report = pods
            .iter()
            .enumerate()
            .map(|(i, w)| ReportedWorkload {
                key: w.key().to_string(),
                ips: vec![format!("10.244.0.{}", i + 1)],
                interface: format!("veth{i}"),
                labels: Default::default(),
                host: false,
            })
            .collect();
        manager
            .report_workloads("node-1", report)
            .expect("node-1 reports its pods");
        let now_ns = cellwall_manager::now_ms() as u64 * 1_000_000;
        let mut rows = Vec::new();
        for (i, a) in pods.iter().enumerate() {
            for (j, b) in pods.iter().enumerate() {
                if i == j {
                    continue;
                }
                rows.push(FlowRow {
                    id: 0,
                    time_unix_ns: now_ns - (i * 10 + j) as u64 * 60_000_000_000,
                    node: "node-1".into(),
                    src: a.key().to_string(),
                    dst: b.key().to_string(),
                    src_ip: format!("10.244.0.{}", i + 1).parse().unwrap(),
                    dst_ip: format!("10.244.0.{}", j + 1).parse().unwrap(),
                    protocol: "TCP".into(),
                    port: [80, 8080, 5432, 6379][(i + j) % 4],
                    verdict: if (i + j) % 3 == 0 {
                        Verdict::Denied
                    } else {
                        Verdict::Allowed
                    },
                    direction: FlowDirection::Egress,
                    rule: None,
                    count: 1 + (i * j) as u64,
                    dst_names: Vec::new(),
                });
            }
        }
        manager
            .record_flows("node-1", rows, 1, 0, 0)
            .expect("node-1 reports flows");
        manager.flush_history().expect("history is written");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        let router = cellwall_manager::rest::router(
            Arc::new(Fuzzed(manager.clone())),
            cellwall_manager::rest::DEFAULT_BODY_LIMIT,
        );
        World {
            rt,
            manager,
            router,
            bootstrap,
            certs,
        }
    })
}

/// An agent call: a join, or a call from `node` with the certificate it joined with.
fn agent(w: &World, call: &str, node: &str, body: &[u8]) {
    if call == "join" {
        let Ok(mut r) = JoinRequest::decode(body) else {
            return;
        };
        if r.token == "bootstrap" {
            r.token = w.bootstrap.clone();
        }
        join(&w.manager, &w.certs, &r.token, &r.node);
        return;
    }
    // What the gRPC service checks first: the certificate is the one the store holds for a node,
    // and the node the call names is that one.
    let Some(hash) = w.certs.lock().unwrap().get(node).cloned() else {
        return;
    };
    match w.manager.node_by_cert(&hash) {
        Ok(Some(n)) if n == node => {}
        Ok(_) => return,
        Err(e) => return check_manager_error::<()>(Err(e)),
    }
    match call {
        "renew" => {
            let Ok(r) = RenewRequest::decode(body) else {
                return;
            };
            if r.node != node {
                return; // the service refuses a call naming another node than its certificate's
            }
            match w.manager.renew(node, &hash) {
                // The agent switches to the new certificate (the old one ends at its first use).
                Ok(issued) => {
                    w.certs
                        .lock()
                        .unwrap()
                        .insert(node.to_string(), issued.sha256);
                }
                Err(e) => check_manager_error::<()>(Err(e)),
            }
        }
        "watch" => {
            let Ok(req) = WatchRequest::decode(body) else {
                return;
            };
            let workloads = req
                .workloads
                .into_iter()
                .map(cellwall_manager::grpc::reported)
                .collect();
            check_manager_error(w.manager.report_workloads(node, workloads));
        }
        "flows" => {
            let Ok(b) = FlowBatch::decode(body) else {
                return;
            };
            // The service answers a record it cannot read with its tonic Status (large by
            // design); here only whether every record was read matters.
            let Some(rows) = b
                .records
                .into_iter()
                .map(|f| cellwall_manager::grpc::flow_row(node, f).ok())
                .collect::<Option<Vec<_>>>()
            else {
                return;
            };
            check_manager_error(w.manager.record_flows(
                node,
                rows,
                b.seq,
                b.kernel_events_lost,
                b.agent_records_dropped,
            ));
            check_manager_error(w.manager.flush_history());
        }
        _ => {}
    }
}

/// An agent's call may be refused, never fail inside the manager.
fn check_manager_error<T>(r: R<T>) {
    if let Err(e) = r {
        let status = e.kind().http_status();
        assert!(status < 500, "the manager failed ({status}): {e}");
    }
}

fn http(w: &World, method: &str, target: &str, auth: Option<&str>, body: &[u8]) {
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut req = Request::builder().method(method).uri(target);
    match auth.unwrap_or("admin") {
        "admin" => req = req.header("authorization", "Bearer fuzz-admin"),
        "read" => req = req.header("authorization", "Bearer fuzz-read"),
        "none" => {}
        raw => req = req.header("authorization", raw),
    }
    let Ok(req) = req.body(Body::from(body.to_vec())) else {
        return;
    };
    let simulate = req.uri().path() == "/v1/simulate";
    let (status, location, bytes) = w.rt.block_on(async {
        let resp = w
            .router
            .clone()
            .oneshot(req)
            .await
            .expect("the router answers");
        let status = resp.status();
        let location = resp.headers().get("location").cloned();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .expect("the body is read");
        (status, location, bytes)
    });
    let text = String::from_utf8_lossy(&bytes);
    assert!(!status.is_server_error(), "{status}: {text}");
    if status.is_redirection() {
        // Only `/` and `/ui` redirect, and only to the console.
        assert_eq!(
            location.as_ref().map(|l| l.as_bytes()),
            Some(&b"/ui/"[..]),
            "{status}: a redirect elsewhere than the console"
        );
    } else if status != StatusCode::OK {
        let e: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{status}: the error body is not an ErrorBody ({e}): {text}")
        });
        assert_eq!(e.error.status, status.as_u16(), "{text}");
    } else if simulate {
        let lines: Vec<SimulateLine> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        match lines.last() {
            Some(SimulateLine::Result(_)) => {}
            Some(SimulateLine::Error(d)) => assert!(d.status < 500, "simulation failed: {d:?}"),
            other => panic!("a simulation stream ends with {other:?}"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let w = world();
    let (head, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let Ok(head) = std::str::from_utf8(head) else {
        return;
    };
    let mut words = head.splitn(3, ' ');
    let (Some(first), Some(second)) = (words.next(), words.next()) else {
        return;
    };
    let third = words.next();
    if first == "AGENT" {
        agent(w, second, third.unwrap_or("node-1"), body);
    } else {
        http(w, first, second, third, body);
    }
});

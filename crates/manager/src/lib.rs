//! Cellwall's manager: the store, the REST API for people and scripts, and the mTLS gRPC service
//! that pushes versioned desired state to agents and takes their acks and flow records.
//!
//! Desired state is the model (namespaces, workloads, nodes, policies) tagged with the store
//! revision; each agent compiles its own node's tables with the policy crate. An agent gets the
//! whole model once (a deflated snapshot) and then only what changed (a delta per revision), so
//! a relabel among 100,000 workloads sends one workload to every node, not the model. Each
//! message is encoded once per revision for every agent.

pub mod alerts;
pub mod grpc;
pub mod history;
pub mod pki;
pub mod rest;
pub mod store;

use cellwall_policy::load::{parse_file, Object};
use cellwall_policy::{Engine, Policy, WorkloadKey};
use cellwall_proto::{DesiredState, LocalWorkload, StateDelta, StateDoc};
use pki::{sha256_hex, Ca};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use store::{Committed, Kind, Role, SqliteStore, Store, Write};
use tokio::sync::{broadcast, watch};

/// Small writes agents cause all at once (1,000 agents acking a revision, or reconnecting after
/// a manager restart), committed in groups by one thread: one transaction and one sync for
/// everything waiting, not one each.
enum Pending {
    Ack(
        store::AckRow,
        tokio::sync::oneshot::Sender<Result<(), ManagerError>>,
    ),
    Event(store::EventRow),
    Seen(String),
}

/// The group-commit thread (it ends when the manager is dropped).
fn group_writer(store: Arc<dyn Store>) -> std::sync::mpsc::Sender<Pending> {
    let (tx, rx) = std::sync::mpsc::channel::<Pending>();
    std::thread::Builder::new()
        .name("group-writer".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let (mut acks, mut waiters, mut events, mut seen) =
                    (Vec::new(), Vec::new(), Vec::new(), Vec::new());
                let mut next = Some(first);
                while let Some(p) = next.take() {
                    match p {
                        Pending::Ack(a, w) => {
                            acks.push(a);
                            waiters.push(w);
                        }
                        Pending::Event(e) => events.push(e),
                        Pending::Seen(n) => seen.push(n),
                    }
                    if acks.len() + events.len() + seen.len() < 4096 {
                        next = rx.try_recv().ok();
                    }
                }
                match store.record_many(&acks, &events, &seen) {
                    Ok(results) => {
                        for (done, r) in waiters.into_iter().zip(results) {
                            let _ = done.send(r.map_err(ManagerError::from));
                        }
                    }
                    Err(e) => {
                        // Events and marks have no one waiting: the log is where they fail.
                        eprintln!(
                            "recording {} acks, {} events, {} marks failed: {e}",
                            acks.len(),
                            events.len(),
                            seen.len()
                        );
                        let msg = e.to_string();
                        for done in waiters {
                            let _ = done.send(Err(ManagerError::Invalid(format!(
                                "recording the ack: {msg}"
                            ))));
                        }
                    }
                }
            }
        })
        .expect("spawning the group writer");
    tx
}

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("gRPC server: {0}")]
    Transport(#[from] cellwall_proto::tonic::transport::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagerError {
    let what = what.into();
    move |source| ManagerError::Io { what, source }
}

/// How the manager runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// CA, tokens, client config; the database too unless `db` says otherwise.
    pub data_dir: PathBuf,
    pub db: Option<PathBuf>,
    pub api_listen: SocketAddr,
    pub grpc_listen: SocketAddr,
    /// Extra names/addresses agents use to reach the manager (server certificate SANs).
    pub sans: Vec<String>,
    /// Flows and history older than this are deleted (hourly).
    pub retention_ms: u64,
    /// Alerts are POSTed (JSON) to each of these.
    pub webhooks: Vec<String>,
}

/// One revision of the desired state. Agents that hold the previous revision get `delta`
/// (encoded once for all of them); others get the snapshot, encoded once on first demand.
#[derive(Debug)]
pub struct Published {
    pub revision: u64,
    /// The revision `delta` starts from (0: none, the first state of this process).
    pub prev_revision: u64,
    pub doc: Arc<StateDoc>,
    pub delta: Option<Arc<DesiredState>>,
    /// Objects in `delta` (for logs and benchmarks).
    pub delta_objects: usize,
    snapshot: tokio::sync::OnceCell<Arc<DesiredState>>,
    by_key: OnceLock<HashMap<String, Arc<cellwall_policy::Workload>>>,
    pub issued_unix_ms: i64,
}

impl Published {
    /// `namespace/name` → workload, for attributing flow records (built once per revision, on
    /// first use: at 100,000 workloads, building it on every publish would cost a relabel ~50 ms).
    pub fn by_key(&self) -> &HashMap<String, Arc<cellwall_policy::Workload>> {
        self.by_key.get_or_init(|| {
            self.doc
                .workloads
                .iter()
                .map(|w| (w.key().to_string(), w.clone()))
                .collect()
        })
    }

    /// The whole model as one message (deflated JSON), encoded off the async threads once for
    /// every agent that needs it.
    pub async fn snapshot(&self) -> Arc<DesiredState> {
        self.snapshot
            .get_or_init(|| async {
                let (doc, rev, at) = (self.doc.clone(), self.revision, self.issued_unix_ms);
                let m = tokio::task::spawn_blocking(move || DesiredState::snapshot(rev, &doc, at))
                    .await
                    .expect("encoding a snapshot does not panic");
                Arc::new(m)
            })
            .await
            .clone()
    }
}

/// One published revision, as agent streams see it.
#[derive(Debug, Clone)]
pub struct Change {
    pub revision: u64,
    pub prev_revision: u64,
    pub delta: Option<Arc<DesiredState>>,
}

/// The stored objects as last read, updated with only what changed since (re-reading and parsing
/// 100,000 objects on every change would cost ~1 s), plus what agents reported.
#[derive(Default)]
struct Raw {
    revision: u64,
    namespaces: BTreeMap<String, cellwall_policy::Namespace>,
    /// In the published order, shared with the published documents.
    workloads: BTreeMap<WorkloadKey, Arc<cellwall_policy::Workload>>,
    nodes: BTreeMap<String, cellwall_policy::Node>,
    policies: BTreeMap<String, Policy>,
    imports: BTreeMap<String, LabelImport>,
    quarantines: BTreeMap<String, Quarantine>,
    reported: BTreeMap<String, Vec<ReportedWorkload>>,
    /// `reported` by workload (rebuilt when an agent reports something new).
    reported_by_key: Option<Arc<ReportedIndex>>,
}

#[derive(Default)]
struct ReportedIndex {
    /// Workload → (node, what its agent reported).
    by_key: HashMap<WorkloadKey, (String, ReportedWorkload)>,
    /// Hosts running the agent in host mode that no stored object describes.
    hosts: Vec<(String, WorkloadKey, ReportedWorkload)>,
}

/// Imported entries by what they match, in import order (later entries win).
#[derive(Default)]
struct ImportIndex<'a> {
    entries: Vec<&'a cellwall_policy::import::Entry>,
    by_ip: HashMap<std::net::IpAddr, Vec<usize>>,
    by_host: HashMap<&'a str, Vec<usize>>,
    by_key: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> ImportIndex<'a> {
    fn new(imports: &'a BTreeMap<String, LabelImport>) -> Self {
        use cellwall_policy::import::Target;
        let mut x = ImportIndex::default();
        for e in imports.values().flat_map(|i| &i.entries) {
            let n = x.entries.len();
            x.entries.push(e);
            match &e.target {
                Target::Ip(ip) => x.by_ip.entry(*ip).or_default().push(n),
                Target::Hostname(h) => x.by_host.entry(h.as_str()).or_default().push(n),
                Target::Workload(k) => x
                    .by_key
                    .entry((k.namespace.as_str(), k.name.as_str()))
                    .or_default()
                    .push(n),
            }
        }
        x
    }

    /// The entries matching `w`, in order.
    fn matching(&self, w: &cellwall_policy::Workload) -> Vec<usize> {
        if self.entries.is_empty() {
            return Vec::new();
        }
        let mut hits: Vec<usize> = Vec::new();
        for ip in &w.ips {
            hits.extend(self.by_ip.get(ip).into_iter().flatten());
        }
        hits.extend(self.by_host.get(w.name.as_str()).into_iter().flatten());
        hits.extend(
            self.by_key
                .get(&(w.namespace.as_str(), w.name.as_str()))
                .into_iter()
                .flatten(),
        );
        hits.sort_unstable();
        hits.dedup();
        hits
    }
}

impl Raw {
    fn set(&mut self, kind: Kind, key: String, body: Option<&str>) -> Result<(), ManagerError> {
        /// Stores the parsed body under `key`, or removes `key` when there is no body (deleted).
        fn put<K: Ord, T: serde::de::DeserializeOwned, V>(
            m: &mut BTreeMap<K, V>,
            key: K,
            body: Option<&str>,
            wrap: impl FnOnce(T) -> V,
        ) -> Result<(), serde_json::Error> {
            match body {
                Some(b) => {
                    m.insert(key, wrap(serde_json::from_str(b)?));
                }
                None => {
                    m.remove(&key);
                }
            }
            Ok(())
        }
        let k = key.clone();
        match kind {
            Kind::Namespace => put(&mut self.namespaces, k, body, |v| v),
            Kind::Pod => match WorkloadKey::parse(&k) {
                Some(wk) => put(&mut self.workloads, wk, body, Arc::new),
                None => Ok(()),
            },
            Kind::Node => put(&mut self.nodes, k, body, |v| v),
            Kind::Policy => put(&mut self.policies, k, body, |v| v),
            Kind::Import => put(&mut self.imports, k, body, |v| v),
            Kind::Quarantine => put(&mut self.quarantines, k, body, |v| v),
        }
        .map_err(|source| {
            store::StoreError::Corrupt {
                kind: kind.as_str().into(),
                key,
                source,
            }
            .into()
        })
    }

    fn reported_index(&mut self) -> Arc<ReportedIndex> {
        if let Some(x) = &self.reported_by_key {
            return x.clone();
        }
        let mut x = ReportedIndex::default();
        for (node, reported) in &self.reported {
            for r in reported {
                let Some(k) = WorkloadKey::parse(&r.key) else {
                    continue;
                };
                if r.host && !self.workloads.contains_key(&k) {
                    x.hosts.push((node.clone(), k, r.clone()));
                } else {
                    x.by_key.insert(k, (node.clone(), r.clone()));
                }
            }
        }
        let x = Arc::new(x);
        self.reported_by_key = Some(x.clone());
        x
    }

    /// The desired state: stored objects, with addresses and nodes of pods that agents reported
    /// and the manifests left open, imported labels, and quarantines. A workload none of these
    /// touch is the stored one itself (shared, not copied).
    fn derive(&mut self) -> Result<StateDoc, ManagerError> {
        let reported = self.reported_index();
        let imports = ImportIndex::new(&self.imports);
        let quarantined: HashMap<WorkloadKey, &Quarantine> = self
            .quarantines
            .values()
            .filter_map(|q| WorkloadKey::parse(&q.workload).map(|k| (k, q)))
            .collect();
        let mut policies: Vec<Policy> = self.policies.values().cloned().collect();
        let overlay = |mut w: cellwall_policy::Workload,
                       rep: Option<(&String, &ReportedWorkload)>,
                       policies: &mut Vec<Policy>|
         -> Result<cellwall_policy::Workload, ManagerError> {
            if let Some((node, r)) = rep {
                if w.ips.is_empty() {
                    w.ips = r.ips.iter().filter_map(|s| s.parse().ok()).collect();
                }
                if w.node.is_none() {
                    w.node = Some(node.clone());
                }
            }
            // Imported labels (prefixed per source), after addresses are known.
            for i in imports.matching(&w) {
                for (k, v) in &imports.entries[i].labels {
                    w.labels.insert(k.clone(), v.clone());
                }
            }
            // A quarantined workload carries a label only the manager sets, and a policy
            // outranking every other cuts it off both ways (but for the management exception).
            if let Some(q) = quarantined.get(&w.key()) {
                w.labels
                    .insert(QUARANTINE_LABEL.to_string(), w.name.clone());
                policies.push(q.policy()?);
            }
            Ok(w)
        };
        let mut workloads = Vec::with_capacity(self.workloads.len() + reported.hosts.len());
        for (k, w) in &self.workloads {
            let rep = reported
                .by_key
                .get(k)
                .filter(|_| w.ips.is_empty() || w.node.is_none())
                .map(|(n, r)| (n, r));
            if rep.is_none()
                && (imports.entries.is_empty() || imports.matching(w).is_empty())
                && !quarantined.contains_key(k)
            {
                workloads.push(w.clone());
                continue;
            }
            workloads.push(Arc::new(overlay(
                cellwall_policy::Workload::clone(w),
                rep,
                &mut policies,
            )?));
        }
        // A host running the agent in host mode is a workload of its own.
        for (node, k, r) in &reported.hosts {
            let w = cellwall_policy::Workload {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                labels: r.labels.clone(),
                ips: r.ips.iter().filter_map(|s| s.parse().ok()).collect(),
                ports: Vec::new(),
                node: Some(node.clone()),
                host_network: false,
            };
            workloads.push(Arc::new(overlay(w, None, &mut policies)?));
        }
        let mut doc = StateDoc {
            namespaces: self.namespaces.values().cloned().collect(),
            workloads,
            nodes: self.nodes.values().cloned().collect(),
            policies,
        };
        // Hosts were appended and policies are keyed by their store key: put every list in
        // key order (nearly free when it already is).
        doc.normalize();
        Ok(doc)
    }
}

pub struct Manager {
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    ca: Ca,
    tx: watch::Sender<Arc<Published>>,
    /// Every published revision's delta in order, for agent streams (a stream that falls
    /// behind gets a snapshot of the latest). Deltas only: the channel keeps its last 256
    /// messages, and 256 models of 100,000 workloads would be gigabytes.
    changes: broadcast::Sender<Change>,
    raw: Mutex<Raw>,
    publish_lock: Mutex<()>,
    /// Certificate hash → node, as the store says (every agent call is authenticated by it).
    certs: Mutex<HashMap<String, String>>,
    writes: Mutex<std::sync::mpsc::Sender<Pending>>,
    /// Connections not yet in the per-minute history (see [`Manager::flush_history`]).
    history_buf: Mutex<HistoryBuffer>,
    pub alerter: alerts::Alerter,
    /// The engine of the last published revision (compliance checks on every flow batch).
    engine_cache: Mutex<Option<(u64, Engine)>>,
    webhook_tx: Mutex<Option<std::sync::mpsc::SyncSender<alerts::Alert>>>,
}

/// Flow records waiting for the per-minute history, and the revisions that attribute them.
#[derive(Default)]
struct HistoryBuffer {
    records: history::Buffer,
    revisions: HashMap<u64, Arc<Published>>,
}

/// How often buffered connections reach the history and the compliance checks: the longer, the
/// more repeats of a connection are summed first (at 1 s, a busy manager still spent a fifth of
/// its time on history upserts); also the longest an alert waits and the most history a crash
/// can lose (flow records are committed before they are acknowledged, whatever this is).
const HISTORY_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Buffered connections past which a flush happens at once (bounds the buffer's memory).
const HISTORY_BUFFER_MAX: usize = 200_000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What was created at first start (printed once by the binary).
#[derive(Debug, Default)]
pub struct FirstStart {
    pub created: bool,
}

fn store_key(o: &Object) -> (Kind, String) {
    match o {
        Object::Namespace(n) => (Kind::Namespace, n.name.clone()),
        Object::Pod(w) => (Kind::Pod, w.key().to_string()),
        Object::Node(n) => (Kind::Node, n.name.clone()),
        Object::Policy(p) => (Kind::Policy, p.id.to_string()),
    }
}

fn body(o: &Object) -> String {
    match o {
        Object::Namespace(n) => serde_json::to_string(n),
        Object::Pod(w) => serde_json::to_string(w),
        Object::Node(n) => serde_json::to_string(n),
        Object::Policy(p) => serde_json::to_string(p),
    }
    .expect("the policy model always serializes")
}

/// A file sent for apply/delete: its name (for error messages) and text.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct Document {
    pub file: String,
    pub text: String,
}

impl Manager {
    /// Opens (or on first start, creates) the data directory, store, CA and tokens.
    pub fn open(cfg: &Config) -> Result<(Arc<Self>, FirstStart), ManagerError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(io_err(format!("creating {}", cfg.data_dir.display())))?;
        let db = cfg
            .db
            .clone()
            .unwrap_or_else(|| cfg.data_dir.join("cellwall.db"));
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&db)?);
        let (ca, created) = Ca::load_or_create(&cfg.data_dir)?;
        if created {
            for (file, role, prefix) in [
                ("admin.token", Role::Admin, "cwa_"),
                ("read.token", Role::Read, "cwr_"),
                ("bootstrap.token", Role::Bootstrap, "cwb_"),
            ] {
                let t = pki::new_token(prefix)?;
                store.add_token(&sha256_hex(t.as_bytes()), role, file)?;
                pki::write_private(&cfg.data_dir.join(file), format!("{t}\n").as_bytes())?;
            }
            store.log_event("manager", "first-start", "created CA and tokens")?;
        }
        let (tx, _) = watch::channel(Arc::new(Published {
            revision: 0,
            prev_revision: 0,
            doc: Arc::new(StateDoc::default()),
            delta: None,
            delta_objects: 0,
            snapshot: Default::default(),
            by_key: Default::default(),
            issued_unix_ms: now_ms(),
        }));
        let mut raw = Raw::default();
        for n in store.nodes()? {
            raw.reported.insert(
                n.name.clone(),
                serde_json::from_str(&n.workloads_json).unwrap_or_default(),
            );
        }
        let m = Arc::new(Self {
            writes: Mutex::new(group_writer(store.clone())),
            history_buf: Mutex::new(HistoryBuffer::default()),
            store,
            data_dir: cfg.data_dir.clone(),
            ca,
            tx,
            changes: broadcast::channel(256).0,
            raw: Mutex::new(raw),
            certs: Mutex::new(HashMap::new()),
            publish_lock: Mutex::new(()),
            alerter: alerts::Alerter::default(),
            engine_cache: Mutex::new(None),
            webhook_tx: Mutex::new(None),
        });
        m.publish()?;
        Ok((m, FirstStart { created }))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    pub fn published(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }

    /// Role and name behind a bearer token, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<(Role, String)>, ManagerError> {
        Ok(self.store.token_role(&sha256_hex(token.as_bytes()))?)
    }

    /// Every revision published from now on, in order (agent streams).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    /// The desired state as of the store now (see [`Raw::derive`]), read incrementally.
    pub fn load_state(&self) -> Result<(u64, StateDoc), ManagerError> {
        let mut raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        // Read the revision first: the content is then at least as new as its label, never
        // older (and re-reading a change the next time is harmless).
        let revision = self.store.revision()?;
        for (kind, key, body) in self.store.changes_since(raw.revision)? {
            raw.set(kind, key, body.as_deref())?;
        }
        raw.revision = revision;
        Ok((revision, raw.derive()?))
    }

    /// Pushes the store's current state to every watching agent if it is newer than what was
    /// last pushed.
    pub fn publish(&self) -> Result<u64, ManagerError> {
        let _g = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.published();
        let t = std::time::Instant::now();
        let (revision, doc) = self.load_state()?;
        let loaded = t.elapsed();
        if revision > cur.revision || cur.revision == 0 {
            let issued_unix_ms = now_ms();
            let (delta, delta_objects) = if cur.revision == 0 {
                (None, 0)
            } else {
                let d = StateDelta::between(&cur.doc, &doc);
                let n = d.len();
                (
                    Some(Arc::new(DesiredState::delta(
                        revision,
                        cur.revision,
                        &d,
                        issued_unix_ms,
                    ))),
                    n,
                )
            };
            let p = Arc::new(Published {
                revision,
                prev_revision: cur.revision,
                doc: Arc::new(doc),
                delta,
                delta_objects,
                snapshot: Default::default(),
                by_key: Default::default(),
                issued_unix_ms,
            });
            let change = Change {
                revision,
                prev_revision: cur.revision,
                delta: p.delta.clone(),
            };
            self.tx.send_replace(p);
            // No stream listening is fine.
            let _ = self.changes.send(change);
            eprintln!(
                "published revision {revision}: {delta_objects} objects changed \
                 (state read and derived in {:.1} ms, delta in {:.1} ms)",
                loaded.as_secs_f64() * 1e3,
                (t.elapsed() - loaded).as_secs_f64() * 1e3
            );
        }
        Ok(revision)
    }

    /// The node a certificate (by hash) belongs to; cached, since every agent call asks.
    pub fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<String>, ManagerError> {
        if let Some(n) = self
            .certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(cert_sha256)
        {
            return Ok(Some(n.clone()));
        }
        let n = self.store.node_by_cert(cert_sha256)?;
        if let Some(n) = &n {
            self.certs
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(cert_sha256.to_string(), n.clone());
        }
        Ok(n)
    }

    /// Records an event without waiting for the commit (group-committed with others).
    pub fn log_event_later(&self, actor: &str, action: &str, detail: &str) {
        let _ = self
            .writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Pending::Event(store::EventRow {
                actor: actor.into(),
                action: action.into(),
                detail: detail.into(),
            }));
    }

    /// Records an agent's ack. Acks are committed in groups (one transaction and one sync for
    /// every ack waiting), so 1,000 agents acking at once cost a few commits, not 1,000.
    pub async fn ack(&self, row: store::AckRow) -> Result<(), ManagerError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.writes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Pending::Ack(row, done))
            .map_err(|_| ManagerError::Invalid("the manager is shutting down".into()))?;
        wait.await
            .map_err(|_| ManagerError::Invalid("the manager is shutting down".into()))?
    }

    /// Parses documents with the policy crate (same errors as `cellwall analyze`) and writes every
    /// object they hold in one transaction, or nothing.
    pub fn apply(
        &self,
        actor: &str,
        docs: &[Document],
        delete: bool,
        ignore_unknown: bool,
    ) -> Result<Committed, ManagerError> {
        let mut writes: Vec<Write> = Vec::new();
        let mut seen = std::collections::BTreeMap::new();
        for d in docs {
            let parsed =
                parse_file(&d.file, &d.text).map_err(|e| ManagerError::Invalid(e.to_string()))?;
            if let Some(u) = parsed.unknown.first() {
                if !ignore_unknown {
                    return Err(ManagerError::Invalid(format!(
                        "{u} (ignore_unknown_kinds skips objects of other kinds)"
                    )));
                }
            }
            for o in parsed.objects {
                let (kind, key) = store_key(&o.object);
                if let Some(first) = seen.insert((kind, key.clone()), o.source.clone()) {
                    return Err(ManagerError::Invalid(format!(
                        "{}: {} is defined twice (first at {first})",
                        o.source,
                        o.object.describe()
                    )));
                }
                writes.push(Write {
                    kind,
                    key,
                    body: (!delete).then(|| body(&o.object)),
                });
            }
        }
        if writes.is_empty() {
            return Err(ManagerError::Invalid("no objects in the documents".into()));
        }
        let c = self.store.write(actor, &writes)?;
        self.publish()?;
        Ok(c)
    }

    /// Runs `f` on the engine of the published revision: built once per revision (and again
    /// when a grant in it expires), shared by explain, proposals and compliance checks.
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine, &Published) -> R) -> R {
        let p = self.published();
        let now = now_ms() / 1000;
        let mut cache = self.engine_cache.lock().unwrap_or_else(|p| p.into_inner());
        let stale = match cache.as_ref() {
            Some((rev, e)) => *rev != p.revision || e.next_expiry().is_some_and(|t| t <= now),
            None => true,
        };
        if stale {
            let e = Engine::build(p.doc.inventory(), p.doc.policies.iter().cloned(), now);
            *cache = Some((p.revision, e));
        }
        f(&cache.as_ref().expect("set above").1, &p)
    }

    /// Records an agent's local workloads; republishes when that changes the state.
    pub fn report_workloads(
        &self,
        node: &str,
        workloads: &[LocalWorkload],
    ) -> Result<(), ManagerError> {
        let mut v: Vec<ReportedWorkload> = workloads
            .iter()
            .map(|w| ReportedWorkload {
                key: w.key.clone(),
                ips: w.ips.clone(),
                interface: w.interface.clone(),
                labels: w.labels.clone().into_iter().collect(),
                host: w.host,
            })
            .collect();
        v.sort_by(|a, b| a.key.cmp(&b.key));
        let json = serde_json::to_string(&v).expect("serializes");
        let mut raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let same = raw
            .reported
            .get(node)
            .is_some_and(|old| serde_json::to_string(old).is_ok_and(|o| o == json));
        if same {
            // Nothing new (a reconnect): only "seen", committed with others.
            let _ = self
                .writes
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(Pending::Seen(node.to_string()));
            return Ok(());
        }
        if self.store.report_workloads(node, &json)?.is_some() {
            raw.reported.insert(node.to_string(), v);
            raw.reported_by_key = None;
            drop(raw);
            self.publish()?;
        }
        Ok(())
    }

    /// Stores a batch of an agent's flow records: raw (for `flows`) and as connections in the
    /// per-minute history, attributed with the labels workloads have now.
    pub fn record_flows(
        &self,
        node: &str,
        rows: &[store::FlowRow],
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize, ManagerError> {
        // The records themselves are durable before the agent hears back.
        let n = self
            .store
            .insert_flows(node, rows, seq, kernel_lost, agent_dropped)?;
        let p = self.published();
        let full = {
            let mut b = self.history_buf.lock().unwrap_or_else(|p| p.into_inner());
            b.revisions.entry(p.revision).or_insert_with(|| p.clone());
            b.records.add(p.revision, rows);
            b.records.len() >= HISTORY_BUFFER_MAX
        };
        if full {
            self.flush_history()?;
        }
        Ok(n)
    }

    /// Writes the buffered connections to the per-minute history and checks them for
    /// compliance (every [`HISTORY_FLUSH`], before history or alerts are read, at shutdown, and
    /// when the buffer is full). A crash loses at most that much history, never flow records.
    pub fn flush_history(&self) -> Result<usize, ManagerError> {
        let (mut records, revisions) = {
            let mut b = self.history_buf.lock().unwrap_or_else(|p| p.into_inner());
            (
                std::mem::take(&mut b.records),
                std::mem::take(&mut b.revisions),
            )
        };
        // Attributed with the labels of the revision in force when each record arrived.
        let hist = records.take(|r| revisions.get(&r).map(|p| p.by_key()));
        if hist.is_empty() {
            return Ok(0);
        }
        self.store.add_history(&hist)?;
        self.check_compliance(&hist)?;
        Ok(hist.len())
    }

    /// Compares connections with the policy in force; stores, logs and delivers the alerts.
    fn check_compliance(&self, hist: &[store::HistRow]) -> Result<(), ManagerError> {
        let now = now_ms();
        let mut alerts = self.with_engine(|e, p| self.alerter.check(e, &p.doc.policies, hist, now));
        if alerts.is_empty() {
            return Ok(());
        }
        self.store.add_alerts(&mut alerts)?;
        let tx = self.webhook_tx.lock().unwrap_or_else(|p| p.into_inner());
        for a in alerts {
            eprintln!(
                "ALERT {} [{}] {} -> {} {}/{}: {}{}",
                a.id,
                a.kind,
                a.src,
                a.dst,
                a.protocol,
                a.port,
                a.message,
                a.rule
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            if let Some(tx) = tx.as_ref() {
                if tx.try_send(a).is_err() {
                    self.alerter
                        .webhook_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// History since `since_ms` ago.
    pub fn history(
        &self,
        since_ms: u64,
    ) -> Result<Vec<cellwall_policy::discover::HistFlow>, ManagerError> {
        let since_ns = (now_ms() as u64).saturating_sub(since_ms) * 1_000_000;
        self.flush_history()?;
        Ok(self.store.history_since(since_ns)?)
    }

    /// Replays history against the policies in force and the candidate documents (added to them,
    /// replacing policies of the same name). `progress(done, total)` sees the replay advance.
    pub fn simulate(
        &self,
        candidate: Vec<Policy>,
        since_ms: u64,
        progress: impl FnMut(usize, usize),
    ) -> Result<serde_json::Value, ManagerError> {
        use cellwall_policy::discover::{simulate, Replay};
        let t0 = std::time::Instant::now();
        let flows = self.history(since_ms)?;
        let read = t0.elapsed();
        let p = self.published();
        let replay = Replay::new(&p.doc.inventory(), &flows);
        let now = now_ms() / 1000;
        let cur_policies = p.doc.policies.clone();
        let mut cand_policies: std::collections::BTreeMap<_, _> = cur_policies
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        let ids: Vec<String> = candidate.iter().map(|p| p.id.to_string()).collect();
        for c in candidate {
            cand_policies.insert(c.id.clone(), c);
        }
        let current = Engine::build(replay.inventory.clone(), cur_policies, now);
        let cand = Engine::build(replay.inventory.clone(), cand_policies.into_values(), now);
        let t1 = std::time::Instant::now();
        let (summary, rows) = simulate(&replay, &current, &cand, &flows, progress);
        let classes: serde_json::Map<String, serde_json::Value> = summary
            .classes
            .iter()
            .map(|(c, (f, n))| {
                (
                    serde_json::to_value(c)
                        .expect("json")
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    serde_json::json!({"flows": f, "connections": n}),
                )
            })
            .collect();
        Ok(serde_json::json!({
            "candidate": ids,
            "flows": summary.flows,
            "breakage": summary.breakage(),
            "summary": classes,
            "details": rows,
            "read_ms": read.as_millis() as u64,
            "replay_ms": t1.elapsed().as_millis() as u64,
        }))
    }

    /// Imports labels for `source` from `text` (all or nothing: a bad file changes nothing).
    /// Returns the commit and, per entry, how many workloads it matched.
    pub fn import_labels(
        &self,
        actor: &str,
        source: &str,
        origin: &str,
        text: &str,
        location: Option<String>,
        every_ms: Option<u64>,
    ) -> Result<(Committed, Vec<usize>), ManagerError> {
        let entries = cellwall_policy::import::parse(origin, text, source)
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let mut inv = self.published().doc.inventory();
        let matched = cellwall_policy::import::apply(&mut inv, &entries);
        let rec = LabelImport {
            source: source.to_string(),
            origin: origin.to_string(),
            entries,
            every_ms,
            location,
        };
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Import,
                key: source.to_string(),
                body: Some(serde_json::to_string(&rec).expect("json")),
            }],
        )?;
        if c.changes[0].action != "unchanged" {
            self.store.log_event(
                actor,
                "import",
                &format!("{source}: {} entries from {origin}", rec.entries.len()),
            )?;
        }
        self.publish()?;
        Ok((c, matched))
    }

    /// Runs the scheduled imports that are due; failures are recorded as events and change
    /// nothing.
    pub fn run_scheduled_imports(&self, last: &mut std::collections::HashMap<String, i64>) {
        let Ok(cur) = self.store.current(Some(Kind::Import)) else {
            return;
        };
        for c in cur {
            let Ok(i) = serde_json::from_str::<LabelImport>(&c.body) else {
                continue;
            };
            let (Some(loc), Some(every)) = (&i.location, i.every_ms) else {
                continue;
            };
            let now = now_ms();
            let due = last.get(&i.source).is_none_or(|t| now - t >= every as i64);
            if !due {
                continue;
            }
            last.insert(i.source.clone(), now);
            let r = read_location(loc).and_then(|text| {
                self.import_labels(
                    "scheduler",
                    &i.source,
                    loc,
                    &text,
                    Some(loc.clone()),
                    Some(every),
                )
            });
            if let Err(e) = r {
                let _ = self.store.log_event(
                    "scheduler",
                    "import-failed",
                    &format!("{}: {e}", i.source),
                );
            }
        }
    }

    /// Cuts a workload off (or updates its quarantine); recorded like any change.
    pub fn quarantine(&self, actor: &str, q: Quarantine) -> Result<Committed, ManagerError> {
        let k = WorkloadKey::parse(&q.workload).ok_or_else(|| {
            ManagerError::Invalid(format!("{}: expected NAMESPACE/NAME", q.workload))
        })?;
        if !self.published().doc.workloads.iter().any(|w| w.key() == k) {
            return Err(ManagerError::Invalid(format!("no workload {k}")));
        }
        q.policy()?; // validates the exception
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Quarantine,
                key: k.to_string(),
                body: Some(serde_json::to_string(&q).expect("json")),
            }],
        )?;
        self.store
            .log_event(actor, "quarantine", &format!("{k}: {}", q.reason))?;
        self.publish()?;
        Ok(c)
    }

    pub fn release(&self, actor: &str, workload: &str) -> Result<Committed, ManagerError> {
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Quarantine,
                key: workload.to_string(),
                body: None,
            }],
        )?;
        if c.changes[0].action == "not found" {
            return Err(ManagerError::Invalid(format!(
                "{workload} is not quarantined"
            )));
        }
        self.store.log_event(actor, "release", workload)?;
        self.publish()?;
        Ok(c)
    }

    /// Signs a node certificate for a valid bootstrap token.
    pub fn join(&self, token: &str, node: &str) -> Result<(String, String), ManagerError> {
        if !matches!(self.authenticate(token)?, Some((Role::Bootstrap, _))) {
            self.store.log_event(
                &format!("node:{node}"),
                "join-refused",
                "bad bootstrap token",
            )?;
            return Err(ManagerError::Unauthorized("invalid bootstrap token".into()));
        }
        if !valid_node_name(node) {
            return Err(ManagerError::Invalid(format!(
                "node name {node:?}: expected 1-63 characters of a-z, 0-9, '-', '.'"
            )));
        }
        let (cert, key, hash) = self.ca.node_cert(node)?;
        self.store.join_node(node, &hash)?;
        // The node's previous certificate stops working now.
        self.certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, n| n != node);
        self.store
            .log_event(&format!("node:{node}"), "join", "node certificate issued")?;
        Ok((cert, key))
    }

    /// Writes `client.json` (server and admin token: what the CLI reads) and `endpoints.json`.
    pub fn write_client_config(
        &self,
        api: SocketAddr,
        grpc: SocketAddr,
    ) -> Result<(), ManagerError> {
        let token = std::fs::read_to_string(self.data_dir.join("admin.token"))
            .map_err(io_err("reading admin.token"))?;
        let cfg = serde_json::json!({
            "server": format!("http://{api}"),
            "token": token.trim(),
        });
        pki::write_private(
            &self.data_dir.join("client.json"),
            serde_json::to_string_pretty(&cfg).expect("json").as_bytes(),
        )?;
        let ep = serde_json::json!({
            "api": api.to_string(),
            "grpc": grpc.to_string(),
            "pid": std::process::id(),
        });
        let p = self.data_dir.join("endpoints.json");
        std::fs::write(&p, ep.to_string()).map_err(io_err("writing endpoints.json"))
    }
}

/// The policies of candidate documents (nothing else may be in them).
pub fn parse_candidate(docs: &[Document]) -> Result<Vec<Policy>, ManagerError> {
    let mut candidate: Vec<Policy> = Vec::new();
    for d in docs {
        let parsed =
            parse_file(&d.file, &d.text).map_err(|e| ManagerError::Invalid(e.to_string()))?;
        if let Some(u) = parsed.unknown.first() {
            return Err(ManagerError::Invalid(u.to_string()));
        }
        for o in parsed.objects {
            match o.object {
                Object::Policy(p) => candidate.push(*p),
                other => {
                    return Err(ManagerError::Invalid(format!(
                        "{}: a candidate holds policies; {} is not one",
                        o.source,
                        other.describe()
                    )))
                }
            }
        }
    }
    if candidate.is_empty() {
        return Err(ManagerError::Invalid(
            "the candidate documents hold no policy".into(),
        ));
    }
    Ok(candidate)
}

/// Labels from one outside source, as last imported.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct LabelImport {
    pub source: String,
    /// File name or URL the entries came from.
    pub origin: String,
    pub entries: Vec<cellwall_policy::import::Entry>,
    /// Re-import from `location` this often (milliseconds); none for one-off imports.
    pub every_ms: Option<u64>,
    /// A path on the manager's host or an http:// URL.
    pub location: Option<String>,
}

/// Reads an import location: a file on the manager's host or an http:// URL.
pub fn read_location(location: &str) -> Result<String, ManagerError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        if location.starts_with("https://") {
            return Err(ManagerError::Invalid(format!(
                "{location}: https is not supported yet; use http:// on a trusted network or a file"
            )));
        }
        let resp = ureq::get(location)
            .timeout(std::time::Duration::from_secs(30))
            .call()
            .map_err(|e| ManagerError::Invalid(format!("{location}: {e}")))?;
        resp.into_string()
            .map_err(|e| ManagerError::Invalid(format!("{location}: {e}")))
    } else {
        // The location is the caller's input: a missing file is their error, not the manager's.
        std::fs::read_to_string(location).map_err(|e| {
            ManagerError::Invalid(format!("reading {location:?} on the manager's host: {e}"))
        })
    }
}

/// The label a quarantined workload carries (value: its name).
pub const QUARANTINE_LABEL: &str = "quarantine.cellwall.io/pod";

/// A quarantine as stored.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct Quarantine {
    /// `namespace/name`.
    pub workload: String,
    pub reason: String,
    /// Management exception: `k=v,...` (pods with these labels in any namespace) or
    /// `cidr:ADDR/LEN`.
    pub allow_from: Option<String>,
}

/// Parses `k=v,k2=v2` into YAML `matchLabels`, or `cidr:X` into a CIDR peer.
fn exception_peer(s: &str) -> Result<String, ManagerError> {
    if let Some(c) = s.strip_prefix("cidr:") {
        let cidr: cellwall_policy::Cidr = c
            .parse()
            .map_err(|e| ManagerError::Invalid(format!("allow_from {s:?}: {e}")))?;
        return Ok(format!(
            "{{cidr: {}}}",
            serde_json::to_string(&cidr.to_string()).expect("json")
        ));
    }
    let mut labels = Vec::new();
    for kv in s.split(',') {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(ManagerError::Invalid(format!(
                "allow_from {s:?}: expected k=v[,k=v...] (pod labels) or cidr:ADDR/LEN"
            )));
        };
        labels.push(format!(
            "{}: {}",
            serde_json::to_string(k.trim()).expect("json"),
            serde_json::to_string(v.trim()).expect("json")
        ));
    }
    Ok(format!(
        "{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{{}}}}}}}",
        labels.join(", ")
    ))
}

impl Quarantine {
    /// The policy that enforces it: admin tier, ahead of every other policy.
    pub fn policy(&self) -> Result<Policy, ManagerError> {
        let k = WorkloadKey::parse(&self.workload)
            .ok_or_else(|| ManagerError::Invalid(format!("{}: expected NS/NAME", self.workload)))?;
        let exception = match &self.allow_from {
            Some(a) => format!(
                "  - name: management-exception\n    from: [{}]\n",
                exception_peer(a)?
            ),
            None => String::new(),
        };
        let yaml = format!(
            "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  tier: admin\n  priority: -1000000\n  podSelector: {{matchLabels: {{{label}: {pod}}}}}\n  ingress:\n{exception}  - name: quarantine\n    action: Deny\n    from: [{{entity: all}}]\n  egress:\n  - name: quarantine\n    action: Deny\n    to: [{{entity: all}}]\n",
            name = serde_json::to_string(&format!("quarantine-{}", k.name)).expect("json"),
            ns = serde_json::to_string(&k.namespace).expect("json"),
            label = serde_json::to_string(QUARANTINE_LABEL).expect("json"),
            pod = serde_json::to_string(&k.name).expect("json"),
        );
        let parsed = parse_file("quarantine", &yaml)
            .map_err(|e| ManagerError::Invalid(format!("quarantine policy: {e}")))?;
        match parsed.objects.into_iter().next().map(|o| o.object) {
            Some(Object::Policy(p)) => Ok(*p),
            _ => Err(ManagerError::Invalid(
                "quarantine policy did not parse".into(),
            )),
        }
    }
}

/// What an agent reported of one local workload (stored per node).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ReportedWorkload {
    pub key: String,
    pub ips: Vec<String>,
    pub interface: String,
    #[serde(default)]
    pub labels: cellwall_policy::Labels,
    #[serde(default)]
    pub host: bool,
}

fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The running servers.
pub struct Running {
    pub api: SocketAddr,
    pub grpc: SocketAddr,
    pub manager: Arc<Manager>,
    pub first_start: FirstStart,
    shutdown: tokio::sync::watch::Sender<bool>,
    tasks: tokio::task::JoinSet<Result<(), ManagerError>>,
}

impl Running {
    /// Stops the servers: new connections are refused at once, open ones (agents' watch
    /// streams never end by themselves) get two seconds, then are cut.
    pub async fn stop(mut self) -> Result<(), ManagerError> {
        let _ = self.shutdown.send(true);
        let grace = tokio::time::sleep(std::time::Duration::from_secs(2));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => match r {
                    None => return Ok(()),
                    Some(r) => r.map_err(|e| ManagerError::Invalid(format!("server task: {e}")))??,
                },
                _ = &mut grace => {
                    self.tasks.abort_all();
                    return Ok(());
                }
            }
        }
    }

    /// Waits until a server fails (they never end on their own).
    pub async fn wait(&mut self) -> Result<(), ManagerError> {
        match self.tasks.join_next().await {
            Some(r) => r.map_err(|e| ManagerError::Invalid(format!("server task: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Opens the manager and starts the REST and gRPC servers.
pub async fn start(cfg: Config) -> Result<Running, ManagerError> {
    let (m, first_start) = Manager::open(&cfg)?;
    let api_l = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(io_err(format!("binding the API to {}", cfg.api_listen)))?;
    let grpc_l = tokio::net::TcpListener::bind(cfg.grpc_listen)
        .await
        .map_err(io_err(format!("binding gRPC to {}", cfg.grpc_listen)))?;
    let api = api_l.local_addr().map_err(io_err("API address"))?;
    let grpc = grpc_l.local_addr().map_err(io_err("gRPC address"))?;
    let mut sans = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".into(),
    ];
    sans.extend(cfg.sans.iter().cloned());
    if !grpc.ip().is_unspecified() {
        sans.push(grpc.ip().to_string());
    }
    let (cert, key) = m.ca.server_cert(&sans)?;
    m.write_client_config(api, grpc)?;
    // Compliance: edges already in history are not new; webhooks get their own thread.
    let day_ago = (now_ms() as u64).saturating_sub(86_400_000) * 1_000_000;
    m.alerter.learn(&m.store.history_since(day_ago)?);
    if !cfg.webhooks.is_empty() {
        let (wtx, wrx) = std::sync::mpsc::sync_channel(1000);
        *m.webhook_tx.lock().unwrap_or_else(|p| p.into_inner()) = Some(wtx);
        let urls = cfg.webhooks.clone();
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || alerts::deliver(urls, wrx))
            .map_err(io_err("starting the webhook thread"))?;
    }
    let (shutdown, rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    // Scheduled label imports.
    let (m4, mut rx4) = (m.clone(), rx.clone());
    tasks.spawn(async move {
        let last = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        loop {
            let (m, last) = (m4.clone(), last.clone());
            let _ = tokio::task::spawn_blocking(move || {
                let mut l = last.lock().unwrap_or_else(|p| p.into_inner());
                m.run_scheduled_imports(&mut l)
            })
            .await;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                _ = rx4.wait_for(|s| *s) => return Ok(()),
            }
        }
    });
    // History: buffered connections written every few seconds, and once more at shutdown.
    let (m5, mut rx5) = (m.clone(), rx.clone());
    tasks.spawn(async move {
        loop {
            let stop = tokio::select! {
                _ = tokio::time::sleep(HISTORY_FLUSH) => false,
                _ = rx5.wait_for(|s| *s) => true,
            };
            let m = m5.clone();
            match tokio::task::spawn_blocking(move || m.flush_history()).await {
                Ok(Err(e)) => eprintln!("writing flow history: {e}"),
                Err(e) => eprintln!("writing flow history: {e}"),
                Ok(Ok(_)) => {}
            }
            if stop {
                return Ok(());
            }
        }
    });
    // Retention: hourly, delete flows and history past the window.
    let (m3, retention, mut rx3) = (m.clone(), cfg.retention_ms, rx.clone());
    tasks.spawn(async move {
        loop {
            let before = (now_ms() as u64).saturating_sub(retention) * 1_000_000;
            let m = m3.clone();
            let _ = tokio::task::spawn_blocking(move || m.store.prune(before)).await;
            tokio::select! {
                _ = tokio::time::sleep(std::time::Duration::from_secs(3600)) => {}
                _ = rx3.wait_for(|s| *s) => return Ok(()),
            }
        }
    });
    let mut rx1 = rx.clone();
    let router = rest::router(m.clone());
    tasks.spawn(async move {
        axum::serve(api_l, router)
            .with_graceful_shutdown(async move {
                let _ = rx1.wait_for(|s| *s).await;
            })
            .await
            .map_err(io_err("API server"))
    });
    let mut rx2 = rx;
    let svc = grpc::service(m.clone());
    let tls = cellwall_proto::tonic::transport::ServerTlsConfig::new()
        .identity(cellwall_proto::tonic::transport::Identity::from_pem(
            cert, key,
        ))
        .client_ca_root(cellwall_proto::tonic::transport::Certificate::from_pem(
            m.ca_pem(),
        ))
        // Join has no certificate yet; every other call checks for one itself.
        .client_auth_optional(true);
    let server = cellwall_proto::tonic::transport::Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(10)))
        .add_service(svc);
    tasks.spawn(async move {
        server
            .serve_with_incoming_shutdown(
                // Pushes are small writes that must leave at once (Nagle + delayed ACK would
                // add 40 ms to every push).
                tokio_stream::StreamExt::map(
                    tokio_stream::wrappers::TcpListenerStream::new(grpc_l),
                    |s| {
                        if let Ok(s) = &s {
                            let _ = s.set_nodelay(true);
                        }
                        s
                    },
                ),
                async move {
                    let _ = rx2.wait_for(|s| *s).await;
                },
            )
            .await
            .map_err(ManagerError::from)
    });
    Ok(Running {
        api,
        grpc,
        manager: m,
        first_start,
        shutdown,
        tasks,
    })
}

/// `10m`, `1h`, `30s`, `2d`, `500ms` → milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

//! The manager's storage seam. [`Store`] is what every backend implements, in its own row types
//! (typed bodies, never JSON text: how a backend encodes them is its business); [`open`] picks
//! the backend from [`StoreConfig`]. SQLite is the default (one file, nothing to install); a
//! PostgreSQL backend for several managers will implement the same trait.
//!
//! Durability: a write returns only after its transaction committed, so an acknowledged write
//! survives a crash. Every object version is kept (a deletion is a version without a body):
//! that is also the audit trail of who changed what and when.

mod records;
mod sqlite;

pub use cellwall_api::{
    Alert, Change, ChangeAction, Committed, FlowDirection, ObjectKind as Kind, ReportedWorkload,
    TokenRole as Role, Verdict,
};
pub use records::{HostRecord, ImportRecord, QuarantineRecord};
pub use sqlite::SqliteStore;

use cellwall_policy::discover::HistFlow;
use cellwall_policy::{Namespace, Node, Policy, Workload};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed (I/O, locking, a full disk): the caller may retry later.
    #[error("database: {0}")]
    Backend(#[from] rusqlite::Error),
    /// What the store holds cannot be read back (written by a broken or newer build).
    #[error("stored {kind} {key} is unreadable: {source}")]
    Corrupt {
        kind: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    /// The write refers to something that does not exist (an ack from a node that never joined).
    #[error("{0}")]
    Conflict(String),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which backend, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// One SQLite file (`:memory:` for tests).
    Sqlite(PathBuf),
}

/// Opens the configured backend.
pub fn open(cfg: &StoreConfig) -> Result<Arc<dyn Store>> {
    match cfg {
        StoreConfig::Sqlite(path) => Ok(Arc::new(SqliteStore::open(path)?)),
    }
}

/// A stored object, typed by its kind. Serialized as the object itself (untagged): the kind is
/// stored beside it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Body {
    Namespace(Namespace),
    Pod(Arc<Workload>),
    Node(Node),
    Policy(Box<Policy>),
    Quarantine(QuarantineRecord),
    Import(ImportRecord),
    Host(HostRecord),
    Draft(Box<cellwall_api::Draft>),
}

impl Body {
    pub fn kind(&self) -> Kind {
        match self {
            Body::Namespace(_) => Kind::Namespace,
            Body::Pod(_) => Kind::Pod,
            Body::Node(_) => Kind::Node,
            Body::Policy(_) => Kind::Policy,
            Body::Quarantine(_) => Kind::Quarantine,
            Body::Import(_) => Kind::Import,
            Body::Host(_) => Kind::Host,
            Body::Draft(_) => Kind::Draft,
        }
    }

    /// The object in its serde form (what the audit trail shows).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("stored objects serialize")
    }
}

/// One object to write; no body deletes it.
#[derive(Debug, Clone)]
pub struct Write {
    pub kind: Kind,
    pub key: String,
    pub body: Option<Body>,
}

/// The current version of an object.
#[derive(Debug, Clone)]
pub struct Current {
    pub key: String,
    pub version: i64,
    /// The store revision that wrote this version (what an agent's ack is compared with).
    pub revision: u64,
    pub body: Body,
    pub changed_by: String,
    pub changed_at_ms: i64,
}

/// An object changed after some revision: its latest body, or none once deleted.
#[derive(Debug, Clone)]
pub struct Changed {
    pub kind: Kind,
    pub key: String,
    pub body: Option<Body>,
}

/// One version of an object, for history and audit.
#[derive(Debug, Clone)]
pub struct Version {
    pub kind: Kind,
    pub key: String,
    pub version: i64,
    pub revision: u64,
    pub deleted: bool,
    pub actor: String,
    pub at_ms: i64,
    /// Left out of audit listings.
    pub body: Option<Body>,
}

/// An audit event: who, what, details.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// A token to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    pub role: Role,
    /// Who or what it is for.
    pub name: String,
    /// Bootstrap tokens: the node names it may join (`*` wildcards), none for any new node.
    pub node: Option<String>,
    pub expires_ms: Option<i64>,
    pub single_use: bool,
    /// Bootstrap tokens: may replace the certificate of a node that already joined.
    pub replace: bool,
}

/// A stored token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub token: NewToken,
    pub created_ms: i64,
    pub used_ms: Option<i64>,
    pub revoked: bool,
}

/// What a node sent that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A workload report (address, interface, name) the node may not make.
    Report,
    /// Flow records (another node's workloads, over the rate, malformed).
    Flows,
}

/// A node as the manager knows it: joined, applied, seen, what its agent reported.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeRow {
    pub name: String,
    pub joined_ms: i64,
    pub applied_version: u64,
    pub applied_unix_micros: u64,
    pub apply_micros: u64,
    pub last_error: String,
    pub last_seen_ms: i64,
    pub workloads: Vec<ReportedWorkload>,
    pub kernel_events_lost: u64,
    pub agent_records_dropped: u64,
    pub flow_batches_missed: u64,
    pub last_seq: u64,
    /// Reports and flow records refused since the node joined, and the latest reason.
    pub refused_reports: u64,
    pub refused_flows: u64,
    pub last_refusal: String,
    /// False once an admin withdrew its certificate.
    pub has_cert: bool,
    /// When its certificate expires (None: joined before certificates expired).
    pub cert_expires_ms: Option<i64>,
    /// The CA that signed its certificate (empty: before CA rotation was tracked).
    pub cert_ca: String,
    /// The SHA-256 of the trust bundle its agent last fetched.
    pub trust_sha256: String,
}

/// A node's last applied revision (see [`Store::nodes_applied`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeApplied {
    pub name: String,
    pub applied_version: u64,
    pub last_error: String,
}

/// A node certificate as the store keeps it: by hash, with its expiry and signing CA.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeCertRecord {
    pub sha256: String,
    pub expires_ms: i64,
    pub ca: String,
}

/// Whose certificate a hash is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertOwner {
    pub node: String,
    /// The certificate a renewal replaced, valid until the new one is first used.
    pub previous: bool,
}

/// An agent's ack of a version (`error` empty: applied).
#[derive(Debug, Clone, Default)]
pub struct AckRow {
    pub node: String,
    pub version: u64,
    pub apply_micros: u64,
    pub applied_us: u64,
    pub error: String,
}

/// A flow record as stored (one aggregate of `count` identical connections).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRow {
    pub id: i64,
    pub time_unix_ns: u64,
    pub node: String,
    pub src: String,
    pub dst: String,
    pub src_ip: IpAddr,
    pub dst_ip: IpAddr,
    /// `TCP`, `UDP`, ..., or the protocol number.
    pub protocol: String,
    pub port: u16,
    pub verdict: Verdict,
    pub direction: FlowDirection,
    pub rule: Option<String>,
    pub count: u64,
    /// DNS names the agent learned for `dst_ip` (FQDN policy), validated at intake.
    pub dst_names: Vec<String>,
}

/// Which flow records to read.
#[derive(Debug, Clone, Default)]
pub struct FlowFilter {
    pub since_ns: Option<u64>,
    pub after_id: Option<i64>,
    pub before_id: Option<i64>,
    pub port: Option<u16>,
    pub verdict: Option<Verdict>,
    /// `ns/name`: either end.
    pub workload: Option<String>,
    pub rule: Option<String>,
    pub limit: usize,
}

/// History is kept per minute.
pub const BUCKET_NS: u64 = 60_000_000_000;

/// Connections of one minute, as history keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistRow {
    pub bucket: u64,
    pub flow: HistFlow,
}

/// The storage interface of the manager.
pub trait Store: Send + Sync {
    fn revision(&self) -> Result<u64>;
    /// Writes all objects in one transaction (all or nothing) and records who did it.
    fn write(&self, actor: &str, writes: &[Write]) -> Result<Committed>;
    fn current(&self, kind: Kind) -> Result<Vec<Current>>;
    /// The current version of one object (none once deleted): what a few writes check against
    /// without reading every object of their kind.
    fn current_one(&self, kind: Kind, key: &str) -> Result<Option<Current>>;
    /// Who wrote the current version of one object (none once deleted), its body unread: the
    /// ownership checks need only that, and a 10,000-rule policy's body takes tens of ms to
    /// decode.
    fn declarer(&self, kind: Kind, key: &str) -> Result<Option<String>>;
    /// (key, who wrote it) of every current object of `kind`, bodies unread.
    fn declarers(&self, kind: Kind) -> Result<Vec<(String, String)>>;
    /// The latest version of every object changed after `revision`.
    fn changes_since(&self, revision: u64) -> Result<Vec<Changed>>;
    fn history(&self, kind: Kind, key: &str) -> Result<Vec<Version>>;
    /// The newest versions of every object (bodies left out).
    fn audit(&self, limit: usize) -> Result<Vec<Version>>;
    fn log_event(&self, actor: &str, action: &str, detail: &str) -> Result<()>;
    /// The newest events first.
    fn events(&self, limit: usize) -> Result<Vec<Event>>;

    /// Stores a token by the hash of its secret; returns its id.
    fn add_token(&self, hash: &str, t: &NewToken) -> Result<i64>;
    /// The token with this hash, whatever its state (the caller decides what is valid).
    fn token(&self, hash: &str) -> Result<Option<TokenRow>>;
    fn tokens(&self) -> Result<Vec<TokenRow>>;
    /// Revokes a token; false when there is no such token.
    fn revoke_token(&self, id: i64) -> Result<bool>;
    /// Marks a single-use token used, atomically: false when it already was.
    fn use_token(&self, id: i64) -> Result<bool>;

    /// A node's certificate from a join: any previous one stops working.
    fn join_node(&self, name: &str, cert: &NodeCertRecord) -> Result<()>;
    /// A renewed certificate: the current one stays valid (as previous) until the new one is
    /// used. False when the node holds no certificate.
    /// `caller` is the certificate the renewal was asked with; it becomes the previous one.
    fn renew_node_cert(&self, name: &str, caller: &str, cert: &NodeCertRecord) -> Result<bool>;
    /// Records that the node's agent fetched the trust bundle with this hash.
    fn set_node_trust(&self, name: &str, bundle_sha256: &str) -> Result<()>;
    /// The renewed node used its new certificate: the previous one stops working. False when
    /// there was none.
    fn retire_previous_cert(&self, name: &str) -> Result<bool>;
    fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<CertOwner>>;
    /// Whether `name` holds a valid certificate.
    fn node_has_cert(&self, name: &str) -> Result<bool>;
    /// Whether the node joined once and an admin withdrew its certificate since.
    fn node_withdrawn(&self, name: &str) -> Result<bool>;
    /// Withdraws a node's certificate (it must join again); false when there is no such node.
    fn revoke_node(&self, name: &str) -> Result<bool>;
    /// Counts `n` refused items from a node, with why (the latest reason is kept).
    fn count_refusal(&self, node: &str, what: Refusal, n: u64, detail: &str) -> Result<()>;
    /// Records the workloads an agent reported; returns the new revision when that changed
    /// what the manager publishes.
    fn report_workloads(&self, node: &str, workloads: &[ReportedWorkload]) -> Result<Option<u64>>;
    /// Records many acks, events and "node seen" marks in one transaction (one sync for all);
    /// one result per ack, in order.
    fn record_many(
        &self,
        acks: &[AckRow],
        events: &[Event],
        seen: &[String],
    ) -> Result<Vec<Result<()>>>;
    fn nodes(&self) -> Result<Vec<NodeRow>>;
    /// Every node holding a certificate with the revision it last applied and its last error
    /// (none of what its agent reported: a policy status needs only this, every second).
    fn nodes_applied(&self) -> Result<Vec<NodeApplied>>;

    /// Stores a batch of flows with the agent's loss counters; returns rows stored.
    fn insert_flows(
        &self,
        node: &str,
        rows: &[FlowRow],
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize>;
    /// Matching records, oldest first (the newest `limit` of them).
    fn flows(&self, f: &FlowFilter) -> Result<Vec<FlowRow>>;

    /// Adds connections to the per-minute history (counts add up).
    fn add_history(&self, rows: &[HistRow]) -> Result<()>;
    /// History since a time, summed over minutes: one row per (src, dst, protocol, port,
    /// verdict, rule) with labels as they were.
    fn history_since(&self, since_ns: u64) -> Result<Vec<HistFlow>>;
    /// Drops flows and history older than `before_ns`; returns rows removed.
    fn prune(&self, before_ns: u64) -> Result<usize>;

    /// Stores alerts, giving each its id.
    fn add_alerts(&self, alerts: &mut [Alert]) -> Result<()>;
    /// Alerts with an id above `after`, oldest first.
    fn alerts(&self, after: i64, limit: usize) -> Result<Vec<Alert>>;
}

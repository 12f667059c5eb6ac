//! The manager's store. `Store` is the interface a PostgreSQL backend would implement;
//! `SqliteStore` is the default (one file, nothing to install).
//!
//! Durability: every write is one transaction in WAL mode with `synchronous=FULL`, and the API
//! answers only after the commit, so an acknowledged write survives a crash or power loss.
//! Every object version is kept (a deleted object is a version with no body), which is also the
//! audit trail of who changed what and when.

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored {kind} {key} is unreadable: {source}")]
    Corrupt {
        kind: String,
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{0}")]
    Conflict(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Object kinds kept in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    Namespace,
    Pod,
    Node,
    Policy,
    /// A workload cut off by `cellwall quarantine` (key `namespace/name`).
    Quarantine,
    /// Labels imported from one outside source (key: the source name).
    Import,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Node => "Node",
            Kind::Policy => "Policy",
            Kind::Quarantine => "Quarantine",
            Kind::Import => "Import",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Namespace" => Kind::Namespace,
            "Pod" => Kind::Pod,
            "Node" => Kind::Node,
            "Policy" => Kind::Policy,
            "Quarantine" => Kind::Quarantine,
            "Import" => Kind::Import,
            _ => return None,
        })
    }
}

/// One object to write: `body` is its JSON (the policy crate's serde form), `None` deletes.
#[derive(Debug, Clone)]
pub struct Write {
    pub kind: Kind,
    pub key: String,
    pub body: Option<String>,
}

/// What one write did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub key: String,
    /// created | configured | unchanged | deleted | not found
    pub action: &'static str,
    pub version: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Committed {
    /// The store revision after the write (unchanged when nothing changed).
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// The current version of an object.
#[derive(Debug, Clone, Serialize)]
pub struct Current {
    pub kind: Kind,
    pub key: String,
    pub version: i64,
    pub body: String,
    pub changed_by: String,
    pub changed_at_ms: i64,
}

/// One version of an object, for history and audit.
#[derive(Debug, Clone, Serialize)]
pub struct Version {
    pub kind: Kind,
    pub key: String,
    pub version: i64,
    pub revision: u64,
    pub deleted: bool,
    pub actor: String,
    pub at_ms: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// A node as the manager knows it: joined, applied, seen.
#[derive(Debug, Clone, Serialize, Default)]
pub struct NodeStatus {
    pub name: String,
    pub joined_ms: i64,
    pub applied_version: u64,
    pub applied_unix_micros: u64,
    pub apply_micros: u64,
    pub last_error: String,
    pub last_seen_ms: i64,
    /// JSON list of the workloads the agent reported.
    #[serde(skip)]
    pub workloads_json: String,
    pub kernel_events_lost: u64,
    pub agent_records_dropped: u64,
    pub flow_batches_missed: u64,
    #[serde(skip)]
    pub last_seq: u64,
}

/// A stored flow record.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct FlowRow {
    pub id: i64,
    pub time_unix_ns: u64,
    pub node: String,
    pub src: String,
    pub dst: String,
    pub src_ip: String,
    pub dst_ip: String,
    pub protocol: String,
    pub port: u16,
    pub verdict: String,
    pub direction: String,
    pub rule: Option<String>,
    pub count: u64,
}

/// Connections of one minute, as history keeps them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistRow {
    pub bucket: u64,
    pub flow: cellwall_policy::discover::HistFlow,
}

#[derive(Debug, Clone, Default)]
pub struct FlowQuery {
    pub since_ns: Option<u64>,
    pub after_id: Option<i64>,
    pub verdict: Option<String>,
    /// `ns/name`: either end.
    pub workload: Option<String>,
    pub rule: Option<String>,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Read,
    /// Agents joining; not valid on the REST API.
    Bootstrap,
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Read => "read",
            Role::Bootstrap => "bootstrap",
        }
    }
}

/// The storage interface of the manager.
pub trait Store: Send + Sync {
    fn revision(&self) -> Result<u64>;
    /// Writes all objects in one transaction (all or nothing) and records who did it.
    fn write(&self, actor: &str, writes: &[Write]) -> Result<Committed>;
    fn current(&self, kind: Option<Kind>) -> Result<Vec<Current>>;
    /// The latest version of every object changed after `revision` (body `None`: deleted).
    fn changes_since(&self, revision: u64) -> Result<Vec<(Kind, String, Option<String>)>>;
    fn history(&self, kind: Kind, key: &str) -> Result<Vec<Version>>;
    fn audit(&self, limit: usize) -> Result<Vec<Version>>;
    fn log_event(&self, actor: &str, action: &str, detail: &str) -> Result<()>;
    fn events(&self, limit: usize) -> Result<Vec<serde_json::Value>>;

    fn add_token(&self, hash: &str, role: Role, name: &str) -> Result<()>;
    fn token_role(&self, hash: &str) -> Result<Option<(Role, String)>>;

    fn join_node(&self, name: &str, cert_sha256: &str) -> Result<()>;
    fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<String>>;
    /// Records the workloads an agent reported; returns the new revision when that changed
    /// the inventory the manager pushes.
    fn report_workloads(&self, node: &str, workloads_json: &str) -> Result<Option<u64>>;
    fn ack(
        &self,
        node: &str,
        version: u64,
        apply_micros: u64,
        applied_us: u64,
        error: &str,
    ) -> Result<()>;
    /// Records many acks, events and "node seen" marks in one transaction (one sync for all);
    /// one result per ack, in order.
    fn record_many(
        &self,
        acks: &[AckRow],
        events: &[EventRow],
        seen: &[String],
    ) -> Result<Vec<Result<()>>>;
    fn nodes(&self) -> Result<Vec<NodeStatus>>;

    /// Stores a batch of flows with the agent's loss counters; returns rows stored.
    fn insert_flows(
        &self,
        node: &str,
        rows: &[FlowRow],
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize>;
    fn flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>>;

    /// Adds connections to the per-minute history (counts add up).
    fn add_history(&self, rows: &[HistRow]) -> Result<()>;
    /// History since a time, summed over minutes: one row per (src, dst, protocol, port,
    /// verdict, rule) with labels as they were.
    fn history_since(&self, since_ns: u64) -> Result<Vec<cellwall_policy::discover::HistFlow>>;
    /// Drops flows and history older than `before_ns`; returns rows removed.
    fn prune(&self, before_ns: u64) -> Result<usize>;

    /// Stores alerts, giving each its id.
    fn add_alerts(&self, alerts: &mut [crate::alerts::Alert]) -> Result<()>;
    /// Alerts with an id above `after`, oldest first.
    fn alerts(&self, after: i64, limit: usize) -> Result<Vec<crate::alerts::Alert>>;
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

/// An audit event: who, what, details.
#[derive(Debug, Clone, Default)]
pub struct EventRow {
    pub actor: String,
    pub action: String,
    pub detail: String,
}

pub struct SqliteStore {
    db: Mutex<Connection>,
    /// `names` ids by text (filled as names are written or read).
    names: Mutex<HashMap<String, i64>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta(k, v) VALUES ('revision', 0), ('schema', 1);
CREATE TABLE IF NOT EXISTS objects(
  kind TEXT NOT NULL, key TEXT NOT NULL, version INTEGER NOT NULL, revision INTEGER NOT NULL,
  body TEXT, actor TEXT NOT NULL, at_ms INTEGER NOT NULL,
  PRIMARY KEY(kind, key, version));
CREATE INDEX IF NOT EXISTS objects_revision ON objects(revision);
CREATE TABLE IF NOT EXISTS events(
  id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tokens(
  hash TEXT PRIMARY KEY, role TEXT NOT NULL, name TEXT NOT NULL, created_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS nodes(
  name TEXT PRIMARY KEY, joined_ms INTEGER NOT NULL, cert_sha256 TEXT NOT NULL,
  applied_version INTEGER NOT NULL DEFAULT 0, applied_us INTEGER NOT NULL DEFAULT 0,
  apply_micros INTEGER NOT NULL DEFAULT 0, last_error TEXT NOT NULL DEFAULT '',
  last_seen_ms INTEGER NOT NULL DEFAULT 0, workloads TEXT NOT NULL DEFAULT '[]',
  kernel_lost INTEGER NOT NULL DEFAULT 0, agent_dropped INTEGER NOT NULL DEFAULT 0,
  batches_missed INTEGER NOT NULL DEFAULT 0, last_seq INTEGER NOT NULL DEFAULT 0);
CREATE INDEX IF NOT EXISTS nodes_cert ON nodes(cert_sha256);
CREATE TABLE IF NOT EXISTS flows(
  id INTEGER PRIMARY KEY, time_ns INTEGER NOT NULL, node TEXT NOT NULL, src TEXT NOT NULL,
  dst TEXT NOT NULL, src_ip TEXT NOT NULL, dst_ip TEXT NOT NULL, protocol TEXT NOT NULL,
  port INTEGER NOT NULL, verdict TEXT NOT NULL, direction TEXT NOT NULL, rule TEXT,
  count INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS flows_time ON flows(time_ns);
-- Endpoints (JSON with labels) and rule descriptions repeat in every minute of history: stored
-- once here, referenced by id, so history rows are a few integers.
CREATE TABLE IF NOT EXISTS alerts(id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS names(id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS flow_history(
  bucket INTEGER NOT NULL, src INTEGER NOT NULL, dst INTEGER NOT NULL, protocol INTEGER NOT NULL,
  port INTEGER NOT NULL, verdict INTEGER NOT NULL, rule INTEGER NOT NULL, count INTEGER NOT NULL,
  first_ns INTEGER NOT NULL, last_ns INTEGER NOT NULL,
  PRIMARY KEY(bucket, src, dst, protocol, port, verdict, rule)) WITHOUT ROWID;
";

/// Flow rows per INSERT statement (12 parameters each; SQLite allows 32,766).
const FLOW_ROWS: usize = 64;

fn ack_in(db: &Connection, a: &AckRow) -> Result<()> {
    let n = if a.error.is_empty() {
        db.prepare_cached(
            "UPDATE nodes SET applied_version = ?2, apply_micros = ?3, applied_us = ?4,
               last_error = '', last_seen_ms = ?5 WHERE name = ?1",
        )?
        .execute(params![
            a.node,
            a.version,
            a.apply_micros,
            a.applied_us,
            now_ms()
        ])?
    } else {
        db.prepare_cached("UPDATE nodes SET last_error = ?2, last_seen_ms = ?3 WHERE name = ?1")?
            .execute(params![
                a.node,
                format!("version {}: {}", a.version, a.error),
                now_ms()
            ])?
    };
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "node {} has not joined",
            a.node
        )));
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        Ok(Self {
            db: Mutex::new(db),
            names: Mutex::new(HashMap::new()),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (transactions roll
        // back on drop), so a poisoned lock is safe to reuse.
        self.db.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn bump(tx: &rusqlite::Transaction) -> Result<u64> {
    tx.execute("UPDATE meta SET v = v + 1 WHERE k = 'revision'", [])?;
    Ok(tx.query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))?)
}

fn version_row(r: &rusqlite::Row) -> rusqlite::Result<Version> {
    let kind: String = r.get(0)?;
    let body: Option<String> = r.get(4)?;
    Ok(Version {
        kind: Kind::parse(&kind).unwrap_or(Kind::Policy),
        key: r.get(1)?,
        version: r.get(2)?,
        revision: r.get(3)?,
        deleted: body.is_none(),
        body: body.and_then(|b| serde_json::from_str(&b).ok()),
        actor: r.get(5)?,
        at_ms: r.get(6)?,
    })
}

impl Store for SqliteStore {
    fn add_alerts(&self, alerts: &mut [crate::alerts::Alert]) -> Result<()> {
        let mut db = self.conn();
        let tx = db.transaction()?;
        for a in alerts.iter_mut() {
            tx.execute(
                "INSERT INTO alerts(at_ms, body) VALUES (?1, '')",
                params![a.at_ms],
            )?;
            a.id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE alerts SET body = ?2 WHERE id = ?1",
                params![a.id, serde_json::to_string(&*a).expect("json")],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn alerts(&self, after: i64, limit: usize) -> Result<Vec<crate::alerts::Alert>> {
        let db = self.conn();
        let mut st =
            db.prepare_cached("SELECT body FROM alerts WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map(params![after, limit as i64], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for b in rows {
            let b = b?;
            out.push(serde_json::from_str(&b).map_err(|e| StoreError::Corrupt {
                kind: "alert".into(),
                key: b.clone(),
                source: e,
            })?);
        }
        Ok(out)
    }

    fn add_history(&self, rows: &[HistRow]) -> Result<()> {
        self.add_history_impl(rows)
    }

    fn history_since(&self, since_ns: u64) -> Result<Vec<cellwall_policy::discover::HistFlow>> {
        self.history_impl(since_ns)
    }

    fn prune(&self, before_ns: u64) -> Result<usize> {
        self.prune_impl(before_ns)
    }

    fn revision(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))?)
    }

    fn write(&self, actor: &str, writes: &[Write]) -> Result<Committed> {
        let mut db = self.conn();
        let tx = db.transaction()?;
        let mut changes = Vec::new();
        let mut revision: Option<u64> = None;
        let at = now_ms();
        for w in writes {
            let last: Option<(i64, Option<String>)> = tx
                .query_row(
                    "SELECT version, body FROM objects WHERE kind = ?1 AND key = ?2
                     ORDER BY version DESC LIMIT 1",
                    params![w.kind.as_str(), w.key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (last_version, last_body) = last.unwrap_or((0, None));
            let action = match (&last_body, &w.body) {
                (None, None) => "not found",
                (Some(a), Some(b)) if a == b => "unchanged",
                (None, Some(_)) => "created",
                (Some(_), Some(_)) => "configured",
                (Some(_), None) => "deleted",
            };
            let mut version = last_version;
            if matches!(action, "created" | "configured" | "deleted") {
                let rev = match revision {
                    Some(r) => r,
                    None => *revision.insert(bump(&tx)?),
                };
                version += 1;
                tx.execute(
                    "INSERT INTO objects(kind, key, version, revision, body, actor, at_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![w.kind.as_str(), w.key, version, rev, w.body, actor, at],
                )?;
            }
            changes.push(Change {
                kind: w.kind,
                key: w.key.clone(),
                action,
                version,
            });
        }
        let revision = match revision {
            Some(r) => r,
            None => tx.query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))?,
        };
        tx.commit()?;
        Ok(Committed { revision, changes })
    }

    fn current(&self, kind: Option<Kind>) -> Result<Vec<Current>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT o.kind, o.key, o.version, o.body, o.actor, o.at_ms FROM objects o
             JOIN (SELECT kind, key, MAX(version) AS v FROM objects GROUP BY kind, key) m
               ON o.kind = m.kind AND o.key = m.key AND o.version = m.v
             WHERE o.body IS NOT NULL AND (?1 IS NULL OR o.kind = ?1)
             ORDER BY o.kind, o.key",
        )?;
        let rows = st.query_map(params![kind.map(Kind::as_str)], |r| {
            let k: String = r.get(0)?;
            Ok(Current {
                kind: Kind::parse(&k).unwrap_or(Kind::Policy),
                key: r.get(1)?,
                version: r.get(2)?,
                body: r.get(3)?,
                changed_by: r.get(4)?,
                changed_at_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn changes_since(&self, revision: u64) -> Result<Vec<(Kind, String, Option<String>)>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT o.kind, o.key, o.body FROM objects o
             WHERE o.revision > ?1 AND o.version =
               (SELECT MAX(i.version) FROM objects i WHERE i.kind = o.kind AND i.key = o.key)
             ORDER BY o.revision",
        )?;
        let rows = st.query_map(params![revision], |r| {
            let k: String = r.get(0)?;
            Ok((k, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (k, key, body) = row?;
            // Kinds this build does not know (a newer manager wrote them) are skipped.
            if let Some(kind) = Kind::parse(&k) {
                out.push((kind, key, body));
            }
        }
        Ok(out)
    }

    fn record_many(
        &self,
        acks: &[AckRow],
        events: &[EventRow],
        seen: &[String],
    ) -> Result<Vec<Result<()>>> {
        let mut db = self.conn();
        let run = |db: &mut Connection| -> Result<Vec<Result<()>>> {
            let tx = db.transaction()?;
            let mut out = Vec::with_capacity(acks.len());
            for a in acks {
                out.push(ack_in(&tx, a));
            }
            let at = now_ms();
            for e in events {
                tx.prepare_cached(
                    "INSERT INTO events(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
                )?
                .execute(params![at, e.actor, e.action, e.detail])?;
            }
            for n in seen {
                tx.prepare_cached("UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1")?
                    .execute(params![n, at])?;
            }
            tx.commit()?;
            Ok(out)
        };
        run(&mut db)
    }

    fn history(&self, kind: Kind, key: &str) -> Result<Vec<Version>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT kind, key, version, revision, body, actor, at_ms FROM objects
             WHERE kind = ?1 AND key = ?2 ORDER BY version",
        )?;
        let rows = st.query_map(params![kind.as_str(), key], version_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn audit(&self, limit: usize) -> Result<Vec<Version>> {
        let db = self.conn();
        // Bodies are left out of the listing; an empty one still says "not deleted".
        let mut st = db.prepare_cached(
            "SELECT kind, key, version, revision, CASE WHEN body IS NULL THEN NULL ELSE '' END,
                    actor, at_ms FROM objects
             ORDER BY revision DESC, kind, key LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit as i64], version_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn log_event(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), actor, action, detail],
        )?;
        Ok(())
    }

    fn events(&self, limit: usize) -> Result<Vec<serde_json::Value>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT at_ms, actor, action, detail FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok(serde_json::json!({
                "at_ms": r.get::<_, i64>(0)?,
                "actor": r.get::<_, String>(1)?,
                "action": r.get::<_, String>(2)?,
                "detail": r.get::<_, String>(3)?,
            }))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_token(&self, hash: &str, role: Role, name: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO tokens(hash, role, name, created_ms) VALUES (?1, ?2, ?3, ?4)",
            params![hash, role.as_str(), name, now_ms()],
        )?;
        Ok(())
    }

    fn token_role(&self, hash: &str) -> Result<Option<(Role, String)>> {
        let r: Option<(String, String)> = self
            .conn()
            .query_row(
                "SELECT role, name FROM tokens WHERE hash = ?1",
                params![hash],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        Ok(r.and_then(|(role, name)| {
            let role = match role.as_str() {
                "admin" => Role::Admin,
                "read" => Role::Read,
                "bootstrap" => Role::Bootstrap,
                _ => return None,
            };
            Some((role, name))
        }))
    }

    fn join_node(&self, name: &str, cert_sha256: &str) -> Result<()> {
        // A re-join (new certificate) replaces the old certificate: the old one stops working.
        self.conn().execute(
            "INSERT INTO nodes(name, joined_ms, cert_sha256) VALUES (?1, ?2, ?3)
             ON CONFLICT(name) DO UPDATE SET cert_sha256 = excluded.cert_sha256,
               joined_ms = excluded.joined_ms",
            params![name, now_ms(), cert_sha256],
        )?;
        Ok(())
    }

    fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT name FROM nodes WHERE cert_sha256 = ?1",
                params![cert_sha256],
                |r| r.get(0),
            )
            .optional()?)
    }

    fn report_workloads(&self, node: &str, workloads_json: &str) -> Result<Option<u64>> {
        let mut db = self.conn();
        let tx = db.transaction()?;
        let old: String = tx.query_row(
            "SELECT workloads FROM nodes WHERE name = ?1",
            params![node],
            |r| r.get(0),
        )?;
        let rev = if old != workloads_json {
            tx.execute(
                "UPDATE nodes SET workloads = ?2, last_seen_ms = ?3 WHERE name = ?1",
                params![node, workloads_json, now_ms()],
            )?;
            Some(bump(&tx)?)
        } else {
            tx.execute(
                "UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1",
                params![node, now_ms()],
            )?;
            None
        };
        tx.commit()?;
        Ok(rev)
    }

    fn ack(
        &self,
        node: &str,
        version: u64,
        apply_micros: u64,
        applied_us: u64,
        error: &str,
    ) -> Result<()> {
        ack_in(
            &self.conn(),
            &AckRow {
                node: node.into(),
                version,
                apply_micros,
                applied_us,
                error: error.into(),
            },
        )
    }

    fn nodes(&self) -> Result<Vec<NodeStatus>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT name, joined_ms, applied_version, applied_us, apply_micros, last_error,
                    last_seen_ms, workloads, kernel_lost, agent_dropped, batches_missed, last_seq
             FROM nodes ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(NodeStatus {
                name: r.get(0)?,
                joined_ms: r.get(1)?,
                applied_version: r.get(2)?,
                applied_unix_micros: r.get(3)?,
                apply_micros: r.get(4)?,
                last_error: r.get(5)?,
                last_seen_ms: r.get(6)?,
                workloads_json: r.get(7)?,
                kernel_events_lost: r.get(8)?,
                agent_records_dropped: r.get(9)?,
                flow_batches_missed: r.get(10)?,
                last_seq: r.get(11)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn insert_flows(
        &self,
        node: &str,
        rows: &[FlowRow],
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize> {
        let mut db = self.conn();
        let tx = db.transaction()?;
        {
            // Many rows per statement: a statement's fixed cost is spread over FLOW_ROWS rows.
            let sql = |n: usize| {
                let one = "(?,?,?,?,?,?,?,?,?,?,?,?)";
                format!(
                    "INSERT INTO flows(time_ns, node, src, dst, src_ip, dst_ip, protocol, port,
                       verdict, direction, rule, count) VALUES {}",
                    vec![one; n].join(",")
                )
            };
            let full = sql(FLOW_ROWS);
            for chunk in rows.chunks(FLOW_ROWS) {
                let text = if chunk.len() == FLOW_ROWS {
                    full.clone()
                } else {
                    sql(chunk.len())
                };
                let mut st = tx.prepare_cached(&text)?;
                let mut i = 0;
                for f in chunk {
                    let values: [&dyn rusqlite::ToSql; 12] = [
                        &(f.time_unix_ns as i64),
                        &node,
                        &f.src,
                        &f.dst,
                        &f.src_ip,
                        &f.dst_ip,
                        &f.protocol,
                        &f.port,
                        &f.verdict,
                        &f.direction,
                        &f.rule,
                        &(f.count as i64),
                    ];
                    for v in values {
                        i += 1;
                        st.raw_bind_parameter(i, v)?;
                    }
                }
                st.raw_execute()?;
            }
        }
        // A sequence number that jumps means batches were lost between agent and manager
        // (a restart of the agent starts again at 1).
        let last: u64 = tx.query_row(
            "SELECT last_seq FROM nodes WHERE name = ?1",
            params![node],
            |r| r.get(0),
        )?;
        let missed = if seq > last + 1 && last != 0 {
            seq - last - 1
        } else {
            0
        };
        tx.execute(
            "UPDATE nodes SET kernel_lost = ?2, agent_dropped = ?3, last_seq = ?4,
               batches_missed = batches_missed + ?5, last_seen_ms = ?6 WHERE name = ?1",
            params![node, kernel_lost, agent_dropped, seq, missed, now_ms()],
        )?;
        tx.commit()?;
        Ok(rows.len())
    }

    fn flows(&self, q: &FlowQuery) -> Result<Vec<FlowRow>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT id, time_ns, node, src, dst, src_ip, dst_ip, protocol, port, verdict,
                    direction, rule, count FROM flows
             WHERE time_ns >= ?1 AND id > ?2 AND (?3 IS NULL OR verdict = ?3)
               AND (?4 IS NULL OR src = ?4 OR dst = ?4) AND (?5 IS NULL OR rule = ?5)
             ORDER BY id DESC LIMIT ?6",
        )?;
        let rows = st.query_map(
            params![
                q.since_ns.unwrap_or(0) as i64,
                q.after_id.unwrap_or(0),
                q.verdict,
                q.workload,
                q.rule,
                q.limit.max(1) as i64
            ],
            |r| {
                Ok(FlowRow {
                    id: r.get(0)?,
                    time_unix_ns: r.get::<_, i64>(1)? as u64,
                    node: r.get(2)?,
                    src: r.get(3)?,
                    dst: r.get(4)?,
                    src_ip: r.get(5)?,
                    dst_ip: r.get(6)?,
                    protocol: r.get(7)?,
                    port: r.get(8)?,
                    verdict: r.get(9)?,
                    direction: r.get(10)?,
                    rule: r.get(11)?,
                    count: r.get::<_, i64>(12)? as u64,
                })
            },
        )?;
        let mut v: Vec<FlowRow> = rows.collect::<rusqlite::Result<_>>()?;
        v.reverse();
        Ok(v)
    }
}

impl SqliteStore {
    pub(crate) fn add_history_impl(&self, rows: &[HistRow]) -> Result<()> {
        use cellwall_policy::discover::Observed;
        let mut db = self.conn();
        let mut names = self.names.lock().unwrap_or_else(|p| p.into_inner());
        let tx = db.transaction()?;
        {
            let mut ins_name =
                tx.prepare_cached("INSERT OR IGNORE INTO names(text) VALUES (?1)")?;
            let mut get_name = tx.prepare_cached("SELECT id FROM names WHERE text = ?1")?;
            let mut id = |text: String| -> Result<i64> {
                if let Some(i) = names.get(&text) {
                    return Ok(*i);
                }
                ins_name.execute(params![text])?;
                let i: i64 = get_name.query_row(params![text], |r| r.get(0))?;
                names.insert(text, i);
                Ok(i)
            };
            let mut st = tx.prepare_cached(
                "INSERT INTO flow_history(bucket, src, dst, protocol, port, verdict, rule, count,
                   first_ns, last_ns) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT(bucket, src, dst, protocol, port, verdict, rule) DO UPDATE SET
                   count = count + excluded.count,
                   first_ns = MIN(first_ns, excluded.first_ns),
                   last_ns = MAX(last_ns, excluded.last_ns)",
            )?;
            // Endpoints repeat within a batch: serialized and looked up once each.
            let mut ep_ids: HashMap<&cellwall_policy::discover::Endpoint, i64> = HashMap::new();
            for r in rows {
                let f = &r.flow;
                let mut ids = [0i64; 2];
                for (slot, e) in ids.iter_mut().zip([&f.src, &f.dst]) {
                    *slot = match ep_ids.get(e) {
                        Some(i) => *i,
                        None => {
                            let i = id(serde_json::to_string(e).expect("json"))?;
                            ep_ids.insert(e, i);
                            i
                        }
                    };
                }
                let [src, dst] = ids;
                let rule = id(f.rule.clone().unwrap_or_default())?;
                let verdict = match f.observed {
                    Observed::Allowed => 0,
                    Observed::Denied => 1,
                    Observed::Audit => 2,
                };
                st.execute(params![
                    r.bucket as i64,
                    src,
                    dst,
                    f.protocol.number(),
                    f.port,
                    verdict,
                    rule,
                    f.connections as i64,
                    f.first_ns as i64,
                    f.last_ns as i64
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn history_impl(
        &self,
        since_ns: u64,
    ) -> Result<Vec<cellwall_policy::discover::HistFlow>> {
        use cellwall_policy::discover::{Endpoint, HistFlow, Observed};
        use cellwall_policy::Protocol;
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT src, dst, protocol, port, verdict, rule, SUM(count), MIN(first_ns),
                    MAX(last_ns)
             FROM flow_history WHERE bucket >= ?1
             GROUP BY src, dst, protocol, port, verdict, rule",
        )?;
        let mut text_of = db.prepare_cached("SELECT text FROM names WHERE id = ?1")?;
        let mut eps: HashMap<i64, Endpoint> = HashMap::new();
        let mut rules: HashMap<i64, Option<String>> = HashMap::new();
        let mut out = Vec::new();
        let mut rows = st.query(params![(since_ns / crate::history::BUCKET_NS) as i64])?;
        while let Some(r) = rows.next()? {
            let mut ep = |i: usize| -> Result<Endpoint> {
                let id: i64 = r.get(i)?;
                if let Some(e) = eps.get(&id) {
                    return Ok(e.clone());
                }
                let s: String = text_of.query_row(params![id], |r| r.get(0))?;
                let e: Endpoint = serde_json::from_str(&s).map_err(|e| StoreError::Corrupt {
                    kind: "history endpoint".into(),
                    key: s.clone(),
                    source: e,
                })?;
                eps.insert(id, e.clone());
                Ok(e)
            };
            let (src, dst) = (ep(0)?, ep(1)?);
            let rule_id: i64 = r.get(5)?;
            let rule = match rules.get(&rule_id) {
                Some(r) => r.clone(),
                None => {
                    let t: String = text_of.query_row(params![rule_id], |r| r.get(0))?;
                    let v = (!t.is_empty()).then_some(t);
                    rules.insert(rule_id, v.clone());
                    v
                }
            };
            let protocol = match r.get::<_, u8>(2)? {
                6 => Protocol::Tcp,
                17 => Protocol::Udp,
                132 => Protocol::Sctp,
                _ => continue,
            };
            let observed = match r.get::<_, u8>(4)? {
                0 => Observed::Allowed,
                1 => Observed::Denied,
                _ => Observed::Audit,
            };
            out.push(HistFlow {
                src,
                dst,
                protocol,
                port: r.get(3)?,
                observed,
                rule,
                connections: r.get::<_, i64>(6)? as u64,
                first_ns: r.get::<_, i64>(7)? as u64,
                last_ns: r.get::<_, i64>(8)? as u64,
            });
        }
        // Order does not matter: map, proposal and simulation aggregate into sorted maps.
        Ok(out)
    }

    pub(crate) fn prune_impl(&self, before_ns: u64) -> Result<usize> {
        let db = self.conn();
        let a = db.execute(
            "DELETE FROM flows WHERE time_ns < ?1",
            params![before_ns as i64],
        )?;
        let b = db.execute(
            "DELETE FROM flow_history WHERE bucket < ?1",
            params![(before_ns / crate::history::BUCKET_NS) as i64],
        )?;
        Ok(a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(kind: Kind, key: &str, body: Option<&str>) -> Write {
        Write {
            kind,
            key: key.into(),
            body: body.map(str::to_string),
        }
    }

    #[test]
    fn versions_audit_and_reopen() {
        let dir = std::env::temp_dir().join(format!("cw-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        {
            let s = SqliteStore::open(&path).unwrap();
            let c = s
                .write("alice", &[w(Kind::Policy, "p", Some("{\"a\":1}"))])
                .unwrap();
            assert_eq!((c.revision, c.changes[0].action), (1, "created"));
            let c = s
                .write("alice", &[w(Kind::Policy, "p", Some("{\"a\":1}"))])
                .unwrap();
            assert_eq!((c.revision, c.changes[0].action), (1, "unchanged"));
            let c = s
                .write("bob", &[w(Kind::Policy, "p", Some("{\"a\":2}"))])
                .unwrap();
            assert_eq!((c.revision, c.changes[0].action), (2, "configured"));
            let c = s.write("carol", &[w(Kind::Policy, "p", None)]).unwrap();
            assert_eq!((c.revision, c.changes[0].action), (3, "deleted"));
            let c = s.write("carol", &[w(Kind::Policy, "q", None)]).unwrap();
            assert_eq!((c.revision, c.changes[0].action), (3, "not found"));
            s.write("dave", &[w(Kind::Namespace, "n", Some("{}"))])
                .unwrap();
        }
        // Everything survives a reopen: versions, actors, deletions, the revision.
        let s = SqliteStore::open(&path).unwrap();
        assert_eq!(s.revision().unwrap(), 4);
        let h = s.history(Kind::Policy, "p").unwrap();
        let who: Vec<_> = h.iter().map(|v| (v.actor.as_str(), v.deleted)).collect();
        assert_eq!(who, [("alice", false), ("bob", false), ("carol", true)]);
        assert_eq!(h[1].body, Some(serde_json::json!({"a": 2})));
        let cur = s.current(None).unwrap();
        assert_eq!(cur.len(), 1);
        assert_eq!(cur[0].kind, Kind::Namespace);
        let a = s.audit(10).unwrap();
        assert_eq!(a[0].actor, "dave");
        assert!(a[1].deleted);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn flow_loss_is_counted() {
        let s = SqliteStore::open(Path::new(":memory:")).unwrap();
        s.join_node("n1", "abc").unwrap();
        assert_eq!(s.node_by_cert("abc").unwrap().as_deref(), Some("n1"));
        assert_eq!(s.node_by_cert("other").unwrap(), None);
        let row = FlowRow {
            id: 0,
            time_unix_ns: 5,
            node: String::new(),
            src: "a/b".into(),
            dst: "c/d".into(),
            src_ip: "10.0.0.1".into(),
            dst_ip: "10.0.0.2".into(),
            protocol: "TCP".into(),
            port: 80,
            verdict: "denied".into(),
            direction: "egress".into(),
            rule: Some("r".into()),
            count: 2,
        };
        s.insert_flows("n1", std::slice::from_ref(&row), 1, 0, 0)
            .unwrap();
        s.insert_flows("n1", std::slice::from_ref(&row), 4, 7, 3)
            .unwrap();
        let n = &s.nodes().unwrap()[0];
        assert_eq!(
            (
                n.flow_batches_missed,
                n.kernel_events_lost,
                n.agent_records_dropped
            ),
            (2, 7, 3)
        );
        let q = FlowQuery {
            workload: Some("c/d".into()),
            verdict: Some("denied".into()),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(s.flows(&q).unwrap().len(), 2);
        let q = FlowQuery {
            verdict: Some("allowed".into()),
            limit: 10,
            ..Default::default()
        };
        assert!(s.flows(&q).unwrap().is_empty());
    }
}

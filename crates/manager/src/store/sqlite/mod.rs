//! The default backend: one SQLite file in WAL mode with `synchronous=FULL` (every committed
//! write survives power loss), one connection behind a mutex (writes serialize anyway; reads are
//! short). `SCHEMA` is the first release's schema; `migrate` adds each later version's columns,
//! so a data directory of any earlier release opens and keeps its rows (tested).

mod flows;
mod history;
mod migrate;
mod nodes;
mod objects;
mod tokens;

use super::*;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

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

/// The database and its WAL and shared-memory files are readable by their owner only (0600):
/// created that way (SQLite gives the WAL and SHM files the database's mode), and narrowed if
/// an earlier version left them wider.
fn private_files(path: &Path) -> Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    if path.as_os_str() == ":memory:" {
        return Ok(());
    }
    let io = |what: &str| {
        let what = format!("{what} {}", path.display());
        move |source| StoreError::Io { what, source }
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(io("creating"))?;
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                .map_err(io("making private"))?;
        }
    }
    Ok(())
}

impl SqliteStore {
    pub fn open(path: &Path) -> Result<Self> {
        private_files(path)?;
        let db = Connection::open(path)?;
        db.pragma_update(None, "journal_mode", "WAL")?;
        db.pragma_update(None, "synchronous", "FULL")?;
        db.pragma_update(None, "foreign_keys", "ON")?;
        db.busy_timeout(std::time::Duration::from_secs(5))?;
        db.execute_batch(SCHEMA)?;
        migrate::run(&db)?;
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

impl Store for SqliteStore {
    fn revision(&self) -> Result<u64> {
        Ok(self
            .conn()
            .query_row("SELECT v FROM meta WHERE k = 'revision'", [], |r| r.get(0))?)
    }
    fn write(&self, actor: &str, writes: &[Write]) -> Result<Committed> {
        self.write_objects(actor, writes)
    }
    fn current(&self, kind: Kind) -> Result<Vec<Current>> {
        self.current_objects(kind)
    }
    fn current_one(&self, kind: Kind, key: &str) -> Result<Option<Current>> {
        self.current_object(kind, key)
    }
    fn declarer(&self, kind: Kind, key: &str) -> Result<Option<String>> {
        self.object_declarer(kind, key)
    }
    fn declarers(&self, kind: Kind) -> Result<Vec<(String, String)>> {
        self.object_declarers(kind)
    }
    fn changes_since(&self, revision: u64) -> Result<Vec<Changed>> {
        self.changed_objects(revision)
    }
    fn history(&self, kind: Kind, key: &str) -> Result<Vec<Version>> {
        self.object_versions(kind, key)
    }
    fn audit(&self, limit: usize) -> Result<Vec<Version>> {
        self.latest_versions(limit)
    }

    fn log_event(&self, actor: &str, action: &str, detail: &str) -> Result<()> {
        self.conn().execute(
            "INSERT INTO events(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            params![now_ms(), actor, action, detail],
        )?;
        Ok(())
    }

    fn events(&self, limit: usize) -> Result<Vec<Event>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT at_ms, actor, action, detail FROM events ORDER BY id DESC LIMIT ?1",
        )?;
        let rows = st.query_map(params![limit as i64], |r| {
            Ok(Event {
                at_ms: r.get(0)?,
                actor: r.get(1)?,
                action: r.get(2)?,
                detail: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    fn add_token(&self, hash: &str, t: &NewToken) -> Result<i64> {
        self.insert_token(hash, t)
    }
    fn token(&self, hash: &str) -> Result<Option<TokenRow>> {
        self.token_by_hash(hash)
    }
    fn tokens(&self) -> Result<Vec<TokenRow>> {
        self.token_rows()
    }
    fn revoke_token(&self, id: i64) -> Result<bool> {
        self.revoke_token_row(id)
    }
    fn use_token(&self, id: i64) -> Result<bool> {
        self.use_token_row(id)
    }

    fn join_node(&self, name: &str, cert: &NodeCertRecord) -> Result<()> {
        self.join(name, cert)
    }
    fn renew_node_cert(&self, name: &str, caller: &str, cert: &NodeCertRecord) -> Result<bool> {
        self.renew(name, caller, cert)
    }
    fn set_node_trust(&self, name: &str, bundle_sha256: &str) -> Result<()> {
        self.set_trust(name, bundle_sha256)
    }
    fn retire_previous_cert(&self, name: &str) -> Result<bool> {
        self.retire_previous(name)
    }
    fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<CertOwner>> {
        self.node_of_cert(cert_sha256)
    }
    fn node_has_cert(&self, name: &str) -> Result<bool> {
        self.has_cert(name)
    }
    fn node_withdrawn(&self, name: &str) -> Result<bool> {
        self.withdrawn(name)
    }
    fn revoke_node(&self, name: &str) -> Result<bool> {
        self.withdraw_cert(name)
    }
    fn count_refusal(&self, node: &str, what: Refusal, n: u64, detail: &str) -> Result<()> {
        self.refusal(node, what, n, detail)
    }
    fn report_workloads(&self, node: &str, workloads: &[ReportedWorkload]) -> Result<Option<u64>> {
        self.set_reported(node, workloads)
    }
    fn record_many(
        &self,
        acks: &[AckRow],
        events: &[Event],
        seen: &[String],
    ) -> Result<Vec<Result<()>>> {
        self.record_batch(acks, events, seen)
    }
    fn nodes(&self) -> Result<Vec<NodeRow>> {
        self.node_rows()
    }
    fn nodes_applied(&self) -> Result<Vec<NodeApplied>> {
        self.applied_rows()
    }

    fn insert_flows(
        &self,
        node: &str,
        rows: &[FlowRow],
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize> {
        self.insert_flow_rows(node, rows, seq, kernel_lost, agent_dropped)
    }
    fn flows(&self, f: &FlowFilter) -> Result<Vec<FlowRow>> {
        self.flow_rows(f)
    }
    fn add_history(&self, rows: &[HistRow]) -> Result<()> {
        self.add_history_rows(rows)
    }
    fn history_since(&self, since_ns: u64) -> Result<Vec<HistFlow>> {
        self.history_rows(since_ns)
    }
    fn prune(&self, before_ns: u64) -> Result<usize> {
        self.prune_before(before_ns)
    }
    fn add_alerts(&self, alerts: &mut [Alert]) -> Result<()> {
        self.insert_alerts(alerts)
    }
    fn alerts(&self, after: i64, limit: usize) -> Result<Vec<Alert>> {
        self.alert_rows(after, limit)
    }
}

#[cfg(test)]
mod tests;

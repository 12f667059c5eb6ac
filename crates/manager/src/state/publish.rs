//! Publishing: each new store revision becomes a [`Published`] state (the document, the delta
//! from the previous one, a snapshot encoded once on first demand) that every agent stream
//! reads; the engine of the latest revision is cached for explain, proposals and compliance.

use super::raw::Raw;
use crate::config::now_ms;
use crate::error::ManagerError;
use crate::store::{ReportedWorkload, Store};
use cellwall_policy::{Engine, Workload};
use cellwall_proto::{DesiredState, StateDelta, StateDoc};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{broadcast, watch};

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
    by_key: OnceLock<HashMap<String, Arc<Workload>>>,
    by_ip: OnceLock<ByIp>,
    pub issued_unix_ms: i64,
}

/// Who owns an address, in the form flow records store it (built once per revision, so
/// attributing a record copies two short strings instead of formatting keys).
#[derive(Debug)]
pub struct Owner {
    /// `namespace/name`.
    pub key: String,
    pub node: Option<String>,
}

/// Address → owner. The Fx hash (a third of SipHash's cost per lookup, measured in the intake
/// bench): the keys are the store's workload addresses, which only admins and nodes' own
/// bounded reports place there, so nobody can flood one bucket.
pub type ByIp = HashMap<std::net::IpAddr, Owner, cellwall_policy::fxhash::FxBuild>;

impl Published {
    fn new(revision: u64, prev_revision: u64, doc: StateDoc, delta: Option<StateDelta>) -> Self {
        let issued_unix_ms = now_ms();
        let delta_objects = delta.as_ref().map_or(0, StateDelta::len);
        Self {
            revision,
            prev_revision,
            delta: delta.map(|d| {
                Arc::new(DesiredState::delta(
                    revision,
                    prev_revision,
                    &d,
                    issued_unix_ms,
                ))
            }),
            doc: Arc::new(doc),
            delta_objects,
            snapshot: Default::default(),
            by_key: Default::default(),
            by_ip: Default::default(),
            issued_unix_ms,
        }
    }

    /// `namespace/name` → workload, for attributing flow records (built once per revision, on
    /// first use: at 100,000 workloads, building it on every publish would cost a relabel ~50 ms).
    pub fn by_key(&self) -> &HashMap<String, Arc<Workload>> {
        self.by_key.get_or_init(|| {
            self.doc
                .workloads
                .iter()
                .map(|w| (w.key().to_string(), w.clone()))
                .collect()
        })
    }

    /// Address → the workload that owns it, for attributing flow records by what the manager
    /// knows rather than what an agent claims (host-network pods share their node's address and
    /// are left out: the address names the node, not them).
    pub fn by_ip(&self) -> &ByIp {
        self.by_ip.get_or_init(|| {
            let mut m = ByIp::default();
            for w in self.doc.workloads.iter().filter(|w| !w.host_network) {
                for ip in &w.ips {
                    m.entry(*ip).or_insert_with(|| Owner {
                        key: w.key().to_string(),
                        node: w.node.clone(),
                    });
                }
            }
            m
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

/// Pods, nodes and hosts whose addresses are to be checked (`State::shared_across_clusters`).
#[derive(Debug, Default)]
pub struct Holders {
    pub pods: Vec<cellwall_policy::WorkloadKey>,
    pub nodes: Vec<String>,
    pub hosts: Vec<cellwall_policy::WorkloadKey>,
}

/// The desired state and who is watching it.
pub struct State {
    raw: Mutex<Raw>,
    publish_lock: Mutex<()>,
    tx: watch::Sender<Arc<Published>>,
    /// Every published revision's delta in order, for agent streams (a stream that falls
    /// behind gets a snapshot of the latest). Deltas only: the channel keeps its last 256
    /// messages, and 256 models of 100,000 workloads would be gigabytes.
    changes: broadcast::Sender<Change>,
    /// The engine of the last published revision.
    engine: Mutex<Option<(u64, Engine)>>,
    /// Revisions superseded lately, oldest first, each with its engine once built: compliance
    /// judges a connection by the policy in force when it was opened, and its record may
    /// arrive after a newer revision (a quarantine) was published.
    superseded: Mutex<VecDeque<Superseded>>,
}

/// A superseded revision and its engine, built only if a connection needs it.
type Superseded = (Arc<Published>, Arc<OnceLock<Engine>>);

/// Superseded revisions are kept this long after their successor was published (records
/// arrive within seconds: agents send every second, the manager checks every few)...
const SUPERSEDED_KEPT_MS: i64 = 300_000;
/// ...and no more of them than this (their documents share workloads with the current one,
/// but an engine built for one is a full engine).
const SUPERSEDED_MAX: usize = 8;

impl State {
    /// Empty, with what agents reported before (kept in the store).
    pub fn new(reported: impl IntoIterator<Item = (String, Vec<ReportedWorkload>)>) -> Self {
        let mut raw = Raw::default();
        for (node, w) in reported {
            raw.set_reported(&node, w);
        }
        let first = Published::new(0, 0, StateDoc::default(), None);
        Self {
            raw: Mutex::new(raw),
            publish_lock: Mutex::new(()),
            tx: watch::channel(Arc::new(first)).0,
            changes: broadcast::channel(256).0,
            engine: Mutex::new(None),
            superseded: Mutex::new(VecDeque::new()),
        }
    }

    pub fn published(&self) -> Arc<Published> {
        self.tx.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Published>> {
        self.tx.subscribe()
    }

    /// Every revision published from now on, in order (agent streams).
    pub fn subscribe_changes(&self) -> broadcast::Receiver<Change> {
        self.changes.subscribe()
    }

    fn raw(&self) -> std::sync::MutexGuard<'_, Raw> {
        self.raw.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Addresses that objects of different clusters (or a cluster and the REST/file
    /// inventory) both hold, among the addresses of the `changed` pods, nodes and hosts:
    /// (address, the changed one, the other), each named `Kind name`. Clusters with
    /// overlapping networks cannot be told apart by address, so the manager says so
    /// (crate::cluster) instead of letting one cluster's object wear the other's identity
    /// unnoticed.
    pub fn shared_across_clusters(
        &self,
        changed: &Holders,
    ) -> Vec<(std::net::IpAddr, String, String)> {
        use cellwall_policy::clusters::cluster_of;
        use std::net::IpAddr;
        let raw = self.raw();
        let Some(index) = raw.addr_owners.as_ref() else {
            return Vec::new();
        };
        // Nodes' and hosts' single addresses (the workload index has neither).
        let mut others: std::collections::HashMap<IpAddr, Vec<(String, Option<&str>)>> =
            Default::default();
        for (name, n) in &raw.nodes {
            for ip in &n.ips {
                others
                    .entry(*ip)
                    .or_default()
                    .push((format!("Node {name}"), cluster_of(name)));
            }
        }
        let single = |c: &cellwall_policy::Cidr| c.prefix() == if c.is_ipv4() { 32 } else { 128 };
        for (k, h) in &raw.hosts {
            for c in h.addresses.iter().filter(|c| single(c)) {
                others
                    .entry(c.addr())
                    .or_default()
                    .push((format!("Host {k}"), cluster_of(&k.namespace)));
            }
        }
        let mut mine: Vec<(IpAddr, String, Option<&str>)> = Vec::new();
        for k in &changed.pods {
            if let Some(w) = raw.workloads.get(k).filter(|w| !w.host_network) {
                let c = cluster_of(&k.namespace);
                mine.extend(w.ips.iter().map(|ip| (*ip, format!("Pod {k}"), c)));
            }
        }
        for name in &changed.nodes {
            if let Some(n) = raw.nodes.get(name) {
                let c = cluster_of(name);
                mine.extend(n.ips.iter().map(|ip| (*ip, format!("Node {name}"), c)));
            }
        }
        for k in &changed.hosts {
            if let Some(h) = raw.hosts.get(k) {
                let c = cluster_of(&k.namespace);
                mine.extend(
                    h.addresses
                        .iter()
                        .filter(|a| single(a))
                        .map(|a| (a.addr(), format!("Host {k}"), c)),
                );
            }
        }
        let mut out = Vec::new();
        for (ip, who, c) in mine {
            let pod = index
                .store_claimants(&ip)
                .find(|o| cluster_of(&o.namespace) != c)
                .map(|o| format!("Pod {o}"));
            let other = pod.or_else(|| {
                others
                    .get(&ip)
                    .and_then(|v| v.iter().find(|(_, oc)| *oc != c))
                    .map(|(n, _)| n.clone())
            });
            if let Some(other) = other {
                out.push((ip, who, other));
            }
        }
        out
    }

    /// What `node`'s agent reported last.
    pub fn reported(&self, node: &str) -> Option<Vec<ReportedWorkload>> {
        self.raw().reported.get(node).cloned()
    }

    /// Sorts a report of `node` into what it may report and what it may not (see
    /// [`crate::state::reports`]).
    pub fn check_reports(
        &self,
        node: &str,
        reports: Vec<ReportedWorkload>,
    ) -> crate::state::Checked {
        self.raw().check_reports(node, reports)
    }

    /// Records what `node`'s agent reported (publish afterwards).
    pub fn set_reported(&self, node: &str, workloads: Vec<ReportedWorkload>) {
        self.raw().set_reported(node, workloads);
    }

    /// The desired state as of the store now, read incrementally; `None` when only objects
    /// outside it changed (drafts): nothing to derive or push.
    pub fn load(&self, store: &dyn Store) -> Result<(u64, Option<StateDoc>), ManagerError> {
        let mut raw = self.raw();
        // Read the revision first: the content is then at least as new as its label, never
        // older (and re-reading a change the next time is harmless).
        let revision = store.revision()?;
        // Only drafts changed (and no agent reported): nothing agents enforce did.
        let changes = store.changes_since(raw.revision)?;
        let relevant = raw.revision == 0
            || std::mem::take(&mut raw.reports_changed)
            || changes.is_empty()
            || changes.iter().any(|c| c.kind != crate::store::Kind::Draft);
        for c in changes {
            raw.apply(c);
        }
        raw.revision = revision;
        if !relevant {
            return Ok((revision, None));
        }
        raw.index_addresses();
        Ok((revision, Some(raw.derive()?)))
    }

    /// Pushes the store's current state to every watching agent if it is newer than what was
    /// last pushed; returns the revision in force.
    pub fn publish(&self, store: &dyn Store) -> Result<u64, ManagerError> {
        let _g = self.publish_lock.lock().unwrap_or_else(|p| p.into_inner());
        let cur = self.published();
        let t = std::time::Instant::now();
        let (revision, doc) = self.load(store)?;
        let loaded = t.elapsed();
        let Some(doc) = doc.filter(|_| revision > cur.revision || cur.revision == 0) else {
            return Ok(cur.revision);
        };
        let delta = (cur.revision != 0).then(|| StateDelta::between(&cur.doc, &doc));
        let p = Arc::new(Published::new(revision, cur.revision, doc, delta));
        let change = Change {
            revision,
            prev_revision: cur.revision,
            delta: p.delta.clone(),
        };
        let objects = p.delta_objects;
        let now = p.issued_unix_ms;
        self.tx.send_replace(p);
        if cur.revision != 0 {
            let mut s = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
            s.push_back((cur, Arc::default()));
            // An entry's successor is the next one (or the revision just published).
            while s.len() > SUPERSEDED_MAX
                || s.get(1).map_or(now, |n| n.0.issued_unix_ms) < now - SUPERSEDED_KEPT_MS
            {
                s.pop_front();
            }
        }
        // No stream listening is fine.
        let _ = self.changes.send(change);
        tracing::info!(
            revision,
            objects,
            "published revision {revision}: {objects} objects changed \
             (state read and derived in {:.1} ms, delta in {:.1} ms)",
            loaded.as_secs_f64() * 1e3,
            (t.elapsed() - loaded).as_secs_f64() * 1e3
        );
        Ok(revision)
    }

    /// Engines of the superseded revisions in force at some moment of `[from_ms, to_ms]`, and
    /// whether the current revision was too. When the window is older than every revision
    /// kept, the oldest kept stands in (best effort; documented in the threat model).
    pub fn engines_in_force(&self, from_ms: i64, to_ms: i64) -> (Vec<Arc<OnceLock<Engine>>>, bool) {
        let cur = self.published();
        let picked: Vec<Superseded> = {
            let s = self.superseded.lock().unwrap_or_else(|p| p.into_inner());
            s.iter()
                .enumerate()
                .filter(|(i, (p, _))| {
                    let until = s
                        .get(i + 1)
                        .map_or(cur.issued_unix_ms, |n| n.0.issued_unix_ms);
                    let overlaps = p.issued_unix_ms <= to_ms && until > from_ms;
                    overlaps || (*i == 0 && from_ms < p.issued_unix_ms)
                })
                .map(|(_, e)| e.clone())
                .collect()
        };
        // Built outside the lock (publishing never waits for it), once per revision.
        let mut out: Vec<Arc<OnceLock<Engine>>> = Vec::new();
        for (p, e) in picked {
            e.get_or_init(|| {
                Engine::build(
                    p.doc.inventory(),
                    p.doc.policies.iter().cloned(),
                    p.issued_unix_ms / 1000,
                )
            });
            out.push(e);
        }
        // Nothing kept covers it (a restart): the current revision stands in.
        let current = out.is_empty() || cur.issued_unix_ms <= to_ms;
        (out, current)
    }

    /// Runs `f` on the engine of the published revision: built once per revision (and again
    /// when a grant in it expires), shared by explain, proposals and compliance checks.
    pub fn with_engine<R>(&self, f: impl FnOnce(&Engine, &Published) -> R) -> R {
        let p = self.published();
        let now = now_ms() / 1000;
        let mut cache = self.engine.lock().unwrap_or_else(|p| p.into_inner());
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Body, Kind, SqliteStore, Write};

    fn draft() -> Write {
        Write {
            kind: Kind::Draft,
            key: "d".into(),
            body: Some(Body::Draft(Box::new(cellwall_api::Draft {
                name: "d".into(),
                created_by: "t".into(),
                created_at_ms: 0,
                since: "1h".into(),
                group_by: Default::default(),
                proposal: Default::default(),
                rules: Vec::new(),
                applied: None,
            }))),
        }
    }

    #[test]
    fn drafts_alone_publish_nothing_but_a_report_beside_them_does() {
        let store = SqliteStore::open(std::path::Path::new(":memory:")).unwrap();
        let state = State::new(Vec::new());
        let ns = Write {
            kind: Kind::Namespace,
            key: "a".into(),
            body: Some(Body::Namespace(cellwall_policy::Namespace::new(
                "a",
                Default::default(),
            ))),
        };
        store.write("t", &[ns]).unwrap();
        let first = state.publish(&store).unwrap();
        store.write("t", &[draft()]).unwrap();
        assert_eq!(state.publish(&store).unwrap(), first, "a draft published");
        // A report and a draft in the same window: the report must reach agents.
        state.set_reported("n1", Vec::new());
        let mut d = draft();
        d.key = "e".into();
        store.write("t", &[d]).unwrap();
        assert!(state.publish(&store).unwrap() > first);
    }
}

//! The Kubernetes source: a cluster's objects, watched through kube-rs
//! ([`cellwall_kube::watch`]), written into the store with the actor
//! `kubernetes:CONTEXT/PLURAL` (`kubernetes:CLUSTER/PLURAL` for a named one of several,
//! whose names are qualified: `cellwall_policy::clusters`), so every version says where it
//! came from. The cluster owns
//! them: the REST API refuses to change or delete them ([`Manager::refuse_cluster_owned`]),
//! because a change there would be silently undone by the next relist, or would let a token
//! holder rewrite what the platform team declared in the cluster.

use crate::cluster_status::StatusWriter;
use crate::config::KubeSource;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::objects::stored;
use crate::store::{Kind, Write};
use cellwall_api::ChangeAction;
use cellwall_kube::watch::{Change, Read};
use cellwall_kube::Resource;
use cellwall_policy::WorkloadKey;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use tokio::sync::watch;

/// What every cluster actor starts with.
pub const ACTOR_PREFIX: &str = "kubernetes:";

/// The actor of the versions a cluster's `resource` writes.
pub fn actor(context: &str, r: &Resource) -> String {
    format!("{ACTOR_PREFIX}{context}/{}", r.plural)
}

/// The store kind a resource's objects are kept as.
fn kind_of(r: &Resource) -> Kind {
    match r.kind {
        "Namespace" => Kind::Namespace,
        "Pod" => Kind::Pod,
        "Node" => Kind::Node,
        "Host" => Kind::Host,
        _ => Kind::Policy,
    }
}

/// Watches the cluster until shutdown; changes that arrive together are written together (one
/// transaction per resource, one publish).
pub async fn run(
    m: Arc<Manager>,
    source: KubeSource,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    let w = cellwall_kube::watch::watch_cluster(
        &source.kubeconfig,
        source.context.as_deref(),
        source.cluster.as_deref(),
    )
    .await
    .map_err(|e| ManagerError::Invalid(e.to_string()))?;
    tracing::info!(
        context = %w.context,
        server = %w.server,
        cluster = source.cluster.as_deref().unwrap_or("-"),
        "watching the Kubernetes API"
    );
    // A named cluster's versions say its name (names are unique; contexts of two
    // kubeconfigs may not be).
    let (context, client) = (source.cluster.clone().unwrap_or(w.context), w.client);
    let mut changes = w.changes.ready_chunks(1024);
    let mut failing: HashMap<&'static str, String> = HashMap::new();
    // Refusals already reported, by object version: a relist does not repeat them.
    let mut reported: HashSet<(String, String)> = HashSet::new();
    let mut statuses = Some(StatusWriter::new(source.cluster.clone()));
    let mut tick = tokio::time::interval(STATUS_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let batch = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            _ = tick.tick() => None,
            b = changes.next() => match b {
                Some(b) => Some(b),
                None => return Ok(()),
            },
        };
        let Some(batch) = batch else {
            write_statuses(&m, &client, &mut statuses, &source.cluster).await;
            continue;
        };
        let mut work = Vec::with_capacity(batch.len());
        for c in batch {
            match c {
                Change::Failed { resource, error } => {
                    // Once per distinct error: a CRD that is not installed fails every backoff.
                    if failing.get(resource.plural) != Some(&error) {
                        tracing::warn!(
                            resource = resource.plural,
                            "watch failed (retrying): {error}"
                        );
                        failing.insert(resource.plural, error);
                    }
                }
                other => {
                    failing.remove(resource_of(&other).plural);
                    work.push(other);
                }
            }
        }
        if work.is_empty() {
            continue;
        }
        if let Some(s) = statuses.as_mut() {
            s.observe(&work);
        }
        report_refusals(&client, &work, &mut reported).await;
        let (m, ctx) = (m.clone(), context.clone());
        let r = tokio::task::spawn_blocking(move || m.apply_cluster_changes(&ctx, work)).await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("writing the cluster's changes: {e}"),
            Err(e) => tracing::error!("writing the cluster's changes: {e}"),
        }
    }
}

/// Checks the sources and returns the name each one's versions carry
/// (`kubernetes:NAME/PLURAL`: its cluster's name, else its context's). Several clusters need
/// a valid name each, distinct ([`cellwall_policy::clusters::check_names`]), and no context
/// may be watched twice, even when one source names it and another takes it as the
/// kubeconfig's current one (two names for one cluster: every pod would conflict).
pub fn check_sources(sources: &[KubeSource]) -> Result<BTreeSet<String>, ManagerError> {
    cellwall_policy::clusters::check_names(sources.iter().map(|s| s.cluster.as_deref()))
        .map_err(ManagerError::Invalid)?;
    let mut names = BTreeSet::new();
    let mut contexts = HashSet::new();
    for s in sources {
        let ctx = cellwall_kube::read::context_name(&s.kubeconfig, s.context.as_deref())
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        if !contexts.insert((s.kubeconfig.clone(), ctx.clone())) {
            return Err(ManagerError::Invalid(format!(
                "the context {ctx} of {} is watched twice",
                s.kubeconfig.display()
            )));
        }
        names.insert(s.cluster.clone().unwrap_or(ctx));
    }
    Ok(names)
}

/// How often policy statuses are brought up to date (each write only when one changed).
const STATUS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// Writes the statuses that changed. The store reads run on the blocking pool, so the writer
/// moves there and back; a failed write is retried on a later tick.
async fn write_statuses(
    m: &Arc<Manager>,
    client: &cellwall_kube::KubeClient,
    slot: &mut Option<StatusWriter>,
    cluster: &Option<String>,
) {
    let Some(mut w) = slot.take() else { return };
    let m2 = m.clone();
    let now = cellwall_kube::watch::now_rfc3339();
    let (mut w, due) = match tokio::task::spawn_blocking(move || {
        let due = w.due(&m2, &now);
        (w, due)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!("computing policy statuses: {e}");
            *slot = Some(StatusWriter::new(cluster.clone()));
            return;
        }
    };
    match due {
        Ok(due) => {
            let failed: Vec<(&'static Resource, cellwall_kube::watch::ObjectRef)> =
                futures::stream::iter(due)
                    .map(|d| write_one(client, d))
                    .buffer_unordered(STATUS_WRITES_IN_FLIGHT)
                    .filter_map(|x| async move { x })
                    .collect()
                    .await;
            for (r, o) in failed {
                w.failed(r, &o);
            }
        }
        Err(e) => tracing::warn!("computing policy statuses: {e}"),
    }
    *slot = Some(w);
}

/// Status writes in flight at once: 2,000 changed statuses took 5.7 s one at a time against
/// the fake API server (debug build), which the API server's own concurrency would not need.
const STATUS_WRITES_IN_FLIGHT: usize = 16;

/// Writes one status (and its Event, if any); the object back when the status write failed.
async fn write_one(
    client: &cellwall_kube::KubeClient,
    d: crate::cluster_status::Due,
) -> Option<(&'static Resource, cellwall_kube::watch::ObjectRef)> {
    let (r, o) = (d.resource, d.object);
    let failed = match cellwall_kube::watch::write_status(client, r, &o, d.status).await {
        Ok(()) => false,
        Err(e) => {
            tracing::warn!("writing the status of {} {}: {e}", o.kind, o.name);
            true
        }
    };
    if let Some(why) = d.cannot_enforce {
        let message = format!("Cellwall cannot enforce this policy everywhere: {why}");
        let ev = cellwall_kube::watch::report_warning(client, &o, "NotEnforced", &message);
        if let Err(e) = ev.await {
            tracing::warn!("writing an Event about {} {}: {e}", o.kind, o.name);
        }
    }
    failed.then_some((r, o))
}

/// A Warning Event on every object the loader refused (once per object version: its
/// generation where it has one, so the manager's own status writes do not repeat it).
async fn report_refusals(
    client: &cellwall_kube::KubeClient,
    work: &[Change],
    reported: &mut HashSet<(String, String)>,
) {
    for c in work {
        let reads: Vec<&Read> = match c {
            Change::Listed { objects, .. } => objects.iter().collect(),
            Change::Applied { object, .. } => vec![object],
            _ => continue,
        };
        for r in reads {
            let Err(e) = &r.result else { continue };
            let o = &r.object;
            let version = (
                o.uid.clone().unwrap_or_else(|| o.name.clone()),
                match o.generation {
                    Some(g) => format!("g{g}"),
                    None => o.resource_version.clone().unwrap_or_default(),
                },
            );
            if !reported.insert(version) {
                continue;
            }
            if let Err(err) = cellwall_kube::watch::report_refused(client, o, &e.to_string()).await
            {
                tracing::warn!("writing an Event about {} {}: {err}", o.kind, o.name);
            }
        }
    }
}

fn resource_of(c: &Change) -> &'static Resource {
    match c {
        Change::Listed { resource, .. }
        | Change::Applied { resource, .. }
        | Change::Deleted { resource, .. }
        | Change::Failed { resource, .. } => resource,
    }
}

impl Manager {
    /// Writes a batch of a cluster's changes: per resource, in one transaction; a relist also
    /// deletes what this resource of this cluster wrote before and no longer holds. Objects
    /// the loader refuses are logged and audited, not written (the rest still are).
    pub fn apply_cluster_changes(
        &self,
        context: &str,
        changes: Vec<Change>,
    ) -> Result<(), ManagerError> {
        // Per actor, the last write per object wins.
        let mut by_actor: BTreeMap<String, BTreeMap<(Kind, String), Write>> = BTreeMap::new();
        for c in changes {
            let (r, deleted, reads, listed) = match c {
                Change::Listed { resource, objects } => (resource, false, objects, true),
                Change::Applied { resource, object } => (resource, false, vec![object], false),
                Change::Deleted { resource, object } => (resource, true, vec![object], false),
                Change::Failed { .. } => continue,
            };
            let actor = actor(context, r);
            let p = by_actor.entry(actor.clone()).or_default();
            if listed {
                p.clear();
            }
            let mut keys = BTreeSet::new();
            for read in reads {
                for (kind, key, body) in self.accepted(&actor, read) {
                    keys.insert((kind, key.clone()));
                    let body = (!deleted).then_some(body);
                    p.insert((kind, key.clone()), Write { kind, key, body });
                }
            }
            if listed {
                let kind = kind_of(r);
                for cur in self.store.current(kind)? {
                    if cur.changed_by == actor && !keys.contains(&(kind, cur.key.clone())) {
                        p.insert(
                            (kind, cur.key.clone()),
                            Write {
                                kind,
                                key: cur.key,
                                body: None,
                            },
                        );
                    }
                }
            }
        }
        // A named cluster's objects written now, checked for addresses another cluster holds.
        let mut written = crate::state::Holders::default();
        for w in by_actor.values().flat_map(|p| p.values()) {
            if w.body.is_none() || cellwall_policy::clusters::split(&w.key).is_none() {
                continue;
            }
            match w.kind {
                Kind::Pod => written.pods.extend(WorkloadKey::parse(&w.key)),
                Kind::Host => written.hosts.extend(WorkloadKey::parse(&w.key)),
                Kind::Node => written.nodes.push(w.key.clone()),
                _ => {}
            }
        }
        let mut changed = false;
        for (actor, p) in by_actor {
            let writes = self.others_deletes_dropped(&actor, p.into_values().collect())?;
            if writes.is_empty() {
                continue;
            }
            // The store leaves what is unchanged alone (a relist rewrites nothing).
            let c = self.store.write(&actor, &writes)?;
            changed |= c
                .changes
                .iter()
                .any(|c| !matches!(c.action, ChangeAction::Unchanged | ChangeAction::NotFound));
        }
        if changed {
            self.publish()?;
            self.address_overlaps(&written)?;
        }
        Ok(())
    }

    /// An alert for each address a named cluster's pod, node or host shares with another
    /// cluster's (see [`crate::state::State::shared_across_clusters`]).
    fn address_overlaps(&self, written: &crate::state::Holders) -> Result<(), ManagerError> {
        let shared = self.state.shared_across_clusters(written);
        if shared.is_empty() {
            return Ok(());
        }
        let now = crate::config::now_ms();
        let alerts = shared
            .into_iter()
            .map(|(ip, k, other)| {
                tracing::warn!("{k} and {other} both hold {ip}: clusters need distinct addresses");
                let message = format!(
                    "{k} and {other} both hold {ip}: the clusters' addresses overlap, so policy \
                     cannot tell them apart by address; give each cluster its own pod and node \
                     ranges"
                );
                crate::store::Alert::critical(
                    cellwall_api::AlertKind::AddressConflict,
                    now,
                    k,
                    other,
                    message,
                )
            })
            .collect();
        self.raise_alerts(alerts, now)
    }

    /// Deletes what clusters no longer watched wrote (the manager started without them, or
    /// with a cluster renamed: a cluster that became one of several is re-read under
    /// qualified names). Their objects are no one's to keep current, and a stale pod's
    /// address would stay bound to its old identity.
    pub fn retire_unwatched(&self, watched: &BTreeSet<String>) -> Result<(), ManagerError> {
        let mut by_actor: BTreeMap<String, Vec<Write>> = BTreeMap::new();
        for kind in [
            Kind::Policy,
            Kind::Pod,
            Kind::Host,
            Kind::Node,
            Kind::Namespace,
        ] {
            for cur in self.store.current(kind)? {
                let Some(rest) = cur.changed_by.strip_prefix(ACTOR_PREFIX) else {
                    continue;
                };
                let who = rest.rsplit_once('/').map_or(rest, |(w, _)| w);
                if watched.contains(who) {
                    continue;
                }
                by_actor
                    .entry(format!("{ACTOR_PREFIX}{who}/unwatched"))
                    .or_default()
                    .push(Write {
                        kind,
                        key: cur.key,
                        body: None,
                    });
            }
        }
        if by_actor.is_empty() {
            return Ok(());
        }
        for (actor, writes) in by_actor {
            tracing::warn!(
                "{actor}: deleting {} objects of a cluster no longer watched",
                writes.len()
            );
            self.store.write(&actor, &writes)?;
            self.log_event_later(
                &actor,
                "kubernetes.unwatched",
                &format!(
                    "{} objects of a cluster no longer watched deleted",
                    writes.len()
                ),
            );
        }
        self.publish()?;
        Ok(())
    }

    /// The stored form of what the loader read; a refused object is audited and skipped.
    fn accepted(&self, actor: &str, read: Read) -> Vec<(Kind, String, crate::store::Body)> {
        match read.result {
            Ok(objects) => objects.into_iter().map(|o| stored(o.object)).collect(),
            Err(e) => {
                tracing::warn!("{actor}: not enforced: {e}");
                self.log_event_later(actor, "kubernetes.refused", &e.to_string());
                Vec::new()
            }
        }
    }

    /// Leaves out deletions of objects `actor` did not write: a REST object of the same key
    /// is not the cluster's to delete.
    fn others_deletes_dropped(
        &self,
        actor: &str,
        writes: Vec<Write>,
    ) -> Result<Vec<Write>, ManagerError> {
        let (deletes, mut keep): (Vec<Write>, Vec<Write>) =
            writes.into_iter().partition(|w| w.body.is_none());
        let current = self.declarers_of(&deletes)?;
        keep.extend(deletes.into_iter().filter(|w| {
            current
                .get(&(w.kind, w.key.clone()))
                .is_some_and(|by| by == actor)
        }));
        Ok(keep)
    }

    /// Who wrote the current versions of the objects `writes` touch: one lookup each for a few
    /// (a watch event must not read 100,000 pods), every object of their kinds for many (a
    /// relist). Bodies are not read.
    fn declarers_of(
        &self,
        writes: &[Write],
    ) -> Result<HashMap<(Kind, String), String>, ManagerError> {
        const ONE_BY_ONE: usize = 256;
        let mut current = HashMap::new();
        if writes.len() <= ONE_BY_ONE {
            for w in writes {
                if let Some(by) = self.store.declarer(w.kind, &w.key)? {
                    current.insert((w.kind, w.key.clone()), by);
                }
            }
            return Ok(current);
        }
        let kinds: BTreeSet<Kind> = writes.iter().map(|w| w.kind).collect();
        for k in kinds {
            for (key, by) in self.store.declarers(k)? {
                current.insert((k, key), by);
            }
        }
        Ok(current)
    }

    /// Refuses REST writes to objects a cluster owns (see the module comment).
    pub(crate) fn refuse_cluster_owned(&self, writes: &[Write]) -> Result<(), ManagerError> {
        let current = self.declarers_of(writes)?;
        for w in writes {
            let Some(by) = current.get(&(w.kind, w.key.clone())) else {
                continue;
            };
            if by.starts_with(ACTOR_PREFIX) {
                return Err(ManagerError::Forbidden(format!(
                    "{:?} {} comes from a Kubernetes cluster ({by}): it is read-only here; \
                     change it through that cluster's API",
                    w.kind, w.key
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_clusters_need_distinct_valid_names_and_contexts() {
        let dir = std::env::temp_dir().join(format!("cw-sources-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let k = dir.join("kubeconfig");
        std::fs::write(
            &k,
            "apiVersion: v1\nkind: Config\nclusters: []\nusers: []\ncurrent-context: a\n\
             contexts:\n- {name: a, context: {cluster: x, user: u}}\n\
             - {name: b, context: {cluster: y, user: u}}\n",
        )
        .unwrap();
        let source = |ctx: Option<&str>, name: Option<&str>| KubeSource {
            kubeconfig: k.clone(),
            context: ctx.map(Into::into),
            cluster: name.map(Into::into),
        };
        let err = |s: &[KubeSource]| check_sources(s).unwrap_err().to_string();
        let names = |s: &[KubeSource]| check_sources(s).unwrap().into_iter().collect::<Vec<_>>();
        assert_eq!(names(&[source(None, None)]), ["a"]);
        assert!(
            err(&[source(Some("a"), Some("a")), source(Some("b"), None)]).contains("name each")
        );
        assert!(
            err(&[source(Some("a"), Some("x")), source(Some("b"), Some("x"))]).contains("twice")
        );
        assert!(err(&[source(Some("a"), Some("arn:aws:eks:x"))]).contains("a-z, 0-9"));
        // One context under two names, explicitly or as the current one.
        assert!(
            err(&[source(Some("a"), Some("x")), source(Some("a"), Some("y"))])
                .contains("watched twice")
        );
        assert!(
            err(&[source(None, Some("x")), source(Some("a"), Some("y"))]).contains("watched twice")
        );
        assert_eq!(
            names(&[
                source(Some("a"), Some("east")),
                source(Some("b"), Some("west"))
            ]),
            ["east", "west"]
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! Writing manifests (apply, delete: parsed with the policy crate, all or nothing) and reading
//! what the store holds for people: policies with their versions, workloads, the audit trail,
//! tokens.

use crate::config::now_ms;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::{Body, Committed, HostRecord, Kind, Version, Write};
use cellwall_api::{
    AuditEvent, AuditLog, Document, NamespaceList, ObjectVersion, PolicyHistory, PolicyItem,
    PolicyList, WorkloadList,
};
use cellwall_policy::load::{parse_file, Object};
use cellwall_policy::Policy;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Where an object is stored, and as what.
pub(crate) fn stored(o: Object) -> (Kind, String, Body) {
    match o {
        Object::Namespace(n) => (Kind::Namespace, n.name.clone(), Body::Namespace(n)),
        Object::Pod(w) => (Kind::Pod, w.key().to_string(), Body::Pod(Arc::new(w))),
        Object::Node(n) => (Kind::Node, n.name.clone(), Body::Node(n)),
        Object::Policy(p) => (Kind::Policy, p.id.to_string(), Body::Policy(p)),
        Object::Host(h) => (
            Kind::Host,
            format!("{}/{}", h.namespace, h.name),
            Body::Host(HostRecord {
                namespace: h.namespace,
                name: h.name,
                node: h.node,
                labels: h.labels,
                addresses: h.addresses,
            }),
        ),
    }
}

/// Whether an inventory object carries the label only a watched cluster's objects get
/// (`cellwall_policy::clusters`): a cluster's policies select by it.
fn claims_a_cluster(o: &Object) -> bool {
    let labels = match o {
        Object::Namespace(n) => &n.labels,
        Object::Pod(w) => &w.labels,
        Object::Node(n) => &n.labels,
        Object::Host(h) => &h.labels,
        Object::Policy(_) => return false,
    };
    labels.contains_key(cellwall_policy::clusters::CLUSTER_LABEL)
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

fn object_version(v: Version) -> ObjectVersion {
    ObjectVersion {
        kind: v.kind,
        key: v.key,
        version: v.version,
        revision: v.revision,
        deleted: v.deleted,
        actor: v.actor,
        at_ms: v.at_ms,
        body: v.body.map(|b| b.to_json()),
    }
}

impl Manager {
    /// Parses documents with the policy crate (same errors as `cellwall analyze`) and writes every
    /// object they hold in one transaction, or nothing.
    pub fn apply(
        &self,
        actor: &str,
        docs: &[Document],
        delete: bool,
        ignore_unknown: bool,
    ) -> Result<Committed, ManagerError> {
        let t = std::time::Instant::now();
        let mut writes: Vec<Write> = Vec::new();
        let mut seen = BTreeMap::new();
        for d in docs {
            let parsed =
                parse_file(&d.file, &d.text).map_err(|e| ManagerError::Invalid(e.to_string()))?;
            if let (Some(u), false) = (parsed.unknown.first(), ignore_unknown) {
                return Err(ManagerError::Invalid(format!(
                    "{u} (ignore_unknown_kinds skips objects of other kinds)"
                )));
            }
            for o in parsed.objects {
                let what = o.object.describe();
                if claims_a_cluster(&o.object) {
                    return Err(ManagerError::Invalid(format!(
                        "{}: {what}: the label {} is the manager's, set on a watched cluster's \
                         objects only; a request cannot give it (it would pose as that cluster's)",
                        o.source,
                        cellwall_policy::clusters::CLUSTER_LABEL
                    )));
                }
                let (kind, key, body) = stored(o.object);
                if let Some(first) = seen.insert((kind, key.clone()), o.source.clone()) {
                    return Err(ManagerError::Invalid(format!(
                        "{}: {what} is defined twice (first at {first})",
                        o.source
                    )));
                }
                writes.push(Write {
                    kind,
                    key,
                    body: (!delete).then_some(body),
                });
            }
        }
        if writes.is_empty() {
            return Err(ManagerError::Invalid("no objects in the documents".into()));
        }
        self.refuse_cluster_owned(&writes)?;
        let parsed = t.elapsed();
        let c = self.store.write(actor, &writes)?;
        let stored = t.elapsed();
        self.publish()?;
        // Where a large apply's time goes (docs/benchmarks.md reads it).
        tracing::info!(
            objects = writes.len(),
            "applied {} objects: parsed in {:.1} ms, stored in {:.1} ms, published in {:.1} ms",
            writes.len(),
            parsed.as_secs_f64() * 1e3,
            (stored - parsed).as_secs_f64() * 1e3,
            (t.elapsed() - stored).as_secs_f64() * 1e3
        );
        Ok(c)
    }

    /// Every stored policy with its summary and last change.
    pub fn policy_list(&self) -> Result<PolicyList, ManagerError> {
        let now = now_ms() / 1000;
        let items = self
            .store
            .current(Kind::Policy)?
            .into_iter()
            .filter_map(|c| {
                let Body::Policy(p) = c.body else {
                    return None;
                };
                Some(PolicyItem {
                    id: p.id.to_string(),
                    kind: p.id.family.kind().to_string(),
                    namespace: p.id.namespace.clone(),
                    name: p.id.name.clone(),
                    tier: p.tier,
                    priority: p.priority,
                    mode: p.mode,
                    expires_at: p.expires_at,
                    rules: p.rules.len(),
                    version: c.version,
                    changed_by: c.changed_by,
                    changed_at_ms: c.changed_at_ms,
                    seconds_left: p.expires_at.map(|t| (t - now).max(0)),
                    policy: *p,
                })
            })
            .collect();
        Ok(PolicyList { items })
    }

    /// Every version of policy `id` (`Kind/namespace/name`).
    pub fn policy_history(&self, id: &str) -> Result<PolicyHistory, ManagerError> {
        let versions = self.store.history(Kind::Policy, id)?;
        Ok(PolicyHistory {
            versions: versions.into_iter().map(object_version).collect(),
        })
    }

    pub fn workload_list(&self) -> WorkloadList {
        let p = self.published();
        WorkloadList {
            revision: p.revision,
            items: p.doc.workloads.iter().map(|w| (**w).clone()).collect(),
        }
    }

    pub fn namespace_list(&self) -> NamespaceList {
        let p = self.published();
        NamespaceList {
            revision: p.revision,
            items: p.doc.namespaces.clone(),
        }
    }

    /// The newest object versions and events.
    pub fn audit_log(&self, limit: usize) -> Result<AuditLog, ManagerError> {
        if !(1..=100_000).contains(&limit) {
            return Err(ManagerError::Invalid(format!(
                "limit={limit}: expected 1..100000"
            )));
        }
        Ok(AuditLog {
            changes: self
                .store
                .audit(limit)?
                .into_iter()
                .map(object_version)
                .collect(),
            events: self
                .store
                .events(limit)?
                .into_iter()
                .map(|e| AuditEvent {
                    at_ms: e.at_ms,
                    actor: e.actor,
                    action: e.action,
                    detail: e.detail,
                })
                .collect(),
        })
    }
}

//! The stored objects as last read, updated with only what changed since (re-reading and
//! parsing 100,000 objects on every change would cost ~1 s), plus what agents reported and
//! indexes over both.

use crate::store::{
    Body, Changed, HostRecord, ImportRecord, Kind, QuarantineRecord, ReportedWorkload,
};
use cellwall_policy::{Namespace, Node, Policy, Workload, WorkloadKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

#[derive(Default)]
pub struct Raw {
    pub revision: u64,
    pub namespaces: BTreeMap<String, Namespace>,
    /// In the published order, shared with the published documents.
    pub workloads: BTreeMap<WorkloadKey, Arc<Workload>>,
    pub nodes: BTreeMap<String, Node>,
    /// Shared with the published documents: a revision copies a pointer per policy, and the
    /// diff between two revisions skips every policy that is the same object.
    pub policies: BTreeMap<String, Arc<Policy>>,
    pub imports: BTreeMap<String, ImportRecord>,
    pub quarantines: BTreeMap<String, QuarantineRecord>,
    /// Declared hosts by `namespace/name`.
    pub hosts: BTreeMap<WorkloadKey, HostRecord>,
    /// What each node's agent reported.
    pub reported: BTreeMap<String, Vec<ReportedWorkload>>,
    /// A report arrived since the last load: the state changed though no object did.
    pub reports_changed: bool,
    /// `reported` by workload (rebuilt when an agent reports something new).
    reported_by_key: Option<Arc<ReportedIndex>>,
    /// Who owns each address (built at the first load, then patched as workloads change and
    /// nodes report): see `state::reports`.
    pub(super) addr_owners: Option<super::owners::AddrOwners>,
}

/// What agents reported (and the manager accepted), by workload.
#[derive(Default)]
pub struct ReportedIndex {
    /// Workload → (node, what its agent reported).
    pub by_key: HashMap<WorkloadKey, (String, ReportedWorkload)>,
}

impl Raw {
    /// Applies one changed object (a deletion when it has no body).
    pub fn apply(&mut self, c: Changed) {
        let Changed { kind, key, body } = c;
        match body {
            Some(Body::Namespace(n)) => {
                self.namespaces.insert(key, n);
            }
            Some(Body::Pod(w)) => {
                if let Some(k) = WorkloadKey::parse(&key) {
                    let old = self.workloads.insert(k.clone(), w.clone());
                    if let Some(index) = &mut self.addr_owners {
                        index.replace_workload(&k, old.as_deref(), Some(&w));
                    }
                }
            }
            Some(Body::Node(n)) => {
                self.nodes.insert(key, n);
            }
            Some(Body::Policy(p)) => {
                self.policies.insert(key, Arc::from(p));
            }
            Some(Body::Import(i)) => {
                self.imports.insert(key, i);
            }
            Some(Body::Quarantine(q)) => {
                self.quarantines.insert(key, q);
            }
            Some(Body::Host(h)) => {
                if let Some(k) = WorkloadKey::parse(&key) {
                    self.hosts.insert(k, h);
                }
            }
            // Drafts are reviewed, not enforced.
            Some(Body::Draft(_)) => {}
            None => self.remove(kind, &key),
        }
    }

    fn remove(&mut self, kind: Kind, key: &str) {
        match kind {
            Kind::Namespace => drop(self.namespaces.remove(key)),
            Kind::Pod => {
                if let Some(k) = WorkloadKey::parse(key) {
                    let old = self.workloads.remove(&k);
                    if let Some(index) = &mut self.addr_owners {
                        index.replace_workload(&k, old.as_deref(), None);
                    }
                }
            }
            Kind::Node => drop(self.nodes.remove(key)),
            Kind::Policy => drop(self.policies.remove(key)),
            Kind::Import => drop(self.imports.remove(key)),
            Kind::Quarantine => drop(self.quarantines.remove(key)),
            Kind::Host => {
                if let Some(k) = WorkloadKey::parse(key) {
                    self.hosts.remove(&k);
                }
            }
            Kind::Draft => {}
        }
    }

    /// Records what a node's agent reported (the index is rebuilt on next use).
    pub fn set_reported(&mut self, node: &str, workloads: Vec<ReportedWorkload>) {
        self.reports_changed = true;
        let old = self.reported.insert(node.to_string(), workloads);
        if let Some(index) = &mut self.addr_owners {
            index.replace_node(node, old.as_deref().unwrap_or(&[]), &self.reported[node]);
        }
        self.reported_by_key = None;
    }

    pub fn reported_index(&mut self) -> Arc<ReportedIndex> {
        if let Some(x) = &self.reported_by_key {
            return x.clone();
        }
        let mut x = ReportedIndex::default();
        for (node, reported) in &self.reported {
            for r in reported {
                let Some(k) = WorkloadKey::parse(&r.key) else {
                    continue;
                };
                x.by_key.insert(k, (node.clone(), r.clone()));
            }
        }
        let x = Arc::new(x);
        self.reported_by_key = Some(x.clone());
        x
    }
}

/// Imported entries by what they match, in import order (later entries win).
#[derive(Default)]
pub struct ImportIndex<'a> {
    pub entries: Vec<&'a cellwall_policy::import::Entry>,
    by_ip: HashMap<std::net::IpAddr, Vec<usize>>,
    by_host: HashMap<&'a str, Vec<usize>>,
    by_key: HashMap<(&'a str, &'a str), Vec<usize>>,
}

impl<'a> ImportIndex<'a> {
    pub fn new(imports: &'a BTreeMap<String, ImportRecord>) -> Self {
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
    pub fn matching(&self, w: &Workload) -> Vec<usize> {
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

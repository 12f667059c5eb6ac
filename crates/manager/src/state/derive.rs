//! The desired state from what is stored: objects, with addresses and nodes of pods that agents
//! reported and the manifests left open, imported labels, and quarantines. A workload none of
//! these touch is the stored one itself (shared, not copied).

use super::quarantine::{quarantine_mark, quarantine_policy, QUARANTINE_LABEL};
use super::raw::{ImportIndex, Raw};
use crate::error::ManagerError;
use crate::store::{QuarantineRecord, ReportedWorkload};
use cellwall_policy::{Policy, Workload, WorkloadKey};
use cellwall_proto::StateDoc;
use std::collections::HashMap;
use std::sync::Arc;

/// What changes one stored workload on its way into the desired state.
struct Overlay<'a> {
    imports: ImportIndex<'a>,
    quarantined: HashMap<WorkloadKey, &'a QuarantineRecord>,
}

impl Overlay<'_> {
    fn touches(&self, w: &Workload) -> bool {
        (!self.imports.entries.is_empty() && !self.imports.matching(w).is_empty())
            || self.quarantined.contains_key(&w.key())
    }

    /// `w` with what its agent reported (addresses, node) where the manifest left them open,
    /// imported labels, and its quarantine (adding the quarantine's policy to `policies`).
    fn apply(
        &self,
        mut w: Workload,
        reported: Option<(&String, &ReportedWorkload)>,
        policies: &mut Vec<Arc<Policy>>,
    ) -> Result<Workload, ManagerError> {
        if let Some((node, r)) = reported {
            if w.ips.is_empty() {
                w.ips = r.ips.iter().filter_map(|s| s.parse().ok()).collect();
            }
            if w.node.is_none() {
                w.node = Some(node.clone());
            }
        }
        // Imported labels (prefixed per source), after addresses are known.
        for i in self.imports.matching(&w) {
            for (k, v) in &self.imports.entries[i].labels {
                w.labels.insert(k.clone(), v.clone());
            }
        }
        if let Some(q) = self.quarantined.get(&w.key()) {
            let mark = quarantine_mark(&w.key());
            w.labels.insert(QUARANTINE_LABEL.to_string(), mark);
            policies.push(Arc::new(quarantine_policy(q)?));
        }
        Ok(w)
    }
}

impl Raw {
    pub fn derive(&mut self) -> Result<StateDoc, ManagerError> {
        let reported = self.reported_index();
        let overlay = Overlay {
            imports: ImportIndex::new(&self.imports),
            quarantined: self
                .quarantines
                .values()
                .filter_map(|q| WorkloadKey::parse(&q.workload).map(|k| (k, q)))
                .collect(),
        };
        let mut policies: Vec<Arc<Policy>> = self.policies.values().cloned().collect();
        let mut workloads = Vec::with_capacity(self.workloads.len() + self.hosts.len());
        for (k, w) in &self.workloads {
            let rep = reported
                .by_key
                .get(k)
                .filter(|_| w.ips.is_empty() || w.node.is_none())
                .map(|(n, r)| (n, r));
            if rep.is_none() && !overlay.touches(w) {
                workloads.push(w.clone());
                continue;
            }
            let w = overlay.apply(Workload::clone(w), rep, &mut policies)?;
            workloads.push(Arc::new(w));
        }
        // A declared host is a workload of its own: labels and node from its declaration,
        // addresses from its agent's accepted report, else the declaration's single addresses.
        for (k, h) in &self.hosts {
            let reported_ips: Vec<std::net::IpAddr> = reported
                .by_key
                .get(k)
                .filter(|(n, r)| *n == h.node && r.host)
                .map(|(_, r)| r.ips.iter().filter_map(|s| s.parse().ok()).collect())
                .unwrap_or_default();
            let ips = if reported_ips.is_empty() {
                h.addresses
                    .iter()
                    .filter(|c| c.prefix() == if c.is_ipv4() { 32 } else { 128 })
                    .map(|c| c.addr())
                    .collect()
            } else {
                reported_ips
            };
            let w = Workload {
                namespace: k.namespace.clone(),
                name: k.name.clone(),
                labels: h.labels.clone().into(),
                ips,
                ports: Vec::new(),
                node: Some(h.node.clone()),
                host_network: false,
                owner: None,
            };
            workloads.push(Arc::new(overlay.apply(w, None, &mut policies)?));
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

//! Emergencies first: a revision that cuts a local workload off (a quarantine) is enforced for
//! that workload before it waits behind a compile in progress.
//!
//! An emergency is an active, enforced admin-tier policy with a negative priority (the
//! manager's quarantines sit at -1,000,000; user policies rarely go below 0) holding a rule
//! that denies every peer on every port in a direction. Its local subjects are isolated in the
//! datapath at once (`Desired::isolate`: the endpoint's entries only, then one switch); the
//! revision's own compile follows in order and replaces the isolation with the policy's exact
//! tables. Until then the isolation is stricter than the policy (an exception the policy allows,
//! such as a quarantine's management access, waits for the compile): fail closed.

use crate::discovery::LocalEndpoint;
use crate::enforcer::{Isolation, Isolations, Urgent};
use cellwall_datapath::abi::addr16;
use cellwall_datapath::Datapath;
use cellwall_policy::engine::subject_selects;
use cellwall_policy::labels::Labels;
use cellwall_policy::model::{Action, Direction, Entity, Peer, Policy, Tier};
use cellwall_policy::{Mode, Workload, WorkloadKey};
use cellwall_proto::{Payload, StateDoc};
use std::collections::HashMap;
use std::net::IpAddr;

/// What the emergency check needs of the state in force, copied before a compile starts (the
/// compile holds the agent's state meanwhile): local workloads and namespace labels.
#[derive(Debug, Clone, Default)]
pub struct LocalView {
    local: HashMap<WorkloadKey, LocalEndpoint>,
    /// Local workload → its addresses and the labels it has now.
    workloads: HashMap<WorkloadKey, (Vec<IpAddr>, Labels)>,
    namespaces: HashMap<String, Labels>,
}

impl LocalView {
    pub fn new(doc: &StateDoc, endpoints: &[LocalEndpoint]) -> Self {
        let mut v = LocalView {
            local: endpoints
                .iter()
                .filter_map(|e| Some((WorkloadKey::parse(&e.key)?, e.clone())))
                .collect(),
            namespaces: doc
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.labels.clone()))
                .collect(),
            ..Default::default()
        };
        for w in &doc.workloads {
            v.note(w);
        }
        v
    }

    fn note(&mut self, w: &Workload) {
        let k = w.key();
        if let Some(e) = self.local.get(&k) {
            let ips = if w.ips.is_empty() {
                e.ips.clone()
            } else {
                w.ips.clone()
            };
            self.workloads.insert(k, (ips, Labels::clone(&w.labels)));
        }
    }

    fn selects(&self, p: &Policy, ns: &str, labels: &Labels) -> bool {
        self.namespaces
            .get(ns)
            .is_some_and(|ns_labels| subject_selects(&p.subject, ns, ns_labels, labels))
    }
}

/// The directions a policy cuts its subjects off in, if it is an emergency.
fn cuts(p: &Policy, now: i64) -> Option<(bool, bool)> {
    if p.tier != Tier::Admin || p.priority >= 0 || p.mode != Mode::Enforce || !p.is_active(now) {
        return None;
    }
    let cut = |d: Direction| {
        p.rules.iter().any(|r| {
            r.direction == d
                && r.action == Action::Deny
                && r.ports.is_empty()
                && r.expires_at.is_none_or(|t| now < t)
                && r.peers
                    .iter()
                    .any(|x| matches!(x, Peer::Any | Peer::Entity(Entity::All)))
        })
    };
    let (ingress, egress) = (cut(Direction::Ingress), cut(Direction::Egress));
    (ingress || egress).then_some((ingress, egress))
}

/// Enforces at once what revision `version` cuts off on this node (programs attached where
/// none were). Returns how many endpoint addresses were isolated.
pub fn enforce_first<D: Datapath>(
    u: &mut Urgent<'_, D>,
    payload: &Payload,
    view: &LocalView,
    now: i64,
    version: u64,
) -> Result<usize, crate::AgentError> {
    let (isos, interfaces) = isolations(payload, view, now, version);
    if isos.is_empty() {
        return Ok(0);
    }
    for (ifname, nic) in interfaces {
        if !u.datapath().is_attached(&ifname) {
            if nic {
                u.datapath().attach_nic(&ifname)?;
            } else {
                u.datapath().attach(&ifname)?;
            }
        }
    }
    u.isolate(&isos)
}

/// The local endpoint addresses revision `version` cuts off, and how; with the interfaces that
/// must carry programs for it.
fn isolations(
    payload: &Payload,
    view: &LocalView,
    now: i64,
    version: u64,
) -> (Isolations, Vec<(String, bool)>) {
    let (policies, workloads, namespaces) = match payload {
        Payload::Snapshot(doc) => (&doc.policies, &doc.workloads, &doc.namespaces),
        Payload::Delta { delta, .. } => (&delta.policies, &delta.workloads, &delta.namespaces),
    };
    let emergencies: Vec<(&Policy, (bool, bool))> = policies
        .iter()
        .filter_map(|p| Some((&**p, cuts(p, now)?)))
        .collect();
    if emergencies.is_empty() {
        return Default::default();
    }
    // The revision's own workloads and namespaces over the state in force.
    let mut view = view.clone();
    for n in namespaces {
        view.namespaces.insert(n.name.clone(), n.labels.clone());
    }
    for w in workloads {
        view.note(w);
    }
    let (mut out, mut interfaces) = (Vec::new(), Vec::new());
    for (k, (ips, labels)) in &view.workloads {
        for (p, (ingress, egress)) in &emergencies {
            if view.selects(p, &k.namespace, labels) {
                let iso = Isolation {
                    ingress: *ingress,
                    egress: *egress,
                    version,
                };
                out.extend(ips.iter().map(|ip| (addr16(*ip), iso)));
                if let Some(e) = view.local.get(k).filter(|e| !e.interface.is_empty()) {
                    interfaces.push((e.interface.clone(), e.nic));
                }
            }
        }
    }
    (out, interfaces)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_policy::load::{parse_file, Object};

    fn policy(yaml: &str) -> Policy {
        match parse_file("t.yaml", yaml).unwrap().objects.remove(0).object {
            Object::Policy(p) => *p,
            _ => panic!("not a policy"),
        }
    }

    const QUARANTINE: &str = "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {name: q, namespace: x}\nspec:\n  tier: admin\n  priority: -1000000\n  podSelector: {matchLabels: {q: 'yes'}}\n  ingress:\n  - {action: Allow, from: [{podSelector: {matchLabels: {app: ops}}}]}\n  - {action: Deny, from: [{entity: all}]}\n  egress:\n  - {action: Deny, to: [{entity: all}]}\n";

    #[test]
    fn only_negative_priority_admin_deny_alls_are_emergencies() {
        assert_eq!(cuts(&policy(QUARANTINE), 0), Some((true, true)));
        let ordinary = QUARANTINE.replace("-1000000", "10");
        assert_eq!(cuts(&policy(&ordinary), 0), None);
        let ported = QUARANTINE.replace(
            "to: [{entity: all}]",
            "to: [{entity: all}], ports: [{port: 22}]",
        );
        assert_eq!(cuts(&policy(&ported), 0), Some((true, false)));
        let audit = QUARANTINE.replace("tier: admin", "tier: admin\n  mode: audit");
        assert_eq!(cuts(&policy(&audit), 0), None);
    }
}

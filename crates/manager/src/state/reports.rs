//! What an agent may report (Kubernetes' NodeRestriction, for Cellwall): only workloads the
//! store binds to its node — pods whose `nodeName` is that node, hosts an admin declared for it
//! — with addresses no other workload owns. Names, labels and bindings come from the store;
//! an agent is a witness for its own node, not an authority.

use super::raw::Raw;
use crate::store::ReportedWorkload;
use crate::validate::{interface_name, workload_address, workload_key};
use cellwall_policy::WorkloadKey;
use std::collections::HashMap;
use std::net::IpAddr;

/// Addresses one reported workload may have.
pub const MAX_ADDRESSES: usize = 16;

/// A reported address another workload owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub ip: IpAddr,
    /// Who claimed it.
    pub claimed_by: String,
    /// Who owns it.
    pub owner: String,
}

/// A report sorted into what is kept and what is refused (and why).
#[derive(Debug, Default)]
pub struct Checked {
    pub accepted: Vec<ReportedWorkload>,
    pub refused: Vec<String>,
    pub conflicts: Vec<Conflict>,
}

impl Raw {
    /// Who owns each address, as far as the store and other nodes' accepted reports say.
    fn owners(&self, except_node: &str) -> HashMap<IpAddr, String> {
        let mut m = HashMap::new();
        for (k, w) in &self.workloads {
            if w.host_network {
                continue;
            }
            for ip in &w.ips {
                m.entry(*ip).or_insert_with(|| k.to_string());
            }
        }
        for (node, reports) in &self.reported {
            if node == except_node {
                continue;
            }
            for r in reports {
                for ip in r.ips.iter().filter_map(|s| s.parse().ok()) {
                    m.entry(ip).or_insert_with(|| r.key.clone());
                }
            }
        }
        m
    }

    /// Sorts `node`'s report: see the module documentation.
    pub fn check_reports(&self, node: &str, reports: Vec<ReportedWorkload>) -> Checked {
        let owners = self.owners(node);
        let mut out = Checked::default();
        for mut r in reports {
            match self.check_one(node, &r, &owners) {
                Err(why) => out.refused.push(why),
                Ok(conflicts) if !conflicts.is_empty() => {
                    out.refused.push(format!(
                        "{}: address {} belongs to {}",
                        r.key, conflicts[0].ip, conflicts[0].owner
                    ));
                    out.conflicts.extend(conflicts);
                }
                Ok(_) => {
                    // Labels come from the store (manifests, declarations, imports), never
                    // from an agent.
                    r.labels.clear();
                    out.accepted.push(r);
                }
            }
        }
        out
    }

    fn check_one(
        &self,
        node: &str,
        r: &ReportedWorkload,
        owners: &HashMap<IpAddr, String>,
    ) -> Result<Vec<Conflict>, String> {
        if !workload_key(&r.key) {
            return Err("a workload name that is not NAMESPACE/NAME in Kubernetes form".into());
        }
        if !r.interface.is_empty() && !interface_name(&r.interface) {
            return Err(format!("{}: an invalid interface name", r.key));
        }
        if r.ips.len() > MAX_ADDRESSES {
            return Err(format!("{}: more than {MAX_ADDRESSES} addresses", r.key));
        }
        let mut ips = Vec::with_capacity(r.ips.len());
        for s in &r.ips {
            match s.parse::<IpAddr>() {
                Ok(ip) if workload_address(ip) => ips.push(ip),
                _ => return Err(format!("{}: an address that is not a workload's", r.key)),
            }
        }
        let key = WorkloadKey::parse(&r.key).expect("checked above");
        let declared = self.declared_ips(node, &key, r.host)?;
        let mut conflicts = Vec::new();
        for ip in ips {
            // Where the store fixes the addresses (a pod's manifest, a host's declaration), the
            // report must be among them; and no address may be another workload's.
            if let Some(allowed) = &declared {
                if !allowed.iter().any(|a| a.contains(&ip)) {
                    return Err(format!(
                        "{}: address {ip} is not one the store gives it",
                        r.key
                    ));
                }
            }
            if let Some(owner) = owners.get(&ip).filter(|o| **o != r.key) {
                conflicts.push(Conflict {
                    ip,
                    claimed_by: r.key.clone(),
                    owner: owner.clone(),
                });
            }
        }
        Ok(conflicts)
    }

    /// Checks that `key` is bound to `node` (a pod with that `nodeName`, or a host declared for
    /// it); returns the addresses the store fixes for it, if it fixes any.
    fn declared_ips(
        &self,
        node: &str,
        key: &WorkloadKey,
        host: bool,
    ) -> Result<Option<Vec<cellwall_policy::Cidr>>, String> {
        if host {
            let h = self
                .hosts
                .get(key)
                .ok_or_else(|| format!("{key}: no host is declared with that name"))?;
            if h.node != node {
                return Err(format!("{key}: the host is declared for node {}", h.node));
            }
            return Ok(Some(h.addresses.clone()));
        }
        let w = self
            .workloads
            .get(key)
            .ok_or_else(|| format!("{key}: no such workload"))?;
        match w.node.as_deref() {
            Some(n) if n == node => {}
            Some(n) => return Err(format!("{key}: bound to node {n}")),
            None => return Err(format!("{key}: not bound to a node (no nodeName)")),
        }
        Ok((!w.ips.is_empty()).then(|| {
            w.ips
                .iter()
                .map(|ip| cellwall_policy::Cidr::host(*ip))
                .collect()
        }))
    }
}

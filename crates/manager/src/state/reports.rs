//! What an agent may report (Kubernetes' NodeRestriction, for Cellwall): only workloads the
//! store binds to its node — pods whose `nodeName` is that node, hosts an admin declared for it
//! — with addresses no other workload owns. Names, labels and bindings come from the store;
//! an agent is a witness for its own node, not an authority.

use super::owners::AddrOwners;
use super::raw::Raw;
use crate::store::ReportedWorkload;
use crate::validate::{interface_name, workload_address, workload_key};
use cellwall_policy::WorkloadKey;
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
    /// Builds the address index if it is not there: once, at the first load (it is patched
    /// from then on, so a relabel does not make the next report pay for a rebuild).
    pub fn index_addresses(&mut self) {
        if self.addr_owners.is_none() {
            self.addr_owners = Some(AddrOwners::build(&self.workloads, &self.reported));
        }
    }

    /// Sorts `node`'s report: see the module documentation.
    pub fn check_reports(&mut self, node: &str, reports: Vec<ReportedWorkload>) -> Checked {
        self.index_addresses();
        let owners = self.addr_owners.as_ref().expect("built above");
        let mut out = Checked::default();
        for mut r in reports {
            match self.check_one(node, &r, owners) {
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
        owners: &AddrOwners,
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
            if let Some(owner) = owners.owner(&ip, node).filter(|o| *o != r.key) {
                conflicts.push(Conflict {
                    ip,
                    claimed_by: r.key.clone(),
                    owner: owner.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Body;
    use std::collections::HashMap;
    use std::sync::Arc;

    fn report(key: &str, ips: &[u8]) -> ReportedWorkload {
        ReportedWorkload {
            key: key.into(),
            ips: ips.iter().map(|i| format!("10.0.0.{i}")).collect(),
            interface: String::new(),
            labels: Default::default(),
            host: false,
        }
    }

    /// The rule, written plainly: the store's workloads in key order, then the other nodes'
    /// reports in node order; the first claim of an address wins.
    fn reference_owners(raw: &Raw, asking: &str) -> HashMap<IpAddr, String> {
        let mut m = HashMap::new();
        for (k, w) in raw.workloads.iter().filter(|(_, w)| !w.host_network) {
            for ip in &w.ips {
                m.entry(*ip).or_insert_with(|| k.to_string());
            }
        }
        for (_, reports) in raw.reported.iter().filter(|(n, _)| *n != asking) {
            for r in reports {
                for ip in r.ips.iter().filter_map(|s| s.parse().ok()) {
                    m.entry(ip).or_insert_with(|| r.key.clone());
                }
            }
        }
        m
    }

    /// The attack: a node of one cluster reporting (claiming an address for) a workload of
    /// another cluster; the cluster's own node may. The binding rule holds it: a cluster's
    /// pods are bound to its own qualified nodes (`cellwall_policy::clusters`).
    #[test]
    fn a_node_reports_only_its_own_clusters_workloads() {
        let mut raw = Raw::default();
        let w = cellwall_policy::Workload {
            namespace: "west:shop".into(),
            name: "web".into(),
            labels: Default::default(),
            ips: vec![],
            ports: vec![],
            node: Some("west:n1".into()),
            host_network: false,
            owner: None,
        };
        raw.workloads.insert(w.key(), Arc::new(w));
        let c = raw.check_reports("east:n1", vec![report("west:shop/web", &[1])]);
        assert!(c.accepted.is_empty());
        let c = raw.check_reports("n1", vec![report("west:shop/web", &[1])]);
        assert!(c.accepted.is_empty());
        let c = raw.check_reports("west:n1", vec![report("west:shop/web", &[1])]);
        assert_eq!(c.accepted.len(), 1);
    }

    /// Whatever order nodes report and workloads change in, the patched index answers as one
    /// built from scratch, and both as the rule says.
    #[test]
    fn the_patched_index_answers_as_a_rebuilt_one() {
        let mut raw = Raw::default();
        for i in 0..6u8 {
            let w = cellwall_policy::Workload {
                namespace: "s".into(),
                name: format!("w{i}"),
                labels: Default::default(),
                ips: vec![format!("10.0.0.{i}").parse().unwrap()],
                ports: vec![],
                node: Some(format!("n{}", i % 3)),
                host_network: i == 5,
                owner: None,
            };
            raw.workloads.insert(w.key(), Arc::new(w));
        }
        let _ = raw.check_reports("n0", vec![]); // builds the index
        let mut seed = 7u64;
        let mut next = |n: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % n
        };
        for _ in 0..600 {
            if next(3) == 0 {
                // The store changes: a pod added, readdressed or deleted (keys whose string
                // order differs from their (namespace, name) order: `a/x` < `a-b/y`).
                let ns = ["a", "a-b", "s"][next(3) as usize];
                let key = format!("{ns}/p{}", next(4));
                let body = (next(4) != 0).then(|| {
                    Body::Pod(Arc::new(cellwall_policy::Workload {
                        namespace: ns.into(),
                        name: key.split('/').nth(1).unwrap().into(),
                        labels: Default::default(),
                        ips: (0..next(3))
                            .map(|_| format!("10.0.0.{}", next(10)).parse().unwrap())
                            .collect(),
                        ports: vec![],
                        node: None,
                        host_network: next(5) == 0,
                        owner: None,
                    }))
                });
                raw.apply(crate::store::Changed {
                    kind: crate::store::Kind::Pod,
                    key,
                    body,
                });
            } else {
                let node = format!("n{}", next(4));
                let reports: Vec<ReportedWorkload> = (0..next(4))
                    .map(|_| {
                        let ips: Vec<u8> = (0..next(3)).map(|_| next(10) as u8).collect();
                        report(&format!("r/{}", next(6)), &ips)
                    })
                    .collect();
                raw.set_reported(&node, reports);
            }
            let fresh = AddrOwners::build(&raw.workloads, &raw.reported);
            let patched = raw.addr_owners.as_ref().unwrap();
            for asking in ["n0", "n1", "n2", "n3", "nx"] {
                let reference = reference_owners(&raw, asking);
                for i in 0..10u8 {
                    let ip: IpAddr = format!("10.0.0.{i}").parse().unwrap();
                    let want = reference.get(&ip).map(String::as_str);
                    assert_eq!(patched.owner(&ip, asking), want);
                    assert_eq!(fresh.owner(&ip, asking), want);
                }
            }
        }
    }
}

//! The address index node restriction checks reports against (see `reports`): its own module
//! so that `raw`, which keeps it up to date, and `reports`, which reads it, do not depend on
//! each other.

use crate::store::ReportedWorkload;
use cellwall_policy::{Workload, WorkloadKey};
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Who owns each address, as far as the store and the nodes' accepted reports say: per address
/// its claimants in precedence order (the store's workloads in key order, then each node's
/// report in node order). Kept in `Raw` and patched per change, so checking a report costs its
/// own size: rebuilt for every report it cost ~65 ms at 100,000 workloads, a minute of manager
/// CPU when 1,000 agents connect at once (the propagation bench).
#[derive(Default)]
pub struct AddrOwners {
    by_ip: HashMap<IpAddr, Vec<Claim>>,
}

struct Claim {
    key: String,
    /// The reporting node; `None` for the store's own workloads (they sort first, in key
    /// order, with `store_key` set).
    node: Option<String>,
    store_key: Option<WorkloadKey>,
}

impl AddrOwners {
    /// The index of the store's `workloads` and the nodes' `reported` workloads.
    pub(super) fn build(
        workloads: &BTreeMap<WorkloadKey, Arc<Workload>>,
        reported: &BTreeMap<String, Vec<ReportedWorkload>>,
    ) -> Self {
        let mut x = Self::default();
        for (k, w) in workloads.iter().filter(|(_, w)| !w.host_network) {
            for ip in &w.ips {
                x.by_ip.entry(*ip).or_default().push(Claim {
                    key: k.to_string(),
                    node: None,
                    store_key: Some(k.clone()),
                });
            }
        }
        for (node, reports) in reported {
            x.add(node, reports);
        }
        x
    }

    fn add(&mut self, node: &str, reports: &[ReportedWorkload]) {
        for r in reports {
            for ip in r.ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()) {
                let claims = self.by_ip.entry(ip).or_default();
                // After the store's claims and those of nodes sorting before (or equal to)
                // this one, so a node's own claims keep their report order.
                let at = claims.partition_point(|c| c.node.as_deref() <= Some(node));
                claims.insert(
                    at,
                    Claim {
                        key: r.key.clone(),
                        node: Some(node.to_string()),
                        store_key: None,
                    },
                );
            }
        }
    }

    /// Replaces what `node` claimed (`old`) by what it reports now (`new`).
    pub(super) fn replace_node(
        &mut self,
        node: &str,
        old: &[ReportedWorkload],
        new: &[ReportedWorkload],
    ) {
        for ip in old
            .iter()
            .flat_map(|r| r.ips.iter().filter_map(|s| s.parse::<IpAddr>().ok()))
        {
            if let Some(claims) = self.by_ip.get_mut(&ip) {
                claims.retain(|c| c.node.as_deref() != Some(node));
                if claims.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
        self.add(node, new);
    }

    /// Replaces the store's claims for workload `k` (`old`'s addresses) by `new`'s.
    pub(super) fn replace_workload(
        &mut self,
        k: &WorkloadKey,
        old: Option<&Workload>,
        new: Option<&Workload>,
    ) {
        let addresses = |w: Option<&Workload>| -> Vec<IpAddr> {
            w.filter(|w| !w.host_network)
                .map(|w| w.ips.clone())
                .unwrap_or_default()
        };
        for ip in addresses(old) {
            if let Some(claims) = self.by_ip.get_mut(&ip) {
                claims.retain(|c| c.store_key.as_ref() != Some(k));
                if claims.is_empty() {
                    self.by_ip.remove(&ip);
                }
            }
        }
        for ip in addresses(new) {
            let claims = self.by_ip.entry(ip).or_default();
            if claims.iter().any(|c| c.store_key.as_ref() == Some(k)) {
                continue; // the same address listed twice
            }
            let at = claims.partition_point(|c| c.store_key.as_ref().is_some_and(|s| s < k));
            claims.insert(
                at,
                Claim {
                    key: k.to_string(),
                    node: None,
                    store_key: Some(k.clone()),
                },
            );
        }
    }

    /// The store's workloads that hold `ip`, in key order.
    pub(super) fn store_claimants(&self, ip: &IpAddr) -> impl Iterator<Item = &WorkloadKey> {
        self.by_ip
            .get(ip)
            .into_iter()
            .flatten()
            .filter_map(|c| c.store_key.as_ref())
    }

    /// Who owns `ip` in the eyes of `asking` (its own earlier reports do not count).
    pub(super) fn owner(&self, ip: &IpAddr, asking: &str) -> Option<&str> {
        self.by_ip
            .get(ip)?
            .iter()
            .find(|c| c.node.as_deref() != Some(asking))
            .map(|c| c.key.as_str())
    }
}

//! The name table: which DNS names answers gave for an address. FQDN peers (`Peer::Domain`)
//! match an address through it. The agent fills it from the DNS answers its workloads receive;
//! a replay of history fills it from the names recorded with the flows. Workload and node
//! addresses are never looked up here: an inventory address is what the inventory says it is,
//! so a DNS answer cannot turn a pod into an allowed FQDN peer.

use super::Engine;
use std::net::IpAddr;

impl Engine {
    /// Sets the names DNS gave for `ip` (lowercase, without the trailing dot; any order);
    /// an empty list forgets the address. Reported in [`super::Changes::names`] when it
    /// changed, so an incremental compile rebinds that address alone.
    pub fn set_names(&mut self, ip: IpAddr, names: Vec<String>) {
        let mut names: Vec<String> = names
            .into_iter()
            .map(|n| n.trim_end_matches('.').to_ascii_lowercase())
            .collect();
        names.sort();
        names.dedup();
        let changed = if names.is_empty() {
            self.names.remove(&ip).is_some()
        } else if self.names.get(&ip).map(Vec::as_slice) == Some(names.as_slice()) {
            false
        } else {
            self.names.insert(ip, names);
            true
        };
        if changed {
            self.changes.names.insert(ip);
        }
    }

    /// The names DNS gave for `ip` (empty if none).
    pub fn names_of(&self, ip: IpAddr) -> &[String] {
        self.names.get(&ip).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether `ip` is a workload's or a node's (its names then never count).
    pub fn is_inventory_address(&self, ip: IpAddr) -> bool {
        self.ip_index.contains_key(&ip)
    }

    /// Every address with names, for a full compile.
    pub fn named_addresses(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.names.keys().copied()
    }
}

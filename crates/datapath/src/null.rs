//! A datapath that enforces nothing: `cellwall-agent --datapath none`. The agent above it still
//! compiles, tracks versions and acks them, so a lab without programs (the benchmarks' baseline)
//! runs the same control plane as one with them.

use crate::abi::Event;
use crate::{netns, ApplyReport, Counters, Datapath, DatapathError, Desired};
use std::collections::BTreeSet;

#[derive(Debug, Default)]
pub struct NullDatapath {
    /// Where interface names are looked up (None: this thread's namespace).
    netns: Option<String>,
    /// Interfaces the agent asked to attach to (nothing is attached).
    attached: BTreeSet<String>,
    epoch: u32,
}

impl NullDatapath {
    /// `netns`: the namespace holding the workloads' interfaces, as for
    /// [`KernelDatapath::open_in`](crate::KernelDatapath::open_in).
    pub fn new(netns: Option<&str>) -> Self {
        Self {
            netns: netns.map(str::to_string),
            ..Self::default()
        }
    }
}

impl Datapath for NullDatapath {
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attached.insert(ifname.to_string());
        Ok(())
    }

    fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach(ifname)
    }

    fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attached.remove(ifname);
        Ok(())
    }

    fn is_attached(&self, ifname: &str) -> bool {
        self.attached.contains(ifname)
    }

    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        self.epoch = self.epoch.wrapping_add(1);
        Ok(ApplyReport {
            epoch: self.epoch,
            written: desired.policy.len(),
            ..Default::default()
        })
    }

    fn set_visibility(&mut self, _on: bool) -> Result<(), DatapathError> {
        Ok(())
    }

    fn drain_events(&mut self, _max: usize) -> Result<Vec<Event>, DatapathError> {
        Ok(Vec::new())
    }

    fn counters(&self) -> Result<Counters, DatapathError> {
        Ok(Counters::default())
    }

    /// A real lookup: a host-mode agent without enforcement still names an existing NIC.
    fn interface_index(&self, ifname: &str) -> Result<u32, DatapathError> {
        netns::ifindex_in(self.netns.as_deref(), ifname)
    }

    /// A real scan too: discovery works (and is observable) without enforcement.
    fn host_interfaces(
        &self,
        ips: &[std::net::IpAddr],
    ) -> Result<crate::interfaces::Found, DatapathError> {
        crate::interfaces::find(self.netns.as_deref(), ips)
    }
}

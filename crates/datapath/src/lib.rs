//! Cellwall's datapath: the only crate with `unsafe` and kernel access.
//!
//! - `bpf/` (C, built by build.rs) holds the tc programs and `abi.h`, the single definition of
//!   every map and event layout; [`abi`] mirrors it with compile-time layout checks.
//! - [`Desired`] flattens a compiled `NodePolicy` into the exact map entries of one slot (pure).
//! - [`Datapath`] is the seam the agent programs through, with three implementations:
//!   [`KernelDatapath`] loads, pins, attaches and writes the maps (double-buffered slots, one
//!   write to switch, epoch bump to re-check established connections); [`FakeDatapath`] keeps the
//!   same state in memory and answers lookups the way the kernel program does, for tests of code
//!   above the datapath without root; [`NullDatapath`] accepts everything and enforces nothing
//!   (`cellwall-agent --datapath none`, the benchmarks' baseline).

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod abi;
pub mod desired;
pub mod dns;
pub mod fake;
pub mod interfaces;
pub mod kernel;
pub mod netns;
pub mod null;

pub use abi::Event;
pub use desired::{endpoint_id, port_prefixes, Desired};
pub use dns::{DnsWaker, HeldDns};
pub use fake::FakeDatapath;
pub use interfaces::{Found, HostInterface};
pub use kernel::{ktime_to_unix_ns, KernelDatapath};
pub use null::NullDatapath;

/// The two attach points on a workload's host-side interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// tc ingress of the host-side veth: what the workload sends (its egress).
    FromPod,
    /// tc egress of the host-side veth: what the workload receives (its ingress).
    ToPod,
}

impl Hook {
    pub fn program(self) -> &'static str {
        match self {
            Hook::FromPod => "from_pod",
            Hook::ToPod => "to_pod",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    #[error("{what}: {detail}")]
    Kernel { what: String, detail: String },
    /// A revision whose tables do not fit beside the slot in force. Checked before anything is
    /// written: the slot in force stays, on every endpoint of the node.
    #[error(
        "{map} would hold {needed} entries ({in_force} for the tables in force, {desired} for \
         this revision) but holds at most {capacity}: the previous tables stay in force on \
         every endpoint of this node"
    )]
    Capacity {
        map: &'static str,
        needed: usize,
        in_force: usize,
        desired: usize,
        capacity: usize,
    },
}

/// What one apply did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub slot: u32,
    pub epoch: u32,
    pub written: usize,
    pub removed: usize,
    pub elapsed: std::time::Duration,
}

/// Datapath counters (summed over CPUs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    pub allowed: u64,
    pub denied: u64,
    pub audit: u64,
    pub ct_hits: u64,
    pub events_lost: u64,
    pub spoofed: u64,
    pub revoked: u64,
    /// DNS answers held for the agent to learn, and those lost to a full ring.
    pub dns_held: u64,
    pub dns_lost: u64,
    /// Answers from port 53 to no query of the endpoint: not held, so not learned.
    pub dns_unsolicited: u64,
}

/// The seam the agent programs: everything it does to the kernel goes through these methods,
/// so the agent is tested in-process against [`FakeDatapath`] and runs without enforcement on
/// [`NullDatapath`].
///
/// Interface names are those of the namespace the implementation was opened for (a
/// [`KernelDatapath`] opened with a network namespace attaches inside it).
pub trait Datapath: Send {
    /// Attaches both programs to a workload's host-side veth (`from_pod` on tc ingress, `to_pod`
    /// on tc egress). On an interface that already carries them, replaces the programs in one
    /// atomic update (an agent restart or upgrade never opens a window).
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError>;

    /// Host mode: attaches to the host's own NIC, where the directions are the other way round
    /// (`from_pod` on tc egress, `to_pod` on tc ingress).
    fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError>;

    /// Removes the programs from `ifname` (the workload is no longer policed nor observed).
    fn detach(&mut self, ifname: &str) -> Result<(), DatapathError>;

    /// Whether the programs are attached to `ifname` (also by a previous process: attachments
    /// outlive the agent).
    fn is_attached(&self, ifname: &str) -> bool;

    /// Writes `desired` beside the policy in force and switches to it in one step; established
    /// connections are decided again under it.
    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError>;

    /// Per-connection flow events (and tracking of endpoints no policy selects) on or off.
    fn set_visibility(&mut self, on: bool) -> Result<(), DatapathError>;

    /// Takes up to `max` flow events, oldest first, without blocking.
    fn drain_events(&mut self, max: usize) -> Result<Vec<Event>, DatapathError>;

    /// Global counters (the agent exports `events_lost`).
    fn counters(&self) -> Result<Counters, DatapathError>;

    /// The index of interface `ifname` (host mode learns its NIC's this way: anti-spoofing checks
    /// the arrival interface).
    fn interface_index(&self, ifname: &str) -> Result<u32, DatapathError>;

    /// The host-side interface in front of each of `ips` that has one now, found in the
    /// kernel's routes and bridge tables (`interfaces`), and which interfaces exist: how a
    /// DaemonSet agent finds its pods.
    fn host_interfaces(&self, ips: &[std::net::IpAddr])
        -> Result<interfaces::Found, DatapathError>;

    /// Takes up to `max` held DNS answers (endpoints that learn names), oldest first, without
    /// blocking. Each must be released once learned, or it never reaches its workload.
    fn take_dns(&mut self, _max: usize) -> Result<Vec<HeldDns>, DatapathError> {
        Ok(Vec::new())
    }

    /// Sends a held answer on to its workload.
    fn release_dns(&mut self, _held: &HeldDns) -> Result<(), DatapathError> {
        Ok(())
    }

    /// Something another thread can sleep on until answers are held (None: this datapath
    /// holds none).
    fn dns_waker(&mut self) -> Result<Option<DnsWaker>, DatapathError> {
        Ok(None)
    }

    /// Peer addresses of the connections the datapath tracks (learned DNS names are kept
    /// while their addresses are in use).
    fn tracked_peers(&self) -> Result<std::collections::HashSet<std::net::IpAddr>, DatapathError> {
        Ok(Default::default())
    }
}

/// A datapath chosen at run time (`cellwall-agent --datapath`).
impl<D: Datapath + ?Sized> Datapath for Box<D> {
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        (**self).attach(ifname)
    }
    fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError> {
        (**self).attach_nic(ifname)
    }
    fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        (**self).detach(ifname)
    }
    fn is_attached(&self, ifname: &str) -> bool {
        (**self).is_attached(ifname)
    }
    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        (**self).apply(desired)
    }
    fn set_visibility(&mut self, on: bool) -> Result<(), DatapathError> {
        (**self).set_visibility(on)
    }
    fn drain_events(&mut self, max: usize) -> Result<Vec<Event>, DatapathError> {
        (**self).drain_events(max)
    }
    fn counters(&self) -> Result<Counters, DatapathError> {
        (**self).counters()
    }
    fn interface_index(&self, ifname: &str) -> Result<u32, DatapathError> {
        (**self).interface_index(ifname)
    }
    fn host_interfaces(
        &self,
        ips: &[std::net::IpAddr],
    ) -> Result<interfaces::Found, DatapathError> {
        (**self).host_interfaces(ips)
    }
    fn take_dns(&mut self, max: usize) -> Result<Vec<HeldDns>, DatapathError> {
        (**self).take_dns(max)
    }
    fn release_dns(&mut self, held: &HeldDns) -> Result<(), DatapathError> {
        (**self).release_dns(held)
    }
    fn dns_waker(&mut self) -> Result<Option<DnsWaker>, DatapathError> {
        (**self).dns_waker()
    }
    fn tracked_peers(&self) -> Result<std::collections::HashSet<std::net::IpAddr>, DatapathError> {
        (**self).tracked_peers()
    }
}

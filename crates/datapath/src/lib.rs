//! Cellwall's datapath: the only crate with `unsafe` and kernel access.
//!
//! - `bpf/` (C, built by build.rs) holds the tc programs and `abi.h`, the single definition of
//!   every map and event layout; [`abi`] mirrors it with compile-time layout checks.
//! - [`Desired`] flattens a compiled `NodePolicy` into the exact map entries of one slot (pure).
//! - [`KernelDatapath`] loads, pins, attaches and writes the maps (double-buffered slots, one
//!   write to switch, epoch bump to re-check established connections).
//! - [`FakeDatapath`] keeps the same state in memory and answers lookups the way the kernel
//!   program does, for tests of code above the datapath without root.

pub mod abi;
pub mod desired;
pub mod kernel;
pub mod netns;

pub use desired::{endpoint_id, port_prefixes, Desired};
pub use kernel::KernelDatapath;

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
}

/// The seam the agent programs: the kernel, or a fake in tests.
pub trait Datapath {
    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError>;
}

impl Datapath for KernelDatapath {
    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        KernelDatapath::apply(self, desired)
    }
}

/// In-memory datapath: holds the two slots like the kernel and decides like the program.
#[derive(Debug, Default)]
pub struct FakeDatapath {
    pub slots: [Desired; 2],
    pub active: u32,
    pub epoch: u32,
    pub applies: usize,
}

impl Datapath for FakeDatapath {
    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        let next = self.active ^ 1;
        self.slots[next as usize] = desired.clone();
        self.active = next;
        self.epoch += 1;
        self.applies += 1;
        Ok(ApplyReport {
            slot: next,
            epoch: self.epoch,
            written: desired.policy.len(),
            ..Default::default()
        })
    }
}

impl FakeDatapath {
    /// Decides a new connection as the kernel would: egress at the source if local, ingress at
    /// the destination if local. Returns whether it passes.
    pub fn decide(
        &self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: u8,
        port: u16,
    ) -> bool {
        let d = &self.slots[self.active as usize];
        let (s, t) = (abi::addr16(src), abi::addr16(dst));
        let eg = d
            .endpoints
            .get(&s)
            .map(|(id, _, f)| d.lookup(*id, *f, abi::DIR_EGRESS, t, proto, port).0)
            .unwrap_or(true);
        let ing = d
            .endpoints
            .get(&t)
            .map(|(id, _, f)| d.lookup(*id, *f, abi::DIR_INGRESS, s, proto, port).0)
            .unwrap_or(true);
        eg && ing
    }
}

//! An in-memory datapath: the two slots, the attached interfaces, flow events and counters, with
//! the kernel program's decision in Rust. Clones share one state, so a test keeps a handle to
//! the datapath it gave away (to an agent running on its own thread) and watches or drives it.

use crate::abi::{self, Event};
use crate::{ApplyReport, Counters, Datapath, DatapathError, Desired};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

/// Which programs an interface carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    /// A workload's host-side veth.
    Veth,
    /// A host's own NIC (host mode).
    Nic,
}

#[derive(Debug, Default)]
struct State {
    slots: [Desired; 2],
    active: u32,
    epoch: u32,
    applies: usize,
    attached: BTreeMap<String, Attached>,
    /// Every attach call, in order (a re-attach is a program replacement).
    attach_log: Vec<String>,
    visibility: Option<bool>,
    events: VecDeque<Event>,
    counters: Counters,
    interfaces: BTreeMap<String, u32>,
    /// What `host_interfaces` finds (a pod's veth appearing or going).
    host_interfaces: BTreeMap<std::net::IpAddr, crate::HostInterface>,
    /// Interface indexes ever found, and those that no longer exist.
    seen: std::collections::BTreeSet<u32>,
    gone: std::collections::BTreeSet<u32>,
    /// The next `apply` calls fail with this message (fault injection).
    fail_applies: VecDeque<String>,
}

/// In-memory datapath: holds the two slots like the kernel and decides like the program.
#[derive(Debug, Clone, Default)]
pub struct FakeDatapath {
    state: Arc<Mutex<State>>,
}

impl FakeDatapath {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides a new connection as the kernel would: egress at the source if local, ingress at
    /// the destination if local. Returns whether it passes.
    pub fn decide(
        &self,
        src: std::net::IpAddr,
        dst: std::net::IpAddr,
        proto: u8,
        port: u16,
    ) -> bool {
        let st = self.state();
        let d = &st.slots[st.active as usize];
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

    /// What the active slot holds.
    pub fn active(&self) -> Desired {
        let st = self.state();
        st.slots[st.active as usize].clone()
    }

    /// Applies so far (each one a slot switch).
    pub fn applies(&self) -> usize {
        self.state().applies
    }

    pub fn epoch(&self) -> u32 {
        self.state().epoch
    }

    /// Interfaces carrying programs, and which kind.
    pub fn attached(&self) -> BTreeMap<String, Attached> {
        self.state().attached.clone()
    }

    /// Every attach call so far, in order.
    pub fn attach_log(&self) -> Vec<String> {
        self.state().attach_log.clone()
    }

    /// The last visibility set (`None`: never set).
    pub fn visibility(&self) -> Option<bool> {
        self.state().visibility
    }

    /// Queues flow events as the kernel program would emit them.
    pub fn push_events(&self, evs: impl IntoIterator<Item = Event>) {
        self.state().events.extend(evs);
    }

    /// Events not drained yet.
    pub fn pending_events(&self) -> usize {
        self.state().events.len()
    }

    /// Counts events the "kernel" could not queue (what a full ring buffer does).
    pub fn lose_events(&self, n: u64) {
        self.state().counters.events_lost += n;
    }

    /// Declares an interface and its index (what `interface_index` answers).
    pub fn add_interface(&self, ifname: &str, ifindex: u32) {
        self.state().interfaces.insert(ifname.to_string(), ifindex);
    }

    /// What the kernel shows in front of `ip`: an interface (`Some`; it exists) or none
    /// (`None`: the address resolves nowhere, its interface may still exist).
    pub fn set_host_interface(&self, ip: std::net::IpAddr, found: Option<crate::HostInterface>) {
        let mut s = self.state();
        match found {
            Some(h) => {
                s.gone.remove(&h.ifindex);
                s.seen.insert(h.ifindex);
                s.host_interfaces.insert(ip, h)
            }
            None => s.host_interfaces.remove(&ip),
        };
    }

    /// Interface `ifindex` no longer exists (a pod's veth deleted).
    pub fn remove_interface(&self, ifindex: u32) {
        self.state().gone.insert(ifindex);
    }

    /// The next apply fails with `why` (and leaves the datapath as it was).
    pub fn fail_next_apply(&self, why: &str) {
        self.state().fail_applies.push_back(why.to_string());
    }

    fn attach_as(&self, ifname: &str, kind: Attached) {
        let mut st = self.state();
        st.attached.insert(ifname.to_string(), kind);
        st.attach_log.push(ifname.to_string());
    }
}

impl Datapath for FakeDatapath {
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_as(ifname, Attached::Veth);
        Ok(())
    }

    fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_as(ifname, Attached::Nic);
        Ok(())
    }

    fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.state().attached.remove(ifname);
        Ok(())
    }

    fn is_attached(&self, ifname: &str) -> bool {
        self.state().attached.contains_key(ifname)
    }

    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        let mut st = self.state();
        if let Some(why) = st.fail_applies.pop_front() {
            return Err(DatapathError::Kernel {
                what: "fake apply".into(),
                detail: why,
            });
        }
        let next = st.active ^ 1;
        st.slots[next as usize] = desired.clone();
        st.active = next;
        st.epoch += 1;
        st.applies += 1;
        Ok(ApplyReport {
            slot: next,
            epoch: st.epoch,
            written: desired.policy.len(),
            ..Default::default()
        })
    }

    fn set_visibility(&mut self, on: bool) -> Result<(), DatapathError> {
        self.state().visibility = Some(on);
        Ok(())
    }

    fn drain_events(&mut self, max: usize) -> Result<Vec<Event>, DatapathError> {
        let mut st = self.state();
        let n = max.min(st.events.len());
        Ok(st.events.drain(..n).collect())
    }

    fn counters(&self) -> Result<Counters, DatapathError> {
        Ok(self.state().counters)
    }

    fn interface_index(&self, ifname: &str) -> Result<u32, DatapathError> {
        self.state()
            .interfaces
            .get(ifname)
            .copied()
            .ok_or_else(|| DatapathError::Kernel {
                what: format!("finding interface {ifname}"),
                detail: "no such device".into(),
            })
    }

    fn host_interfaces(&self, ips: &[std::net::IpAddr]) -> Result<crate::Found, DatapathError> {
        let s = self.state();
        Ok(crate::Found {
            by_addr: ips
                .iter()
                .filter_map(|ip| s.host_interfaces.get(ip).map(|h| (*ip, h.clone())))
                .collect(),
            // Every interface declared or ever found, unless removed.
            present: s
                .seen
                .iter()
                .chain(s.interfaces.values())
                .filter(|i| !s.gone.contains(i))
                .copied()
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_datapath_and_events_drain_in_order() {
        let fake = FakeDatapath::new();
        let mut given: Box<dyn Datapath> = Box::new(fake.clone());
        given.attach("veth1").unwrap();
        given.attach_nic("eth0").unwrap();
        assert_eq!(fake.attached().get("veth1"), Some(&Attached::Veth));
        assert_eq!(fake.attached().get("eth0"), Some(&Attached::Nic));
        given.detach("veth1").unwrap();
        assert!(!fake.is_attached("veth1"));

        let ev = |rule| Event {
            rule,
            ..Event::default()
        };
        fake.push_events([ev(1), ev(2), ev(3)]);
        assert_eq!(
            given
                .drain_events(2)
                .unwrap()
                .iter()
                .map(|e| e.rule)
                .collect::<Vec<_>>(),
            [1, 2]
        );
        assert_eq!(given.drain_events(10).unwrap()[0].rule, 3);
        assert!(given.drain_events(10).unwrap().is_empty());

        fake.fail_next_apply("boom");
        assert!(given.apply(&Desired::default()).is_err());
        assert_eq!(fake.applies(), 0, "a failed apply switches nothing");
        given.apply(&Desired::default()).unwrap();
        assert_eq!((fake.applies(), fake.epoch()), (1, 1));
        assert!(given.interface_index("nope").is_err());
        fake.add_interface("eth0", 7);
        assert_eq!(given.interface_index("eth0").unwrap(), 7);
    }
}

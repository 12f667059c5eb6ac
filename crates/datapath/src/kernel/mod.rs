//! The kernel datapath: loads bpf/cellwall.bpf.c (built by build.rs), pins its maps under a
//! per-instance directory in bpffs, attaches to interfaces with TCX links pinned there (which
//! stay attached when the agent dies: enforcement is fail-static), and writes policy into the
//! inactive slot before flipping it in one write.

use crate::abi::*;
use crate::desired::Desired;
use crate::{netns, ApplyReport, Counters, Datapath, DatapathError, Hook};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachType};
use aya::programs::SchedClassifier;
use aya::{Ebpf, EbpfLoader};
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

mod dns;
mod slots;

use slots::{migrate_ipcache, Shadow};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/cellwall.bpf.o"));

fn err(what: impl Into<String>, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Kernel {
        what: what.into(),
        detail: e.to_string(),
    }
}

pub struct KernelDatapath {
    ebpf: Ebpf,
    /// Identity entries copied from an earlier version's `cw_ipcache` when opening.
    migrated: usize,
    pin_dir: PathBuf,
    /// The network namespace holding the interfaces programs attach to (None: the calling
    /// thread's). Attaching resolves the interface and creates the link there.
    netns: Option<String>,
    shadows: Option<[Shadow; 2]>,
    /// The event ring, mapped once: mapping 4 MiB on every drain was a sixth of the agent's
    /// CPU at 50,000 events/s.
    events: Option<RingBuf<MapData>>,
    /// The ring of held DNS answers (bpf/lib/dns.h), taken on first use.
    dns: Option<RingBuf<MapData>>,
    /// Sends released answers on; opened on first use, in `netns`.
    releaser: Option<crate::dns::Releaser>,
}

/// Mounts bpffs at /sys/fs/bpf if it is not mounted (pins need it).
pub fn ensure_bpffs() -> Result<(), DatapathError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts")
        .map_err(|e| err("reading /proc/self/mounts", e))?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf") && l.contains(" bpf "))
    {
        return Ok(());
    }
    let src = c"bpf";
    let dst = c"/sys/fs/bpf";
    // SAFETY: plain mount(2) with valid NUL-terminated strings and no data.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(err(
            "mounting bpffs at /sys/fs/bpf",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

impl KernelDatapath {
    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, DatapathError> {
        self.ebpf.map(name).ok_or_else(|| err("map", name))
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut aya::maps::Map, DatapathError> {
        self.ebpf.map_mut(name).ok_or_else(|| err("map", name))
    }

    /// Opens the datapath whose maps are pinned in `pin_dir` (creating them on first use).
    /// Maps survive this process: a restarted agent finds the policy in force. Interfaces are
    /// those of the calling thread's network namespace.
    pub fn open(pin_dir: &Path) -> Result<Self, DatapathError> {
        Self::open_in(pin_dir, None)
    }

    /// Like [`open`](Self::open), for interfaces that live in network namespace `netns` (the
    /// node's namespace in the lab): attaching and interface lookups happen inside it, on a
    /// thread of their own (setns changes one thread only); maps and pins are the same from any
    /// namespace.
    pub fn open_in(pin_dir: &Path, netns: Option<&str>) -> Result<Self, DatapathError> {
        ensure_bpffs()?;
        std::fs::create_dir_all(pin_dir)
            .map_err(|e| err(format!("creating {}", pin_dir.display()), e))?;
        // A/B benchmarks of datapath changes (docs/benchmarks.md) load an object built from
        // another revision of bpf/ in one of two side-by-side labs.
        let alt = match std::env::var_os("CELLWALL_BPF_OBJECT") {
            Some(p) => Some(std::fs::read(&p).map_err(|e| {
                err(
                    format!("reading CELLWALL_BPF_OBJECT {}", Path::new(&p).display()),
                    e,
                )
            })?),
            None => None,
        };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(alt.as_deref().unwrap_or(OBJECT))
            .map_err(|e| err("loading the BPF object", e))?;
        let migrated = migrate_ipcache(&mut ebpf, pin_dir)?;
        Ok(Self {
            migrated,
            ebpf,
            pin_dir: pin_dir.to_path_buf(),
            netns: netns.map(str::to_string),
            shadows: None,
            events: None,
            dns: None,
            releaser: None,
        })
    }

    /// How many identity entries opening copied from an earlier version's trie (0: none was
    /// pinned), for the agent's log.
    pub fn migrated_ipcache(&self) -> usize {
        self.migrated
    }

    pub fn pin_dir(&self) -> &Path {
        &self.pin_dir
    }

    /// The program of `hook`: on a host's NIC `from_pod`'s place is taken by `from_host`, which
    /// lets through what the host forwards (a pod's veth drops what its endpoint did not send).
    fn program(&mut self, hook: Hook, nic: bool) -> Result<&mut SchedClassifier, DatapathError> {
        let name = match (hook, nic) {
            (Hook::FromPod, true) => "from_host",
            _ => hook.program(),
        };
        let p: &mut SchedClassifier = self
            .ebpf
            .program_mut(name)
            .ok_or_else(|| err("finding program", name))?
            .try_into()
            .map_err(|e| err(format!("program {name}"), e))?;
        if p.fd().is_err() {
            p.load()
                .map_err(|e| err(format!("loading program {name} (verifier)"), e))?;
        }
        Ok(p)
    }

    /// Attaches both programs to `ifname` (in the calling thread's network namespace): `from_pod`
    /// on tc ingress, `to_pod` on tc egress. Uses TCX links (Linux 6.6+) pinned under the pin
    /// directory, so they outlive this process (fail-static) and a restart or upgrade replaces
    /// the program in place with one atomic link update. TCX rather than a clsact qdisc with
    /// cls_bpf: measured cheaper per packet (docs/benchmarks.md).
    pub fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_side(ifname, false)
    }

    /// Attaches to a host's own NIC (host mode: the host is the workload). The directions are
    /// the other way round from a pod's host-side veth: what leaves the NIC (tc egress) comes
    /// from the workload, so `from_pod` goes there and `to_pod` on tc ingress.
    pub fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.attach_side(ifname, true)
    }

    fn attach_side(&mut self, ifname: &str, nic: bool) -> Result<(), DatapathError> {
        let ns = self.netns.clone();
        netns::within(ns.as_deref(), || self.attach_here(ifname, nic))
    }

    /// `attach_side` in the calling thread's namespace.
    fn attach_here(&mut self, ifname: &str, nic: bool) -> Result<(), DatapathError> {
        let links = self.pin_dir.join("links");
        std::fs::create_dir_all(&links)
            .map_err(|e| err(format!("creating {}", links.display()), e))?;
        for hook in [Hook::FromPod, Hook::ToPod] {
            let attach_type = match (hook, nic) {
                (Hook::FromPod, false) | (Hook::ToPod, true) => TcAttachType::Ingress,
                (Hook::ToPod, false) | (Hook::FromPod, true) => TcAttachType::Egress,
            };
            let pin = self.link_pin(ifname, hook);
            let prog = self.program(hook, nic)?;
            if pin.exists() {
                // Restart or upgrade: swap the program behind the existing link.
                let fd: FdLink = PinnedLink::from_pin(&pin)
                    .map_err(|e| err(format!("opening {}", pin.display()), e))?
                    .into();
                let link = SchedClassifierLink::try_from(fd).map_err(|e| err("pinned link", e))?;
                let id = prog
                    .attach_to_link(link)
                    .map_err(|e| err(format!("updating the link on {ifname}"), e))?;
                std::mem::forget(
                    prog.take_link(id)
                        .map_err(|e| err("taking the tc link", e))?,
                );
                continue;
            }
            let id = prog
                .attach(ifname, attach_type)
                .map_err(|e| err(format!("attaching {} to {ifname}", hook.program()), e))?;
            let link = prog
                .take_link(id)
                .map_err(|e| err("taking the tc link", e))?;
            let fd = FdLink::try_from(link).map_err(|e| {
                err(
                    format!("TCX link on {ifname} (needs Linux 6.6 or later)"),
                    e,
                )
            })?;
            let pinned = fd
                .pin(&pin)
                .map_err(|e| err(format!("pinning {}", pin.display()), format!("{e:?}")))?;
            std::mem::forget(pinned);
        }
        Ok(())
    }

    /// Whether Cellwall's programs are attached to `ifname` (their links are pinned).
    pub fn is_attached(&self, ifname: &str) -> bool {
        self.link_pin(ifname, Hook::FromPod).exists() && self.link_pin(ifname, Hook::ToPod).exists()
    }

    /// Detaches from `ifname`: unpinning drops the last reference to each link.
    pub fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        for hook in [Hook::FromPod, Hook::ToPod] {
            let pin = self.link_pin(ifname, hook);
            if pin.exists() {
                std::fs::remove_file(&pin)
                    .map_err(|e| err(format!("removing {}", pin.display()), e))?;
            }
        }
        Ok(())
    }

    fn link_pin(&self, ifname: &str, hook: Hook) -> PathBuf {
        // bpffs rejects dots in names (EPERM).
        self.pin_dir
            .join("links")
            .join(format!("{ifname}_{}", hook.program()))
    }

    /// Takes up to `max` flow events from the ring buffer (oldest first). Never blocks: the
    /// kernel side drops (and counts) events when the buffer is full, so a slow reader costs
    /// visibility, not packets.
    pub fn drain_events(&mut self, max: usize) -> Result<Vec<Event>, DatapathError> {
        let rb = match &mut self.events {
            Some(rb) => rb,
            None => {
                let m = self
                    .ebpf
                    .take_map("cw_events")
                    .ok_or_else(|| err("map", "cw_events"))?;
                self.events
                    .insert(RingBuf::try_from(m).map_err(|e| err("cw_events", e))?)
            }
        };
        let mut out = Vec::new();
        while out.len() < max {
            let Some(item) = rb.next() else { break };
            if item.len() >= std::mem::size_of::<Event>() {
                // SAFETY: the kernel wrote a `struct cw_event` (abi.h); `Event` mirrors it
                // (layout checked at compile time) and every bit pattern is valid for it.
                out.push(unsafe { std::ptr::read_unaligned(item.as_ptr() as *const Event) });
            }
        }
        Ok(out)
    }

    /// Turns flow events (and tracking of endpoints no policy selects) on or off.
    pub fn set_visibility(&mut self, on: bool) -> Result<(), DatapathError> {
        let mut cfg: Array<&mut MapData, u32> =
            Array::try_from(self.map_mut("cw_config")?).map_err(|e| err("cw_config", e))?;
        let flags = cfg
            .get(&CFG_FLAGS, 0)
            .map_err(|e| err("reading flags", e))?;
        let flags = if on {
            flags & !F_VISIBILITY_OFF
        } else {
            flags | F_VISIBILITY_OFF
        };
        cfg.set(CFG_FLAGS, flags, 0)
            .map_err(|e| err("writing flags", e))
    }

    /// Global counters summed over CPUs.
    pub fn counters(&self) -> Result<Counters, DatapathError> {
        let m: PerCpuArray<&MapData, u64> =
            PerCpuArray::try_from(self.map("cw_counters")?).map_err(|e| err("cw_counters", e))?;
        let mut c = [0u64; CNT_MAX as usize];
        for (i, slot) in c.iter_mut().enumerate() {
            *slot = m
                .get(&(i as u32), 0)
                .map_err(|e| err("reading counters", e))?
                .iter()
                .sum();
        }
        Ok(Counters {
            allowed: c[0],
            denied: c[1],
            audit: c[2],
            ct_hits: c[3],
            events_lost: c[4],
            spoofed: c[5],
            revoked: c[6],
            dns_held: self.dns_counter(DNS_CNT_HELD)?,
            dns_lost: self.dns_counter(DNS_CNT_LOST)?,
            dns_unsolicited: self.dns_counter(DNS_CNT_UNSOLICITED)?,
        })
    }

    /// New connections decided by each rule (summed over CPUs), by rule id.
    pub fn rule_hits(&self) -> Result<std::collections::BTreeMap<u32, u64>, DatapathError> {
        let m: aya::maps::PerCpuHashMap<&MapData, u32, u64> =
            aya::maps::PerCpuHashMap::try_from(self.map("cw_rule_hits")?)
                .map_err(|e| err("cw_rule_hits", e))?;
        let mut out = std::collections::BTreeMap::new();
        for item in m.iter() {
            let (k, v) = item.map_err(|e| err("reading cw_rule_hits", e))?;
            out.insert(k, v.iter().sum());
        }
        Ok(out)
    }

    /// Forgets every tracked connection (tests; after a full policy reload).
    pub fn clear_conntrack(&mut self) -> Result<usize, DatapathError> {
        self.clear_hash::<CtKey, CtVal>("cw_conntrack")
    }

    /// Empties the admitted-pairs map (`cw_admitted`); returns how many pairs it held. For
    /// tests, like `clear_conntrack`.
    pub fn clear_admitted(&mut self) -> Result<usize, DatapathError> {
        self.clear_hash::<AdmitKey, AdmitVal>("cw_admitted")
    }

    /// Removes every entry of the hash map `name`; returns how many it held.
    fn clear_hash<K: aya::Pod, V: aya::Pod>(
        &mut self,
        name: &'static str,
    ) -> Result<usize, DatapathError> {
        let mut m: BpfHashMap<&mut MapData, K, V> =
            BpfHashMap::try_from(self.map_mut(name)?).map_err(|e| err(name, e))?;
        let keys: Vec<K> = m.keys().filter_map(Result::ok).collect();
        for k in &keys {
            let _ = m.remove(k);
        }
        Ok(keys.len())
    }

    /// Runs a program on one packet with BPF_PROG_TEST_RUN (no interface needed) and returns
    /// the tc verdict (`TC_ACT_OK` = 0, `TC_ACT_SHOT` = 2).
    pub fn test_run(&mut self, hook: Hook, packet: &[u8]) -> Result<i32, DatapathError> {
        self.test_run_repeat(hook, packet, 1).map(|(r, _)| r)
    }

    /// Runs a program `repeat` times on one packet; returns the verdict and the kernel-measured
    /// mean time per run in nanoseconds (the regression benchmark DESIGN.md describes).
    pub fn test_run_repeat(
        &mut self,
        hook: Hook,
        packet: &[u8],
        repeat: u32,
    ) -> Result<(i32, u32), DatapathError> {
        let fd = self
            .program(hook, false)?
            .fd()
            .map_err(|e| err("program fd", e))?
            .as_fd()
            .as_raw_fd();
        #[repr(C)]
        #[derive(Default)]
        struct TestRun {
            prog_fd: u32,
            retval: u32,
            data_size_in: u32,
            data_size_out: u32,
            data_in: u64,
            data_out: u64,
            repeat: u32,
            duration: u32,
            ctx_size_in: u32,
            ctx_size_out: u32,
            ctx_in: u64,
            ctx_out: u64,
            flags: u32,
            cpu: u32,
            batch_size: u32,
            _pad: u32,
        }
        let mut out = vec![0u8; packet.len() + 256];
        let mut attr = TestRun {
            prog_fd: fd as u32,
            data_size_in: packet.len() as u32,
            data_size_out: out.len() as u32,
            data_in: packet.as_ptr() as u64,
            data_out: out.as_mut_ptr() as u64,
            repeat,
            ..Default::default()
        };
        const BPF_PROG_TEST_RUN: libc::c_long = 10;
        // SAFETY: `attr` is a valid bpf_attr prefix for BPF_PROG_TEST_RUN; the buffers it points
        // to live until the call returns and their sizes are given.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRun,
                std::mem::size_of::<TestRun>(),
            )
        };
        if rc != 0 {
            return Err(err("BPF_PROG_TEST_RUN", std::io::Error::last_os_error()));
        }
        Ok((attr.retval as i32, attr.duration))
    }
}

impl Datapath for KernelDatapath {
    fn attach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        KernelDatapath::attach(self, ifname)
    }

    fn attach_nic(&mut self, ifname: &str) -> Result<(), DatapathError> {
        KernelDatapath::attach_nic(self, ifname)
    }

    fn detach(&mut self, ifname: &str) -> Result<(), DatapathError> {
        KernelDatapath::detach(self, ifname)
    }

    fn is_attached(&self, ifname: &str) -> bool {
        KernelDatapath::is_attached(self, ifname)
    }

    fn apply(&mut self, desired: &Desired) -> Result<ApplyReport, DatapathError> {
        KernelDatapath::apply(self, desired)
    }

    fn set_visibility(&mut self, on: bool) -> Result<(), DatapathError> {
        KernelDatapath::set_visibility(self, on)
    }

    fn drain_events(&mut self, max: usize) -> Result<Vec<Event>, DatapathError> {
        KernelDatapath::drain_events(self, max)
    }

    fn counters(&self) -> Result<Counters, DatapathError> {
        KernelDatapath::counters(self)
    }

    fn interface_index(&self, ifname: &str) -> Result<u32, DatapathError> {
        netns::ifindex_in(self.netns.as_deref(), ifname)
    }

    fn host_interfaces(
        &self,
        ips: &[std::net::IpAddr],
    ) -> Result<crate::interfaces::Found, DatapathError> {
        crate::interfaces::find(self.netns.as_deref(), ips)
    }

    fn take_dns(&mut self, max: usize) -> Result<Vec<crate::HeldDns>, DatapathError> {
        KernelDatapath::take_dns(self, max)
    }

    fn release_dns(&mut self, held: &crate::HeldDns) -> Result<(), DatapathError> {
        KernelDatapath::release_dns(self, held)
    }

    fn dns_waker(&mut self) -> Result<Option<crate::DnsWaker>, DatapathError> {
        KernelDatapath::dns_waker(self).map(Some)
    }

    fn tracked_peers(&self) -> Result<std::collections::HashSet<std::net::IpAddr>, DatapathError> {
        KernelDatapath::tracked_peers(self)
    }
}

/// Converts an event's kernel timestamp (`bpf_ktime_get_ns`, CLOCK_MONOTONIC) to Unix time.
pub fn ktime_to_unix_ns(ts_ns: u64) -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into memory we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    let unix_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    if rc != 0 {
        return unix_now;
    }
    let mono_now = t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64;
    unix_now.saturating_sub(mono_now.saturating_sub(ts_ns))
}

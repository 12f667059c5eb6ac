//! Helpers shared by the root-tier tests (tests/kernel.rs, tests/programs.rs): unique pin
//! directories, packets as the programs see them, policies from inline YAML, readers of the
//! pinned maps, and running on a chosen CPU (the programs' caches are per CPU).

// Each test file uses a subset.
#![allow(dead_code)]

pub mod table;
pub mod world;

use aya::maps::{HashMap as BpfHashMap, Map, MapData};
use cellwall_datapath::abi::{AdmitKey, AdmitVal, CtKey, CtVal, EndpointKey, EndpointVal};
use cellwall_datapath::{ApplyReport, Desired, KernelDatapath};
use cellwall_policy::Protocol;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;

/// A pin directory unique to this process and call, removed on drop (also when the test fails).
pub struct Pins(pub PathBuf);

impl Pins {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        Pins(PathBuf::from(format!(
            "/sys/fs/bpf/cellwall-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(uid, 0, "the root tier needs root (BPF, bpffs)");
}

/// Runs the calling thread on `cpu` from now on (BPF_PROG_TEST_RUN runs a tc program on the
/// caller's CPU, and the verdict and endpoint caches are per CPU). Returns false if it cannot.
pub fn run_on_cpu(cpu: usize) -> bool {
    set_cpus(&[cpu])
}

/// Lets the calling thread run on `cpus` only.
pub fn set_cpus(cpus: &[usize]) -> bool {
    const MAX: usize = 8 * std::mem::size_of::<libc::cpu_set_t>();
    if cpus.iter().any(|c| *c >= MAX) {
        return false;
    }
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET stays inside it (checked above);
    // sched_setaffinity reads `size_of` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for c in cpus {
            libc::CPU_SET(*c, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

/// The CPUs this thread may run on.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: as in `set_cpus`; sched_getaffinity writes at most `size_of` bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..8 * std::mem::size_of::<libc::cpu_set_t>())
            .filter(|c| libc::CPU_ISSET(*c, &set))
            .collect()
    }
}

/// A TCP SYN (other protocols: their first packet).
pub fn packet(src: IpAddr, dst: IpAddr, proto: Protocol, sport: u16, dport: u16) -> Vec<u8> {
    packet_flags(src, dst, proto, sport, dport, 0x02)
}

/// A packet with ports; for TCP with the given flags (0x02 SYN, 0x10 ACK, 0x04 RST).
pub fn packet_flags(
    src: IpAddr,
    dst: IpAddr,
    proto: Protocol,
    sport: u16,
    dport: u16,
    tcp_flags: u8,
) -> Vec<u8> {
    let mut l4 = match proto {
        Protocol::Tcp => vec![0u8; 20],
        Protocol::Udp => vec![0u8; 8],
        Protocol::Sctp => vec![0u8; 12],
    };
    l4[0..2].copy_from_slice(&sport.to_be_bytes());
    l4[2..4].copy_from_slice(&dport.to_be_bytes());
    match proto {
        Protocol::Tcp => {
            l4[12] = 5 << 4;
            l4[13] = tcp_flags;
        }
        Protocol::Udp => l4[4..6].copy_from_slice(&8u16.to_be_bytes()),
        Protocol::Sctp => {}
    }
    ip_packet(src, dst, proto.number(), &l4)
}

/// An Ethernet frame carrying an IPv4 or IPv6 packet (by the addresses' family) with protocol
/// (IPv6: next header) `proto` and payload `l4`.
pub fn ip_packet(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8]) -> Vec<u8> {
    ip_packet_frag(src, dst, proto, l4, 0)
}

/// As `ip_packet`; IPv4 with fragment offset `frag` (in 8-byte units; nonzero = not the first
/// fragment, which carries no ports).
pub fn ip_packet_frag(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], frag: u16) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
            ip[6..8].copy_from_slice(&(frag & 0x1fff).to_be_bytes());
            ip[8] = 64;
            ip[9] = proto;
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            p.extend(ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
            let mut ip = [0u8; 40];
            ip[0] = 0x60;
            ip[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
            ip[6] = proto;
            ip[7] = 255;
            ip[8..24].copy_from_slice(&s.octets());
            ip[24..40].copy_from_slice(&d.octets());
            p.extend(ip);
        }
        _ => panic!("mixed address families: {src} -> {dst}"),
    }
    p.extend_from_slice(l4);
    p
}

/// An ARP request (not IP: the programs pass it untouched).
pub fn arp() -> Vec<u8> {
    let mut p = vec![0xffu8; 6];
    p.extend([0x02, 0, 0, 0, 0, 1]);
    p.extend(0x0806u16.to_be_bytes());
    p.extend([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    p.extend([0x02, 0, 0, 0, 0, 1, 10, 1, 0, 1]); // sender MAC, IP
    p.extend([0, 0, 0, 0, 0, 0, 10, 1, 0, 2]); // target MAC, IP
    p
}

/// Pods and policies from inline YAML (the parts these tests need).
pub fn load(yaml: &str) -> (cellwall_policy::Inventory, Vec<cellwall_policy::Policy>) {
    let mut inv = cellwall_policy::Inventory::default();
    let mut pols = Vec::new();
    for o in cellwall_policy::parse_file("t.yaml", yaml).unwrap().objects {
        match o.object {
            cellwall_policy::Object::Pod(w) => {
                inv.workloads.insert(w.key(), w.into());
            }
            cellwall_policy::Object::Policy(p) => pols.push(*p),
            _ => {}
        }
    }
    (inv, pols)
}

/// Compiles `yaml` for node n1 and applies it.
pub fn apply_yaml(dp: &mut KernelDatapath, yaml: &str) -> ApplyReport {
    let (inv, pols) = load(yaml);
    let np = cellwall_policy::compile(inv, pols, "n1", 0);
    dp.apply(&Desired::from_node_policy(&np, |_| 0)).unwrap()
}

/// The pinned map `name` under `pins`, opened through its pin as another process would.
pub fn pinned(pins: &Pins, name: &str) -> Map {
    let data = MapData::from_pin(pins.0.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    Map::from_map_data(data).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Every entry of the pinned hash map `name` under `pins` (read through its pin, as the agent
/// of another version would).
fn pinned_hash<K: aya::Pod, V: aya::Pod>(pins: &Pins, name: &str) -> Vec<(K, V)> {
    let map = pinned(pins, name);
    let hash: BpfHashMap<MapData, K, V> =
        BpfHashMap::try_from(map).unwrap_or_else(|e| panic!("{name}: {e}"));
    hash.iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("reading {name}: {e}"))
}

/// The conntrack entries (`cw_conntrack`).
pub fn conntrack(pins: &Pins) -> Vec<(CtKey, CtVal)> {
    pinned_hash(pins, "cw_conntrack")
}

/// The admitted-pair records (`cw_admitted`).
pub fn admitted(pins: &Pins) -> Vec<(AdmitKey, AdmitVal)> {
    pinned_hash(pins, "cw_admitted")
}

/// The local endpoints (`cw_endpoints`).
pub fn endpoints(pins: &Pins) -> Vec<(EndpointKey, EndpointVal)> {
    pinned_hash(pins, "cw_endpoints")
}

//! Root tier: the maps' definitions as the kernel holds them. Pinned maps outlive the agent
//! and are reused by the next version's programs: aya 0.14 opens an existing pin by name and
//! compares nothing, so a changed definition meets the old map (a verifier error at best, a
//! misread layout at worst). A pinned map's type, sizes, entries and flags are a contract with
//! every earlier version: changing one needs a migration, not an edit. This test fails on any
//! such change, and on a map becoming pinned or unpinned. `cargo test -p cellwall-datapath --test maps -- --ignored` (as root).

mod common;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{MapData, MapInfo, MapType};
use cellwall_datapath::abi::{IpcacheKeyData, IpcacheVal};
use cellwall_datapath::{Desired, Hook, KernelDatapath};
use cellwall_policy::Protocol;
use common::world::{B_IN, PODS};
use common::{packet, require_root, Pins, TC_ACT_OK, TC_ACT_SHOT};
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;

/// BPF_F_NO_PREALLOC, which LPM tries require.
const NO_PREALLOC: u32 = 1;

/// name, type, key size, value size, max entries, flags: every pinned map.
const PINNED: &[(&str, MapType, u32, u32, u32, u32)] = &[
    ("cw_admitted", MapType::LruHash, 24, 8, 262_144, 0),
    ("cw_config", MapType::Array, 4, 4, 3, 0),
    ("cw_conntrack", MapType::LruHash, 44, 32, 262_144, 0),
    ("cw_counters", MapType::PerCpuArray, 4, 8, 8, 0),
    ("cw_endpoints", MapType::Hash, 16, 16, 16_384, 0),
    ("cw_events", MapType::RingBuf, 0, 0, 1 << 22, 0),
    // Replaced cw_ipcache (262,144 entries), which `open` migrates and unpins: see below.
    ("cw_ipcache2", MapType::LpmTrie, 24, 8, 1 << 21, NO_PREALLOC),
    ("cw_policy", MapType::LpmTrie, 20, 12, 1 << 22, NO_PREALLOC),
    ("cw_rule_hits", MapType::PerCpuHash, 4, 8, 65_536, 0),
];

#[test]
#[ignore = "root tier: needs BPF"]
fn pinned_map_definitions_are_frozen() {
    require_root();
    let pins = Pins::new("maps");
    let _dp = KernelDatapath::open(&pins.0).expect("open datapath");
    // Unpinned (cw_vcache, cw_epcache) leave no file: a new program starts with empty caches.
    let mut files: Vec<String> = std::fs::read_dir(&pins.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    let want: Vec<&str> = PINNED.iter().map(|m| m.0).collect();
    assert_eq!(files, want, "the set of pinned maps changed");
    for &(name, ty, key, value, max, flags) in PINNED {
        let info = MapInfo::from_pin(pins.0.join(name)).unwrap();
        let got = (
            info.map_type().unwrap(),
            info.key_size(),
            info.value_size(),
            info.max_entries(),
            info.map_flags(),
        );
        assert_eq!(
            format!("{got:?}"),
            format!("{:?}", (ty, key, value, max, flags)),
            "{name}: (type, key size, value size, max entries, flags) changed; pinned maps \
             of earlier versions would no longer match"
        );
    }
}

/// The identity trie as another process reads it through its pin.
fn pinned_ipcache(pins: &Pins, name: &str) -> LpmTrie<MapData, IpcacheKeyData, IpcacheVal> {
    LpmTrie::try_from(common::pinned(pins, name)).unwrap()
}

fn v4(a: Ipv4Addr) -> [u8; 16] {
    a.to_ipv6_mapped().octets()
}

/// The identity `slot` resolves for `addr` (a full-length lookup, as the programs do).
fn identity(trie: &LpmTrie<MapData, IpcacheKeyData, IpcacheVal>, slot: u32, addr: Ipv4Addr) -> u32 {
    let k = Key::new(
        32 + 128,
        IpcacheKeyData {
            slot,
            addr: v4(addr),
        },
    );
    trie.get(&k, 0).map(|v| v.identity).unwrap_or(0)
}

fn bpftool(args: &[&str]) {
    let out = Command::new("bpftool")
        .args(args)
        .output()
        .expect("run bpftool");
    assert!(
        out.status.success(),
        "bpftool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An agent upgraded from a version with the 262,144-entry `cw_ipcache` finds its identities
/// (both slots, CIDRs and addresses) in `cw_ipcache2` as soon as it opens, before any program
/// of the new object can run, and the old pin is gone; opening again copies nothing.
#[test]
#[ignore = "root tier: needs BPF"]
fn an_earlier_versions_identity_map_is_migrated_on_open() {
    require_root();
    let pins = Pins::new("migrate");
    std::fs::create_dir_all(&pins.0).unwrap();
    let old = pins.0.join("cw_ipcache");
    let old = old.to_str().unwrap();
    // The old definition exactly as earlier versions pinned it (type, sizes, entries, flags).
    bpftool(&[
        "map",
        "create",
        old,
        "type",
        "lpm_trie",
        "key",
        "24",
        "value",
        "8",
        "entries",
        "262144",
        "name",
        "cw_ipcache",
        "flags",
        "1",
    ]);
    // (slot, address, prefix bits over the v4-mapped address, identity)
    let entries: [(u32, Ipv4Addr, u32, u32); 4] = [
        (0, Ipv4Addr::new(10, 1, 0, 5), 128, 100),
        (1, Ipv4Addr::new(10, 1, 0, 5), 128, 100),
        (1, Ipv4Addr::new(10, 1, 0, 6), 128, 101),
        (1, Ipv4Addr::new(10, 9, 0, 0), 96 + 16, 7),
    ];
    for (slot, addr, bits, id) in entries {
        let mut key: Vec<u8> = (32 + bits).to_le_bytes().to_vec();
        key.extend(slot.to_le_bytes());
        key.extend(v4(addr));
        let mut value = id.to_le_bytes().to_vec();
        value.extend(0u32.to_le_bytes());
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<Vec<_>>();
        let mut args = vec![
            "map".to_string(),
            "update".into(),
            "pinned".into(),
            old.into(),
        ];
        args.push("key".into());
        args.push("hex".into());
        args.extend(hex(&key));
        args.push("value".into());
        args.push("hex".into());
        args.extend(hex(&value));
        bpftool(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }
    let dp = KernelDatapath::open(&pins.0).expect("open datapath");
    assert_eq!(dp.migrated_ipcache(), 4, "every entry of both slots copied");
    assert!(
        !pins.0.join("cw_ipcache").exists(),
        "the old pin is removed"
    );
    let trie = pinned_ipcache(&pins, "cw_ipcache2");
    assert_eq!(identity(&trie, 0, Ipv4Addr::new(10, 1, 0, 5)), 100);
    assert_eq!(identity(&trie, 1, Ipv4Addr::new(10, 1, 0, 6)), 101);
    assert_eq!(
        identity(&trie, 1, Ipv4Addr::new(10, 9, 200, 1)),
        7,
        "the CIDR keeps its length"
    );
    assert_eq!(
        identity(&trie, 0, Ipv4Addr::new(10, 1, 0, 6)),
        0,
        "slots stay apart"
    );
    drop(dp);
    let again = KernelDatapath::open(&pins.0).expect("reopen");
    assert_eq!(again.migrated_ipcache(), 0);
    assert_eq!(identity(&trie, 1, Ipv4Addr::new(10, 1, 0, 6)), 101, "kept");
}

/// 500,000 workload addresses fit in each slot, and the programs resolve the last one written:
/// the filler addresses get identities no rule admits, except the last, which gets a's; b admits
/// a on TCP 80. Prints the write time and the trie's kernel memory (docs/benchmarks.md). Then
/// revisions that do not fit are refused whole, before a write, and the tables stay in force.
#[test]
#[ignore = "root tier: needs BPF"]
fn half_a_million_workload_addresses_fit_in_both_slots() {
    const N: u32 = 500_000;
    require_root();
    let pins = Pins::new("capacity");
    let mut dp = KernelDatapath::open(&pins.0).expect("open datapath");
    let (inv, pols) = common::load(&format!("{PODS}---{B_IN}"));
    let np = cellwall_policy::compile(inv, pols, "n1", 0);
    let mut d = Desired::from_node_policy(&np, |_| 0);
    let a_id = d.ipcache[&(v4(Ipv4Addr::new(10, 1, 0, 1)), 128)];
    // 10.128.0.0/12 holds 1,048,576 addresses; these are map keys only, never on a wire.
    let filler = |i: u32| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + i);
    for i in 0..N {
        let id = if i == N - 1 {
            a_id
        } else {
            0x4000_0000 + i % 4096
        };
        d.ipcache.insert((v4(filler(i)), 128), id);
    }
    let b: IpAddr = "10.1.0.2".parse().unwrap();
    for round in 0..2 {
        let t = std::time::Instant::now();
        let report = dp.apply(&d).expect("apply 500,000 addresses");
        eprintln!(
            "round {round}: slot {} written {} in {:.2?}",
            report.slot,
            report.written,
            t.elapsed()
        );
        assert!(report.written >= N as usize);
        let last = packet(
            IpAddr::V4(filler(N - 1)),
            b,
            Protocol::Tcp,
            40000 + round,
            80,
        );
        assert_eq!(
            dp.test_run(Hook::ToPod, &last).unwrap(),
            TC_ACT_OK,
            "the last address is a's"
        );
        let other = packet(
            IpAddr::V4(filler(N / 2)),
            b,
            Protocol::Tcp,
            40000 + round,
            80,
        );
        assert_eq!(
            dp.test_run(Hook::ToPod, &other).unwrap(),
            TC_ACT_SHOT,
            "a filler is not a"
        );
    }
    let info = MapInfo::from_pin(pins.0.join("cw_ipcache2")).unwrap();
    let trie = pinned_ipcache(&pins, "cw_ipcache2");
    assert_eq!(identity(&trie, 0, filler(N - 1)), a_id);
    assert_eq!(identity(&trie, 1, filler(N - 1)), a_id);
    let held = trie.keys().count();

    // A revision that does not fit beside the slot in force (1,600,000 more addresses: 2.1 M
    // with the 500,000 in force, of 2,097,152) is refused before anything is written, with
    // what it needed; the tables in force keep deciding.
    let mut big = d.clone();
    for i in N..1_600_000 {
        big.ipcache.insert(
            (v4(filler(i % (1 << 20))), 96 + 32 - (i >> 20)),
            0x4000_0000,
        );
    }
    let e = dp.apply(&big).unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("cw_ipcache2 would hold")
            && text.contains("at most 2097152")
            && text.contains("previous tables stay in force"),
        "{text}"
    );
    assert_eq!(trie.keys().count(), held, "nothing written");
    let last = packet(IpAddr::V4(filler(N - 1)), b, Protocol::Tcp, 40009, 80);
    assert_eq!(
        dp.test_run(Hook::ToPod, &last).unwrap(),
        TC_ACT_OK,
        "in force still"
    );
    // More local endpoints than cw_endpoints holds: the same.
    let mut crowded = d.clone();
    for i in 0..16_385u32 {
        crowded
            .endpoints
            .insert(v4(Ipv4Addr::from(0x0a50_0000 + i)), (i | 1, 0, 0));
    }
    let e = dp.apply(&crowded).unwrap_err().to_string();
    assert!(
        e.contains("cw_endpoints would hold") && e.contains("at most 16384"),
        "{e}"
    );
    dp.apply(&d).expect("a revision that fits applies again");
    // The kernel's own count of the trie's memory (map_mem_usage), from the fd's fdinfo.
    let fd = MapData::from_pin(pins.0.join("cw_ipcache2")).unwrap();
    let fdinfo = {
        use std::os::fd::{AsFd, AsRawFd};
        std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.fd().as_fd().as_raw_fd()))
    };
    let memlock = fdinfo.ok().and_then(|s| {
        s.lines()
            .find(|l| l.starts_with("memlock"))
            .map(str::to_string)
    });
    eprintln!(
        "cw_ipcache2: {} entries of {} in use; {memlock:?}",
        trie.keys().count(),
        info.max_entries(),
    );
}

//! Root tier: the maps' definitions as the kernel holds them. Pinned maps outlive the agent
//! and are reused by the next version's programs: aya 0.14 opens an existing pin by name and
//! compares nothing, so a changed definition meets the old map (a verifier error at best, a
//! misread layout at worst). A pinned map's type, sizes, entries and flags are a contract with
//! every earlier version: changing one needs a migration, not an edit. This test fails on any
//! such change, and on a map becoming pinned or unpinned. `cargo test -p cellwall-datapath --test maps -- --ignored` (as root).

mod common;

use aya::maps::{MapInfo, MapType};
use cellwall_datapath::KernelDatapath;
use common::{require_root, Pins};

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
    ("cw_ipcache", MapType::LpmTrie, 24, 8, 262_144, NO_PREALLOC),
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

//! The two policy slots: what each holds (shadows rebuilt from the maps after a restart), the
//! capacity check before a revision is written, writing the inactive slot and flipping it, and
//! the migration of an earlier version's identity trie.

use super::{err, KernelDatapath};
use crate::abi::*;
use crate::desired::Desired;
use crate::{ApplyReport, DatapathError};
use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData};
use aya::Ebpf;
use std::collections::BTreeMap;
use std::path::Path;

/// The identity trie (bpf/lib/ipcache.h).
const IPCACHE: &str = "cw_ipcache2";
/// The identity trie of versions before cw_ipcache2 (131,072 addresses a slot), migrated and
/// unpinned by `open_in`.
const IPCACHE_V1: &str = "cw_ipcache";

/// Shadow of what one slot holds, so an update writes only the differences.
#[derive(Debug, Default)]
pub(super) struct Shadow {
    pub(super) ipcache: BTreeMap<([u8; 16], u32), u32>,
    policy: BTreeMap<(u32, u32, u8, u8, u16, u32), PolicyVal>,
}

/// Writes the difference between what an LPM slot holds (`old`) and what it must hold (`new`):
/// removes stale keys, writes changed values, and records the new contents in `old`.
fn sync_lpm<S: Ord + Clone, W: PartialEq + Clone, K: aya::Pod, V: aya::Pod>(
    trie: &mut LpmTrie<&mut MapData, K, V>,
    old: &mut BTreeMap<S, W>,
    new: &BTreeMap<S, W>,
    key: impl Fn(&S) -> Key<K>,
    value: impl Fn(&W) -> V,
    what: &str,
    report: &mut ApplyReport,
) -> Result<(), DatapathError> {
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        trie.remove(&key(k))
            .map_err(|e| err(format!("removing from {what}"), e))?;
        report.removed += 1;
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            trie.insert(&key(k), value(v), 0)
                .map_err(|e| err(format!("writing {what}"), e))?;
            report.written += 1;
        }
    }
    *old = new.clone();
    Ok(())
}

/// Copies an earlier version's identity trie (`cw_ipcache`, both slots) into `cw_ipcache2`,
/// then unpins it. Runs after loading and before any program of this object is loaded or
/// attached (programs load lazily in `attach`), while the previous version's programs still
/// read the old trie: no packet meets an empty identity map. Copying again after a crash
/// between the copy and the unpin writes the same entries; nothing has applied in between.
pub(super) fn migrate_ipcache(ebpf: &mut Ebpf, pin_dir: &Path) -> Result<usize, DatapathError> {
    let old_pin = pin_dir.join(IPCACHE_V1);
    if !old_pin.exists() {
        return Ok(0);
    }
    let data = MapData::from_pin(&old_pin)
        .map_err(|e| err(format!("opening {}", old_pin.display()), e))?;
    let map = aya::maps::Map::from_map_data(data).map_err(|e| err(IPCACHE_V1, e))?;
    let old: LpmTrie<MapData, IpcacheKeyData, IpcacheVal> =
        LpmTrie::try_from(map).map_err(|e| err(IPCACHE_V1, e))?;
    let mut new: LpmTrie<&mut MapData, IpcacheKeyData, IpcacheVal> =
        LpmTrie::try_from(ebpf.map_mut(IPCACHE).ok_or_else(|| err("map", IPCACHE))?)
            .map_err(|e| err(IPCACHE, e))?;
    let mut copied = 0;
    for k in old.keys() {
        let k = k.map_err(|e| err(format!("iterating {IPCACHE_V1}"), e))?;
        let v = old
            .get(&k, 0)
            .map_err(|e| err(format!("reading {IPCACHE_V1}"), e))?;
        new.insert(&k, v, 0)
            .map_err(|e| err(format!("migrating {IPCACHE_V1} into {IPCACHE}"), e))?;
        copied += 1;
    }
    std::fs::remove_file(&old_pin)
        .map_err(|e| err(format!("removing {}", old_pin.display()), e))?;
    Ok(copied)
}

impl KernelDatapath {
    fn config(&self) -> Result<(u32, u32), DatapathError> {
        let cfg: Array<&MapData, u32> =
            Array::try_from(self.map("cw_config")?).map_err(|e| err("cw_config", e))?;
        let slot = cfg
            .get(&CFG_SLOT, 0)
            .map_err(|e| err("reading the slot", e))?;
        let epoch = cfg
            .get(&CFG_EPOCH, 0)
            .map_err(|e| err("reading the epoch", e))?;
        Ok((slot & 1, epoch))
    }

    /// Reads what each slot holds (after a restart the shadows are rebuilt from the maps).
    fn load_shadows(&mut self) -> Result<[Shadow; 2], DatapathError> {
        let mut sh = [Shadow::default(), Shadow::default()];
        let ipc: LpmTrie<&MapData, IpcacheKeyData, IpcacheVal> =
            LpmTrie::try_from(self.map(IPCACHE)?).map_err(|e| err(IPCACHE, e))?;
        for k in ipc.keys() {
            let k = k.map_err(|e| err(format!("iterating {IPCACHE}"), e))?;
            let v = ipc
                .get(&k, 0)
                .map_err(|e| err(format!("reading {IPCACHE}"), e))?;
            let d = k.data();
            sh[(d.slot & 1) as usize]
                .ipcache
                .insert((d.addr, k.prefix_len() - 32), v.identity);
        }
        let pol: LpmTrie<&MapData, PolicyKeyData, PolicyVal> =
            LpmTrie::try_from(self.map("cw_policy")?).map_err(|e| err("cw_policy", e))?;
        for k in pol.keys() {
            let k = k.map_err(|e| err("iterating cw_policy", e))?;
            let v = pol.get(&k, 0).map_err(|e| err("reading cw_policy", e))?;
            let d = k.data();
            let bits = k.prefix_len() - POLICY_FIXED_BITS;
            sh[(d.slot & 1) as usize].policy.insert(
                (
                    d.ep_id,
                    d.peer,
                    d.dir,
                    d.proto,
                    u16::from_be_bytes(d.port),
                    bits,
                ),
                v,
            );
        }
        Ok(sh)
    }

    /// Whether `desired` entries fit in `map` beside the `in_force` ones (the other slot's):
    /// the inactive slot is rewritten to exactly `desired`, so that is the most it holds.
    fn fits(
        &self,
        map: &'static str,
        in_force: usize,
        desired: usize,
    ) -> Result<(), DatapathError> {
        // Every checked map is pinned; its definition is what the kernel holds.
        let capacity = aya::maps::MapInfo::from_pin(self.pin_dir.join(map))
            .map_err(|e| err(format!("reading {map}'s definition"), e))?
            .max_entries() as usize;
        let needed = in_force + desired;
        if needed > capacity {
            return Err(DatapathError::Capacity {
                map,
                needed,
                in_force,
                desired,
                capacity,
            });
        }
        Ok(())
    }

    /// Writes `d` into the inactive slot, then makes it active in one write and bumps the epoch
    /// (established connections are re-checked against the new policy on their next packet).
    pub fn apply(&mut self, d: &Desired) -> Result<ApplyReport, DatapathError> {
        let start = std::time::Instant::now();
        let mut shadows = match self.shadows.take() {
            Some(s) => s,
            None => self.load_shadows()?,
        };
        let (active, epoch) = self.config()?;
        let next = active ^ 1;
        let in_force = &shadows[active as usize];
        for (map, in_force, desired) in [
            (IPCACHE, in_force.ipcache.len(), d.ipcache.len()),
            ("cw_policy", in_force.policy.len(), d.policy.len()),
            // One entry per endpoint, shared by both slots.
            ("cw_endpoints", 0, d.endpoints.len()),
        ] {
            self.fits(map, in_force, desired)?;
        }
        let sh = &mut shadows[next as usize];
        let mut report = ApplyReport {
            slot: next,
            ..Default::default()
        };
        {
            let mut ipc: LpmTrie<&mut MapData, IpcacheKeyData, IpcacheVal> =
                LpmTrie::try_from(self.map_mut(IPCACHE)?).map_err(|e| err(IPCACHE, e))?;
            sync_lpm(
                &mut ipc,
                &mut sh.ipcache,
                &d.ipcache,
                |(addr, bits)| {
                    Key::new(
                        bits + 32,
                        IpcacheKeyData {
                            slot: next,
                            addr: *addr,
                        },
                    )
                },
                |id| IpcacheVal {
                    identity: *id,
                    flags: 0,
                },
                IPCACHE,
                &mut report,
            )?;
        }
        {
            let mut pol: LpmTrie<&mut MapData, PolicyKeyData, PolicyVal> =
                LpmTrie::try_from(self.map_mut("cw_policy")?).map_err(|e| err("cw_policy", e))?;
            sync_lpm(
                &mut pol,
                &mut sh.policy,
                &d.policy,
                |k| {
                    let port = k.4.to_be_bytes();
                    Key::new(
                        POLICY_FIXED_BITS + k.5,
                        PolicyKeyData {
                            slot: next,
                            ep_id: k.0,
                            peer: k.1,
                            dir: k.2,
                            proto: k.3,
                            port,
                        },
                    )
                },
                |v| *v,
                "cw_policy",
                &mut report,
            )?;
        }
        {
            let mut eps: BpfHashMap<&mut MapData, EndpointKey, EndpointVal> =
                BpfHashMap::try_from(self.map_mut("cw_endpoints")?)
                    .map_err(|e| err("cw_endpoints", e))?;
            let existing: Vec<EndpointKey> = eps
                .keys()
                .collect::<Result<_, _>>()
                .map_err(|e| err("iterating cw_endpoints", e))?;
            for k in existing
                .iter()
                .filter(|k| !d.endpoints.contains_key(&k.addr))
            {
                eps.remove(k)
                    .map_err(|e| err("removing from cw_endpoints", e))?;
            }
            for (addr, (id, ifindex, flags)) in &d.endpoints {
                let k = EndpointKey { addr: *addr };
                let mut v = match eps.get(&k, 0) {
                    // Keep the active slot's flags; a new endpoint gets the same flags in both
                    // (until the flip its rows are missing, which fails closed).
                    Ok(old) if old.ep_id == *id => old,
                    _ => EndpointVal {
                        ep_id: *id,
                        ifindex: *ifindex,
                        flags: [*flags; 2],
                    },
                };
                v.ifindex = *ifindex;
                v.flags[next as usize] = *flags;
                eps.insert(k, v, 0)
                    .map_err(|e| err("writing cw_endpoints", e))?;
            }
        }
        {
            let mut cfg: Array<&mut MapData, u32> =
                Array::try_from(self.map_mut("cw_config")?).map_err(|e| err("cw_config", e))?;
            // Slot first, then epoch (programs read the epoch first): see bpf/abi.h.
            cfg.set(CFG_SLOT, next, 0)
                .map_err(|e| err("flipping the slot", e))?;
            cfg.set(CFG_EPOCH, epoch.wrapping_add(1), 0)
                .map_err(|e| err("bumping the epoch", e))?;
        }
        report.epoch = epoch.wrapping_add(1);
        report.elapsed = start.elapsed();
        self.shadows = Some(shadows);
        Ok(report)
    }
}

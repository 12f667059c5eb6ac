//! The tables of one profile (a label identity with one set of container ports): per direction,
//! the wildcard row and the rows of every peer identity some rule singles out. Peers that match
//! the same rules (and, for egress named ports, name the same ports) share rows, so each group is
//! walked once, over the rules that match it only (`sweep`).

use super::sweep::{union, Prints, Walk};
use super::PortEntry;
use super::{Compiler, PeerKind, Profile, Table};
use crate::engine::Engine;
use crate::fxhash::FxHashMap;
use crate::identity::ID_ANY;
use crate::model::{ContainerPort, Direction, Peer, WorkloadKey};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Peer groups by signature (the steps that single them out, named ports, workload or not).
type Groups = FxHashMap<(Vec<u32>, Vec<ContainerPort>, bool), Vec<u32>>;

/// A profile's walks (one per direction with applicable policies), built once per update.
struct Walks<'e> {
    dirs: [Option<Walk<'e>>; 2],
    /// Whether an egress rule names a domain (the agent then learns DNS answers).
    names_domains: bool,
}

impl<'e> Walks<'e> {
    fn new(engine: &'e Engine, rep: &WorkloadKey, lid: u32) -> Self {
        let ports = &engine.inventory().workloads[rep].ports;
        let mut names_domains = false;
        let dirs = Direction::BOTH.map(|dir| {
            let applied = engine.applied_policies(lid, dir);
            if applied.is_empty() {
                return None;
            }
            names_domains |= dir == Direction::Egress
                && applied
                    .iter()
                    .flat_map(|p| &p.rules)
                    .any(|(_, r)| r.peers.iter().any(|p| matches!(p, Peer::Domain(_))));
            Some(Walk::new(
                dir,
                &applied,
                ports,
                engine.has_audit(Some(lid), dir),
            ))
        });
        Walks {
            dirs,
            names_domains,
        }
    }
}

/// True when `r` gives a different verdict than the wildcard rows at some port of its range
/// (the wildcard rows are sorted and cover every port of every protocol).
fn differs_from(wildcard: &[PortEntry], r: &PortEntry) -> bool {
    let start = wildcard.partition_point(|w| (w.protocol, w.hi) < (r.protocol, r.lo));
    let mut covering = wildcard[start..]
        .iter()
        .take_while(|w| w.protocol == r.protocol && w.lo <= r.hi)
        .peekable();
    covering.peek().is_none() || covering.any(|w| w.verdict != r.verdict)
}

impl Compiler {
    /// Computes a profile's tables; with `patch`, reuses the old tables and recomputes only the
    /// rows of the given peer identities.
    pub(super) fn compute_profile(
        &self,
        engine: &Engine,
        rep: &WorkloadKey,
        lid: u32,
        patch: Option<(Profile, &BTreeSet<u32>)>,
    ) -> Profile {
        self.profile_from(engine, Walks::new(engine, rep, lid), patch)
    }

    /// A profile's tables from its walks (see `compute_profile`).
    fn profile_from(
        &self,
        engine: &Engine,
        walks: Walks,
        mut patch: Option<(Profile, &BTreeSet<u32>)>,
    ) -> Profile {
        let mut tables: [Arc<Table>; 2] = [Arc::default(), Arc::default()];
        let mut rules: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let mut prints: [Prints; 2] = Default::default();
        for (d, walk) in walks.dirs.iter().enumerate() {
            let Some(walk) = walk else {
                continue;
            };
            let old = patch
                .as_mut()
                .map(|(old, changed)| (std::mem::take(&mut old.tables[d]), *changed));
            tables[d] = self.direction_table(engine, walk, old);
            rules[d] = walk.rule_ids().collect();
            prints[d] = walk.prints();
        }
        Profile {
            tables,
            rules,
            names_domains: walks.names_domains,
            prints,
        }
    }

    /// One direction's table: the wildcard row, then the rows of peers some rule singles out
    /// (for a patch, of the changed peers only, in the old table).
    fn direction_table(
        &self,
        engine: &Engine,
        walk: &Walk,
        old: Option<(Arc<Table>, &BTreeSet<u32>)>,
    ) -> Arc<Table> {
        let patching = old.is_some();
        // Copy-on-write: no copy when the last snapshot handed out has been dropped.
        let (mut table_arc, changed) = match old {
            Some((t, c)) => (t, Some(c)),
            None => (Arc::default(), None),
        };
        let table = Arc::make_mut(&mut table_arc);
        // The wildcard row: an endpoint that matches only "anyone" peers.
        let wildcard = match table.rows.get(&ID_ANY) {
            Some(w) if patching => w.clone(),
            _ => walk.rows(&walk.wildcard, None),
        };
        table.rows.insert(ID_ANY, wildcard.clone());
        if let Some(changed) = changed {
            for c in changed {
                table.rows.remove(c);
            }
        }
        for ((sig, _, _), members) in self.peer_groups(engine, walk, changed) {
            self.fill_group(
                engine,
                walk,
                table,
                &union(&walk.wildcard, &sig),
                &members,
                &wildcard,
            );
        }
        table_arc
    }

    /// Groups the peers some step singles out (all of them, or for a patch the changed ones) by
    /// signature: the steps whose rule matches them, their named ports if named egress ports are
    /// in play, and whether they are workloads (only workloads resolve named ports). Built from
    /// the rules' peer sets, so the cost is their total size, not peers × rules.
    fn peer_groups(&self, engine: &Engine, walk: &Walk, changed: Option<&BTreeSet<u32>>) -> Groups {
        let mut sigs: FxHashMap<u32, Vec<u32>> = FxHashMap::default();
        for step in 0..walk.len() {
            let Some(set) = self.rule_peers.get(&walk.rule_id(step)) else {
                continue;
            };
            let mut add = |pid: u32| sigs.entry(pid).or_default().push(step as u32);
            match changed {
                None => set.iter().for_each(|p| add(*p)),
                Some(c) if c.len() < set.len() => {
                    c.iter().filter(|p| set.contains(p)).for_each(|p| add(*p))
                }
                Some(c) => set.iter().filter(|p| c.contains(p)).for_each(|p| add(*p)),
            }
        }
        let mut groups = Groups::default();
        for (pid, sig) in sigs {
            let Some(p) = self.peers.get(&pid) else {
                continue;
            };
            let ports = match (&p.kind, walk.named_egress) {
                (PeerKind::Workload { rep, .. }, true) => engine
                    .inventory()
                    .workloads
                    .get(rep)
                    .map(|w| w.ports.clone())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            let workload = matches!(p.kind, PeerKind::Workload { .. });
            groups.entry((sig, ports, workload)).or_default().push(pid);
        }
        groups
    }

    /// Walks a group once (its named ports from the first member with a view) and gives every
    /// member the rows that differ from the wildcard (lookup falls back to it for the rest).
    fn fill_group(
        &self,
        engine: &Engine,
        walk: &Walk,
        table: &mut Table,
        matching: &[u32],
        members: &[u32],
        wildcard: &[PortEntry],
    ) {
        let Some(view) = members
            .iter()
            .find_map(|m| self.peers.get(m).and_then(|p| self.peer_view(engine, p)))
        else {
            return;
        };
        let differing: Vec<PortEntry> = walk
            .rows(matching, view.ports())
            .into_iter()
            .filter(|r| differs_from(wildcard, r))
            .collect();
        if !differing.is_empty() {
            for m in members {
                table.rows.insert(*m, differing.clone());
            }
        }
    }

    /// Recomputes the profiles whose subject's policies changed and patches the others where a
    /// changed peer is relevant to them; profiles no endpoint uses are dropped.
    pub(super) fn refresh_profiles(
        &mut self,
        engine: &Engine,
        changes: &super::Changes,
        changed_peers: &BTreeSet<u32>,
    ) {
        let mut reps: std::collections::HashMap<&super::ProfileKey, &WorkloadKey> =
            std::collections::HashMap::new();
        for (wk, (pk, _, _)) in &self.endpoints {
            reps.entry(pk).or_insert(wk);
        }
        let dirty_subjects = &changes.identities;
        let mut profiles = std::mem::take(&mut self.profiles);
        profiles.retain(|k, _| reps.contains_key(k));
        let mut fresh: Vec<(super::ProfileKey, Profile)> = Vec::new();
        for (k, rep) in &reps {
            let dirty = dirty_subjects.contains(&k.0);
            match profiles.get(*k) {
                None => fresh.push(((*k).clone(), self.compute_profile(engine, rep, k.0, None))),
                // Its policies changed: if only some rules did, only the peers they match (and
                // the changed peers) get new rows.
                Some(_) if dirty => {
                    let old = profiles.remove(*k).expect("present");
                    let walks = Walks::new(engine, rep, k.0);
                    let next = match self.rules_changed(&walks, &old) {
                        Some(mut peers) => {
                            peers.extend(changed_peers.iter().copied());
                            self.profile_from(engine, walks, Some((old, &peers)))
                        }
                        None => self.profile_from(engine, walks, None),
                    };
                    fresh.push(((*k).clone(), next));
                }
                Some(_) if changed_peers.is_empty() => {}
                Some(prof) if self.touched_by(prof, changed_peers) => {
                    let old = profiles.remove(*k).expect("present");
                    let patched =
                        self.compute_profile(engine, rep, k.0, Some((old, changed_peers)));
                    fresh.push(((*k).clone(), patched));
                }
                Some(_) => {}
            }
        }
        drop(reps);
        profiles.extend(fresh);
        self.profiles = profiles;
    }

    /// When only some rules of a profile's walks changed (same shape, same rule ids, none a
    /// wildcard one): the peers those rules match now or matched before. `None`: recompute.
    fn rules_changed(&self, walks: &Walks, old: &Profile) -> Option<BTreeSet<u32>> {
        let mut peers = BTreeSet::new();
        for (d, walk) in walks.dirs.iter().enumerate() {
            let (old_rules, old_prints) = (&old.rules[d], &old.prints[d]);
            let Some(walk) = walk else {
                if old_rules.is_empty() && *old_prints == Prints::default() {
                    continue;
                }
                return None;
            };
            let rids: Vec<u32> = walk.rule_ids().collect();
            for i in walk.prints().changed_steps(old_prints, old_rules, &rids)? {
                let rid = rids[i];
                peers.extend(self.rule_peers.get(&rid).into_iter().flatten().copied());
                peers.extend(self.replaced.get(&rid).into_iter().flatten().copied());
            }
        }
        Some(peers)
    }

    /// Whether a changed peer has rows in the profile or is matched by one of its rules.
    fn touched_by(&self, prof: &Profile, changed_peers: &BTreeSet<u32>) -> bool {
        changed_peers.iter().any(|p| {
            prof.tables.iter().any(|t| t.rows.contains_key(p))
                || prof
                    .rules
                    .iter()
                    .flatten()
                    .any(|r| self.rule_peers.get(r).is_some_and(|s| s.contains(p)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compile::EntryVerdict;
    use crate::model::Protocol;

    fn entry(lo: u16, hi: u16, allow: bool) -> PortEntry {
        PortEntry {
            protocol: Protocol::Tcp,
            lo,
            hi,
            verdict: EntryVerdict {
                allow,
                rule: 0,
                audit_allow: allow,
                audit_rule: 0,
            },
        }
    }

    #[test]
    fn rows_equal_to_the_wildcard_are_left_out() {
        let wildcard = [
            entry(0, 79, false),
            entry(80, 80, true),
            entry(81, 65535, false),
        ];
        assert!(!differs_from(&wildcard, &entry(80, 80, true)));
        assert!(!differs_from(&wildcard, &entry(0, 10, false)));
        assert!(differs_from(&wildcard, &entry(70, 90, false)));
        assert!(differs_from(&wildcard, &entry(443, 443, true)));
    }
}

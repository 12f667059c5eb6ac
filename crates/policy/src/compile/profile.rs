//! The tables of one profile (a label identity with one set of container ports): per direction,
//! the wildcard row and the rows of every peer identity some rule singles out. Peers that match
//! the same rules (and, for egress named ports, name the same ports) share rows, so each group is
//! evaluated once, on port intervals cut at every boundary a rule names.

use super::{Compiler, PeerKind, Profile, Table};
use super::{EntryVerdict, PortEntry};
use crate::engine::{Addr, DirQuery, EndpointView, Engine};
use crate::identity::ID_ANY;
use crate::model::{ContainerPort, Direction, PortSpec, Protocol, Rule, Workload, WorkloadKey};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Rows of a peer group, by signature: which rules match, named ports, workload or not.
type Groups = BTreeMap<(Vec<bool>, Vec<ContainerPort>), Vec<u32>>;

/// Everything needed to evaluate rows for one direction of one profile.
struct DirRows<'a, 'e> {
    engine: &'e Engine,
    dir: Direction,
    lid: u32,
    subject: &'a EndpointView<'e>,
    /// Whether audit-mode policies apply (else the audit verdict is the enforced one).
    audit: bool,
    /// Port boundaries per protocol: numeric ranges and, for ingress, our named ports.
    bounds: BTreeMap<Protocol, BTreeSet<u32>>,
    /// Egress named ports: resolved against each peer's own ports.
    named_egress: Vec<(&'e str, Option<Protocol>)>,
}

impl<'a, 'e> DirRows<'a, 'e> {
    fn new(
        engine: &'e Engine,
        dir: Direction,
        lid: u32,
        subject: &'a EndpointView<'e>,
        w: &Workload,
        rules: &[(u32, &'e Rule)],
    ) -> Self {
        DirRows {
            engine,
            dir,
            lid,
            subject,
            audit: engine.has_audit(Some(lid), dir),
            bounds: port_bounds(dir, w, rules),
            named_egress: named_egress(dir, rules),
        }
    }

    /// Rows for a peer: every port interval of every protocol, adjacent equal verdicts merged.
    fn eval(&self, peer: &EndpointView, peer_ports: Option<&[ContainerPort]>) -> Vec<PortEntry> {
        let mut rows: Vec<PortEntry> = Vec::new();
        for (proto, b) in &self.bounds {
            let pts = self.points(*proto, b, peer_ports);
            for win in pts.windows(2) {
                let (lo, hi) = (win[0] as u16, (win[1] - 1) as u16);
                let verdict = self.verdict(peer, *proto, lo);
                match rows.last_mut() {
                    Some(last)
                        if last.protocol == *proto
                            && last.verdict == verdict
                            && last.hi as u32 + 1 == lo as u32 =>
                    {
                        last.hi = hi
                    }
                    _ => rows.push(PortEntry {
                        protocol: *proto,
                        lo,
                        hi,
                        verdict,
                    }),
                }
            }
        }
        rows
    }

    /// Interval boundaries for one protocol: the rules', the peer's named egress ports, 0, 65536.
    fn points(
        &self,
        proto: Protocol,
        bounds: &BTreeSet<u32>,
        peer_ports: Option<&[ContainerPort]>,
    ) -> Vec<u32> {
        let mut b = bounds.clone();
        for (name, pr) in self.named_egress.iter().filter(|_| peer_ports.is_some()) {
            for cp in peer_ports.unwrap_or_default().iter().filter(|cp| {
                cp.name.as_deref() == Some(*name) && pr.is_none_or(|x| x == cp.protocol)
            }) {
                if cp.protocol == proto {
                    b.insert(cp.port as u32);
                    b.insert(cp.port as u32 + 1);
                }
            }
        }
        b.insert(0);
        b.insert(65536);
        b.into_iter().filter(|x| *x <= 65536).collect()
    }

    /// The entry verdict at one port: enforced, and with audit-mode policies.
    fn verdict(&self, peer: &EndpointView, protocol: Protocol, port: u16) -> EntryVerdict {
        let q = DirQuery {
            dir: self.dir,
            subject_id: Some(self.lid),
            subject: self.subject,
            peer,
            protocol,
            port,
            include_audit: false,
        };
        let v = self.engine.decide_direction(&q);
        let a = if self.audit {
            self.engine.decide_direction(&DirQuery {
                include_audit: true,
                ..q
            })
        } else {
            v
        };
        EntryVerdict {
            allow: v.allowed,
            rule: v.rule,
            audit_allow: a.allowed,
            audit_rule: a.rule,
        }
    }
}

fn add_port(bounds: &mut BTreeMap<Protocol, BTreeSet<u32>>, p: Protocol, lo: u16, hi: u16) {
    let b = bounds.entry(p).or_default();
    b.insert(lo as u32);
    b.insert(hi as u32 + 1);
}

/// Port boundaries per protocol (numeric ranges and, for ingress, the subject's named ports).
fn port_bounds(
    dir: Direction,
    w: &Workload,
    rules: &[(u32, &Rule)],
) -> BTreeMap<Protocol, BTreeSet<u32>> {
    let mut bounds: BTreeMap<Protocol, BTreeSet<u32>> = Protocol::ALL
        .iter()
        .map(|p| (*p, BTreeSet::new()))
        .collect();
    for ps in rules.iter().flat_map(|(_, r)| &r.ports) {
        match ps {
            PortSpec::Range { protocol, lo, hi } => add_port(&mut bounds, *protocol, *lo, *hi),
            PortSpec::Named { name, protocol } if dir == Direction::Ingress => {
                if let Some(cp) = w.named_port(name, *protocol) {
                    add_port(&mut bounds, cp.protocol, cp.port, cp.port);
                }
            }
            PortSpec::Named { .. } => {}
        }
    }
    bounds
}

/// The named ports of egress rules (they resolve against each destination's ports).
fn named_egress<'e>(dir: Direction, rules: &[(u32, &'e Rule)]) -> Vec<(&'e str, Option<Protocol>)> {
    if dir != Direction::Egress {
        return Vec::new();
    }
    rules
        .iter()
        .flat_map(|(_, r)| r.ports.iter())
        .filter_map(|p| match p {
            PortSpec::Named { name, protocol } => Some((name.as_str(), *protocol)),
            _ => None,
        })
        .collect()
}

/// True when `r` gives a different verdict than the wildcard rows at some port of its range.
fn differs_from(wildcard: &[PortEntry], r: &PortEntry) -> bool {
    let mut points = vec![r.lo];
    points.extend(
        wildcard
            .iter()
            .filter(|w| w.protocol == r.protocol && w.lo > r.lo && w.lo <= r.hi)
            .map(|w| w.lo),
    );
    points
        .into_iter()
        .any(|p| Table::find(wildcard, r.protocol, p) != Some(r.verdict))
}

impl Compiler {
    /// Computes a profile's tables; with `patch`, reuses the old tables and recomputes only the
    /// rows of the given peer identities.
    pub(super) fn compute_profile(
        &self,
        engine: &Engine,
        rep: &WorkloadKey,
        lid: u32,
        mut patch: Option<(Profile, &BTreeSet<u32>)>,
    ) -> Profile {
        let w = &engine.inventory().workloads[rep];
        let info = engine.identity(lid).expect("live identity");
        let subject = EndpointView::workload(w, &info.namespace_labels, Addr::Outside);
        let applied = Direction::BOTH.map(|d| engine.applied_rules(lid, d).collect::<Vec<_>>());
        let mut tables: [Arc<Table>; 2] = [Arc::default(), Arc::default()];
        for dir in Direction::BOTH {
            let d = dir.index();
            if applied[d].is_empty() {
                continue;
            }
            let defs: Vec<(u32, &Rule)> = applied[d]
                .iter()
                .filter_map(|a| a.rule.map(|r| (a.id, r)))
                .collect();
            let rows = DirRows::new(engine, dir, lid, &subject, w, &defs);
            let old = patch
                .as_mut()
                .map(|(old, changed)| (std::mem::take(&mut old.tables[d]), *changed));
            tables[d] = self.direction_table(&rows, &defs, old);
        }
        let rules = applied.map(|a| a.iter().map(|r| r.id).collect());
        Profile { tables, rules }
    }

    /// One direction's table: the wildcard row, then the rows of peers some rule singles out
    /// (for a patch, of the changed peers only, in the old table).
    fn direction_table(
        &self,
        rows: &DirRows,
        defs: &[(u32, &Rule)],
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
            _ => rows.eval(&EndpointView::anonymous(), None),
        };
        table.rows.insert(ID_ANY, wildcard.clone());
        let sets: Vec<Option<&BTreeSet<u32>>> =
            defs.iter().map(|(r, _)| self.rule_peers.get(r)).collect();
        // Peers some rule matches: all of them for a full profile; for a patch, the changed
        // ones only (without building the union, which is large when many rules name the
        // same namespaces).
        let targets: Vec<u32> = match changed {
            Some(changed) => {
                for c in changed {
                    table.rows.remove(c);
                }
                changed
                    .iter()
                    .copied()
                    .filter(|c| sets.iter().flatten().any(|s| s.contains(c)))
                    .collect()
            }
            None => {
                let mut all: Vec<u32> = sets
                    .iter()
                    .flatten()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                all.sort_unstable();
                all.dedup();
                all
            }
        };
        let groups = self.peer_groups(rows.engine, targets, &sets, !rows.named_egress.is_empty());
        for members in groups.values() {
            self.fill_group(rows, table, members, &wildcard);
        }
        table_arc
    }

    /// Groups peers by signature: which rules they match, their named ports if named egress
    /// ports are in play, and whether they are workloads (only workloads resolve named ports).
    fn peer_groups(
        &self,
        engine: &Engine,
        targets: Vec<u32>,
        sets: &[Option<&BTreeSet<u32>>],
        named: bool,
    ) -> Groups {
        let mut groups = Groups::new();
        for pid in targets {
            let Some(p) = self.peers.get(&pid) else {
                continue;
            };
            let mut sig: Vec<bool> = sets
                .iter()
                .map(|s| s.is_some_and(|s| s.contains(&pid)))
                .collect();
            let ports = match (&p.kind, named) {
                (PeerKind::Workload { rep, .. }, true) => engine
                    .inventory()
                    .workloads
                    .get(rep)
                    .map(|w| w.ports.clone())
                    .unwrap_or_default(),
                _ => Vec::new(),
            };
            sig.push(matches!(p.kind, PeerKind::Workload { .. }));
            groups.entry((sig, ports)).or_default().push(pid);
        }
        groups
    }

    /// Evaluates a group once, on its first member with a view, and gives every member the rows
    /// that differ from the wildcard (lookup falls back to the wildcard for the rest).
    fn fill_group(
        &self,
        rows: &DirRows,
        table: &mut Table,
        members: &[u32],
        wildcard: &[PortEntry],
    ) {
        let Some(view) = members.iter().find_map(|m| {
            self.peers
                .get(m)
                .and_then(|p| self.peer_view(rows.engine, p))
        }) else {
            return;
        };
        let differing: Vec<PortEntry> = rows
            .eval(&view, view.ports())
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
        profiles.retain(|k, _| reps.contains_key(k) && !dirty_subjects.contains(&k.0));
        let mut fresh: Vec<(super::ProfileKey, Profile)> = Vec::new();
        for (k, rep) in &reps {
            match profiles.get(*k) {
                None => fresh.push(((*k).clone(), self.compute_profile(engine, rep, k.0, None))),
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

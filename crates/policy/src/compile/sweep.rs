//! Table rows by walking rules instead of evaluating points. One direction's applicable rules are
//! flattened once per profile into the evaluation order; a peer group's rows come from the rules
//! that match it (the wildcard ones and those its signature names), each rule filling only the
//! port intervals no earlier rule decided (first match), tier by tier.
//!
//! Why: calling the evaluator per (peer group × port interval) costs groups × intervals × rules;
//! a firewall-style set of 4,000 (address, port) rules never finished. Here a group costs
//! O(k log k) in the k rules that match it. [`crate::Engine::evaluate`] stays the reference:
//! property tests compare every compiled entry with it.

use super::{EntryVerdict, PortEntry};
use crate::engine::AppliedPolicy;
use crate::fxhash::{FxHashMap, FxHasher};
use crate::model::{
    Action, ContainerPort, Direction, Entity, Peer, PortSpec, Protocol, Rule, Tier,
};
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

/// Ports per protocol: keys are `protocol index × SPAN + port`, so one interval map covers all.
const SPAN: u32 = 65536;
const KEYS: u32 = SPAN * Protocol::ALL.len() as u32;

fn base(p: Protocol) -> u32 {
    Protocol::ALL.iter().position(|x| *x == p).expect("in ALL") as u32 * SPAN
}

/// Matches every peer, the wildcard view included.
pub(super) fn is_wildcard(p: &Peer) -> bool {
    matches!(p, Peer::Any | Peer::Entity(Entity::All))
}

/// (allowed, rule id) of one walk.
type Verdict = (bool, u32);

/// First-match interval fill: each call decides only keys no earlier call decided.
struct Fill<V> {
    /// Undecided intervals, start → inclusive end.
    free: BTreeMap<u32, u32>,
    decided: Vec<(u32, u32, V)>,
}

impl<V: Copy> Fill<V> {
    fn new() -> Self {
        Fill {
            free: BTreeMap::from([(0, KEYS - 1)]),
            decided: Vec::new(),
        }
    }

    fn full(&self) -> bool {
        self.free.is_empty()
    }

    fn fill(&mut self, lo: u32, hi: u32, v: V) {
        let first = match self.free.range(..=lo).next_back() {
            Some((s, e)) if *e >= lo => Some(*s),
            _ => self.free.range(lo..).next().map(|(s, _)| *s),
        };
        let mut cur = first;
        while let Some(s) = cur.filter(|s| *s <= hi) {
            let e = self.free.remove(&s).expect("present");
            let (a, b) = (s.max(lo), e.min(hi));
            if s < a {
                self.free.insert(s, a - 1);
            }
            if e > b {
                self.free.insert(b + 1, e);
            }
            self.decided.push((a, b, v));
            cur = self.free.range(b + 1..).next().map(|(s, _)| *s);
        }
    }
}

/// A walk's fingerprint: its shape (direction, isolation defaults, audit) and each step.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct Prints {
    pub header: u64,
    pub steps: Vec<u64>,
    pub wildcard: Vec<u32>,
}

impl Prints {
    /// The steps that changed from `old` to `self` when only rules changed (same shape, same
    /// rule ids in the same order, no wildcard step involved); `None` when the walk itself did.
    pub fn changed_steps(
        &self,
        old: &Prints,
        old_rids: &[u32],
        rids: &[u32],
    ) -> Option<Vec<usize>> {
        if self.header != old.header || old_rids != rids || self.wildcard != old.wildcard {
            return None;
        }
        let changed: Vec<usize> = (0..self.steps.len())
            .filter(|i| self.steps[*i] != old.steps[*i])
            .collect();
        let wild = |i: &usize| self.wildcard.binary_search(&(*i as u32)).is_ok();
        (!changed.iter().any(wild)).then_some(changed)
    }
}

/// One rule of the flattened walk, with the walks it takes part in.
struct Step<'e> {
    rid: u32,
    rule: &'e Rule,
    tier: Tier,
    enforced: bool,
    audit: bool,
    /// Steps of one class (tier, action, ports) decide the same keys the same way: after the
    /// first that matches a peer, the others add nothing for it (a firewall export repeats a
    /// handful of port lists thousands of times).
    class: u32,
    /// The keys its ports cover, when they do not depend on the peer (no named ports).
    fixed: Option<Vec<(u32, u32)>>,
}

/// One direction of one profile, ready to be walked for any peer.
pub(super) struct Walk<'e> {
    dir: Direction,
    steps: Vec<Step<'e>>,
    /// Steps whose rule matches every peer: they apply to every group and to the wildcard row.
    pub wildcard: Vec<u32>,
    /// The first isolating application-tier policy's default, per walk (enforced, audit).
    isolation: [Option<u32>; 2],
    subject_ports: &'e [ContainerPort],
    /// Whether an audit-mode policy applies (else the audit verdict is the enforced one).
    audit: bool,
    /// Whether an egress rule names a port (then a peer's own ports change its rows).
    pub named_egress: bool,
    /// The pass counter and, per class, the last pass that walked it.
    stamps: std::cell::RefCell<(u32, Vec<u32>)>,
}

impl<'e> Walk<'e> {
    pub fn new(
        dir: Direction,
        policies: &[AppliedPolicy<'e>],
        subject_ports: &'e [ContainerPort],
        audit: bool,
    ) -> Self {
        let mut steps: Vec<Step> = Vec::new();
        let mut classes: FxHashMap<(Tier, Action, &[PortSpec]), u32> = FxHashMap::default();
        let mut isolation = [None, None];
        for p in policies {
            if p.tier == Tier::Application {
                if !p.isolates {
                    continue;
                }
                if p.enforced {
                    isolation[0].get_or_insert(p.isolation_rule);
                }
                if p.active {
                    isolation[1].get_or_insert(p.isolation_rule);
                }
            }
            for (rid, rule) in &p.rules {
                let next = classes.len() as u32;
                let class = *classes
                    .entry((p.tier, rule.action, rule.ports.as_slice()))
                    .or_insert(next);
                steps.push(Step {
                    rid: *rid,
                    rule,
                    tier: p.tier,
                    enforced: p.enforced,
                    audit: p.active,
                    class,
                    fixed: None,
                });
            }
        }
        let wildcard = (0..steps.len() as u32)
            .filter(|i| steps[*i as usize].rule.peers.iter().any(is_wildcard))
            .collect();
        let named_egress = dir == Direction::Egress
            && steps.iter().any(|s| {
                s.rule
                    .ports
                    .iter()
                    .any(|p| matches!(p, PortSpec::Named { .. }))
            });
        let mut walk = Walk {
            dir,
            steps: Vec::new(),
            wildcard,
            isolation,
            subject_ports,
            audit,
            named_egress,
            stamps: std::cell::RefCell::new((0, vec![0; classes.len()])),
        };
        for s in &mut steps {
            let named = s
                .rule
                .ports
                .iter()
                .any(|p| matches!(p, PortSpec::Named { .. }));
            if !named || dir == Direction::Ingress {
                let mut keys = Vec::new();
                walk.intervals(s.rule, None, &mut keys);
                s.fixed = Some(keys);
            }
        }
        walk.steps = steps;
        walk
    }

    /// What the walk's rows depend on, to tell a change of some rules from one of the walk's
    /// shape (`Profile::prints`).
    pub fn prints(&self) -> Prints {
        let hash = |v: &dyn Fn(&mut FxHasher)| {
            let mut h = FxHasher::default();
            v(&mut h);
            h.finish()
        };
        Prints {
            header: hash(&|h| (self.dir, self.isolation, self.audit).hash(h)),
            steps: self
                .steps
                .iter()
                .map(|s| hash(&|h| (s.rid, s.tier, s.enforced, s.audit, s.rule).hash(h)))
                .collect(),
            wildcard: self.wildcard.clone(),
        }
    }

    /// Rule ids of the walk, in order.
    pub fn rule_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.steps.iter().map(|s| s.rid)
    }

    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn rule_id(&self, step: usize) -> u32 {
        self.steps[step].rid
    }

    /// Rows for a peer matched by the steps `matching` (sorted; wildcard steps included):
    /// every port of every protocol, adjacent equal verdicts merged.
    pub fn rows(&self, matching: &[u32], peer_ports: Option<&[ContainerPort]>) -> Vec<PortEntry> {
        let enforced = self.pass(matching, peer_ports, false);
        let audit = if self.audit {
            self.pass(matching, peer_ports, true)
        } else {
            enforced.clone()
        };
        zip_rows(&enforced, &audit)
    }

    /// The keys a rule's ports cover for this peer (named ports resolve against the destination:
    /// the subject on ingress, the peer on egress).
    fn intervals(&self, r: &Rule, peer_ports: Option<&[ContainerPort]>, out: &mut Vec<(u32, u32)>) {
        out.clear();
        if r.ports.is_empty() {
            out.push((0, KEYS - 1));
            return;
        }
        let dst = match self.dir {
            Direction::Ingress => Some(self.subject_ports),
            Direction::Egress => peer_ports,
        };
        for ps in &r.ports {
            match ps {
                PortSpec::Range { protocol, lo, hi } => {
                    out.push((base(*protocol) + *lo as u32, base(*protocol) + *hi as u32))
                }
                PortSpec::Named { name, protocol } => {
                    for cp in dst.unwrap_or_default().iter().filter(|cp| {
                        cp.name.as_deref() == Some(name.as_str())
                            && protocol.is_none_or(|p| p == cp.protocol)
                    }) {
                        let k = base(cp.protocol) + cp.port as u32;
                        out.push((k, k));
                    }
                }
            }
        }
    }

    /// A step's keys: precomputed, or resolved against this peer's named ports into `buf`.
    fn keys<'b>(
        &self,
        s: &'b Step,
        peer_ports: Option<&[ContainerPort]>,
        buf: &'b mut Vec<(u32, u32)>,
    ) -> &'b [(u32, u32)] {
        match &s.fixed {
            Some(k) => k,
            None => {
                self.intervals(s.rule, peer_ports, buf);
                buf
            }
        }
    }

    /// One walk (enforced or audit): a covering, sorted list of intervals and verdicts.
    fn pass(
        &self,
        matching: &[u32],
        peer_ports: Option<&[ContainerPort]>,
        audit: bool,
    ) -> Vec<(u32, u32, Verdict)> {
        let live = |s: &Step| if audit { s.audit } else { s.enforced };
        // Classes already walked for this peer (see `Step::class`): stamped with this pass.
        let mut stamps = self.stamps.borrow_mut();
        let pass = stamps.0.wrapping_add(1);
        stamps.0 = pass;
        let seen = std::cell::RefCell::new(&mut stamps.1);
        let steps = || {
            matching
                .iter()
                .map(|i| &self.steps[*i as usize])
                .filter(|s| live(s))
        };
        let fresh = |s: &Step| {
            let mut seen = seen.borrow_mut();
            let slot = &mut seen[s.class as usize];
            let new = *slot != pass;
            *slot = pass;
            new
        };
        let mut buf = Vec::new();
        let mut out: Fill<Verdict> = Fill::new();
        // Admin and baseline: first match in order; Pass leaves the key to the next tier.
        let ordered = |tier: Tier, out: &mut Fill<Verdict>, buf: &mut Vec<(u32, u32)>| {
            let mut f: Fill<(Action, u32)> = Fill::new();
            for s in steps().filter(|s| s.tier == tier) {
                if f.full() {
                    break;
                }
                if !fresh(s) {
                    continue;
                }
                for (lo, hi) in self.keys(s, peer_ports, buf) {
                    f.fill(*lo, *hi, (s.rule.action, s.rid));
                }
            }
            for (lo, hi, (a, rid)) in f.decided {
                if a != Action::Pass {
                    out.fill(lo, hi, (a == Action::Allow, rid));
                }
            }
        };
        ordered(Tier::Admin, &mut out, &mut buf);
        match self.isolation[audit as usize] {
            // Application tier: any matching deny wins, then any allow, else the default.
            Some(iso) => {
                for deny in [true, false] {
                    for s in steps().filter(|s| {
                        s.tier == Tier::Application && (s.rule.action == Action::Deny) == deny
                    }) {
                        if out.full() {
                            break;
                        }
                        if !fresh(s) {
                            continue;
                        }
                        for (lo, hi) in self.keys(s, peer_ports, &mut buf) {
                            out.fill(*lo, *hi, (!deny, s.rid));
                        }
                    }
                }
                out.fill(0, KEYS - 1, (false, iso));
            }
            None => ordered(Tier::Baseline, &mut out, &mut buf),
        }
        out.fill(0, KEYS - 1, (true, 0));
        let mut v = out.decided;
        v.sort_unstable_by_key(|(lo, _, _)| *lo);
        v
    }
}

/// Joins the enforced and audit walks into rows, cut at protocol boundaries, equal neighbours
/// merged.
fn zip_rows(enforced: &[(u32, u32, Verdict)], audit: &[(u32, u32, Verdict)]) -> Vec<PortEntry> {
    let mut rows: Vec<PortEntry> = Vec::new();
    let (mut i, mut j, mut k) = (0, 0, 0u32);
    while k < KEYS {
        while enforced[i].1 < k {
            i += 1;
        }
        while audit[j].1 < k {
            j += 1;
        }
        let proto_end = (k / SPAN + 1) * SPAN - 1;
        let end = enforced[i].1.min(audit[j].1).min(proto_end);
        let (e, a) = (enforced[i].2, audit[j].2);
        let verdict = EntryVerdict {
            allow: e.0,
            rule: e.1,
            audit_allow: a.0,
            audit_rule: a.1,
        };
        let protocol = Protocol::ALL[(k / SPAN) as usize];
        let (lo, hi) = ((k % SPAN) as u16, (end % SPAN) as u16);
        match rows.last_mut() {
            Some(last)
                if last.protocol == protocol
                    && last.verdict == verdict
                    && last.hi as u32 + 1 == lo as u32 =>
            {
                last.hi = hi
            }
            _ => rows.push(PortEntry {
                protocol,
                lo,
                hi,
                verdict,
            }),
        }
        k = end + 1;
    }
    rows
}

/// Merges two sorted step lists.
pub(super) fn union(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let next = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x <= y => {
                i += 1;
                if x == y {
                    j += 1;
                }
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => unreachable!(),
        };
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_decides_each_key_once_first_call_first() {
        let mut f: Fill<u8> = Fill::new();
        f.fill(10, 20, 1);
        f.fill(15, 30, 2);
        f.fill(0, KEYS - 1, 3);
        let mut d = f.decided.clone();
        d.sort();
        assert_eq!(
            d,
            vec![(0, 9, 3), (10, 20, 1), (21, 30, 2), (31, KEYS - 1, 3)]
        );
        assert!(f.full());
    }

    #[test]
    fn union_merges_sorted_lists() {
        assert_eq!(union(&[1, 4, 7], &[2, 4, 9]), vec![1, 2, 4, 7, 9]);
        assert_eq!(union(&[], &[3]), vec![3]);
    }
}

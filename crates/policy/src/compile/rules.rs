//! Which peer identities each rule matches, kept only for the rules of this node's own endpoints
//! (at 10,000 policies most rules select no local endpoint, and no other rule is ever read).

use super::sweep::is_wildcard;
use super::{Compiler, PeerMemo};
use crate::engine::{peer_matches, Addr, Changes, EndpointView, Engine};
use crate::model::{Direction, Peer, PortSpec, Rule};
use crate::net::Cidr;
use std::collections::{BTreeMap, BTreeSet};

/// Candidate peer views, with an index of those at a CIDR position: a CIDR peer is matched by a
/// range scan over the networks inside it instead of a pass over every candidate (a firewall
/// export names thousands of distinct networks).
pub(super) struct Candidates<'e> {
    views: Vec<(u32, EndpointView<'e>)>,
    by_net: BTreeMap<Cidr, Vec<usize>>,
}

impl<'e> Candidates<'e> {
    fn new(views: Vec<(u32, EndpointView<'e>)>) -> Self {
        let mut by_net: BTreeMap<Cidr, Vec<usize>> = BTreeMap::new();
        for (i, (_, v)) in views.iter().enumerate() {
            let net = match v.addr {
                Addr::Region(c) => c,
                Addr::Ip(ip) => Cidr::host(ip),
                Addr::Outside => continue,
            };
            by_net.entry(net).or_default().push(i);
        }
        Candidates { views, by_net }
    }

    fn ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.views.iter().map(|(id, _)| *id)
    }

    /// Ids of the candidates `peer` matches.
    fn matching(&self, peer: &Peer, local_node: Option<&str>) -> Vec<u32> {
        let Peer::Cidr { cidr, .. } = peer else {
            return self
                .views
                .iter()
                .filter(|(_, view)| peer_matches(peer, local_node, view))
                .map(|(id, _)| *id)
                .collect();
        };
        // Networks inside `cidr` sort from `cidr` itself to the host network of its last address.
        let to = Cidr::host(cidr.last());
        self.by_net
            .range(*cidr..=to)
            .flat_map(|(_, ix)| ix.iter().map(|i| &self.views[*i]))
            .filter(|(_, view)| peer_matches(peer, local_node, view))
            .map(|(id, _)| *id)
            .collect()
    }
}

/// What a rule's peer set depends on: its direction, its peers, and whether it names ports
/// (egress named ports with a wildcard peer add every workload).
fn match_key(r: &Rule) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = crate::fxhash::FxHasher::default();
    let named = r.ports.iter().any(|p| matches!(p, PortSpec::Named { .. }));
    (r.direction, &r.peers, named).hash(&mut h);
    h.finish()
}

impl Compiler {
    /// Ids of the rules (not the isolation defaults) of the policies applicable to the label
    /// identities of local endpoints.
    fn live_rules<'e>(&self, engine: &'e Engine) -> BTreeMap<u32, &'e Rule> {
        let local: BTreeSet<u32> = self
            .endpoints
            .values()
            .map(|((lid, _), _, _)| *lid)
            .collect();
        let mut live = BTreeMap::new();
        for lid in &local {
            for dir in Direction::BOTH {
                live.extend(
                    engine
                        .applied_rules(*lid, dir)
                        .filter_map(|a| Some((a.id, a.rule?))),
                );
            }
        }
        live
    }

    /// Brings the rule → peer sets up to date: rules of changed policies (and rules not seen
    /// before) are matched against every peer identity; the others only against changed peers.
    pub(super) fn refresh_rule_peers(
        &mut self,
        engine: &Engine,
        changes: &Changes,
        changed_peers: &BTreeSet<u32>,
    ) {
        let live_rules = self.live_rules(engine);
        self.rule_peers
            .retain(|rid, _| live_rules.contains_key(rid));
        self.rule_keys.retain(|rid, _| live_rules.contains_key(rid));
        self.replaced.clear();
        // Rules of changed policies whose peers changed (the others keep their sets).
        let changed_policy_rules: BTreeSet<u32> = changes
            .policies
            .iter()
            .flat_map(|p| engine.policy_rule_ids(p).iter().copied())
            .filter(|rid| {
                live_rules
                    .get(rid)
                    .is_none_or(|r| self.rule_keys.get(rid) != Some(&match_key(r)))
            })
            .collect();
        let stale = |c: &Self, rid: &u32| {
            changed_policy_rules.contains(rid) || !c.rule_peers.contains_key(rid)
        };
        let all_views = Candidates::new(if live_rules.keys().any(|rid| stale(self, rid)) {
            self.views(engine, self.peers.keys().copied())
        } else {
            Vec::new()
        });
        let gone: Vec<u32> = changed_peers
            .iter()
            .copied()
            .filter(|p| !self.peers.contains_key(p))
            .collect();
        let present_views = Candidates::new(
            self.views(
                engine,
                changed_peers
                    .iter()
                    .copied()
                    .filter(|p| self.peers.contains_key(p)),
            ),
        );
        // Many rules name the same peer (every admin deny here names the same namespaces): each
        // distinct peer is matched against the candidates once per pass.
        let (mut memo_all, mut memo_present) = (PeerMemo::default(), PeerMemo::default());
        for (rid, rule) in &live_rules {
            if stale(self, rid) {
                let set = self.match_rule(rule, &all_views, &mut memo_all);
                self.rule_keys.insert(*rid, match_key(rule));
                if let Some(old) = self.rule_peers.insert(*rid, set) {
                    self.replaced.insert(*rid, old);
                }
            } else if !changed_peers.is_empty() {
                let add = self.match_rule(rule, &present_views, &mut memo_present);
                let set = self.rule_peers.get_mut(rid).expect("present");
                for g in gone.iter().copied().chain(present_views.ids()) {
                    set.remove(&g);
                }
                set.extend(add);
            }
        }
    }

    /// Peer identities matched by a rule's non-wildcard peers, plus (egress named ports with a
    /// wildcard peer) every workload identity that has such a port. `memo` holds the matches of
    /// peers already seen against the same candidates.
    fn match_rule<'e>(
        &self,
        rule: &'e Rule,
        candidates: &Candidates,
        memo: &mut PeerMemo<'e>,
    ) -> BTreeSet<u32> {
        let wildcard_named = rule.direction == Direction::Egress
            && rule.peers.iter().any(is_wildcard)
            && rule
                .ports
                .iter()
                .any(|p| matches!(p, PortSpec::Named { .. }));
        let specific: Vec<&Peer> = rule.peers.iter().filter(|p| !is_wildcard(p)).collect();
        if specific.is_empty() && !wildcard_named {
            return BTreeSet::new();
        }
        let local_node = Some(self.node.as_str());
        let mut ids: Vec<u32> = Vec::new();
        for peer in specific {
            let matched = memo
                .entry(peer)
                .or_insert_with(|| candidates.matching(peer, local_node));
            ids.extend_from_slice(matched);
        }
        if wildcard_named {
            ids.extend(
                candidates
                    .views
                    .iter()
                    .filter(|(_, view)| view.is_workload())
                    .map(|(id, _)| *id),
            );
        }
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter().collect()
    }
}

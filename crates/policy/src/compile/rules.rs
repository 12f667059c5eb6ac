//! Which peer identities each rule matches, kept only for the rules of this node's own endpoints
//! (at 10,000 policies most rules select no local endpoint, and no other rule is ever read).

use super::{Compiler, PeerMemo};
use crate::engine::{peer_matches, Changes, EndpointView, Engine};
use crate::model::{Direction, Entity, Peer, PortSpec};
use std::collections::BTreeSet;

/// Peers that match anyone: their rules are covered by the wildcard row.
fn is_wildcard(p: &Peer) -> bool {
    matches!(p, Peer::Any | Peer::Entity(Entity::All))
}

impl Compiler {
    /// Ids of the rules (not the isolation defaults) of the policies applicable to the label
    /// identities of local endpoints.
    fn live_rules(&self, engine: &Engine) -> BTreeSet<u32> {
        let local: BTreeSet<u32> = self
            .endpoints
            .values()
            .map(|((lid, _), _, _)| *lid)
            .collect();
        let mut live = BTreeSet::new();
        for lid in &local {
            for dir in Direction::BOTH {
                live.extend(
                    engine
                        .applied_rules(*lid, dir)
                        .filter(|a| a.rule.is_some())
                        .map(|a| a.id),
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
        self.rule_peers.retain(|rid, _| live_rules.contains(rid));
        let changed_policy_rules: BTreeSet<u32> = changes
            .policies
            .iter()
            .flat_map(|p| engine.policy_rule_ids(p).iter().copied())
            .collect();
        let stale = |c: &Self, rid: &u32| {
            changed_policy_rules.contains(rid) || !c.rule_peers.contains_key(rid)
        };
        let all_views = if live_rules.iter().any(|rid| stale(self, rid)) {
            self.views(engine, self.peers.keys().copied())
        } else {
            Vec::new()
        };
        let gone: Vec<u32> = changed_peers
            .iter()
            .copied()
            .filter(|p| !self.peers.contains_key(p))
            .collect();
        let present_views = self.views(
            engine,
            changed_peers
                .iter()
                .copied()
                .filter(|p| self.peers.contains_key(p)),
        );
        // Many rules name the same peer (every admin deny here names the same namespaces): each
        // distinct peer is matched against the candidates once per pass.
        let (mut memo_all, mut memo_present) = (PeerMemo::default(), PeerMemo::default());
        for rid in &live_rules {
            if stale(self, rid) {
                let set = self.match_rule(engine, *rid, &all_views, &mut memo_all);
                self.rule_peers.insert(*rid, set);
            } else if !changed_peers.is_empty() {
                let add = self.match_rule(engine, *rid, &present_views, &mut memo_present);
                let set = self.rule_peers.get_mut(rid).expect("present");
                for g in gone.iter().chain(present_views.iter().map(|(id, _)| id)) {
                    set.remove(g);
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
        engine: &'e Engine,
        rid: u32,
        candidates: &[(u32, EndpointView)],
        memo: &mut PeerMemo<'e>,
    ) -> BTreeSet<u32> {
        let Some(rule) = engine.rule_definition(rid) else {
            return BTreeSet::new();
        };
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
            let matched = memo.entry(peer).or_insert_with(|| {
                candidates
                    .iter()
                    .filter(|(_, view)| peer_matches(peer, local_node, view))
                    .map(|(id, _)| *id)
                    .collect()
            });
            ids.extend_from_slice(matched);
        }
        if wildcard_named {
            ids.extend(
                candidates
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

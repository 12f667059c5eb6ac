//! Keeping the engine's indexes in step with the model, one change at a time: identities and
//! their members, the policies applicable to each identity (in evaluation order), the address
//! index, rule ids, and the record of what changed for incremental compilation.

use super::verdict::identity_key;
use super::view::{subject_matches, EpRef, NsRec, WlRec};
use super::{Applicable, Changes, Engine, IdentityInfo, PolicySlot, RuleInfo};
use crate::labels::Labels;
use crate::model::*;
use std::collections::BTreeSet;
use std::sync::Arc;

/// Whether a policy takes part in decisions of this direction at all.
fn policy_has_direction(p: &Policy, d: Direction) -> bool {
    match p.tier {
        Tier::Application => p.isolates[d.index()],
        _ => p.rules(d).next().is_some(),
    }
}

/// The key a rule id is allocated under: stable across updates of the same policy.
fn rule_key(id: &PolicyId, dir: Direction, index: usize) -> String {
    format!("{id}|{}|{index}", dir.as_str())
}

fn isolation_key(id: &PolicyId, dir: Direction) -> String {
    format!("{id}|{}|isolation", dir.as_str())
}

impl Engine {
    /// Sets the clock used for expiry (Unix seconds). The engine never reads a clock itself.
    /// Policies and rules whose expiry falls between the old and new time are reported as
    /// changed, so incremental compilation retires them.
    pub fn set_now(&mut self, now: i64) {
        let (a, b) = (self.now.min(now), self.now.max(now));
        let crosses = |t: Option<i64>| t.is_some_and(|t| a < t && t <= b);
        let mut touched = Vec::new();
        for s in self.slots.iter().flatten() {
            if crosses(s.policy.expires_at) || s.policy.rules.iter().any(|r| crosses(r.expires_at))
            {
                touched.push((s.policy.id.clone(), s.subjects.clone()));
            }
        }
        for (id, subjects) in touched {
            self.changes.policies.insert(id);
            self.changes.identities.extend(subjects);
        }
        self.now = now;
    }

    /// Returns and clears what changed since the last call.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    // ------------------------------------------------------------ inventory updates

    pub fn set_namespace(&mut self, ns: Namespace) {
        let name = ns.name.clone();
        if self.inv.namespaces.get(&name) == Some(&ns) {
            return;
        }
        self.inv.namespaces.insert(name.clone(), ns);
        self.refresh_namespace(&name);
    }

    pub fn remove_namespace(&mut self, name: &str) {
        if self.inv.namespaces.remove(name).is_some() {
            self.ns_recs.remove(name);
            self.refresh_namespace(name);
        }
    }

    /// Namespace labels are part of every identity in the namespace: re-derive them all.
    fn refresh_namespace(&mut self, name: &str) {
        let keys: Vec<WorkloadKey> = self
            .inv
            .workloads
            .keys()
            .filter(|k| k.namespace == name)
            .cloned()
            .collect();
        for k in keys {
            self.unindex_workload(&k);
            self.refresh_identity(&k);
            self.index_workload(&k);
            self.changes.workloads.insert(k);
        }
    }

    pub fn set_node(&mut self, node: Node) {
        if let Some(old) = self.inv.nodes.get(&node.name) {
            if *old == node {
                return;
            }
            for ip in old.ips.clone() {
                self.ip_index.remove(&ip);
            }
        }
        for ip in &node.ips {
            self.ip_index.insert(*ip, EpRef::Node(node.name.clone()));
        }
        self.changes.nodes.insert(node.name.clone());
        self.inv.nodes.insert(node.name.clone(), node);
    }

    pub fn remove_node(&mut self, name: &str) {
        if let Some(old) = self.inv.nodes.remove(name) {
            for ip in old.ips {
                self.ip_index.remove(&ip);
            }
            self.changes.nodes.insert(name.to_string());
        }
    }

    /// Adds or replaces a workload (a relabel, a new IP, a move): only its identity is re-matched.
    /// Takes a shared workload as it is (the agent's model and the engine hold one copy).
    pub fn set_workload(&mut self, w: impl Into<Arc<Workload>>) {
        let w: Arc<Workload> = w.into();
        let key = w.key();
        if self.inv.workloads.get(&key) == Some(&w) {
            return;
        }
        self.unindex_workload(&key);
        self.inv.workloads.insert(key.clone(), w);
        self.refresh_identity(&key);
        self.index_workload(&key);
        self.changes.workloads.insert(key);
    }

    pub fn remove_workload(&mut self, key: &WorkloadKey) {
        if self.inv.workloads.contains_key(key) {
            self.unindex_workload(key);
            self.inv.workloads.remove(key);
            self.refresh_identity(key);
            self.changes.workloads.insert(key.clone());
        }
    }

    /// Drops the address entries a workload owns (not those another workload or a node took).
    fn unindex_workload(&mut self, key: &WorkloadKey) {
        let Some(old) = self.inv.workloads.get(key) else {
            return;
        };
        for ip in &old.ips {
            let owned = match self.ip_index.get(ip) {
                Some(r @ EpRef::Workload(_)) => r.is_workload(&key.namespace, &key.name),
                // A hostNetwork pod's address that no declared node owns.
                Some(EpRef::Node(n)) => {
                    old.host_network
                        && old.node.as_deref().unwrap_or_default() == n
                        && !self
                            .inv
                            .nodes
                            .get(n)
                            .is_some_and(|node| node.ips.contains(ip))
                }
                None => false,
            };
            if owned {
                self.ip_index.remove(ip);
            }
        }
    }

    fn index_workload(&mut self, key: &WorkloadKey) {
        let Some(w) = self.inv.workloads.get(key) else {
            return;
        };
        if w.host_network {
            for ip in &w.ips {
                // A node's own address stays the node's.
                if !self.ip_index.contains_key(ip) {
                    self.ip_index
                        .insert(*ip, EpRef::Node(w.node.clone().unwrap_or_default()));
                }
            }
            return;
        }
        let nsl = self.inv.namespace_labels(&w.namespace);
        let ns = NsRec::shared(&mut self.ns_recs, &w.namespace, nsl);
        let labels = self.label_pool.share(&w.labels);
        let rec = WlRec {
            workload: w.clone(),
            identity: self.wl_identity.get(key).copied(),
            ns,
            labels,
        };
        for ip in &w.ips {
            self.ip_index.insert(*ip, EpRef::Workload(rec.clone()));
        }
    }

    /// Re-derives a workload's identity after its labels or namespace labels changed.
    fn refresh_identity(&mut self, key: &WorkloadKey) {
        let new_key = self
            .inv
            .workloads
            .get(key)
            .filter(|w| !w.host_network)
            .map(|w| {
                let nsl = self.inv.namespace_labels(&w.namespace);
                (identity_key(&w.namespace, &nsl, &w.labels), nsl)
            });
        // The identity's key text lives once, in the allocator (not per workload).
        let old = self.wl_identity.get(key).copied();
        let old_key = old.and_then(|id| self.ids.key_of(id));
        if old_key == new_key.as_ref().map(|n| n.0.as_str()) {
            return;
        }
        if let (Some(old_id), Some(old_key)) = (old, old_key.map(str::to_string)) {
            self.leave_identity(key, old_id, &old_key);
        }
        if let Some((k, nsl)) = new_key {
            self.join_identity(key, k, nsl);
        }
    }

    /// Takes a workload out of its identity; the last member out retires the identity.
    fn leave_identity(&mut self, key: &WorkloadKey, id: u32, id_key: &str) {
        self.wl_identity.remove(key);
        if let Some(m) = self.members.get_mut(&id) {
            m.remove(key);
        }
        if !self.ids.release(id_key) {
            return;
        }
        self.members.remove(&id);
        if let Some(info) = self.identities.remove(&id) {
            if let Some(ids) = self.ns_identities.get_mut(&info.namespace) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.ns_identities.remove(&info.namespace);
                }
            }
        }
        if let Some(app) = self.applicable.remove(&id) {
            for slot in app.lists.iter().flatten() {
                if let Some(s) = self.slots[*slot].as_mut() {
                    s.subjects.remove(&id);
                }
            }
        }
        self.changes.identities.insert(id);
    }

    /// Puts a workload into the identity of `id_key`; a new identity is matched against every
    /// policy (O(policies)).
    fn join_identity(&mut self, key: &WorkloadKey, id_key: String, ns_labels: Labels) {
        let (id, created) = self.ids.acquire(&id_key);
        self.wl_identity.insert(key.clone(), id);
        self.members.entry(id).or_default().insert(key.clone());
        if !created {
            return;
        }
        let w = &self.inv.workloads[key];
        let info = IdentityInfo {
            id,
            namespace: w.namespace.clone(),
            namespace_labels: ns_labels,
            labels: Labels::clone(&w.labels),
        };
        let app = self.applicable_to_new(&info);
        self.applicable.insert(id, app);
        self.ns_identities
            .entry(info.namespace.clone())
            .or_default()
            .insert(id);
        self.identities.insert(id, info);
        self.changes.identities.insert(id);
    }

    /// The policies selecting a new identity, in evaluation order; records it as their subject.
    fn applicable_to_new(&mut self, info: &IdentityInfo) -> Applicable {
        let mut lists: [Vec<usize>; 2] = [Vec::new(), Vec::new()];
        for (i, s) in self.slots.iter_mut().enumerate() {
            let Some(s) = s else { continue };
            if subject_matches(&s.policy.subject, info) {
                s.subjects.insert(info.id);
                for d in Direction::BOTH {
                    if policy_has_direction(&s.policy, d) {
                        lists[d.index()].push(i);
                    }
                }
            }
        }
        for list in lists.iter_mut() {
            let slots = &self.slots;
            list.sort_by(|a, b| {
                let pa = &slots[*a].as_ref().expect("live").policy;
                let pb = &slots[*b].as_ref().expect("live").policy;
                pa.order_key().cmp(&pb.order_key())
            });
        }
        let mut a = Applicable {
            lists,
            audit: [false; 2],
        };
        self.refresh_audit(&mut a);
        a
    }

    fn refresh_audit(&self, a: &mut Applicable) {
        for d in 0..2 {
            a.audit[d] = a.lists[d].iter().any(|s| {
                self.slots[*s]
                    .as_ref()
                    .is_some_and(|s| s.policy.mode == Mode::Audit)
            });
        }
    }

    // ------------------------------------------------------------ policy updates

    /// Adds or replaces a policy, shared as it is (the agent's model holds the same copy): it is
    /// matched against every identity, or, when its subject names a namespace, against its own.
    pub fn set_policy(&mut self, p: impl Into<Arc<Policy>>) {
        let p: Arc<Policy> = p.into();
        if self.holds(&p) {
            return;
        }
        let id = p.id.clone();
        // The old version's rule ids stay registered until the new one has taken what it keeps.
        let old = self.unindex_policy(&id);
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let (rule_ids, isolation_rule) = self.register_rules(&p, old.as_ref());
        let subjects = self.subjects_of(&p.subject);
        let dirs: Vec<Direction> = Direction::BOTH
            .into_iter()
            .filter(|d| policy_has_direction(&p, *d))
            .collect();
        self.slots[slot] = Some(PolicySlot {
            policy: p,
            rule_ids,
            isolation_rule,
            subjects: subjects.clone(),
        });
        for iid in &subjects {
            self.insert_applicable(*iid, slot, &dirs);
        }
        self.by_id.insert(id.clone(), slot);
        self.changes.policies.insert(id);
    }

    /// Allocates the ids of a policy's rules and of its per-direction isolation defaults. A rule's
    /// id is keyed by (policy, direction, index), so a new version of `old` keeps the ids of the
    /// positions it still has and only registers and releases the difference: re-registering
    /// every rule (formatting and hashing its key twice) was most of a one-rule change among
    /// 100,000 rules.
    fn register_rules(&mut self, p: &Policy, old: Option<&PolicySlot>) -> (Vec<u32>, [u32; 2]) {
        let mut kept: crate::fxhash::FxHashMap<(Direction, usize), u32> = old
            .map(|s| {
                s.policy
                    .rules
                    .iter()
                    .zip(&s.rule_ids)
                    .map(|(r, id)| ((r.direction, r.index), *id))
                    .collect()
            })
            .unwrap_or_default();
        // Positions named twice (never from the loaders): release and register all, as before.
        let old = match old {
            Some(s) if kept.len() != s.rule_ids.len() => {
                self.release_rules(s);
                kept.clear();
                None
            }
            o => o,
        };
        let info = |id, direction, index, name, action| RuleInfo {
            id,
            policy: p.id.clone(),
            direction,
            index,
            name,
            action,
            tier: p.tier,
            mode: p.mode,
        };
        let mut rule_ids = Vec::with_capacity(p.rules.len());
        for r in &p.rules {
            let rid = match kept.remove(&(r.direction, r.index)) {
                Some(rid) => rid,
                None => {
                    self.rule_ids
                        .acquire(&rule_key(&p.id, r.direction, r.index))
                        .0
                }
            };
            let same = self.rules.get(&rid).is_some_and(|ri| {
                (ri.name.as_ref(), ri.action, ri.tier, ri.mode)
                    == (r.name.as_ref(), r.action, p.tier, p.mode)
            });
            if !same {
                let ri = info(rid, r.direction, Some(r.index), r.name.clone(), r.action);
                self.rules.insert(rid, ri);
            }
            rule_ids.push(rid);
        }
        // Positions the new version no longer has.
        if let Some(s) = old {
            for r in &s.policy.rules {
                if let Some(rid) = kept.remove(&(r.direction, r.index)) {
                    self.rules.remove(&rid);
                    self.rule_ids
                        .release(&rule_key(&s.policy.id, r.direction, r.index));
                }
            }
        }
        let mut isolation_rule = [0u32; 2];
        for d in Direction::BOTH {
            let rid = match old {
                Some(s) => s.isolation_rule[d.index()],
                None => self.rule_ids.acquire(&isolation_key(&p.id, d)).0,
            };
            self.rules
                .insert(rid, info(rid, d, None, None, Action::Deny));
            isolation_rule[d.index()] = rid;
        }
        (rule_ids, isolation_rule)
    }

    /// Releases every rule id of a policy that is gone.
    fn release_rules(&mut self, s: &PolicySlot) {
        let keys = s
            .policy
            .rules
            .iter()
            .map(|r| rule_key(&s.policy.id, r.direction, r.index))
            .chain(Direction::BOTH.map(|d| isolation_key(&s.policy.id, d)));
        for key in keys {
            if let Some(rid) = self.rule_ids.get(&key) {
                self.rules.remove(&rid);
            }
            self.rule_ids.release(&key);
        }
    }

    /// The identities a subject selects: a named namespace's only, else every identity.
    fn subjects_of(&self, subject: &Subject) -> BTreeSet<u32> {
        let candidates: Vec<u32> = match &subject.namespaces {
            NamespaceMatch::Named(ns) => self
                .ns_identities
                .get(ns)
                .map(|ids| ids.iter().copied().collect())
                .unwrap_or_default(),
            NamespaceMatch::Selector(_) => self.identities.keys().copied().collect(),
        };
        candidates
            .into_iter()
            .filter(|iid| subject_matches(subject, &self.identities[iid]))
            .collect()
    }

    /// Inserts a policy slot into an identity's applicable lists at its evaluation position.
    fn insert_applicable(&mut self, iid: u32, slot: usize, dirs: &[Direction]) {
        let mut app = self.applicable.remove(&iid).unwrap_or_default();
        let slots = &self.slots;
        let key = slots[slot].as_ref().expect("live").policy.order_key();
        for d in dirs {
            let list = &mut app.lists[d.index()];
            let pos = list
                .binary_search_by(|o| {
                    let po = &slots[*o].as_ref().expect("live").policy;
                    po.order_key().cmp(&key)
                })
                .unwrap_or_else(|e| e);
            list.insert(pos, slot);
        }
        self.refresh_audit(&mut app);
        self.applicable.insert(iid, app);
        self.changes.identities.insert(iid);
    }

    pub fn remove_policy(&mut self, id: &PolicyId) -> Option<Arc<Policy>> {
        let s = self.unindex_policy(id)?;
        self.release_rules(&s);
        Some(s.policy)
    }

    /// Takes a policy out of the slots and every identity's applicable lists; its rule ids
    /// stay registered (the caller releases them or hands them to the policy's next version).
    fn unindex_policy(&mut self, id: &PolicyId) -> Option<PolicySlot> {
        let slot = self.by_id.remove(id)?;
        let s = self.slots[slot].take().expect("indexed slot is live");
        for iid in &s.subjects {
            if let Some(mut app) = self.applicable.remove(iid) {
                for list in app.lists.iter_mut() {
                    list.retain(|x| *x != slot);
                }
                self.refresh_audit(&mut app);
                self.applicable.insert(*iid, app);
            }
            self.changes.identities.insert(*iid);
        }
        self.free.push(slot);
        self.changes.policies.insert(id.clone());
        Some(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::LabelSelector;

    fn pod(ns: &str, name: &str, app: &str, ip: &str) -> Workload {
        Workload {
            namespace: ns.into(),
            name: name.into(),
            labels: [("app".to_string(), app.to_string())].into(),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            node: Some("n1".into()),
            host_network: false,
            owner: None,
        }
    }

    fn np(ns: &str, name: &str, app: &str) -> Policy {
        Policy {
            id: PolicyId::new(Family::NetworkPolicy, Some(ns), name),
            tier: Tier::Application,
            priority: 0,
            mode: Mode::Enforce,
            expires_at: None,
            subject: Subject {
                namespaces: NamespaceMatch::Named(ns.into()),
                pods: LabelSelector::from_labels([("app", app)]),
            },
            isolates: [true, false],
            rules: vec![],
        }
    }

    /// A new version of a policy keeps the rule ids of the positions it still has, drops the
    /// others, updates what changed, and ends exactly where a fresh engine starts; removing it
    /// leaves no rule registered.
    #[test]
    fn a_replaced_policy_keeps_the_ids_of_its_remaining_rules() {
        let rule = |index: usize, action: Action| Rule {
            direction: Direction::Ingress,
            index,
            name: None,
            action,
            peers: vec![Peer::Cidr {
                cidr: format!("10.9.{index}.0/24").parse().unwrap(),
                except: vec![],
            }],
            ports: vec![],
            expires_at: None,
        };
        let mut v1 = np("a", "p", "web");
        v1.rules = (0..3).map(|i| rule(i, Action::Allow)).collect();
        let mut v2 = v1.clone();
        v2.rules.truncate(2);
        v2.rules[1].action = Action::Deny;
        v2.rules[1].name = Some("renamed".into());
        let mut e = Engine::new();
        e.set_workload(pod("a", "w1", "web", "10.0.0.1"));
        e.set_policy(v1.clone());
        let before = e.policy_rule_ids(&v1.id).to_vec();
        e.set_policy(v2.clone());
        let after = e.policy_rule_ids(&v2.id).to_vec();
        assert_eq!(after, before[..2], "the positions kept keep their ids");
        assert!(e.rule(before[2]).is_none(), "the dropped rule is gone");
        let r1 = e.rule(after[1]).unwrap();
        assert_eq!(
            (r1.action, r1.name.as_deref()),
            (Action::Deny, Some("renamed"))
        );
        let fresh = Engine::build(e.inventory().clone(), [v2.clone()], 0);
        assert_eq!(fresh.policy_rule_ids(&v2.id), after.as_slice());
        let all = |e: &Engine| {
            let mut v: Vec<String> = e.rules.values().map(|r| format!("{r:?}")).collect();
            v.sort();
            v
        };
        assert_eq!(all(&e), all(&fresh));
        assert_eq!(e.rule_ids.len(), fresh.rule_ids.len());
        e.set_policy(v1.clone());
        assert_eq!(
            e.policy_rule_ids(&v1.id),
            before.as_slice(),
            "the third comes back"
        );
        e.remove_policy(&v1.id);
        assert!(
            e.rules.is_empty() && e.rule_ids.is_empty(),
            "nothing left registered"
        );
    }

    #[test]
    fn replicas_share_an_identity_until_relabelled() {
        let mut e = Engine::new();
        e.set_workload(pod("a", "w1", "web", "10.0.0.1"));
        e.set_workload(pod("a", "w2", "web", "10.0.0.2"));
        let id = e.workload_identity(&WorkloadKey::new("a", "w1")).unwrap();
        assert_eq!(e.workload_identity(&WorkloadKey::new("a", "w2")), Some(id));
        assert_eq!(e.identity_members(id).count(), 2);
        let c = e.take_changes();
        assert_eq!(c.workloads.len(), 2);
        assert_eq!(c.identities, [id].into());
        e.set_workload(pod("a", "w2", "db", "10.0.0.2"));
        let c = e.take_changes();
        assert_eq!(c.workloads, [WorkloadKey::new("a", "w2")].into());
        assert_eq!(c.identities.len(), 1, "only the new identity appeared");
        e.remove_workload(&WorkloadKey::new("a", "w1"));
        assert!(e.identity(id).is_none(), "the last member out retires it");
        assert!(e.take_changes().identities.contains(&id));
    }

    #[test]
    fn namespaced_policies_select_their_namespace_only_and_in_order() {
        let mut e = Engine::new();
        e.set_workload(pod("a", "w", "web", "10.0.0.1"));
        e.set_workload(pod("b", "w", "web", "10.0.0.2"));
        e.take_changes();
        e.set_policy(np("a", "z", "web"));
        e.set_policy(np("a", "m", "web"));
        let ida = e.workload_identity(&WorkloadKey::new("a", "w")).unwrap();
        let idb = e.workload_identity(&WorkloadKey::new("b", "w")).unwrap();
        let names: Vec<&str> = e
            .applicable(ida, Direction::Ingress)
            .map(|p| p.id.name.as_str())
            .collect();
        assert_eq!(names, ["m", "z"]);
        assert_eq!(e.applicable(idb, Direction::Ingress).count(), 0);
        // Egress is not isolated: the policies take no part there.
        assert_eq!(e.applicable(ida, Direction::Egress).count(), 0);
        let c = e.take_changes();
        assert_eq!(c.policies.len(), 2);
        assert_eq!(c.identities, [ida].into());
        let id = PolicyId::new(Family::NetworkPolicy, Some("a"), "z");
        assert!(e.remove_policy(&id).is_some());
        assert_eq!(e.applicable(ida, Direction::Ingress).count(), 1);
        assert!(e.remove_policy(&id).is_none());
    }

    #[test]
    fn namespace_labels_move_every_identity_in_the_namespace() {
        let mut e = Engine::new();
        e.set_workload(pod("a", "w", "web", "10.0.0.1"));
        let before = e.workload_identity(&WorkloadKey::new("a", "w")).unwrap();
        e.take_changes();
        e.set_namespace(Namespace::new(
            "a",
            [("env".to_string(), "prod".to_string())].into(),
        ));
        let after = e.workload_identity(&WorkloadKey::new("a", "w")).unwrap();
        assert_ne!(before, after);
        let c = e.take_changes();
        assert!(c.workloads.contains(&WorkloadKey::new("a", "w")));
        assert!(c.identities.contains(&before) && c.identities.contains(&after));
    }

    #[test]
    fn the_clock_reports_policies_crossing_their_expiry() {
        let mut e = Engine::new();
        e.set_workload(pod("a", "w", "web", "10.0.0.1"));
        let mut p = np("a", "tmp", "web");
        p.expires_at = Some(100);
        e.set_policy(p);
        e.take_changes();
        assert_eq!(e.next_expiry(), Some(100));
        e.set_now(50);
        assert!(e.take_changes().is_empty());
        e.set_now(100);
        assert_eq!(e.take_changes().policies.len(), 1);
        assert_eq!(e.next_expiry(), None);
    }

    #[test]
    fn host_network_pods_are_their_node() {
        let mut e = Engine::new();
        let mut h = pod("a", "agent", "agent", "10.250.0.1");
        h.host_network = true;
        e.set_workload(h);
        assert_eq!(e.workload_identity(&WorkloadKey::new("a", "agent")), None);
        assert_eq!(
            e.describe_ip("10.250.0.1".parse().unwrap()),
            "node n1 (10.250.0.1)"
        );
        e.remove_workload(&WorkloadKey::new("a", "agent"));
        assert_eq!(
            e.describe_ip("10.250.0.1".parse().unwrap()),
            "10.250.0.1 (outside the inventory)"
        );
    }
}

//! The narrow API the compiler builds per-node tables with: the rules that apply to an identity,
//! a rule id's definition, one direction's decision for a constructed view, and views of
//! workloads and nodes. Everything the compiler reads of the engine goes through this module or
//! the public lookups, so the index can change shape without touching the compiler.

use super::view::{Addr, EndpointView};
use super::{DirQuery, DirVerdict, Engine};
use crate::model::{Direction, Mode, PolicyId, Rule, Tier, WorkloadKey};
use std::net::IpAddr;

/// A rule of a policy that applies to an identity, with its id. `rule: None` is the policy's
/// implicit isolation default ("selected, and no rule allows": application tier).
#[derive(Debug, Clone, Copy)]
pub struct AppliedRule<'e> {
    pub id: u32,
    pub rule: Option<&'e Rule>,
}

/// A policy that applies to an identity in one direction, as the compiler's rule walk needs it:
/// the tier semantics, whether it counts in the enforced and in the audit walk, and its live
/// rules (expired ones left out) with their ids, in order.
#[derive(Debug, Clone)]
pub struct AppliedPolicy<'e> {
    pub tier: Tier,
    /// Application tier: whether the policy isolates this direction (only then its rules count).
    pub isolates: bool,
    /// Whether it takes part in the enforced walk (active and in enforce mode).
    pub enforced: bool,
    /// Whether it takes part in the audit walk (active).
    pub active: bool,
    pub isolation_rule: u32,
    pub rules: Vec<(u32, &'e Rule)>,
}

impl Engine {
    /// The policies that apply to identity `lid` in `dir`, in evaluation order, with exactly the
    /// liveness [`Engine::evaluate`] gives them now.
    pub fn applied_policies(&self, lid: u32, dir: Direction) -> Vec<AppliedPolicy<'_>> {
        let now = self.now;
        self.applicable_slots(lid, dir)
            .map(|s| {
                let p = &s.policy;
                let active = p.is_active(now);
                AppliedPolicy {
                    tier: p.tier,
                    isolates: p.isolates[dir.index()],
                    enforced: active && p.mode == Mode::Enforce,
                    active,
                    isolation_rule: s.isolation_rule[dir.index()],
                    rules: s
                        .dir_rules(dir)
                        .filter(|(r, _)| r.expires_at.is_none_or(|t| now < t))
                        .map(|(r, id)| (*id, r))
                        .collect(),
                }
            })
            .collect()
    }

    /// One direction's verdict for a query the caller built (a compiler's representative peer and
    /// port range): the same walk as [`Engine::evaluate`], without a trace.
    pub fn decide_direction(&self, q: &DirQuery) -> DirVerdict {
        self.eval_dir(q, None)
    }

    /// Every rule (and isolation default) of the policies that apply to identity `lid` in `dir`,
    /// policy by policy in evaluation order.
    pub fn applied_rules(
        &self,
        lid: u32,
        dir: Direction,
    ) -> impl Iterator<Item = AppliedRule<'_>> + '_ {
        self.applicable_slots(lid, dir).flat_map(move |s| {
            let isolation = AppliedRule {
                id: s.isolation_rule[dir.index()],
                rule: None,
            };
            std::iter::once(isolation).chain(s.dir_rules(dir).map(|(r, id)| AppliedRule {
                id: *id,
                rule: Some(r),
            }))
        })
    }

    /// The ids of a policy's rules (not its isolation defaults), parallel to `policy.rules`.
    pub fn policy_rule_ids(&self, id: &PolicyId) -> &[u32] {
        self.slot(id).map(|s| s.rule_ids.as_slice()).unwrap_or(&[])
    }

    /// The rule a rule id stands for; `None` for isolation defaults and unknown ids.
    pub fn rule_definition(&self, rid: u32) -> Option<&Rule> {
        let info = self.rules.get(&rid)?;
        let s = self.slot(&info.policy)?;
        let pos = s.rule_ids.iter().position(|x| *x == rid)?;
        Some(&s.policy.rules[pos])
    }

    /// A managed workload as policy sees it at `addr`, with its label identity. `ip`, an address
    /// of the workload, finds it with one hash lookup while the address is still its own; the
    /// inventory is searched otherwise.
    pub fn workload_view(
        &self,
        key: &WorkloadKey,
        ip: Option<IpAddr>,
        addr: Addr,
    ) -> Option<(EndpointView<'_>, u32)> {
        let indexed = ip
            .and_then(|ip| self.workload_at(ip))
            .filter(|r| r.workload.namespace == key.namespace && r.workload.name == key.name);
        if let Some(r) = indexed {
            return Some((r.view(addr), r.identity?));
        }
        let w = self.inventory().workloads.get(key)?;
        let lid = self.workload_identity(key)?;
        let info = self.identity(lid)?;
        Some((EndpointView::workload(w, &info.namespace_labels, addr), lid))
    }

    /// A node as policy sees it at `addr`.
    pub fn node_view(&self, name: &str, addr: Addr) -> Option<EndpointView<'_>> {
        let n = self.inventory().nodes.get(name)?;
        Some(EndpointView::node(&n.name, &n.labels, addr))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{into_model, parse_file};

    #[test]
    fn applied_rules_list_each_policy_with_its_isolation_default() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: a, labels: {app: db}}\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: a}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 5432}]}, {ports: [{port: 80}]}]\n";
        let objects = parse_file("t.yaml", yaml).unwrap().objects;
        let (inv, policies) = into_model(objects.into_iter().map(|o| o.object));
        let id = policies[0].id.clone();
        let e = Engine::build(inv, policies, 0);
        let key = WorkloadKey::new("a", "db");
        let lid = e.workload_identity(&key).unwrap();
        let applied: Vec<AppliedRule> = e.applied_rules(lid, Direction::Ingress).collect();
        assert_eq!(applied.len(), 3);
        assert!(applied[0].rule.is_none());
        assert_eq!(
            &applied[1..].iter().map(|a| a.id).collect::<Vec<_>>(),
            e.policy_rule_ids(&id)
        );
        assert_eq!(e.rule_definition(applied[2].id).unwrap().index, 1);
        assert!(e.rule_definition(applied[0].id).is_none());
        assert_eq!(e.applied_rules(lid, Direction::Egress).count(), 0);
        // Through the address index, or through the inventory when the address is not its own.
        let ip = "10.0.0.2".parse().unwrap();
        for hint in [Some(ip), Some("10.9.9.9".parse().unwrap()), None] {
            let (view, id) = e.workload_view(&key, hint, Addr::Outside).unwrap();
            assert_eq!(id, lid);
            assert!(view.is_workload());
        }
        assert!(e.node_view("n1", Addr::Outside).is_none());
    }
}

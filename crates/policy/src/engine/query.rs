//! The narrow API the compiler builds per-node tables with: the rules that apply to an identity,
//! a rule id's definition, one direction's decision for a constructed view, and views of
//! workloads and nodes. Everything the compiler reads of the engine goes through this module or
//! the public lookups, so the index can change shape without touching the compiler.

use super::view::{Addr, EndpointView};
use super::{DirQuery, DirVerdict, Engine};
use crate::model::{Direction, PolicyId, Rule, WorkloadKey};
use std::net::IpAddr;

/// A rule of a policy that applies to an identity, with its id. `rule: None` is the policy's
/// implicit isolation default ("selected, and no rule allows": application tier).
#[derive(Debug, Clone, Copy)]
pub struct AppliedRule<'e> {
    pub id: u32,
    pub rule: Option<&'e Rule>,
}

impl Engine {
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
            return Some((
                EndpointView::workload(&r.workload, &r.ns_labels, addr),
                r.identity?,
            ));
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

//! Reading the engine's indexes: the model it holds, rule ids, identities, the policies that
//! apply to an identity, and what an address belongs to.

use super::view::{Addr, EndpointView, EpRef, WlRec};
use super::{Engine, IdentityInfo, PolicySlot, RuleInfo};
use crate::labels::Labels;
use crate::model::{Direction, Inventory, Policy, PolicyId, WorkloadKey};
use std::net::IpAddr;

impl Engine {
    pub fn inventory(&self) -> &Inventory {
        &self.inv
    }

    pub fn now(&self) -> i64 {
        self.now
    }

    /// The earliest expiry after now of any policy or rule (when to call `set_now` next).
    pub fn next_expiry(&self) -> Option<i64> {
        self.slots
            .iter()
            .flatten()
            .flat_map(|s| {
                std::iter::once(s.policy.expires_at)
                    .chain(s.policy.rules.iter().map(|r| r.expires_at))
            })
            .flatten()
            .filter(|t| *t > self.now)
            .min()
    }

    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.slots.iter().flatten().map(|s| &*s.policy)
    }

    pub fn policy(&self, id: &PolicyId) -> Option<&Policy> {
        self.slot(id).map(|s| &*s.policy)
    }

    /// Whether this policy, or an equal one, is already in force (the same shared copy answers
    /// without comparing its rules).
    pub(super) fn holds(&self, p: &std::sync::Arc<Policy>) -> bool {
        self.slot(&p.id)
            .is_some_and(|s| std::sync::Arc::ptr_eq(&s.policy, p) || *s.policy == **p)
    }

    pub(super) fn slot(&self, id: &PolicyId) -> Option<&PolicySlot> {
        self.by_id.get(id).and_then(|i| self.slots[*i].as_ref())
    }

    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(&id)
    }

    pub fn identity(&self, id: u32) -> Option<&IdentityInfo> {
        self.identities.get(&id)
    }

    pub fn identities(&self) -> impl Iterator<Item = &IdentityInfo> {
        self.identities.values()
    }

    /// The label identity of a managed (non-hostNetwork) workload.
    pub fn workload_identity(&self, key: &WorkloadKey) -> Option<u32> {
        self.wl_identity.get(key).copied()
    }

    pub fn identity_members(&self, id: u32) -> impl Iterator<Item = &WorkloadKey> {
        self.members.get(&id).into_iter().flatten()
    }

    /// Policies (in evaluation order) that select this identity in this direction.
    pub fn applicable(&self, id: u32, dir: Direction) -> impl Iterator<Item = &Policy> {
        self.applicable_slots(id, dir).map(|s| &*s.policy)
    }

    pub(super) fn applicable_slots(
        &self,
        id: u32,
        dir: Direction,
    ) -> impl Iterator<Item = &PolicySlot> {
        self.applicable
            .get(&id)
            .map(|a| a.lists[dir.index()].as_slice())
            .unwrap_or(&[])
            .iter()
            .filter_map(|i| self.slots[*i].as_ref())
    }

    /// Whether an audit-mode policy applies to this identity in this direction.
    pub fn has_audit(&self, id: Option<u32>, dir: Direction) -> bool {
        id.and_then(|i| self.applicable.get(&i))
            .is_some_and(|a| a.audit[dir.index()])
    }

    /// The indexed record of the workload at an address (one hash lookup).
    pub(super) fn workload_at(&self, ip: IpAddr) -> Option<&WlRec> {
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => Some(r),
            _ => None,
        }
    }

    /// Resolves an address to what the inventory knows of it, with its label identity.
    pub(super) fn view_of_ip(&self, ip: IpAddr) -> (EndpointView<'_>, Option<u32>) {
        static EMPTY: std::sync::OnceLock<Labels> = std::sync::OnceLock::new();
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => (r.view(Addr::Ip(ip)), r.identity),
            Some(EpRef::Node(n)) => {
                let labels = self
                    .inv
                    .nodes
                    .get(n)
                    .map(|x| &x.labels)
                    .unwrap_or_else(|| EMPTY.get_or_init(Labels::new));
                (EndpointView::node(n, labels, Addr::Ip(ip)), None)
            }
            None => (EndpointView::named(Addr::Ip(ip), self.names_of(ip)), None),
        }
    }

    /// `ns/pod (ip)`, `node NAME (ip)` or the bare address.
    pub fn describe_ip(&self, ip: IpAddr) -> String {
        match self.ip_index.get(&ip) {
            Some(EpRef::Workload(r)) => format!("{} ({ip})", r.workload.key()),
            Some(EpRef::Node(n)) => format!("node {n} ({ip})"),
            None => format!("{ip} (outside the inventory)"),
        }
    }
}

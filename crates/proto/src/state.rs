//! The model as it crosses the wire: a [`StateDoc`] (the whole model, sorted lists) and a
//! [`StateDelta`] between two of them, diffed and applied in one merge pass.

use cellwall_policy::{Inventory, Namespace, Node, Policy, PolicyId, Workload, WorkloadKey};
use std::cmp::Ordering;
use std::sync::Arc;

/// The payload of a snapshot: the model in lists (JSON map keys must be strings, and the
/// inventory's are structs). Every list is sorted by its key and holds each key once, so two
/// documents diff in one merge pass.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StateDoc {
    pub namespaces: Vec<Namespace>,
    /// Shared, so consecutive revisions share the workloads that did not change: copying and
    /// diffing 100,000 of them is a pointer each.
    pub workloads: Vec<Arc<Workload>>,
    pub nodes: Vec<Node>,
    /// Shared for the same reason, and so an agent's model and its engine hold each policy once.
    pub policies: Vec<Arc<Policy>>,
}

impl StateDoc {
    pub fn new(inv: &Inventory, policies: &[Policy]) -> Self {
        Self {
            namespaces: inv.namespaces.values().cloned().collect(),
            workloads: inv.workloads.values().cloned().collect(),
            nodes: inv.nodes.values().cloned().collect(),
            policies: {
                let mut p: Vec<Arc<Policy>> = policies.iter().cloned().map(Arc::new).collect();
                p.sort_by(|a, b| a.id.cmp(&b.id));
                p
            },
        }
    }

    /// Like [`StateDoc::new`], taking the parts (no copy of 100,000 workloads).
    pub fn from_parts(inv: Inventory, policies: Vec<Policy>) -> Self {
        let mut policies: Vec<Arc<Policy>> = policies.into_iter().map(Arc::new).collect();
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            namespaces: inv.namespaces.into_values().collect(),
            workloads: inv.workloads.into_values().collect(),
            nodes: inv.nodes.into_values().collect(),
            policies,
        }
    }

    pub fn inventory(&self) -> Inventory {
        Inventory {
            namespaces: self
                .namespaces
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
            workloads: self
                .workloads
                .iter()
                // Shared with this model: an agent holds each workload once.
                .map(|w| (w.key(), w.clone()))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
        }
    }

    /// Applies `d` in place (the lists stay sorted by key): each list's updates in order (of
    /// two for one key the last wins), then its removals (a key both updated and removed is
    /// gone), whatever the delta's size.
    pub fn apply(&mut self, d: StateDelta) {
        apply_list(&mut self.namespaces, d.namespaces, &d.removed_namespaces);
        apply_list(&mut self.workloads, d.workloads, &d.removed_workloads);
        apply_list(&mut self.nodes, d.nodes, &d.removed_nodes);
        apply_list(&mut self.policies, d.policies, &d.removed_policies);
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the policy model always serializes")
    }

    /// Reads a document, putting its lists in key order (diffs and deltas rely on it; a
    /// document from elsewhere may not be).
    pub fn from_json(b: &[u8]) -> Result<Self, serde_json::Error> {
        // Equal label sets decoded into one map (pods of one controller carry the same labels):
        // at 100,000 pods one map each was the largest part of an agent's model.
        let mut d: Self = cellwall_policy::labels::interning(|| serde_json::from_slice::<Self>(b))?;
        d.normalize();
        Ok(d)
    }

    /// Sorts every list by key (nearly free when already sorted) and keeps the last of any
    /// duplicate key.
    pub fn normalize(&mut self) {
        fn norm<T: Keyed>(v: &mut Vec<T>) {
            v.sort_by(|a, b| a.cmp_item(b));
            // dedup_by keeps the first of a run; reverse so the last one written wins.
            v.reverse();
            v.dedup_by(|a, b| a.cmp_item(b) == Ordering::Equal);
            v.reverse();
        }
        norm(&mut self.namespaces);
        norm(&mut self.workloads);
        norm(&mut self.nodes);
        norm(&mut self.policies);
    }
}

/// What changed between two [`StateDoc`]s: objects added or changed (whole), and keys removed.
/// A relabel at 100,000 workloads is one workload here, not the model.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StateDelta {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<Namespace>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<Arc<Workload>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nodes: Vec<Node>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policies: Vec<Arc<Policy>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_workloads: Vec<WorkloadKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed_policies: Vec<PolicyId>,
}

impl StateDelta {
    /// The changes from `old` to `new` (both sorted, as every [`StateDoc`] is).
    pub fn between(old: &StateDoc, new: &StateDoc) -> Self {
        let (namespaces, removed_namespaces) = diff_list(&old.namespaces, &new.namespaces);
        let (workloads, removed_workloads) = diff_list(&old.workloads, &new.workloads);
        let (nodes, removed_nodes) = diff_list(&old.nodes, &new.nodes);
        let (policies, removed_policies) = diff_list(&old.policies, &new.policies);
        Self {
            namespaces,
            workloads,
            nodes,
            policies,
            removed_namespaces,
            removed_workloads,
            removed_nodes,
            removed_policies,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
            && self.workloads.is_empty()
            && self.nodes.is_empty()
            && self.policies.is_empty()
            && self.removed_namespaces.is_empty()
            && self.removed_workloads.is_empty()
            && self.removed_nodes.is_empty()
            && self.removed_policies.is_empty()
    }

    /// Objects added, changed or removed.
    pub fn len(&self) -> usize {
        self.namespaces.len()
            + self.workloads.len()
            + self.nodes.len()
            + self.policies.len()
            + self.removed_namespaces.len()
            + self.removed_workloads.len()
            + self.removed_nodes.len()
            + self.removed_policies.len()
    }
}

/// A model object with a sort key (compared without allocating: diffs walk 100,000 workloads).
pub trait Keyed: Clone + PartialEq {
    type Key: Ord + Clone;
    fn key_of(&self) -> Self::Key;
    fn cmp_item(&self, other: &Self) -> Ordering;
    fn cmp_key(&self, k: &Self::Key) -> Ordering;
    /// Equal content (shared objects answer without looking inside).
    fn same(&self, other: &Self) -> bool {
        self == other
    }
}

impl<T: Keyed> Keyed for Arc<T> {
    type Key = T::Key;
    fn key_of(&self) -> T::Key {
        (**self).key_of()
    }
    fn cmp_item(&self, o: &Self) -> Ordering {
        (**self).cmp_item(o)
    }
    fn cmp_key(&self, k: &T::Key) -> Ordering {
        (**self).cmp_key(k)
    }
    fn same(&self, o: &Self) -> bool {
        Arc::ptr_eq(self, o) || **self == **o
    }
}

/// Namespaces and nodes are keyed by their name.
macro_rules! keyed_by_name {
    ($($t:ty),*) => {$(
        impl Keyed for $t {
            type Key = String;
            fn key_of(&self) -> String {
                self.name.clone()
            }
            fn cmp_item(&self, o: &Self) -> Ordering {
                self.name.cmp(&o.name)
            }
            fn cmp_key(&self, k: &String) -> Ordering {
                self.name.cmp(k)
            }
        }
    )*};
}
keyed_by_name!(Namespace, Node);

impl Keyed for Workload {
    type Key = WorkloadKey;
    fn key_of(&self) -> WorkloadKey {
        self.key()
    }
    // The same order as `WorkloadKey`'s (namespace, then name).
    fn cmp_item(&self, o: &Self) -> Ordering {
        (&self.namespace, &self.name).cmp(&(&o.namespace, &o.name))
    }
    fn cmp_key(&self, k: &WorkloadKey) -> Ordering {
        (&self.namespace, &self.name).cmp(&(&k.namespace, &k.name))
    }
}

impl Keyed for Policy {
    type Key = PolicyId;
    fn key_of(&self) -> PolicyId {
        self.id.clone()
    }
    fn cmp_item(&self, o: &Self) -> Ordering {
        self.id.cmp(&o.id)
    }
    fn cmp_key(&self, k: &PolicyId) -> Ordering {
        self.id.cmp(k)
    }
}

fn diff_list<T: Keyed>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T::Key>) {
    let (mut ups, mut removed) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    loop {
        match (old.get(i), new.get(j)) {
            (Some(o), Some(n)) => match o.cmp_item(n) {
                Ordering::Less => {
                    removed.push(o.key_of());
                    i += 1;
                }
                Ordering::Greater => {
                    ups.push(n.clone());
                    j += 1;
                }
                Ordering::Equal => {
                    if !o.same(n) {
                        ups.push(n.clone());
                    }
                    i += 1;
                    j += 1;
                }
            },
            (Some(o), None) => {
                removed.push(o.key_of());
                i += 1;
            }
            (None, Some(n)) => {
                ups.push(n.clone());
                j += 1;
            }
            (None, None) => break,
        }
    }
    (ups, removed)
}

fn apply_list<T: Keyed>(list: &mut Vec<T>, mut ups: Vec<T>, removed: &[T::Key]) {
    if ups.len() + removed.len() <= 64 {
        // Small deltas (the common case): binary search and edit in place.
        for u in ups {
            match list.binary_search_by(|x| x.cmp_item(&u)) {
                Ok(i) => list[i] = u,
                Err(i) => list.insert(i, u),
            }
        }
        for k in removed {
            if let Ok(i) = list.binary_search_by(|x| x.cmp_key(k)) {
                list.remove(i);
            }
        }
        return;
    }
    // Large ones: one merge pass, so 100,000 inserts never shift the list 100,000 times. The
    // result is the small path's whatever the size: of several updates of a key the last wins
    // (reversed, the stable sort puts it first and dedup keeps it), and a key both updated and
    // removed is removed.
    ups.reverse();
    ups.sort_by(|a, b| a.cmp_item(b));
    ups.dedup_by(|a, b| a.cmp_item(b) == Ordering::Equal);
    let mut rem: Vec<&T::Key> = removed.iter().collect();
    rem.sort();
    let is_removed = |x: &T| rem.binary_search_by(|k| x.cmp_key(k).reverse()).is_ok();
    ups.retain(|u| !is_removed(u));
    let old = std::mem::take(list);
    let mut out = Vec::with_capacity(old.len() + ups.len());
    let mut u = ups.into_iter().peekable();
    for x in old {
        while u.peek().is_some_and(|n| n.cmp_item(&x) == Ordering::Less) {
            out.extend(u.next());
        }
        if u.peek().is_some_and(|n| n.cmp_item(&x) == Ordering::Equal) {
            out.extend(u.next());
            continue;
        }
        if is_removed(&x) {
            continue;
        }
        out.push(x);
    }
    out.extend(u);
    *list = out;
}

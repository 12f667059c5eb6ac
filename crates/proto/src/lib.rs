//! The agent <-> manager gRPC contract (`proto/cellwall.proto` is the same in protobuf's own
//! language). The only crate that knows protobuf: the manager and agent use these types and the
//! generated tonic client/server, nothing else of prost.

/// Asks for a node certificate with a bootstrap token (no client certificate needed).
#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinRequest {
    #[prost(string, tag = "1")]
    pub token: String,
    #[prost(string, tag = "2")]
    pub node: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct JoinReply {
    #[prost(string, tag = "1")]
    pub cert_pem: String,
    #[prost(string, tag = "2")]
    pub key_pem: String,
    #[prost(string, tag = "3")]
    pub ca_pem: String,
}

/// A workload the agent found on its node (lab veth, or the host itself).
#[derive(Clone, PartialEq, prost::Message)]
pub struct LocalWorkload {
    /// `namespace/name`.
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, repeated, tag = "2")]
    pub ips: Vec<String>,
    #[prost(string, tag = "3")]
    pub interface: String,
    /// Host mode: the host itself is the workload; these are its labels (from the agent's
    /// configuration), and the manager adds it to the inventory.
    #[prost(btree_map = "string, string", tag = "4")]
    pub labels: std::collections::BTreeMap<String, String>,
    #[prost(bool, tag = "5")]
    pub host: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct WatchRequest {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(uint64, tag = "2")]
    pub applied_version: u64,
    #[prost(message, repeated, tag = "3")]
    pub workloads: Vec<LocalWorkload>,
    #[prost(string, tag = "4")]
    pub agent_version: String,
}

/// The desired state at `version`: the whole model (a snapshot, `base_version` 0) or the changes
/// that turn `base_version` into `version` (a delta). The agent compiles its node's tables itself.
/// Use [`DesiredState::snapshot`], [`DesiredState::delta`] and [`DesiredState::payload`] rather
/// than the fields.
#[derive(Clone, PartialEq, prost::Message)]
pub struct DesiredState {
    #[prost(uint64, tag = "1")]
    pub version: u64,
    /// A [`StateDoc`] (snapshot) or a [`StateDelta`] (delta), as JSON, deflated if `deflate`.
    /// Shared bytes: the same snapshot goes to 1,000 agents without 1,000 copies.
    #[prost(bytes = "bytes", tag = "2")]
    pub state_json: bytes::Bytes,
    #[prost(int64, tag = "3")]
    pub issued_unix_ms: i64,
    /// Nonzero: `state_json` is a delta from this version; an agent holding another version
    /// must reconnect for a snapshot.
    #[prost(uint64, tag = "4")]
    pub base_version: u64,
    /// `state_json` is raw deflate (RFC 1951) of the JSON.
    #[prost(bool, tag = "5")]
    pub deflate: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AckRequest {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(uint64, tag = "2")]
    pub version: u64,
    #[prost(uint64, tag = "3")]
    pub apply_micros: u64,
    /// Empty when the version was applied.
    #[prost(string, tag = "4")]
    pub error: String,
    /// When the kernel maps held this version (agent clock, Unix µs): measures apply latency.
    #[prost(uint64, tag = "5")]
    pub applied_unix_micros: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AckReply {}

/// One observed connection (or an aggregate of `count` identical ones).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowRecord {
    #[prost(uint64, tag = "1")]
    pub time_unix_ns: u64,
    /// `namespace/name`, or the address when no workload owns it.
    #[prost(string, tag = "2")]
    pub src: String,
    #[prost(string, tag = "3")]
    pub dst: String,
    #[prost(string, tag = "4")]
    pub src_ip: String,
    #[prost(string, tag = "5")]
    pub dst_ip: String,
    #[prost(uint32, tag = "6")]
    pub protocol: u32,
    #[prost(uint32, tag = "7")]
    pub port: u32,
    /// allowed | denied | audit | revoked
    #[prost(string, tag = "8")]
    pub verdict: String,
    /// ingress | egress
    #[prost(string, tag = "9")]
    pub direction: String,
    /// The deciding rule, described; empty when no rule decided (default allow).
    #[prost(string, tag = "10")]
    pub rule: String,
    #[prost(uint64, tag = "11")]
    pub count: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowBatch {
    #[prost(string, tag = "1")]
    pub node: String,
    #[prost(message, repeated, tag = "2")]
    pub records: Vec<FlowRecord>,
    /// Running totals, so the manager can show loss even when batches are lost.
    #[prost(uint64, tag = "3")]
    pub kernel_events_lost: u64,
    #[prost(uint64, tag = "4")]
    pub agent_records_dropped: u64,
    /// Per agent run, increasing; lets the manager count batches it never received.
    #[prost(uint64, tag = "5")]
    pub seq: u64,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FlowAck {
    #[prost(uint64, tag = "1")]
    pub accepted: u64,
}

include!(concat!(env!("OUT_DIR"), "/cellwall.v1.Agent.rs"));

pub use agent_client::AgentClient;
pub use agent_server::{Agent, AgentServer};
pub use tonic;

use cellwall_policy::{Inventory, Namespace, Node, Policy, PolicyId, Workload, WorkloadKey};
use std::cmp::Ordering;
use std::io::{Read, Write};
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
    pub policies: Vec<Policy>,
}

impl StateDoc {
    pub fn new(inv: &Inventory, policies: &[Policy]) -> Self {
        Self {
            namespaces: inv.namespaces.values().cloned().collect(),
            workloads: inv.workloads.values().cloned().map(Arc::new).collect(),
            nodes: inv.nodes.values().cloned().collect(),
            policies: {
                let mut p = policies.to_vec();
                p.sort_by(|a, b| a.id.cmp(&b.id));
                p
            },
        }
    }

    /// Like [`StateDoc::new`], taking the parts (no copy of 100,000 workloads).
    pub fn from_parts(inv: Inventory, mut policies: Vec<Policy>) -> Self {
        policies.sort_by(|a, b| a.id.cmp(&b.id));
        Self {
            namespaces: inv.namespaces.into_values().collect(),
            workloads: inv.workloads.into_values().map(Arc::new).collect(),
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
                .map(|w| (w.key(), Workload::clone(w)))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
        }
    }

    /// Applies `d` in place (the lists stay sorted by key).
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
        let mut d: Self = serde_json::from_slice(b)?;
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
    pub policies: Vec<Policy>,
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
    // Large ones: one merge pass, so 100,000 inserts never shift the list 100,000 times.
    ups.sort_by(|a, b| a.cmp_item(b));
    ups.dedup_by(|a, b| a.cmp_item(b) == Ordering::Equal);
    let mut rem: Vec<&T::Key> = removed.iter().collect();
    rem.sort();
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
        if rem.binary_search_by(|k| x.cmp_key(k).reverse()).is_ok() {
            continue;
        }
        out.push(x);
    }
    out.extend(u);
    *list = out;
}

/// A [`DesiredState`] that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PayloadError {
    #[error("inflating the state: {0}")]
    Inflate(#[from] std::io::Error),
    #[error("decoding the state: {0}")]
    Json(#[from] serde_json::Error),
}

/// What a [`DesiredState`] carries.
#[derive(Debug)]
pub enum Payload {
    Snapshot(StateDoc),
    Delta {
        base_version: u64,
        delta: StateDelta,
    },
}

/// Payloads above this are deflated (a delta of one relabel is a few hundred bytes; a snapshot
/// of 100,000 workloads is ~20 MB of JSON).
const DEFLATE_ABOVE: usize = 16 << 10;

fn pack(json: Vec<u8>) -> (bytes::Bytes, bool) {
    if json.len() <= DEFLATE_ABOVE {
        return (json.into(), false);
    }
    let mut z = flate2::write::DeflateEncoder::new(
        Vec::with_capacity(json.len() / 8),
        flate2::Compression::fast(),
    );
    z.write_all(&json).expect("writing to memory");
    (z.finish().expect("writing to memory").into(), true)
}

impl DesiredState {
    pub fn snapshot(version: u64, doc: &StateDoc, issued_unix_ms: i64) -> Self {
        let (state_json, deflate) = pack(doc.to_json());
        Self {
            version,
            state_json,
            issued_unix_ms,
            base_version: 0,
            deflate,
        }
    }

    /// `base_version` must be nonzero (revision 0 is the empty model nobody holds).
    pub fn delta(version: u64, base_version: u64, d: &StateDelta, issued_unix_ms: i64) -> Self {
        let (state_json, deflate) =
            pack(serde_json::to_vec(d).expect("the policy model always serializes"));
        Self {
            version,
            state_json,
            issued_unix_ms,
            base_version,
            deflate,
        }
    }

    pub fn payload(&self) -> Result<Payload, PayloadError> {
        let inflated;
        let json: &[u8] = if self.deflate {
            let mut out = Vec::with_capacity(self.state_json.len() * 8);
            flate2::read::DeflateDecoder::new(&self.state_json[..]).read_to_end(&mut out)?;
            inflated = out;
            &inflated
        } else {
            &self.state_json
        };
        Ok(if self.base_version == 0 {
            Payload::Snapshot(StateDoc::from_json(json)?)
        } else {
            Payload::Delta {
                base_version: self.base_version,
                delta: serde_json::from_slice(json)?,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_policy::synth::scale_scenario;

    fn doc(ns: usize) -> StateDoc {
        let (inv, pols) = scale_scenario(ns, 4, 3, 3, 20);
        StateDoc::new(&inv, &pols)
    }

    #[test]
    fn delta_turns_old_into_new_small_and_large() {
        let old = doc(6);
        let mut new = old.clone();
        // Small: one relabel, one removal, one new workload.
        Arc::make_mut(&mut new.workloads[3])
            .labels
            .insert("tier".into(), "changed".into());
        let gone = new.workloads.remove(7);
        let mut added = Workload::clone(&gone);
        added.name = "zz-new".into();
        new.workloads.push(Arc::new(added));
        new.policies.remove(2);
        let new = StateDoc::new(&new.inventory(), &new.policies);
        let d = StateDelta::between(&old, &new);
        assert_eq!(d.workloads.len(), 2);
        assert_eq!(d.removed_workloads, vec![gone.key()]);
        assert_eq!(d.removed_policies.len(), 1);
        let mut got = old.clone();
        got.apply(d.clone());
        assert_eq!(got, new);
        // Through the wire form.
        let m = DesiredState::delta(9, 8, &d, 0);
        match m.payload().unwrap() {
            Payload::Delta {
                base_version: 8,
                delta,
            } => assert_eq!(delta, d),
            p => panic!("{p:?}"),
        }
        // Large (merge path): from nothing to everything and back.
        let d = StateDelta::between(&StateDoc::default(), &new);
        assert!(d.len() > 64);
        let mut got = StateDoc::default();
        got.apply(d);
        assert_eq!(got, new);
        got.apply(StateDelta::between(&new, &old));
        assert_eq!(got, old);
        assert!(StateDelta::between(&old, &old).is_empty());
    }

    #[test]
    fn big_snapshots_are_deflated_and_round_trip() {
        let d = doc(40);
        let m = DesiredState::snapshot(5, &d, 0);
        assert!(m.deflate);
        assert!(m.state_json.len() * 4 < d.to_json().len());
        match m.payload().unwrap() {
            Payload::Snapshot(got) => assert_eq!(got, d),
            p => panic!("{p:?}"),
        }
    }
}

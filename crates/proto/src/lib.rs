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

/// The whole desired state; `state_json` is `{"inventory": .., "policies": [..]}` in the policy
/// crate's serde form (the agent compiles its node's tables itself).
#[derive(Clone, PartialEq, prost::Message)]
pub struct DesiredState {
    #[prost(uint64, tag = "1")]
    pub version: u64,
    #[prost(bytes = "vec", tag = "2")]
    pub state_json: Vec<u8>,
    #[prost(int64, tag = "3")]
    pub issued_unix_ms: i64,
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

use cellwall_policy::{Inventory, Namespace, Node, Policy, Workload};

/// The payload of `DesiredState.state_json`: the model in lists (JSON map keys must be strings,
/// and the inventory's are structs).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StateDoc {
    pub namespaces: Vec<Namespace>,
    pub workloads: Vec<Workload>,
    pub nodes: Vec<Node>,
    pub policies: Vec<Policy>,
}

impl StateDoc {
    pub fn new(inv: &Inventory, policies: &[Policy]) -> Self {
        Self {
            namespaces: inv.namespaces.values().cloned().collect(),
            workloads: inv.workloads.values().cloned().collect(),
            nodes: inv.nodes.values().cloned().collect(),
            policies: policies.to_vec(),
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
                .map(|w| (w.key(), w.clone()))
                .collect(),
            nodes: self
                .nodes
                .iter()
                .map(|n| (n.name.clone(), n.clone()))
                .collect(),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the policy model always serializes")
    }

    pub fn from_json(b: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(b)
    }
}

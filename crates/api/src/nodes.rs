//! Nodes as the manager knows them: joined, reporting, enforcing which revision.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// A workload an agent reported on its node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ReportedWorkload {
    /// `namespace/name`.
    pub key: String,
    pub ips: Vec<String>,
    pub interface: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Host mode: the host itself is the workload.
    #[serde(default)]
    pub host: bool,
}

/// `GET /v1/nodes` (a CLI contract: `items[].name`, `applied_version`, `lag`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct NodeList {
    /// The revision the manager publishes now.
    pub revision: u64,
    pub items: Vec<NodeItem>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct NodeItem {
    pub name: String,
    pub joined_ms: i64,
    /// The revision the node's kernel maps hold.
    pub applied_version: u64,
    pub applied_unix_micros: u64,
    pub apply_micros: u64,
    /// `version N: what failed`, empty when the last apply worked.
    pub last_error: String,
    pub last_seen_ms: i64,
    pub kernel_events_lost: u64,
    pub agent_records_dropped: u64,
    pub flow_batches_missed: u64,
    /// Revisions the node is behind (0: it enforces the latest).
    pub lag: u64,
    /// While `lag` > 0: how long ago the newest revision was issued, i.e. how long this node
    /// has been decoding, compiling and switching to it (or been out of reach). Absent at lag 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_ms: Option<i64>,
    pub seconds_since_seen: i64,
    pub workloads: Vec<ReportedWorkload>,
    /// What the node sent that the manager refused (reports it may not make, flow records of
    /// other nodes' workloads or over its rate), counted since it joined.
    pub refused: Refused,
    /// False once an admin withdrew its certificate.
    pub has_cert: bool,
    /// When its certificate expires, Unix ms (absent for nodes that joined before certificates
    /// expired); its agent renews it at two thirds of its life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_expires_ms: Option<i64>,
}

/// Refusals of one node's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Refused {
    pub reports: u64,
    pub flows: u64,
    /// The latest refusal and why.
    pub last: String,
}

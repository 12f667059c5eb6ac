//! From visibility to policy: explain a verdict, the dependency map, proposals, simulation.

use crate::error::ErrorDetail;
use crate::objects::Document;
use cellwall_policy::discover::{DependencyMap, Proposal, SimClass, SimRow};
use cellwall_policy::Explanation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The query of `GET /v1/explain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// `namespace/name` of the source.
    pub from: String,
    /// `namespace/name` of the destination.
    pub to: String,
    /// `PROTO/PORT`, e.g. `TCP/5432`.
    pub probe: String,
}

/// Egress at the source and ingress at the destination, tier by tier, with the rule that
/// decided each, and the same as text.
#[derive(Debug, Clone, Serialize)]
pub struct ExplainResponse {
    pub explanation: Explanation,
    pub text: String,
}

/// The query of `GET /v1/map`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapQuery {
    /// A duration like `1h` (default) or `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// `app` (default), `namespace` or `workload`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    /// `json` (default) or `dot` (adds Graphviz text).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

/// `GET /v1/map`.
#[derive(Debug, Clone, Serialize)]
pub struct MapResponse {
    pub map: DependencyMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<String>,
}

/// The query of `GET /v1/propose`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProposeQuery {
    /// A duration like `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Only this namespace's workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `cellwall` (default) or `networkpolicy`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    /// Rules seen fewer times than this are marked for review (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_below: Option<u64>,
}

/// `GET /v1/propose`: the proposal, the same as YAML that applies as is, and how much history
/// it came from.
#[derive(Debug, Clone, Serialize)]
pub struct ProposeResponse {
    pub proposal: Proposal,
    pub yaml: String,
    pub history_rows: usize,
}

/// `POST /v1/simulate`: candidate policy documents, replayed with the policies in force
/// (same names replace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    pub documents: Vec<Document>,
    /// A duration like `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
}

/// Aggregated flows and the connections they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassCount {
    pub flows: u64,
    pub connections: u64,
}

/// What replaying history against the candidate found.
#[derive(Debug, Clone, Serialize)]
pub struct SimulateResult {
    /// Policy ids in the candidate.
    pub candidate: Vec<String>,
    /// Aggregated flows replayed.
    pub flows: u64,
    /// Flows allowed today that the candidate would reject.
    pub breakage: u64,
    pub summary: BTreeMap<SimClass, ClassCount>,
    pub details: Vec<SimRow>,
    pub read_ms: u64,
    pub replay_ms: u64,
}

/// One line of the NDJSON answer to `POST /v1/simulate`: progress lines, then a result or an
/// error.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SimulateLine {
    Progress { done: usize, total: usize },
    Result(Box<SimulateResult>),
    Error(ErrorDetail),
}

//! From visibility to policy: explain a verdict, the dependency map, proposals, simulation.

use crate::error::ErrorDetail;
use crate::objects::Document;
/// How learning groups workloads (query parameter `group_by`).
pub use cellwall_policy::discover::GroupBy;
use cellwall_policy::discover::{DependencyMap, Proposal, RuleStats, SimClass, SimRow};
use cellwall_policy::Explanation;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The query of `GET /v1/explain`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ExplainQuery {
    /// `namespace/name` of the source.
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[^/]+/[^/]+$")))]
    pub from: String,
    /// The destination: `namespace/name`, an IP address, or a DNS name (FQDN policy: explained
    /// at the address the latest recorded flow to it went to; `NAME=IP` gives the address).
    /// The schema's pattern spells IPv4 only; IPv6 addresses are accepted too.
    #[cfg_attr(
        feature = "openapi",
        schemars(
            length(max = 253),
            regex(
                pattern = r"^([^/]+/[^/]+|(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3}|([a-zA-Z0-9]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z0-9]([-a-zA-Z0-9_]{0,61}[a-zA-Z0-9])?\.?(=(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])){3})?)$"
            )
        )
    )]
    pub to: String,
    /// `PROTO/PORT`, e.g. `TCP/5432`.
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(
            pattern = r"^([Tt][Cc][Pp]|[Uu][Dd][Pp]|[Ss][Cc][Tt][Pp])/([0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])$"
        ))
    )]
    pub probe: String,
}

/// Egress at the source and ingress at the destination, tier by tier, with the rule that
/// decided each, and the same as text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ExplainResponse {
    pub explanation: Explanation,
    pub text: String,
}

/// What `GET /v1/map` adds to the map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum MapFormat {
    Json,
    /// Graphviz text as well.
    Dot,
}

/// Which kind of policy a proposal is written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ProposalKind {
    /// Cellwall `Policy` (both directions, with evidence).
    Cellwall,
    /// Kubernetes `NetworkPolicy`.
    NetworkPolicy,
    /// `ClusterNetworkPolicy` (policy.networking.k8s.io/v1alpha2), baseline tier: observed
    /// edges accepted, then everything else denied.
    ClusterNetworkPolicy,
}

/// The query of `GET /v1/map`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct MapQuery {
    /// A duration like `1h` (default) or `7d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
    /// How map nodes group workloads: `auto` (default: controller, application labels,
    /// behaviour), `app`, `owner`, `workload`, `namespace` or `label:KEY[,KEY]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// `json` (default), or `dot` to add Graphviz text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<MapFormat>,
}

/// `GET /v1/map`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct MapResponse {
    pub map: DependencyMap,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dot: Option<String>,
}

/// The query of `GET /v1/propose`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ProposeQuery {
    /// A duration like `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
    /// Only this namespace's workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The kind of the proposed policies (default: Cellwall's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<ProposalKind>,
    /// Rules seen fewer times than this are marked for review (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review_below: Option<u64>,
    /// How workloads are grouped into applications (as `GET /v1/map`; default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
}

/// `GET /v1/propose`: the proposal, the same as YAML that applies as is, and how much history
/// it came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ProposeResponse {
    pub proposal: Proposal,
    pub yaml: String,
    pub history_rows: usize,
}

/// `POST /v1/simulate`: candidate policy documents, replayed with the policies in force
/// (same names replace).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SimulateRequest {
    #[serde(default)]
    pub documents: Vec<Document>,
    /// A draft's approved rules, added to the documents' policies (`cellwall simulate
    /// --draft NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft: Option<String>,
    /// A duration like `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
}

/// Aggregated flows and the connections they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ClassCount {
    pub flows: u64,
    pub connections: u64,
}

/// What replaying history against the candidate found.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
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
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum SimulateLine {
    Progress { done: usize, total: usize },
    Result(Box<SimulateResult>),
    Error(ErrorDetail),
}

/// The query of `GET /v1/rules`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RulesQuery {
    /// History window, like `30d` (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
    /// Only rules nothing in the window hit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unused: Option<bool>,
}

/// `GET /v1/rules`: every rule in force with the history it decides (replayed through the
/// policy in force, both ends of each connection).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct RuleList {
    pub items: Vec<RuleStats>,
    /// The window, and how many aggregated flows it held.
    pub since: String,
    pub history_rows: usize,
}

//! Business-flow approval: a proposal saved as a draft, reviewed rule by rule with its evidence,
//! then simulated and applied with its approved rules only. Every decision is a new version of
//! the draft (who and when) and an audit event.

use crate::discover::GroupBy;
use crate::objects::Committed;
use cellwall_policy::discover::{Proposal, ProposedRule};
use serde::{Deserialize, Serialize};

/// `POST /v1/drafts`: learn a proposal from history now and keep it for review.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DraftRequest {
    /// Lowercase letters, digits and `-`, at most 63.
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))
    )]
    pub name: String,
    /// History window, like `24h` (default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub since: Option<String>,
    /// Only this namespace's workloads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_by: Option<GroupBy>,
    /// Rules seen fewer times than this are marked for review (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(range(max = 1_000_000_000)))]
    pub review_below: Option<u64>,
    /// Replace a draft of the same name (its decisions are lost; the old versions stay in the
    /// audit trail).
    #[serde(default)]
    pub replace: bool,
}

/// Where a rule of a draft stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum RuleStatus {
    Pending,
    Approved,
    Rejected,
}

/// One proposed rule under review, with its evidence and the decision on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DraftRule {
    /// `r` and 7 hex digits derived from what the rule says (policy, direction, peer, port):
    /// saving the draft again keeps the ids of unchanged rules, and a decision never lands on
    /// a rule the reviewer did not see.
    pub id: String,
    /// `namespace/name` of the proposed policy.
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub rule: ProposedRule,
    pub status: RuleStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// When a draft's approved rules were applied, and by whom.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DraftApplied {
    pub by: String,
    pub at_ms: i64,
    pub revision: u64,
    /// `namespace/name` of the policies written.
    pub policies: Vec<String>,
}

/// A saved proposal and the review of its rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Draft {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// The history window it was learned from.
    pub since: String,
    pub group_by: GroupBy,
    pub proposal: Proposal,
    pub rules: Vec<DraftRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<DraftApplied>,
}

/// A draft in a list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DraftSummary {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: i64,
    pub rules: usize,
    pub approved: usize,
    pub rejected: usize,
    pub pending: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at_ms: Option<i64>,
}

/// `GET /v1/drafts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DraftList {
    pub items: Vec<DraftSummary>,
}

/// The query of `GET /v1/drafts/show`, and the body of `POST /v1/drafts/apply` and
/// `POST /v1/drafts/delete`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct DraftName {
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))
    )]
    pub name: String,
}

/// A reviewer's decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ReviewDecision {
    Approve,
    Reject,
}

/// `POST /v1/drafts/review`: approve or reject rules of a draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReviewRequest {
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))
    )]
    pub name: String,
    pub decision: ReviewDecision,
    /// Rule ids (`r1a2b3c4`), a policy's `namespace/name` (all its rules), `pending` (every rule not
    /// decided yet) or `all`. An unknown one refuses the whole request (404).
    #[cfg_attr(
        feature = "openapi",
        schemars(
            length(min = 1),
            inner(regex(pattern = r"^(r[0-9a-f]{7}(-[0-9]+)?|all|pending|[^/]+/[^/]+)$"))
        )
    )]
    pub rules: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// `POST /v1/drafts/apply`: what was written, and the policies left out (no rule approved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct DraftApplyResult {
    pub committed: Committed,
    pub policies: Vec<String>,
    pub left_out: Vec<String>,
}

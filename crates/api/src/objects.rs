//! Writing manifests (apply, delete) and reading what the store holds: policies, workloads,
//! namespaces, versions and the audit trail.

use cellwall_policy::{Mode, Namespace, Policy, Tier, Workload};
use serde::{Deserialize, Serialize};

/// A manifest file sent for apply or delete: its name (errors cite it) and its text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub file: String,
    pub text: String,
}

/// `POST /v1/apply` and `POST /v1/delete`: every object of every document, in one transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ApplyRequest {
    pub documents: Vec<Document>,
    /// Skip objects of kinds Cellwall does not read instead of refusing the request.
    #[serde(default)]
    pub ignore_unknown_kinds: bool,
}

/// Kinds of stored objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub enum ObjectKind {
    Namespace,
    Pod,
    Node,
    Policy,
    /// A workload cut off by `cellwall quarantine` (key `namespace/name`).
    Quarantine,
    /// Labels imported from one outside source (key: the source name).
    Import,
    /// A VM or bare-metal host an admin declared: its node, labels and permitted addresses
    /// (key `namespace/name`). A host-mode agent may report only a declared host of its node.
    Host,
    /// A proposal under review (key: the draft's name). Not part of the desired state.
    Draft,
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Namespace => "Namespace",
            Self::Pod => "Pod",
            Self::Node => "Node",
            Self::Policy => "Policy",
            Self::Quarantine => "Quarantine",
            Self::Import => "Import",
            Self::Host => "Host",
            Self::Draft => "Draft",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Namespace" => Self::Namespace,
            "Pod" => Self::Pod,
            "Node" => Self::Node,
            "Policy" => Self::Policy,
            "Quarantine" => Self::Quarantine,
            "Import" => Self::Import,
            "Host" => Self::Host,
            "Draft" => Self::Draft,
            _ => return None,
        })
    }
}

/// What a write did to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum ChangeAction {
    Created,
    Configured,
    Unchanged,
    Deleted,
    #[serde(rename = "not found")]
    NotFound,
}

impl ChangeAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Configured => "configured",
            Self::Unchanged => "unchanged",
            Self::Deleted => "deleted",
            Self::NotFound => "not found",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Change {
    pub kind: ObjectKind,
    pub key: String,
    pub action: ChangeAction,
    /// The object's version after the write (0 when it does not exist).
    pub version: i64,
}

/// The answer to every write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Committed {
    /// The store revision after the write (unchanged when nothing changed).
    pub revision: u64,
    pub changes: Vec<Change>,
}

/// `GET /v1/policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PolicyList {
    pub items: Vec<PolicyItem>,
}

/// A stored policy with its summary and who changed it last.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PolicyItem {
    /// `Kind/namespace/name` or `Kind/name`.
    pub id: String,
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub tier: Tier,
    pub priority: i32,
    pub mode: Mode,
    /// Unix seconds.
    pub expires_at: Option<i64>,
    /// Number of rules.
    pub rules: usize,
    pub version: i64,
    pub changed_by: String,
    pub changed_at_ms: i64,
    /// Seconds until `expires_at` (0 once expired).
    pub seconds_left: Option<i64>,
    pub policy: Policy,
}

/// One version of a stored object (history and audit trail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ObjectVersion {
    pub kind: ObjectKind,
    pub key: String,
    pub version: i64,
    pub revision: u64,
    pub deleted: bool,
    pub actor: String,
    pub at_ms: i64,
    /// The object as stored (absent for a deletion).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<serde_json::Value>,
}

/// `GET /v1/policies/history?id=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct PolicyHistory {
    pub versions: Vec<ObjectVersion>,
}

/// `GET /v1/workloads`: the workloads of the published revision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct WorkloadList {
    pub revision: u64,
    pub items: Vec<Workload>,
}

/// `GET /v1/namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct NamespaceList {
    pub revision: u64,
    pub items: Vec<Namespace>,
}

/// A recorded event: joins, imports, quarantines, tokens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct AuditEvent {
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

/// `GET /v1/audit`: object versions and events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct AuditLog {
    pub changes: Vec<ObjectVersion>,
    pub events: Vec<AuditEvent>,
}

//! Responding and labelling: quarantines, label imports, alerts, tokens.

use crate::objects::Change;
use serde::{Deserialize, Serialize};

/// `POST /v1/quarantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct QuarantineRequest {
    /// `namespace/name`.
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[^/]+/[^/]+$")))]
    pub workload: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Management exception: `k=v,...` (pods with these labels in any namespace) or
    /// `cidr:ADDR/LEN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_from: Option<String>,
}

/// `POST /v1/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    #[cfg_attr(feature = "openapi", schemars(regex(pattern = r"^[^/]+/[^/]+$")))]
    pub workload: String,
}

/// A quarantine in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct QuarantineItem {
    pub workload: String,
    pub reason: String,
    pub allow_from: Option<String>,
    /// Who quarantined it, and when (Unix ms).
    pub by: String,
    pub since_ms: i64,
}

/// `GET /v1/quarantine`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct QuarantineList {
    pub items: Vec<QuarantineItem>,
}

/// `POST /v1/imports`: labels for workloads from an outside source, either sent now (`text`,
/// named `file` in errors) or read by the manager from `location` (now and, with `every`, on a
/// schedule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct ImportRequest {
    /// The source's name; its labels get the prefix `NAME.import.cellwall.io/`.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// A duration of at least 10s, like `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub every: Option<String>,
}

/// The answer to an import.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ImportResult {
    pub revision: u64,
    pub changes: Vec<Change>,
    /// Entries in the file.
    pub entries: usize,
    /// Workloads the entries labelled.
    pub matched_workloads: usize,
    /// Entries that matched no workload.
    pub unmatched_entries: usize,
}

/// A label import as last run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ImportItem {
    pub source: String,
    /// File name or URL the entries came from.
    pub origin: String,
    pub entries: usize,
    pub location: Option<String>,
    pub every_ms: Option<u64>,
    pub by: String,
    pub changed_at_ms: i64,
    pub version: i64,
}

/// `GET /v1/imports`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ImportList {
    pub items: Vec<ImportItem>,
}

/// What a compliance alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum AlertKind {
    /// It happened although the policy in force denies it.
    Escaped,
    /// Allowed only because the denying policy is in audit mode.
    AuditOnly,
    /// Allowed by a rule or policy that expires within the hour.
    ExpiringGrant,
    /// A connection into a policed workload between applications never seen talking before.
    NewEdge,
    /// A node reported an address another workload owns (refused).
    AddressConflict,
    /// A node could not enforce a revision (its maps are full, a kernel write failed): it
    /// keeps enforcing the tables it held before.
    EnforcementFailed,
}

impl AlertKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Escaped => "escaped",
            Self::AuditOnly => "audit-only",
            Self::ExpiringGrant => "expiring-grant",
            Self::NewEdge => "new-edge",
            Self::AddressConflict => "address-conflict",
            Self::EnforcementFailed => "enforcement-failed",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Info => "info",
            Self::Warning => "warning",
            Self::Critical => "critical",
        }
    }
}

/// A compliance alert (deduplicated per kind and edge per hour).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Alert {
    pub id: i64,
    pub at_ms: i64,
    pub kind: AlertKind,
    pub severity: Severity,
    pub src: String,
    pub dst: String,
    pub protocol: String,
    pub port: u16,
    pub rule: Option<String>,
    pub message: String,
    pub connections: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

impl Alert {
    /// A critical alert about the control plane (no connection behind it: no protocol, port,
    /// rule or flow counts), before the manager numbers it.
    pub fn critical(
        kind: AlertKind,
        at_ms: i64,
        src: String,
        dst: String,
        message: String,
    ) -> Self {
        Alert {
            id: 0,
            at_ms,
            kind,
            severity: Severity::Critical,
            src,
            dst,
            protocol: "-".into(),
            port: 0,
            rule: None,
            message,
            connections: 0,
            first_ns: 0,
            last_ns: 0,
        }
    }
}

/// The query of `GET /v1/alerts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct AlertQuery {
    /// Only alerts with an id above this (for following).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schemars(range(min = 1, max = 100_000)))]
    pub limit: Option<usize>,
}

/// `GET /v1/alerts`: alerts oldest first, and what was not raised or not delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct AlertList {
    pub alerts: Vec<Alert>,
    /// Alerts over the rate limit, counted instead of raised.
    pub suppressed: u64,
    /// Alerts the webhook queue could not take.
    pub webhook_dropped: u64,
}

/// Roles a bearer token can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum TokenRole {
    /// Reads and writes.
    Admin,
    /// Reads only.
    Read,
    /// Joins agents; not valid on the REST API.
    Bootstrap,
}

/// `GET /v1/whoami`: who the bearer token belongs to and what it may do (the web console shows
/// write controls only to admins).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Identity {
    /// The token's name, as the audit trail records the caller.
    pub name: String,
    /// `admin` or `read` (a bootstrap token is refused with 403).
    pub role: TokenRole,
}

/// `POST /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub role: TokenRole,
    /// Who or what the token is for (the audit trail names it).
    #[cfg_attr(
        feature = "openapi",
        schemars(length(min = 1, max = 253), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))
    )]
    pub name: String,
    /// Bootstrap tokens: the node name it may join, `*` matching any characters (e.g. `web-*`).
    /// None: any node name that has not joined yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// How long the token is valid, a duration like `1h` or `7d` (none: until revoked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(
        feature = "openapi",
        schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))
    )]
    pub ttl: Option<String>,
    /// Valid for one join only.
    #[serde(default)]
    pub single_use: bool,
    /// Bootstrap tokens: may replace the certificate of a node that already joined (its open
    /// streams are closed at once).
    #[serde(default)]
    pub replace: bool,
}

/// The new token: shown once, stored only hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct TokenCreated {
    pub id: i64,
    pub token: String,
}

/// A token as `GET /v1/tokens` lists it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct TokenItem {
    pub id: i64,
    pub role: TokenRole,
    pub name: String,
    pub node: Option<String>,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub single_use: bool,
    pub replace: bool,
    pub used_ms: Option<i64>,
    pub revoked: bool,
    /// Whether it can be used now (not revoked, expired or used up).
    pub valid: bool,
}

/// `GET /v1/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct TokenList {
    pub items: Vec<TokenItem>,
}

/// `POST /v1/tokens/revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeTokenRequest {
    pub id: i64,
}

/// `POST /v1/nodes/revoke`: withdraw a node's certificate (it must join again, with a token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RevokeNodeRequest {
    pub node: String,
}

/// What a revocation did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct Revoked {
    pub revoked: bool,
}

//! Stored records of the manager's own kinds (quarantines, label imports): defined here, below
//! the modules that act on them, so the store depends on no domain module.

use serde::{Deserialize, Serialize};

/// A quarantine as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// `namespace/name`.
    pub workload: String,
    pub reason: String,
    /// Management exception: `k=v,...` (pods with these labels in any namespace) or
    /// `cidr:ADDR/LEN`.
    pub allow_from: Option<String>,
}

/// Labels from one outside source, as last imported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImportRecord {
    pub source: String,
    /// File name or URL the entries came from.
    pub origin: String,
    pub entries: Vec<cellwall_policy::import::Entry>,
    /// Re-import from `location` this often (milliseconds); none for one-off imports.
    pub every_ms: Option<u64>,
    /// A path on the manager's host or an http:// URL.
    pub location: Option<String>,
}

/// A host an admin declared (`cellwall.io/v1alpha1 Host`): the node whose host-mode agent may
/// report it, its labels, and the addresses it may have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    pub namespace: String,
    pub name: String,
    pub node: String,
    #[serde(default)]
    pub labels: cellwall_policy::Labels,
    /// Addresses or networks the host's agent may report for it.
    pub addresses: Vec<cellwall_policy::Cidr>,
}

//! Kubernetes API access. [`read`] lists a live cluster's objects of every kind Cellwall reads,
//! through kube-rs (kubeconfig, auth, TLS, paging), and hands each object's JSON to the policy
//! crate's loader, so a cluster is read with exactly the semantics and errors of files.
//! [`watch`] (feature `watch`) follows the same resources as they change, for the manager.
//! [`fake`] (feature `fake`) is a fake API server that speaks the real list/watch wire protocol,
//! because no real API server can run where Cellwall's tests run.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod crd;
#[cfg(feature = "fake")]
pub mod fake;
pub mod read;
pub mod review;
#[cfg(feature = "watch")]
pub mod watch;

/// A connected cluster's client (kube-rs'), for callers that write back.
pub use kube::Client as KubeClient;
pub use read::{read_cluster, ClusterObjects, KubeError};

/// One API resource Cellwall reads: where the API serves it and what the loader calls it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group (`/api/v1`).
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL path segment (lower-case plural).
    pub plural: &'static str,
    pub namespaced: bool,
    /// Served by a CustomResourceDefinition (not built into the API server). The API server
    /// writes `apiVersion` and `kind` into the items of such lists, not into built-in lists.
    pub custom: bool,
}

impl Resource {
    /// `v1` or `GROUP/VERSION`, as manifests spell it.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// What kube-rs' dynamic API calls this resource.
    pub fn api_resource(&self) -> kube::api::ApiResource {
        kube::api::ApiResource {
            group: self.group.to_string(),
            version: self.version.to_string(),
            api_version: self.api_version(),
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// The collection's path across all namespaces: `/api/v1/pods`, `/apis/G/V/PLURAL`.
    pub fn path(&self) -> String {
        if self.group.is_empty() {
            format!("/api/{}/{}", self.version, self.plural)
        } else {
            format!("/apis/{}/{}/{}", self.group, self.version, self.plural)
        }
    }
}

const fn res(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    namespaced: bool,
    custom: bool,
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        namespaced,
        custom,
    }
}

/// Every resource Cellwall reads from a cluster, inventory first. Matches the loader's kind
/// table (a test checks it); the AdminNetworkPolicy kinds and Cellwall's own are CRDs a cluster
/// may not serve, which is not an error.
pub const RESOURCES: &[Resource] = &[
    res("", "v1", "Namespace", "namespaces", false, false),
    res("", "v1", "Node", "nodes", false, false),
    res("", "v1", "Pod", "pods", true, false),
    res(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        true,
        false,
    ),
    res(
        "policy.networking.k8s.io",
        "v1alpha2",
        "ClusterNetworkPolicy",
        "clusternetworkpolicies",
        false,
        true,
    ),
    res(
        "policy.networking.k8s.io",
        "v1alpha1",
        "AdminNetworkPolicy",
        "adminnetworkpolicies",
        false,
        true,
    ),
    res(
        "policy.networking.k8s.io",
        "v1alpha1",
        "BaselineAdminNetworkPolicy",
        "baselineadminnetworkpolicies",
        false,
        true,
    ),
    res("cellwall.io", "v1alpha1", "Policy", "policies", true, true),
    res(
        "cellwall.io",
        "v1alpha1",
        "ClusterPolicy",
        "clusterpolicies",
        false,
        true,
    ),
    res("cellwall.io", "v1alpha1", "Host", "hosts", false, true),
];

/// The resource of a manifest's `apiVersion` and `kind`, if Cellwall reads it.
pub fn resource_of(api_version: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.kind == kind && r.api_version() == api_version)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind the loader reads but the cluster reader does not list would silently vanish
    /// from `analyze --kubeconfig`; one listed but not read would fail every cluster read.
    #[test]
    fn resources_match_the_loaders_kinds() {
        let mut loader: Vec<(String, String)> = cellwall_policy::load::supported_kinds()
            .map(|(a, k)| (a.to_string(), k.to_string()))
            .collect();
        let mut ours: Vec<(String, String)> = RESOURCES
            .iter()
            .map(|r| (r.api_version(), r.kind.to_string()))
            .collect();
        loader.sort();
        ours.sort();
        assert_eq!(loader, ours);
    }

    #[test]
    fn paths() {
        assert_eq!(RESOURCES[2].path(), "/api/v1/pods");
        let np = resource_of("networking.k8s.io/v1", "NetworkPolicy").unwrap();
        assert_eq!(np.path(), "/apis/networking.k8s.io/v1/networkpolicies");
        assert!(resource_of("v1", "Service").is_none());
    }
}

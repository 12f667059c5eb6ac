//! The kinds Cellwall reads: each (apiVersion, kind) and how a document of it becomes an object,
//! through its family's conversion in `k8s`. A new family is a new file in `k8s/` and its rows
//! here (and its kinds in `SUPPORTED_KINDS`: a test checks).

use super::{Document, LoadError, Object};
use crate::k8s;

/// One kind: its apiVersion and kind, and how a document of it becomes an object.
pub(super) struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub read: fn(&Document) -> Result<Object, LoadError>,
}

fn policy(p: crate::model::Policy) -> Object {
    Object::Policy(Box::new(p))
}

const ANP: &str = "policy.networking.k8s.io/v1alpha1";
const CNP: &str = "policy.networking.k8s.io/v1alpha2";
const CELLWALL: &str = "cellwall.io/v1alpha1";

const KINDS: &[Kind] = &[
    // k8s/core.rs: the inventory.
    Kind {
        api_version: "v1",
        kind: "Namespace",
        read: |d| d.convert(|m| k8s::convert_namespace(m).map(Object::Namespace)),
    },
    Kind {
        api_version: "v1",
        kind: "Pod",
        read: |d| d.convert(|m| k8s::convert_pod(m).map(Object::Pod)),
    },
    Kind {
        api_version: "v1",
        kind: "Node",
        read: |d| d.convert(|m| k8s::convert_node(m).map(Object::Node)),
    },
    // k8s/network_policy.rs
    Kind {
        api_version: "networking.k8s.io/v1",
        kind: "NetworkPolicy",
        read: |d| d.convert(|m| k8s::convert_network_policy(m).map(policy)),
    },
    // k8s/cnp.rs
    Kind {
        api_version: CNP,
        kind: "ClusterNetworkPolicy",
        read: |d| d.convert(|m| k8s::convert_cnp(m).map(policy)),
    },
    // k8s/admin.rs (deprecated upstream in favour of ClusterNetworkPolicy)
    Kind {
        api_version: ANP,
        kind: "AdminNetworkPolicy",
        read: |d| d.convert(|m| k8s::convert_anp(m, false).map(policy)),
    },
    Kind {
        api_version: ANP,
        kind: "BaselineAdminNetworkPolicy",
        read: |d| d.convert(|m| k8s::convert_anp(m, true).map(policy)),
    },
    // k8s/cellwall.rs
    Kind {
        api_version: CELLWALL,
        kind: "Policy",
        read: |d| d.convert(|m| k8s::convert_cellwall(m, false).map(policy)),
    },
    Kind {
        api_version: CELLWALL,
        kind: "ClusterPolicy",
        read: |d| d.convert(|m| k8s::convert_cellwall(m, true).map(policy)),
    },
    // k8s/host.rs
    Kind {
        api_version: CELLWALL,
        kind: "Host",
        read: |d| d.convert(|m| k8s::convert_host(m).map(Object::Host)),
    },
];

/// Every kind Cellwall reads.
pub(super) fn kinds() -> impl Iterator<Item = &'static Kind> {
    KINDS.iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_registered_once_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for k in kinds() {
            assert!(seen.insert((k.api_version, k.kind)), "{} twice", k.kind);
            assert!(
                super::super::SUPPORTED_KINDS.contains(k.kind)
                    && super::super::SUPPORTED_KINDS.contains(k.api_version),
                "{} {} missing from SUPPORTED_KINDS",
                k.api_version,
                k.kind
            );
        }
        assert_eq!(seen.len(), 10);
    }
}

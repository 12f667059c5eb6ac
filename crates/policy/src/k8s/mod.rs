//! Typed manifests of every kind Cellwall reads, and their conversion into the model, one file
//! per family: `core` (Namespace, Pod, Node), `network_policy`, `cnp` (ClusterNetworkPolicy),
//! `admin` (AdminNetworkPolicy and BaselineAdminNetworkPolicy, which CNP replaced upstream),
//! `cellwall` (Policy and ClusterPolicy), `host`. The loader's kind table
//! (`load/kinds.rs`) maps each (apiVersion, kind) to its family's conversion, so a new family is
//! a new file here and its rows there. (The table is on the loader's side so that this module,
//! which knows nothing of text, does not depend on the loader.)
//!
//! Policy specs reject unknown fields (a typo in a security policy must not silently widen it);
//! inventory kinds accept the many fields Cellwall does not need.

mod admin;
mod cellwall;
mod cnp;
mod core;
mod host;
mod network_policy;

pub use self::admin::*;
pub use self::cellwall::*;
pub use self::cnp::*;
pub use self::core::*;
pub use self::host::*;
pub use self::network_policy::*;

use crate::de::LabelsDe;
use crate::net::Cidr;
use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: LabelsDe,
    #[serde(default, deserialize_with = "crate::de::null_default")]
    pub owner_references: Vec<OwnerReference>,
}

/// An entry of `metadata.ownerReferences`: only what learning needs to name the controller.
#[derive(Debug, Deserialize, Default)]
pub struct OwnerReference {
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub controller: Option<bool>,
}

/// A semantic error found after deserialisation: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConvertError {
    pub path: String,
    pub message: String,
}

pub(crate) fn cerr(path: impl Into<String>, message: impl Into<String>) -> ConvertError {
    ConvertError {
        path: path.into(),
        message: message.into(),
    }
}

pub(crate) fn required_name(meta: &ObjectMeta) -> Result<String, ConvertError> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(cerr("metadata.name", "missing: every object needs a name")),
    }
}

/// A `namespaces` selector (all their pods) or a `pods` pair (namespace and pod selectors) of
/// the cluster kinds (AdminNetworkPolicy, ClusterNetworkPolicy), as the model's pair.
pub(crate) fn ns_and_pods(
    namespaces: &crate::de::SelectorDe,
    pods: Option<&crate::de::SelectorDe>,
) -> (crate::model::NamespaceMatch, crate::labels::LabelSelector) {
    (
        crate::model::NamespaceMatch::Selector(namespaces.0.clone()),
        pods.map(|p| p.0.clone())
            .unwrap_or_else(crate::labels::LabelSelector::everything),
    )
}

/// The `subject` of the cluster kinds: exactly one of `namespaces` or `pods`.
pub(crate) fn cluster_subject(
    namespaces: Option<&crate::de::SelectorDe>,
    pods: Option<(&crate::de::SelectorDe, &crate::de::SelectorDe)>,
) -> Result<crate::model::Subject, ConvertError> {
    let (namespaces, pods) = match (namespaces, pods) {
        (Some(ns), None) => ns_and_pods(ns, None),
        (None, Some((ns, pods))) => ns_and_pods(ns, Some(pods)),
        _ => {
            return Err(cerr(
                "spec.subject",
                "exactly one of namespaces or pods must be set",
            ))
        }
    };
    Ok(crate::model::Subject { namespaces, pods })
}

pub(crate) fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

pub(crate) fn check_except(cidr: &Cidr, except: &[Cidr]) -> Result<(), String> {
    for e in except {
        if !cidr.contains_net(e) || e == cidr {
            return Err(format!("except {e} must be a strict subnet of cidr {cidr}"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_namespaces_default_as_the_api_server_does() {
        let meta = |name: Option<&str>, ns: Option<&str>| ObjectMeta {
            name: name.map(str::to_string),
            namespace: ns.map(str::to_string),
            labels: Default::default(),
            owner_references: Vec::new(),
        };
        assert_eq!(required_name(&meta(Some("a"), None)).unwrap(), "a");
        assert_eq!(
            required_name(&meta(Some(""), None)).unwrap_err().path,
            "metadata.name"
        );
        assert_eq!(namespace_of(&meta(None, None)), "default");
        assert_eq!(namespace_of(&meta(None, Some(""))), "default");
        assert_eq!(namespace_of(&meta(None, Some("x"))), "x");
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(check_except(&c, &["10.1.0.0/16".parse().unwrap()]).is_ok());
        assert!(check_except(&c, &[c]).is_err());
        assert!(check_except(&c, &["11.0.0.0/16".parse().unwrap()]).is_err());
    }
}

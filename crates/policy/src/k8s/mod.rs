//! Typed manifests of every kind Cellwall reads, and their conversion into the model, one file
//! per family: `core` (Namespace, Pod, Node), `network_policy`, `admin` (AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy), `cellwall` (Policy and ClusterPolicy). Each family lists its kinds
//! in a `KINDS` table; the loader dispatches on [`kinds`], so a new family is a new file and one
//! line in `FAMILIES`.
//!
//! Policy specs reject unknown fields (a typo in a security policy must not silently widen it);
//! inventory kinds accept the many fields Cellwall does not need.

mod admin;
mod cellwall;
mod core;
mod network_policy;

pub use self::admin::*;
pub use self::cellwall::*;
pub use self::core::*;
pub use self::network_policy::*;

use crate::de::LabelsDe;
use crate::load::{Document, LoadError, Object};
use crate::net::Cidr;
use serde::Deserialize;

/// One kind Cellwall reads: its apiVersion and kind, and how a document of it becomes an object.
pub(crate) struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub read: fn(&Document) -> Result<Object, LoadError>,
}

/// Every family's kinds.
const FAMILIES: &[&[Kind]] = &[
    core::KINDS,
    network_policy::KINDS,
    admin::KINDS,
    cellwall::KINDS,
];

/// Every kind Cellwall reads.
pub(crate) fn kinds() -> impl Iterator<Item = &'static Kind> {
    FAMILIES.iter().flat_map(|f| f.iter())
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: LabelsDe,
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
    fn every_kind_is_registered_once_and_documented() {
        let mut seen = std::collections::BTreeSet::new();
        for k in kinds() {
            assert!(seen.insert((k.api_version, k.kind)), "{} twice", k.kind);
            assert!(
                crate::load::SUPPORTED_KINDS.contains(k.kind)
                    && crate::load::SUPPORTED_KINDS.contains(k.api_version),
                "{} {} missing from SUPPORTED_KINDS",
                k.api_version,
                k.kind
            );
        }
        assert_eq!(seen.len(), 8);
    }

    #[test]
    fn names_and_namespaces_default_as_the_api_server_does() {
        let meta = |name: Option<&str>, ns: Option<&str>| ObjectMeta {
            name: name.map(str::to_string),
            namespace: ns.map(str::to_string),
            labels: Default::default(),
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

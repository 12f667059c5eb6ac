//! `cellwall.io/v1alpha1 Host`: a VM or bare-metal host an admin declares — the node whose
//! host-mode agent may report it, its labels (`metadata.labels`), and the addresses it may
//! have. Declared, because an agent is a witness for its node, not an authority: it cannot
//! make up a host, its labels or its addresses.

use super::{cerr, namespace_of, required_name, ConvertError, ObjectMeta};
use crate::de::null_default;
use crate::model::HostDecl;
use crate::net::Cidr;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostManifest {
    #[serde(rename = "apiVersion")]
    pub _api_version: Option<String>,
    #[serde(rename = "kind")]
    pub _kind: Option<String>,
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
    pub spec: HostSpec,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// The node whose host-mode agent protects this host.
    #[cfg_attr(
        feature = "schema",
        schemars(
            length(min = 1, max = 63),
            regex(pattern = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
        )
    )]
    pub node: String,
    /// Addresses (`192.0.2.10`) or networks (`10.1.0.0/24`) the host may have.
    #[serde(default, deserialize_with = "null_default")]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub addresses: Vec<String>,
}

/// A node name (what a certificate's name and a label value allow).
fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 63
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

pub fn convert_host(m: HostManifest) -> Result<HostDecl, ConvertError> {
    let name = required_name(&m.metadata)?;
    if !valid_node(&m.spec.node) {
        return Err(cerr(
            "spec.node",
            format!(
                "{:?}: expected a node name (1-63 of a-z, 0-9, '-', '.')",
                m.spec.node
            ),
        ));
    }
    let mut addresses = Vec::new();
    for (i, a) in m.spec.addresses.iter().enumerate() {
        let c = if a.contains('/') {
            a.parse::<Cidr>().ok()
        } else {
            a.parse::<std::net::IpAddr>().ok().map(Cidr::host)
        };
        addresses.push(c.ok_or_else(|| {
            cerr(
                format!("spec.addresses[{i}]"),
                format!("{a:?}: expected an address (192.0.2.10) or a network (10.1.0.0/24)"),
            )
        })?);
    }
    if addresses.is_empty() {
        return Err(cerr(
            "spec.addresses",
            "missing: a host needs the addresses its agent may report",
        ));
    }
    Ok(HostDecl {
        namespace: namespace_of(&m.metadata),
        name,
        labels: m.metadata.labels.0,
        node: m.spec.node,
        addresses,
    })
}

//! The inventory kinds: v1 Namespace, Pod and Node, read leniently (they carry many fields
//! Cellwall does not need) and converted with the API server's defaulting (protocol TCP,
//! namespace `default`, the automatic `kubernetes.io/metadata.name` label).

use super::{cerr, namespace_of, required_name, ConvertError, ObjectMeta};
use crate::de::{null_default, PortNum, ProtocolDe};
use crate::model::{ContainerPort, Namespace, Node, Owner, Protocol, Workload};
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, Deserialize)]
pub struct NamespaceManifest {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
}

#[derive(Debug, Deserialize)]
pub struct PodManifest {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "null_default")]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "null_default")]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    #[serde(default, deserialize_with = "null_default")]
    pub ports: Vec<ContainerPortManifest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPortManifest {
    #[serde(default)]
    pub name: Option<String>,
    pub container_port: PortNum,
    #[serde(default)]
    pub protocol: Option<ProtocolDe>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    #[serde(rename = "podIP", default)]
    pub pod_ip: Option<IpAddr>,
    #[serde(rename = "podIPs", default, deserialize_with = "null_default")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

#[derive(Debug, Deserialize)]
pub struct NodeManifest {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Deserialize, Default)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "null_default")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

pub fn convert_namespace(m: NamespaceManifest) -> Result<Namespace, ConvertError> {
    Ok(Namespace::new(
        required_name(&m.metadata)?,
        m.metadata.labels.0,
    ))
}

/// A Kind is alphanumeric, a name a DNS subdomain: anything else is ignored (learning writes
/// owners into comments and ids).
fn valid_owner(kind: &str, name: &str) -> bool {
    !kind.is_empty()
        && kind.len() <= 63
        && kind.bytes().all(|b| b.is_ascii_alphanumeric())
        && !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The pod's controller: the reference marked `controller` (else the first), with a
/// ReplicaSet named `<deployment>-<pod-template-hash>` resolved to its Deployment the way
/// `kubectl` does.
fn controller_of(refs: &[super::OwnerReference], labels: &crate::Labels) -> Option<Owner> {
    let r = refs
        .iter()
        .find(|r| r.controller == Some(true))
        .or(refs.first())
        .filter(|r| valid_owner(&r.kind, &r.name))?;
    if r.kind == "ReplicaSet" {
        if let Some(d) = labels
            .get("pod-template-hash")
            .and_then(|h| r.name.strip_suffix(h.as_str()))
            .and_then(|d| d.strip_suffix('-'))
            .filter(|d| !d.is_empty())
        {
            return Some(Owner {
                kind: "Deployment".into(),
                name: d.to_string(),
            });
        }
    }
    Some(Owner {
        kind: r.kind.clone(),
        name: r.name.clone(),
    })
}

pub fn convert_pod(m: PodManifest) -> Result<Workload, ConvertError> {
    let name = required_name(&m.metadata)?;
    let mut ports: Vec<ContainerPort> = Vec::new();
    for (ci, c) in m.spec.containers.iter().enumerate() {
        for (pi, p) in c.ports.iter().enumerate() {
            if let Some(n) = &p.name {
                crate::de::validate_port_name(n)
                    .map_err(|e| cerr(format!("spec.containers[{ci}].ports[{pi}].name"), e))?;
                if ports.iter().any(|q| q.name.as_deref() == Some(n)) {
                    return Err(cerr(
                        format!("spec.containers[{ci}].ports[{pi}].name"),
                        format!("duplicate port name {n:?} in this pod"),
                    ));
                }
            }
            ports.push(ContainerPort {
                name: p.name.clone(),
                port: p.container_port.0,
                protocol: p.protocol.map(|p| p.0).unwrap_or(Protocol::Tcp),
            });
        }
    }
    let mut ips = Vec::new();
    if let Some(st) = &m.status {
        ips.extend(st.pod_ip);
        for p in &st.pod_ips {
            if !ips.contains(&p.ip) {
                ips.push(p.ip);
            }
        }
    }
    let namespace = namespace_of(&m.metadata);
    let labels = m.metadata.labels.0;
    let owner = controller_of(&m.metadata.owner_references, &labels);
    Ok(Workload {
        namespace,
        name,
        labels: labels.into(),
        ips,
        ports,
        node: m.spec.node_name.filter(|n| !n.is_empty()),
        host_network: m.spec.host_network,
        owner,
    })
}

pub fn convert_node(m: NodeManifest) -> Result<Node, ConvertError> {
    let name = required_name(&m.metadata)?;
    let mut ips = Vec::new();
    for (i, a) in m.status.unwrap_or_default().addresses.iter().enumerate() {
        if a.kind == "InternalIP" || a.kind == "ExternalIP" {
            let ip: IpAddr = a.address.parse().map_err(|_| {
                cerr(
                    format!("status.addresses[{i}].address"),
                    format!("{:?} is not an IP address", a.address),
                )
            })?;
            ips.push(ip);
        }
    }
    Ok(Node {
        name,
        labels: m.metadata.labels.0,
        ips,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pods_default_protocol_namespace_and_merge_addresses() {
        let m: PodManifest = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [{"ports": [{"containerPort": 80, "name": "http"}]}]},
            "status": {"podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}, {"ip": "fd00::1"}]}
        }))
        .unwrap();
        let w = convert_pod(m).unwrap();
        assert_eq!(w.namespace, "default");
        assert_eq!(w.ports[0].protocol, Protocol::Tcp);
        assert_eq!(w.ips.len(), 2);
        let dup: PodManifest = serde_json::from_value(json!({
            "metadata": {"name": "a"},
            "spec": {"containers": [{"ports": [{"containerPort": 80, "name": "web"}]},
                                    {"ports": [{"containerPort": 81, "name": "web"}]}]}
        }))
        .unwrap();
        let e = convert_pod(dup).unwrap_err();
        assert_eq!(e.path, "spec.containers[1].ports[0].name");
    }

    #[test]
    fn a_pods_controller_is_its_deployment_statefulset_or_job() {
        let pod = |labels: serde_json::Value, refs: serde_json::Value| {
            let m: PodManifest = serde_json::from_value(json!({
                "metadata": {"name": "p", "labels": labels, "ownerReferences": refs}
            }))
            .unwrap();
            convert_pod(m).unwrap().owner.map(|o| o.to_string())
        };
        let rs = json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "cart-5d8f7",
                         "controller": true, "uid": "u"}]);
        assert_eq!(
            pod(json!({"pod-template-hash": "5d8f7"}), rs.clone()).as_deref(),
            Some("Deployment/cart")
        );
        // A ReplicaSet of its own (no matching hash) stays a ReplicaSet.
        assert_eq!(pod(json!({}), rs).as_deref(), Some("ReplicaSet/cart-5d8f7"));
        let two = json!([{"kind": "ConfigMap", "name": "x"},
                         {"kind": "StatefulSet", "name": "db", "controller": true}]);
        assert_eq!(pod(json!({}), two).as_deref(), Some("StatefulSet/db"));
        assert_eq!(pod(json!({}), json!(null)), None);
        assert_eq!(pod(json!({}), json!([{"kind": "", "name": "x"}])), None);
        // A name that is no DNS subdomain (a line break, YAML) is no owner.
        let evil = json!([{"kind": "Job", "name": "x\n---\nkind: Policy", "controller": true}]);
        assert_eq!(pod(json!({}), evil), None);
    }

    #[test]
    fn nodes_keep_internal_and_external_addresses() {
        let m: NodeManifest = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "Hostname", "address": "n1"},
                                     {"type": "InternalIP", "address": "192.0.2.1"}]}
        }))
        .unwrap();
        assert_eq!(convert_node(m).unwrap().ips.len(), 1);
        let bad: NodeManifest = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [{"type": "ExternalIP", "address": "n1"}]}
        }))
        .unwrap();
        assert_eq!(
            convert_node(bad).unwrap_err().path,
            "status.addresses[0].address"
        );
        let ns: NamespaceManifest =
            serde_json::from_value(json!({"metadata": {"name": "x"}})).unwrap();
        let ns = convert_namespace(ns).unwrap();
        assert_eq!(
            ns.labels
                .get(crate::model::NAMESPACE_NAME_LABEL)
                .map(String::as_str),
            Some("x")
        );
    }
}

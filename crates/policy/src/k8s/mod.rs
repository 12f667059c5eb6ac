//! Typed manifests of every kind Cellwall reads, and their conversion into the model.
//! Policy specs reject unknown fields (a typo in a security policy must not silently widen it);
//! inventory kinds accept the many fields Cellwall does not need.

use crate::de::{IntOrName, LabelsDe, PortNum, ProtocolDe, SelectorDe, Timestamp};
use crate::labels::LabelSelector;
use crate::model::*;
use crate::net::Cidr;
use serde::Deserialize;
use std::net::IpAddr;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    pub name: Option<String>,
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: LabelsDe,
}

// ---------------------------------------------------------------- inventory kinds

#[derive(Debug, Deserialize)]
pub struct NamespaceManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
}

#[derive(Debug, Deserialize)]
pub struct PodManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: PodSpec,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default)]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub host_network: bool,
    #[serde(default)]
    pub node_name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Container {
    #[serde(default)]
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
    #[serde(rename = "podIPs", default)]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Debug, Deserialize)]
pub struct PodIp {
    pub ip: IpAddr,
}

#[derive(Debug, Deserialize)]
pub struct NodeManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<NodeStatus>,
}

#[derive(Debug, Deserialize, Default)]
pub struct NodeStatus {
    #[serde(default)]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Debug, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub kind: String,
    pub address: String,
}

// ---------------------------------------------------------------- NetworkPolicy

#[derive(Debug, Deserialize)]
pub struct NetworkPolicyManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: NetworkPolicySpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    pub pod_selector: SelectorDe,
    #[serde(default)]
    pub policy_types: Option<Vec<PolicyTypeDe>>,
    #[serde(default)]
    pub ingress: Option<Vec<NpIngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<NpEgressRule>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum PolicyTypeDe {
    Ingress,
    Egress,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NpIngressRule {
    #[serde(default)]
    pub from: Option<Vec<NpPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NpEgressRule {
    #[serde(default)]
    pub to: Option<Vec<NpPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase", try_from = "RawNpPeer")]
pub enum NpPeer {
    Selectors {
        pods: Option<LabelSelector>,
        namespaces: Option<LabelSelector>,
    },
    IpBlock {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawNpPeer {
    #[serde(default)]
    pod_selector: Option<SelectorDe>,
    #[serde(default)]
    namespace_selector: Option<SelectorDe>,
    #[serde(default)]
    ip_block: Option<IpBlockDe>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IpBlockDe {
    cidr: Cidr,
    #[serde(default)]
    except: Vec<Cidr>,
}

impl TryFrom<RawNpPeer> for NpPeer {
    type Error = String;
    fn try_from(r: RawNpPeer) -> Result<Self, String> {
        match (r.pod_selector, r.namespace_selector, r.ip_block) {
            (None, None, None) => {
                Err("a peer needs podSelector, namespaceSelector or ipBlock (an empty peer selects nothing)".into())
            }
            (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
                Err("ipBlock cannot be combined with podSelector or namespaceSelector in one peer".into())
            }
            (None, None, Some(b)) => {
                check_except(&b.cidr, &b.except)?;
                Ok(NpPeer::IpBlock { cidr: b.cidr, except: b.except })
            }
            (p, n, None) => Ok(NpPeer::Selectors { pods: p.map(|s| s.0), namespaces: n.map(|s| s.0) }),
        }
    }
}

fn check_except(cidr: &Cidr, except: &[Cidr]) -> Result<(), String> {
    for e in except {
        if !cidr.contains_net(e) || e == cidr {
            return Err(format!("except {e} must be a strict subnet of cidr {cidr}"));
        }
    }
    Ok(())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NpPort {
    #[serde(default)]
    pub protocol: Option<ProtocolDe>,
    #[serde(default)]
    pub port: Option<IntOrName>,
    #[serde(default)]
    pub end_port: Option<PortNum>,
}

// ---------------------------------------------------------------- AdminNetworkPolicy / Baseline

#[derive(Debug, Deserialize)]
pub struct AnpManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: AnpSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpSpec {
    /// Absent for BaselineAdminNetworkPolicy (checked at conversion).
    #[serde(default)]
    pub priority: Option<i64>,
    pub subject: AnpSubject,
    #[serde(default)]
    pub ingress: Option<Vec<AnpIngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<AnpEgressRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpSubject {
    #[serde(default)]
    pub namespaces: Option<SelectorDe>,
    #[serde(default)]
    pub pods: Option<AnpNsPods>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpNsPods {
    pub namespace_selector: SelectorDe,
    pub pod_selector: SelectorDe,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum AnpAction {
    Allow,
    Deny,
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpIngressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: AnpAction,
    pub from: Vec<AnpPeer>,
    #[serde(default)]
    pub ports: Option<Vec<AnpPort>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpEgressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: AnpAction,
    pub to: Vec<AnpPeer>,
    #[serde(default)]
    pub ports: Option<Vec<AnpPort>>,
}

/// Ingress peers may only use `namespaces` and `pods`; checked at conversion.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpPeer {
    #[serde(default)]
    pub namespaces: Option<SelectorDe>,
    #[serde(default)]
    pub pods: Option<AnpNsPods>,
    #[serde(default)]
    pub nodes: Option<SelectorDe>,
    #[serde(default)]
    pub networks: Option<Vec<Cidr>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AnpPort {
    #[serde(default)]
    pub port_number: Option<AnpPortNumber>,
    #[serde(default)]
    pub named_port: Option<String>,
    #[serde(default)]
    pub port_range: Option<AnpPortRange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnpPortNumber {
    #[serde(default)]
    pub protocol: Option<ProtocolDe>,
    pub port: PortNum,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnpPortRange {
    #[serde(default)]
    pub protocol: Option<ProtocolDe>,
    pub start: PortNum,
    pub end: PortNum,
}

// ---------------------------------------------------------------- Cellwall Policy / ClusterPolicy

#[derive(Debug, Deserialize)]
pub struct CellwallManifest {
    #[serde(default)]
    pub metadata: ObjectMeta,
    pub spec: CellwallSpec,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum TierDe {
    Admin,
    Application,
    Baseline,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ModeDe {
    Enforce,
    Audit,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CellwallSpec {
    #[serde(default)]
    pub tier: Option<TierDe>,
    #[serde(default)]
    pub priority: Option<i32>,
    #[serde(default)]
    pub mode: Option<ModeDe>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// Pods the policy applies to (in its namespace for `Policy`); absent means all.
    #[serde(default)]
    pub pod_selector: Option<SelectorDe>,
    /// `ClusterPolicy` only: namespaces whose pods it applies to; absent means all.
    #[serde(default)]
    pub namespace_selector: Option<SelectorDe>,
    #[serde(default)]
    pub ingress: Option<Vec<CellwallIngressRule>>,
    #[serde(default)]
    pub egress: Option<Vec<CellwallEgressRule>>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
pub enum CellwallAction {
    Allow,
    Deny,
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CellwallIngressRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Option<CellwallAction>,
    #[serde(default)]
    pub from: Option<Vec<CellwallPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CellwallEgressRule {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub action: Option<CellwallAction>,
    #[serde(default)]
    pub to: Option<Vec<CellwallPeer>>,
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum EntityDe {
    World,
    Host,
    Cluster,
    All,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CellwallPeer {
    #[serde(default)]
    pub pod_selector: Option<SelectorDe>,
    #[serde(default)]
    pub namespace_selector: Option<SelectorDe>,
    #[serde(default)]
    pub node_selector: Option<SelectorDe>,
    #[serde(default)]
    pub cidr: Option<Cidr>,
    #[serde(default)]
    pub except: Option<Vec<Cidr>>,
    #[serde(default)]
    pub entity: Option<EntityDe>,
}

// ---------------------------------------------------------------- conversion

/// A semantic error found after deserialisation: the field path and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConvertError {
    pub path: String,
    pub message: String,
}

fn cerr(path: impl Into<String>, message: impl Into<String>) -> ConvertError {
    ConvertError {
        path: path.into(),
        message: message.into(),
    }
}

fn required_name(meta: &ObjectMeta) -> Result<String, ConvertError> {
    match meta.name.as_deref() {
        Some(n) if !n.is_empty() => Ok(n.to_string()),
        _ => Err(cerr("metadata.name", "missing: every object needs a name")),
    }
}

fn namespace_of(meta: &ObjectMeta) -> String {
    meta.namespace
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

pub fn convert_namespace(m: NamespaceManifest) -> Result<Namespace, ConvertError> {
    Ok(Namespace::new(
        required_name(&m.metadata)?,
        m.metadata.labels.0,
    ))
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
    Ok(Workload {
        namespace: namespace_of(&m.metadata),
        name,
        labels: m.metadata.labels.0,
        ips,
        ports,
        node: m.spec.node_name.filter(|n| !n.is_empty()),
        host_network: m.spec.host_network,
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

fn np_ports(ports: &Option<Vec<NpPort>>, path: &str) -> Result<Vec<PortSpec>, ConvertError> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().flatten().enumerate() {
        let protocol = p.protocol.map(|p| p.0).unwrap_or(Protocol::Tcp);
        let spec = match (&p.port, p.end_port) {
            (None, None) => PortSpec::Range {
                protocol,
                lo: 0,
                hi: 65535,
            },
            (None, Some(_)) => {
                return Err(cerr(
                    format!("{path}[{i}].endPort"),
                    "endPort requires port",
                ))
            }
            (Some(IntOrName::Num(n)), None) => PortSpec::Range {
                protocol,
                lo: *n,
                hi: *n,
            },
            (Some(IntOrName::Num(n)), Some(e)) => {
                if e.0 < *n {
                    return Err(cerr(
                        format!("{path}[{i}].endPort"),
                        format!("endPort {} must be greater than or equal to port {n}", e.0),
                    ));
                }
                PortSpec::Range {
                    protocol,
                    lo: *n,
                    hi: e.0,
                }
            }
            (Some(IntOrName::Name(n)), None) => PortSpec::Named {
                protocol: Some(protocol),
                name: n.clone(),
            },
            (Some(IntOrName::Name(_)), Some(_)) => {
                return Err(cerr(
                    format!("{path}[{i}].endPort"),
                    "endPort cannot be used with a named port",
                ))
            }
        };
        out.push(spec);
    }
    Ok(out)
}

fn np_peer(p: &NpPeer, own_ns: &str) -> Peer {
    match p {
        NpPeer::IpBlock { cidr, except } => Peer::Cidr {
            cidr: *cidr,
            except: except.clone(),
        },
        NpPeer::Selectors { pods, namespaces } => Peer::Pods {
            namespaces: match namespaces {
                Some(ns) => NamespaceMatch::Selector(ns.clone()),
                None => NamespaceMatch::Named(own_ns.to_string()),
            },
            pods: pods.clone().unwrap_or_default(),
        },
    }
}

pub fn convert_network_policy(m: NetworkPolicyManifest) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let ns = namespace_of(&m.metadata);
    let s = m.spec;
    let isolates = match &s.policy_types {
        Some(t) => [
            t.contains(&PolicyTypeDe::Ingress),
            t.contains(&PolicyTypeDe::Egress),
        ],
        // API server defaulting: Ingress always, Egress when egress rules are present.
        None => [true, s.egress.as_ref().is_some_and(|e| !e.is_empty())],
    };
    let mut rules = Vec::new();
    // Ingress and egress rules differ only in the name of their peer list (`from`/`to`).
    let ingress = s
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (Direction::Ingress, i, &r.from, &r.ports));
    let egress = s
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (Direction::Egress, i, &r.to, &r.ports));
    for (direction, i, peers, ports) in ingress.chain(egress) {
        let peers = match peers {
            Some(f) if !f.is_empty() => f.iter().map(|p| np_peer(p, &ns)).collect(),
            _ => vec![Peer::Any],
        };
        let ports = np_ports(ports, &format!("spec.{}[{i}].ports", direction.as_str()))?;
        rules.push(Rule {
            direction,
            index: i,
            name: None,
            action: Action::Allow,
            peers,
            ports,
            expires_at: None,
        });
    }
    Ok(Policy {
        id: PolicyId::new(Family::NetworkPolicy, Some(&ns), &name),
        tier: Tier::Application,
        priority: 0,
        mode: Mode::Enforce,
        expires_at: None,
        subject: Subject {
            namespaces: NamespaceMatch::Named(ns),
            pods: s.pod_selector.0,
        },
        isolates,
        rules,
    })
}

fn anp_ports(ports: &Option<Vec<AnpPort>>, path: &str) -> Result<Vec<PortSpec>, ConvertError> {
    let mut out = Vec::new();
    for (i, p) in ports.iter().flatten().enumerate() {
        let spec = match (&p.port_number, &p.named_port, &p.port_range) {
            (Some(n), None, None) => PortSpec::Range {
                protocol: n.protocol.map(|p| p.0).unwrap_or(Protocol::Tcp),
                lo: n.port.0,
                hi: n.port.0,
            },
            (None, Some(name), None) => {
                crate::de::validate_port_name(name)
                    .map_err(|e| cerr(format!("{path}[{i}].namedPort"), e))?;
                PortSpec::Named {
                    protocol: None,
                    name: name.clone(),
                }
            }
            (None, None, Some(r)) => {
                if r.end.0 < r.start.0 {
                    return Err(cerr(
                        format!("{path}[{i}].portRange.end"),
                        "end must be greater than or equal to start",
                    ));
                }
                PortSpec::Range {
                    protocol: r.protocol.map(|p| p.0).unwrap_or(Protocol::Tcp),
                    lo: r.start.0,
                    hi: r.end.0,
                }
            }
            _ => {
                return Err(cerr(
                    format!("{path}[{i}]"),
                    "exactly one of portNumber, namedPort or portRange must be set",
                ))
            }
        };
        out.push(spec);
    }
    Ok(out)
}

fn anp_peers(peers: &[AnpPeer], dir: Direction, path: &str) -> Result<Vec<Peer>, ConvertError> {
    if peers.is_empty() {
        return Err(cerr(path, "at least one peer is required"));
    }
    let mut out = Vec::new();
    for (i, p) in peers.iter().enumerate() {
        let set = [
            p.namespaces.is_some(),
            p.pods.is_some(),
            p.nodes.is_some(),
            p.networks.is_some(),
        ];
        if set.iter().filter(|b| **b).count() != 1 {
            return Err(cerr(
                format!("{path}[{i}]"),
                "exactly one of namespaces, pods, nodes or networks must be set",
            ));
        }
        if dir == Direction::Ingress && (p.nodes.is_some() || p.networks.is_some()) {
            return Err(cerr(
                format!("{path}[{i}]"),
                "ingress peers can only be namespaces or pods",
            ));
        }
        if let Some(ns) = &p.namespaces {
            out.push(Peer::Pods {
                namespaces: NamespaceMatch::Selector(ns.0.clone()),
                pods: LabelSelector::everything(),
            });
        } else if let Some(pp) = &p.pods {
            out.push(Peer::Pods {
                namespaces: NamespaceMatch::Selector(pp.namespace_selector.0.clone()),
                pods: pp.pod_selector.0.clone(),
            });
        } else if let Some(n) = &p.nodes {
            out.push(Peer::Nodes(n.0.clone()));
        } else if let Some(nets) = &p.networks {
            if nets.is_empty() || nets.len() > 25 {
                return Err(cerr(
                    format!("{path}[{i}].networks"),
                    "between 1 and 25 CIDRs are required",
                ));
            }
            out.extend(nets.iter().map(|c| Peer::Cidr {
                cidr: *c,
                except: Vec::new(),
            }));
        }
    }
    Ok(out)
}

fn anp_subject(s: &AnpSubject) -> Result<Subject, ConvertError> {
    match (&s.namespaces, &s.pods) {
        (Some(ns), None) => Ok(Subject {
            namespaces: NamespaceMatch::Selector(ns.0.clone()),
            pods: LabelSelector::everything(),
        }),
        (None, Some(p)) => Ok(Subject {
            namespaces: NamespaceMatch::Selector(p.namespace_selector.0.clone()),
            pods: p.pod_selector.0.clone(),
        }),
        _ => Err(cerr(
            "spec.subject",
            "exactly one of namespaces or pods must be set",
        )),
    }
}

/// Converts an AdminNetworkPolicy (`baseline == false`) or a BaselineAdminNetworkPolicy.
pub fn convert_anp(m: AnpManifest, baseline: bool) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let s = m.spec;
    let (family, tier, priority) = if baseline {
        if name != "default" {
            return Err(cerr(
                "metadata.name",
                "a BaselineAdminNetworkPolicy must be named \"default\" (it is a singleton)",
            ));
        }
        if s.priority.is_some() {
            return Err(cerr(
                "spec.priority",
                "BaselineAdminNetworkPolicy has no priority",
            ));
        }
        (Family::BaselineAdminNetworkPolicy, Tier::Baseline, 0)
    } else {
        let p = s
            .priority
            .ok_or_else(|| cerr("spec.priority", "missing: expected an integer 0-1000"))?;
        if !(0..=1000).contains(&p) {
            return Err(cerr(
                "spec.priority",
                format!("{p} is out of range: expected an integer 0-1000"),
            ));
        }
        (Family::AdminNetworkPolicy, Tier::Admin, p as i32)
    };
    let action = |a: AnpAction, path: String| -> Result<Action, ConvertError> {
        match a {
            AnpAction::Allow => Ok(Action::Allow),
            AnpAction::Deny => Ok(Action::Deny),
            AnpAction::Pass if baseline => Err(cerr(
                path,
                "BaselineAdminNetworkPolicy actions are Allow or Deny",
            )),
            AnpAction::Pass => Ok(Action::Pass),
        }
    };
    let mut rules = Vec::new();
    let ingress = s.ingress.unwrap_or_default();
    let egress = s.egress.unwrap_or_default();
    if ingress.len() > 100 || egress.len() > 100 {
        return Err(cerr("spec", "at most 100 ingress and 100 egress rules"));
    }
    let ingress = ingress.iter().enumerate().map(|(i, r)| {
        (
            Direction::Ingress,
            i,
            &r.name,
            r.action,
            "from",
            r.from.as_slice(),
            &r.ports,
        )
    });
    let egress = egress.iter().enumerate().map(|(i, r)| {
        (
            Direction::Egress,
            i,
            &r.name,
            r.action,
            "to",
            r.to.as_slice(),
            &r.ports,
        )
    });
    for (direction, i, name, act, field, peers, ports) in ingress.chain(egress) {
        let p = format!("spec.{}[{i}]", direction.as_str());
        rules.push(Rule {
            direction,
            index: i,
            name: name.clone(),
            action: action(act, format!("{p}.action"))?,
            peers: anp_peers(peers, direction, &format!("{p}.{field}"))?,
            ports: anp_ports(ports, &format!("{p}.ports"))?,
            expires_at: None,
        });
    }
    Ok(Policy {
        id: PolicyId::new(family, None, &name),
        tier,
        priority,
        mode: Mode::Enforce,
        expires_at: None,
        subject: anp_subject(&s.subject)?,
        isolates: [false, false],
        rules,
    })
}

fn cellwall_peer(p: &CellwallPeer, own_ns: Option<&str>, path: &str) -> Result<Peer, ConvertError> {
    let selectors = p.pod_selector.is_some() || p.namespace_selector.is_some();
    let kinds = [
        selectors,
        p.node_selector.is_some(),
        p.cidr.is_some(),
        p.entity.is_some(),
    ];
    if kinds.iter().filter(|b| **b).count() != 1 {
        return Err(cerr(
            path,
            "exactly one of podSelector/namespaceSelector, nodeSelector, cidr or entity must be set",
        ));
    }
    if p.except.is_some() && p.cidr.is_none() {
        return Err(cerr(format!("{path}.except"), "except needs cidr"));
    }
    Ok(if selectors {
        let namespaces = match (&p.namespace_selector, own_ns) {
            (Some(ns), _) => NamespaceMatch::Selector(ns.0.clone()),
            (None, Some(own)) => NamespaceMatch::Named(own.to_string()),
            (None, None) => NamespaceMatch::Selector(LabelSelector::everything()),
        };
        Peer::Pods {
            namespaces,
            pods: p
                .pod_selector
                .as_ref()
                .map(|s| s.0.clone())
                .unwrap_or_default(),
        }
    } else if let Some(n) = &p.node_selector {
        Peer::Nodes(n.0.clone())
    } else if let Some(c) = &p.cidr {
        let except = p.except.clone().unwrap_or_default();
        check_except(c, &except).map_err(|e| cerr(format!("{path}.except"), e))?;
        Peer::Cidr { cidr: *c, except }
    } else {
        Peer::Entity(match p.entity.expect("checked above") {
            EntityDe::World => Entity::World,
            EntityDe::Host => Entity::Host,
            EntityDe::Cluster => Entity::Cluster,
            EntityDe::All => Entity::All,
        })
    })
}

/// Converts a Cellwall `Policy` (`cluster == false`, namespaced) or `ClusterPolicy`.
pub fn convert_cellwall(m: CellwallManifest, cluster: bool) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let s = m.spec;
    let ns = if cluster {
        None
    } else {
        Some(namespace_of(&m.metadata))
    };
    let tier = match s.tier.unwrap_or(TierDe::Application) {
        TierDe::Admin => Tier::Admin,
        TierDe::Application => Tier::Application,
        TierDe::Baseline => Tier::Baseline,
    };
    let subject =
        match (&ns, &s.namespace_selector) {
            (Some(_), Some(_)) => return Err(cerr(
                "spec.namespaceSelector",
                "only a ClusterPolicy can select namespaces; a Policy applies in its own namespace",
            )),
            (Some(own), None) => Subject {
                namespaces: NamespaceMatch::Named(own.clone()),
                pods: s
                    .pod_selector
                    .as_ref()
                    .map(|s| s.0.clone())
                    .unwrap_or_default(),
            },
            (None, sel) => Subject {
                namespaces: NamespaceMatch::Selector(
                    sel.as_ref().map(|s| s.0.clone()).unwrap_or_default(),
                ),
                pods: s
                    .pod_selector
                    .as_ref()
                    .map(|s| s.0.clone())
                    .unwrap_or_default(),
            },
        };
    let action = |a: Option<CellwallAction>, path: String| -> Result<Action, ConvertError> {
        match a.unwrap_or(CellwallAction::Allow) {
            CellwallAction::Allow => Ok(Action::Allow),
            CellwallAction::Deny => Ok(Action::Deny),
            CellwallAction::Pass if tier == Tier::Admin => Ok(Action::Pass),
            CellwallAction::Pass => Err(cerr(
                path,
                "Pass is only meaningful in tier admin (it hands the decision to the next tier)",
            )),
        }
    };
    let peers =
        |list: &Option<Vec<CellwallPeer>>, path: String| -> Result<Vec<Peer>, ConvertError> {
            match list {
                None => Ok(vec![Peer::Any]),
                Some(l) if l.is_empty() => Err(cerr(
                    path,
                    "an empty peer list matches nothing; omit it to match any peer",
                )),
                Some(l) => l
                    .iter()
                    .enumerate()
                    .map(|(i, p)| cellwall_peer(p, ns.as_deref(), &format!("{path}[{i}]")))
                    .collect(),
            }
        };
    let mut rules = Vec::new();
    let ingress = s.ingress.iter().flatten().enumerate().map(|(i, r)| {
        (
            Direction::Ingress,
            i,
            &r.name,
            r.action,
            "from",
            &r.from,
            &r.ports,
            r.expires_at,
        )
    });
    let egress = s.egress.iter().flatten().enumerate().map(|(i, r)| {
        (
            Direction::Egress,
            i,
            &r.name,
            r.action,
            "to",
            &r.to,
            &r.ports,
            r.expires_at,
        )
    });
    for (direction, i, name, act, field, list, ports, expires_at) in ingress.chain(egress) {
        let p = format!("spec.{}[{i}]", direction.as_str());
        rules.push(Rule {
            direction,
            index: i,
            name: name.clone(),
            action: action(act, format!("{p}.action"))?,
            peers: peers(list, format!("{p}.{field}"))?,
            ports: np_ports(ports, &format!("{p}.ports"))?,
            expires_at: expires_at.map(|t| t.0),
        });
    }
    Ok(Policy {
        id: PolicyId::new(
            if cluster {
                Family::ClusterPolicy
            } else {
                Family::Policy
            },
            ns.as_deref(),
            &name,
        ),
        tier,
        priority: s.priority.unwrap_or(1000),
        mode: match s.mode.unwrap_or(ModeDe::Enforce) {
            ModeDe::Enforce => Mode::Enforce,
            ModeDe::Audit => Mode::Audit,
        },
        expires_at: s.expires_at.map(|t| t.0),
        subject,
        // A Cellwall policy isolates a direction when it lists that direction (even empty).
        isolates: [s.ingress.is_some(), s.egress.is_some()],
        rules,
    })
}

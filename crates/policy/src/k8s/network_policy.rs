//! NetworkPolicy (networking.k8s.io/v1): the application tier. Unknown fields are errors (a typo
//! in a security policy must not silently widen it); `policyTypes` defaults as the API server
//! does. The port form (`NpPort`) is shared with Cellwall's own policies.

use super::{cerr, check_except, namespace_of, required_name, ConvertError, ObjectMeta};
use crate::de::{null_default, IntOrName, PortNum, ProtocolDe, SelectorDe};
use crate::labels::LabelSelector;
use crate::model::*;
use crate::net::Cidr;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct NetworkPolicyManifest {
    #[serde(default, deserialize_with = "null_default")]
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
    #[serde(default, deserialize_with = "null_default")]
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

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.endPort) || (has(self.port) && type(self.port) == int && self.endPort >= self.port)",
    "message": "endPort needs a numeric port no greater than it"
}])))]
pub struct NpPort {
    /// TCP (the default), UDP or SCTP.
    #[serde(default)]
    pub protocol: Option<ProtocolDe>,
    /// A port number or a container port's name; absent means every port.
    #[serde(default)]
    pub port: Option<IntOrName>,
    /// With a numeric port: the last port of the range.
    #[serde(default)]
    pub end_port: Option<PortNum>,
}

pub(super) fn np_ports(
    ports: &Option<Vec<NpPort>>,
    path: &str,
) -> Result<Vec<PortSpec>, ConvertError> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn np(spec: serde_json::Value) -> Result<Policy, ConvertError> {
        convert_network_policy(
            serde_json::from_value(
                json!({"metadata": {"name": "np", "namespace": "x"}, "spec": spec}),
            )
            .unwrap(),
        )
    }

    #[test]
    fn policy_types_default_as_the_api_server_does() {
        let p = np(json!({"podSelector": {}})).unwrap();
        assert_eq!(p.isolates, [true, false]);
        let p = np(json!({"podSelector": {}, "egress": [{}]})).unwrap();
        assert_eq!(p.isolates, [true, true]);
        let p = np(json!({"podSelector": {}, "policyTypes": ["Egress"]})).unwrap();
        assert_eq!(p.isolates, [false, true]);
        // A rule without peers admits anyone; a peer with only podSelector stays in the namespace.
        let p = np(json!({"podSelector": {}, "ingress": [{}, {"from": [{"podSelector": {}}]}]}))
            .unwrap();
        assert_eq!(p.rules[0].peers, vec![Peer::Any]);
        assert!(matches!(
            &p.rules[1].peers[0],
            Peer::Pods { namespaces: NamespaceMatch::Named(n), .. } if n == "x"
        ));
    }

    #[test]
    fn ports_ranges_and_names() {
        let p = np(json!({"podSelector": {}, "ingress": [{"ports": [
            {"port": 80, "endPort": 90}, {"port": "http", "protocol": "UDP"}, {}]}]}))
        .unwrap();
        assert_eq!(
            p.rules[0].ports,
            vec![
                PortSpec::Range {
                    protocol: Protocol::Tcp,
                    lo: 80,
                    hi: 90
                },
                PortSpec::Named {
                    protocol: Some(Protocol::Udp),
                    name: "http".into()
                },
                PortSpec::Range {
                    protocol: Protocol::Tcp,
                    lo: 0,
                    hi: 65535
                },
            ]
        );
        let e =
            np(json!({"podSelector": {}, "egress": [{"ports": [{"port": "web", "endPort": 90}]}]}))
                .unwrap_err();
        assert_eq!(e.path, "spec.egress[0].ports[0].endPort");
    }
}

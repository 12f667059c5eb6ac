//! AdminNetworkPolicy and BaselineAdminNetworkPolicy (policy.networking.k8s.io/v1alpha1): the
//! admin tier (priorities 0-1000, `Pass`) and the baseline tier (a singleton named `default`).

use super::{cerr, cluster_subject, ns_and_pods, required_name, ConvertError, ObjectMeta};
use crate::de::{null_default, PortNum, ProtocolDe, SelectorDe};
use crate::model::*;
use crate::net::Cidr;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct AnpManifest {
    #[serde(default, deserialize_with = "null_default")]
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
        let selected = match (&p.namespaces, &p.pods) {
            (Some(ns), _) => Some(ns_and_pods(ns, None)),
            (_, Some(pp)) => Some(ns_and_pods(&pp.namespace_selector, Some(&pp.pod_selector))),
            _ => None,
        };
        if let Some((namespaces, pods)) = selected {
            out.push(Peer::Pods { namespaces, pods });
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
    let pods = s
        .pods
        .as_ref()
        .map(|p| (&p.namespace_selector, &p.pod_selector));
    cluster_subject(s.namespaces.as_ref(), pods)
}

/// Family, tier and priority: an AdminNetworkPolicy needs a priority 0-1000; a
/// BaselineAdminNetworkPolicy has none and is the singleton `default`.
fn anp_placement(
    name: &str,
    priority: Option<i64>,
    baseline: bool,
) -> Result<(Family, Tier, i32), ConvertError> {
    if baseline {
        if name != "default" {
            return Err(cerr(
                "metadata.name",
                "a BaselineAdminNetworkPolicy must be named \"default\" (it is a singleton)",
            ));
        }
        if priority.is_some() {
            return Err(cerr(
                "spec.priority",
                "BaselineAdminNetworkPolicy has no priority",
            ));
        }
        return Ok((Family::BaselineAdminNetworkPolicy, Tier::Baseline, 0));
    }
    let p = priority.ok_or_else(|| cerr("spec.priority", "missing: expected an integer 0-1000"))?;
    if !(0..=1000).contains(&p) {
        return Err(cerr(
            "spec.priority",
            format!("{p} is out of range: expected an integer 0-1000"),
        ));
    }
    Ok((Family::AdminNetworkPolicy, Tier::Admin, p as i32))
}

fn anp_action(a: AnpAction, baseline: bool, path: String) -> Result<Action, ConvertError> {
    match a {
        AnpAction::Allow => Ok(Action::Allow),
        AnpAction::Deny => Ok(Action::Deny),
        AnpAction::Pass if baseline => Err(cerr(
            path,
            "BaselineAdminNetworkPolicy actions are Allow or Deny",
        )),
        AnpAction::Pass => Ok(Action::Pass),
    }
}

/// One rule of either direction (they differ only in the name of their peer list).
struct AnpRuleParts<'a> {
    direction: Direction,
    index: usize,
    name: &'a Option<String>,
    action: AnpAction,
    field: &'static str,
    peers: &'a [AnpPeer],
    ports: &'a Option<Vec<AnpPort>>,
}

fn anp_rules(
    ingress: &[AnpIngressRule],
    egress: &[AnpEgressRule],
    baseline: bool,
) -> Result<Vec<Rule>, ConvertError> {
    if ingress.len() > 100 || egress.len() > 100 {
        return Err(cerr("spec", "at most 100 ingress and 100 egress rules"));
    }
    let ingress = ingress.iter().enumerate().map(|(i, r)| AnpRuleParts {
        direction: Direction::Ingress,
        index: i,
        name: &r.name,
        action: r.action,
        field: "from",
        peers: &r.from,
        ports: &r.ports,
    });
    let egress = egress.iter().enumerate().map(|(i, r)| AnpRuleParts {
        direction: Direction::Egress,
        index: i,
        name: &r.name,
        action: r.action,
        field: "to",
        peers: &r.to,
        ports: &r.ports,
    });
    ingress
        .chain(egress)
        .map(|r| {
            let p = format!("spec.{}[{}]", r.direction.as_str(), r.index);
            Ok(Rule {
                direction: r.direction,
                index: r.index,
                name: r.name.clone(),
                action: anp_action(r.action, baseline, format!("{p}.action"))?,
                peers: anp_peers(r.peers, r.direction, &format!("{p}.{}", r.field))?,
                ports: anp_ports(r.ports, &format!("{p}.ports"))?,
                expires_at: None,
            })
        })
        .collect()
}

/// Converts an AdminNetworkPolicy (`baseline == false`) or a BaselineAdminNetworkPolicy.
pub fn convert_anp(m: AnpManifest, baseline: bool) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let s = m.spec;
    let (family, tier, priority) = anp_placement(&name, s.priority, baseline)?;
    let rules = anp_rules(
        s.ingress.as_deref().unwrap_or_default(),
        s.egress.as_deref().unwrap_or_default(),
        baseline,
    )?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn anp(name: &str, spec: serde_json::Value, baseline: bool) -> Result<Policy, ConvertError> {
        convert_anp(
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).unwrap(),
            baseline,
        )
    }

    #[test]
    fn admin_needs_a_priority_and_baseline_is_the_default_singleton() {
        let subject = json!({"namespaces": {}});
        let e = anp("a", json!({"subject": subject}), false).unwrap_err();
        assert_eq!(e.path, "spec.priority");
        let e = anp("a", json!({"priority": 1001, "subject": subject}), false).unwrap_err();
        assert!(e.message.contains("out of range"), "{e}");
        let p = anp("a", json!({"priority": 7, "subject": subject}), false).unwrap();
        assert_eq!((p.tier, p.priority), (Tier::Admin, 7));
        let e = anp("b", json!({"subject": subject}), true).unwrap_err();
        assert_eq!(e.path, "metadata.name");
        let p = anp("default", json!({"subject": subject}), true).unwrap();
        assert_eq!(p.tier, Tier::Baseline);
    }

    #[test]
    fn rules_check_actions_and_peers() {
        let spec = |action: &str, peer: serde_json::Value| {
            json!({"priority": 1, "subject": {"namespaces": {}},
                   "ingress": [{"action": action, "from": [peer]}]})
        };
        let p = anp("a", spec("Pass", json!({"namespaces": {}})), false).unwrap();
        assert_eq!(p.rules[0].action, Action::Pass);
        let mut base = spec("Pass", json!({"namespaces": {}}));
        base.as_object_mut().unwrap().remove("priority");
        let e = anp("default", base, true).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].action");
        let e = anp("a", spec("Allow", json!({"nodes": {}})), false).unwrap_err();
        assert!(e.message.contains("ingress peers"), "{e}");
        let e = anp("a", spec("Allow", json!({})), false).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].from[0]");
    }
}

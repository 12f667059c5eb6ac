//! ClusterNetworkPolicy (policy.networking.k8s.io/v1alpha2, network-policy-api v0.2.0): one
//! cluster-scoped kind for the admin and baseline tiers, which replaced AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy. Limits and checks are the API's own (its OpenAPI bounds and CEL
//! rules), so a file `kubectl apply` would refuse is refused here too, with the field's path.
//!
//! Fail closed, as the API asks of an implementation that meets a peer of a newer API version
//! (a peer none of whose fields it knows): in an `Accept` rule that peer matches nothing; a
//! `Deny` or `Pass` rule holding one becomes "deny everything".

use super::{cerr, cluster_subject, ns_and_pods, required_name, ConvertError, ObjectMeta};
use crate::de::{null_default, PortNum, SelectorDe};
use crate::model::*;
use crate::net::{Cidr, DomainPattern};
use serde::Deserialize;
use std::collections::BTreeMap;

/// The API's `MaxItems` on rules, peers, protocols, networks and domain names.
const MAX_ITEMS: usize = 25;

#[derive(Debug, Deserialize)]
pub struct CnpManifest {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
    pub spec: CnpSpec,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpSpec {
    pub tier: CnpTier,
    pub priority: i64,
    pub subject: CnpSubject,
    #[serde(default, deserialize_with = "null_default")]
    pub ingress: Vec<CnpIngressRule>,
    #[serde(default, deserialize_with = "null_default")]
    pub egress: Vec<CnpEgressRule>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum CnpTier {
    Admin,
    Baseline,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpSubject {
    #[serde(default)]
    pub namespaces: Option<SelectorDe>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct NamespacedPod {
    /// Optional upstream: absent selects every namespace.
    #[serde(default)]
    pub namespace_selector: SelectorDe,
    pub pod_selector: SelectorDe,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
pub enum CnpAction {
    Accept,
    Deny,
    Pass,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpIngressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: CnpAction,
    pub from: Vec<CnpPeer>,
    #[serde(default)]
    pub protocols: Option<Vec<CnpProtocol>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpEgressRule {
    #[serde(default)]
    pub name: Option<String>,
    pub action: CnpAction,
    pub to: Vec<CnpPeer>,
    #[serde(default)]
    pub protocols: Option<Vec<CnpProtocol>>,
}

/// Both directions' peers; ingress may use only `namespaces` and `pods` (checked at
/// conversion, with the path). Fields Cellwall does not know are kept, not refused, so that a
/// peer of a newer API version can fail closed as the API requires.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CnpPeer {
    #[serde(default)]
    pub namespaces: Option<SelectorDe>,
    #[serde(default)]
    pub pods: Option<NamespacedPod>,
    #[serde(default)]
    pub nodes: Option<SelectorDe>,
    #[serde(default)]
    pub networks: Option<Vec<Cidr>>,
    #[serde(default)]
    pub domain_names: Option<Vec<DomainPattern>>,
    #[serde(flatten)]
    pub unknown: BTreeMap<String, serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpProtocol {
    #[serde(default)]
    pub tcp: Option<CnpProtocolPort>,
    #[serde(default)]
    pub udp: Option<CnpProtocolPort>,
    #[serde(default)]
    pub sctp: Option<CnpProtocolPort>,
    #[serde(default)]
    pub destination_named_port: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CnpProtocolPort {
    /// `MinProperties=1` upstream: checked at conversion.
    #[serde(default)]
    pub destination_port: Option<CnpPort>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnpPort {
    #[serde(default)]
    pub number: Option<PortNum>,
    #[serde(default)]
    pub range: Option<CnpPortRange>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnpPortRange {
    pub start: PortNum,
    pub end: PortNum,
}

fn too_many<T>(items: &[T], path: &str, what: &str) -> Result<(), ConvertError> {
    if items.len() > MAX_ITEMS {
        return Err(cerr(
            path,
            format!("{} {what}: at most {MAX_ITEMS} are allowed", items.len()),
        ));
    }
    Ok(())
}

fn cnp_ports(
    protocols: &Option<Vec<CnpProtocol>>,
    path: &str,
) -> Result<Vec<PortSpec>, ConvertError> {
    let Some(protocols) = protocols else {
        return Ok(Vec::new());
    };
    if protocols.is_empty() {
        return Err(cerr(path, "at least one protocol is required when protocols is set (omit it to match every protocol and port)"));
    }
    too_many(protocols, path, "protocols")?;
    let mut out = Vec::new();
    for (i, p) in protocols.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let set = [&p.tcp, &p.udp, &p.sctp]
            .iter()
            .filter(|x| x.is_some())
            .count()
            + usize::from(p.destination_named_port.is_some());
        if set != 1 {
            return Err(cerr(
                at,
                "exactly one of tcp, udp, sctp or destinationNamedPort must be set",
            ));
        }
        if let Some(name) = &p.destination_named_port {
            crate::de::validate_port_name(name)
                .map_err(|e| cerr(format!("{at}.destinationNamedPort"), e))?;
            out.push(PortSpec::Named {
                protocol: None,
                name: name.clone(),
            });
            continue;
        }
        let (protocol, field, pp) = match (&p.tcp, &p.udp, &p.sctp) {
            (Some(x), _, _) => (Protocol::Tcp, "tcp", x),
            (_, Some(x), _) => (Protocol::Udp, "udp", x),
            (_, _, Some(x)) => (Protocol::Sctp, "sctp", x),
            _ => unreachable!("one is set"),
        };
        let at = format!("{at}.{field}");
        let Some(port) = &pp.destination_port else {
            return Err(cerr(
                at,
                "destinationPort is required (omit protocols to match every port)",
            ));
        };
        let at = format!("{at}.destinationPort");
        out.push(match (&port.number, &port.range) {
            (Some(n), None) => PortSpec::Range {
                protocol,
                lo: n.0,
                hi: n.0,
            },
            (None, Some(r)) => {
                if r.start.0 >= r.end.0 {
                    return Err(cerr(
                        format!("{at}.range"),
                        format!("start {} must be less than end {}", r.start.0, r.end.0),
                    ));
                }
                PortSpec::Range {
                    protocol,
                    lo: r.start.0,
                    hi: r.end.0,
                }
            }
            _ => return Err(cerr(at, "exactly one of number or range must be set")),
        });
    }
    Ok(out)
}

/// What a rule's peers convert to: the peers, and whether one of them is of an unknown kind
/// (the rule then fails closed).
struct Peers {
    peers: Vec<Peer>,
    unknown: bool,
}

fn cnp_peers(
    list: &[CnpPeer],
    dir: Direction,
    action: CnpAction,
    path: &str,
) -> Result<Peers, ConvertError> {
    if list.is_empty() {
        return Err(cerr(path, "at least one peer is required"));
    }
    too_many(list, path, "peers")?;
    let mut out = Peers {
        peers: Vec::new(),
        unknown: false,
    };
    for (i, p) in list.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let known = [
            p.namespaces.is_some(),
            p.pods.is_some(),
            p.nodes.is_some(),
            p.networks.is_some(),
            p.domain_names.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        let fields = if dir == Direction::Ingress {
            "namespaces or pods"
        } else {
            "namespaces, pods, nodes, networks or domainNames"
        };
        if known == 0 && !p.unknown.is_empty() {
            // A peer of a newer API version: fail closed (see the module comment).
            out.unknown = true;
            continue;
        }
        if known != 1 || !p.unknown.is_empty() {
            let extra: Vec<&str> = p.unknown.keys().map(String::as_str).collect();
            let extra = if extra.is_empty() {
                String::new()
            } else {
                format!(" (unknown: {})", extra.join(", "))
            };
            return Err(cerr(
                at,
                format!("exactly one of {fields} must be set{extra}"),
            ));
        }
        if dir == Direction::Ingress
            && (p.nodes.is_some() || p.networks.is_some() || p.domain_names.is_some())
        {
            return Err(cerr(at, "ingress peers can only be namespaces or pods"));
        }
        let selected = match (&p.namespaces, &p.pods) {
            (Some(ns), _) => Some(ns_and_pods(ns, None)),
            (_, Some(pp)) => Some(ns_and_pods(&pp.namespace_selector, Some(&pp.pod_selector))),
            _ => None,
        };
        if let Some((namespaces, pods)) = selected {
            out.peers.push(Peer::Pods { namespaces, pods });
        } else if let Some(n) = &p.nodes {
            out.peers.push(Peer::Nodes(n.0.clone()));
        } else if let Some(nets) = &p.networks {
            if nets.is_empty() {
                return Err(cerr(
                    format!("{at}.networks"),
                    "at least one CIDR is required",
                ));
            }
            too_many(nets, &format!("{at}.networks"), "CIDRs")?;
            out.peers.extend(nets.iter().map(|c| Peer::Cidr {
                cidr: *c,
                except: Vec::new(),
            }));
        } else if let Some(names) = &p.domain_names {
            if action != CnpAction::Accept {
                return Err(cerr(
                    format!("{at}.domainNames"),
                    "domainNames peers are allowed only in Accept rules",
                ));
            }
            if names.is_empty() {
                return Err(cerr(
                    format!("{at}.domainNames"),
                    "at least one domain name is required",
                ));
            }
            too_many(names, &format!("{at}.domainNames"), "domain names")?;
            out.peers.extend(names.iter().cloned().map(Peer::Domain));
        }
    }
    Ok(out)
}

fn cnp_subject(s: &CnpSubject) -> Result<Subject, ConvertError> {
    let pods = s
        .pods
        .as_ref()
        .map(|p| (&p.namespace_selector, &p.pod_selector));
    cluster_subject(s.namespaces.as_ref(), pods)
}

/// One rule of either direction (they differ only in the name of their peer list).
struct Parts<'a> {
    direction: Direction,
    index: usize,
    name: &'a Option<String>,
    action: CnpAction,
    field: &'static str,
    peers: &'a [CnpPeer],
    protocols: &'a Option<Vec<CnpProtocol>>,
}

fn cnp_rule(r: Parts) -> Result<Option<Rule>, ConvertError> {
    let p = format!("spec.{}[{}]", r.direction.as_str(), r.index);
    if let Some(n) = r.name {
        if n.chars().count() > 100 {
            return Err(cerr(
                format!("{p}.name"),
                "a rule name may be at most 100 characters",
            ));
        }
    }
    let peers = cnp_peers(r.peers, r.direction, r.action, &format!("{p}.{}", r.field))?;
    let ports = cnp_ports(r.protocols, &format!("{p}.protocols"))?;
    let named = ports.iter().any(|s| matches!(s, PortSpec::Named { .. }));
    if named
        && peers
            .peers
            .iter()
            .any(|x| matches!(x, Peer::Nodes(_) | Peer::Cidr { .. } | Peer::Domain(_)))
    {
        return Err(cerr(
            format!("{p}.protocols"),
            "networks/nodes/domainNames peer cannot be set with namedPorts since there are no namedPorts for networks/nodes/domainNames",
        ));
    }
    let (action, peers, ports) = match (r.action, peers.unknown) {
        (CnpAction::Accept, _) if peers.peers.is_empty() => return Ok(None),
        (CnpAction::Accept, _) => (Action::Allow, peers.peers, ports),
        (CnpAction::Deny | CnpAction::Pass, true) => (Action::Deny, vec![Peer::Any], Vec::new()),
        (CnpAction::Deny, false) => (Action::Deny, peers.peers, ports),
        (CnpAction::Pass, false) => (Action::Pass, peers.peers, ports),
    };
    Ok(Some(Rule {
        direction: r.direction,
        index: r.index,
        name: r.name.clone(),
        action,
        peers,
        ports,
        expires_at: None,
    }))
}

/// Converts a ClusterNetworkPolicy into the admin or the baseline tier.
pub fn convert_cnp(m: CnpManifest) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let s = m.spec;
    if !(0..=1000).contains(&s.priority) {
        return Err(cerr(
            "spec.priority",
            format!("{} is out of range: expected an integer 0-1000", s.priority),
        ));
    }
    too_many(&s.ingress, "spec.ingress", "ingress rules")?;
    too_many(&s.egress, "spec.egress", "egress rules")?;
    let ingress = s.ingress.iter().enumerate().map(|(i, r)| Parts {
        direction: Direction::Ingress,
        index: i,
        name: &r.name,
        action: r.action,
        field: "from",
        peers: &r.from,
        protocols: &r.protocols,
    });
    let egress = s.egress.iter().enumerate().map(|(i, r)| Parts {
        direction: Direction::Egress,
        index: i,
        name: &r.name,
        action: r.action,
        field: "to",
        peers: &r.to,
        protocols: &r.protocols,
    });
    let mut rules = Vec::new();
    for r in ingress.chain(egress) {
        rules.extend(cnp_rule(r)?);
    }
    Ok(Policy {
        id: PolicyId::new(Family::ClusterNetworkPolicy, None, &name),
        tier: match s.tier {
            CnpTier::Admin => Tier::Admin,
            CnpTier::Baseline => Tier::Baseline,
        },
        priority: s.priority as i32,
        mode: Mode::Enforce,
        expires_at: None,
        subject: cnp_subject(&s.subject)?,
        isolates: [false, false],
        rules,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cnp(spec: serde_json::Value) -> Result<Policy, ConvertError> {
        convert_cnp(
            serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": spec})).unwrap(),
        )
    }

    fn spec(tier: &str, dir: &str, rule: serde_json::Value) -> serde_json::Value {
        json!({"tier": tier, "priority": 3, "subject": {"namespaces": {}}, dir: [rule]})
    }

    #[test]
    fn tiers_priorities_and_actions() {
        let p = cnp(spec(
            "Baseline",
            "ingress",
            json!({"action": "Pass", "from": [{"namespaces": {}}]}),
        ))
        .unwrap();
        assert_eq!((p.tier, p.priority), (Tier::Baseline, 3));
        assert_eq!(p.rules[0].action, Action::Pass);
        let mut s = spec(
            "Admin",
            "egress",
            json!({"action": "Accept", "to": [{"networks": ["10.0.0.0/8"]}]}),
        );
        assert_eq!(cnp(s.clone()).unwrap().rules[0].action, Action::Allow);
        s["priority"] = json!(1001);
        assert_eq!(cnp(s).unwrap_err().path, "spec.priority");
    }

    #[test]
    fn protocols_follow_the_api() {
        let rule = |protocols: serde_json::Value| {
            spec(
                "Admin",
                "ingress",
                json!({"action": "Deny", "from": [{"namespaces": {}}], "protocols": protocols}),
            )
        };
        let p = cnp(rule(json!([
            {"tcp": {"destinationPort": {"number": 80}}},
            {"udp": {"destinationPort": {"range": {"start": 5000, "end": 5100}}}},
            {"destinationNamedPort": "web"}
        ])))
        .unwrap();
        assert_eq!(p.rules[0].ports.len(), 3);
        let e = cnp(rule(
            json!([{"tcp": {"destinationPort": {"range": {"start": 9, "end": 9}}}}]),
        ))
        .unwrap_err();
        assert_eq!(
            e.path,
            "spec.ingress[0].protocols[0].tcp.destinationPort.range"
        );
        let e = cnp(rule(json!([{"tcp": {}, "udp": {}}]))).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].protocols[0]");
        let e = cnp(rule(json!([{"sctp": {}}]))).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].protocols[0].sctp");
        let e = cnp(rule(json!([]))).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].protocols");
        let too_many: Vec<_> = (1..=26)
            .map(|n| json!({"tcp": {"destinationPort": {"number": n}}}))
            .collect();
        assert!(cnp(rule(json!(too_many)))
            .unwrap_err()
            .message
            .contains("at most 25"));
    }

    #[test]
    fn peers_follow_the_api() {
        let eg = |action: &str, peer: serde_json::Value, protocols: Option<serde_json::Value>| {
            let mut r = json!({"action": action, "to": [peer]});
            if let Some(p) = protocols {
                r["protocols"] = p;
            }
            cnp(spec("Admin", "egress", r))
        };
        let p = eg(
            "Accept",
            json!({"domainNames": ["*.example.com", "example.org"]}),
            None,
        )
        .unwrap();
        assert!(matches!(&p.rules[0].peers[0], Peer::Domain(d) if d.wildcard));
        let e = eg("Deny", json!({"domainNames": ["example.com"]}), None).unwrap_err();
        assert!(e.message.contains("only in Accept"), "{e}");
        let e = eg(
            "Accept",
            json!({"networks": ["10.0.0.0/8"]}),
            Some(json!([{"destinationNamedPort": "web"}])),
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.egress[0].protocols");
        let e = eg("Accept", json!({}), None).unwrap_err();
        assert_eq!(e.path, "spec.egress[0].to[0]");
        let e = eg("Accept", json!({"nodes": {}, "networks": ["::/0"]}), None).unwrap_err();
        assert_eq!(e.path, "spec.egress[0].to[0]");
        let e = cnp(spec(
            "Admin",
            "ingress",
            json!({"action": "Accept", "from": [{"nodes": {}}]}),
        ))
        .unwrap_err();
        assert!(e.message.contains("ingress peers"), "{e}");
        let long = "r".repeat(101);
        let e = cnp(spec(
            "Admin",
            "ingress",
            json!({"name": long, "action": "Accept", "from": [{"namespaces": {}}]}),
        ))
        .unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].name");
    }

    #[test]
    fn a_peer_of_a_newer_api_fails_closed() {
        let newer = json!({"serviceAccounts": {"name": "x"}});
        // Accept: that peer matches nothing; the rule's other peers still count.
        let p = cnp(spec(
            "Admin",
            "egress",
            json!({"action": "Accept", "to": [newer.clone(), {"namespaces": {}}]}),
        ))
        .unwrap();
        assert_eq!(p.rules[0].peers.len(), 1);
        let p = cnp(spec(
            "Admin",
            "egress",
            json!({"action": "Accept", "to": [newer.clone()]}),
        ))
        .unwrap();
        assert!(
            p.rules.is_empty(),
            "an Accept rule of unknown peers only matches nothing"
        );
        // Deny and Pass: deny everything, every port.
        for action in ["Deny", "Pass"] {
            let p = cnp(spec(
                "Baseline",
                "ingress",
                json!({"action": action, "from": [newer.clone()], "protocols": [{"tcp": {"destinationPort": {"number": 1}}}]}),
            ))
            .unwrap();
            let r = &p.rules[0];
            assert_eq!(
                (r.action, &r.peers, r.ports.len()),
                (Action::Deny, &vec![Peer::Any], 0)
            );
        }
    }
}

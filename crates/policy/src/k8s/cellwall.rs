//! Cellwall's own Policy and ClusterPolicy (cellwall.io/v1alpha1): the NetworkPolicy form
//! extended with tiers, priorities, deny and pass, audit mode, expiry, node selectors, CIDRs
//! and entities; a ClusterPolicy selects namespaces.

use super::network_policy::{np_ports, NpPort};
use super::{cerr, check_except, namespace_of, required_name, ConvertError, ObjectMeta};
use crate::de::{null_default, SelectorDe, Timestamp};
use crate::labels::LabelSelector;
use crate::model::*;
use crate::net::{Cidr, DomainPattern};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct CellwallManifest {
    #[serde(default, deserialize_with = "null_default")]
    pub metadata: ObjectMeta,
    pub spec: CellwallSpec,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum TierDe {
    Admin,
    Application,
    Baseline,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum ModeDe {
    Enforce,
    Audit,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.tier) && self.tier == 'admin') || ((!has(self.ingress) || self.ingress.all(r, !has(r.action) || r.action != 'Pass')) && (!has(self.egress) || self.egress.all(r, !has(r.action) || r.action != 'Pass')))",
    "message": "Pass is only meaningful in tier admin (it hands the decision to the next tier)"
}])))]
pub struct CellwallSpec {
    /// admin (before NetworkPolicies), application (the default, beside them) or baseline
    /// (after them).
    #[serde(default)]
    pub tier: Option<TierDe>,
    /// Order within the tier, lower first (default 1000).
    #[serde(default)]
    pub priority: Option<i32>,
    /// enforce (the default), or audit: verdicts are recorded, nothing is dropped.
    #[serde(default)]
    pub mode: Option<ModeDe>,
    /// When the whole policy stops applying.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// Pods the policy applies to (in its namespace for `Policy`); absent means all.
    #[serde(default)]
    pub pod_selector: Option<SelectorDe>,
    /// `ClusterPolicy` only: namespaces whose pods it applies to; absent means all.
    #[serde(default)]
    pub namespace_selector: Option<SelectorDe>,
    /// Rules for connections to the selected pods, first match wins within the policy.
    #[serde(default)]
    pub ingress: Option<Vec<CellwallIngressRule>>,
    /// Rules for connections from the selected pods, first match wins within the policy.
    #[serde(default)]
    pub egress: Option<Vec<CellwallEgressRule>>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize, Clone, Copy)]
pub enum CellwallAction {
    Allow,
    Deny,
    Pass,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "!has(self.from) || self.from.all(p, !has(p.domain))",
    "message": "domain peers are egress only (a connection's source has no DNS name to check)"
}])))]
pub struct CellwallIngressRule {
    /// A name for the rule in verdicts and flow logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Allow (the default), Deny, or Pass (admin tier: let the next tier decide).
    #[serde(default)]
    pub action: Option<CellwallAction>,
    /// Peers the rule matches; absent means any peer (an empty list is refused).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub from: Option<Vec<CellwallPeer>>,
    /// Ports the rule matches; absent means every port.
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
    /// When this rule stops applying.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct CellwallEgressRule {
    /// A name for the rule in verdicts and flow logs.
    #[serde(default)]
    pub name: Option<String>,
    /// Allow (the default), Deny, or Pass (admin tier: let the next tier decide).
    #[serde(default)]
    pub action: Option<CellwallAction>,
    /// Peers the rule matches; absent means any peer (an empty list is refused).
    #[serde(default)]
    #[cfg_attr(feature = "schema", schemars(length(min = 1)))]
    pub to: Option<Vec<CellwallPeer>>,
    /// Ports the rule matches; absent means every port.
    #[serde(default)]
    pub ports: Option<Vec<NpPort>>,
    /// When this rule stops applying.
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize, Clone, Copy)]
#[serde(rename_all = "lowercase")]
pub enum EntityDe {
    World,
    Host,
    Cluster,
    All,
}

#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[cfg_attr(feature = "schema", schemars(extend("x-kubernetes-validations" = [{
    "rule": "[has(self.podSelector) || has(self.namespaceSelector), has(self.nodeSelector), has(self.cidr), has(self.entity), has(self.domain)].filter(x, x).size() == 1",
    "message": "exactly one of podSelector/namespaceSelector, nodeSelector, cidr, entity or domain must be set"
}, {
    "rule": "!has(self.except) || has(self.cidr)",
    "message": "except needs cidr"
}])))]
pub struct CellwallPeer {
    /// Pods with these labels (in the policy's namespace unless namespaceSelector is set).
    #[serde(default)]
    pub pod_selector: Option<SelectorDe>,
    /// Pods in namespaces with these labels.
    #[serde(default)]
    pub namespace_selector: Option<SelectorDe>,
    /// Nodes with these labels (their host addresses).
    #[serde(default)]
    pub node_selector: Option<SelectorDe>,
    /// An address range.
    #[serde(default)]
    pub cidr: Option<Cidr>,
    /// Strict subnets of cidr that the peer leaves out.
    #[serde(default)]
    pub except: Option<Vec<Cidr>>,
    /// world (outside the cluster), host (the node itself), cluster (any workload or node) or all.
    #[serde(default)]
    pub entity: Option<EntityDe>,
    /// Egress only: a DNS name (api.example.com) or a wildcard over its subdomains
    /// (*.example.com).
    #[serde(default)]
    pub domain: Option<DomainPattern>,
}

fn cellwall_peer(
    p: &CellwallPeer,
    dir: Direction,
    own_ns: Option<&str>,
    path: &str,
) -> Result<Peer, ConvertError> {
    let selectors = p.pod_selector.is_some() || p.namespace_selector.is_some();
    let kinds = [
        selectors,
        p.node_selector.is_some(),
        p.cidr.is_some(),
        p.entity.is_some(),
        p.domain.is_some(),
    ];
    if kinds.iter().filter(|b| **b).count() != 1 {
        return Err(cerr(
            path,
            "exactly one of podSelector/namespaceSelector, nodeSelector, cidr, entity or domain must be set",
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
    } else if let Some(d) = &p.domain {
        if dir == Direction::Ingress {
            return Err(cerr(
                format!("{path}.domain"),
                "domain peers are egress only (a connection's source has no DNS name to check)",
            ));
        }
        Peer::Domain(d.clone())
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

/// Whom the policy applies to: pods of its own namespace (`Policy`), or of the namespaces a
/// `ClusterPolicy` selects (all when absent).
fn cellwall_subject(own_ns: Option<&str>, s: &CellwallSpec) -> Result<Subject, ConvertError> {
    let pods = s
        .pod_selector
        .as_ref()
        .map(|s| s.0.clone())
        .unwrap_or_default();
    let namespaces =
        match (own_ns, &s.namespace_selector) {
            (Some(_), Some(_)) => return Err(cerr(
                "spec.namespaceSelector",
                "only a ClusterPolicy can select namespaces; a Policy applies in its own namespace",
            )),
            (Some(own), None) => NamespaceMatch::Named(own.to_string()),
            (None, sel) => {
                NamespaceMatch::Selector(sel.as_ref().map(|s| s.0.clone()).unwrap_or_default())
            }
        };
    Ok(Subject { namespaces, pods })
}

fn cellwall_action(
    a: Option<CellwallAction>,
    tier: Tier,
    path: String,
) -> Result<Action, ConvertError> {
    match a.unwrap_or(CellwallAction::Allow) {
        CellwallAction::Allow => Ok(Action::Allow),
        CellwallAction::Deny => Ok(Action::Deny),
        CellwallAction::Pass if tier == Tier::Admin => Ok(Action::Pass),
        CellwallAction::Pass => Err(cerr(
            path,
            "Pass is only meaningful in tier admin (it hands the decision to the next tier)",
        )),
    }
}

/// A rule's peer list: absent means any peer; present and empty is refused (it would match
/// nothing, which is never what was meant).
fn cellwall_peers(
    list: &Option<Vec<CellwallPeer>>,
    dir: Direction,
    own_ns: Option<&str>,
    path: String,
) -> Result<Vec<Peer>, ConvertError> {
    match list {
        None => Ok(vec![Peer::Any]),
        Some(l) if l.is_empty() => Err(cerr(
            path,
            "an empty peer list matches nothing; omit it to match any peer",
        )),
        Some(l) => l
            .iter()
            .enumerate()
            .map(|(i, p)| cellwall_peer(p, dir, own_ns, &format!("{path}[{i}]")))
            .collect(),
    }
}

/// One rule of either direction (they differ only in the name of their peer list).
struct CellwallRuleParts<'a> {
    direction: Direction,
    index: usize,
    name: &'a Option<String>,
    action: Option<CellwallAction>,
    field: &'static str,
    peers: &'a Option<Vec<CellwallPeer>>,
    ports: &'a Option<Vec<NpPort>>,
    expires_at: Option<Timestamp>,
}

fn cellwall_rules(
    s: &CellwallSpec,
    own_ns: Option<&str>,
    tier: Tier,
) -> Result<Vec<Rule>, ConvertError> {
    let ingress = s
        .ingress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| CellwallRuleParts {
            direction: Direction::Ingress,
            index: i,
            name: &r.name,
            action: r.action,
            field: "from",
            peers: &r.from,
            ports: &r.ports,
            expires_at: r.expires_at,
        });
    let egress = s
        .egress
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| CellwallRuleParts {
            direction: Direction::Egress,
            index: i,
            name: &r.name,
            action: r.action,
            field: "to",
            peers: &r.to,
            ports: &r.ports,
            expires_at: r.expires_at,
        });
    ingress
        .chain(egress)
        .map(|r| {
            let p = format!("spec.{}[{}]", r.direction.as_str(), r.index);
            Ok(Rule {
                direction: r.direction,
                index: r.index,
                name: r.name.clone(),
                action: cellwall_action(r.action, tier, format!("{p}.action"))?,
                peers: cellwall_peers(r.peers, r.direction, own_ns, format!("{p}.{}", r.field))?,
                ports: np_ports(r.ports, &format!("{p}.ports"))?,
                expires_at: r.expires_at.map(|t| t.0),
            })
        })
        .collect()
}

/// Converts a Cellwall `Policy` (`cluster == false`, namespaced) or `ClusterPolicy`.
pub fn convert_cellwall(m: CellwallManifest, cluster: bool) -> Result<Policy, ConvertError> {
    let name = required_name(&m.metadata)?;
    let s = m.spec;
    let ns = (!cluster).then(|| namespace_of(&m.metadata));
    let tier = match s.tier.unwrap_or(TierDe::Application) {
        TierDe::Admin => Tier::Admin,
        TierDe::Application => Tier::Application,
        TierDe::Baseline => Tier::Baseline,
    };
    let subject = cellwall_subject(ns.as_deref(), &s)?;
    let rules = cellwall_rules(&s, ns.as_deref(), tier)?;
    let family = if cluster {
        Family::ClusterPolicy
    } else {
        Family::Policy
    };
    Ok(Policy {
        id: PolicyId::new(family, ns.as_deref(), &name),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cw(spec: serde_json::Value, cluster: bool) -> Result<Policy, ConvertError> {
        convert_cellwall(
            serde_json::from_value(
                json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec}),
            )
            .unwrap(),
            cluster,
        )
    }

    #[test]
    fn defaults_and_isolation_by_listed_directions() {
        let p = cw(json!({"ingress": []}), false).unwrap();
        assert_eq!(
            (p.tier, p.priority, p.mode),
            (Tier::Application, 1000, Mode::Enforce)
        );
        assert_eq!(p.isolates, [true, false]);
        assert_eq!(p.subject.namespaces, NamespaceMatch::Named("x".into()));
        let p = cw(
            json!({"egress": [{"to": [{"domain": "*.example.com"}]}]}),
            true,
        )
        .unwrap();
        assert!(
            matches!(&p.rules[0].peers[0], Peer::Domain(d) if d.to_string() == "*.example.com")
        );
        let e = cw(
            json!({"ingress": [{"from": [{"domain": "example.com"}]}]}),
            true,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].from[0].domain");
        let p = cw(json!({"egress": [{"to": [{"entity": "world"}]}]}), true).unwrap();
        assert_eq!(p.id.namespace, None);
        assert_eq!(p.rules[0].peers, vec![Peer::Entity(Entity::World)]);
    }

    #[test]
    fn refusals_name_their_field() {
        let e = cw(json!({"namespaceSelector": {}}), false).unwrap_err();
        assert_eq!(e.path, "spec.namespaceSelector");
        let e = cw(json!({"ingress": [{"action": "Pass"}]}), false).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].action");
        let e = cw(json!({"ingress": [{"from": []}]}), false).unwrap_err();
        assert_eq!(e.path, "spec.ingress[0].from");
        let e = cw(
            json!({"egress": [{"to": [{"entity": "host", "cidr": "10.0.0.0/8"}]}]}),
            false,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.egress[0].to[0]");
        let e = cw(
            json!({"egress": [{"to": [{"entity": "host", "except": ["10.0.0.0/9"]}]}]}),
            false,
        )
        .unwrap_err();
        assert_eq!(e.path, "spec.egress[0].to[0].except");
    }
}

//! Least privilege from history: for each application (by labels) in scope, one policy isolating
//! it both ways, with one rule per observed peer and port, and the evidence behind each rule.

use super::{AppGroup, Endpoint, GroupBy, Grouping, HistFlow};
use crate::engine::{Engine, Flow};
use crate::labels::Labels;
use crate::model::{Action, Inventory, Protocol, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Who a proposed rule admits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum ProposedPeer {
    /// Workloads with these labels in this namespace.
    Pods { namespace: String, labels: Labels },
    /// One external address, as a host CIDR.
    Cidr { cidr: String },
    /// An external destination reached by a DNS name (FQDN policy): the name, whatever
    /// addresses it rotates through. Egress only.
    Domain { name: String },
}

/// Why a rule is proposed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Evidence {
    pub connections: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Share of the subject's observed connections in this direction that this rule covers.
    pub coverage: f64,
    /// Seen fewer times than the review threshold: check before applying.
    pub review: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProposedRule {
    pub peer: ProposedPeer,
    pub protocol: Protocol,
    pub port: u16,
    pub evidence: Evidence,
}

/// One policy: an application (labels) in a namespace, isolated both ways, with a rule per
/// observed peer and port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ProposedPolicy {
    pub namespace: String,
    pub name: String,
    /// The application group it isolates (`Proposal.groups`).
    pub group: String,
    pub selector: Labels,
    pub ingress: Vec<ProposedRule>,
    pub egress: Vec<ProposedRule>,
}

/// An observed flow the proposal does not allow, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Excluded {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub connections: u64,
    pub reason: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Proposal {
    pub policies: Vec<ProposedPolicy>,
    /// How workloads were grouped into applications, with the evidence for each group.
    #[serde(default)]
    pub groups: Vec<AppGroup>,
    pub excluded: Vec<Excluded>,
    pub flows_considered: u64,
}

#[derive(Debug, Clone)]
pub struct ProposeOptions {
    /// Only propose policies for workloads of this namespace.
    pub namespace: Option<String>,
    /// Rules seen fewer times are flagged for review.
    pub review_below: u64,
    pub group_by: GroupBy,
}

impl Default for ProposeOptions {
    fn default() -> Self {
        Self {
            namespace: None,
            review_below: 3,
            group_by: GroupBy::Auto,
        }
    }
}

fn policy_name(base: &str) -> String {
    let mut n: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    n.truncate(50);
    format!("cw-{}", n.trim_matches('-'))
}

/// The address current policy would see for a historical endpoint, if it can say.
pub fn address(inv: &Inventory, ep: &Endpoint) -> Option<IpAddr> {
    match ep {
        Endpoint::External { ip, .. } => Some(*ip),
        Endpoint::Workload {
            namespace, name, ..
        } => inv
            .workloads
            .get(&WorkloadKey::new(namespace, name))
            .and_then(|w| w.ips.first().copied()),
    }
}

/// Least privilege from history: for each application (by labels) in scope, one policy isolating
/// it both ways, with one ingress rule per observed (client application or external address,
/// port) and one egress rule per observed (server application or external address, port).
/// Only connections that happened are used; a flow the policy in force denies by an explicit
/// `Deny` rule is never proposed. Applications of the inventory with no traffic are isolated
/// (no rules). Output is sorted: the same history gives the same proposal.
/// Connections counted for one proposed rule.
#[derive(Default)]
struct Acc {
    connections: u64,
    first: u64,
    last: u64,
}

type RuleKey = (ProposedPeer, Protocol, u16);
/// (source, destination, protocol, port, reason) of excluded flows.
type ExcludedKey = (String, String, Protocol, u16, String);

/// The proposal being built from history, one flow at a time.
struct Builder<'e> {
    current: &'e Engine,
    opts: &'e ProposeOptions,
    grouping: Grouping,
    /// Per subject (index into the grouping): [ingress rules, egress rules].
    subjects: BTreeMap<usize, [BTreeMap<RuleKey, Acc>; 2]>,
    excluded: BTreeMap<ExcludedKey, u64>,
    considered: u64,
}

/// Who a rule would name for a historical endpoint: its application by the group's exact
/// selector, a DNS name, or a host CIDR. `Err` for a workload no label set selects.
fn peer_of(grouping: &Grouping, ep: &Endpoint) -> Result<ProposedPeer, String> {
    Ok(match ep {
        Endpoint::External { names, .. } if !names.is_empty() => ProposedPeer::Domain {
            name: names[0].clone(),
        },
        Endpoint::External { ip, .. } => ProposedPeer::Cidr {
            cidr: match ip {
                IpAddr::V4(_) => format!("{ip}/32"),
                IpAddr::V6(_) => format!("{ip}/128"),
            },
        },
        Endpoint::Workload { namespace, .. } => {
            let g = grouping
                .of(ep)
                .ok_or_else(|| format!("{} has no group", ep.describe()))?;
            ProposedPeer::Pods {
                namespace: namespace.clone(),
                labels: g.selector.clone().ok_or_else(|| {
                    format!(
                        "no label set selects {} without other workloads",
                        ep.describe()
                    )
                })?,
            }
        }
    })
}

impl<'e> Builder<'e> {
    fn in_scope(&self, ns: &str) -> bool {
        self.opts.namespace.as_deref().is_none_or(|n| n == ns)
    }

    fn add(&mut self, f: &HistFlow) {
        if !f.observed.happened() {
            return;
        }
        self.considered += f.connections;
        if let Some(reason) = self.explicitly_denied(f) {
            self.exclude(f, reason);
            return;
        }
        let (sp, dp) = match (
            peer_of(&self.grouping, &f.src),
            peer_of(&self.grouping, &f.dst),
        ) {
            (Ok(s), Ok(d)) => (s, d),
            (Err(e), _) | (_, Err(e)) => return self.exclude(f, e),
        };
        self.count(&f.dst, &sp, 0, f);
        self.count(&f.src, &dp, 1, f);
    }

    /// Why a flow must never be proposed: an explicit `Deny` rule in force blocks it.
    fn explicitly_denied(&self, f: &HistFlow) -> Option<String> {
        let inv = self.current.inventory();
        let (src, dst) = (address(inv, &f.src)?, address(inv, &f.dst)?);
        let d = self.current.evaluate(&Flow {
            src,
            dst,
            protocol: f.protocol,
            port: f.port,
        });
        let (_, v) = d.deciding();
        let rule = self.current.rule(v.rule);
        (!d.allowed && rule.is_some_and(|r| r.action == Action::Deny)).then(|| {
            let r = rule.map(|r| r.describe()).unwrap_or_default();
            format!("explicitly denied by {r}")
        })
    }

    fn exclude(&mut self, f: &HistFlow, reason: String) {
        let key = (
            f.src.describe(),
            f.dst.describe(),
            f.protocol,
            f.port,
            reason,
        );
        *self.excluded.entry(key).or_default() += f.connections;
    }

    /// Counts a flow for the rule `subject` would need towards `peer` (`dir`: 0 ingress, 1
    /// egress), when the subject is a workload of an application in scope.
    fn count(&mut self, subject: &Endpoint, peer: &ProposedPeer, dir: usize, f: &HistFlow) {
        let Some(i) = self.grouping.index_of(subject) else {
            return;
        };
        if !self.in_scope(&self.grouping.groups[i].namespace) {
            return;
        }
        let acc = self.subjects.entry(i).or_default()[dir]
            .entry((peer.clone(), f.protocol, f.port))
            .or_default();
        if acc.connections == 0 {
            acc.first = f.first_ns;
        }
        acc.connections += f.connections;
        acc.first = acc.first.min(f.first_ns);
        acc.last = acc.last.max(f.last_ns);
    }

    /// Applications of the inventory that showed no traffic are isolated too.
    fn isolate_silent(&mut self) {
        for (i, g) in self.grouping.groups.iter().enumerate() {
            if self.in_scope(&g.namespace) {
                self.subjects.entry(i).or_default();
            }
        }
    }

    fn finish(self) -> Proposal {
        let review_below = self.opts.review_below;
        let mut names: std::collections::BTreeSet<(String, String)> = Default::default();
        let groups = self.grouping.groups;
        let policies = self
            .subjects
            .into_iter()
            .filter_map(|(i, dirs)| {
                let g = &groups[i];
                let selector = g.selector.clone()?;
                let namespace = g.namespace.clone();
                // Unique in the namespace, also against names that end in -N themselves.
                let base = policy_name(&g.short);
                let mut name = base.clone();
                let mut n = 1;
                while !names.insert((namespace.clone(), name.clone())) {
                    n += 1;
                    name = format!("{base}-{n}");
                }
                let [ingress, egress] = dirs.map(|rules| proposed_rules(rules, review_below));
                Some(ProposedPolicy {
                    namespace,
                    name,
                    group: g.id.clone(),
                    selector,
                    ingress,
                    egress,
                })
            })
            .collect();
        let excluded = self
            .excluded
            .into_iter()
            .map(
                |((src, dst, protocol, port, reason), connections)| Excluded {
                    src,
                    dst,
                    protocol,
                    port,
                    connections,
                    reason,
                },
            )
            .collect();
        Proposal {
            policies,
            groups,
            excluded,
            flows_considered: self.considered,
        }
    }
}

/// One direction's rules with their evidence; coverage is each rule's share of the direction.
fn proposed_rules(rules: BTreeMap<RuleKey, Acc>, review_below: u64) -> Vec<ProposedRule> {
    let total: u64 = rules.values().map(|a| a.connections).sum();
    rules
        .into_iter()
        .map(|((peer, protocol, port), a)| ProposedRule {
            peer,
            protocol,
            port,
            evidence: Evidence {
                connections: a.connections,
                first_ns: a.first,
                last_ns: a.last,
                coverage: if total == 0 {
                    0.0
                } else {
                    a.connections as f64 / total as f64
                },
                review: a.connections < review_below,
            },
        })
        .collect()
}

/// Least privilege from history: for each application (by labels) in scope, one policy isolating
/// it both ways, with one ingress rule per observed (client application or external address,
/// port) and one egress rule per observed (server application or external address, port).
/// Only connections that happened are used; a flow the policy in force denies by an explicit
/// `Deny` rule is never proposed. Applications of the inventory with no traffic are isolated
/// (no rules). Output is sorted: the same history gives the same proposal.
pub fn propose(flows: &[HistFlow], current: &Engine, opts: &ProposeOptions) -> Proposal {
    let groups = Grouping::build(flows, current.inventory(), &opts.group_by);
    let mut b = Builder {
        current,
        opts,
        grouping: groups,
        subjects: BTreeMap::new(),
        excluded: BTreeMap::new(),
        considered: 0,
    };
    for f in flows {
        b.add(f);
    }
    b.isolate_silent();
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::test_support::*;
    use crate::discover::{render_yaml, Observed, ProposalFormat};
    use crate::load::parse_file;

    #[test]
    fn proposal_is_least_privilege_deterministic_and_respects_denies() {
        let deny = "
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: no-debug}
spec:
  tier: admin
  priority: 1
  ingress:
  - action: Deny
    from: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: b}}}]
";
        let (inv, pols) = inv_and_policies(&format!("{INV}---{deny}"));
        let engine = Engine::build(inv.clone(), pols, 0);
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                30,
            ),
            flow(
                ep(&inv, "a/web-2"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                20,
            ),
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                9999,
                Observed::Allowed,
                1,
            ),
            // Happened before the deny existed: still never proposed.
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                4,
            ),
            // Denied attempts are never proposed either.
            flow(
                ep(&inv, "a/db"),
                ep(&inv, "a/web-1"),
                22,
                Observed::Denied,
                9,
            ),
        ];
        let p = propose(&flows, &engine, &ProposeOptions::default());
        assert_eq!(p, propose(&flows, &engine, &ProposeOptions::default()));
        let db = p.policies.iter().find(|p| p.name == "cw-db").unwrap();
        let rules: Vec<_> = db
            .ingress
            .iter()
            .map(|r| (r.port, r.evidence.connections, r.evidence.review))
            .collect();
        assert_eq!(rules, [(5432, 50, false), (9999, 1, true)]);
        assert!(db.egress.is_empty());
        assert_eq!(p.excluded.len(), 1);
        assert!(
            p.excluded[0].reason.contains("ClusterPolicy/no-debug"),
            "{:?}",
            p.excluded
        );
        // Namespace b's debug pod sent nothing allowed, yet is isolated; with --namespace a it is
        // left alone.
        assert!(p
            .policies
            .iter()
            .any(|p| p.namespace == "b" && p.ingress.is_empty()));
        let only_a = propose(
            &flows,
            &engine,
            &ProposeOptions {
                namespace: Some("a".into()),
                ..Default::default()
            },
        );
        assert!(only_a.policies.iter().all(|p| p.namespace == "a"));
        // Every rendering parses back as policies, and they all decide every pod-to-pod
        // connection the same way (the CNP one by Accept rules and a final Deny).
        let mut tables = Vec::new();
        for f in [
            ProposalFormat::Cellwall,
            ProposalFormat::NetworkPolicy,
            ProposalFormat::ClusterNetworkPolicy,
        ] {
            let y = render_yaml(&p, f);
            let parsed = parse_file("p.yaml", &y).unwrap_or_else(|e| panic!("{e}\n{y}"));
            assert_eq!(parsed.objects.len(), p.policies.len());
            let policies = parsed.objects.into_iter().map(|o| match o.object {
                crate::load::Object::Policy(p) => *p,
                other => panic!("{other:?}"),
            });
            let e = Engine::build(inv.clone(), policies, 0);
            let mut table = Vec::new();
            for src in inv.workloads.values() {
                for dst in inv.workloads.values() {
                    for port in [22, 5432, 9999, 80] {
                        let flow = crate::Flow {
                            src: src.ips[0],
                            dst: dst.ips[0],
                            protocol: crate::Protocol::Tcp,
                            port,
                        };
                        table.push(e.evaluate(&flow).allowed);
                    }
                }
            }
            tables.push((f, table));
        }
        assert!(
            tables[0].1.iter().any(|a| !a),
            "the proposal denies something"
        );
        for (f, t) in &tables[1..] {
            assert_eq!(t, &tables[0].1, "{f:?} decides differently");
        }
    }

    #[test]
    fn named_destinations_are_proposed_by_name() {
        let (inv, pols) = inv_and_policies(INV);
        let engine = Engine::build(inv.clone(), pols, 0);
        let api = |ip: &str| Endpoint::External {
            ip: ip.parse().unwrap(),
            names: vec!["api.example.com".into()],
        };
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                api("198.51.100.1"),
                443,
                Observed::Allowed,
                4,
            ),
            flow(
                ep(&inv, "a/web-2"),
                api("198.51.100.9"),
                443,
                Observed::Allowed,
                4,
            ),
        ];
        let p = propose(&flows, &engine, &ProposeOptions::default());
        let web = p.policies.iter().find(|p| p.name == "cw-web").unwrap();
        // One rule for the name, whatever addresses it rotated through.
        assert_eq!(web.egress.len(), 1);
        assert_eq!(
            web.egress[0].peer,
            ProposedPeer::Domain {
                name: "api.example.com".into()
            }
        );
        let y = render_yaml(&p, ProposalFormat::Cellwall);
        assert!(y.contains("{domain: \"api.example.com\"}"), "{y}");
        let c = render_yaml(&p, ProposalFormat::ClusterNetworkPolicy);
        assert!(c.contains("{domainNames: [\"api.example.com\"]}"), "{c}");
        let np = render_yaml(&p, ProposalFormat::NetworkPolicy);
        assert!(np.contains("NetworkPolicy cannot name DNS names"), "{np}");
        for (f, text) in [("cw", y), ("cnp", c), ("np", np)] {
            parse_file("p.yaml", &text).unwrap_or_else(|e| panic!("{f}: {e}\n{text}"));
        }
    }
}

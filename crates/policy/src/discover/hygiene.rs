//! Rule hygiene (Cisco Secure Workload's policy statistics, Illumio's rule hit counts): how
//! much of the flow history each rule in force decides, per day; rules nothing hit; rules much
//! broader than their traffic. Hits are counted by replaying history through the policy in
//! force, both ends: a connection between two policed workloads hits its source's egress rule
//! and its destination's ingress rule (a record keeps one deciding rule, so counting records
//! would call every egress rule behind an ingress rule unused).

use super::{group, HistFlow, Replay};
use crate::engine::{Engine, Flow};
use crate::model::{Action, Direction, NamespaceMatch, Peer, Policy, PortSpec, Rule};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// At most this many distinct peers are listed per rule.
const PEERS_SHOWN: usize = 20;

/// One rule of the policy in force and the history it decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleStats {
    /// `Kind/namespace/name ingress[0]`, as flow records and explanations name it.
    pub rule: String,
    pub policy: String,
    /// `ingress` or `egress`.
    pub direction: String,
    pub index: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `Allow`, `Deny`, `Pass`, … as the policy says.
    pub action: String,
    /// Connections it decided in the window.
    pub connections: u64,
    /// Aggregated flows it decided.
    pub flows: u64,
    /// Connections per UTC day (`YYYY-MM-DD`).
    pub by_day: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_ns: Option<u64>,
    /// Distinct peers (applications, networks) seen through it, at most 20.
    pub peers: Vec<String>,
    /// Nothing in the window hit it.
    pub unused: bool,
    /// It admits far more than its traffic used: what it admits and who was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broad: Option<String>,
    /// It can never decide: an earlier rule of its policy matches everything it matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadowed: Option<String>,
}

/// Whether peer `p` matches at least everything `q` does (syntactically: sound, not complete).
fn peer_covers(p: &Peer, q: &Peer) -> bool {
    let everything = |s: &crate::labels::LabelSelector| {
        s.match_labels.is_empty() && s.match_expressions.is_empty()
    };
    match (p, q) {
        (Peer::Any, _) => true,
        (a, b) if a == b => true,
        (
            Peer::Pods {
                namespaces: pn,
                pods,
            },
            Peer::Pods { namespaces: qn, .. },
        ) => {
            everything(pods)
                && (pn == qn || matches!(pn, NamespaceMatch::Selector(s) if everything(s)))
        }
        (
            Peer::Cidr {
                cidr: pc,
                except: pe,
            },
            Peer::Cidr {
                cidr: qc,
                except: qe,
            },
        ) => {
            pc.contains_net(qc)
                && pe
                    .iter()
                    .all(|e| !e.contains_net(qc) && !qc.contains_net(e) || qe.contains(e))
        }
        _ => false,
    }
}

/// Whether ports `p` include every port `q` does (empty: every port).
fn ports_cover(p: &[PortSpec], q: &[PortSpec]) -> bool {
    if p.is_empty() {
        return true;
    }
    !q.is_empty()
        && q.iter().all(|qs| {
            p.iter().any(|ps| match (ps, qs) {
                (
                    PortSpec::Range {
                        protocol: a,
                        lo: al,
                        hi: ah,
                    },
                    PortSpec::Range {
                        protocol: b,
                        lo: bl,
                        hi: bh,
                    },
                ) => a == b && al <= bl && bh <= ah,
                (a, b) => a == b,
            })
        })
}

/// The earlier rule of the same policy and direction that matches everything `r` matches and
/// never expires: `r` can then never be the deciding rule.
fn shadow_of<'p>(p: &'p Policy, r: &Rule) -> Option<&'p Rule> {
    p.rules(r.direction)
        .take_while(|e| e.index < r.index)
        .find(|e| {
            e.expires_at.is_none()
                && r.peers
                    .iter()
                    .all(|q| e.peers.iter().any(|pp| peer_covers(pp, q)))
                && ports_cover(&e.ports, &r.ports)
        })
}

/// What a rule's peers admit, when that is "everything" of some scope.
fn breadth(peers: &[Peer]) -> Option<String> {
    peers.iter().find_map(|p| match p {
        Peer::Any => Some("anyone".to_string()),
        Peer::Pods { namespaces, pods }
            if pods.match_labels.is_empty() && pods.match_expressions.is_empty() =>
        {
            Some(match namespaces {
                NamespaceMatch::Named(ns) => format!("every pod of namespace {ns}"),
                NamespaceMatch::Selector(s)
                    if s.match_labels.is_empty() && s.match_expressions.is_empty() =>
                {
                    "every pod of every namespace".to_string()
                }
                NamespaceMatch::Selector(_) => "every pod of the selected namespaces".to_string(),
            })
        }
        Peer::Cidr { cidr, except } if cidr.prefix() == 0 && except.is_empty() => {
            Some(format!("every address ({cidr})"))
        }
        _ => None,
    })
}

fn day(ns: u64) -> String {
    let s = crate::de::format_rfc3339((ns / 1_000_000_000) as i64);
    s.get(..10).unwrap_or(&s).to_string()
}

#[derive(Default)]
struct Acc {
    connections: u64,
    flows: u64,
    by_day: BTreeMap<String, u64>,
    last: Option<u64>,
    peers: BTreeSet<String>,
}

/// Every rule of `policies` with what `flows` (the window) show of it, replayed through
/// `engine` — `replay.engine(policies, now)` of a `Replay` of the same flows, so workloads
/// gone since (a rollout's old pods, last night's Job) are judged by the labels they had: a
/// rule they needed is not called unused. Sorted by policy, direction, index.
pub fn rule_stats(
    replay: &Replay,
    engine: &Engine,
    policies: &[impl std::borrow::Borrow<Policy>],
    flows: &[HistFlow],
) -> Vec<RuleStats> {
    let mut acc: HashMap<u32, Acc> = HashMap::new();
    for (i, f) in flows.iter().enumerate() {
        if !f.observed.happened() {
            continue;
        }
        let [src, dst] = replay.addresses(i);
        let d = engine.evaluate(&Flow {
            src,
            dst,
            protocol: f.protocol,
            port: f.port,
        });
        let mut hit = |rule: u32, peer: &super::Endpoint| {
            if rule == 0 {
                return;
            }
            let a = acc.entry(rule).or_default();
            a.connections += f.connections;
            a.flows += 1;
            *a.by_day.entry(day(f.first_ns)).or_default() += f.connections;
            a.last = a.last.max(Some(f.last_ns));
            if a.peers.len() < PEERS_SHOWN {
                a.peers.insert(group(peer));
            }
        };
        hit(d.egress.rule, &f.dst);
        hit(d.ingress.rule, &f.src);
        if let Some(au) = d.audit {
            if au.egress.rule != d.egress.rule {
                hit(au.egress.rule, &f.dst);
            }
            if au.ingress.rule != d.ingress.rule {
                hit(au.ingress.rule, &f.src);
            }
        }
    }
    // Rule ids → (policy, direction, index).
    let mut by_pos: HashMap<(String, Direction, usize), Acc> = HashMap::new();
    for (id, a) in acc {
        if let Some(info) = engine.rule(id) {
            if let Some(i) = info.index {
                by_pos.insert((info.policy.to_string(), info.direction, i), a);
            }
        }
    }
    let mut out = Vec::new();
    for p in policies.iter().map(std::borrow::Borrow::borrow) {
        for r in &p.rules {
            let pid = p.id.to_string();
            let a = by_pos
                .remove(&(pid.clone(), r.direction, r.index))
                .unwrap_or_default();
            let broad = breadth(&r.peers)
                .filter(|_| r.action != Action::Deny && a.connections > 0 && a.peers.len() <= 2)
                .map(|what| {
                    format!(
                        "admits {what}; traffic seen from {} peer(s) only: {}",
                        a.peers.len(),
                        a.peers.iter().cloned().collect::<Vec<_>>().join(", ")
                    )
                });
            let shadowed = shadow_of(p, r).map(|e| {
                format!(
                    "{} {}[{}] matches everything it matches and comes first",
                    pid,
                    e.direction.as_str(),
                    e.index
                )
            });
            out.push(RuleStats {
                shadowed,
                rule: format!("{pid} {}[{}]", r.direction.as_str(), r.index),
                policy: pid,
                direction: r.direction.as_str().to_string(),
                index: r.index,
                name: r.name.clone(),
                action: format!("{:?}", r.action),
                unused: a.connections == 0,
                connections: a.connections,
                flows: a.flows,
                by_day: a.by_day,
                last_ns: a.last,
                peers: a.peers.into_iter().collect(),
                broad,
            });
        }
    }
    out.sort_by(|a, b| (&a.policy, &a.direction, a.index).cmp(&(&b.policy, &b.direction, b.index)));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::test_support::*;
    use crate::discover::Observed;

    #[test]
    fn hits_count_both_ends_and_unused_and_broad_rules_are_flagged() {
        let pols = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from: [{podSelector: {}}]
    ports: [{port: 5432}]
  - from: [{podSelector: {matchLabels: {app: web}}}]
    ports: [{port: 9999}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  policyTypes: [Egress]
  egress:
  - to: [{podSelector: {matchLabels: {app: db}}}]
";
        let (inv, policies) = inv_and_policies(&format!("{INV}---{pols}"));
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                7,
            ),
            flow(
                ep(&inv, "a/web-2"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                3,
            ),
            // A web pod gone since (a rollout): its connections still count.
            flow(
                crate::discover::Endpoint::Workload {
                    namespace: "a".into(),
                    name: "web-old".into(),
                    labels: [("app".to_string(), "web".to_string())].into(),
                },
                ep(&inv, "a/db"),
                9999,
                Observed::Allowed,
                2,
            ),
            // Denied attempts decide nothing worth counting as use.
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                22,
                Observed::Denied,
                9,
            ),
        ];
        let replay = Replay::new(&inv, &flows);
        let engine = replay.engine(policies.clone(), 0);
        let s = rule_stats(&replay, &engine, &policies, &flows);
        let get = |r: &str| {
            s.iter()
                .find(|x| x.rule == r)
                .unwrap_or_else(|| panic!("{r}: {s:#?}"))
        };
        let db0 = get("NetworkPolicy/a/db ingress[0]");
        assert_eq!((db0.connections, db0.flows), (10, 2));
        assert_eq!(db0.by_day.values().sum::<u64>(), 10);
        // `podSelector: {}` admits the whole namespace; only web was seen.
        assert!(
            db0.broad
                .as_deref()
                .unwrap_or("")
                .contains("every pod of namespace a"),
            "{db0:?}"
        );
        let db1 = get("NetworkPolicy/a/db ingress[1]");
        assert!(!db1.unused && db1.shadowed.is_none(), "{db1:?}");
        assert_eq!(db1.connections, 2);
        // The egress rule is hit too, although the record kept only the ingress rule.
        let web = get("NetworkPolicy/a/web egress[0]");
        assert_eq!(web.connections, 12);
        assert!(!web.unused && web.broad.is_none());
    }

    #[test]
    fn a_rule_behind_a_wider_one_of_its_policy_is_shadowed() {
        let pols = "
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: fw}
spec:
  tier: admin
  priority: 10
  podSelector: {matchLabels: {app: db}}
  ingress:
  - {action: Allow, from: [{cidr: 10.0.0.0/8}], ports: [{port: 5000, endPort: 6000}]}
  - {action: Deny, from: [{cidr: 10.1.0.0/16}], ports: [{port: 5432}]}
  - {action: Deny, from: [{cidr: 10.1.0.0/16}], ports: [{port: 22}]}
  - {action: Allow, from: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}], ports: [{port: 5432}]}
";
        let (inv, policies) = inv_and_policies(&format!("{INV}---{pols}"));
        let replay = Replay::new(&inv, &[]);
        let engine = replay.engine(policies.clone(), 0);
        let s = rule_stats(&replay, &engine, &policies, &[]);
        let shadow: Vec<(usize, bool)> =
            s.iter().map(|r| (r.index, r.shadowed.is_some())).collect();
        // The Deny on 5432 can never decide: the Allow of 5000-6000 from all of 10/8 comes
        // first. The 22 Deny is outside its ports; the last Allow is behind rule 0 too.
        assert_eq!(
            shadow,
            [(0, false), (1, true), (2, false), (3, true)],
            "{s:#?}"
        );
    }
}

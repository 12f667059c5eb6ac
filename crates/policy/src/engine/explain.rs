//! Explaining a flow: the evaluator's walk with a trace of every tier, policy and rule it
//! considered. Kept apart from `evaluate` so the hot path carries no trace types beyond an
//! `Option` it never fills.

use super::{Decision, DirVerdict, EndpointKind, Engine, Flow, PolicySlot, RuleInfo};
use crate::model::{Action, Direction, Mode, Protocol, Rule, Tier};
use serde::{Deserialize, Serialize};

/// One considered rule in an explanation.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleTrace {
    pub rule: u32,
    pub description: String,
    pub action: Action,
    pub matched: bool,
}

/// One policy considered in a tier.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PolicyTrace {
    pub policy: String,
    pub mode: Mode,
    pub rules: Vec<RuleTrace>,
}

/// What one tier did.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct TierTrace {
    pub tier: Tier,
    pub policies: Vec<PolicyTrace>,
    /// `no policy`, `no rule matched`, `Allow`, `Deny`, `Pass`, `isolated: no rule allows`.
    pub outcome: String,
}

impl TierTrace {
    pub(super) fn new(tier: Tier) -> Self {
        TierTrace {
            tier,
            policies: Vec::new(),
            outcome: String::new(),
        }
    }
}

/// The explanation of one direction.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DirectionTrace {
    pub direction: Direction,
    pub endpoint: String,
    pub tiers: Vec<TierTrace>,
    pub verdict: DirVerdict,
    pub rule: Option<String>,
}

/// The explanation of a flow.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Explanation {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub decision: Decision,
    pub deciding_rule: Option<String>,
    pub egress: DirectionTrace,
    pub ingress: DirectionTrace,
    /// With audit-mode policies enforced, when any apply.
    pub audit: Option<(DirectionTrace, DirectionTrace)>,
}

/// The outcome line of an admin or baseline tier.
pub(super) fn ordered_outcome(decided: Option<&DirVerdict>, passed: bool, empty: bool) -> String {
    match (decided, passed) {
        (Some(d), _) if d.allowed => "Allow",
        (Some(_), _) => "Deny",
        (None, true) => "Pass",
        (None, false) if empty => "no policy",
        (None, false) => "no rule matched",
    }
    .into()
}

/// The outcome line of the application tier.
pub(super) fn application_outcome(v: Option<&DirVerdict>) -> String {
    match v {
        None => "no policy isolates this direction",
        Some(d) if d.reason == super::Reason::Isolated => "isolated: no rule allows",
        Some(d) if d.allowed => "Allow",
        Some(_) => "Deny",
    }
    .into()
}

impl PolicySlot {
    pub(super) fn trace(&self) -> PolicyTrace {
        PolicyTrace {
            policy: self.policy.id.to_string(),
            mode: self.policy.mode,
            rules: Vec::new(),
        }
    }
}

impl Engine {
    pub(super) fn rule_trace(&self, r: &Rule, rid: u32, matched: bool) -> RuleTrace {
        RuleTrace {
            rule: rid,
            description: self.rules[&rid].describe(),
            action: r.action,
            matched,
        }
    }

    /// Explains a flow: per direction and tier, which policies and rules were considered, which
    /// matched, and the verdict.
    pub fn explain(&self, flow: &Flow) -> Explanation {
        self.explain_named(flow, None)
    }

    /// Like [`explain`](Self::explain), with the destination known by these DNS names (a
    /// recorded flow's): FQDN rules decide on them instead of on the name table. Ignored when
    /// the destination is the inventory's (names never count there).
    pub fn explain_named<'a>(
        &'a self,
        flow: &Flow,
        dst_names: Option<&'a [String]>,
    ) -> Explanation {
        let mut ends = self.ends(flow);
        if let (Some(names), EndpointKind::External) = (dst_names, ends.dst.kind) {
            ends.dst.names = names;
        }
        let decision = self.decide(&ends);
        let describe = |ip: std::net::IpAddr, names: &[String]| match names.first() {
            Some(n) if !self.is_inventory_address(ip) => format!("{n} ({ip})"),
            _ => self.describe_ip(ip),
        };
        let dir_trace = |dir: Direction, audit: bool| {
            let endpoint = match dir {
                Direction::Egress => self.describe_ip(flow.src),
                Direction::Ingress => describe(flow.dst, ends.dst.names),
            };
            let mut tiers = Vec::new();
            let verdict = self.eval_dir(&ends.query(dir, audit), Some(&mut tiers));
            DirectionTrace {
                direction: dir,
                endpoint,
                tiers,
                verdict,
                rule: self.rules.get(&verdict.rule).map(RuleInfo::describe),
            }
        };
        let audit = decision.audit.map(|_| {
            (
                dir_trace(Direction::Egress, true),
                dir_trace(Direction::Ingress, true),
            )
        });
        Explanation {
            src: self.describe_ip(flow.src),
            dst: describe(flow.dst, ends.dst.names),
            protocol: flow.protocol,
            port: flow.port,
            deciding_rule: self
                .rules
                .get(&decision.deciding().1.rule)
                .map(RuleInfo::describe),
            decision,
            egress: dir_trace(Direction::Egress, false),
            ingress: dir_trace(Direction::Ingress, false),
            audit,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Reason;

    fn verdict(allowed: bool, reason: Reason) -> DirVerdict {
        DirVerdict {
            allowed,
            rule: 1,
            tier: Some(Tier::Application),
            reason,
        }
    }

    #[test]
    fn outcome_lines() {
        let allow = verdict(true, Reason::Rule);
        let deny = verdict(false, Reason::Rule);
        assert_eq!(ordered_outcome(Some(&allow), false, false), "Allow");
        assert_eq!(ordered_outcome(Some(&deny), true, false), "Deny");
        assert_eq!(ordered_outcome(None, true, false), "Pass");
        assert_eq!(ordered_outcome(None, false, true), "no policy");
        assert_eq!(ordered_outcome(None, false, false), "no rule matched");
        assert_eq!(
            application_outcome(Some(&verdict(false, Reason::Isolated))),
            "isolated: no rule allows"
        );
        assert_eq!(application_outcome(Some(&deny)), "Deny");
        assert_eq!(
            application_outcome(None),
            "no policy isolates this direction"
        );
    }

    #[test]
    fn explanations_trace_every_tier_considered() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: a, labels: {app: db}}\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: a}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 5432}]}]\n";
        let objects = crate::load::parse_file("t.yaml", yaml).unwrap().objects;
        let (inv, policies) = crate::load::into_model(objects.into_iter().map(|o| o.object));
        let e = Engine::build(inv, policies, 0);
        let ex = e.explain(&Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            protocol: Protocol::Tcp,
            port: 80,
        });
        assert!(!ex.decision.allowed);
        assert_eq!(ex.dst, "a/db (10.0.0.2)");
        let tiers: Vec<(Tier, &str)> = ex
            .ingress
            .tiers
            .iter()
            .map(|t| (t.tier, t.outcome.as_str()))
            .collect();
        assert_eq!(
            tiers,
            [
                (Tier::Admin, "no policy"),
                (Tier::Application, "isolated: no rule allows")
            ]
        );
        let rules = &ex.ingress.tiers[1].policies[0].rules;
        assert_eq!((rules.len(), rules[0].matched), (1, false));
        assert_eq!(
            ex.deciding_rule.as_deref(),
            Some("NetworkPolicy/a/db ingress (isolation: no rule allows)")
        );
        assert!(ex.egress.tiers.is_empty(), "the source is not managed");
    }
}

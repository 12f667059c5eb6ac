//! Explaining a flow: the evaluator's walk with a trace of every tier, policy and rule it
//! considered. Kept apart from `evaluate` so the hot path carries no trace types beyond an
//! `Option` it never fills.

use super::{Decision, DirVerdict, Engine, Flow, PolicySlot, RuleInfo};
use crate::model::{Action, Direction, Mode, Protocol, Rule, Tier};
use serde::Serialize;

/// One considered rule in an explanation.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleTrace {
    pub rule: u32,
    pub description: String,
    pub action: Action,
    pub matched: bool,
}

/// One policy considered in a tier.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct PolicyTrace {
    pub policy: String,
    pub mode: Mode,
    pub rules: Vec<RuleTrace>,
}

/// What one tier did.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DirectionTrace {
    pub direction: Direction,
    pub endpoint: String,
    pub tiers: Vec<TierTrace>,
    pub verdict: DirVerdict,
    pub rule: Option<String>,
}

/// The explanation of a flow.
#[derive(Debug, Clone, Serialize)]
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
        let ends = self.ends(flow);
        let decision = self.decide(&ends);
        let dir_trace = |dir: Direction, audit: bool| {
            let ip = match dir {
                Direction::Egress => flow.src,
                Direction::Ingress => flow.dst,
            };
            let mut tiers = Vec::new();
            let verdict = self.eval_dir(&ends.query(dir, audit), Some(&mut tiers));
            DirectionTrace {
                direction: dir,
                endpoint: self.describe_ip(ip),
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
            dst: self.describe_ip(flow.dst),
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

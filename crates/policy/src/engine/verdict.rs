//! What the engine answers with: flows, verdicts, and what a rule id or an identity stands for.
//! Kept apart from the index and the evaluator because every front end (CLI, manager, agent)
//! reads these types and nothing else of the engine.

use crate::labels::Labels;
use crate::model::{Action, Direction, Mode, PolicyId, Protocol, Tier};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// A connection attempt to decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub port: u16,
}

/// Why a direction got its verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// The endpoint is not a workload Cellwall enforces on (external, a node, hostNetwork).
    NotManaged,
    /// No policy decided: default allow.
    Default,
    /// A rule matched.
    Rule,
    /// Selected by an application-tier policy and no allow rule matched.
    Isolated,
}

/// The verdict of one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DirVerdict {
    pub allowed: bool,
    /// Deciding rule id (see [`crate::Engine::rule`]); 0 when no rule decided.
    pub rule: u32,
    pub tier: Option<Tier>,
    pub reason: Reason,
}

impl DirVerdict {
    /// The verdict of an end Cellwall does not enforce on.
    pub(crate) const UNMANAGED: DirVerdict = DirVerdict {
        allowed: true,
        rule: 0,
        tier: None,
        reason: Reason::NotManaged,
    };
    /// No policy decided.
    pub(crate) const DEFAULT: DirVerdict = DirVerdict {
        allowed: true,
        rule: 0,
        tier: None,
        reason: Reason::Default,
    };
}

/// The decision for a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Decision {
    pub allowed: bool,
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
    /// What the verdict would be with audit-mode policies enforced; `None` when no audit-mode
    /// policy applies to either end.
    pub audit: Option<AuditOutcome>,
}

/// The verdict with audit-mode policies enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AuditOutcome {
    pub allowed: bool,
    pub egress: DirVerdict,
    pub ingress: DirVerdict,
}

impl Decision {
    /// The direction verdict that decided the flow: the denying side, else the side whose rule
    /// admitted it (ingress first), else egress.
    pub fn deciding(&self) -> (Direction, &DirVerdict) {
        decisive(&self.egress, &self.ingress)
    }
}

fn decisive<'a>(eg: &'a DirVerdict, ing: &'a DirVerdict) -> (Direction, &'a DirVerdict) {
    if !eg.allowed {
        (Direction::Egress, eg)
    } else if !ing.allowed || ing.rule != 0 {
        (Direction::Ingress, ing)
    } else {
        (Direction::Egress, eg)
    }
}

/// What a rule id stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RuleInfo {
    pub id: u32,
    pub policy: PolicyId,
    pub direction: Direction,
    /// Position in the policy's rules of that direction; `None` for the implicit
    /// "isolated, nothing allowed" default deny of an application-tier policy.
    pub index: Option<usize>,
    pub name: Option<String>,
    pub action: Action,
    pub tier: Tier,
    pub mode: Mode,
}

impl RuleInfo {
    /// `NetworkPolicy/x/deny-all ingress[0] "name"` or `... ingress (default deny)`.
    pub fn describe(&self) -> String {
        let mut s = format!("{} {}", self.policy, self.direction.as_str());
        match self.index {
            Some(i) => s.push_str(&format!("[{i}]")),
            None => s.push_str(" (isolation: no rule allows)"),
        }
        if let Some(n) = &self.name {
            s.push_str(&format!(" \"{n}\""));
        }
        s
    }
}

/// A label identity of managed workloads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IdentityInfo {
    pub id: u32,
    pub namespace: String,
    pub namespace_labels: Labels,
    pub labels: Labels,
}

impl IdentityInfo {
    /// The canonical text the identity number is derived from.
    pub fn key(&self) -> String {
        identity_key(&self.namespace, &self.namespace_labels, &self.labels)
    }
}

/// Canonical text of a label identity: namespace, namespace labels, pod labels (sorted maps, so
/// the same labels always give the same text).
pub(crate) fn identity_key(ns: &str, ns_labels: &Labels, labels: &Labels) -> String {
    let mut k = format!("ns={ns}");
    for (a, b) in ns_labels {
        k.push_str(&format!(";nsl:{a}={b}"));
    }
    for (a, b) in labels {
        k.push_str(&format!(";l:{a}={b}"));
    }
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(allowed: bool, rule: u32) -> DirVerdict {
        DirVerdict {
            allowed,
            rule,
            tier: None,
            reason: Reason::Rule,
        }
    }

    #[test]
    fn deciding_side_is_the_denier_else_the_admitting_rule() {
        let d = |eg, ing| Decision {
            allowed: false,
            egress: eg,
            ingress: ing,
            audit: None,
        };
        assert_eq!(
            d(verdict(false, 1), verdict(false, 2)).deciding().0,
            Direction::Egress
        );
        assert_eq!(
            d(verdict(true, 1), verdict(false, 2)).deciding().0,
            Direction::Ingress
        );
        assert_eq!(
            d(verdict(true, 1), verdict(true, 2)).deciding().0,
            Direction::Ingress
        );
        assert_eq!(
            d(verdict(true, 1), DirVerdict::DEFAULT).deciding().0,
            Direction::Egress
        );
    }

    #[test]
    fn rule_descriptions_name_policy_direction_and_position() {
        let mut r = RuleInfo {
            id: 300,
            policy: PolicyId::new(crate::model::Family::NetworkPolicy, Some("x"), "np"),
            direction: Direction::Ingress,
            index: Some(2),
            name: Some("web".into()),
            action: Action::Allow,
            tier: Tier::Application,
            mode: Mode::Enforce,
        };
        assert_eq!(r.describe(), "NetworkPolicy/x/np ingress[2] \"web\"");
        r.index = None;
        r.name = None;
        assert_eq!(
            r.describe(),
            "NetworkPolicy/x/np ingress (isolation: no rule allows)"
        );
    }

    #[test]
    fn identity_keys_are_canonical() {
        let l = |p: &[(&str, &str)]| -> Labels {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let a = identity_key("x", &l(&[("e", "p")]), &l(&[("b", "2"), ("a", "1")]));
        let b = identity_key("x", &l(&[("e", "p")]), &l(&[("a", "1"), ("b", "2")]));
        assert_eq!(a, b);
        assert_eq!(a, "ns=x;nsl:e=p;l:a=1;l:b=2");
    }
}

//! Business-flow approval: proposals saved as drafts, reviewed rule by rule, applied with their
//! approved rules only. A draft is a versioned object of the store (kind `Draft`): every
//! decision is a new version by its reviewer, and an audit event says what was decided. Drafts
//! are not part of the desired state: writing one publishes nothing.

use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::{Body, Committed, Kind, Write};
use cellwall_api::{
    Document, Draft, DraftApplied, DraftApplyResult, DraftList, DraftRequest, DraftRule,
    DraftSummary, ProposeQuery, ReviewDecision, ReviewRequest, RuleStatus,
};
use cellwall_policy::discover::{render_yaml, Proposal, ProposalFormat};
use std::sync::Mutex;

/// Reviews read, change and write a draft: one at a time, so no decision is lost.
static REVIEW: Mutex<()> = Mutex::new(());

/// A draft's approved rules as documents, the policies in them, and the policies left out.
pub type DraftDocuments = (Vec<Document>, Vec<String>, Vec<String>);

/// Longest comment kept with a decision.
const MAX_COMMENT: usize = 2_000;

fn valid_name(name: &str) -> Result<(), ManagerError> {
    let ok = crate::validate::dns_label(name);
    if ok {
        Ok(())
    } else {
        Err(ManagerError::Invalid(format!(
            "draft name {name:?}: expected lowercase letters, digits and '-', at most 63, \
             starting and ending with a letter or digit"
        )))
    }
}

/// A rule's id from what it says (policy, direction, peer, protocol, port): a decision names
/// the rule the reviewer saw, never whatever sits at that position after the draft was saved
/// again. FNV-1a (as identities use): stable across builds, unlike std's hasher.
fn rule_id(policy: &str, direction: &str, r: &cellwall_policy::discover::ProposedRule) -> String {
    let text = format!(
        "{policy}|{direction}|{}|{}|{}",
        serde_json::to_string(&r.peer).unwrap_or_default(),
        r.protocol,
        r.port
    );
    let h = cellwall_policy::identity::fnv1a(&text);
    format!("r{:07x}", h & 0xfff_ffff)
}

/// The proposal's rules, policy by policy, ingress before egress, each with its id.
fn number_rules(p: &Proposal) -> Vec<DraftRule> {
    let mut out: Vec<DraftRule> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for pol in &p.policies {
        let policy = format!("{}/{}", pol.namespace, pol.name);
        for (direction, rules) in [("ingress", &pol.ingress), ("egress", &pol.egress)] {
            for r in rules {
                let base = rule_id(&policy, direction, r);
                let mut id = base.clone();
                let mut n = 1;
                while !seen.insert(id.clone()) {
                    n += 1;
                    id = format!("{base}-{n}");
                }
                out.push(DraftRule {
                    id,
                    policy: format!("{}/{}", pol.namespace, pol.name),
                    direction: direction.into(),
                    rule: r.clone(),
                    status: RuleStatus::Pending,
                    decided_by: None,
                    decided_at_ms: None,
                    comment: None,
                });
            }
        }
    }
    out
}

/// The draft's approved rules as a proposal: each policy with at least one decided rule keeps
/// its approved rules (a rejected rule's traffic is then denied); policies nobody decided on
/// are left out, and listed.
pub fn approved(d: &Draft) -> (Proposal, Vec<String>) {
    let mut p = d.proposal.clone();
    let mut left_out = Vec::new();
    p.policies.retain_mut(|pol| {
        let id = format!("{}/{}", pol.namespace, pol.name);
        let mine: Vec<&DraftRule> = d.rules.iter().filter(|r| r.policy == id).collect();
        let keep = |rules: &mut Vec<_>, dir: &str| {
            let mut n = 0;
            rules.retain(|_| {
                let r = mine.iter().filter(|r| r.direction == dir).nth(n);
                n += 1;
                r.is_some_and(|r| r.status == RuleStatus::Approved)
            });
        };
        let decided = mine.iter().any(|r| r.status != RuleStatus::Pending);
        keep(&mut pol.ingress, "ingress");
        keep(&mut pol.egress, "egress");
        if !decided {
            left_out.push(id);
        }
        decided
    });
    p.excluded.clear();
    (p, left_out)
}

impl Manager {
    fn load_draft(&self, name: &str) -> Result<Draft, ManagerError> {
        valid_name(name)?;
        self.store
            .current(Kind::Draft)?
            .into_iter()
            .find(|c| c.key == name)
            .and_then(|c| match c.body {
                Body::Draft(d) => Some(*d),
                _ => None,
            })
            .ok_or_else(|| ManagerError::NotFound(format!("no draft named {name}")))
    }

    fn store_draft(&self, actor: &str, d: &Draft) -> Result<Committed, ManagerError> {
        Ok(self.store.write(
            actor,
            &[Write {
                kind: Kind::Draft,
                key: d.name.clone(),
                body: Some(Body::Draft(Box::new(d.clone()))),
            }],
        )?)
    }

    /// Learns a proposal from history now and saves it for review.
    pub fn save_draft(&self, actor: &str, req: &DraftRequest) -> Result<Draft, ManagerError> {
        valid_name(&req.name)?;
        let _g = REVIEW.lock().unwrap_or_else(|p| p.into_inner());
        if !req.replace && self.load_draft(&req.name).is_ok() {
            return Err(ManagerError::Conflict(format!(
                "draft {} exists: review it, delete it, or save with replace",
                req.name
            )));
        }
        let since = req.since.clone().unwrap_or_else(|| "24h".into());
        let group_by = req.group_by.clone().unwrap_or_default();
        let proposal = self
            .propose(&ProposeQuery {
                since: Some(since.clone()),
                namespace: req.namespace.clone(),
                format: None,
                review_below: req.review_below,
                group_by: Some(group_by.clone()),
            })?
            .proposal;
        let d = Draft {
            name: req.name.clone(),
            created_by: actor.to_string(),
            created_at_ms: crate::config::now_ms(),
            since,
            group_by,
            rules: number_rules(&proposal),
            proposal,
            applied: None,
        };
        self.store_draft(actor, &d)?;
        self.store.log_event(
            actor,
            "draft.save",
            &format!(
                "{}: {} policies, {} rules",
                d.name,
                d.proposal.policies.len(),
                d.rules.len()
            ),
        )?;
        Ok(d)
    }

    pub fn draft(&self, name: &str) -> Result<Draft, ManagerError> {
        self.load_draft(name)
    }

    pub fn drafts(&self) -> Result<DraftList, ManagerError> {
        let mut items = Vec::new();
        for c in self.store.current(Kind::Draft)? {
            let Body::Draft(d) = c.body else { continue };
            let n = |s: RuleStatus| d.rules.iter().filter(|r| r.status == s).count();
            items.push(DraftSummary {
                name: d.name.clone(),
                created_by: d.created_by.clone(),
                created_at_ms: d.created_at_ms,
                rules: d.rules.len(),
                approved: n(RuleStatus::Approved),
                rejected: n(RuleStatus::Rejected),
                pending: n(RuleStatus::Pending),
                applied_at_ms: d.applied.as_ref().map(|a| a.at_ms),
            });
        }
        items.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(DraftList { items })
    }

    /// Records a decision on rules of a draft: all named rules or none (an unknown id refuses
    /// the whole request).
    pub fn review(&self, actor: &str, req: &ReviewRequest) -> Result<Draft, ManagerError> {
        if req.rules.is_empty() {
            return Err(ManagerError::Invalid(
                "name the rules to decide: rule ids as `cellwall review NAME` lists them, a policy NS/NAME, pending, or all".into(),
            ));
        }
        if req.comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
            return Err(ManagerError::Invalid(format!(
                "comment: at most {MAX_COMMENT} bytes"
            )));
        }
        let _g = REVIEW.lock().unwrap_or_else(|p| p.into_inner());
        let mut d = self.load_draft(&req.name)?;
        let mut chosen = vec![false; d.rules.len()];
        for sel in &req.rules {
            let hits: Vec<usize> = (0..d.rules.len())
                .filter(|&i| {
                    let r = &d.rules[i];
                    sel == "all"
                        || (sel == "pending" && r.status == RuleStatus::Pending)
                        || r.id == *sel
                        || r.policy == *sel
                })
                .collect();
            if hits.is_empty() && sel != "pending" {
                return Err(ManagerError::NotFound(format!(
                    "draft {}: no rule {sel:?} (a rule id as `cellwall review {}` lists them, \
                     a policy NS/NAME, pending, or all); if the draft was saved again since, \
                     its rules changed",
                    d.name, d.name
                )));
            }
            for i in hits {
                chosen[i] = true;
            }
        }
        let (status, verb) = match req.decision {
            ReviewDecision::Approve => (RuleStatus::Approved, "approve"),
            ReviewDecision::Reject => (RuleStatus::Rejected, "reject"),
        };
        let now = crate::config::now_ms();
        let mut ids = Vec::new();
        for (r, _) in d.rules.iter_mut().zip(&chosen).filter(|(_, c)| **c) {
            r.status = status;
            r.decided_by = Some(actor.to_string());
            r.decided_at_ms = Some(now);
            r.comment = req.comment.clone();
            ids.push(r.id.clone());
        }
        self.store_draft(actor, &d)?;
        self.store.log_event(
            actor,
            &format!("draft.{verb}"),
            &format!(
                "{}: {}{}",
                d.name,
                ids.join(","),
                req.comment
                    .as_deref()
                    .map(|c| format!(" ({c})"))
                    .unwrap_or_default()
            ),
        )?;
        Ok(d)
    }

    /// The draft's approved rules as a document to simulate or apply, the policies in it, and
    /// those left out.
    pub fn draft_documents(&self, name: &str) -> Result<DraftDocuments, ManagerError> {
        let d = self.load_draft(name)?;
        let (p, left_out) = approved(&d);
        if p.policies.is_empty() {
            return Err(ManagerError::Conflict(format!(
                "draft {name}: no rule is decided yet (cellwall review {name} approve RULE...)"
            )));
        }
        let policies = p
            .policies
            .iter()
            .map(|p| format!("{}/{}", p.namespace, p.name))
            .collect();
        let doc = Document {
            file: format!("draft-{name}.yaml"),
            text: render_yaml(&p, ProposalFormat::Cellwall),
        };
        Ok((vec![doc], policies, left_out))
    }

    /// Applies the approved rules of a draft and records when and by whom.
    pub fn apply_draft(&self, actor: &str, name: &str) -> Result<DraftApplyResult, ManagerError> {
        let _g = REVIEW.lock().unwrap_or_else(|p| p.into_inner());
        let (docs, policies, left_out) = self.draft_documents(name)?;
        let committed = self.apply(actor, &docs, false, false)?;
        let mut d = self.load_draft(name)?;
        d.applied = Some(DraftApplied {
            by: actor.to_string(),
            at_ms: crate::config::now_ms(),
            revision: committed.revision,
            policies: policies.clone(),
        });
        self.store_draft(actor, &d)?;
        self.store.log_event(
            actor,
            "draft.apply",
            &format!(
                "{name}: {} (revision {})",
                policies.join(","),
                committed.revision
            ),
        )?;
        Ok(DraftApplyResult {
            committed,
            policies,
            left_out,
        })
    }

    pub fn delete_draft(&self, actor: &str, name: &str) -> Result<Committed, ManagerError> {
        let _g = REVIEW.lock().unwrap_or_else(|p| p.into_inner());
        self.load_draft(name)?;
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Draft,
                key: name.to_string(),
                body: None,
            }],
        )?;
        self.store.log_event(actor, "draft.delete", name)?;
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_policy::discover::{Evidence, ProposedPeer, ProposedPolicy, ProposedRule};

    fn rule(port: u16) -> ProposedRule {
        ProposedRule {
            peer: ProposedPeer::Cidr {
                cidr: "192.0.2.1/32".into(),
            },
            protocol: cellwall_policy::Protocol::Tcp,
            port,
            evidence: Evidence {
                connections: 1,
                first_ns: 0,
                last_ns: 0,
                coverage: 1.0,
                review: false,
            },
        }
    }

    #[test]
    fn only_approved_rules_of_decided_policies_are_applied() {
        let pol = |name: &str| ProposedPolicy {
            namespace: "a".into(),
            name: name.into(),
            group: format!("a/{name}"),
            selector: [("app".to_string(), name.to_string())].into(),
            ingress: vec![rule(80), rule(81)],
            egress: vec![rule(53)],
        };
        let proposal = Proposal {
            policies: vec![pol("web"), pol("db")],
            ..Default::default()
        };
        let mut d = Draft {
            name: "d".into(),
            created_by: "t".into(),
            created_at_ms: 0,
            since: "1h".into(),
            group_by: Default::default(),
            rules: number_rules(&proposal),
            proposal,
            applied: None,
        };
        assert_eq!(d.rules.len(), 6);
        assert_eq!(d.rules[2].direction, "egress");
        // Ids follow content: the same rule keeps its id when the draft is saved again,
        // whatever moved around it.
        let again = number_rules(&Proposal {
            policies: vec![
                d.proposal.policies[1].clone(),
                d.proposal.policies[0].clone(),
            ],
            ..Default::default()
        });
        let id_of = |rules: &[DraftRule], pol: &str, port: u16| {
            rules
                .iter()
                .find(|r| r.policy == pol && r.rule.port == port)
                .unwrap()
                .id
                .clone()
        };
        assert_eq!(id_of(&d.rules, "a/web", 81), id_of(&again, "a/web", 81));
        assert_ne!(id_of(&d.rules, "a/web", 81), id_of(&d.rules, "a/db", 81));
        let ids: std::collections::HashSet<_> = d.rules.iter().map(|r| &r.id).collect();
        assert_eq!(ids.len(), 6);
        d.rules[1].status = RuleStatus::Approved; // web ingress 81
        d.rules[2].status = RuleStatus::Rejected; // web egress 53
        let (p, left_out) = approved(&d);
        assert_eq!(left_out, ["a/db"]);
        assert_eq!(p.policies.len(), 1);
        let web = &p.policies[0];
        assert_eq!(web.ingress.iter().map(|r| r.port).collect::<Vec<_>>(), [81]);
        assert!(web.egress.is_empty());
        assert!(valid_name("shop-v1").is_ok());
        for bad in ["", "-a", "a-", "A", "a/b", &"a".repeat(64)] {
            assert!(valid_name(bad).is_err(), "{bad}");
        }
    }
}

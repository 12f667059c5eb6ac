//! `cellwall review`: business-flow approval of a saved proposal (`cellwall propose --save
//! NAME`), rule by rule with its evidence; then `simulate --draft NAME` and `apply --draft
//! NAME` use the approved rules only.

use crate::client::{header, print_structured, table, Format, Target};
use anyhow::Result;
use cellwall_api::{Draft, ReviewDecision, ReviewRequest, RuleStatus};
use cellwall_policy::discover::ProposedPeer;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Approve,
    Reject,
}

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:
  cellwall propose --save shop-v1         save today's proposal as draft shop-v1
  cellwall review                         list drafts and how far their review got
  cellwall review shop-v1                 its rules, evidence and decisions
  cellwall review shop-v1 approve r3f09a1c r88b2d07 --comment 'checkout flow, ticket 42'
  cellwall review shop-v1 reject r5e1c2aa (its traffic is denied once applied)
  cellwall review shop-v1 approve shop/cw-cart   every rule of one proposed policy
  cellwall review shop-v1 approve pending        every rule not decided yet
  cellwall simulate --draft shop-v1       what the approved rules would break
  cellwall apply --draft shop-v1 --wait   enforce the approved rules")]
pub struct ReviewArgs {
    /// The draft; without it, every draft is listed.
    pub name: Option<String>,
    /// Decide on rules; without it, the draft is shown.
    #[arg(value_enum, requires = "rules")]
    pub action: Option<Action>,
    /// Rule ids (as listed, e.g. r3f09a1c), a proposed policy's NS/NAME (all its rules), `pending` or `all`.
    pub rules: Vec<String>,
    /// Why: kept with the decision and in the audit trail.
    #[arg(long)]
    pub comment: Option<String>,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

fn peer(p: &ProposedPeer) -> String {
    match p {
        ProposedPeer::Pods { namespace, labels } => {
            let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("{namespace}/{}", l.join(","))
        }
        ProposedPeer::Cidr { cidr } => cidr.clone(),
        ProposedPeer::Domain { name } => name.clone(),
    }
}

fn status(s: RuleStatus) -> &'static str {
    match s {
        RuleStatus::Pending => "pending",
        RuleStatus::Approved => "approved",
        RuleStatus::Rejected => "rejected",
    }
}

fn render(d: &Draft) -> String {
    let mut rows = vec![header(&[
        "RULE", "POLICY", "DIR", "PEER", "PORT", "CONNS", "STATUS", "BY", "COMMENT",
    ])];
    for r in &d.rules {
        rows.push(vec![
            r.id.clone(),
            r.policy.clone(),
            r.direction.clone(),
            peer(&r.rule.peer),
            format!("{}/{}", r.rule.protocol, r.rule.port),
            format!(
                "{}{}",
                r.rule.evidence.connections,
                if r.rule.evidence.review { " (few)" } else { "" }
            ),
            status(r.status).into(),
            r.decided_by.clone().unwrap_or_else(|| "-".into()),
            r.comment.clone().unwrap_or_default(),
        ]);
    }
    let n = |s| d.rules.iter().filter(|r| r.status == s).count();
    let mut out = table(&rows);
    out.push_str(&format!(
        "draft {}: {} rules, {} approved, {} rejected, {} pending (learned from {} of history by {}, group-by {})\n",
        d.name,
        d.rules.len(),
        n(RuleStatus::Approved),
        n(RuleStatus::Rejected),
        n(RuleStatus::Pending),
        d.since,
        d.created_by,
        d.group_by
    ));
    if let Some(a) = &d.applied {
        out.push_str(&format!(
            "applied by {} as revision {}: {}\n",
            a.by,
            a.revision,
            a.policies.join(", ")
        ));
    }
    out
}

pub fn review(a: ReviewArgs) -> Result<()> {
    let c = a.target.client()?;
    let Some(name) = a.name else {
        let l = c.drafts()?;
        if !print_structured(a.output, &l)? {
            let mut rows = vec![header(&[
                "DRAFT", "RULES", "APPROVED", "REJECTED", "PENDING", "BY", "APPLIED",
            ])];
            for d in &l.items {
                rows.push(vec![
                    d.name.clone(),
                    d.rules.to_string(),
                    d.approved.to_string(),
                    d.rejected.to_string(),
                    d.pending.to_string(),
                    d.created_by.clone(),
                    if d.applied_at_ms.is_some() {
                        "yes"
                    } else {
                        "no"
                    }
                    .into(),
                ]);
            }
            print!("{}", table(&rows));
        }
        return Ok(());
    };
    let d = match a.action {
        None => c.draft(&name)?,
        Some(act) => c.review(&ReviewRequest {
            name,
            decision: match act {
                Action::Approve => ReviewDecision::Approve,
                Action::Reject => ReviewDecision::Reject,
            },
            rules: a.rules.clone(),
            comment: a.comment.clone(),
        })?,
    };
    if !print_structured(a.output, &d)? {
        print!("{}", render(&d));
    }
    Ok(())
}

//! Text renderings shared by every front end (CLI, manager API): pure string building.

use crate::engine::{Explanation, TierTrace};

fn render_tiers(s: &mut String, tiers: &[TierTrace]) {
    for t in tiers {
        s.push_str(&format!("    {} tier: {}\n", t.tier.as_str(), t.outcome));
        for p in &t.policies {
            let mode = if p.mode == crate::Mode::Audit {
                " [audit]"
            } else {
                ""
            };
            s.push_str(&format!("      {}{mode}\n", p.policy));
            for r in &p.rules {
                let mark = if r.matched { "matched" } else { "no match" };
                s.push_str(&format!(
                    "        {:?} {} — {mark}\n",
                    r.action, r.description
                ));
            }
        }
    }
}

/// Human-readable explanation, one block per direction.
pub fn render_explanation(ex: &Explanation) -> String {
    let verdict = |a: bool| if a { "ALLOWED" } else { "DENIED" };
    let mut s = format!(
        "{} -> {} {}/{}: {}\n",
        ex.src,
        ex.dst,
        ex.protocol,
        ex.port,
        verdict(ex.decision.allowed)
    );
    match &ex.deciding_rule {
        Some(r) => s.push_str(&format!("  decided by {r}\n")),
        None => s.push_str("  decided by: no rule (default allow)\n"),
    }
    for (label, d) in [
        ("egress at the source", &ex.egress),
        ("ingress at the destination", &ex.ingress),
    ] {
        s.push_str(&format!(
            "  {label} {}: {}",
            d.endpoint,
            verdict(d.verdict.allowed)
        ));
        match (&d.rule, d.verdict.reason) {
            (Some(r), _) => s.push_str(&format!(" by {r}\n")),
            (None, crate::Reason::NotManaged) => {
                s.push_str(" (not a workload Cellwall enforces on)\n")
            }
            (None, _) => s.push_str(" (no policy decided: default allow)\n"),
        }
        render_tiers(&mut s, &d.tiers);
    }
    if let (Some(a), Some((eg, ing))) = (&ex.decision.audit, &ex.audit) {
        s.push_str(&format!(
            "  with audit-mode policies enforced: {}\n",
            verdict(a.allowed)
        ));
        for d in [eg, ing] {
            s.push_str(&format!(
                "    {} {}",
                d.direction.as_str(),
                verdict(d.verdict.allowed)
            ));
            s.push_str(
                &d.rule
                    .as_ref()
                    .map(|r| format!(" by {r}\n"))
                    .unwrap_or_else(|| "\n".into()),
            );
        }
    }
    s
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Engine, Flow};

    #[test]
    fn explanations_render_verdict_rule_and_tiers() {
        let yaml = "apiVersion: v1\nkind: Pod\nmetadata: {name: db, namespace: a, labels: {app: db}}\nstatus: {podIP: 10.0.0.2}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: db, namespace: a}\nspec:\n  podSelector: {}\n  ingress: [{ports: [{port: 5432}]}]\n";
        let objects = crate::load::parse_file("t.yaml", yaml).unwrap().objects;
        let (inv, policies) = crate::load::into_model(objects.into_iter().map(|o| o.object));
        let e = Engine::build(inv, policies, 0);
        let flow = |port| Flow {
            src: "192.0.2.1".parse().unwrap(),
            dst: "10.0.0.2".parse().unwrap(),
            protocol: crate::Protocol::Tcp,
            port,
        };
        let text = render_explanation(&e.explain(&flow(80)));
        assert!(
            text.starts_with(
                "192.0.2.1 (outside the inventory) -> a/db (10.0.0.2) TCP/80: DENIED\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("  decided by NetworkPolicy/a/db ingress (isolation: no rule allows)\n")
        );
        assert!(text.contains("(not a workload Cellwall enforces on)"));
        assert!(text.contains("    application tier: isolated: no rule allows\n"));
        assert!(text.contains("        Allow NetworkPolicy/a/db ingress[0] — no match\n"));
        let text = render_explanation(&e.explain(&flow(5432)));
        assert!(
            text.contains(": ALLOWED\n") && text.contains("— matched"),
            "{text}"
        );
    }
}

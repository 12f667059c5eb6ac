//! Deciding a flow: both directions, each walked tier by tier over the policies applicable to the
//! subject's identity (see the module docs of `engine` for the precedence). The walk is shared
//! with `explain`, which passes a trace to fill.

use super::explain::{application_outcome, ordered_outcome, TierTrace};
use super::view::{peer_matches, port_matches, EndpointView};
use super::{AuditOutcome, Decision, DirVerdict, Engine, Flow, PolicySlot, Reason};
use crate::model::{Action, Direction, Entity, Mode, Peer, PortSpec, Protocol, Rule, Tier};

/// One direction to decide: at `subject` (the end whose policy applies) against `peer`.
#[derive(Debug, Clone, Copy)]
pub struct DirQuery<'q> {
    pub dir: Direction,
    /// The subject's label identity; `None` for an end Cellwall does not enforce on.
    pub subject_id: Option<u32>,
    pub subject: &'q EndpointView<'q>,
    pub peer: &'q EndpointView<'q>,
    pub protocol: Protocol,
    pub port: u16,
    /// Count audit-mode policies (the audit verdict) or not (the enforced verdict).
    pub include_audit: bool,
}

/// Both ends of a flow as the index resolved them.
pub(super) struct Ends<'e> {
    src: EndpointView<'e>,
    src_id: Option<u32>,
    pub(super) dst: EndpointView<'e>,
    dst_id: Option<u32>,
    protocol: Protocol,
    port: u16,
}

impl Ends<'_> {
    /// The question for one direction: egress is decided at the source, ingress at the
    /// destination.
    pub(super) fn query(&self, dir: Direction, include_audit: bool) -> DirQuery<'_> {
        let (subject_id, subject, peer) = match dir {
            Direction::Egress => (self.src_id, &self.src, &self.dst),
            Direction::Ingress => (self.dst_id, &self.dst, &self.src),
        };
        DirQuery {
            dir,
            subject_id,
            subject,
            peer,
            protocol: self.protocol,
            port: self.port,
            include_audit,
        }
    }
}

/// What one direction's walk needs at hand: the query and the destination (whose ports named
/// ports resolve against).
struct DirEval<'e, 'q> {
    engine: &'e Engine,
    q: &'q DirQuery<'q>,
    dst: &'q EndpointView<'q>,
}

impl Engine {
    /// Decides a flow. This is the reference semantics.
    pub fn evaluate(&self, flow: &Flow) -> Decision {
        self.decide(&self.ends(flow))
    }

    pub(super) fn ends(&self, flow: &Flow) -> Ends<'_> {
        let (src, src_id) = self.view_of_ip(flow.src);
        let (dst, dst_id) = self.view_of_ip(flow.dst);
        Ends {
            src,
            src_id,
            dst,
            dst_id,
            protocol: flow.protocol,
            port: flow.port,
        }
    }

    /// Both directions, enforced, and with audit-mode policies when any applies to either end.
    pub(super) fn decide(&self, ends: &Ends) -> Decision {
        let both = |audit: bool| {
            let eg = self.eval_dir(&ends.query(Direction::Egress, audit), None);
            let ing = self.eval_dir(&ends.query(Direction::Ingress, audit), None);
            (eg, ing)
        };
        let (egress, ingress) = both(false);
        let audit = (self.has_audit(ends.src_id, Direction::Egress)
            || self.has_audit(ends.dst_id, Direction::Ingress))
        .then(|| {
            let (egress, ingress) = both(true);
            AuditOutcome {
                allowed: egress.allowed && ingress.allowed,
                egress,
                ingress,
            }
        });
        Decision {
            allowed: egress.allowed && ingress.allowed,
            egress,
            ingress,
            audit,
        }
    }

    /// Walks the tiers of one direction; with `trace`, records what each tier considered.
    pub(super) fn eval_dir(
        &self,
        q: &DirQuery,
        mut trace: Option<&mut Vec<TierTrace>>,
    ) -> DirVerdict {
        let (Some(sid), true) = (q.subject_id, q.subject.is_workload()) else {
            return DirVerdict::UNMANAGED;
        };
        let Some(app) = self.applicable.get(&sid) else {
            return DirVerdict::DEFAULT;
        };
        let ctx = DirEval {
            engine: self,
            q,
            dst: match q.dir {
                Direction::Ingress => q.subject,
                Direction::Egress => q.peer,
            },
        };
        // The list is sorted by tier first: each tier is one segment of it.
        let list = &app.lists[q.dir.index()];
        let mut i = 0;
        for tier in Tier::ALL {
            let start = i;
            while i < list.len()
                && self.slots[list[i]]
                    .as_ref()
                    .is_some_and(|s| s.policy.tier == tier)
            {
                i += 1;
            }
            let mut tt = trace.is_some().then(|| TierTrace::new(tier));
            let outcome = ctx.tier(tier, &list[start..i], tt.as_mut());
            if let (Some(t), Some(tt)) = (trace.as_deref_mut(), tt) {
                t.push(tt);
            }
            if let Some(v) = outcome {
                return v;
            }
        }
        DirVerdict::DEFAULT
    }
}

fn rule_verdict(allowed: bool, rule: u32, tier: Tier, reason: Reason) -> DirVerdict {
    DirVerdict {
        allowed,
        rule,
        tier: Some(tier),
        reason,
    }
}

impl<'e> DirEval<'e, '_> {
    /// A policy that takes part in this walk: active, and enforced unless audit counts.
    #[inline]
    fn live(&self, slot: usize) -> Option<&'e PolicySlot> {
        let s = self.engine.slots[slot].as_ref()?;
        let p = &s.policy;
        (p.is_active(self.engine.now) && (self.q.include_audit || p.mode == Mode::Enforce))
            .then_some(s)
    }

    /// Peers before ports, and the subject's node and the destination's ports read only for
    /// the rules that need them: most rules a flow meets fail on their peers, and the workload
    /// records behind node and ports are cold at 100,000 workloads.
    #[inline]
    fn rule_matches(&self, r: &Rule) -> bool {
        let q = self.q;
        r.expires_at.is_none_or(|t| self.engine.now < t)
            && r.peers.iter().any(|p| {
                let node = match p {
                    Peer::Entity(Entity::Host) => q.subject.workload_node(),
                    _ => None,
                };
                peer_matches(p, node, q.peer)
            })
            && (r.ports.is_empty()
                || r.ports.iter().any(|ps| {
                    let named = matches!(ps, PortSpec::Named { .. });
                    port_matches(
                        ps,
                        q.protocol,
                        q.port,
                        named.then(|| self.dst.ports()).flatten(),
                    )
                }))
    }

    fn tier(
        &self,
        tier: Tier,
        segment: &[usize],
        tt: Option<&mut TierTrace>,
    ) -> Option<DirVerdict> {
        match tier {
            Tier::Admin | Tier::Baseline => self.first_match(tier, segment, tt),
            Tier::Application => self.isolation(tier, segment, tt),
        }
    }

    /// Admin and baseline tiers: policies in order, rules in order, the first match decides
    /// (`Pass` hands over to the next tier).
    fn first_match(
        &self,
        tier: Tier,
        segment: &[usize],
        mut tt: Option<&mut TierTrace>,
    ) -> Option<DirVerdict> {
        let mut decided = None;
        let mut passed = false;
        for s in segment.iter().filter_map(|i| self.live(*i)) {
            let mut pt = tt.as_ref().map(|_| s.trace());
            let hit = s.dir_rules(self.q.dir).find(|(r, rid)| {
                let m = self.rule_matches(r);
                if let Some(pt) = pt.as_mut() {
                    pt.rules.push(self.engine.rule_trace(r, **rid, m));
                }
                m
            });
            if let (Some(tt), Some(pt)) = (tt.as_deref_mut(), pt) {
                tt.policies.push(pt);
            }
            if let Some((r, rid)) = hit {
                match r.action {
                    Action::Allow | Action::Deny => {
                        let allowed = r.action == Action::Allow;
                        decided = Some(rule_verdict(allowed, *rid, tier, Reason::Rule));
                    }
                    Action::Pass => passed = true,
                }
                break;
            }
        }
        if let Some(tt) = tt {
            tt.outcome = ordered_outcome(decided.as_ref(), passed, tt.policies.is_empty());
        }
        decided
    }

    /// Application tier: only policies that isolate this direction count; a matching deny wins,
    /// else a matching allow admits, else the first isolating policy's default denies.
    fn isolation(
        &self,
        tier: Tier,
        segment: &[usize],
        mut tt: Option<&mut TierTrace>,
    ) -> Option<DirVerdict> {
        let d = self.q.dir.index();
        let (mut first_isolating, mut deny, mut allow) = (None, None, None);
        for s in segment.iter().filter_map(|i| self.live(*i)) {
            if !s.policy.isolates[d] {
                continue;
            }
            first_isolating.get_or_insert(s.isolation_rule[d]);
            let mut pt = tt.as_ref().map(|_| s.trace());
            for (r, rid) in s.dir_rules(self.q.dir) {
                // Once denied, only further denies can matter (unless tracing every rule).
                if deny.is_some() && r.action != Action::Deny && pt.is_none() {
                    continue;
                }
                let m = self.rule_matches(r);
                if let Some(pt) = pt.as_mut() {
                    pt.rules.push(self.engine.rule_trace(r, *rid, m));
                }
                if m {
                    let first = if r.action == Action::Deny {
                        &mut deny
                    } else {
                        &mut allow
                    };
                    first.get_or_insert(*rid);
                }
            }
            if let (Some(tt), Some(pt)) = (tt.as_deref_mut(), pt) {
                tt.policies.push(pt);
            }
        }
        let v = match (first_isolating, deny, allow) {
            (None, _, _) => None,
            (Some(_), Some(d), _) => Some(rule_verdict(false, d, tier, Reason::Rule)),
            (Some(_), None, Some(a)) => Some(rule_verdict(true, a, tier, Reason::Rule)),
            (Some(iso), None, None) => Some(rule_verdict(false, iso, tier, Reason::Isolated)),
        };
        if let Some(tt) = tt {
            tt.outcome = application_outcome(v.as_ref());
        }
        v
    }
}

impl PolicySlot {
    /// This policy's rules of one direction, with their ids, in order.
    pub(super) fn dir_rules(&self, dir: Direction) -> impl Iterator<Item = (&Rule, &u32)> {
        self.policy
            .rules
            .iter()
            .zip(&self.rule_ids)
            .filter(move |(r, _)| r.direction == dir)
    }
}

#[cfg(test)]
mod tests {
    use crate::engine::{Engine, Flow, Reason};
    use crate::load::{into_model, parse_file};
    use crate::model::{Protocol, Tier};

    const YAML: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: a, labels: {app: web}}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: a, labels: {app: db}}
status: {podIP: 10.0.0.2}
---
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: admin}
spec:
  tier: admin
  priority: 1
  ingress:
  - {action: Pass, from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}
  - {action: Deny, ports: [{port: 22}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: a}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
---
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: audit, namespace: a}
spec:
  mode: audit
  podSelector: {matchLabels: {app: web}}
  egress: []
"#;

    fn engine() -> Engine {
        let objects = parse_file("t.yaml", YAML).unwrap().objects;
        let (inv, policies) = into_model(objects.into_iter().map(|o| o.object));
        Engine::build(inv, policies, 0)
    }

    fn flow(src: &str, dst: &str, port: u16) -> Flow {
        Flow {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            protocol: Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn tiers_decide_in_precedence_order() {
        let e = engine();
        // Admin passes web → db:5432 to the application tier, which allows it.
        let d = e.evaluate(&flow("10.0.0.1", "10.0.0.2", 5432));
        assert!(d.allowed);
        assert_eq!(d.ingress.tier, Some(Tier::Application));
        // The admin deny decides before the application tier is asked.
        let d = e.evaluate(&flow("10.0.0.1", "10.0.0.2", 22));
        assert_eq!((d.allowed, d.ingress.tier), (false, Some(Tier::Admin)));
        // db is isolated: another port is denied by the isolation default.
        let d = e.evaluate(&flow("10.0.0.1", "10.0.0.2", 80));
        assert_eq!(d.ingress.reason, Reason::Isolated);
        // Outside addresses are not managed; nobody decides their egress.
        let d = e.evaluate(&flow("192.0.2.1", "10.0.0.1", 80));
        assert_eq!(d.egress.reason, Reason::NotManaged);
        assert_eq!(d.ingress.reason, Reason::Default);
    }

    #[test]
    fn audit_mode_is_reported_not_enforced() {
        let e = engine();
        let d = e.evaluate(&flow("10.0.0.1", "10.0.0.2", 5432));
        assert!(d.allowed);
        let audit = d
            .audit
            .expect("an audit-mode policy applies to web's egress");
        assert!(!audit.allowed);
        assert_eq!(audit.egress.reason, Reason::Isolated);
        // No audit-mode policy applies to db → web.
        assert!(e
            .evaluate(&flow("10.0.0.2", "10.0.0.1", 80))
            .audit
            .is_none());
    }
}

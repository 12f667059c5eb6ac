//! Continuous compliance: every batch of connections that reaches the manager is checked against
//! the policy in force, and deviations become alerts — in the manager's log, in the store
//! (`cellwall alerts`), and POSTed to webhooks. Checking never blocks flow intake: webhooks are
//! served by their own task from a bounded queue (what does not fit is counted).
//!
//! Kinds: `escaped` (it happened although the policy in force when it was opened denies it —
//! every revision that may have been in force then, see [`Earlier`]), `audit-only` (allowed
//! only because the denying policy is in audit mode), `expiring-grant` (allowed by a rule or
//! policy that expires within the hour), `new-edge` (a connection into a policed workload
//! between applications never seen talking before).
//! Deduplicated: one alert per (kind, source, destination, protocol, port) per hour, later
//! occurrences counted on it; at most `RATE_PER_MINUTE` new alerts a minute, the rest counted as
//! suppressed.

pub use crate::store::Alert;
use crate::store::HistRow;
use cellwall_api::{AlertKind, Severity};
use cellwall_policy::discover::{address, group, Observed};
use cellwall_policy::{Engine, Flow, Reason};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

pub const RATE_PER_MINUTE: u64 = 120;
/// A connection is judged by every revision in force within this much of its opening, both
/// ways: agents apply within milliseconds, but a node's clock may be this far off the
/// manager's. A real escape is a deviation from policy, not propagation or clock skew.
pub const PROPAGATION_GRACE_MS: i64 = 2_000;

/// For a connection opened at `first_ns`: `None` when only the current revision was in force
/// from `PROPAGATION_GRACE_MS` before it (the common case); else the engines of the earlier
/// revisions that were, and whether the current one was too.
pub type Earlier<'a> = dyn Fn(u64) -> Option<(Vec<Arc<OnceLock<Engine>>>, bool)> + 'a;
const DEDUP_MS: i64 = 3_600_000;
const EXPIRY_WINDOW_S: i64 = 3600;

fn fingerprint(a: &Alert) -> String {
    format!(
        "{}|{}|{}|{}|{}",
        a.kind.as_str(),
        a.src,
        a.dst,
        a.protocol,
        a.port
    )
}

#[derive(Default)]
pub struct Alerter {
    /// fingerprint → (time of the alert, its id)
    recent: Mutex<HashMap<String, (i64, i64)>>,
    /// (source app, destination app, port) seen in history.
    known: Mutex<Option<HashSet<(String, String, u16)>>>,
    rate: Mutex<(i64, u64)>,
    pub suppressed: AtomicU64,
    pub webhook_dropped: AtomicU64,
}

impl Alerter {
    /// Remembers the edges of past history (so only new ones alert).
    pub fn learn(&self, flows: &[cellwall_policy::discover::HistFlow]) {
        let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
        let set = k.get_or_insert_with(HashSet::new);
        for f in flows {
            set.insert((group(&f.src), group(&f.dst), f.port));
        }
    }

    /// Alerts for a batch of connections, already deduplicated and rate-limited: the caller
    /// stores, logs and delivers them.
    pub fn check(
        &self,
        engine: &Engine,
        policies: &[impl std::borrow::Borrow<cellwall_policy::Policy>],
        rows: &[HistRow],
        now_ms: i64,
        earlier: &Earlier,
    ) -> Vec<Alert> {
        let inv = engine.inventory();
        let mut out = Vec::new();
        let now_s = now_ms / 1000;
        // A batch names the same few workloads over and over: their app groups once each.
        let mut groups: HashMap<&cellwall_policy::discover::Endpoint, String> = HashMap::new();
        for r in rows {
            let f = &r.flow;
            if f.observed == Observed::Denied {
                continue;
            }
            let mut raise =
                |kind: AlertKind, severity: Severity, rule: Option<String>, message: String| {
                    out.push(Alert {
                        id: 0,
                        at_ms: now_ms,
                        kind,
                        severity,
                        src: f.src.describe(),
                        dst: f.dst.describe(),
                        protocol: f.protocol.to_string(),
                        port: f.port,
                        rule,
                        message,
                        connections: f.connections,
                        first_ns: f.first_ns,
                        last_ns: f.last_ns,
                    })
                };
            let edge = (
                groups
                    .entry(&f.src)
                    .or_insert_with(|| group(&f.src))
                    .clone(),
                groups
                    .entry(&f.dst)
                    .or_insert_with(|| group(&f.dst))
                    .clone(),
                f.port,
            );
            let new_edge = {
                let mut k = self.known.lock().unwrap_or_else(|p| p.into_inner());
                k.get_or_insert_with(HashSet::new).insert(edge.clone())
            };
            let (Some(src), Some(dst)) = (address(inv, &f.src), address(inv, &f.dst)) else {
                continue;
            };
            let flow = Flow {
                src,
                dst,
                protocol: f.protocol,
                port: f.port,
            };
            let d = engine.evaluate(&flow);
            let (_, v) = d.deciding();
            // Described only when an alert needs it (most connections raise none).
            let rule = || engine.rule(v.rule).map(|r| r.describe());
            // Denied by every revision that may have been in force when it was opened.
            let denied_then = match earlier(f.first_ns) {
                None => !d.allowed,
                Some((engines, current)) => {
                    (!current || !d.allowed)
                        && engines
                            .iter()
                            .all(|e| e.get().is_some_and(|e| !e.evaluate(&flow).allowed))
                }
            };
            if !d.allowed && !denied_then {
                // Opened while a revision before this one allowed it: no deviation, and the
                // newer revision's rules say nothing about it.
                continue;
            }
            if denied_then {
                raise(
                    AlertKind::Escaped,
                    Severity::Critical,
                    // (Allowed now: the revision in force when it opened denied it.)
                    (!d.allowed).then(rule).flatten(),
                    format!(
                        "{} connection(s) happened although the policy in force when they \
                         were opened denies them",
                        f.connections
                    ),
                );
                continue;
            }
            if f.observed == Observed::Audit || d.audit.is_some_and(|a| !a.allowed) {
                let ar = d.audit.and_then(|a| {
                    let id = if !a.egress.allowed {
                        a.egress.rule
                    } else {
                        a.ingress.rule
                    };
                    engine.rule(id).map(|r| r.describe())
                });
                raise(
                    AlertKind::AuditOnly,
                    Severity::Warning,
                    ar.or(f.rule.clone()),
                    "allowed only because the policy that denies it is in audit mode".into(),
                );
            }
            if let Some(info) = engine.rule(v.rule) {
                let p = policies
                    .iter()
                    .map(std::borrow::Borrow::borrow)
                    .find(|p: &&cellwall_policy::Policy| p.id == info.policy);
                let expires = p.and_then(|p| {
                    let rule_exp = info
                        .index
                        .and_then(|i| p.rules(info.direction).nth(i).and_then(|r| r.expires_at));
                    match (p.expires_at, rule_exp) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    }
                });
                if let Some(t) = expires.filter(|t| *t - now_s <= EXPIRY_WINDOW_S) {
                    raise(
                        AlertKind::ExpiringGrant,
                        Severity::Info,
                        rule(),
                        format!(
                            "allowed by a grant that expires in {} s",
                            (t - now_s).max(0)
                        ),
                    );
                }
            }
            let policed = matches!(d.ingress.reason, Reason::Rule | Reason::Isolated);
            if new_edge && policed {
                raise(
                    AlertKind::NewEdge,
                    Severity::Warning,
                    rule(),
                    format!(
                        "first connection ever seen from {} to {} on port {}",
                        edge.0, edge.1, edge.2
                    ),
                );
            }
        }
        self.admit(out, now_ms)
    }

    /// Deduplication and the rate limit.
    pub fn admit(&self, alerts: Vec<Alert>, now_ms: i64) -> Vec<Alert> {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let mut rate = self.rate.lock().unwrap_or_else(|p| p.into_inner());
        let minute = now_ms / 60_000;
        if rate.0 != minute {
            *rate = (minute, 0);
        }
        recent.retain(|_, (t, _)| now_ms - *t < DEDUP_MS);
        let mut out = Vec::new();
        for a in alerts {
            let fp = fingerprint(&a);
            if recent.contains_key(&fp) || out.iter().any(|o: &Alert| fingerprint(o) == fp) {
                continue;
            }
            if rate.1 >= RATE_PER_MINUTE {
                self.suppressed.fetch_add(1, Relaxed);
                continue;
            }
            rate.1 += 1;
            recent.insert(fp, (now_ms, 0));
            out.push(a);
        }
        out
    }
}

/// Delivers alerts to webhooks: JSON POST, three tries with backoff, five-second timeout.
/// Runs on its own thread; a slow or failing receiver delays only other deliveries.
pub fn deliver(urls: Vec<String>, rx: std::sync::mpsc::Receiver<Alert>) {
    let agent = ureq::AgentBuilder::new()
        .timeout(std::time::Duration::from_secs(5))
        .build();
    for a in rx {
        for u in &urls {
            let mut wait = std::time::Duration::from_millis(500);
            for attempt in 1..=3 {
                match agent
                    .post(u)
                    .set("Content-Type", "application/json")
                    .send_string(&serde_json::to_string(&a).expect("json"))
                {
                    Ok(_) => break,
                    Err(e) => {
                        tracing::warn!("webhook {u}: alert {} attempt {attempt}: {e}", a.id);
                        if attempt < 3 {
                            std::thread::sleep(wait);
                            wait *= 2;
                        }
                    }
                }
            }
        }
    }
}

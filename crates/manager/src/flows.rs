//! Flow intake: agents' records are stored raw (committed before the agent hears back), summed
//! into per-minute history by connection, and checked for compliance as history is written.

use crate::config::{now_ms, parse_duration_ms};
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::state::{Owner, Published};
use crate::store::{Alert, FlowDirection, FlowFilter, FlowRow, HistRow, Refusal};
use cellwall_api::{AlertList, AlertQuery, FlowList, FlowLoss, FlowQuery, FlowRecord};

/// How often buffered connections reach the history and the compliance checks: the longer, the
/// more repeats of a connection are summed first (at 1 s, a busy manager still spent a fifth of
/// its time on history upserts); also the longest an alert waits and the most history a crash
/// can lose (flow records are committed before they are acknowledged, whatever this is).
pub const HISTORY_FLUSH: std::time::Duration = std::time::Duration::from_secs(5);

/// Buffered connections past which a flush happens at once (bounds the buffer's memory).
const HISTORY_BUFFER_MAX: usize = 200_000;

/// How far back a record's time may lie (an agent holds records through a manager outage).
const MAX_AGE_NS: u64 = 3_600_000_000_000;
/// A record stands for at most this many connections (a 250 ms interval of a busy node is far
/// below; a larger count is a lie meant to weigh on learning and sums).
pub const MAX_COUNT: u64 = 10_000_000;
/// A rule description longer than this is cut (the agent describes rules it was sent).
const MAX_RULE: usize = 512;

/// Attributes `rows` from `p` in place, dropping those `node` may not report; returns how
/// many were dropped and why (the first reason).
fn attribute(p: &Published, node: &str, rows: &mut Vec<FlowRow>, now_ms: i64) -> (u64, String) {
    let owners = p.by_ip();
    let now_ns = (now_ms.max(0) as u64).saturating_mul(1_000_000);
    let oldest = now_ns.saturating_sub(MAX_AGE_NS);
    let (mut refused, mut why) = (0u64, String::new());
    rows.retain_mut(|r| {
        let (src, dst) = (owners.get(&r.src_ip), owners.get(&r.dst_ip));
        let (local, local_ip) = match r.direction {
            FlowDirection::Egress => (src, r.src_ip),
            FlowDirection::Ingress => (dst, r.dst_ip),
        };
        if local.is_none_or(|w| w.node.as_deref() != Some(node)) {
            refused += 1;
            if why.is_empty() {
                why = format!("flow records at {local_ip}, which is not a workload on node {node}");
            }
            return false;
        }
        // `clone_from` reuses the agent's strings' buffers (no allocation when they fit).
        attribute_end(&mut r.src, src, r.src_ip);
        attribute_end(&mut r.dst, dst, r.dst_ip);
        if r.node != node {
            node.clone_into(&mut r.node);
        }
        r.time_unix_ns = r.time_unix_ns.clamp(oldest, now_ns);
        r.count = r.count.clamp(1, MAX_COUNT);
        if let Some(rule) = &mut r.rule {
            if rule.len() > MAX_RULE {
                let cut = (0..=MAX_RULE).rev().find(|i| rule.is_char_boundary(*i));
                rule.truncate(cut.unwrap_or(0));
            }
        }
        true
    });
    (refused, why)
}

/// One end of a record: its owner's key, or the address when no workload owns it.
fn attribute_end(name: &mut String, owner: Option<&Owner>, ip: std::net::IpAddr) {
    match owner {
        Some(o) => name.clone_from(&o.key),
        None => {
            use std::fmt::Write;
            name.clear();
            let _ = write!(name, "{ip}");
        }
    }
}

fn record(f: FlowRow) -> FlowRecord {
    FlowRecord {
        id: f.id,
        time_unix_ns: f.time_unix_ns,
        node: f.node,
        src: f.src,
        dst: f.dst,
        src_ip: f.src_ip.to_string(),
        dst_ip: f.dst_ip.to_string(),
        protocol: f.protocol,
        port: f.port,
        verdict: f.verdict,
        direction: f.direction,
        rule: f.rule,
        count: f.count,
        dst_names: f.dst_names,
    }
}

/// `since` as a duration before now, in nanoseconds since the epoch.
pub fn since_ns(since: &str) -> Result<u64, ManagerError> {
    let ms = parse_duration_ms(since).ok_or_else(|| {
        ManagerError::Invalid(format!(
            "since={since}: expected a duration like 30s, 10m, 2h, 1d"
        ))
    })?;
    Ok((now_ms() as u64).saturating_sub(ms) * 1_000_000)
}

impl Manager {
    /// Stores a batch of an agent's flow records: raw (for `flows`) and as connections in the
    /// per-minute history.
    ///
    /// An agent is a witness for its own node only: each record is attributed by the manager
    /// from its own state (address → workload), and kept only when the end the record was
    /// observed at (the source for egress, the destination for ingress) is a workload on the
    /// reporting node. Times are clamped to the last hour, counts and rule texts bounded, and
    /// each node's rate limited; what is refused is counted on the node, never stored.
    pub fn record_flows(
        &self,
        node: &str,
        mut rows: Vec<FlowRow>,
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> Result<usize, ManagerError> {
        // The store keeps them as SQL integers (i64): a larger one is no agent's count.
        for (what, v) in [
            ("seq", seq),
            ("kernel_events_lost", kernel_lost),
            ("agent_records_dropped", agent_dropped),
        ] {
            if i64::try_from(v).is_err() {
                return Err(ManagerError::Invalid(format!(
                    "{what} {v} is out of range (at most {})",
                    i64::MAX
                )));
            }
        }
        if !self.flow_limit.take(&node.to_string(), rows.len() as f64) {
            self.metrics.limited("flows");
            self.store.count_refusal(
                node,
                Refusal::Flows,
                rows.len() as u64,
                "flow records over the node's rate",
            )?;
            return Err(ManagerError::RateLimited(format!(
                "node {node} sends flow records faster than allowed; retry later"
            )));
        }
        let p = self.published();
        let (refused, why) = attribute(&p, node, &mut rows, now_ms());
        if refused > 0 {
            self.store
                .count_refusal(node, Refusal::Flows, refused, &why)?;
        }
        // The records themselves are durable before the agent hears back.
        let n = self
            .store
            .insert_flows(node, &rows, seq, kernel_lost, agent_dropped)?;
        let full = {
            let mut b = self.flows.buffer();
            b.revisions.entry(p.revision).or_insert_with(|| p.clone());
            b.records.add(p.revision, &rows);
            b.records.len() >= HISTORY_BUFFER_MAX
        };
        if full {
            self.flush_history()?;
        }
        Ok(n)
    }

    /// Writes the buffered connections to the per-minute history and checks them for
    /// compliance (every [`HISTORY_FLUSH`], before history or alerts are read, at shutdown, and
    /// when the buffer is full). A crash loses at most that much history, never flow records.
    pub fn flush_history(&self) -> Result<usize, ManagerError> {
        let (mut records, revisions) = {
            let mut b = self.flows.buffer();
            (
                std::mem::take(&mut b.records),
                std::mem::take(&mut b.revisions),
            )
        };
        // Attributed with the labels of the revision in force when each record arrived.
        let hist = records.take(|r| revisions.get(&r).map(|p| p.by_key()));
        if hist.is_empty() {
            return Ok(0);
        }
        self.store.add_history(&hist)?;
        self.check_compliance(&hist)?;
        Ok(hist.len())
    }

    /// Compares connections with the policy in force; stores, logs and delivers the alerts.
    fn check_compliance(&self, hist: &[HistRow]) -> Result<(), ManagerError> {
        let now = now_ms();
        let alerts = self.state.with_engine(|e, p| {
            let earlier = |first_ns: u64| {
                let opened = (first_ns / 1_000_000) as i64;
                // Both ways: the node's clock may be behind or ahead of the manager's.
                let grace = crate::alerts::PROPAGATION_GRACE_MS;
                let from = opened - grace;
                (from < p.issued_unix_ms).then(|| self.state.engines_in_force(from, opened + grace))
            };
            self.alerter.check(e, &p.doc.policies, hist, now, &earlier)
        });
        self.store_and_deliver(alerts)
    }

    /// Raises alerts found outside the compliance checks (deduplicated and rate-limited like
    /// them), then stores, logs and delivers them.
    pub fn raise_alerts(&self, alerts: Vec<Alert>, now_ms: i64) -> Result<(), ManagerError> {
        let alerts = self.alerter.admit(alerts, now_ms);
        self.store_and_deliver(alerts)
    }

    fn store_and_deliver(&self, mut alerts: Vec<Alert>) -> Result<(), ManagerError> {
        if alerts.is_empty() {
            return Ok(());
        }
        self.store.add_alerts(&mut alerts)?;
        let tx = self.flows.webhooks();
        for a in alerts {
            tracing::warn!(
                id = a.id,
                kind = a.kind.as_str(),
                "ALERT {} [{}] {} -> {} {}/{}: {}{}",
                a.id,
                a.kind.as_str(),
                a.src,
                a.dst,
                a.protocol,
                a.port,
                a.message,
                a.rule
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            );
            if let Some(tx) = tx.as_ref() {
                if tx.try_send(a).is_err() {
                    self.alerter
                        .webhook_dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            }
        }
        Ok(())
    }

    /// History since `since_ms` ago (buffered connections included).
    pub fn history(
        &self,
        since_ms: u64,
    ) -> Result<Vec<cellwall_policy::discover::HistFlow>, ManagerError> {
        let since_ns = (now_ms() as u64).saturating_sub(since_ms) * 1_000_000;
        self.flush_history()?;
        Ok(self.store.history_since(since_ns)?)
    }

    /// Stored flow records matching `q`, with every node's loss counters.
    pub fn flow_list(&self, q: &FlowQuery) -> Result<FlowList, ManagerError> {
        let mut f = FlowFilter {
            limit: 1000,
            after_id: q.after,
            before_id: q.before,
            port: q.port,
            verdict: q.verdict,
            rule: q.rule.clone(),
            ..Default::default()
        };
        if let Some(s) = &q.since {
            f.since_ns = Some(since_ns(s)?);
        }
        if let Some(w) = &q.workload {
            cellwall_policy::WorkloadKey::parse(w).ok_or_else(|| {
                ManagerError::Invalid(format!("workload={w}: expected NAMESPACE/NAME"))
            })?;
            f.workload = Some(w.clone());
        }
        if let Some(l) = q.limit {
            if !(1..=100_000).contains(&l) {
                return Err(ManagerError::Invalid(format!(
                    "limit={l}: expected 1..100000"
                )));
            }
            f.limit = l;
        }
        let flows = self.store.flows(&f)?.into_iter().map(record).collect();
        let loss = self
            .store
            .nodes()?
            .into_iter()
            .map(|n| {
                (
                    n.name,
                    FlowLoss {
                        kernel_events_lost: n.kernel_events_lost,
                        agent_records_dropped: n.agent_records_dropped,
                        batches_missed: n.flow_batches_missed,
                    },
                )
            })
            .collect();
        Ok(FlowList { flows, loss })
    }

    /// Alerts after `q.after`; connections still buffered are checked first, so a reader sees
    /// every alert so far.
    pub fn alert_list(&self, q: &AlertQuery) -> Result<AlertList, ManagerError> {
        use std::sync::atomic::Ordering::Relaxed;
        let limit = q.limit.unwrap_or(1000);
        if !(1..=100_000).contains(&limit) {
            return Err(ManagerError::Invalid(format!(
                "limit={limit}: expected 1..100000"
            )));
        }
        self.flush_history()?;
        Ok(AlertList {
            alerts: self.store.alerts(q.after.unwrap_or(0), limit)?,
            suppressed: self.alerter.suppressed.load(Relaxed),
            webhook_dropped: self.alerter.webhook_dropped.load(Relaxed),
        })
    }
}

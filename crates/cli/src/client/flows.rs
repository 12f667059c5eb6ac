//! `cellwall flows` and `cellwall alerts`: listings that can follow new entries.

use super::{age, yaml, Format, Target};
use anyhow::Result;
use cellwall_api::{AlertQuery, FlowQuery, FlowRecord};
use std::io::Write;
use std::time::Duration;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    Audit,
    Revoked,
}

impl From<Verdict> for cellwall_api::Verdict {
    fn from(v: Verdict) -> Self {
        match v {
            Verdict::Allowed => Self::Allowed,
            Verdict::Denied => Self::Denied,
            Verdict::Audit => Self::Audit,
            Verdict::Revoked => Self::Revoked,
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// Keep printing new flows as they arrive (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// Only flows newer than this: 30s, 10m, 2h, 1d.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, value_enum)]
    pub verdict: Option<Verdict>,
    /// Flows with this workload at either end.
    #[arg(long, value_parser = crate::analyze::parse_key)]
    pub workload: Option<cellwall_policy::WorkloadKey>,
    /// Only records to this destination port.
    #[arg(long)]
    pub port: Option<u16>,
    /// At most this many (newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// One record on one line: time of day (UTC), verdict, ends (a destination DNS named as
/// `name (address)`), port, count, deciding rule.
pub fn flow_line(f: &FlowRecord) -> String {
    let ns = f.time_unix_ns;
    let dst = match f.dst_names.first() {
        Some(n) => std::borrow::Cow::Owned(format!("{n} ({})", f.dst)),
        None => std::borrow::Cow::Borrowed(f.dst.as_str()),
    };
    let secs = ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "{h:02}:{m:02}:{s:02}.{:03}  {:<8} {} -> {} {}/{}  x{}  {}",
        (ns / 1_000_000) % 1000,
        f.verdict.as_str(),
        f.src,
        dst,
        f.protocol,
        f.port,
        f.count,
        f.rule.as_deref().unwrap_or("(no rule: default allow)")
    )
}

pub fn flows(a: FlowsArgs) -> Result<()> {
    let c = a.target.client()?;
    let mut q = FlowQuery {
        since: a.since.clone(),
        verdict: a.verdict.map(Into::into),
        workload: a.workload.as_ref().map(ToString::to_string),
        port: a.port,
        limit: Some(a.limit),
        ..Default::default()
    };
    let mut out = std::io::stdout().lock();
    loop {
        let v = c.flows(&q)?;
        if let Some(last) = v.flows.last() {
            q.after = Some(last.id);
        }
        match (a.output, a.follow) {
            (Format::Json, false) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            (Format::Yaml, false) => write!(out, "{}", yaml(&v)?)?,
            (Format::Json | Format::Yaml, true) => {
                for r in &v.flows {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            }
            (Format::Table, _) => {
                for r in &v.flows {
                    writeln!(out, "{}", flow_line(r))?;
                }
                if !a.follow {
                    let lost: u64 = v
                        .loss
                        .values()
                        .map(|l| l.kernel_events_lost + l.agent_records_dropped)
                        .sum();
                    let missed: u64 = v.loss.values().map(|l| l.batches_missed).sum();
                    writeln!(
                        out,
                        "{} flow records; lost on the way: {lost} events, {missed} batches",
                        v.flows.len()
                    )?;
                }
            }
        }
        out.flush()?;
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    /// Keep printing new alerts as they are raised (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// Compliance alerts: flows that escaped policy, audit-only and expiring allowances, new edges.
pub fn alerts(a: AlertsArgs) -> Result<()> {
    let c = a.target.client()?;
    let mut q = AlertQuery::default();
    let mut out = std::io::stdout().lock();
    loop {
        let v = c.alerts(&q)?;
        if let Some(l) = v.alerts.last() {
            q.after = Some(l.id);
        }
        match (a.output, a.follow) {
            (Format::Json, false) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            (Format::Yaml, false) => write!(out, "{}", yaml(&v)?)?,
            (Format::Json | Format::Yaml, true) => {
                for i in &v.alerts {
                    writeln!(out, "{}", serde_json::to_string(i)?)?;
                }
            }
            (Format::Table, _) => {
                for i in &v.alerts {
                    writeln!(
                        out,
                        "#{} {} {:<8} {:<15} {} -> {} {}/{} x{}: {}{}",
                        i.id,
                        age(i.at_ms) + " ago",
                        i.severity.as_str(),
                        i.kind.as_str(),
                        i.src,
                        i.dst,
                        i.protocol,
                        i.port,
                        i.connections,
                        i.message,
                        i.rule
                            .as_deref()
                            .map(|r| format!(" [{r}]"))
                            .unwrap_or_default()
                    )?;
                }
                if !a.follow {
                    writeln!(
                        out,
                        "{} alerts ({} suppressed by the rate limit, {} not delivered to webhooks)",
                        v.alerts.len(),
                        v.suppressed,
                        v.webhook_dropped
                    )?;
                }
            }
        }
        out.flush()?;
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_lines_match_the_manager_facing_command() {
        let r: FlowRecord = serde_json::from_value(serde_json::json!({
            "id": 1, "time_unix_ns": 3_723_004_000_000u64, "node": "lab",
            "src": "t/a", "dst": "t/b", "src_ip": "10.0.0.1", "dst_ip": "10.0.0.2",
            "protocol": "TCP", "port": 80, "verdict": "denied", "direction": "ingress",
            "rule": null, "count": 3
        }))
        .unwrap();
        assert_eq!(
            flow_line(&r),
            "01:02:03.004  denied   t/a -> t/b TCP/80  x3  (no rule: default allow)"
        );
    }
}

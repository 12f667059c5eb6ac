//! From visibility to policy, on the published revision: explain a verdict, the dependency map
//! from history, least-privilege proposals, and simulation of a candidate against history.

use crate::config::{now_ms, parse_duration_ms};
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::FlowFilter;
use cellwall_api::{
    ClassCount, ExplainQuery, ExplainResponse, MapFormat, MapQuery, MapResponse, ProposalKind,
    ProposeQuery, ProposeResponse, RuleList, RulesQuery, SimulateResult,
};
use cellwall_policy::discover::{
    dependency_map, propose, render_yaml, rule_stats, simulate, to_dot, Grouping, ProposalFormat,
    ProposeOptions, Replay,
};
use cellwall_policy::{Flow, Policy, Protocol, WorkloadKey};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A `since` duration (or the default) in milliseconds.
pub fn since_ms(since: Option<&str>, default: &str) -> Result<u64, ManagerError> {
    let v = since.unwrap_or(default);
    parse_duration_ms(v).ok_or_else(|| {
        ManagerError::Invalid(format!(
            "since={v}: expected a duration like 30s, 10m, 2h, 1d"
        ))
    })
}

fn workload_key(param: &str, v: &str) -> Result<WorkloadKey, ManagerError> {
    WorkloadKey::parse(v)
        .ok_or_else(|| ManagerError::Invalid(format!("{param}={v}: expected NAMESPACE/NAME")))
}

/// `PROTO/PORT`, e.g. `TCP/80`.
pub fn parse_probe(probe: &str) -> Result<(Protocol, u16), ManagerError> {
    probe
        .split_once('/')
        .and_then(|(p, n)| {
            Some((
                Protocol::parse(&p.to_ascii_uppercase())?,
                n.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| {
            ManagerError::Invalid(format!("probe={probe}: expected PROTO/PORT like TCP/80"))
        })
}

impl Manager {
    /// Why the policy in force allows or denies `q.from` → `q.to` on `q.probe`. `q.to` is a
    /// workload, an address, or a DNS name (FQDN policy): a name is explained at the address
    /// the latest recorded flow to it went to, with the names recorded then (`NAME=IP` gives
    /// the address).
    pub fn explain(&self, q: &ExplainQuery) -> Result<ExplainResponse, ManagerError> {
        let from = workload_key("from", &q.from)?;
        let (protocol, port) = parse_probe(&q.probe)?;
        let target = self.explain_target(&q.to)?;
        let explanation = self.state.with_engine(|engine, _| {
            let ip = |k: &WorkloadKey| -> Result<std::net::IpAddr, ManagerError> {
                let w = engine
                    .inventory()
                    .workloads
                    .get(k)
                    .ok_or_else(|| ManagerError::NotFound(format!("no workload {k}")))?;
                w.ips.first().copied().ok_or_else(|| {
                    ManagerError::Invalid(format!("workload {k} has no address yet"))
                })
            };
            let (dst, names) = match &target {
                Target::Workload(k) => (ip(k)?, None),
                Target::External(a, names) => (*a, Some(names.as_slice())),
            };
            let flow = Flow {
                src: ip(&from)?,
                dst,
                protocol,
                port,
            };
            Ok::<_, ManagerError>(engine.explain_named(&flow, names))
        })?;
        Ok(ExplainResponse {
            text: cellwall_policy::render::render_explanation(&explanation),
            explanation,
        })
    }

    /// What `explain`'s destination names.
    fn explain_target(&self, to: &str) -> Result<Target, ManagerError> {
        if to.contains('/') {
            return Ok(Target::Workload(workload_key("to", to)?));
        }
        if let Ok(ip) = to.parse::<std::net::IpAddr>() {
            return Ok(Target::External(ip, Vec::new()));
        }
        let (name, ip) = match to.split_once('=') {
            Some((n, a)) => {
                let ip = a.parse().map_err(|_| {
                    ManagerError::Invalid(format!("to={to}: {a:?} is not an IP address"))
                })?;
                (n, Some(ip))
            }
            None => (to, None),
        };
        let d = name
            .parse::<cellwall_policy::net::DomainPattern>()
            .ok()
            .filter(|d| !d.wildcard)
            .ok_or_else(|| {
                ManagerError::Invalid(format!(
                    "to={to}: expected NAMESPACE/NAME, an IP address, or a DNS name (NAME or NAME=IP)"
                ))
            })?;
        // The latest recorded flow to the name: its address and all its names.
        let recent = self.store.flows(&FlowFilter {
            limit: 20_000,
            ..Default::default()
        })?;
        let seen = recent
            .iter()
            .find(|r| r.dst_names.contains(&d.name) && ip.is_none_or(|a| a == r.dst_ip));
        match (seen, ip) {
            (Some(r), _) => Ok(Target::External(r.dst_ip, r.dst_names.clone())),
            (None, Some(a)) => Ok(Target::External(a, vec![d.name])),
            (None, None) => Err(ManagerError::NotFound(format!(
                "no recorded flow went to {}: give its address as {}=IP",
                d.name, d.name
            ))),
        }
    }

    /// The dependency map of the history in `q`'s window.
    pub fn dependency_map(&self, q: &MapQuery) -> Result<MapResponse, ManagerError> {
        let since = since_ms(q.since.as_deref(), "1h")?;
        let by = q.group_by.clone().unwrap_or_default();
        let dot = q.format == Some(MapFormat::Dot);
        let flows = self.history(since)?;
        let grouping = self
            .state
            .with_engine(|engine, _| Grouping::build(&flows, engine.inventory(), &by));
        let map = dependency_map(&flows, &grouping);
        Ok(MapResponse {
            dot: dot.then(|| to_dot(&map)),
            map,
        })
    }

    /// Every rule in force with the history of `q`'s window it decides.
    pub fn rule_list(&self, q: &RulesQuery) -> Result<RuleList, ManagerError> {
        let window = q.since.clone().unwrap_or_else(|| "7d".into());
        let since = since_ms(Some(&window), "7d")?;
        let flows = self.history(since)?;
        // Replayed with stand-ins: workloads gone since count with the labels they had.
        let p = self.published();
        let replay = Replay::new(&p.doc.inventory(), &flows);
        let engine = replay.engine(p.doc.policies.iter().cloned(), now_ms() / 1000);
        let mut items = rule_stats(&replay, &engine, &p.doc.policies, &flows);
        if q.unused == Some(true) {
            items.retain(|r| r.unused);
        }
        Ok(RuleList {
            items,
            since: window,
            history_rows: flows.len(),
        })
    }

    /// Least-privilege policy from the history in `q`'s window.
    pub fn propose(&self, q: &ProposeQuery) -> Result<ProposeResponse, ManagerError> {
        let since = since_ms(q.since.as_deref(), "24h")?;
        let format = match q.format.unwrap_or(ProposalKind::Cellwall) {
            ProposalKind::Cellwall => ProposalFormat::Cellwall,
            ProposalKind::NetworkPolicy => ProposalFormat::NetworkPolicy,
            ProposalKind::ClusterNetworkPolicy => ProposalFormat::ClusterNetworkPolicy,
        };
        let mut opts = ProposeOptions {
            namespace: q.namespace.clone(),
            group_by: q.group_by.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Some(r) = q.review_below {
            opts.review_below = r;
        }
        let flows = self.history(since)?;
        let proposal = self
            .state
            .with_engine(|engine, _| propose(&flows, engine, &opts));
        Ok(ProposeResponse {
            yaml: render_yaml(&proposal, format),
            proposal,
            history_rows: flows.len(),
        })
    }

    /// Replays history against the policies in force and the candidate (added to them,
    /// replacing policies of the same name). `progress(done, total)` sees the replay advance.
    pub fn simulate(
        &self,
        candidate: Vec<Policy>,
        since_ms: u64,
        progress: impl FnMut(usize, usize),
    ) -> Result<SimulateResult, ManagerError> {
        let t0 = std::time::Instant::now();
        let flows = self.history(since_ms)?;
        let read = t0.elapsed();
        let p = self.published();
        let replay = Replay::new(&p.doc.inventory(), &flows);
        let now = now_ms() / 1000;
        let cur_policies = p.doc.policies.clone();
        let mut cand_policies: BTreeMap<_, _> = cur_policies
            .iter()
            .map(|p| (p.id.clone(), p.clone()))
            .collect();
        let ids: Vec<String> = candidate.iter().map(|p| p.id.to_string()).collect();
        for c in candidate {
            cand_policies.insert(c.id.clone(), Arc::new(c));
        }
        let current = replay.engine(cur_policies, now);
        let cand = replay.engine(cand_policies.into_values(), now);
        let t1 = std::time::Instant::now();
        let (summary, details) = simulate(&replay, &current, &cand, &flows, progress);
        Ok(SimulateResult {
            candidate: ids,
            flows: summary.flows,
            breakage: summary.breakage(),
            summary: summary
                .classes
                .iter()
                .map(|(c, (flows, connections))| {
                    (
                        *c,
                        ClassCount {
                            flows: *flows,
                            connections: *connections,
                        },
                    )
                })
                .collect(),
            details,
            read_ms: read.as_millis() as u64,
            replay_ms: t1.elapsed().as_millis() as u64,
        })
    }
}

/// The destination of an explanation.
enum Target {
    Workload(WorkloadKey),
    /// An address outside the inventory, with the DNS names it was reached by.
    External(std::net::IpAddr, Vec<String>),
}

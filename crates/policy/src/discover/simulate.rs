//! Simulation: history replayed against the policy in force and a candidate, each flow
//! classified (permitted, would be rejected, escaped, rejected, would be opened). Historical
//! endpoints get addresses through `Replay`, with stand-ins for labels that changed.

use super::{Endpoint, HistFlow, Observed};
use crate::engine::{Engine, Flow};
use crate::fxhash::FxHashMap;
use crate::labels::Labels;
use crate::model::{Inventory, Namespace, Protocol, Workload, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// How a historical flow fares under a candidate policy set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "kebab-case")]
pub enum SimClass {
    /// Happened, and the candidate allows it.
    Permitted,
    /// Happened and is allowed today; the candidate denies it: breakage.
    WouldBeRejected,
    /// Happened although the policy in force denies it (audit mode, unprotected host).
    Escaped,
    /// Denied today and by the candidate.
    Rejected,
    /// Denied today; the candidate would allow it.
    WouldBeOpened,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimVerdict {
    pub allowed: bool,
    pub rule: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimRow {
    pub class: SimClass,
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub connections: u64,
    pub observed: Observed,
    pub current: SimVerdict,
    pub candidate: SimVerdict,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SimSummary {
    /// Per class: (aggregated flows, connections).
    pub classes: BTreeMap<SimClass, (u64, u64)>,
    pub flows: u64,
}

impl SimSummary {
    pub fn breakage(&self) -> u64 {
        self.classes
            .get(&SimClass::WouldBeRejected)
            .map(|c| c.0)
            .unwrap_or(0)
    }
}

/// An inventory and addresses that can evaluate history: current workloads as they are, and
/// historical ones whose labels changed or that are gone as stand-ins with the labels they had,
/// on addresses from 100.64.0.0/10 (no real workload uses them here).
pub struct Replay {
    pub inventory: Inventory,
    /// Source and destination address of each flow, by index.
    addrs: Vec<[IpAddr; 2]>,
    /// The DNS names recorded for external addresses (FQDN policy), all names an address was
    /// reached by in the window: the engines that replay history decide on them.
    pub names: BTreeMap<IpAddr, Vec<String>>,
}

/// Addresses handed to historical workloads while a `Replay` is built.
struct StandIns<'h> {
    current: &'h Inventory,
    inventory: Inventory,
    /// (namespace, name) → the label sets seen for it, with their addresses.
    seen: FxHashMap<(&'h str, &'h str), Vec<(&'h Labels, IpAddr)>>,
    next: u32,
    names: BTreeMap<IpAddr, Vec<String>>,
}

impl<'h> StandIns<'h> {
    fn address(&mut self, ep: &'h Endpoint) -> IpAddr {
        match ep {
            Endpoint::External { ip, names } => {
                if !names.is_empty() {
                    let known = self.names.entry(*ip).or_default();
                    for n in names {
                        if !known.contains(n) {
                            known.push(n.clone());
                        }
                    }
                }
                *ip
            }
            Endpoint::Workload {
                namespace,
                name,
                labels,
            } => self.workload_address(namespace, name, labels),
        }
    }

    /// The workload's own address while it still has these labels, else a stand-in's (one per
    /// label set seen).
    fn workload_address(
        &mut self,
        namespace: &'h str,
        name: &'h str,
        labels: &'h Labels,
    ) -> IpAddr {
        let known = self.seen.entry((namespace, name)).or_default();
        if let Some((_, ip)) = known.iter().find(|(l, _)| *l == labels) {
            return *ip;
        }
        let key = WorkloadKey::new(namespace, name);
        let same = self
            .current
            .workloads
            .get(&key)
            .filter(|w| &w.labels == labels && !w.ips.is_empty());
        let ip = match same {
            Some(w) => w.ips[0],
            None => self.stand_in(&key, labels),
        };
        self.seen
            .get_mut(&(namespace, name))
            .expect("entered above")
            .push((labels, ip));
        ip
    }

    /// A workload with the labels `key` had, named `NAME~N`, on the next replay address.
    fn stand_in(&mut self, key: &WorkloadKey, labels: &Labels) -> IpAddr {
        self.next += 1;
        let ip = IpAddr::V4(Ipv4Addr::from((100u32 << 24 | 64 << 16) + self.next));
        if !self.inventory.namespaces.contains_key(&key.namespace) {
            self.inventory.namespaces.insert(
                key.namespace.clone(),
                Namespace::new(&key.namespace, Labels::new()),
            );
        }
        let stand_in = Workload {
            namespace: key.namespace.clone(),
            name: format!("{}~{}", key.name, self.next),
            labels: labels.clone().into(),
            ips: vec![ip],
            ports: self
                .current
                .workloads
                .get(key)
                .map(|w| w.ports.clone())
                .unwrap_or_default(),
            node: None,
            host_network: false,
            owner: None,
        };
        self.inventory
            .workloads
            .insert(stand_in.key(), stand_in.into());
        ip
    }
}

impl Replay {
    pub fn new(current: &Inventory, flows: &[HistFlow]) -> Self {
        let mut s = StandIns {
            current,
            inventory: current.clone(),
            seen: FxHashMap::default(),
            next: 0,
            names: BTreeMap::new(),
        };
        let addrs = flows
            .iter()
            .map(|f| [s.address(&f.src), s.address(&f.dst)])
            .collect();
        Self {
            inventory: s.inventory,
            addrs,
            names: s.names,
        }
    }

    /// An engine that replays history under `policies`: the replay inventory, and the names
    /// recorded for external addresses.
    /// Source and destination address of flow `i` (stand-ins for endpoints gone since).
    pub fn addresses(&self, i: usize) -> [IpAddr; 2] {
        self.addrs[i]
    }

    pub fn engine<P: Into<std::sync::Arc<crate::Policy>>>(
        &self,
        policies: impl IntoIterator<Item = P>,
        now: i64,
    ) -> Engine {
        let mut e = Engine::build(self.inventory.clone(), policies, now);
        for (ip, names) in &self.names {
            e.set_names(*ip, names.clone());
        }
        e.take_changes();
        e
    }
}

/// Detail rows kept per class besides breakage (which is always complete); the summary counts
/// everything.
const DETAIL_CAP: usize = 10_000;

/// Rows keyed by (class, source, destination, protocol, port).
type RowKey = (SimClass, String, String, Protocol, u16);

/// How a flow fares: whether it happened, and whether the policy in force and the candidate
/// allow it.
fn classify(observed: Observed, current: bool, candidate: bool) -> SimClass {
    match (observed.happened(), current, candidate) {
        (true, false, _) => SimClass::Escaped,
        (true, true, true) => SimClass::Permitted,
        (true, true, false) => SimClass::WouldBeRejected,
        (false, _, false) => SimClass::Rejected,
        (false, _, true) => SimClass::WouldBeOpened,
    }
}

/// The verdict and deciding rule of one engine for a flow.
fn verdict(e: &Engine, flow: &Flow) -> (bool, u32) {
    let d = e.evaluate(flow);
    let (_, v) = d.deciding();
    (d.allowed, v.rule)
}

/// Replays history against the policy in force and the candidate (both engines built on the
/// replay inventory). `progress` is called every `step` flows with (done, total).
pub fn simulate(
    replay: &Replay,
    current: &Engine,
    candidate: &Engine,
    flows: &[HistFlow],
    mut progress: impl FnMut(usize, usize),
) -> (SimSummary, Vec<SimRow>) {
    let mut summary = SimSummary::default();
    let mut rows: BTreeMap<RowKey, SimRow> = BTreeMap::new();
    let mut kept: BTreeMap<SimClass, usize> = BTreeMap::new();
    let step = (flows.len() / 20).max(50_000);
    for (i, f) in flows.iter().enumerate() {
        if i % step == 0 {
            progress(i, flows.len());
        }
        let [src, dst] = replay.addrs[i];
        let flow = Flow {
            src,
            dst,
            protocol: f.protocol,
            port: f.port,
        };
        let (cur, cur_rule) = verdict(current, &flow);
        let (cand, cand_rule) = verdict(candidate, &flow);
        let class = classify(f.observed, cur, cand);
        let c = summary.classes.entry(class).or_default();
        c.0 += 1;
        c.1 += f.connections;
        summary.flows += 1;
        // Details per edge (history splits an edge by rule and by labels over time).
        let key = (
            class,
            f.src.describe(),
            f.dst.describe(),
            f.protocol,
            f.port,
        );
        let kept = kept.entry(class).or_insert(0usize);
        if let Some(r) = rows.get_mut(&key) {
            r.connections += f.connections;
        } else if class == SimClass::WouldBeRejected || *kept < DETAIL_CAP {
            *kept += 1;
            let row = SimRow {
                class,
                src: key.1.clone(),
                dst: key.2.clone(),
                protocol: f.protocol,
                port: f.port,
                connections: f.connections,
                observed: f.observed,
                current: SimVerdict {
                    allowed: cur,
                    rule: current.rule(cur_rule).map(|r| r.describe()),
                },
                candidate: SimVerdict {
                    allowed: cand,
                    rule: candidate.rule(cand_rule).map(|r| r.describe()),
                },
            };
            rows.insert(key, row);
        }
    }
    progress(flows.len(), flows.len());
    (summary, rows.into_values().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::test_support::*;

    #[test]
    fn simulation_classifies_and_replays_old_labels() {
        let allow_web = "
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {namespace: a, name: db}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress: [{from: [{podSelector: {matchLabels: {app: web}}}], ports: [{port: 5432}]}]
";
        let (inv, cur) = inv_and_policies(&format!("{INV}---{allow_web}"));
        let (_, cand) = inv_and_policies(&allow_web.replace("5432", "5433"));
        // web-2 was labelled app=legacy when it connected; db's policy in force would not
        // have allowed that: it escaped (happened without isolation at the time).
        let mut old = ep(&inv, "a/web-2");
        if let Endpoint::Workload { labels, .. } = &mut old {
            labels.insert("app".into(), "legacy".into());
        }
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                10,
            ),
            flow(old, ep(&inv, "a/db"), 5432, Observed::Allowed, 2),
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Denied,
                1,
            ),
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5433,
                Observed::Denied,
                1,
            ),
        ];
        let replay = Replay::new(&inv, &flows);
        let current = replay.engine(cur, 0);
        let candidate = replay.engine(cand, 0);
        let (summary, rows) = simulate(&replay, &current, &candidate, &flows, |_, _| {});
        let classes: Vec<_> = rows
            .iter()
            .map(|r| (r.class, r.src.as_str(), r.port))
            .collect();
        assert_eq!(
            classes,
            [
                (SimClass::WouldBeRejected, "a/web-1", 5432),
                (SimClass::Escaped, "a/web-2", 5432),
                (SimClass::Rejected, "b/debug", 5432),
                (SimClass::WouldBeOpened, "a/web-1", 5433),
            ]
        );
        assert_eq!(summary.breakage(), 1);
        assert_eq!(summary.flows, 4);
    }

    #[test]
    fn recorded_names_decide_fqdn_rules() {
        let (inv, _) = inv_and_policies(INV);
        let named = |ip: &str, n: &str| Endpoint::External {
            ip: ip.parse().unwrap(),
            names: vec![n.to_string()],
        };
        let flows = vec![
            // The same name on two addresses (it rotated), another name, and no name.
            flow(
                ep(&inv, "a/web-1"),
                named("198.51.100.1", "api.example.com"),
                443,
                Observed::Allowed,
                5,
            ),
            flow(
                ep(&inv, "a/web-1"),
                named("198.51.100.2", "api.example.com"),
                443,
                Observed::Allowed,
                5,
            ),
            flow(
                ep(&inv, "a/web-1"),
                named("198.51.100.3", "api.other.org"),
                443,
                Observed::Allowed,
                1,
            ),
            flow(
                ep(&inv, "a/web-1"),
                Endpoint::External {
                    ip: "198.51.100.4".parse().unwrap(),
                    names: vec![],
                },
                443,
                Observed::Allowed,
                1,
            ),
        ];
        let (_, cand) = inv_and_policies(&format!(
            "{INV}---
apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {{name: web-out, namespace: a}}
spec:
  podSelector: {{matchLabels: {{app: web}}}}
  egress:
  - to: [{{domain: \"*.example.com\"}}]
    ports: [{{port: 443}}]
"
        ));
        let replay = Replay::new(&inv, &flows);
        let current = replay.engine(Vec::<crate::Policy>::new(), 0);
        let candidate = replay.engine(cand, 0);
        let (_, rows) = simulate(&replay, &current, &candidate, &flows, |_, _| {});
        let got: Vec<_> = rows.iter().map(|r| (r.class, r.dst.as_str())).collect();
        assert_eq!(
            got,
            [
                (SimClass::Permitted, "api.example.com (198.51.100.1)"),
                (SimClass::Permitted, "api.example.com (198.51.100.2)"),
                (SimClass::WouldBeRejected, "198.51.100.4"),
                (SimClass::WouldBeRejected, "api.other.org (198.51.100.3)"),
            ]
        );
    }
}

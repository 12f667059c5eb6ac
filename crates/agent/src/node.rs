//! One node's agent state, without networking: the last desired state, an engine kept in step
//! with it by diffs (so compiles stay incremental), the enforcer, and which host interfaces
//! carry programs. The gRPC daemon (`cellwall-agent`) drives this; tests drive it directly.

use crate::{AgentError, Enforcer};
use cellwall_datapath::{abi, netns, ApplyReport, KernelDatapath};
use cellwall_policy::{Engine, WorkloadKey};
use cellwall_proto::{StateDelta, StateDoc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::path::PathBuf;

/// A workload on this node and the host-side interface in front of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// `namespace/name`.
    pub key: String,
    pub ips: Vec<IpAddr>,
    /// Host-side interface name (where the programs attach); empty when there is none
    /// (hostNetwork pods).
    pub interface: String,
    pub ifindex: u32,
    /// Host mode: `interface` is the host's own NIC (programs attach the other way round).
    #[serde(default)]
    pub nic: bool,
}

/// The discovery file an agent reads (the lab writes it; a CNI plugin would on a real node).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointsFile {
    /// Nodes whose workloads this agent enforces (more than one only in the lab).
    pub nodes: Vec<String>,
    pub endpoints: Vec<LocalEndpoint>,
}

/// Where policy goes.
#[derive(Debug, Clone)]
pub enum Backend {
    /// eBPF programs and maps pinned in `pins`; interfaces live in `netns` (None: this one).
    Kernel {
        pins: PathBuf,
        netns: Option<String>,
        visibility: bool,
    },
    /// Compile and track versions, enforce nothing (`--datapath none` baselines).
    None,
}

/// What one apply did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub report: Option<ApplyReport>,
    pub attached: usize,
    pub detached: usize,
    /// Map occupancy after the apply.
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    pub endpoints: usize,
}

pub struct NodeAgent {
    backend: Backend,
    engine: Engine,
    enforcer: Option<Enforcer<KernelDatapath>>,
    endpoints: Vec<LocalEndpoint>,
    doc: StateDoc,
    first: bool,
    /// Address → workload of the applied state (flow attribution between applies).
    owners: Attribution,
    /// `engine.next_expiry()` as of the last sync: the enforcement loop asks on every tick and
    /// the scan walks every rule.
    expiry: Option<i64>,
}

/// Moves `engine` by one delta, object by object (the engine logs what changed, and the compiler
/// recompiles only that).
fn apply_to_engine(engine: &mut Engine, d: &StateDelta) {
    for v in &d.namespaces {
        engine.set_namespace(v.clone());
    }
    for v in &d.nodes {
        engine.set_node(v.clone());
    }
    for v in &d.workloads {
        engine.set_workload(cellwall_policy::Workload::clone(v));
    }
    for v in &d.policies {
        engine.set_policy(v.clone());
    }
    for k in &d.removed_policies {
        engine.remove_policy(k);
    }
    for k in &d.removed_workloads {
        engine.remove_workload(k);
    }
    for k in &d.removed_nodes {
        engine.remove_node(k);
    }
    for k in &d.removed_namespaces {
        engine.remove_namespace(k);
    }
}

impl NodeAgent {
    pub fn new(backend: Backend, discovery: EndpointsFile, node: &str) -> Result<Self, AgentError> {
        let mut nodes: BTreeSet<String> = discovery.nodes.iter().cloned().collect();
        nodes.insert(node.to_string());
        let enforcer = match &backend {
            Backend::Kernel {
                pins, visibility, ..
            } => {
                let mut dp = KernelDatapath::open(pins)?;
                dp.set_visibility(*visibility)?;
                let mut e = Enforcer::new(nodes, dp);
                for ep in &discovery.endpoints {
                    if let (Some(k), true) = (WorkloadKey::parse(&ep.key), ep.ifindex != 0) {
                        e.set_interface(k, ep.ifindex);
                    }
                }
                Some(e)
            }
            Backend::None => None,
        };
        Ok(Self {
            backend,
            engine: Engine::new(),
            enforcer,
            endpoints: discovery.endpoints,
            doc: StateDoc::default(),
            first: true,
            owners: Attribution::default(),
            expiry: None,
        })
    }

    pub fn endpoints(&self) -> &[LocalEndpoint] {
        &self.endpoints
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Enforces `doc`. The first apply of a process also replaces the programs on every
    /// interface that needs them (an agent restart or upgrade: attach is an atomic replace, and
    /// the maps pinned by the previous run keep enforcing until the switch).
    pub fn apply(&mut self, doc: &StateDoc, now: i64) -> Result<Applied, AgentError> {
        let d = StateDelta::between(&self.doc, doc);
        apply_to_engine(&mut self.engine, &d);
        self.doc = doc.clone();
        self.finish(now)
    }

    /// Enforces the current state changed by `d` (what the manager sends after the first
    /// snapshot): only the changed objects are touched.
    pub fn apply_delta(&mut self, d: StateDelta, now: i64) -> Result<Applied, AgentError> {
        apply_to_engine(&mut self.engine, &d);
        self.doc.apply(d);
        self.finish(now)
    }

    /// The desired state being enforced (what a restart re-applies).
    pub fn doc(&self) -> &StateDoc {
        &self.doc
    }

    fn finish(&mut self, now: i64) -> Result<Applied, AgentError> {
        self.engine.set_now(now);
        let mut owners = std::collections::HashMap::new();
        for w in &self.doc.workloads {
            for ip in &w.ips {
                owners.entry(*ip).or_insert_with(|| w.key().to_string());
            }
        }
        self.owners = Attribution { owners };
        self.sync()
    }

    /// The next time (Unix seconds) a policy or rule in force expires.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiry
    }

    /// Moves the clock: policies and rules whose `expiresAt` passed stop being enforced, without
    /// waiting for the manager (grants end on time also during an outage).
    pub fn advance(&mut self, now: i64) -> Result<Applied, AgentError> {
        self.engine.set_now(now);
        self.sync()
    }

    fn sync(&mut self) -> Result<Applied, AgentError> {
        self.expiry = self.engine.next_expiry();
        let reattach = std::mem::replace(&mut self.first, false);
        let Backend::Kernel {
            pins,
            netns: ns,
            visibility,
        } = self.backend.clone()
        else {
            return Ok(Applied::default());
        };
        let enforcer = self
            .enforcer
            .as_mut()
            .expect("kernel backend has an enforcer");
        let Some(desired) = enforcer.prepare(&mut self.engine) else {
            return Ok(Applied::default());
        };
        let policed = |ep: &LocalEndpoint| {
            ep.ips.iter().any(|ip| {
                desired
                    .endpoints
                    .get(&abi::addr16(*ip))
                    .is_some_and(|e| e.2 != 0)
            })
        };
        let mut attach: Vec<(String, bool)> = Vec::new();
        let mut detach = Vec::new();
        for ep in &self.endpoints {
            if ep.interface.is_empty() {
                continue;
            }
            let needed = visibility || policed(ep);
            let attached = enforcer.datapath().is_attached(&ep.interface);
            if needed && (!attached || reattach) {
                attach.push((ep.interface.clone(), ep.nic));
            } else if !needed && attached {
                detach.push(ep.interface.clone());
            }
        }
        let mut out = Applied {
            attached: attach.len(),
            detached: detach.len(),
            ipcache_entries: desired.ipcache.len(),
            policy_entries: desired.policy.len(),
            endpoints: desired.endpoints.len(),
            ..Default::default()
        };
        if !attach.is_empty() {
            let do_attach = move || -> Result<(), AgentError> {
                let mut dp = KernelDatapath::open(&pins)?;
                for (i, nic) in &attach {
                    if *nic {
                        dp.attach_nic(i)?;
                    } else {
                        dp.attach(i)?;
                    }
                }
                Ok(())
            };
            match ns {
                Some(ns) => netns::run_in(&ns, do_attach)??,
                None => do_attach()?,
            }
        }
        out.report = Some(enforcer.commit(desired)?);
        for i in &detach {
            enforcer.datapath().detach(i)?;
        }
        Ok(out)
    }

    /// Workload names for flow records, as of the last apply.
    pub fn attribution(&self) -> &Attribution {
        &self.owners
    }

    pub fn describe_rule(&self, id: u32) -> Option<String> {
        self.engine.rule(id).map(|r| r.describe())
    }
}

/// Address → workload, as of the last apply.
#[derive(Debug, Clone, Default)]
pub struct Attribution {
    pub owners: HashMap<IpAddr, String>,
}

impl Attribution {
    pub fn name(&self, ip: IpAddr) -> String {
        self.owners
            .get(&ip)
            .cloned()
            .unwrap_or_else(|| ip.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_policy::synth::{random_scenario, Rng};

    #[test]
    fn diffs_keep_the_engine_equal_to_a_fresh_build() {
        let mut rng = Rng::new(7);
        let mut engine = Engine::new();
        let mut prev = StateDoc::default();
        for _ in 0..30 {
            let (inv, pols) = random_scenario(&mut rng);
            let doc = StateDoc::new(&inv, &pols);
            let d = StateDelta::between(&prev, &doc);
            apply_to_engine(&mut engine, &d);
            // The delta also carries the document itself from one state to the next.
            prev.apply(d);
            assert_eq!(prev, doc);
            let fresh = Engine::build(inv.clone(), pols.clone(), 0);
            assert_eq!(engine.inventory(), fresh.inventory());
            let ips: Vec<_> = inv.workloads.values().flat_map(|w| w.ips.clone()).collect();
            for _ in 0..50 {
                let f = cellwall_policy::Flow {
                    src: *rng.pick(&ips),
                    dst: *rng.pick(&ips),
                    protocol: cellwall_policy::Protocol::Tcp,
                    port: *rng.pick(&[80u16, 81, 8080]),
                };
                assert_eq!(engine.evaluate(&f), fresh.evaluate(&f));
            }
            prev = doc;
        }
    }
}

//! The enforcement path without networking: policy engine changes → per-node incremental
//! compile → kernel-shaped entries → datapath apply. [`NodeAgent`](crate::NodeAgent) drives it.

use crate::AgentError;
use cellwall_datapath::{ApplyReport, Datapath, Desired};
use cellwall_policy::compile::NodePolicy;
use cellwall_policy::{Compiler, Engine, WorkloadKey};
use std::collections::{BTreeMap, HashMap};

/// Enforces policy for the workloads of a set of nodes (one on a real host; the lab hosts the
/// pods of every node the manifests name on one machine).
pub struct Enforcer<D: Datapath> {
    compilers: BTreeMap<String, Compiler>,
    datapath: D,
    ifindex: HashMap<WorkloadKey, u32>,
    /// Host-mode workloads (their NIC carries the programs): DNS answers to them are not held,
    /// since a released answer would be sent out of the NIC instead of up to the host.
    nic: std::collections::HashSet<WorkloadKey>,
    last: Option<Desired>,
}

impl<D: Datapath> Enforcer<D> {
    pub fn new(nodes: impl IntoIterator<Item = String>, datapath: D) -> Self {
        Self {
            compilers: nodes
                .into_iter()
                .map(|n| (n.clone(), Compiler::new(&n)))
                .collect(),
            datapath,
            ifindex: HashMap::new(),
            nic: Default::default(),
            last: None,
        }
    }

    /// The host-side interface of a local workload (anti-spoofing check in the datapath).
    pub fn set_interface(&mut self, wk: WorkloadKey, ifindex: u32) {
        self.ifindex.insert(wk, ifindex);
    }

    /// Marks a local workload as host mode (see `nic`).
    pub fn set_nic(&mut self, wk: WorkloadKey) {
        self.nic.insert(wk);
    }

    pub fn datapath(&mut self) -> &mut D {
        &mut self.datapath
    }

    pub fn datapath_ref(&self) -> &D {
        &self.datapath
    }

    /// Compiles what changed in `engine` since the last call and applies it; skips the datapath
    /// when nothing it holds changed.
    pub fn sync(&mut self, engine: &mut Engine) -> Result<Option<ApplyReport>, AgentError> {
        match self.prepare(engine) {
            Some(d) => self.commit(d).map(Some),
            None => Ok(None),
        }
    }

    /// First half of `sync`: what the datapath must hold now, or `None` if it already does.
    /// Callers that must act before the switch (attach programs to newly policed workloads)
    /// do so between `prepare` and `commit`.
    pub fn prepare(&mut self, engine: &mut Engine) -> Option<Desired> {
        let changes = engine.take_changes();
        let first = self.last.is_none();
        let mut merged: Option<NodePolicy> = None;
        for c in self.compilers.values_mut() {
            // The first sync compiles everything, whatever the engine's change log holds.
            let np = if first {
                c.full(engine)
            } else {
                c.update(engine, &changes)
            };
            match merged.as_mut() {
                None => merged = Some(np),
                Some(m) => {
                    m.ipcache.extend(np.ipcache);
                    m.endpoints.extend(np.endpoints);
                    m.rules.extend(np.rules);
                }
            }
        }
        let mut np = merged?;
        for wk in &self.nic {
            if let Some(ep) = np.endpoints.get_mut(wk) {
                ep.learns_names = false;
            }
        }
        let desired =
            Desired::from_node_policy(&np, |wk| self.ifindex.get(wk).copied().unwrap_or(0));
        (self.last.as_ref() != Some(&desired)).then_some(desired)
    }

    /// Second half of `sync`: writes `desired` and switches to it.
    pub fn commit(&mut self, desired: Desired) -> Result<ApplyReport, AgentError> {
        let report = self.datapath.apply(&desired)?;
        self.last = Some(desired);
        Ok(report)
    }

    /// What the datapath holds after the last commit.
    pub fn current(&self) -> Option<&Desired> {
        self.last.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cellwall_datapath::FakeDatapath;
    use cellwall_policy::synth::{random_scenario, Rng};
    use cellwall_policy::{Flow, Protocol};

    #[test]
    fn enforcer_applies_what_evaluate_decides() {
        for seed in 0..100 {
            let mut rng = Rng::new(seed);
            let (inv, pols) = random_scenario(&mut rng);
            let mut engine = Engine::build(inv, pols, 0);
            let mut e = Enforcer::new(["n1".to_string(), "n2".to_string()], FakeDatapath::new());
            e.sync(&mut engine).unwrap();
            let ips: Vec<_> = engine
                .inventory()
                .workloads
                .values()
                .filter(|w| !w.host_network)
                .flat_map(|w| w.ips.clone())
                .collect();
            for _ in 0..50 {
                let (src, dst) = (*rng.pick(&ips), *rng.pick(&ips));
                let proto = *rng.pick(&Protocol::ALL);
                let port = *rng.pick(&[53u16, 80, 81, 8080]);
                let want = engine
                    .evaluate(&Flow {
                        src,
                        dst,
                        protocol: proto,
                        port,
                    })
                    .allowed;
                assert_eq!(
                    e.datapath().decide(src, dst, proto.number(), port),
                    want,
                    "seed {seed} {src}->{dst} {proto}/{port}"
                );
            }
            assert!(
                e.sync(&mut engine).unwrap().is_none(),
                "no change, no apply"
            );
            // A relabel reaches the datapath incrementally.
            let mut w = engine
                .inventory()
                .workloads
                .values()
                .next()
                .unwrap()
                .clone();
            w.labels.insert("relabelled".into(), "yes".into());
            engine.set_workload(w);
            e.sync(&mut engine).unwrap();
            for _ in 0..20 {
                let (src, dst) = (*rng.pick(&ips), *rng.pick(&ips));
                let want = engine
                    .evaluate(&Flow {
                        src,
                        dst,
                        protocol: Protocol::Tcp,
                        port: 80,
                    })
                    .allowed;
                assert_eq!(
                    e.datapath().decide(src, dst, 6, 80),
                    want,
                    "after relabel, seed {seed}"
                );
            }
        }
    }
}

//! The enforcement path without networking: policy engine changes → per-node incremental
//! compile → kernel-shaped entries → datapath apply. [`NodeAgent`](crate::NodeAgent) drives it.

use crate::AgentError;
use cellwall_datapath::{ApplyReport, Datapath, Desired};
use cellwall_policy::compile::NodePolicy;
use cellwall_policy::{Compiler, Engine, WorkloadKey};
use std::collections::{BTreeMap, HashMap};

/// The interface index of a local endpoint whose interface is not known (a pod not found yet,
/// a hostNetwork pod): no interface, so no veth may send with its addresses (the datapath's
/// anti-spoofing; 0 would mean any).
pub const NO_INTERFACE: u32 = u32::MAX;

/// Enforces policy for the workloads of a set of nodes (one on a real host; the lab hosts the
/// pods of every node the manifests name on one machine).
pub struct Enforcer<D: Datapath> {
    compile: CompileHalf,
    datapath: D,
    last: Option<Desired>,
    /// Endpoint addresses isolated ahead of their compile (`emergency`), with the revision that
    /// isolated them: every commit keeps them isolated until that revision's own compile is in
    /// force.
    isolated: BTreeMap<[u8; 16], Isolation>,
    /// Isolations the last `prepare` ended, until its commit.
    lifted: Isolations,
}

/// Moves the model on the compile thread before it compiles; returns the newest revision it
/// staged, if any.
pub type Stage<'a> = Box<dyn FnOnce(&mut Engine) -> Option<u64> + Send + 'a>;

/// What the enforcement thread does while a compile runs (`prepare`).
pub type During<'a, D> = &'a mut dyn for<'u> FnMut(&mut Urgent<'u, D>);

/// Endpoint addresses and how each is isolated.
pub type Isolations = Vec<([u8; 16], Isolation)>;

/// An emergency isolation of one endpoint address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    pub ingress: bool,
    pub egress: bool,
    pub version: u64,
}

/// What compiling needs, apart from the datapath: it runs on its own thread while the
/// enforcement thread stays free for emergencies.
struct CompileHalf {
    compilers: BTreeMap<String, Compiler>,
    ifindex: HashMap<WorkloadKey, u32>,
    /// Host-mode workloads (their NIC carries the programs): DNS answers to them are not held,
    /// since a released answer would be sent out of the NIC instead of up to the host.
    nic: std::collections::HashSet<WorkloadKey>,
}

/// The enforcement thread's side while a compile runs: the datapath, what it holds, and the
/// isolations in force.
pub struct Urgent<'a, D: Datapath> {
    datapath: &'a mut D,
    last: &'a mut Option<Desired>,
    isolated: &'a mut BTreeMap<[u8; 16], Isolation>,
}

impl<D: Datapath> Urgent<'_, D> {
    pub fn datapath(&mut self) -> &mut D {
        self.datapath
    }

    /// Isolates endpoint addresses now, on top of what the datapath holds. Returns how many of
    /// them are endpoints of the state in force.
    pub fn isolate(&mut self, addrs: &[([u8; 16], Isolation)]) -> Result<usize, AgentError> {
        let mut d = self.last.clone().unwrap_or_default();
        let mut n = 0;
        for (addr, iso) in addrs {
            self.isolated.insert(*addr, *iso);
            n += d.isolate(*addr, iso.ingress, iso.egress) as usize;
        }
        if n > 0 {
            self.datapath.apply(&d)?;
            *self.last = Some(d);
        }
        Ok(n)
    }
}

impl CompileHalf {
    /// Compiles what changed in `engine` since the last call (everything the first time).
    fn compile(&mut self, engine: &mut Engine, first: bool) -> Option<Desired> {
        let changes = engine.take_changes();
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
        Some(Desired::from_node_policy(&np, |wk| {
            self.ifindex.get(wk).copied().unwrap_or(NO_INTERFACE)
        }))
    }
}

impl<D: Datapath> Enforcer<D> {
    pub fn new(nodes: impl IntoIterator<Item = String>, datapath: D) -> Self {
        Self {
            compile: CompileHalf {
                compilers: nodes
                    .into_iter()
                    .map(|n| (n.clone(), Compiler::new(&n)))
                    .collect(),
                ifindex: HashMap::new(),
                nic: Default::default(),
            },
            datapath,
            last: None,
            isolated: BTreeMap::new(),
            lifted: Vec::new(),
        }
    }

    /// The host-side interface of a local workload (anti-spoofing check in the datapath).
    pub fn set_interface(&mut self, wk: WorkloadKey, ifindex: u32) {
        self.compile.ifindex.insert(wk, ifindex);
    }

    /// Forgets a local workload's interface (its pod went, or its veth changed).
    pub fn remove_interface(&mut self, wk: &WorkloadKey) {
        self.compile.ifindex.remove(wk);
    }

    /// Marks a local workload as host mode (see `nic`).
    pub fn set_nic(&mut self, wk: WorkloadKey) {
        self.compile.nic.insert(wk);
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
        match self.prepare(engine, None, None) {
            Some(d) => self.commit(d).map(Some),
            None => Ok(None),
        }
    }

    /// First half of `sync`: what the datapath must hold now, or `None` if it already does.
    /// Callers that must act before the switch (attach programs to newly policed workloads)
    /// do so between `prepare` and `commit`.
    ///
    /// With `during`, `stage` (moving the model by the revisions being applied: decoding and
    /// indexing a large one takes a while too) and the compile run on their own thread, and
    /// `during` is called on this one until they are done (each call should wait a little for
    /// work): an emergency isolation never waits behind them. Isolations of revisions up to the
    /// one `stage` returns end here (`unlift` puts them back if the commit does not happen).
    pub fn prepare(
        &mut self,
        engine: &mut Engine,
        stage: Option<Stage<'_>>,
        during: Option<During<'_, D>>,
    ) -> Option<Desired> {
        let first = self.last.is_none();
        let job = move |compile: &mut CompileHalf, engine: &mut Engine| {
            let through = stage.and_then(|f| f(engine));
            (through, compile.compile(engine, first))
        };
        let (through, compiled) = match during {
            None => job(&mut self.compile, engine),
            Some(during) => {
                let compile = &mut self.compile;
                let mut urgent = Urgent {
                    datapath: &mut self.datapath,
                    last: &mut self.last,
                    isolated: &mut self.isolated,
                };
                std::thread::scope(|s| {
                    let job = std::thread::Builder::new()
                        .name("compile".into())
                        .spawn_scoped(s, move || job(compile, engine))
                        .expect("spawning the compile thread");
                    while !job.is_finished() {
                        during(&mut urgent);
                    }
                    job.join().expect("the compile thread panicked")
                })
            }
        };
        if let Some(v) = through {
            self.lifted = self
                .isolated
                .iter()
                .filter(|(_, i)| i.version <= v)
                .map(|(a, i)| (*a, *i))
                .collect();
            for (a, _) in &self.lifted {
                self.isolated.remove(a);
            }
        }
        let mut desired = compiled?;
        for (addr, iso) in &self.isolated {
            desired.isolate(*addr, iso.ingress, iso.egress);
        }
        (self.last.as_ref() != Some(&desired)).then_some(desired)
    }

    /// Puts back the isolations the last `prepare` ended, when its commit did not happen.
    pub fn unlift(&mut self) {
        self.isolated.extend(std::mem::take(&mut self.lifted));
    }

    /// Second half of `sync`: writes `desired` and switches to it.
    pub fn commit(&mut self, desired: Desired) -> Result<ApplyReport, AgentError> {
        let report = self.datapath.apply(&desired)?;
        self.last = Some(desired);
        self.lifted.clear();
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
            let mut w = cellwall_policy::Workload::clone(
                engine.inventory().workloads.values().next().unwrap(),
            );
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

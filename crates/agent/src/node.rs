//! One node's agent state, without networking: the desired state being enforced, an engine kept
//! in step with it by diffs (so compiles stay incremental), the enforcer, and which interfaces
//! carry programs. The enforcement loop drives this; tests drive it directly.

use crate::emergency::LocalView;
use crate::enforcer::{During, Stage, Urgent};
use crate::{AgentError, Enforcer};
use cellwall_datapath::{abi, ApplyReport, Datapath, Desired};
use cellwall_policy::{Engine, WorkloadKey};
use cellwall_proto::{StateDelta, StateDoc};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;

pub use crate::discovery::{EndpointsFile, LocalEndpoint};

/// What one apply did.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    /// `None` when the datapath already held what the state compiles to.
    pub report: Option<ApplyReport>,
    pub attached: usize,
    pub detached: usize,
    /// Map occupancy after the apply.
    pub ipcache_entries: usize,
    pub policy_entries: usize,
    pub endpoints: usize,
}

pub struct NodeAgent<D: Datapath> {
    engine: Engine,
    enforcer: Enforcer<D>,
    endpoints: Vec<LocalEndpoint>,
    /// Every local workload carries programs (flow events for all), not only policed ones.
    visibility: bool,
    doc: StateDoc,
    /// Interfaces whose programs this process attached (or replaced). Each interface that
    /// needs programs gets them once per process, whenever it is first seen: a restart or
    /// upgrade replaces what the previous run attached (an atomic replace; its pinned maps keep
    /// enforcing until the switch), also for pods found only later (`--find-interfaces`).
    replaced: std::collections::HashSet<String>,
    /// Address → workload of the applied state (flow attribution between applies).
    owners: Attribution,
    /// `engine.next_expiry()` as of the last sync: the enforcement loop asks on every tick and
    /// the scan walks every rule.
    expiry: Option<i64>,
    /// Kernel discovery (`--find-interfaces`): the nodes whose pods are local, and when the
    /// kernel's tables were last read.
    find: Option<Finding>,
    /// The nodes whose workloads are local (this one; more in the lab).
    nodes: BTreeSet<String>,
}

struct Finding {
    last: Option<std::time::Instant>,
    /// The last scan's conflicts (warned about when they change, not at every scan).
    conflicts: Vec<String>,
}

/// No staging: the model already moved.
type NoStage = fn(&mut Engine, &mut StateDoc) -> Option<u64>;

/// Moves the model (engine and document) to `doc`.
pub fn stage(engine: &mut Engine, current: &mut StateDoc, doc: &StateDoc) {
    let d = StateDelta::between(current, doc);
    apply_to_engine(engine, &d);
    *current = doc.clone();
}

/// Moves the model by `d`.
pub fn stage_delta(engine: &mut Engine, current: &mut StateDoc, d: StateDelta) {
    apply_to_engine(engine, &d);
    current.apply(d);
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
        engine.set_workload(v.clone());
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

impl<D: Datapath> NodeAgent<D> {
    /// Enforces for `node` (and the other nodes `discovery` names, in the lab) on `datapath`,
    /// with flow events from every local workload when `visibility` is on.
    pub fn new(
        mut datapath: D,
        discovery: EndpointsFile,
        node: &str,
        visibility: bool,
    ) -> Result<Self, AgentError> {
        let mut nodes: BTreeSet<String> = discovery.nodes.iter().cloned().collect();
        nodes.insert(node.to_string());
        datapath.set_visibility(visibility)?;
        let mut enforcer = Enforcer::new(nodes.iter().cloned(), datapath);
        for ep in &discovery.endpoints {
            if let (Some(k), true) = (WorkloadKey::parse(&ep.key), ep.ifindex != 0) {
                enforcer.set_interface(k, ep.ifindex);
            }
            if let (Some(k), true) = (WorkloadKey::parse(&ep.key), ep.nic) {
                enforcer.set_nic(k);
            }
        }
        Ok(Self {
            engine: Engine::new(),
            enforcer,
            endpoints: discovery.endpoints,
            visibility,
            doc: StateDoc::default(),
            replaced: Default::default(),
            owners: Attribution::default(),
            expiry: None,
            find: None,
            nodes,
        })
    }

    /// Local pods' interfaces are looked up in the kernel ([`rediscover`](Self::rediscover))
    /// besides those `discovery` named (`--find-interfaces`).
    pub fn finding_interfaces(mut self) -> Self {
        self.find = Some(Finding {
            last: None,
            conflicts: Vec::new(),
        });
        self
    }

    pub fn endpoints(&self) -> &[LocalEndpoint] {
        &self.endpoints
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn datapath(&mut self) -> &mut D {
        self.enforcer.datapath()
    }

    /// Enforces `doc`. The first apply of a process also replaces the programs on every
    /// interface that needs them (`replaced`).
    pub fn apply(&mut self, doc: &StateDoc, now: i64) -> Result<Applied, AgentError> {
        stage(&mut self.engine, &mut self.doc, doc);
        self.engine.set_now(now);
        self.refresh_owners();
        let r = self.sync(None::<NoStage>, None)?;
        Ok(self.and_rediscover(r))
    }

    /// Enforces the current state changed by `d` (what the manager sends after the first
    /// snapshot): only the changed objects are touched.
    pub fn apply_delta(&mut self, d: StateDelta, now: i64) -> Result<Applied, AgentError> {
        stage_delta(&mut self.engine, &mut self.doc, d);
        self.engine.set_now(now);
        self.refresh_owners();
        let r = self.sync(None::<NoStage>, None)?;
        Ok(self.and_rediscover(r))
    }

    /// Moves the model by the revisions `stage` applies to it (with [`stage`] and
    /// [`stage_delta`]; returns the newest), then compiles and enforces. Staging and the
    /// compile run on their own thread while `during` is called on this one (see
    /// [`Enforcer::prepare`]).
    pub fn apply_staged<F>(
        &mut self,
        now: i64,
        stage: F,
        during: &mut dyn FnMut(&mut Urgent<'_, D>),
    ) -> Result<Applied, AgentError>
    where
        F: FnOnce(&mut Engine, &mut StateDoc) -> Option<u64> + Send,
    {
        self.engine.set_now(now);
        let r = self.sync(Some(stage), Some(during));
        self.refresh_owners();
        Ok(self.and_rediscover(r?))
    }

    /// Kernel discovery after a new state: its new pods may already have their interfaces, and
    /// the ack should mean they are policed. A failed scan is logged (the state is applied; the
    /// next periodic scan tries again).
    fn and_rediscover(&mut self, r: Applied) -> Applied {
        match self.rediscover() {
            Ok(Some(more)) => Applied {
                report: more.report.or(r.report),
                attached: r.attached + more.attached,
                detached: r.detached + more.detached,
                ..more
            },
            Ok(None) => r,
            Err(e) => {
                tracing::warn!("finding local pods' interfaces: {}", crate::chain(&e));
                r
            }
        }
    }

    /// Kernel discovery, at most every `every`: for the periodic scan of the enforcement loop
    /// (pods start and go between states).
    pub fn rediscover_every(
        &mut self,
        every: std::time::Duration,
    ) -> Result<Option<Applied>, AgentError> {
        match &self.find {
            Some(f) if f.last.is_none_or(|t| t.elapsed() >= every) => self.rediscover(),
            _ => Ok(None),
        }
    }

    /// Kernel discovery (`--find-interfaces`): reads the kernel's routes and bridge tables for
    /// the interfaces of the pods the state binds to this node; attaches where a pod appeared
    /// (before its tables switch in, as for any newly policed workload) and detaches where one
    /// went or its interface changed. `None` when nothing changed (or without discovery).
    pub fn rediscover(&mut self) -> Result<Option<Applied>, AgentError> {
        let Some(f) = self.find.as_mut() else {
            return Ok(None);
        };
        f.last = Some(std::time::Instant::now());
        let ips: Vec<IpAddr> = crate::discovery::local_pods(&self.doc, &self.nodes)
            .flat_map(|w| w.ips.iter().copied())
            .collect();
        let found = self.enforcer.datapath_ref().host_interfaces(&ips)?;
        let b = crate::discovery::found_endpoints(&self.doc, &self.nodes, &found, &self.endpoints);
        if b.conflicts != f.conflicts {
            for c in &b.conflicts {
                tracing::warn!("local pod interfaces: {c}");
            }
            f.conflicts = b.conflicts;
        }
        let eps = b.endpoints;
        if eps == self.endpoints {
            return Ok(None);
        }
        let gone: Vec<LocalEndpoint> = self
            .endpoints
            .iter()
            .filter(|old| {
                !old.nic
                    && !eps.iter().any(|e| {
                        e.key == old.key && e.interface == old.interface && e.ifindex == old.ifindex
                    })
            })
            .cloned()
            .collect();
        let mut detached = 0;
        for old in &gone {
            if let Some(k) = WorkloadKey::parse(&old.key) {
                self.enforcer.remove_interface(&k);
            }
            // Gone with its pod, or about to be attached again (a new veth of the same name).
            if self.enforcer.datapath_ref().is_attached(&old.interface) {
                self.detach_all(std::slice::from_ref(&old.interface))?;
                detached += 1;
            }
            self.replaced.remove(&old.interface);
        }
        for e in &eps {
            if let Some(k) = WorkloadKey::parse(&e.key) {
                self.enforcer.set_interface(k, e.ifindex);
            }
        }
        self.endpoints = eps;
        // Switch first, attach after: the tables in force then already bind each new pod to
        // its interface (it had none, which anti-spoofing reads as "no veth may send as it"),
        // so its first packets through the programs are not taken for spoofing. Until then
        // the pod was not policed on its veth, as before it was found.
        let mut r = Applied::default();
        if let Some(desired) = self.enforcer.prepare(&mut self.engine, None, None) {
            r.ipcache_entries = desired.ipcache.len();
            r.policy_entries = desired.policy.len();
            r.endpoints = desired.endpoints.len();
            r.report = Some(self.enforcer.commit(desired)?);
        }
        let (attach, detach) = match self.enforcer.current() {
            Some(current) => self.attachments(current),
            None => Default::default(),
        };
        self.attach_all(&attach)?;
        self.detach_all(&detach)?;
        r.attached = attach.len();
        r.detached = detach.len();
        r.detached += detached;
        Ok(Some(r))
    }

    /// What the emergency check needs of the state in force (`emergency`).
    pub fn local_view(&self) -> LocalView {
        LocalView::new(&self.doc, &self.endpoints)
    }

    /// The desired state being enforced (what a restart re-applies).
    pub fn doc(&self) -> &StateDoc {
        &self.doc
    }

    /// The next time (Unix seconds) a policy or rule in force expires.
    pub fn next_expiry(&self) -> Option<i64> {
        self.expiry
    }

    /// Moves the clock: policies and rules whose `expiresAt` passed stop being enforced, without
    /// waiting for the manager (grants end on time also during an outage).
    pub fn advance(&mut self, now: i64) -> Result<Applied, AgentError> {
        self.engine.set_now(now);
        self.sync(None::<NoStage>, None)
    }

    /// Compiles what changed; attaches programs where they are now needed *before* the switch
    /// (a newly policed workload is never left unprotected by the new tables) and detaches
    /// them where they are no longer needed after it.
    fn sync<F>(
        &mut self,
        stage: Option<F>,
        during: Option<During<'_, D>>,
    ) -> Result<Applied, AgentError>
    where
        F: FnOnce(&mut Engine, &mut StateDoc) -> Option<u64> + Send,
    {
        let doc = &mut self.doc;
        let stage = stage.map(|f| Box::new(move |e: &mut Engine| f(e, doc)) as Stage<'_>);
        let prepared = self.enforcer.prepare(&mut self.engine, stage, during);
        self.expiry = self.engine.next_expiry();
        let Some(desired) = prepared else {
            return Ok(Applied::default());
        };
        let r = self.switch(desired);
        if r.is_err() {
            self.enforcer.unlift();
        }
        r
    }

    /// Address → workload of the document (after it moved).
    fn refresh_owners(&mut self) {
        let mut owners = HashMap::new();
        for w in &self.doc.workloads {
            for ip in &w.ips {
                owners.entry(*ip).or_insert_with(|| w.key().to_string());
            }
        }
        self.owners = Attribution { owners };
    }

    /// Attaches programs where the new tables need them, switches, detaches where they are no
    /// longer needed.
    fn switch(&mut self, desired: Desired) -> Result<Applied, AgentError> {
        let (attach, detach) = self.attachments(&desired);
        let mut out = Applied {
            attached: attach.len(),
            detached: detach.len(),
            ipcache_entries: desired.ipcache.len(),
            policy_entries: desired.policy.len(),
            endpoints: desired.endpoints.len(),
            ..Default::default()
        };
        self.attach_all(&attach)?;
        out.report = Some(self.enforcer.commit(desired)?);
        self.detach_all(&detach)?;
        Ok(out)
    }

    /// Attaches the programs to each interface, the host-mode way round where `nic`.
    fn attach_all(&mut self, interfaces: &[(String, bool)]) -> Result<(), AgentError> {
        for (i, nic) in interfaces {
            let dp = self.enforcer.datapath();
            if *nic {
                dp.attach_nic(i)?;
            } else {
                dp.attach(i)?;
            }
            self.replaced.insert(i.clone());
        }
        Ok(())
    }

    fn detach_all(&mut self, interfaces: &[String]) -> Result<(), AgentError> {
        for i in interfaces {
            self.enforcer.datapath().detach(i)?;
            self.replaced.remove(i);
        }
        Ok(())
    }

    /// Which local interfaces need programs under `desired` and lack them (or carry a previous
    /// process's: `replaced`), and which carry programs they no longer need.
    fn attachments(&self, desired: &Desired) -> (Vec<(String, bool)>, Vec<String>) {
        let policed = |ep: &LocalEndpoint| {
            ep.ips.iter().any(|ip| {
                desired
                    .endpoints
                    .get(&abi::addr16(*ip))
                    .is_some_and(|e| e.2 != 0)
            })
        };
        let mut attach = Vec::new();
        let mut detach = Vec::new();
        for ep in &self.endpoints {
            if ep.interface.is_empty() {
                continue;
            }
            let needed = self.visibility || policed(ep);
            let attached = self.enforcer.datapath_ref().is_attached(&ep.interface);
            if needed && (!attached || !self.replaced.contains(&ep.interface)) {
                attach.push((ep.interface.clone(), ep.nic));
            } else if !needed && attached {
                detach.push(ep.interface.clone());
            }
        }
        (attach, detach)
    }

    /// Workload names for flow records, as of the last apply.
    /// Tells the engine what DNS said these addresses are (empty: forget), then compiles and
    /// applies what changed (usually one FQDN peer identity's ipcache entry).
    pub fn set_names(
        &mut self,
        updates: Vec<(IpAddr, Vec<String>)>,
    ) -> Result<Applied, AgentError> {
        for (ip, names) in updates {
            self.engine.set_names(ip, names);
        }
        self.sync(None::<NoStage>, None)
    }

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
    /// Whether a workload of the model owns `ip`.
    pub fn owns(&self, ip: IpAddr) -> bool {
        self.owners.contains_key(&ip)
    }

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
    use crate::discovery::tests::doc_with;
    use cellwall_datapath::fake::Attached;
    use cellwall_datapath::FakeDatapath;
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

    fn endpoints() -> EndpointsFile {
        let ep = |key: &str, ip: &str, i: &str, n| LocalEndpoint {
            key: key.into(),
            ips: vec![ip.parse().unwrap()],
            interface: i.into(),
            ifindex: n,
            nic: false,
            node: None,
        };
        EndpointsFile {
            nodes: vec![],
            endpoints: vec![
                ep("x/a", "10.0.0.1", "cwa", 11),
                ep("x/b", "10.0.0.2", "cwb", 12),
            ],
        }
    }

    const DENY_TO_B: &str = "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n\
        metadata: {namespace: x, name: b-closed}\n\
        spec: {podSelector: {matchLabels: {app: b}}, policyTypes: [Ingress]}\n";

    #[test]
    fn programs_go_where_policy_is_and_the_first_apply_replaces_them() {
        let fake = FakeDatapath::new();
        let mut n = NodeAgent::new(fake.clone(), endpoints(), "n1", false).unwrap();
        assert_eq!(fake.visibility(), Some(false));
        let a = n.apply(&doc_with(""), 0).unwrap();
        assert!(a.report.is_some());
        assert!(
            fake.attached().is_empty(),
            "nothing policed, visibility off"
        );

        let a = n.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert_eq!((a.attached, a.detached), (1, 0));
        assert_eq!(fake.attached().get("cwb"), Some(&Attached::Veth));
        let ip = |s: &str| s.parse().unwrap();
        assert!(!fake.decide(ip("10.0.0.1"), ip("10.0.0.2"), 6, 80));
        assert!(fake.decide(ip("10.0.0.2"), ip("10.0.0.1"), 6, 80));

        let a = n.apply(&doc_with(""), 0).unwrap();
        assert_eq!((a.attached, a.detached), (0, 1));
        assert!(fake.attached().is_empty());
        assert!(fake.decide(ip("10.0.0.1"), ip("10.0.0.2"), 6, 80));

        // Visibility on: every local workload carries programs, policed or not.
        let fake = FakeDatapath::new();
        let mut n = NodeAgent::new(fake.clone(), endpoints(), "n1", true).unwrap();
        n.apply(&doc_with(""), 0).unwrap();
        assert_eq!(fake.attach_log(), ["cwa", "cwb"]);
        n.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert_eq!(fake.attach_log().len(), 2, "already attached: not again");

        // A new process (restart or upgrade) over attachments that outlived the old one: its
        // first apply replaces the programs on every interface that needs them, once.
        let mut n = NodeAgent::new(fake.clone(), endpoints(), "n1", true).unwrap();
        n.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert_eq!(fake.attach_log(), ["cwa", "cwb", "cwa", "cwb"]);
        n.apply(&doc_with(""), 0).unwrap();
        assert_eq!(fake.attach_log().len(), 4);
    }

    /// `--find-interfaces`: a pod's programs follow its interface as the kernel shows it.
    #[test]
    fn found_interfaces_attach_when_a_pod_appears_and_detach_when_it_goes() {
        use cellwall_datapath::HostInterface;
        let fake = FakeDatapath::new();
        let mut n = NodeAgent::new(fake.clone(), EndpointsFile::default(), "n1", false)
            .unwrap()
            .finding_interfaces();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let h = |name: &str, ifindex| {
            Some(HostInterface {
                name: name.into(),
                ifindex,
                bridge: None,
            })
        };
        let ifindex_of_b =
            |fake: &FakeDatapath| fake.active().endpoints[&abi::addr16(ip("10.0.0.2"))].1;
        // b is policed but its veth is not there yet: nothing local, nothing attached.
        n.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert!(n.endpoints().is_empty() && fake.attached().is_empty());
        assert!(n.rediscover().unwrap().is_none(), "nothing changed");
        // Its veth appears: attached, and anti-spoofing checks that interface.
        fake.set_host_interface(ip("10.0.0.2"), h("cwb", 12));
        let r = n.rediscover().unwrap().expect("changed");
        assert_eq!((r.attached, r.detached), (1, 0));
        assert_eq!(fake.attached().get("cwb"), Some(&Attached::Veth));
        assert_eq!(ifindex_of_b(&fake), 12);
        assert!(!fake.decide(ip("10.0.0.1"), ip("10.0.0.2"), 6, 80));
        // An unpoliced pod's veth (visibility off): local, not attached.
        fake.set_host_interface(ip("10.0.0.1"), h("cwa", 11));
        n.rediscover().unwrap().expect("changed");
        assert_eq!(n.endpoints().len(), 2);
        assert!(!fake.attached().contains_key("cwa"));
        // b restarts: its veth goes, a new one of the same name and a new index comes.
        // Detached, attached again.
        fake.remove_interface(12);
        fake.set_host_interface(ip("10.0.0.2"), h("cwb", 13));
        let r = n.rediscover().unwrap().expect("changed");
        assert_eq!((r.attached, r.detached), (1, 1));
        assert_eq!(ifindex_of_b(&fake), 13);
        // b goes: its programs go with it.
        fake.set_host_interface(ip("10.0.0.2"), None);
        fake.remove_interface(13);
        let r = n.rediscover().unwrap().expect("changed");
        assert_eq!(r.detached, 1);
        assert!(fake.attached().is_empty());
        // A pod the state binds to another node is not taken, whatever interface it has here;
        // nor is a hostNetwork pod.
        fake.set_host_interface(ip("10.0.0.2"), h("cwb", 14));
        let mut doc = doc_with(DENY_TO_B);
        std::sync::Arc::make_mut(&mut doc.workloads[1]).node = Some("n2".into());
        std::sync::Arc::make_mut(&mut doc.workloads[0]).host_network = true;
        n.apply(&doc, 0).unwrap();
        assert!(n.endpoints().is_empty(), "{:?}", n.endpoints());
        assert!(fake.attached().is_empty());
    }

    /// An upgrade of a DaemonSet agent: the new process finds the pods after its first apply,
    /// and still replaces the programs the previous process attached to them.
    #[test]
    fn a_new_process_replaces_the_programs_on_pods_it_finds_later() {
        use cellwall_datapath::HostInterface;
        let fake = FakeDatapath::new();
        fake.set_host_interface(
            "10.0.0.2".parse().unwrap(),
            Some(HostInterface {
                name: "cwb".into(),
                ifindex: 12,
                bridge: None,
            }),
        );
        let start = || {
            NodeAgent::new(fake.clone(), EndpointsFile::default(), "n1", false)
                .unwrap()
                .finding_interfaces()
        };
        start().apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert_eq!(fake.attach_log(), ["cwb"]);
        let mut upgraded = start();
        upgraded.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert_eq!(
            fake.attach_log(),
            ["cwb", "cwb"],
            "replaced once by the new process"
        );
        upgraded.apply(&doc_with(DENY_TO_B), 0).unwrap();
        assert!(upgraded.rediscover().unwrap().is_none());
        assert_eq!(fake.attach_log().len(), 2, "and not again");
    }
}

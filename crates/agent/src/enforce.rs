//! The enforcement loop: the one thread that owns the datapath. It applies desired states in
//! order (a delta only on top of the version it starts from), persists each before acking it
//! (acked means enforced and durable), retires expired grants on the agent's own clock, drains
//! the datapath's flow events into the flow queue between applies, and learns the DNS answers
//! the datapath holds for FQDN policy (fqdn.rs) before releasing them.

use crate::emergency;
use crate::enforcer::Urgent;
use crate::flows::{aggregate, FlowQueue};
use crate::fqdn::{parse_answers, Learner};
use crate::metrics::Metrics;
use crate::node::{self, Applied, NodeAgent};
use crate::state::StateDir;
use crate::{chain, AgentError};
use cellwall_datapath::Datapath;
use cellwall_policy::Engine;
use cellwall_proto::{DesiredState, Payload, StateDoc};
use std::collections::VecDeque;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::{error, info, warn};

/// The answer to one desired state, for the manager.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    pub version: u64,
    /// How long the apply took.
    pub micros: u64,
    /// When the datapath held the version (Unix microseconds; 0 on error).
    pub applied_unix_us: u64,
    /// Empty when the version is enforced and persisted.
    pub error: String,
    /// The state could not be applied on top of what is held: the session must reconnect so
    /// the manager sends a snapshot.
    pub resync: bool,
}

impl Ack {
    pub fn ok(&self) -> bool {
        self.error.is_empty()
    }
}

/// The agent's clock: time since the Unix epoch. Tests move it by hand.
pub type Clock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The system clock.
pub fn system_clock() -> Clock {
    Arc::new(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
    })
}

/// Most events taken from the datapath per collection.
const DRAIN_MAX: usize = 100_000;
/// Most held DNS answers taken per pass (the rest wait for the next one, a moment later).
const DNS_MAX: usize = 1024;

/// What the enforcement thread is given to do.
#[derive(Debug)]
pub enum Work {
    /// A desired state from the manager.
    State(DesiredState),
    /// The datapath holds DNS answers (sent by the thread that waits on them).
    DnsHeld,
}

pub struct Enforcement<D: Datapath> {
    node: NodeAgent<D>,
    state: StateDir,
    /// The version the engine and the datapath hold (a delta applies only on top of it).
    held: u64,
    metrics: Arc<Metrics>,
    flows: Arc<FlowQueue>,
    clock: Clock,
    learner: Learner,
    /// When learned names are next looked at for expiry (Unix seconds).
    names_due: Option<i64>,
}

impl<D: Datapath> Enforcement<D> {
    pub fn new(
        node: NodeAgent<D>,
        state: StateDir,
        metrics: Arc<Metrics>,
        flows: Arc<FlowQueue>,
    ) -> Self {
        Self {
            node,
            state,
            held: 0,
            metrics,
            flows,
            clock: system_clock(),
            learner: Learner::new(60),
            names_due: None,
        }
    }

    /// The shortest time learned DNS addresses stay programmed.
    pub fn with_dns_min_ttl(mut self, min: Duration) -> Self {
        self.learner = Learner::new(min.as_secs().min(u32::MAX as u64) as u32);
        self
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// What the DNS-waiting thread sleeps on (None: the datapath holds no answers).
    pub fn dns_waker(&mut self) -> Result<Option<cellwall_datapath::DnsWaker>, AgentError> {
        Ok(self.node.datapath().dns_waker()?)
    }

    /// The version the datapath holds (0: none yet).
    pub fn held(&self) -> u64 {
        self.held
    }

    pub fn node(&self) -> &NodeAgent<D> {
        &self.node
    }

    fn now_secs(&self) -> i64 {
        (self.clock)().as_secs() as i64
    }

    fn record(&self, version: u64, micros: u64, r: &Applied) {
        self.metrics.applied(version, micros);
        if r.report.is_some() {
            self.metrics
                .map_sizes(r.ipcache_entries, r.policy_entries, r.endpoints);
        }
    }

    /// Fail-static restart: enforces the state saved by the last run before anything is heard
    /// from the manager. Returns the version re-applied. An unreadable file is ignored (the
    /// manager sends a snapshot); a saved state that cannot be applied is an error.
    pub fn restore(&mut self) -> Result<Option<u64>, AgentError> {
        let (v, doc) = match self.state.load_desired() {
            Ok(Some(saved)) => saved,
            Ok(None) => return Ok(None),
            Err(e) => {
                warn!("ignoring unreadable {}", chain(&e));
                return Ok(None);
            }
        };
        let t = Instant::now();
        let r = self
            .node
            .apply(&doc, self.now_secs())
            .map_err(|e| AgentError::Restore(Box::new(e)))?;
        self.record(v, t.elapsed().as_micros() as u64, &r);
        self.held = v;
        info!(version = v, "re-applied saved state version {v}");
        Ok(Some(v))
    }

    /// Applies one desired state from the manager and says how it went. The answer is positive
    /// only once the datapath switched to the version *and* it is persisted.
    pub fn handle(&mut self, s: &DesiredState) -> Ack {
        let (tx, rx) = mpsc::channel();
        drop(tx);
        let mut stash = VecDeque::new();
        self.handle_batch(std::slice::from_ref(s), &rx, &mut stash)
            .pop()
            .expect("one answer per state")
    }

    /// Applies desired states that arrived together, in order, with one compile (the newest
    /// revision wins: no compile for a revision already superseded). While the compile runs on
    /// its own thread, this one keeps reading `work`: what arrives is stashed for later, and a
    /// revision that cuts a local workload off is enforced for it at once (`emergency`).
    /// Returns one answer per state, in order.
    pub fn handle_batch(
        &mut self,
        batch: &[DesiredState],
        work: &mpsc::Receiver<Work>,
        stash: &mut VecDeque<Work>,
    ) -> Vec<Ack> {
        let t = Instant::now();
        let now = self.now_secs();
        let view = self.node.local_view();
        // Decoding and staging happen on the compile thread: a large revision's JSON and
        // indexing take a while too.
        let held = self.held;
        let mut refused: Vec<Option<AgentError>> = (0..batch.len()).map(|_| None).collect();
        let mut staged: Vec<usize> = Vec::new();
        let stage = |engine: &mut Engine, doc: &mut StateDoc| {
            let mut cur = held;
            for (i, s) in batch.iter().enumerate() {
                match s.payload() {
                    Ok(Payload::Snapshot(d)) => node::stage(engine, doc, &d),
                    Ok(Payload::Delta {
                        base_version,
                        delta,
                    }) if base_version == cur => node::stage_delta(engine, doc, delta),
                    Ok(Payload::Delta { base_version, .. }) => {
                        refused[i] = Some(AgentError::OutOfOrder {
                            base: base_version,
                            held: cur,
                        });
                        continue;
                    }
                    Err(e) => {
                        refused[i] = Some(e.into());
                        continue;
                    }
                }
                cur = s.version;
                staged.push(i);
            }
            (cur != held).then_some(cur)
        };
        let mut during = |u: &mut Urgent<'_, D>| {
            let w = match work.recv_timeout(Duration::from_millis(1)) {
                Ok(w) => w,
                Err(mpsc::RecvTimeoutError::Timeout) => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(1));
                    return;
                }
            };
            if let Work::State(s) = &w {
                if let Ok(p) = s.payload() {
                    match emergency::enforce_first(u, &p, &view, now, s.version) {
                        Ok(0) => {}
                        Ok(n) => info!(
                            version = s.version,
                            "emergency: {n} local address(es) isolated ahead of their compile"
                        ),
                        Err(e) => error!("emergency isolation failed: {}", chain(&e)),
                    }
                }
            }
            stash.push_back(w);
        };
        let r = self.node.apply_staged(now, stage, &mut during);
        let last = staged.last().map(|i| batch[*i].version);
        let r = match (r, last) {
            (Err(e), _) => Err(e),
            (Ok(_), None) => Ok((0, 0)),
            (Ok(applied), Some(last)) => {
                let us = t.elapsed().as_micros() as u64;
                self.record(last, us, &applied);
                self.held = last;
                let at = (self.clock)().as_micros() as u64;
                // The datapath holds the version now; persisting it (before the ack) is for
                // restarts, not part of the switch.
                self.state
                    .save_desired(last, self.node.doc())
                    .map(|_| (us, at))
            }
        };
        let mut acks: Vec<Ack> = Vec::with_capacity(batch.len());
        for (i, s) in batch.iter().enumerate() {
            let v = s.version;
            acks.push(match (&refused[i], &r) {
                (Some(e), _) => self.refused(v, e),
                (None, Err(e)) => self.refused(v, e),
                (None, Ok((micros, at))) => Ack {
                    version: v,
                    micros: *micros,
                    applied_unix_us: *at,
                    error: String::new(),
                    resync: false,
                },
            });
        }
        acks
    }

    /// The answer for a state that was not applied.
    fn refused(&self, version: u64, e: &AgentError) -> Ack {
        self.metrics.apply_errors.inc();
        let why = chain(e);
        error!(version, "apply of version {version} failed: {why}");
        Ack {
            version,
            micros: 0,
            applied_unix_us: 0,
            error: why,
            resync: matches!(e, AgentError::OutOfOrder { .. }),
        }
    }

    /// Kernel discovery's periodic scan (`--find-interfaces`): pods start and go between
    /// states; 200 ms keeps attach and detach well within a second.
    pub fn rediscover(&mut self) {
        match self.node.rediscover_every(Duration::from_millis(200)) {
            Ok(Some(r)) => {
                info!(
                    attached = r.attached,
                    detached = r.detached,
                    "local pods' interfaces changed"
                );
                if r.report.is_some() {
                    self.metrics
                        .map_sizes(r.ipcache_entries, r.policy_entries, r.endpoints);
                }
            }
            Ok(None) => {}
            Err(err) => {
                self.metrics.apply_errors.inc();
                error!("finding local pods' interfaces: {}", chain(&err));
            }
        }
    }

    /// Expiring grants end on the agent's clock, manager or not. Returns whether any did.
    pub fn retire_expired(&mut self) -> bool {
        let now = self.now_secs();
        match self.node.next_expiry() {
            Some(t) if t <= now => {}
            _ => return false,
        }
        let t = Instant::now();
        match self.node.advance(now) {
            Ok(_) => info!("expired grants retired at {now} in {:?}", t.elapsed()),
            Err(e) => {
                self.metrics.apply_errors.inc();
                error!("retiring expired grants failed: {}", chain(&e));
            }
        }
        true
    }

    /// Learns the DNS answers the datapath holds, programs their addresses, then releases
    /// them to their workloads (also when programming failed: DNS keeps working, and what was
    /// not programmed stays denied). Returns how many answers were released.
    pub fn learn_dns(&mut self) -> Result<usize, AgentError> {
        let held = self.node.datapath().take_dns(DNS_MAX)?;
        if held.is_empty() {
            return Ok(0);
        }
        let now = self.now_secs();
        let mut answers = Vec::new();
        for h in &held {
            for msg in self.learner.messages(&h.frame) {
                answers.extend(parse_answers(&msg));
            }
        }
        let updates = self.learner.learn(now, &answers);
        if !updates.is_empty() {
            self.program_names(updates);
        }
        let dp = self.node.datapath();
        for h in &held {
            if let Err(e) = dp.release_dns(h) {
                warn!("{}", chain(&e));
            }
        }
        Ok(held.len())
    }

    fn program_names(&mut self, updates: Vec<(std::net::IpAddr, Vec<String>)>) {
        let t = Instant::now();
        let n = updates.len();
        match self.node.set_names(updates) {
            Ok(r) => {
                self.metrics.dns_programmed(n, self.learner.len());
                if r.report.is_some() {
                    self.metrics
                        .map_sizes(r.ipcache_entries, r.policy_entries, r.endpoints);
                }
                tracing::debug!(addresses = n, "DNS names programmed in {:?}", t.elapsed());
            }
            Err(e) => {
                self.metrics.apply_errors.inc();
                error!("programming learned DNS names failed: {}", chain(&e));
            }
        }
        self.names_due = self.learner.next_expiry();
    }

    /// Forgets learned names past their time (kept while the datapath tracks connections to
    /// their addresses). Returns whether any changed.
    pub fn expire_names(&mut self) -> bool {
        let now = self.now_secs();
        match self.names_due {
            Some(t) if t <= now => {}
            _ => return false,
        }
        let in_use = self.node.datapath().tracked_peers().unwrap_or_else(|e| {
            warn!("reading tracked connections: {}", chain(&e));
            Default::default()
        });
        let updates = self.learner.expire(now, |ip| in_use.contains(&ip));
        // In-use names are looked at again a few seconds on, not at every tick.
        self.names_due = self.learner.next_expiry().map(|t| t.max(now + 5));
        if updates.is_empty() {
            return false;
        }
        self.program_names(updates);
        true
    }

    /// Drains the datapath's events into aggregated flow records (one per connection kind per
    /// collection interval) on the flow queue; returns how many records were made.
    pub fn collect_flows(&mut self) -> Result<usize, AgentError> {
        let dp = self.node.datapath();
        let evs = dp.drain_events(DRAIN_MAX)?;
        self.metrics
            .set_kernel_events_lost(dp.counters()?.events_lost);
        if evs.is_empty() {
            return Ok(0);
        }
        let node = &self.node;
        let recs = aggregate(
            &evs,
            node.attribution(),
            |r| node.describe_rule(r),
            |ip| node.engine().names_of(ip).to_vec(),
        );
        let n = recs.len();
        self.flows.push(recs);
        Ok(n)
    }
}

/// `first` and every state already waiting behind it (stashed or queued), up to other work.
fn waiting_states(
    first: DesiredState,
    work: &mpsc::Receiver<Work>,
    stash: &mut VecDeque<Work>,
) -> Vec<DesiredState> {
    let mut batch = vec![first];
    while let Some(Work::State(_)) = stash.front() {
        if let Some(Work::State(s)) = stash.pop_front() {
            batch.push(s);
        }
    }
    if stash.is_empty() {
        while let Ok(w) = work.try_recv() {
            match w {
                Work::State(s) => batch.push(s),
                other => {
                    stash.push_back(other);
                    break;
                }
            }
        }
    }
    batch
}

/// Runs the loop until `work` closes (the agent stops) or `acks` has no reader: applies what
/// arrives, answers on `acks`, and every `tick` retires expired grants and collects flows.
pub fn run<D: Datapath>(
    mut e: Enforcement<D>,
    work: mpsc::Receiver<Work>,
    acks: tokio::sync::mpsc::UnboundedSender<Ack>,
    tick: Duration,
    dns_taken: Option<mpsc::SyncSender<()>>,
) -> Result<(), AgentError> {
    let mut last_drain = Instant::now();
    // Work that arrived while a compile ran, in arrival order.
    let mut stash: VecDeque<Work> = VecDeque::new();
    loop {
        let next = match stash.pop_front() {
            Some(w) => Ok(w),
            None => work.recv_timeout(tick.saturating_sub(last_drain.elapsed())),
        };
        match next {
            Ok(Work::State(s)) => {
                let batch = waiting_states(s, &work, &mut stash);
                for ack in e.handle_batch(&batch, &work, &mut stash) {
                    if acks.send(ack).is_err() {
                        return Ok(());
                    }
                }
            }
            Ok(Work::DnsHeld) => {
                let r = e.learn_dns();
                // The waiting thread may sleep on the ring again.
                if let Some(t) = &dns_taken {
                    let _ = t.try_send(());
                }
                if let Err(err) = r {
                    error!("learning DNS answers: {}", chain(&err));
                }
                // On to the periodic work below: a storm of answers must not starve expiry
                // or flow collection.
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        e.retire_expired();
        e.rediscover();
        e.expire_names();
        if last_drain.elapsed() >= tick {
            last_drain = Instant::now();
            e.collect_flows()?;
        }
    }
}

//! The agent put together: the enforcement thread (which owns the datapath), a small tokio
//! runtime for the manager session (reconnecting with backoff) and the metrics server.
//!
//! Start-up order: state directory, metrics server (`metrics.addr`), discovery, the saved state
//! re-applied (`ready`), then the manager. An agent that cannot reach its manager keeps
//! enforcing what it last applied.

use crate::config::Config;
use crate::discovery::{discover, reported};
use crate::enforce::{self, Enforcement};
use crate::flows::FlowQueue;
use crate::metrics::{self, Metrics};
use crate::node::NodeAgent;
use crate::session::Session;
use crate::state::StateDir;
use crate::{chain, identity, AgentError};
use cellwall_datapath::Datapath;
use std::net::SocketAddr;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::{error, warn};

/// A running agent. [`Agent::wait`] until it stops by itself (the daemon), or
/// [`Agent::stop`] it (tests; a restart is a stop and a new start on the same state directory).
pub struct Agent {
    rt: tokio::runtime::Runtime,
    stop: watch::Sender<bool>,
    manager_loop: tokio::task::JoinHandle<()>,
    enforcement: std::thread::JoinHandle<Result<(), AgentError>>,
    metrics: Arc<Metrics>,
    flows: Arc<FlowQueue>,
    metrics_addr: Option<SocketAddr>,
    /// The version re-applied from the state directory at start.
    restored: Option<u64>,
}

/// Runs the agent on `datapath` until it fails (the daemon's whole life).
pub fn run<D: Datapath + 'static>(cfg: Config, datapath: D) -> Result<(), AgentError> {
    Agent::start(cfg, datapath)?.wait()
}

/// The thread that sleeps on the held-DNS ring and wakes the enforcement thread, which owns
/// the datapath and drains the ring. After each wake it waits until the enforcement thread has
/// taken the answers (the ring stays readable until then). Ends when the agent stops, so the
/// enforcement thread's work channel can close. Returns the sender that says "taken".
fn spawn_dns_wait(
    waker: cellwall_datapath::DnsWaker,
    work: mpsc::Sender<enforce::Work>,
    stop: watch::Receiver<bool>,
) -> Result<mpsc::SyncSender<()>, AgentError> {
    let (taken_tx, taken_rx) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("dns-wait".into())
        .spawn(move || {
            while !*stop.borrow() {
                match waker.wait(Duration::from_millis(200)) {
                    Ok(true) => {
                        if work.send(enforce::Work::DnsHeld).is_err() {
                            return;
                        }
                        let _ = taken_rx.recv_timeout(Duration::from_secs(1));
                    }
                    Ok(false) => {}
                    Err(e) => {
                        error!("waiting for held DNS answers: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|source| AgentError::Spawn {
            what: "the DNS-waiting thread",
            source,
        })?;
    Ok(taken_tx)
}

/// Resolves once `stop` says so (or its sender is gone).
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Agent {
    /// Starts the agent on `datapath`; returns once it enforces its saved state (if any) and
    /// is connecting to the manager.
    pub fn start<D: Datapath + 'static>(cfg: Config, datapath: D) -> Result<Agent, AgentError> {
        Self::start_with(cfg, datapath, enforce::system_clock())
    }

    /// [`start`](Self::start) with a clock of the caller's (tests).
    pub fn start_with<D: Datapath + 'static>(
        cfg: Config,
        datapath: D,
        clock: enforce::Clock,
    ) -> Result<Agent, AgentError> {
        let state = StateDir::create(&cfg.state_dir)?;
        state.clear_ready();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("agent-io")
            .enable_all()
            .build()
            .map_err(|source| AgentError::Spawn {
                what: "the async runtime",
                source,
            })?;
        let (stop, stop_rx) = watch::channel(false);
        let metrics = Arc::new(Metrics::new());
        let metrics_addr = match cfg.metrics_listen {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|source| AgentError::Io {
                        what: "listening for metrics on",
                        path: addr.to_string().into(),
                        source,
                    })?;
                let local = l.local_addr().map_err(|source| AgentError::Io {
                    what: "metrics address of",
                    path: addr.to_string().into(),
                    source,
                })?;
                let l = {
                    let _g = rt.enter();
                    tokio::net::TcpListener::from_std(l).map_err(|source| AgentError::Io {
                        what: "listening for metrics on",
                        path: addr.to_string().into(),
                        source,
                    })?
                };
                state.write_metrics_addr(local)?;
                let (m, s) = (metrics.clone(), stopped(stop_rx.clone()));
                rt.spawn(async move {
                    if let Err(e) = metrics::serve(l, m, s).await {
                        error!("metrics server: {}", chain(&e));
                    }
                });
                Some(local)
            }
            None => None,
        };
        let found = discover(&cfg, &datapath)?;
        let local = reported(&cfg, &found);
        let flows = Arc::new(FlowQueue::new(
            cfg.flow_queue_capacity,
            metrics.records_dropped.clone(),
        ));
        let mut node = NodeAgent::new(datapath, found, &cfg.node, cfg.visibility)?;
        if cfg.find_interfaces {
            node = node.finding_interfaces();
        }
        let mut enforcement = Enforcement::new(node, state.clone(), metrics.clone(), flows.clone())
            .with_clock(clock)
            .with_dns_min_ttl(cfg.dns_min_ttl);
        let restored = enforcement.restore()?;
        state.mark_ready()?;

        let (work_tx, work_rx) = mpsc::channel();
        let (ack_tx, ack_rx) = tokio::sync::mpsc::unbounded_channel();
        let tick = cfg.flow_tick();
        let dns_taken = match enforcement.dns_waker()? {
            Some(waker) => Some(spawn_dns_wait(waker, work_tx.clone(), stop_rx.clone())?),
            None => None,
        };
        let enforcement = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("enforce".into())
                .spawn(move || {
                    let r = enforce::run(enforcement, work_rx, ack_tx, tick, dns_taken);
                    if let Err(e) = &r {
                        error!("enforcement stopped: {}", chain(e));
                    }
                    // The agent is over without its enforcement: stop the rest.
                    let _ = stop.send(true);
                    r
                })
                .map_err(|source| AgentError::Spawn {
                    what: "the enforcement thread",
                    source,
                })?
        };
        let manager_loop = rt.spawn(
            ManagerLoop {
                cfg,
                state,
                local,
                work: work_tx,
                acks: ack_rx,
                flows: flows.clone(),
                m: metrics.clone(),
                stop: stop_rx,
            }
            .run(),
        );
        Ok(Agent {
            rt,
            stop,
            manager_loop,
            enforcement,
            metrics,
            flows,
            metrics_addr,
            restored,
        })
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn flows(&self) -> &Arc<FlowQueue> {
        &self.flows
    }

    /// Where `/metrics` is served (with `metrics_listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The version re-applied from the state directory at start, if any.
    pub fn restored(&self) -> Option<u64> {
        self.restored
    }

    /// Stops the agent (the datapath keeps enforcing what it holds) and returns how the
    /// enforcement thread ended.
    pub fn stop(self) -> Result<(), AgentError> {
        let _ = self.stop.send(true);
        self.wait()
    }

    /// Waits until the agent stops (by [`stop`](Self::stop), or because its enforcement
    /// thread failed) and returns how the enforcement thread ended.
    pub fn wait(self) -> Result<(), AgentError> {
        let Agent {
            rt,
            manager_loop,
            enforcement,
            ..
        } = self;
        // The manager loop ends when stopped; it holds the sender of the enforcement thread's
        // work, so the thread ends after it.
        let _ = rt.block_on(manager_loop);
        let r = enforcement
            .join()
            .unwrap_or(Err(AgentError::EnforcementStopped));
        rt.shutdown_timeout(Duration::from_secs(2));
        r
    }
}

/// What the connection to the manager needs: the configuration, what to report, where states
/// go and acks come from, the flow queue, metrics, and the stop signal.
struct ManagerLoop {
    cfg: Config,
    state: StateDir,
    local: Vec<cellwall_proto::LocalWorkload>,
    work: mpsc::Sender<crate::enforce::Work>,
    acks: tokio::sync::mpsc::UnboundedReceiver<enforce::Ack>,
    flows: Arc<FlowQueue>,
    m: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl ManagerLoop {
    /// Connects, runs sessions, and reconnects with backoff (100 ms doubling to 5 s, back to
    /// 100 ms after a session that lasted 10 s) until stopped.
    async fn run(self) {
        let ManagerLoop {
            cfg,
            state,
            local,
            work,
            mut acks,
            flows,
            m,
            stop,
        } = self;
        let mut backoff = Duration::from_millis(100);
        loop {
            if *stop.borrow() {
                return;
            }
            let started = Instant::now();
            let r = match identity::identity(&cfg, &state).await {
                Ok(id) => {
                    Session {
                        cfg: &cfg,
                        state: &state,
                        local: &local,
                        work: &work,
                        acks: &mut acks,
                        flows: &flows,
                        metrics: &m,
                    }
                    .run(id, stopped(stop.clone()))
                    .await
                }
                Err(e) => Err(e),
            };
            m.connected.set(0);
            if *stop.borrow() {
                return;
            }
            if let Err(AgentError::Renewed { .. }) = &r {
                tracing::info!("{}", r.as_ref().unwrap_err());
                continue;
            }
            if let Err(e) = r {
                warn!(
                    "manager: {}; retrying in {backoff:?} (enforcing the last applied state)",
                    chain(&e)
                );
            }
            m.reconnects.inc();
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stopped(stop.clone()) => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}

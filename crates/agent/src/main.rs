//! `cellwall-agent`: the node daemon. Joins the manager with a bootstrap token (once), then over
//! mTLS watches its node's desired state, enforces it, acks each version, and ships flow records.
//!
//! Threads: one enforcement thread owns the datapath (applies states, drains the kernel's flow
//! events between applies); the async side only talks to the manager. The last applied state is
//! persisted before it is acked, so a restart while the manager is down enforces it again.

use anyhow::{bail, Context, Result};
use cellwall_agent::node::{Backend, EndpointsFile, NodeAgent};
use cellwall_datapath::{abi, KernelDatapath};
use cellwall_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use cellwall_proto::{
    AckRequest, AgentClient, DesiredState, Direction, FlowBatch, FlowRecord, JoinRequest,
    LocalWorkload, Payload, StateDoc, Verdict, WatchRequest,
};
use clap::{Parser, ValueEnum};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatapathKind {
    Ebpf,
    None,
}

/// Cellwall's node agent: enforces the manager's policy for this node's workloads in the kernel
/// and reports what it sees.
///
/// First run: `--bootstrap-token-file` (the manager's bootstrap.token) and `--ca` (the
/// manager's ca.pem) buy a node certificate, kept in --state-dir. Later runs use it.
#[derive(Parser, Debug)]
#[command(name = "cellwall-agent", version)]
struct Args {
    /// The manager's gRPC address, HOST:PORT.
    #[arg(long)]
    manager: String,
    /// The manager's CA certificate (PEM).
    #[arg(long)]
    ca: PathBuf,
    /// File holding a bootstrap token (needed only until the node has its certificate).
    #[arg(long)]
    bootstrap_token_file: Option<PathBuf>,
    /// This node's name.
    #[arg(long)]
    node: String,
    /// Certificate, key and the last applied state.
    #[arg(long)]
    state_dir: PathBuf,
    /// Local workload discovery file (JSON: {"nodes": [...], "endpoints": [{key, ips,
    /// interface, ifindex}]}); the lab writes one.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Network namespace holding the workloads' host-side interfaces (default: this one).
    #[arg(long)]
    netns: Option<String>,
    /// bpffs directory of the pinned programs and maps.
    #[arg(long, default_value = "/sys/fs/bpf/cellwall/node")]
    pin_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DatapathKind::Ebpf)]
    datapath: DatapathKind,
    /// Per-connection flow events (off: counters and denials only).
    #[arg(long, default_value = "on", value_parser = ["on", "off"])]
    visibility: String,
    /// Prometheus metrics address (e.g. 127.0.0.1:9464; port 0 picks one, written to
    /// STATE_DIR/metrics.addr).
    #[arg(long)]
    metrics_listen: Option<SocketAddr>,
    /// Host mode: this host is itself a workload, NAMESPACE/NAME (e.g. hosts/db-vm-1), protected
    /// on its NIC (--host-interface) with the same policies and identities as pods.
    #[arg(long, requires_all = ["host_interface", "host_ip"])]
    host_workload: Option<String>,
    /// Host mode: the NIC to protect.
    #[arg(long)]
    host_interface: Option<String>,
    /// Host mode: the host's addresses (repeatable).
    #[arg(long)]
    host_ip: Vec<std::net::IpAddr>,
    /// Host mode: a label of the host, k=v (repeatable); imported labels add to these.
    #[arg(long, value_parser = parse_label)]
    host_label: Vec<(String, String)>,
    /// How often flow events are collected and shipped.
    #[arg(long, default_value_t = 250)]
    flow_interval_ms: u64,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    cellwall_policy::labels::validate_label_key(k)?;
    cellwall_policy::labels::validate_label_value(v)?;
    Ok((k.to_string(), v.to_string()))
}

/// What the agent exposes on /metrics.
#[derive(Default)]
struct Metrics {
    applied_version: AtomicU64,
    applies: AtomicU64,
    apply_micros_sum: AtomicU64,
    apply_micros_last: AtomicU64,
    apply_errors: AtomicU64,
    records_delivered: AtomicU64,
    records_dropped: AtomicU64,
    kernel_events_lost: AtomicU64,
    ipcache_entries: AtomicU64,
    policy_entries: AtomicU64,
    endpoints: AtomicU64,
    connected: AtomicU64,
    reconnects: AtomicU64,
}

impl Metrics {
    fn render(&self) -> String {
        let g = |name: &str, help: &str, kind: &str, v: &AtomicU64| {
            format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {}\n",
                v.load(Relaxed)
            )
        };
        let mut s = String::new();
        s += &g(
            "cellwall_agent_applied_version",
            "Desired-state version in the kernel maps.",
            "gauge",
            &self.applied_version,
        );
        s += &g(
            "cellwall_agent_applies_total",
            "Desired states applied.",
            "counter",
            &self.applies,
        );
        s += &g(
            "cellwall_agent_apply_micros_sum",
            "Total time spent applying, microseconds.",
            "counter",
            &self.apply_micros_sum,
        );
        s += &g(
            "cellwall_agent_apply_micros_last",
            "Duration of the last apply, microseconds.",
            "gauge",
            &self.apply_micros_last,
        );
        s += &g(
            "cellwall_agent_apply_errors_total",
            "Applies that failed (the previous state stays).",
            "counter",
            &self.apply_errors,
        );
        s += &g(
            "cellwall_agent_flow_records_delivered_total",
            "Flow records the manager accepted.",
            "counter",
            &self.records_delivered,
        );
        s += &g(
            "cellwall_agent_flow_records_dropped_total",
            "Flow records dropped because the queue to the manager was full.",
            "counter",
            &self.records_dropped,
        );
        s += &g(
            "cellwall_agent_kernel_events_lost_total",
            "Flow events the kernel could not queue (ring buffer full).",
            "counter",
            &self.kernel_events_lost,
        );
        s += "# HELP cellwall_agent_map_entries Entries in the datapath maps.\n# TYPE cellwall_agent_map_entries gauge\n";
        for (m, v) in [
            ("ipcache", &self.ipcache_entries),
            ("policy", &self.policy_entries),
            ("endpoints", &self.endpoints),
        ] {
            s += &format!(
                "cellwall_agent_map_entries{{map=\"{m}\"}} {}\n",
                v.load(Relaxed)
            );
        }
        s += &g(
            "cellwall_agent_connected",
            "1 while the watch stream to the manager is up.",
            "gauge",
            &self.connected,
        );
        s += &g(
            "cellwall_agent_reconnects_total",
            "Connections to the manager lost and retried.",
            "counter",
            &self.reconnects,
        );
        s
    }
}

/// Flow records waiting for the manager; bounded so a long outage cannot exhaust memory (what
/// does not fit is counted, never silently lost).
struct FlowQueue {
    q: Mutex<VecDeque<FlowRecord>>,
    cap: usize,
    /// Batches sent in this run (the manager spots gaps).
    seq: AtomicU64,
}

impl FlowQueue {
    fn push(&self, recs: Vec<FlowRecord>, m: &Metrics) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        for r in recs {
            if q.len() >= self.cap {
                m.records_dropped.fetch_add(r.count.max(1), Relaxed);
            } else {
                q.push_back(r);
            }
        }
    }
    fn take(&self, n: usize) -> Vec<FlowRecord> {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        let n = n.min(q.len());
        q.drain(..n).collect()
    }
    fn put_back(&self, recs: Vec<FlowRecord>, m: &Metrics) {
        let mut q = self.q.lock().unwrap_or_else(|p| p.into_inner());
        for r in recs.into_iter().rev() {
            if q.len() >= self.cap {
                m.records_dropped.fetch_add(r.count.max(1), Relaxed);
            } else {
                q.push_front(r);
            }
        }
    }
}

fn now_unix() -> Duration {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
}

fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

async fn channel(a: &Args, identity: Option<Identity>) -> Result<Channel> {
    let ca = std::fs::read_to_string(&a.ca)
        .with_context(|| format!("reading the manager CA {}", a.ca.display()))?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(host_of(&a.manager).to_string());
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let ch = Endpoint::from_shared(format!("https://{}", a.manager))
        .context("manager address")?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .with_context(|| format!("connecting to the manager at {}", a.manager))?;
    Ok(ch)
}

/// The node certificate, joining first if there is none yet.
async fn identity(a: &Args) -> Result<Identity> {
    let (cert, key) = (a.state_dir.join("node.pem"), a.state_dir.join("node.key"));
    if !cert.exists() || !key.exists() {
        let file = a.bootstrap_token_file.as_ref().context(
            "this node has no certificate yet: pass --bootstrap-token-file (the manager's bootstrap.token)",
        )?;
        let token =
            std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
        let mut c = AgentClient::new(channel(a, None).await?);
        let r = c
            .join(JoinRequest {
                token: token.trim().to_string(),
                node: a.node.clone(),
            })
            .await
            .map_err(|s| anyhow::anyhow!("join refused: {}", s.message()))?
            .into_inner();
        write_private(&key, r.key_pem.as_bytes())?;
        std::fs::write(&cert, r.cert_pem.as_bytes())?;
        eprintln!("joined the manager as node {}", a.node);
    }
    Ok(Identity::from_pem(
        std::fs::read(&cert)?,
        std::fs::read(&key)?,
    ))
}

struct Ack {
    version: u64,
    micros: u64,
    applied_unix_us: u64,
    error: String,
    /// The state could not be applied on top of what is held: the session must reconnect so
    /// the manager sends a snapshot.
    resync: bool,
}

/// The enforcement thread: applies states in order, persists, acks; collects flow events.
fn enforcement(
    a: &Args,
    discovery: EndpointsFile,
    work: mpsc::Receiver<DesiredState>,
    acks: tokio::sync::mpsc::UnboundedSender<Ack>,
    flows: Arc<FlowQueue>,
    m: Arc<Metrics>,
) -> Result<()> {
    let backend = match a.datapath {
        DatapathKind::None => Backend::None,
        DatapathKind::Ebpf => Backend::Kernel {
            pins: a.pin_dir.clone(),
            netns: a.netns.clone(),
            visibility: a.visibility == "on",
        },
    };
    let mut agent = NodeAgent::new(backend, discovery, &a.node)?;
    let mut events = match a.datapath {
        DatapathKind::Ebpf => Some(KernelDatapath::open(&a.pin_dir)?),
        DatapathKind::None => None,
    };
    let saved = a.state_dir.join("desired.json");
    let apply = |agent: &mut NodeAgent, version: u64, doc: &StateDoc| -> Result<u64> {
        let t = Instant::now();
        let r = agent.apply(doc, now_unix().as_secs() as i64)?;
        let us = t.elapsed().as_micros() as u64;
        m.applied_version.store(version, Relaxed);
        m.applies.fetch_add(1, Relaxed);
        m.apply_micros_sum.fetch_add(us, Relaxed);
        m.apply_micros_last.store(us, Relaxed);
        if r.report.is_some() {
            m.ipcache_entries.store(r.ipcache_entries as u64, Relaxed);
            m.policy_entries.store(r.policy_entries as u64, Relaxed);
            m.endpoints.store(r.endpoints as u64, Relaxed);
        }
        Ok(us)
    };
    // The version the engine and maps hold (a delta applies only on top of its base).
    let mut held = 0u64;
    // Fail-static restart: enforce what was last acked before hearing from the manager.
    if let Ok(b) = std::fs::read(&saved) {
        match serde_json::from_slice::<(u64, StateDoc)>(&b) {
            Ok((v, mut doc)) => {
                doc.normalize();
                apply(&mut agent, v, &doc).context("re-applying the saved state")?;
                held = v;
                eprintln!("re-applied saved state version {v}");
            }
            Err(e) => eprintln!("ignoring unreadable {}: {e}", saved.display()),
        }
    }
    std::fs::write(a.state_dir.join("ready"), b"")?;
    let tick = Duration::from_millis(a.flow_interval_ms.max(10));
    let mut last_drain = Instant::now();
    loop {
        match work.recv_timeout(tick.saturating_sub(last_drain.elapsed())) {
            Ok(s) => {
                let mut resync = false;
                let result = s.payload().map_err(anyhow::Error::from).and_then(|p| {
                    let us = match p {
                        Payload::Snapshot(doc) => apply(&mut agent, s.version, &doc)?,
                        Payload::Delta {
                            base_version,
                            delta,
                        } => {
                            if base_version != held {
                                resync = true;
                                bail!(
                                    "a delta from version {base_version} arrived while holding \
                                     {held}; reconnecting for a snapshot"
                                );
                            }
                            let now = now_unix().as_secs() as i64;
                            let t = Instant::now();
                            if delta.is_empty() {
                                // Already current (a reconnect): nothing to compile.
                                m.applied_version.store(s.version, Relaxed);
                                0
                            } else {
                                agent.apply_delta(delta, now)?;
                                let us = t.elapsed().as_micros() as u64;
                                m.applied_version.store(s.version, Relaxed);
                                m.applies.fetch_add(1, Relaxed);
                                m.apply_micros_sum.fetch_add(us, Relaxed);
                                m.apply_micros_last.store(us, Relaxed);
                                us
                            }
                        }
                    };
                    held = s.version;
                    // The maps hold the version now; persisting it (before the ack) is for
                    // restarts, not part of the switch.
                    let at = now_unix().as_micros() as u64;
                    write_private(&saved, &serde_json::to_vec(&(s.version, agent.doc()))?)?;
                    Ok((us, at))
                });
                let ack = match result {
                    Ok((us, at)) => Ack {
                        version: s.version,
                        micros: us,
                        applied_unix_us: at,
                        error: String::new(),
                        resync: false,
                    },
                    Err(e) => {
                        m.apply_errors.fetch_add(1, Relaxed);
                        eprintln!("apply of version {} failed: {e:#}", s.version);
                        Ack {
                            version: s.version,
                            micros: 0,
                            applied_unix_us: 0,
                            error: format!("{e:#}"),
                            resync,
                        }
                    }
                };
                if acks.send(ack).is_err() {
                    return Ok(());
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
        }
        // Expiring grants end on the agent's clock, manager or not.
        let now = now_unix().as_secs() as i64;
        if agent.next_expiry().is_some_and(|t| t <= now) {
            let t = Instant::now();
            match agent.advance(now) {
                Ok(_) => eprintln!("expired grants retired at {now} in {:?}", t.elapsed()),
                Err(e) => {
                    m.apply_errors.fetch_add(1, Relaxed);
                    eprintln!("retiring expired grants failed: {e:#}");
                }
            }
        }
        if last_drain.elapsed() >= tick {
            last_drain = Instant::now();
            if let Some(dp) = events.as_mut() {
                collect(dp, &agent, &flows, &m)?;
            }
        }
    }
}

/// Drains the kernel's events into aggregated records: one per (src, dst, proto, port,
/// verdict, direction, rule) per collection interval.
fn collect(dp: &mut KernelDatapath, agent: &NodeAgent, q: &FlowQueue, m: &Metrics) -> Result<()> {
    let evs = dp.drain_events(100_000)?;
    m.kernel_events_lost
        .store(dp.counters()?.events_lost, Relaxed);
    if evs.is_empty() {
        return Ok(());
    }
    let who = agent.attribution();
    let ip = |a: [u8; 16]| -> std::net::IpAddr {
        let v6 = std::net::Ipv6Addr::from(a);
        v6.to_ipv4_mapped()
            .map(std::net::IpAddr::V4)
            .unwrap_or(std::net::IpAddr::V6(v6))
    };
    // Keyed by the raw event fields with the Fx hash: every event of a busy node passes here
    // (SipHash and address conversions per event were a third of the agent's CPU).
    type Key = ([u8; 16], [u8; 16], u8, u16, u8, u8, u32);
    let mut agg: cellwall_policy::fxhash::FxHashMap<Key, FlowRecord> = Default::default();
    for e in &evs {
        let port = u16::from_be(e.dport);
        let k = (e.saddr, e.daddr, e.proto, port, e.kind, e.dir, e.rule);
        let r = agg.entry(k).or_insert_with(|| {
            let (s, d) = (ip(e.saddr), ip(e.daddr));
            FlowRecord {
                time_unix_ns: cellwall_datapath::kernel::ktime_to_unix_ns(e.ts_ns),
                src: who.name(s),
                dst: who.name(d),
                src_ip: s.to_string(),
                dst_ip: d.to_string(),
                protocol: e.proto as u32,
                port: port as u32,
                verdict: match e.kind {
                    abi::EV_ALLOW => Verdict::Allowed,
                    abi::EV_DENY => Verdict::Denied,
                    abi::EV_AUDIT => Verdict::Audit,
                    abi::EV_REVOKE => Verdict::Revoked,
                    _ => Verdict::Unspecified,
                } as i32,
                direction: if e.dir == abi::DIR_EGRESS {
                    Direction::Egress
                } else {
                    Direction::Ingress
                } as i32,
                rule: agent.describe_rule(e.rule).unwrap_or_default(),
                count: 0,
            }
        });
        r.count += 1;
    }
    let mut recs: Vec<FlowRecord> = agg.into_values().collect();
    recs.sort_by_key(|r| r.time_unix_ns);
    q.push(recs, m);
    Ok(())
}

/// One connection to the manager: watch, forward states, send acks and flows, until it breaks.
async fn session(
    a: &Args,
    id: Identity,
    local: &[LocalWorkload],
    work: &mpsc::Sender<DesiredState>,
    acks: &mut tokio::sync::mpsc::UnboundedReceiver<Ack>,
    flows: &FlowQueue,
    m: &Metrics,
) -> Result<()> {
    let mut c = AgentClient::new(channel(a, Some(id)).await?).max_decoding_message_size(256 << 20);
    let mut stream = c
        .watch(WatchRequest {
            node: a.node.clone(),
            applied_version: m.applied_version.load(Relaxed),
            workloads: local.to_vec(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await
        .map_err(|s| anyhow::anyhow!("watch refused: {}", s.message()))?
        .into_inner();
    m.connected.store(1, Relaxed);
    eprintln!("connected to the manager at {}", a.manager);
    let mut tick = tokio::time::interval(Duration::from_millis(a.flow_interval_ms.max(10)));
    loop {
        tokio::select! {
            msg = stream.message() => {
                match msg.map_err(|s| anyhow::anyhow!("watch stream: {}", s.message()))? {
                    Some(s) => {
                        if work.send(s).is_err() {
                            bail!("the enforcement thread stopped");
                        }
                    }
                    None => bail!("the manager closed the watch stream"),
                }
            }
            Some(ack) = acks.recv() => {
                let resync = ack.resync.then(|| ack.error.clone());
                c.ack(AckRequest {
                    node: a.node.clone(),
                    version: ack.version,
                    apply_micros: ack.micros,
                    error: ack.error,
                    applied_unix_micros: ack.applied_unix_us,
                })
                .await
                .map_err(|s| anyhow::anyhow!("ack: {}", s.message()))?;
                if let Some(why) = resync {
                    bail!("{why}");
                }
            }
            _ = tick.tick() => {
                loop {
                    let recs = flows.take(5000);
                    if recs.is_empty() {
                        break;
                    }
                    let seq = flows.seq.fetch_add(1, Relaxed) + 1;
                    let batch = FlowBatch {
                        node: a.node.clone(),
                        records: recs.clone(),
                        kernel_events_lost: m.kernel_events_lost.load(Relaxed),
                        agent_records_dropped: m.records_dropped.load(Relaxed),
                        seq,
                    };
                    match c.report_flows(batch).await {
                        Ok(r) => {
                            m.records_delivered.fetch_add(r.into_inner().accepted, Relaxed);
                        }
                        Err(s) => {
                            flows.seq.fetch_sub(1, Relaxed);
                            flows.put_back(recs, m);
                            bail!("report flows: {}", s.message());
                        }
                    }
                }
            }
        }
    }
}

async fn serve_metrics(l: tokio::net::TcpListener, m: Arc<Metrics>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        let m = m.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf).await;
            let body = m.render();
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        });
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    std::fs::create_dir_all(&a.state_dir)
        .with_context(|| format!("creating {}", a.state_dir.display()))?;
    let _ = std::fs::remove_file(a.state_dir.join("ready"));
    let mut discovery: EndpointsFile = match &a.endpoints {
        Some(p) => serde_json::from_slice(
            &std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{}: not an endpoints file", p.display()))?,
        None => EndpointsFile::default(),
    };
    if let Some(hw) = &a.host_workload {
        cellwall_policy::WorkloadKey::parse(hw)
            .with_context(|| format!("--host-workload {hw:?}: expected NAMESPACE/NAME"))?;
        let ifname = a.host_interface.clone().expect("required by clap");
        let ifindex = match &a.netns {
            Some(ns) => {
                let i = ifname.clone();
                cellwall_datapath::netns::run_in(ns, move || {
                    cellwall_datapath::netns::ifindex(&i)
                })??
            }
            None => cellwall_datapath::netns::ifindex(&ifname)?,
        };
        discovery.nodes.push(a.node.clone());
        discovery
            .endpoints
            .push(cellwall_agent::node::LocalEndpoint {
                key: hw.clone(),
                ips: a.host_ip.clone(),
                interface: ifname,
                ifindex,
                nic: true,
            });
    }
    let local: Vec<LocalWorkload> = discovery
        .endpoints
        .iter()
        .map(|e| LocalWorkload {
            key: e.key.clone(),
            ips: e.ips.iter().map(|i| i.to_string()).collect(),
            interface: e.interface.clone(),
            labels: if e.nic {
                a.host_label.iter().cloned().collect()
            } else {
                Default::default()
            },
            host: e.nic,
        })
        .collect();
    let m = Arc::new(Metrics::default());
    let flows = Arc::new(FlowQueue {
        q: Mutex::new(VecDeque::new()),
        cap: 200_000,
        seq: AtomicU64::new(0),
    });
    let (work_tx, work_rx) = mpsc::channel();
    let (ack_tx, mut ack_rx) = tokio::sync::mpsc::unbounded_channel();
    let a = Arc::new(a);
    let enf_done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let enf = {
        let (a, f, m, done) = (a.clone(), flows.clone(), m.clone(), enf_done.clone());
        std::thread::Builder::new()
            .name("enforce".into())
            .spawn(move || {
                let r = enforcement(&a, discovery, work_rx, ack_tx, f, m);
                done.store(true, Relaxed);
                r
            })?
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        if let Some(addr) = a.metrics_listen {
            let l = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("metrics on {addr}"))?;
            std::fs::write(
                a.state_dir.join("metrics.addr"),
                l.local_addr()?.to_string(),
            )?;
            tokio::spawn(serve_metrics(l, m.clone()));
        }
        let mut backoff = Duration::from_millis(100);
        loop {
            if enf_done.load(Relaxed) {
                break;
            }
            let started = Instant::now();
            let r = match identity(&a).await {
                Ok(id) => session(&a, id, &local, &work_tx, &mut ack_rx, &flows, &m).await,
                Err(e) => Err(e),
            };
            m.connected.store(0, Relaxed);
            if let Err(e) = r {
                eprintln!(
                    "manager: {e:#}; retrying in {backoff:?} (enforcing the last applied state)"
                );
            }
            m.reconnects.fetch_add(1, Relaxed);
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        anyhow::Ok(())
    })?;
    match enf.join() {
        Ok(r) => r.context("enforcement stopped"),
        Err(_) => bail!("the enforcement thread panicked"),
    }
}

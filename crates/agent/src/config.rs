//! The agent's settings: one field per `cellwall-agent` flag (the binary parses them with clap
//! and fills a [`Config`]; tests build one with [`Config::new`]).

use crate::AgentError;
use cellwall_datapath::{Datapath, KernelDatapath, NullDatapath};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Which datapath `cellwall-agent --datapath` runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathKind {
    /// eBPF programs and maps pinned in `pin_dir`.
    Ebpf,
    /// Compile, track and ack versions, enforce nothing (benchmark baselines).
    None,
}

/// Host mode: the host is itself a workload, protected on its NIC with the same policies and
/// identities as pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMode {
    /// `NAMESPACE/NAME`.
    pub workload: String,
    /// The NIC to protect.
    pub interface: String,
    pub ips: Vec<IpAddr>,
    /// Labels the agent reports for the host (imported labels add to these).
    pub labels: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The manager's gRPC address, `HOST:PORT`.
    pub manager: String,
    /// The manager's CA certificate (PEM).
    pub ca: PathBuf,
    /// A bootstrap token file, needed only until the node has its certificate.
    pub bootstrap_token_file: Option<PathBuf>,
    /// This node's name.
    pub node: String,
    /// Certificate, key, the last applied state, `ready` and `metrics.addr`.
    pub state_dir: PathBuf,
    /// Local workload discovery file ([`EndpointsFile`](crate::EndpointsFile) as JSON).
    pub endpoints: Option<PathBuf>,
    /// Find local pods' host-side interfaces in the kernel (a DaemonSet agent): the pods are
    /// those the manager's state binds to this node (`discovery`).
    pub find_interfaces: bool,
    /// Network namespace holding the workloads' host-side interfaces (None: this one).
    pub netns: Option<String>,
    /// bpffs directory of the pinned programs and maps.
    pub pin_dir: PathBuf,
    pub datapath: DatapathKind,
    /// Per-connection flow events (off: counters and denials only).
    pub visibility: bool,
    /// Prometheus metrics address (port 0 picks one, written to `STATE_DIR/metrics.addr`).
    pub metrics_listen: Option<SocketAddr>,
    pub host: Option<HostMode>,
    /// How often flow events are collected and shipped.
    pub flow_interval: Duration,
    /// Flow records held for the manager at most (what does not fit is counted as dropped).
    pub flow_queue_capacity: usize,
    /// The shortest time a learned DNS answer's addresses stay programmed (FQDN policy),
    /// whatever its TTL: clients cache answers longer than they say (JVMs, for one).
    pub dns_min_ttl: Duration,
}

/// The default `--pin-dir`.
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/cellwall/node";

impl Config {
    /// The defaults of every optional flag.
    pub fn new(
        manager: impl Into<String>,
        ca: impl Into<PathBuf>,
        node: impl Into<String>,
        state_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            manager: manager.into(),
            ca: ca.into(),
            bootstrap_token_file: None,
            node: node.into(),
            state_dir: state_dir.into(),
            endpoints: None,
            find_interfaces: false,
            netns: None,
            pin_dir: PathBuf::from(DEFAULT_PIN_DIR),
            datapath: DatapathKind::Ebpf,
            visibility: true,
            metrics_listen: None,
            host: None,
            flow_interval: Duration::from_millis(250),
            flow_queue_capacity: 200_000,
            dns_min_ttl: Duration::from_secs(60),
        }
    }

    /// The collection and shipping period (at least 10 ms).
    pub fn flow_tick(&self) -> Duration {
        self.flow_interval.max(Duration::from_millis(10))
    }

    /// The datapath `--datapath` names: the kernel's (maps pinned in `pin_dir`, interfaces in
    /// `netns`) or none.
    pub fn open_datapath(&self) -> Result<Box<dyn Datapath>, AgentError> {
        Ok(match self.datapath {
            DatapathKind::Ebpf => {
                let dp = KernelDatapath::open_in(&self.pin_dir, self.netns.as_deref())?;
                if dp.migrated_ipcache() > 0 {
                    tracing::info!(
                        entries = dp.migrated_ipcache(),
                        "copied the previous version's identity map before attaching"
                    );
                }
                Box::new(dp)
            }
            DatapathKind::None => Box::new(NullDatapath::new(self.netns.as_deref())),
        })
    }
}

/// Parses `KEY=VALUE` (a `--host-label`), validating both like Kubernetes does.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected KEY=VALUE"))?;
    cellwall_policy::labels::validate_label_key(k)?;
    cellwall_policy::labels::validate_label_value(v)?;
    Ok((k.to_string(), v.to_string()))
}

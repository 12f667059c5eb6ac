//! `cellwall-agent`: the node daemon. Joins the manager with a bootstrap token (once), then over
//! mTLS watches its node's desired state, enforces it, acks each version, and ships flow records.
//! Everything but the command line is the `cellwall_agent` library.

use anyhow::{Context, Result};
use cellwall_agent::logging::{self, LogFormat};
use cellwall_agent::{config, Config, DatapathKind, HostMode};
use clap::{Parser, ValueEnum};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DatapathArg {
    Ebpf,
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
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
    /// File holding a join token, needed only until the node has its certificate: a bootstrap
    /// token, or in a cluster the pod's projected ServiceAccount token (the manager reviews it
    /// with the API server when it runs with --join-service-account).
    #[arg(long)]
    bootstrap_token_file: Option<PathBuf>,
    /// This node's name (a DaemonSet sets NODE_NAME from the downward API: spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    node: String,
    /// The cluster this node belongs to, when one manager watches several clusters (its
    /// --kube-context NAME): the agent joins and is known as NAME:NODE, and the manager
    /// checks its ServiceAccount token with that cluster's API server.
    #[arg(long, env = "CELLWALL_CLUSTER", value_name = "NAME", value_parser = parse_cluster)]
    cluster: Option<String>,
    /// Certificate, key and the last applied state.
    #[arg(long)]
    state_dir: PathBuf,
    /// Local workload discovery file (JSON: {"nodes": [...], "endpoints": [{key, ips,
    /// interface, ifindex}]}); the lab writes one.
    #[arg(long)]
    endpoints: Option<PathBuf>,
    /// Find local pods' host-side interfaces in the kernel, as a DaemonSet agent must: the pods
    /// are those the manager's state binds to this node (it watches the Kubernetes API), each
    /// found by its /32 (/128) route to a veth (routed CNIs) or by the bridge port holding its
    /// MAC (bridged CNIs). Looked up at every state and every 200 ms: programs attach when a
    /// pod's interface appears and detach when it goes. hostNetwork pods are skipped.
    #[arg(long)]
    find_interfaces: bool,
    /// Network namespace holding the workloads' host-side interfaces (default: this one).
    #[arg(long)]
    netns: Option<String>,
    /// bpffs directory of the pinned programs and maps.
    #[arg(long, default_value = config::DEFAULT_PIN_DIR)]
    pin_dir: PathBuf,
    #[arg(long, value_enum, default_value_t = DatapathArg::Ebpf)]
    datapath: DatapathArg,
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
    host_ip: Vec<IpAddr>,
    /// Host mode: a label of the host, k=v (repeatable). Sent to the manager but not used by it:
    /// a host's labels are those of the `Host` an admin declared for this node (a node does not
    /// label itself). Kept so existing unit files still start.
    #[arg(long, value_parser = config::parse_label)]
    host_label: Vec<(String, String)>,
    /// How often flow events are collected and shipped.
    #[arg(long, default_value_t = 250)]
    flow_interval_ms: u64,
    /// FQDN policy: seconds a learned DNS answer's addresses stay allowed at least, whatever
    /// their TTL (longer while connections to them are tracked).
    #[arg(long, default_value_t = 60)]
    dns_min_ttl: u64,
    /// Log lines as text or as JSON objects.
    #[arg(long, value_enum, default_value_t = LogFormatArg::Text)]
    log_format: LogFormatArg,
    /// Log level or filter (e.g. debug, or cellwall_agent=debug,info); default: RUST_LOG, else
    /// info.
    #[arg(long)]
    log_level: Option<String>,
}

impl Args {
    fn config(self) -> Config {
        let node = match &self.cluster {
            Some(c) => cellwall_policy::clusters::qualified(c, &self.node),
            None => self.node.clone(),
        };
        let cluster = self.cluster.clone();
        let host = self.host_workload.map(|workload| HostMode {
            // A host a watched cluster declares is that cluster's (`CLUSTER:NS/NAME`).
            workload: match &cluster {
                Some(c) if !workload.contains(cellwall_policy::clusters::SEPARATOR) => {
                    cellwall_policy::clusters::qualified(c, &workload)
                }
                _ => workload,
            },
            interface: self.host_interface.expect("required by clap"),
            ips: self.host_ip,
            labels: self.host_label,
        });
        Config {
            bootstrap_token_file: self.bootstrap_token_file,
            endpoints: self.endpoints,
            find_interfaces: self.find_interfaces,
            netns: self.netns,
            pin_dir: self.pin_dir,
            datapath: match self.datapath {
                DatapathArg::Ebpf => DatapathKind::Ebpf,
                DatapathArg::None => DatapathKind::None,
            },
            visibility: self.visibility == "on",
            metrics_listen: self.metrics_listen,
            host,
            flow_interval: Duration::from_millis(self.flow_interval_ms),
            dns_min_ttl: Duration::from_secs(self.dns_min_ttl),
            ..Config::new(self.manager, self.ca, node, self.state_dir)
        }
    }
}

fn parse_cluster(s: &str) -> Result<String, String> {
    if cellwall_policy::clusters::valid_cluster_name(s) {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: expected the manager's name for this cluster: 1-63 characters of a-z, \
             0-9 and '-'"
        ))
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    let format = match a.log_format {
        LogFormatArg::Text => LogFormat::Text,
        LogFormatArg::Json => LogFormat::Json,
    };
    logging::init(format, a.log_level.as_deref())?;
    if !a.host_label.is_empty() {
        tracing::warn!(
            "--host-label is ignored by the manager: declare the host's labels in a Host \
             manifest (cellwall.io/v1alpha1) for this node"
        );
    }
    let cfg = a.config();
    let datapath = cfg.open_datapath().context("opening the datapath")?;
    cellwall_agent::run(cfg, datapath).map_err(|e| anyhow::anyhow!(cellwall_agent::chain(&e)))
}

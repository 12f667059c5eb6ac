//! `cellwall-manager`: the control plane process.

use anyhow::{Context, Result};
use clap::Parser;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Cellwall's manager: stores policy and inventory, serves the REST API (bearer tokens) and
/// pushes each node's desired state to its agent over mTLS gRPC.
///
/// On first start it creates, in the data directory: a CA (ca.pem, ca.key), an admin token
/// (admin.token), a read-only token (read.token), a bootstrap token for agents
/// (bootstrap.token), all private files 0600, and client.json (server address, admin token and,
/// for an HTTPS API, the CA file) for the `cellwall` CLI:
/// `export CELLWALL_CONFIG=DATA_DIR/client.json`.
///
/// The REST API is served over TLS (the gRPC listener's certificate, issued by the manager's
/// CA) whenever it listens beyond loopback; on loopback it is plain HTTP unless --api-tls.
///
/// Certificates expire (see --node-cert-ttl); the CA is rotated with `cellwall-manager ca`.
#[derive(Parser, Debug)]
#[command(name = "cellwall-manager", version)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where the CA, tokens, client config and (by default) the database live (default:
    /// CELLWALL_DATA_DIR, else /var/lib/cellwall as root, else ~/.local/share/cellwall).
    #[arg(long, global = true, default_value_os_t = default_data_dir())]
    data_dir: PathBuf,
    /// SQLite database file (default: DATA_DIR/cellwall.db).
    #[arg(long, global = true)]
    db: Option<PathBuf>,
    /// REST API address (port 0 picks a free port; see DATA_DIR/endpoints.json). Beyond
    /// loopback the API is served over TLS (clients verify it with DATA_DIR/ca.pem; add the
    /// names they use with --san).
    #[arg(long, default_value = "127.0.0.1:7480")]
    api_listen: SocketAddr,
    /// Serve the REST API over TLS on loopback too.
    #[arg(long, conflicts_with = "api_insecure_http")]
    api_tls: bool,
    /// Serve the REST API over plain HTTP even beyond loopback: bearer tokens then cross the
    /// network in clear text (only behind something that encrypts, e.g. a TLS proxy).
    #[arg(long)]
    api_insecure_http: bool,
    /// gRPC (agents, mTLS) address.
    #[arg(long, default_value = "127.0.0.1:7443")]
    grpc_listen: SocketAddr,
    /// Extra DNS names or addresses agents and the CLI reach the manager by (server
    /// certificate, gRPC and HTTPS API).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// POST every alert (JSON) to this URL (repeatable; http:// only).
    #[arg(long = "webhook")]
    webhooks: Vec<String>,
    /// How long flow records and history are kept (e.g. 7d, 24h).
    #[arg(long, default_value = "7d", value_parser = parse_retention)]
    flow_retention: u64,
    /// How long the first start's bootstrap token (DATA_DIR/bootstrap.token) lets new nodes join
    /// (e.g. 24h, 7d); `cellwall tokens create` makes node-bound ones later.
    #[arg(long, default_value = "24h", value_parser = parse_retention)]
    bootstrap_token_ttl: u64,
    /// Joins one source address may make at once (then one a second): raise it when many nodes
    /// join through one address (a NAT, a benchmark).
    #[arg(long, default_value_t = 20)]
    join_burst: u32,
    /// The largest REST request body in bytes (default 32 MiB); `cellwall apply` sends larger
    /// manifest sets in parts.
    #[arg(long, default_value_t = 32 << 20)]
    api_body_limit: usize,
    /// A directory `cellwall import --location` may read files from (repeatable; none: no
    /// file locations).
    #[arg(long)]
    import_dir: Vec<PathBuf>,
    /// A URL prefix `cellwall import --location` may read from (repeatable), e.g.
    /// http://cmdb.example/export/.
    #[arg(long)]
    import_url: Vec<String>,
    /// The largest import read from a location, in bytes.
    #[arg(long, default_value_t = cellwall_manager::config::DEFAULT_IMPORT_MAX_BYTES)]
    import_max_bytes: u64,
    /// How long node certificates are valid (e.g. 90d, 30d, 12h). Agents renew theirs at two
    /// thirds of that, without a restart; a node offline past its expiry must join again.
    #[arg(long, default_value = "90d", value_parser = parse_lifetime)]
    node_cert_ttl: std::time::Duration,
    /// How long the manager's server certificate is valid; it is issued afresh at every start,
    /// so restart the manager within this time.
    #[arg(long, default_value = "365d", value_parser = parse_lifetime)]
    server_cert_ttl: std::time::Duration,
    /// How long a CA is valid: the one created at the first start, or by `ca rotate`.
    #[arg(long, global = true, default_value = "3650d", value_parser = parse_lifetime)]
    ca_ttl: std::time::Duration,
    /// Watch this Kubernetes cluster (a kubeconfig; in a pod, the ServiceAccount's): its
    /// namespaces, nodes, pods, NetworkPolicies, ClusterNetworkPolicies, AdminNetworkPolicies
    /// and Cellwall's own kinds where served. They are read-only through the REST API.
    #[arg(long, value_name = "FILE")]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to watch (default: its current context). Repeat it to watch
    /// several clusters from one manager: each is then named (NAME=CONTEXT, or the context's
    /// own name when it is a DNS label), its namespaces, nodes and cluster-wide policies are
    /// shown as NAME:..., its objects carry the label cellwall.io/cluster=NAME, and its
    /// policies select only its own pods and nodes. Giving NAME= for a single context names
    /// it too.
    #[arg(long, value_name = "[NAME=]CONTEXT", requires = "kubeconfig")]
    kube_context: Vec<String>,
    /// Let agents join with their pod's ServiceAccount token instead of a bootstrap token:
    /// the manager asks that cluster's API server (TokenReview) and issues a node certificate
    /// only for a valid token of this ServiceAccount whose pod runs on the node the agent
    /// names. Give the agents a projected token with --join-audience.
    #[arg(long, value_name = "NAMESPACE/NAME", requires = "kubeconfig", value_parser = parse_service_account)]
    join_service_account: Option<String>,
    /// The audience of the agents' projected tokens (not the API server's own, so a token
    /// sent to the manager is worthless to the API server).
    #[arg(
        long,
        value_name = "AUDIENCE",
        default_value = "cellwall",
        requires = "join_service_account"
    )]
    join_audience: String,
    /// Log format: text (for people) or json (one object per line, for collectors).
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
    /// Log level or filter (e.g. info, debug, cellwall_manager=debug) [env: RUST_LOG].
    #[arg(long)]
    log_level: Option<String>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Rotate the CA with overlap, in steps, restarting the manager after each:
    /// `ca rotate` (a new CA, trusted beside the old), `ca activate` (it signs; agents renew),
    /// `ca retire` (the old one is trusted no more). Each step waits for every node to be
    /// ready for it (`ca status` says which are not), unless --force.
    Ca {
        #[command(subcommand)]
        step: CaStep,
    },
}

#[derive(clap::Subcommand, Debug, Clone, Copy)]
enum CaStep {
    /// Where a rotation stands, and which nodes it waits for.
    Status,
    /// Step 1: create a new CA and trust it beside the signing one.
    Rotate,
    /// Step 2: the new CA signs (refused until every node fetched the new trust bundle).
    Activate {
        /// Go ahead although some nodes are not ready (they will have to join again).
        #[arg(long)]
        force: bool,
    },
    /// Step 3: trust the new CA only and delete the old key (refused until every node holds a
    /// certificate of the new CA).
    Retire {
        /// Go ahead although some nodes are not ready (they will have to join again).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Logs to stderr through `tracing`: `--log-level`, else RUST_LOG, else info.
fn init_logs(format: LogFormat, level: Option<&str>) -> Result<()> {
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::try_new(l).with_context(|| format!("--log-level {l:?}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    match format {
        LogFormat::Text => b.init(),
        LogFormat::Json => b.json().init(),
    }
    Ok(())
}

fn parse_retention(s: &str) -> Result<u64, String> {
    cellwall_manager::parse_duration_ms(s)
        .filter(|ms| *ms > 0)
        .ok_or_else(|| format!("{s:?}: expected a duration like 7d, 24h, 90m"))
}

/// A certificate lifetime: at least a minute (shorter ones would be renewed constantly).
fn parse_lifetime(s: &str) -> Result<std::time::Duration, String> {
    cellwall_manager::parse_duration_ms(s)
        .filter(|ms| *ms >= 60_000)
        .map(std::time::Duration::from_millis)
        .ok_or_else(|| format!("{s:?}: expected a duration of at least a minute, like 90d, 12h"))
}

fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CELLWALL_DATA_DIR") {
        return d.into();
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if root {
        "/var/lib/cellwall".into()
    } else {
        let home = std::env::var_os("HOME").unwrap_or_else(|| ".".into());
        PathBuf::from(home).join(".local/share/cellwall")
    }
}

fn main() -> Result<()> {
    let a = Args::parse();
    init_logs(a.log_format, a.log_level.as_deref())?;
    if let Some(Command::Ca { step }) = a.command {
        use cellwall_manager::rotation::{run, Step};
        let (step, force) = match step {
            CaStep::Status => (Step::Status, false),
            CaStep::Rotate => (Step::Rotate, false),
            CaStep::Activate { force } => (Step::Activate, force),
            CaStep::Retire { force } => (Step::Retire, force),
        };
        let cfg = cellwall_manager::Config {
            db: a.db,
            lifetimes: cellwall_manager::config::CertLifetimes {
                ca: a.ca_ttl,
                ..Default::default()
            },
            ..cellwall_manager::Config::local(&a.data_dir)
        };
        let out = run(&cfg, step, force).context("cellwall-manager ca")?;
        print!("{out}");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let cfg = cellwall_manager::Config {
            data_dir: a.data_dir.clone(),
            db: a.db,
            api_listen: a.api_listen,
            api_tls: a.api_tls,
            api_insecure_http: a.api_insecure_http,
            grpc_listen: a.grpc_listen,
            sans: a.sans,
            retention_ms: a.flow_retention,
            webhooks: a.webhooks,
            bootstrap_ttl_ms: a.bootstrap_token_ttl,
            limits: cellwall_manager::config::Limits {
                join_burst: a.join_burst,
                api_body_bytes: a.api_body_limit,
                ..Default::default()
            },
            imports: cellwall_manager::imports::ImportSources {
                dirs: a.import_dir,
                url_prefixes: a.import_url,
                max_bytes: a.import_max_bytes,
            },
            lifetimes: cellwall_manager::config::CertLifetimes {
                node: a.node_cert_ttl,
                server: a.server_cert_ttl,
                ca: a.ca_ttl,
            },
            kube: a
                .kubeconfig
                .map(|k| kube_sources(&k, &a.kube_context))
                .unwrap_or_default(),
            join_review: a.join_service_account.map(|service_account| {
                cellwall_manager::config::JoinReview {
                    service_account,
                    audience: a.join_audience,
                }
            }),
        };
        let mut running = cellwall_manager::start(cfg)
            .await
            .context("starting the manager")?;
        if running.first_start.created {
            tracing::info!(
                "first start: created a CA and tokens in {} (admin.token, read.token, bootstrap.token)",
                a.data_dir.display()
            );
        }
        tracing::info!(
            "cellwall-manager: API {} gRPC (mTLS) {} revision {}; CLI config: {}",
            running.api_url,
            running.grpc,
            running.manager.published().revision,
            a.data_dir.join("client.json").display()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            r = running.wait() => r.context("server failed")?,
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("cellwall-manager: interrupted, stopping");
                running.stop().await?;
            }
            _ = term.recv() => {
                tracing::info!("cellwall-manager: terminated, stopping");
                running.stop().await?;
            }
        }
        Ok(())
    })
}

/// The clusters `--kube-context` names (see its help); the manager checks the names.
fn kube_sources(
    kubeconfig: &std::path::Path,
    contexts: &[String],
) -> Vec<cellwall_manager::config::KubeSource> {
    let source =
        |context: Option<String>, cluster: Option<String>| cellwall_manager::config::KubeSource {
            kubeconfig: kubeconfig.to_path_buf(),
            context,
            cluster,
        };
    if contexts.is_empty() {
        return vec![source(None, None)];
    }
    cellwall_policy::clusters::named_contexts(contexts)
        .into_iter()
        .map(|(name, ctx)| source(Some(ctx), name))
        .collect()
}

/// `NAMESPACE/NAME`, each a DNS label or subdomain as Kubernetes names them.
fn parse_service_account(s: &str) -> Result<String, String> {
    let ok = |p: &str| {
        !p.is_empty()
            && p.len() <= 253
            && p.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    };
    match s.split_once('/') {
        Some((ns, name)) if ok(ns) && ok(name) => Ok(s.to_string()),
        _ => Err(format!(
            "{s:?}: expected NAMESPACE/NAME of a ServiceAccount, like cellwall-system/cellwall-agent"
        )),
    }
}

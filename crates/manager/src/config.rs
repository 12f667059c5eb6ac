//! How the manager runs, and the small parsers its flags and queries share.

use crate::store::StoreConfig;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The first start's bootstrap token lasts a day: long enough to bring up the first nodes,
/// short enough that a copy found later is worthless (`cellwall tokens create` makes more).
pub const DEFAULT_BOOTSTRAP_TTL_MS: u64 = 86_400_000;

/// The largest label import the manager reads from a location.
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 16 << 20;

/// How the manager runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// CA, tokens, client config; the database too unless `db` says otherwise.
    pub data_dir: PathBuf,
    /// SQLite file (default DATA_DIR/cellwall.db).
    pub db: Option<PathBuf>,
    pub api_listen: SocketAddr,
    /// REST over TLS even on loopback (beyond loopback it is the default; see
    /// [`Config::api_transport`]).
    pub api_tls: bool,
    /// Plain HTTP beyond loopback, as the operator's explicit choice (bearer tokens then cross
    /// the network in clear text, e.g. behind a TLS-terminating proxy on the same host).
    pub api_insecure_http: bool,
    pub grpc_listen: SocketAddr,
    /// Extra names/addresses agents and the CLI use to reach the manager (server certificate
    /// SANs).
    pub sans: Vec<String>,
    /// Flows and history older than this are deleted (hourly).
    pub retention_ms: u64,
    /// Alerts are POSTed (JSON) to each of these.
    pub webhooks: Vec<String>,
    /// How long the first start's bootstrap token (bootstrap.token) is valid.
    pub bootstrap_ttl_ms: u64,
    /// What outside parties may send.
    pub limits: Limits,
    /// Where label imports may be read from (nothing unless configured).
    pub imports: ImportSources,
    /// How long the certificates the manager issues are valid.
    pub lifetimes: CertLifetimes,
    /// The Kubernetes clusters whose objects the manager watches (none: files and REST only).
    /// Several must each have a `cluster` name (crate::cluster).
    pub kube: Vec<KubeSource>,
    /// Agents may join with their pod's ServiceAccount token, checked with a TokenReview
    /// against their cluster's API server (none: bootstrap tokens only).
    pub join_review: Option<JoinReview>,
}

/// Which ServiceAccount tokens join nodes (crate::join_review).
#[derive(Debug, Clone)]
pub struct JoinReview {
    /// `NAMESPACE/NAME` of the agents' ServiceAccount.
    pub service_account: String,
    /// The audience the agents' projected tokens are minted for (never the API server's own,
    /// so a token sent to the manager cannot be replayed against the API server).
    pub audience: String,
}

/// Where the manager reads a Kubernetes cluster from (crate::cluster watches it).
#[derive(Debug, Clone)]
pub struct KubeSource {
    pub kubeconfig: PathBuf,
    /// The kubeconfig's current context when none.
    pub context: Option<String>,
    /// The cluster's name when the manager watches several: its objects' names are qualified
    /// with it (`cellwall_policy::clusters`). None: names as the cluster has them.
    pub cluster: Option<String>,
}

/// What the manager checks reviewed tokens against.
pub struct JoinReviewer {
    /// Each watched cluster's client, by its name (none: the one unnamed cluster).
    pub clients: Vec<(Option<String>, cellwall_kube::KubeClient)>,
    /// `system:serviceaccount:NAMESPACE:NAME`.
    pub username: String,
    pub audience: String,
}

impl JoinReviewer {
    pub fn new(
        clients: Vec<(Option<String>, cellwall_kube::KubeClient)>,
        cfg: &JoinReview,
    ) -> Self {
        let (ns, name) = cfg
            .service_account
            .split_once('/')
            .unwrap_or(("default", cfg.service_account.as_str()));
        JoinReviewer {
            clients,
            username: format!("system:serviceaccount:{ns}:{name}"),
            audience: cfg.audience.clone(),
        }
    }

    /// The API server that must vouch for an agent joining as `node`, and the node name the
    /// token must record there: `CLUSTER:NODE` is reviewed by that cluster only, so a token
    /// from one cluster cannot join a node of another.
    pub fn for_node<'a>(&self, node: &'a str) -> Option<(&cellwall_kube::KubeClient, &'a str)> {
        let (cluster, bare) = match cellwall_policy::clusters::split(node) {
            Some((c, n)) => (Some(c), n),
            None => (None, node),
        };
        self.clients
            .iter()
            .find(|(c, _)| c.as_deref() == cluster)
            .map(|(_, client)| (client, bare))
    }
}

/// Certificate lifetimes. Nodes renew theirs at two thirds of its life without a restart; the
/// server's is issued at every start; the CA's once, at the first.
#[derive(Debug, Clone, Copy)]
pub struct CertLifetimes {
    pub node: Duration,
    pub server: Duration,
    pub ca: Duration,
}

impl Default for CertLifetimes {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Self {
            node: Duration::from_secs(90 * DAY),
            server: Duration::from_secs(365 * DAY),
            ca: Duration::from_secs(10 * 365 * DAY),
        }
    }
}

/// How the REST API is served (see [`Config::api_transport`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiTransport {
    /// Plain HTTP on loopback.
    Http,
    /// TLS with the manager's server certificate (issued by its CA).
    Https,
    /// Plain HTTP beyond loopback: the operator's explicit, logged choice.
    InsecureHttp,
}

/// Where the manager may read label imports from, as its operator allows: files under these
/// directories, URLs under these prefixes, at most this many bytes. Nothing is allowed unless
/// configured.
#[derive(Debug, Clone, Default)]
pub struct ImportSources {
    pub dirs: Vec<std::path::PathBuf>,
    pub url_prefixes: Vec<String>,
    pub max_bytes: u64,
}

/// Bounds on what outside parties may send, each refused past its limit and counted.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Joins per source address: a burst, then a rate. A rack rebooting behind one NAT joins
    /// within the burst; a flood of guesses does not get far.
    pub join_burst: u32,
    pub join_per_second: f64,
    /// Flow records per node: a burst (a queue flushed after an outage), then a rate far above
    /// what a node's datapath reports (~10,000 connections/s aggregate to a few thousand records).
    pub flow_burst: u32,
    pub flows_per_second: f64,
    /// Workloads one node may report.
    pub reports_per_node: usize,
    /// The largest REST request body (`cellwall apply` sends larger sets in parts).
    pub api_body_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            join_burst: 20,
            join_per_second: 1.0,
            flow_burst: 1_000_000,
            flows_per_second: 200_000.0,
            reports_per_node: 5_000,
            api_body_bytes: 32 << 20,
        }
    }
}

impl Config {
    /// A manager on free loopback ports keeping everything in `data_dir` (tests, labs).
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            db: None,
            api_listen: "127.0.0.1:0".parse().expect("address"),
            api_tls: false,
            api_insecure_http: false,
            grpc_listen: "127.0.0.1:0".parse().expect("address"),
            sans: Vec::new(),
            retention_ms: 7 * 86_400_000,
            webhooks: Vec::new(),
            bootstrap_ttl_ms: DEFAULT_BOOTSTRAP_TTL_MS,
            limits: Limits::default(),
            imports: ImportSources {
                max_bytes: DEFAULT_IMPORT_MAX_BYTES,
                ..Default::default()
            },
            lifetimes: CertLifetimes::default(),
            kube: Vec::new(),
            join_review: None,
        }
    }

    /// How the REST API is served: bearer tokens never cross a network in clear text unless
    /// the operator says so. Loopback stays plain HTTP (nothing leaves the host; the lab, the
    /// tests and the demo use it) unless `api_tls`; any other address, the unspecified ones
    /// included, gets TLS unless `api_insecure_http`. `api_tls` wins over `api_insecure_http`.
    pub fn api_transport(&self) -> ApiTransport {
        let ip = self.api_listen.ip().to_canonical();
        if self.api_tls || !(ip.is_loopback() || self.api_insecure_http) {
            ApiTransport::Https
        } else if ip.is_loopback() {
            ApiTransport::Http
        } else {
            ApiTransport::InsecureHttp
        }
    }

    /// The store this configuration names.
    pub fn store(&self) -> StoreConfig {
        StoreConfig::Sqlite(
            self.db
                .clone()
                .unwrap_or_else(|| self.data_dir.join("cellwall.db")),
        )
    }
}

/// `10m`, `1h`, `30s`, `2d`, `500ms` → milliseconds.
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().ok()?;
    let mult = match unit {
        "ms" => 1,
        "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_beyond_loopback_unless_explicitly_refused() {
        let at = |addr: &str, tls: bool, insecure: bool| {
            let mut c = Config::local("/nonexistent");
            c.api_listen = addr.parse().unwrap();
            c.api_tls = tls;
            c.api_insecure_http = insecure;
            c.api_transport()
        };
        use ApiTransport::*;
        for lo in [
            "127.0.0.1:7480",
            "127.9.9.9:1",
            "[::1]:7480",
            "[::ffff:127.0.0.1]:7480",
        ] {
            assert_eq!(at(lo, false, false), Http, "{lo}");
            assert_eq!(at(lo, true, false), Https, "{lo}");
            assert_eq!(
                at(lo, false, true),
                Http,
                "{lo}: nothing insecure on loopback"
            );
        }
        for wide in [
            "10.0.0.5:7480",
            "0.0.0.0:7480",
            "[::]:7480",
            "[2001:db8::1]:7480",
        ] {
            assert_eq!(at(wide, false, false), Https, "{wide}");
            assert_eq!(at(wide, false, true), InsecureHttp, "{wide}");
            assert_eq!(at(wide, true, true), Https, "{wide}: --api-tls wins");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("10m"), Some(600_000));
        assert_eq!(parse_duration_ms("500ms"), Some(500));
        assert_eq!(parse_duration_ms("2d"), Some(172_800_000));
        for bad in ["", "10", "m", "1w", "-1s", "99999999999999999999d"] {
            assert_eq!(parse_duration_ms(bad), None, "{bad}");
        }
    }
}

//! A blocking client of the manager's REST API, and where to find a manager: the CLI, the lab
//! and the tests all talk to the manager through this one client.
//!
//! Which manager, first match wins (see [`Target::resolve`]): explicit server and token;
//! `CELLWALL_SERVER`/`CELLWALL_TOKEN`; a config file (`CELLWALL_CONFIG`); a lab's manager by
//! name; the manager's default `client.json`; the only lab that is up.
//!
//! An `https://` manager is verified against one CA, its `ca.pem`, first match wins: explicit
//! (`cellwall --ca`); `CELLWALL_CA`; the `ca` the config file names. Without one, nothing is
//! sent. A token sent to an `http://` manager beyond loopback crosses the network in clear
//! text: [`Client::sends_token_in_clear`] tells the caller, who warns.

mod tls;

use crate::*;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a call did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager answered with an error body.
    #[error("the manager refused ({status} {reason}): {message}")]
    Refused {
        status: u16,
        reason: String,
        message: String,
    },
    #[error("cannot reach the manager at {server}: {detail} (is it running? see --server, CELLWALL_CONFIG or --lab)")]
    Unreachable { server: String, detail: String },
    #[error("{server} is served over HTTPS, but no CA is configured to verify it: pass --ca FILE or set CELLWALL_CA to the manager's ca.pem (its client.json names it)")]
    NoCa { server: String },
    #[error("the manager at {server} failed verification: its certificate does not verify against the CA in {ca}: {detail} (point --ca or CELLWALL_CA at that manager's ca.pem; a name or address its certificate lacks is added with cellwall-manager --san)")]
    Untrusted {
        server: String,
        ca: String,
        detail: String,
    },
    #[error("TLS with {server} failed: {detail} (does it serve HTTPS? a manager on loopback serves http:// unless started with --api-tls)")]
    Tls { server: String, detail: String },
    #[error("the manager sent a malformed answer to {path}: {detail}")]
    Malformed { path: String, detail: String },
    #[error("no manager configured: pass --server and --token, set CELLWALL_CONFIG to a manager's client.json, or use --lab NAME")]
    NoTarget,
    #[error("{path}: {detail}")]
    Config { path: String, detail: String },
    #[error("{0}")]
    Wait(String),
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Where the manager is and how to authenticate; unset fields fall back (see module docs).
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub server: Option<String>,
    pub token: Option<String>,
    pub config: Option<PathBuf>,
    pub lab: Option<String>,
    /// The CA file verifying an `https://` manager.
    pub ca: Option<PathBuf>,
}

/// A client config file, as the manager writes it (`client.json`).
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct ClientConfig {
    pub server: String,
    pub token: String,
    /// The CA (PEM) an `https://` server is verified against; absent for plain HTTP (and in
    /// files written before the API had TLS). Relative to the file's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
}

impl ClientConfig {
    pub fn read(p: &Path) -> Result<Self> {
        let cfg = |detail: String| ClientError::Config {
            path: p.display().to_string(),
            detail,
        };
        let text = std::fs::read_to_string(p).map_err(|e| cfg(format!("cannot read: {e}")))?;
        let mut c: Self = serde_json::from_str(&text).map_err(|e| {
            cfg(format!(
                "expected {{\"server\": ..., \"token\": ..., \"ca\": ... (optional)}}: {e}"
            ))
        })?;
        if let (Some(ca), Some(dir)) = (&mut c.ca, p.parent()) {
            *ca = dir.join(&*ca);
        }
        Ok(c)
    }
}

/// Where labs keep their state (`CELLWALL_LAB_DIR`, default `/run/cellwall/labs`).
pub fn labs_root() -> PathBuf {
    PathBuf::from(std::env::var("CELLWALL_LAB_DIR").unwrap_or_else(|_| "/run/cellwall/labs".into()))
}

/// The directory of lab `name`.
pub fn lab_dir(name: &str) -> PathBuf {
    labs_root().join(name)
}

/// The client config a lab's manager writes (what `--lab NAME` reads).
pub fn lab_client_config(name: &str) -> PathBuf {
    lab_dir(name).join("manager").join("client.json")
}

/// The client config of the only lab that is up, if exactly one is.
pub fn only_lab_config() -> Option<PathBuf> {
    let found: Vec<PathBuf> = std::fs::read_dir(labs_root())
        .ok()?
        .flatten()
        .map(|e| e.path().join("manager").join("client.json"))
        .filter(|p| p.exists())
        .collect();
    match &found[..] {
        [one] => Some(one.clone()),
        _ => None,
    }
}

/// The manager's own `client.json` on this host, else the only lab's.
pub fn default_config() -> Option<PathBuf> {
    let mut c = vec![PathBuf::from("/var/lib/cellwall/client.json")];
    if let Some(h) = std::env::var_os("HOME") {
        c.push(PathBuf::from(h).join(".local/share/cellwall/client.json"));
    }
    c.into_iter().find(|p| p.exists()).or_else(only_lab_config)
}

impl Target {
    /// Server, token and CA, first match wins (see module docs).
    pub fn resolve(&self) -> Result<ClientConfig> {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let mut server = self.server.clone().or_else(|| env("CELLWALL_SERVER"));
        let mut token = self.token.clone().or_else(|| env("CELLWALL_TOKEN"));
        let mut ca = self
            .ca
            .clone()
            .or_else(|| env("CELLWALL_CA").map(PathBuf::from));
        if server.is_none() || token.is_none() {
            let file = self
                .config
                .clone()
                .or_else(|| env("CELLWALL_CONFIG").map(PathBuf::from))
                .or_else(|| self.lab.as_deref().map(lab_client_config))
                .or_else(default_config)
                .ok_or(ClientError::NoTarget)?;
            let c = ClientConfig::read(&file)?;
            server.get_or_insert(c.server);
            token.get_or_insert(c.token);
            ca = ca.or(c.ca);
        }
        Ok(ClientConfig {
            server: server.expect("set above"),
            token: token.expect("set above"),
            ca,
        })
    }
}

pub struct Client {
    pub server: String,
    token: String,
    agent: ureq::Agent,
    /// The CA an `https://` server is verified against (None: plain HTTP only).
    ca: Option<PathBuf>,
}

impl Client {
    /// A client of a plain `http://` manager (an `https://` one needs a CA:
    /// [`Client::with_config`]; without, every call fails with [`ClientError::NoCa`]).
    pub fn new(server: &str, token: &str) -> Self {
        Self {
            server: server.trim_end_matches('/').to_string(),
            token: token.to_string(),
            agent: Self::agent().build(),
            ca: None,
        }
    }

    /// A client of `c.server`: an `https://` one verified against `c.ca` (required), an
    /// `http://` one as [`Client::new`].
    pub fn with_config(c: &ClientConfig) -> Result<Self> {
        let mut client = Self::new(&c.server, &c.token);
        if client.is_https() {
            let ca = c.ca.clone().ok_or_else(|| ClientError::NoCa {
                server: client.server.clone(),
            })?;
            let tls = tls::Connector::new(&ca)?;
            client.agent = Self::agent().tls_connector(Arc::new(tls)).build();
            client.ca = Some(ca);
        }
        Ok(client)
    }

    fn agent() -> ureq::AgentBuilder {
        ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(60))
    }

    fn is_https(&self) -> bool {
        self.server
            .get(..8)
            .is_some_and(|s| s.eq_ignore_ascii_case("https://"))
    }

    /// True when calls carry the token in clear text beyond this host: an `http://` server
    /// that is not loopback (`localhost`, 127.0.0.0/8, ::1). Right only when the manager's
    /// operator chose `--api-insecure-http` behind something that encrypts.
    pub fn sends_token_in_clear(&self) -> bool {
        !self.is_https() && !is_loopback_url(&self.server)
    }

    pub fn from_target(t: &Target) -> Result<Self> {
        Self::with_config(&t.resolve()?)
    }

    /// The client of lab `name`'s manager.
    pub fn for_lab(name: &str) -> Result<Self> {
        Self::from_target(&Target {
            config: Some(lab_client_config(name)),
            ..Default::default()
        })
    }

    fn refused(&self, code: u16, resp: ureq::Response) -> ClientError {
        let reason = resp.status_text().to_string();
        match resp.into_json::<ErrorBody>() {
            Ok(b) => ClientError::Refused {
                status: code,
                reason: b.error.reason,
                message: b.error.message,
            },
            Err(_) => ClientError::Refused {
                status: code,
                reason,
                message: "(no message)".into(),
            },
        }
    }

    fn send(&self, req: ureq::Request, body: Option<serde_json::Value>) -> Result<ureq::Response> {
        if self.is_https() && self.ca.is_none() {
            return Err(ClientError::NoCa {
                server: self.server.clone(),
            });
        }
        let req = req.set("Authorization", &format!("Bearer {}", self.token));
        let r = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        match r {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(code, resp)) => Err(self.refused(code, resp)),
            Err(e) => Err(self.failed(e)),
        }
    }

    /// A call that got no HTTP answer: a certificate that does not verify, another TLS
    /// failure, or no connection at all.
    fn failed(&self, e: ureq::Error) -> ClientError {
        let server = self.server.clone();
        match tls::tls_error(&e) {
            Some(t @ rustls::Error::InvalidCertificate(_)) => ClientError::Untrusted {
                server,
                ca: self
                    .ca
                    .as_deref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                detail: t.to_string(),
            },
            Some(t) => ClientError::Tls {
                server,
                detail: t.to_string(),
            },
            None => ClientError::Unreachable {
                server,
                detail: e.to_string(),
            },
        }
    }

    fn decode<T: DeserializeOwned>(path: &str, resp: ureq::Response) -> Result<T> {
        resp.into_json().map_err(|e| ClientError::Malformed {
            path: path.to_string(),
            detail: e.to_string(),
        })
    }

    /// `GET path?query` decoded as `T`. `query` is any serializable struct of optional fields.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str, query: &impl Serialize) -> Result<T> {
        let mut r = self.agent.get(&format!("{}{path}", self.server));
        for (k, v) in query_pairs(query) {
            r = r.query(&k, &v);
        }
        Self::decode(path, self.send(r, None)?)
    }

    /// `POST path` with a JSON body, decoded as `T`.
    pub fn post_json<T: DeserializeOwned>(&self, path: &str, body: &impl Serialize) -> Result<T> {
        let b = serde_json::to_value(body).expect("request types serialize");
        let r = self.agent.post(&format!("{}{path}", self.server));
        Self::decode(path, self.send(r, Some(b))?)
    }

    /// `POST path` and the answer as a stream (NDJSON answers, read as they come).
    pub fn post_stream(
        &self,
        path: &str,
        body: &impl Serialize,
    ) -> Result<Box<dyn std::io::Read + Send>> {
        let b = serde_json::to_value(body).expect("request types serialize");
        let r = self.agent.post(&format!("{}{path}", self.server));
        Ok(Box::new(self.send(r, Some(b))?.into_reader()))
    }

    /// Applies (or deletes) every object of the documents, all or nothing.
    pub fn apply(&self, req: &ApplyRequest, delete: bool) -> Result<Committed> {
        self.post_json(if delete { "/v1/delete" } else { "/v1/apply" }, req)
    }

    /// Like [`Client::apply`], but a request larger than the manager's body limit (413) is sent
    /// again in parts: halves of the documents, halved again as needed. Each part is applied
    /// all or nothing; parts applied before a failing one stay applied (the error says which
    /// files were not). Returns one commit per part, in order.
    pub fn apply_in_parts(&self, req: &ApplyRequest, delete: bool) -> Result<Vec<Committed>> {
        // A large request is split before it is sent when the manager says its limit: a body
        // refused mid-upload can end in a broken pipe rather than a readable 413.
        let limit = if encoded_len(req) > 1 << 20 {
            self.body_limit()
        } else {
            None
        };
        self.apply_parts(req, delete, limit)
    }

    /// The manager's request body limit, as its responses say (none from older managers).
    pub fn body_limit(&self) -> Option<usize> {
        let r = self.agent.get(&format!("{}/healthz", self.server));
        let resp = self.send(r, None).ok()?;
        resp.header(crate::BODY_LIMIT_HEADER)?.parse().ok()
    }

    fn apply_parts(
        &self,
        req: &ApplyRequest,
        delete: bool,
        limit: Option<usize>,
    ) -> Result<Vec<Committed>> {
        let over = limit.filter(|l| encoded_len(req) > *l);
        let r = match over {
            Some(l) => Err(ClientError::Refused {
                status: 413,
                reason: "Payload Too Large".into(),
                message: format!("the request is larger than the manager's limit of {l} bytes"),
            }),
            None => self.apply(req, delete),
        };
        match r {
            Ok(c) => Ok(vec![c]),
            Err(ClientError::Refused { status: 413, .. }) if req.documents.len() > 1 => {
                let mid = req.documents.len() / 2;
                let mut out = Vec::new();
                for part in [&req.documents[..mid], &req.documents[mid..]] {
                    let sub = ApplyRequest {
                        documents: part.to_vec(),
                        ignore_unknown_kinds: req.ignore_unknown_kinds,
                    };
                    match self.apply_parts(&sub, delete, limit) {
                        Ok(c) => out.extend(c),
                        Err(e) => {
                            let files: Vec<&str> = part.iter().map(|d| d.file.as_str()).collect();
                            return Err(ClientError::Wait(format!(
                                "{e}\n{} part(s) applied before this; not applied: {}",
                                out.len(),
                                files.join(", ")
                            )));
                        }
                    }
                }
                Ok(out)
            }
            Err(ClientError::Refused {
                status: 413,
                message,
                ..
            }) => Err(ClientError::Refused {
                status: 413,
                reason: "Payload Too Large".into(),
                message: format!(
                    "{} alone is larger than the manager's request limit ({message}); raise \
                     cellwall-manager --api-body-limit",
                    req.documents
                        .first()
                        .map(|d| d.file.as_str())
                        .unwrap_or("the request")
                ),
            }),
            Err(e) => Err(e),
        }
    }

    pub fn nodes(&self) -> Result<NodeList> {
        self.get_json("/v1/nodes", &())
    }

    pub fn flows(&self, q: &FlowQuery) -> Result<FlowList> {
        self.get_json("/v1/flows", q)
    }

    pub fn policies(&self) -> Result<PolicyList> {
        self.get_json("/v1/policies", &())
    }

    /// Every version of policy `id` (`Kind/namespace/name`).
    pub fn policy_history(&self, id: &str) -> Result<PolicyHistory> {
        self.get_json("/v1/policies/history", &[("id", id)])
    }

    pub fn workloads(&self) -> Result<WorkloadList> {
        self.get_json("/v1/workloads", &())
    }

    pub fn namespaces(&self) -> Result<NamespaceList> {
        self.get_json("/v1/namespaces", &())
    }

    pub fn audit(&self, limit: usize) -> Result<AuditLog> {
        self.get_json("/v1/audit", &[("limit", limit)])
    }

    pub fn create_token(&self, req: &TokenRequest) -> Result<TokenCreated> {
        self.post_json("/v1/tokens", req)
    }

    pub fn tokens(&self) -> Result<TokenList> {
        self.get_json("/v1/tokens", &())
    }

    pub fn revoke_token(&self, id: i64) -> Result<Revoked> {
        self.post_json("/v1/tokens/revoke", &RevokeTokenRequest { id })
    }

    pub fn revoke_node(&self, node: &str) -> Result<Revoked> {
        self.post_json(
            "/v1/nodes/revoke",
            &RevokeNodeRequest {
                node: node.to_string(),
            },
        )
    }

    pub fn quarantine(&self, req: &QuarantineRequest) -> Result<Committed> {
        self.post_json("/v1/quarantine", req)
    }

    pub fn release(&self, workload: &str) -> Result<Committed> {
        self.post_json(
            "/v1/release",
            &ReleaseRequest {
                workload: workload.to_string(),
            },
        )
    }

    pub fn quarantines(&self) -> Result<QuarantineList> {
        self.get_json("/v1/quarantine", &())
    }

    pub fn import(&self, req: &ImportRequest) -> Result<ImportResult> {
        self.post_json("/v1/imports", req)
    }

    pub fn imports(&self) -> Result<ImportList> {
        self.get_json("/v1/imports", &())
    }

    pub fn alerts(&self, q: &AlertQuery) -> Result<AlertList> {
        self.get_json("/v1/alerts", q)
    }

    pub fn explain(&self, q: &ExplainQuery) -> Result<ExplainResponse> {
        self.get_json("/v1/explain", q)
    }

    pub fn dependency_map(&self, q: &MapQuery) -> Result<MapResponse> {
        self.get_json("/v1/map", q)
    }

    pub fn propose(&self, q: &ProposeQuery) -> Result<ProposeResponse> {
        self.get_json("/v1/propose", q)
    }

    pub fn rules(&self, q: &RulesQuery) -> Result<RuleList> {
        self.get_json("/v1/rules", q)
    }

    pub fn save_draft(&self, req: &DraftRequest) -> Result<Draft> {
        self.post_json("/v1/drafts", req)
    }

    pub fn drafts(&self) -> Result<DraftList> {
        self.get_json("/v1/drafts", &())
    }

    pub fn draft(&self, name: &str) -> Result<Draft> {
        self.get_json("/v1/drafts/show", &DraftName { name: name.into() })
    }

    pub fn review(&self, req: &ReviewRequest) -> Result<Draft> {
        self.post_json("/v1/drafts/review", req)
    }

    pub fn apply_draft(&self, name: &str) -> Result<DraftApplyResult> {
        self.post_json("/v1/drafts/apply", &DraftName { name: name.into() })
    }

    pub fn delete_draft(&self, name: &str) -> Result<Committed> {
        self.post_json("/v1/drafts/delete", &DraftName { name: name.into() })
    }

    /// Waits until every node applied `revision` (or one reported an error for it).
    pub fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<()> {
        let t0 = Instant::now();
        loop {
            let nodes = self.nodes()?.items;
            if !nodes.is_empty() && nodes.iter().all(|n| n.applied_version >= revision) {
                return Ok(());
            }
            let failed = format!("version {revision}:");
            if let Some(n) = nodes.iter().find(|n| n.last_error.starts_with(&failed)) {
                return Err(ClientError::Wait(format!(
                    "node {} could not apply revision {revision}: {}",
                    n.name, n.last_error
                )));
            }
            if t0.elapsed() > timeout {
                let lagging: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.applied_version < revision)
                    .map(|n| format!("{} (at {})", n.name, n.applied_version))
                    .collect();
                return Err(ClientError::Wait(format!(
                    "revision {revision} not applied after {timeout:?}: {}",
                    if nodes.is_empty() {
                        "no node has joined".to_string()
                    } else {
                        lagging.join(", ")
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Whether a URL's host is loopback: `localhost` or a loopback address (nothing resolved).
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A query struct (or a list of `(key, value)` pairs) as `key=value` pairs; absent fields are
/// left out.
fn query_pairs(q: &impl Serialize) -> Vec<(String, String)> {
    let text = |v: serde_json::Value| match v {
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    };
    match serde_json::to_value(q).expect("query types serialize") {
        serde_json::Value::Array(pairs) => pairs
            .into_iter()
            .filter_map(|p| match p {
                serde_json::Value::Array(kv) if kv.len() == 2 => {
                    let mut kv = kv.into_iter();
                    let k = text(kv.next()?);
                    Some((k, text(kv.next()?)))
                }
                _ => None,
            })
            .collect(),
        serde_json::Value::Object(m) => m
            .into_iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k, text(v)))
            .collect(),
        _ => Vec::new(),
    }
}

/// The size of `req` as sent.
fn encoded_len(req: &ApplyRequest) -> usize {
    serde_json::to_vec(req).map_or(0, |v| v.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_urls() {
        for lo in [
            "http://127.0.0.1:7480",
            "http://localhost:7480/",
            "http://LOCALHOST",
            "http://[::1]:7480",
            "http://127.8.0.1",
            "http://u:p@127.0.0.1:1/x",
        ] {
            assert!(is_loopback_url(lo), "{lo}");
        }
        for far in [
            "http://10.0.0.5:7480",
            "http://manager.example:7480",
            "http://[2001:db8::1]:7480",
            "http://0.0.0.0:7480",
            "http://localhost.evil.example",
            "http://127.0.0.1.evil.example",
        ] {
            assert!(!is_loopback_url(far), "{far}");
        }
        let c = |s: &str| Client::new(s, "t").sends_token_in_clear();
        assert!(c("http://10.0.0.5:7480"));
        assert!(!c("https://10.0.0.5:7480"));
        assert!(!c("http://127.0.0.1:7480"));
    }

    #[test]
    fn client_json_without_ca_still_loads_and_a_relative_ca_is_the_files_neighbour() {
        let dir = std::env::temp_dir().join(format!("cw-client-json-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let old = dir.join("old.json");
        std::fs::write(&old, r#"{"server": "http://127.0.0.1:7480", "token": "t"}"#).unwrap();
        let c = ClientConfig::read(&old).unwrap();
        assert_eq!((c.server.as_str(), c.ca), ("http://127.0.0.1:7480", None));
        let new = dir.join("new.json");
        let text = r#"{"server": "https://127.0.0.1:7480", "token": "t", "ca": "ca.pem"}"#;
        std::fs::write(&new, text).unwrap();
        assert_eq!(
            ClientConfig::read(&new).unwrap().ca,
            Some(dir.join("ca.pem"))
        );
        let abs = dir.join("abs.json");
        let text = r#"{"server": "https://h:1", "token": "t", "ca": "/etc/cw/ca.pem"}"#;
        std::fs::write(&abs, text).unwrap();
        assert_eq!(
            ClientConfig::read(&abs).unwrap().ca,
            Some("/etc/cw/ca.pem".into())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn queries_leave_out_absent_fields() {
        let q = FlowQuery {
            since: Some("10m".into()),
            verdict: Some(Verdict::Denied),
            limit: Some(5),
            ..Default::default()
        };
        let mut p = query_pairs(&q);
        p.sort();
        assert_eq!(
            p,
            [
                ("limit".to_string(), "5".to_string()),
                ("since".into(), "10m".into()),
                ("verdict".into(), "denied".into())
            ]
        );
        assert!(query_pairs(&()).is_empty());
        assert_eq!(
            query_pairs(&[("id", "NetworkPolicy/a/b")]),
            [("id".to_string(), "NetworkPolicy/a/b".to_string())]
        );
    }
}

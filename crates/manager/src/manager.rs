//! [`Manager`]: the parts of the control plane and how they are opened. What it does is spread
//! over the modules that add `impl Manager` blocks by concern (objects, nodes, flows, imports,
//! quarantine, discover); this module only builds it.

use crate::alerts::Alerter;
use crate::config::{now_ms, Config};
use crate::error::{io_err, ManagerError};
use crate::intake::FlowIntake;
use crate::limits::RateLimiter;
use crate::pki::{self, sha256_hex, Ca};
use crate::sessions::Sessions;
use crate::state::{Published, State};
use crate::store::{NewToken, Role, Store};
use crate::writer::Writer;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub struct Manager {
    pub store: Arc<dyn Store>,
    pub data_dir: PathBuf,
    pub(crate) ca: Ca,
    pub(crate) state: State,
    pub(crate) writer: Writer,
    pub(crate) flows: FlowIntake,
    pub alerter: Alerter,
    /// Certificate hash → node, as the store says (every agent call is authenticated by it).
    pub(crate) certs: Mutex<HashMap<String, String>>,
    /// Open agent streams by node (closed when its certificate is replaced or withdrawn).
    pub(crate) sessions: Sessions,
    /// Joins per source address.
    pub(crate) join_limit: RateLimiter<std::net::IpAddr>,
    /// Flow records per node.
    pub(crate) flow_limit: RateLimiter<String>,
    pub(crate) limits: crate::config::Limits,
    /// Where label imports may be read from.
    pub(crate) import_sources: crate::config::ImportSources,
    pub(crate) lifetimes: crate::config::CertLifetimes,
    /// Certificate renewals per node.
    pub(crate) renew_limit: RateLimiter<String>,
    /// Set at start with `--join-service-account`: joins with ServiceAccount tokens.
    pub(crate) reviewer: std::sync::OnceLock<crate::config::JoinReviewer>,
    pub metrics: crate::metrics::Metrics,
}

/// Creates the data directory readable by its owner only (0700), and makes it so if an earlier
/// version left it wider: it holds the CA key, tokens and the database.
fn private_dir(dir: &std::path::Path) -> Result<(), ManagerError> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(format!("creating {}", dir.display())))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("making {} private", dir.display())))
}

/// The tokens of a first start, each in a private file of the data directory: admin, read-only,
/// and a bootstrap token for agents that expires (`Config::bootstrap_ttl_ms`) and joins only node
/// names that have not joined yet.
fn first_tokens(store: &dyn Store, cfg: &Config) -> Result<(), ManagerError> {
    let expiry = now_ms().saturating_add(i64::try_from(cfg.bootstrap_ttl_ms).unwrap_or(i64::MAX));
    for (file, role, expires_ms) in [
        ("admin.token", Role::Admin, None),
        ("read.token", Role::Read, None),
        ("bootstrap.token", Role::Bootstrap, Some(expiry)),
    ] {
        let t = NewToken {
            role,
            name: file.to_string(),
            node: None,
            expires_ms,
            single_use: false,
            replace: false,
        };
        let secret = pki::new_token(match role {
            Role::Admin => "cwa_",
            Role::Read => "cwr_",
            Role::Bootstrap => "cwb_",
        })?;
        store.add_token(&sha256_hex(secret.as_bytes()), &t)?;
        pki::write_private(&cfg.data_dir.join(file), format!("{secret}\n").as_bytes())?;
    }
    Ok(())
}

/// What was created at first start (printed once by the binary).
#[derive(Debug, Default)]
pub struct FirstStart {
    pub created: bool,
}

impl Manager {
    /// Opens (or on first start, creates) the data directory, store, CA and tokens.
    pub fn open(cfg: &Config) -> Result<(Arc<Self>, FirstStart), ManagerError> {
        private_dir(&cfg.data_dir)?;
        let store = crate::store::open(&cfg.store())?;
        let (ca, created) = Ca::load_or_create(&cfg.data_dir, cfg.lifetimes.ca)?;
        if created {
            first_tokens(store.as_ref(), cfg)?;
            store.log_event("manager", "first-start", "created CA and tokens")?;
        }
        let reported = store.nodes()?.into_iter().map(|n| (n.name, n.workloads));
        let m = Arc::new(Self {
            writer: Writer::start(store.clone())?,
            flows: FlowIntake::default(),
            state: State::new(reported),
            store,
            data_dir: cfg.data_dir.clone(),
            ca,
            certs: Mutex::new(HashMap::new()),
            sessions: Sessions::default(),
            // A node joins once; a burst of 20 and one a second per address covers a rack
            // rebooting behind one NAT, and stops a flood of guesses.
            join_limit: RateLimiter::new(cfg.limits.join_burst, cfg.limits.join_per_second),
            flow_limit: RateLimiter::new(cfg.limits.flow_burst, cfg.limits.flows_per_second),
            limits: cfg.limits.clone(),
            import_sources: cfg.imports.clone(),
            lifetimes: cfg.lifetimes,
            // Renewal is once per two thirds of a lifetime; a few retries cover lost answers.
            renew_limit: RateLimiter::new(5, 1.0 / 60.0),
            reviewer: std::sync::OnceLock::new(),
            metrics: Default::default(),
            alerter: Alerter::default(),
        });
        m.publish()?;
        Ok((m, FirstStart { created }))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.bundle_pem
    }

    pub fn published(&self) -> Arc<Published> {
        self.state.published()
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Arc<Published>> {
        self.state.subscribe()
    }

    /// Pushes the store's current state to every watching agent if it is newer than what was
    /// last pushed.
    pub fn publish(&self) -> Result<u64, ManagerError> {
        self.state.publish(self.store.as_ref())
    }

    /// Records an event without waiting for the commit (group-committed with others).
    pub fn log_event_later(&self, actor: &str, action: &str, detail: &str) {
        self.writer.event_later(actor, action, detail);
    }
}

//! [`Manager`]: the parts of the control plane and how they are opened. What it does is spread
//! over the modules that add `impl Manager` blocks by concern (objects, nodes, flows, imports,
//! quarantine, discover); this module only builds it.

use crate::alerts::Alerter;
use crate::config::Config;
use crate::error::{io_err, ManagerError};
use crate::intake::FlowIntake;
use crate::pki::{self, sha256_hex, Ca};
use crate::state::{Published, State};
use crate::store::{Role, Store};
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
}

/// What was created at first start (printed once by the binary).
#[derive(Debug, Default)]
pub struct FirstStart {
    pub created: bool,
}

impl Manager {
    /// Opens (or on first start, creates) the data directory, store, CA and tokens.
    pub fn open(cfg: &Config) -> Result<(Arc<Self>, FirstStart), ManagerError> {
        std::fs::create_dir_all(&cfg.data_dir)
            .map_err(io_err(format!("creating {}", cfg.data_dir.display())))?;
        let store = crate::store::open(&cfg.store())?;
        let (ca, created) = Ca::load_or_create(&cfg.data_dir)?;
        if created {
            for (file, role, prefix) in [
                ("admin.token", Role::Admin, "cwa_"),
                ("read.token", Role::Read, "cwr_"),
                ("bootstrap.token", Role::Bootstrap, "cwb_"),
            ] {
                let t = pki::new_token(prefix)?;
                store.add_token(&sha256_hex(t.as_bytes()), role, file)?;
                pki::write_private(&cfg.data_dir.join(file), format!("{t}\n").as_bytes())?;
            }
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
            alerter: Alerter::default(),
        });
        m.publish()?;
        Ok((m, FirstStart { created }))
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca.cert_pem
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

    /// Role and name behind a bearer token, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<(Role, String)>, ManagerError> {
        Ok(self.store.token_role(&sha256_hex(token.as_bytes()))?)
    }

    /// Records an event without waiting for the commit (group-committed with others).
    pub fn log_event_later(&self, actor: &str, action: &str, detail: &str) {
        self.writer.event_later(actor, action, detail);
    }
}

//! The agent's state directory: node certificate and key (`node.pem`, `node.key`, and
//! `node.cert.json`: when it was issued, expires, which CA signed it), the manager's CA bundle
//! (`ca.pem`, superseding `--ca` once fetched), the last applied desired state
//! (`desired.json`, what a restart enforces before hearing from the manager), `ready` (written
//! once that is done) and `metrics.addr`. Private files are written 0600, atomically.

use crate::AgentError;
use cellwall_proto::StateDoc;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

/// Writes `data` to `path` readable by its owner only: a temporary file synced, then renamed
/// over `path` (a crash leaves the old contents or the new, never a mix).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), AgentError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(AgentError::io("writing", &tmp))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(AgentError::io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(AgentError::io("writing", path))
}

impl StateDir {
    /// Creates the directory if needed.
    pub fn create(dir: &Path) -> Result<Self, AgentError> {
        std::fs::create_dir_all(dir).map_err(AgentError::io("creating", dir))?;
        Ok(Self {
            dir: dir.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The node certificate (PEM), written at join.
    pub fn node_cert(&self) -> PathBuf {
        self.dir.join("node.pem")
    }

    /// The node's private key (PEM), written at join.
    pub fn node_key(&self) -> PathBuf {
        self.dir.join("node.key")
    }

    /// What the manager said of the certificate: when it was issued, when it expires, which
    /// CA signed it (when to renew).
    pub fn node_cert_info(&self) -> PathBuf {
        self.dir.join("node.cert.json")
    }

    /// The CA bundle the manager last gave (supersedes the configured `--ca` once present: it
    /// arrived over a connection that CA verified, and follows CA rotations).
    pub fn trust(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// `[version, state]` of the last applied desired state.
    pub fn desired(&self) -> PathBuf {
        self.dir.join("desired.json")
    }

    /// Exists once the agent enforces what it saved (or knows it has nothing saved).
    pub fn ready(&self) -> PathBuf {
        self.dir.join("ready")
    }

    /// The metrics server's address, `IP:PORT`.
    pub fn metrics_addr(&self) -> PathBuf {
        self.dir.join("metrics.addr")
    }

    /// Persists the state the datapath holds (before it is acked: acked means durable).
    pub fn save_desired(&self, version: u64, doc: &StateDoc) -> Result<(), AgentError> {
        let json = serde_json::to_vec(&(version, doc)).map_err(|source| AgentError::Json {
            what: "encoding",
            path: self.desired(),
            source,
        })?;
        write_private(&self.desired(), &json)
    }

    /// The saved state, if there is one; an unreadable file is an error the caller may ignore.
    pub fn load_desired(&self) -> Result<Option<(u64, StateDoc)>, AgentError> {
        let p = self.desired();
        let b = match std::fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(AgentError::io("reading", &p)(e)),
        };
        let (v, mut doc): (u64, StateDoc) =
            serde_json::from_slice(&b).map_err(|source| AgentError::Json {
                what: "reading",
                path: p,
                source,
            })?;
        doc.normalize();
        Ok(Some((v, doc)))
    }

    pub fn mark_ready(&self) -> Result<(), AgentError> {
        std::fs::write(self.ready(), b"").map_err(AgentError::io("writing", &self.ready()))
    }

    pub fn clear_ready(&self) {
        let _ = std::fs::remove_file(self.ready());
    }

    pub fn write_metrics_addr(&self, addr: std::net::SocketAddr) -> Result<(), AgentError> {
        let p = self.metrics_addr();
        std::fs::write(&p, addr.to_string()).map_err(AgentError::io("writing", &p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn desired_state_round_trips_privately() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::create(&dir.path().join("agent")).unwrap();
        assert!(st.load_desired().unwrap().is_none());
        let (inv, pols) =
            cellwall_policy::synth::random_scenario(&mut cellwall_policy::synth::Rng::new(3));
        let doc = StateDoc::new(&inv, &pols);
        st.save_desired(7, &doc).unwrap();
        let mode = std::fs::metadata(st.desired())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(st.load_desired().unwrap(), Some((7, doc)));
        std::fs::write(st.desired(), b"{").unwrap();
        assert!(st.load_desired().is_err());
    }
}

//! Who this node is to the manager: the TLS channel (the manager's CA, and the node's
//! certificate once it has one), the join that buys the certificate with a bootstrap token, and
//! its renewal before expiry. The key and certificate are written 0600 in the state directory,
//! a renewed pair so that a crash at any moment leaves a pair that matches.

use crate::config::Config;
use crate::state::{write_private, StateDir};
use crate::AgentError;
use cellwall_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use cellwall_proto::{BootstrapClient, JoinReply, JoinRequest};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tracing::info;

/// The host part of `HOST:PORT` (the name the manager's certificate must carry).
fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

/// A TLS channel to the manager, presenting `identity` if given (mTLS). The manager is
/// verified against the bundle it last gave (see [`StateDir::trust`]), else `--ca`.
pub async fn channel(
    cfg: &Config,
    state: &StateDir,
    identity: Option<Identity>,
) -> Result<Channel, AgentError> {
    let trusted = state.trust();
    let file = if trusted.exists() { &trusted } else { &cfg.ca };
    let ca =
        std::fs::read_to_string(file).map_err(AgentError::io("reading the manager CA", file))?;
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name(host_of(&cfg.manager).to_string());
    if let Some(id) = identity {
        tls = tls.identity(id);
    }
    let addr = || cfg.manager.clone();
    Endpoint::from_shared(format!("https://{}", cfg.manager))
        .and_then(|e| e.tls_config(tls))
        .map_err(|source| AgentError::Address {
            addr: addr(),
            source,
        })?
        .connect_timeout(Duration::from_secs(3))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
        .map_err(|source| AgentError::Connect {
            addr: addr(),
            source,
        })
}

/// What the manager said of a certificate it issued: validity (Unix ms) and signing CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertInfo {
    pub issued_ms: i64,
    pub not_after_ms: i64,
    /// The signing CA's name (empty from managers before CA rotation).
    #[serde(default)]
    pub signer: String,
}

impl CertInfo {
    /// At two thirds of its life: a third is left for a manager that is down for a while.
    pub fn renew_at_ms(&self) -> i64 {
        self.issued_ms + (self.not_after_ms - self.issued_ms) / 3 * 2
    }
}

/// The node's credentials: the TLS identity, and when it expires if known (a certificate from
/// an older manager has no recorded validity; the agent renews it at once).
pub struct NodeCert {
    pub identity: Identity,
    pub info: Option<CertInfo>,
}

/// `node.pem` → `node.pem.next`: where a new file waits until the set is complete.
fn next(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".next");
    s.into()
}

/// Saves a certificate the manager issued. The new files are written beside the current ones,
/// the certificate last (its presence marks the set complete), then moved over them: a crash
/// before the certificate is written keeps the old pair, after it [`finish_save`] completes
/// the new one.
pub fn save(state: &StateDir, r: &JoinReply) -> Result<(), AgentError> {
    let info = CertInfo {
        issued_ms: r.issued_unix_ms,
        not_after_ms: r.not_after_unix_ms,
        signer: r.signer.clone(),
    };
    let json = serde_json::to_vec(&info).expect("certificate info serializes");
    write_private(&next(&state.node_key()), r.key_pem.as_bytes())?;
    write_private(&next(&state.node_cert_info()), &json)?;
    write_private(&next(&state.node_cert()), r.cert_pem.as_bytes())?;
    finish_save(state)
}

/// Keeps the CA bundle the manager gave, when it differs from the one held; returns whether
/// it did.
pub fn save_trust(state: &StateDir, bundle: &str) -> Result<bool, AgentError> {
    if !bundle.contains("-----BEGIN CERTIFICATE-----") {
        return Ok(false);
    }
    let p = state.trust();
    if std::fs::read_to_string(&p).is_ok_and(|held| held == bundle) {
        return Ok(false);
    }
    write_private(&p, bundle.as_bytes())?;
    Ok(true)
}

/// Completes a save a crash interrupted, or drops one that never got its certificate.
fn finish_save(state: &StateDir) -> Result<(), AgentError> {
    let (cert, rest) = (
        state.node_cert(),
        [state.node_key(), state.node_cert_info()],
    );
    let complete = next(&cert).exists();
    for p in rest.iter().chain([&cert]) {
        let n = next(p);
        if !n.exists() {
            continue;
        }
        if complete {
            std::fs::rename(&n, p).map_err(AgentError::io("writing", p))?;
        } else {
            std::fs::remove_file(&n).map_err(AgentError::io("removing", &n))?;
        }
    }
    Ok(())
}

/// The node certificate, joining first if there is none yet.
pub async fn identity(cfg: &Config, state: &StateDir) -> Result<NodeCert, AgentError> {
    finish_save(state)?;
    let (cert, key) = (state.node_cert(), state.node_key());
    if !cert.exists() || !key.exists() {
        let file = cfg
            .bootstrap_token_file
            .as_ref()
            .ok_or(AgentError::NoCertificate)?;
        let token = std::fs::read_to_string(file).map_err(AgentError::io("reading", file))?;
        let mut c = BootstrapClient::new(channel(cfg, state, None).await?);
        let r = c
            .join(JoinRequest {
                token: token.trim().to_string(),
                node: cfg.node.clone(),
            })
            .await
            .map_err(AgentError::refused("join"))?
            .into_inner();
        save(state, &r)?;
        save_trust(state, &r.ca_pem)?;
        info!(node = %cfg.node, "joined the manager as node {}", cfg.node);
    }
    let read = |p: &Path| std::fs::read(p).map_err(AgentError::io("reading", p));
    // Unreadable or absent: unknown, so the certificate is renewed at once.
    let info = std::fs::read(state.node_cert_info())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    Ok(NodeCert {
        identity: Identity::from_pem(read(&cert)?, read(&key)?),
        info,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: u8) -> JoinReply {
        JoinReply {
            cert_pem: format!("cert{n}"),
            key_pem: format!("key{n}"),
            ca_pem: String::new(),
            issued_unix_ms: 0,
            not_after_unix_ms: 3000 * i64::from(n),
            signer: "ca".into(),
        }
    }

    /// Whatever moment a save is interrupted at, the files left are one whole set.
    #[test]
    fn an_interrupted_save_leaves_a_matching_pair() {
        let dir = tempfile::tempdir().unwrap();
        let st = StateDir::create(dir.path()).unwrap();
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        let set = |st: &StateDir| (read(st.node_cert()), read(st.node_key()));
        save(&st, &reply(1)).unwrap();
        assert_eq!(set(&st), ("cert1".into(), "key1".into()));
        // Crash before the certificate was written: the old set stays.
        write_private(&next(&st.node_key()), b"key2").unwrap();
        finish_save(&st).unwrap();
        assert_eq!(set(&st), ("cert1".into(), "key1".into()));
        assert!(!next(&st.node_key()).exists());
        // Crash after the key was moved but before the certificate: the new set completes.
        write_private(&next(&st.node_cert_info()), b"{}").unwrap();
        write_private(&next(&st.node_cert()), b"cert3").unwrap();
        std::fs::write(st.node_key(), "key3").unwrap();
        finish_save(&st).unwrap();
        assert_eq!(set(&st), ("cert3".into(), "key3".into()));
        save(&st, &reply(4)).unwrap();
        let v: CertInfo = serde_json::from_str(&read(st.node_cert_info())).unwrap();
        assert_eq!(v.renew_at_ms(), 8000);
    }

    #[test]
    fn the_certificate_name_is_the_host_part() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("manager.example:443"), "manager.example");
        assert_eq!(host_of("manager"), "manager");
    }
}

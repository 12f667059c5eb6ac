//! Who this node is to the manager: the TLS channel (the manager's CA, and the node's
//! certificate once it has one) and the join that buys the certificate with a bootstrap token.
//! The key and certificate are written 0600 in the state directory.

use crate::config::Config;
use crate::state::{write_private, StateDir};
use crate::AgentError;
use cellwall_proto::tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use cellwall_proto::{BootstrapClient, JoinRequest};
use std::time::Duration;
use tracing::info;

/// The host part of `HOST:PORT` (the name the manager's certificate must carry).
fn host_of(addr: &str) -> &str {
    match addr.rsplit_once(':') {
        Some((h, _)) => h.trim_start_matches('[').trim_end_matches(']'),
        None => addr,
    }
}

/// A TLS channel to the manager, presenting `identity` if given (mTLS).
pub async fn channel(cfg: &Config, identity: Option<Identity>) -> Result<Channel, AgentError> {
    let ca = std::fs::read_to_string(&cfg.ca)
        .map_err(AgentError::io("reading the manager CA", &cfg.ca))?;
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

/// The node certificate, joining first if there is none yet.
pub async fn identity(cfg: &Config, state: &StateDir) -> Result<Identity, AgentError> {
    let (cert, key) = (state.node_cert(), state.node_key());
    if !cert.exists() || !key.exists() {
        let file = cfg
            .bootstrap_token_file
            .as_ref()
            .ok_or(AgentError::NoCertificate)?;
        let token = std::fs::read_to_string(file).map_err(AgentError::io("reading", file))?;
        let mut c = BootstrapClient::new(channel(cfg, None).await?);
        let r = c
            .join(JoinRequest {
                token: token.trim().to_string(),
                node: cfg.node.clone(),
            })
            .await
            .map_err(AgentError::refused("join"))?
            .into_inner();
        write_private(&key, r.key_pem.as_bytes())?;
        write_private(&cert, r.cert_pem.as_bytes())?;
        info!(node = %cfg.node, "joined the manager as node {}", cfg.node);
    }
    let read = |p: &std::path::Path| std::fs::read(p).map_err(AgentError::io("reading", p));
    Ok(Identity::from_pem(read(&cert)?, read(&key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_certificate_name_is_the_host_part() {
        assert_eq!(host_of("127.0.0.1:7443"), "127.0.0.1");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("manager.example:443"), "manager.example");
        assert_eq!(host_of("manager"), "manager");
    }
}

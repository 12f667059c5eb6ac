//! The REST API over TLS: the same router `axum::serve` runs for plain HTTP, behind a rustls
//! acceptor holding the gRPC listener's server certificate (issued by the manager's CA, so the
//! CLI verifies both with `ca.pem`). axum 0.7 serves only plain TCP listeners, hence this
//! accept loop, which keeps `axum::serve`'s behaviour: connections served by hyper-util's
//! HTTP/1 builder, and at shutdown no new connections while open ones finish their requests.

use crate::error::ManagerError;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::rustls::{self, pki_types};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A client gets this long to finish its handshake (or its plain-HTTP request head): one that
/// never does holds no task for longer.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A TLS acceptor for the server certificate and key (PEM), TLS 1.2 and 1.3 with ring, no
/// client certificates (REST authenticates with bearer tokens).
pub fn acceptor(cert_pem: &str, key_pem: &str) -> Result<TlsAcceptor, ManagerError> {
    use pki_types::pem::PemObject;
    let bad = |e: &dyn std::fmt::Display| ManagerError::Internal(format!("REST TLS: {e}"));
    let certs = pki_types::CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(&e))?;
    let key = pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| bad(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(&e))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(&e))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Serves `router` over TLS on `l` until `stop`, then waits for open connections to finish
/// (`Running::stop` cuts them after its grace period). A client whose handshake fails is
/// logged and dropped; the server goes on.
pub async fn serve(
    l: TcpListener,
    tls: TlsAcceptor,
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    // Every connection task holds a receiver; the sender sees them all gone.
    let (open_tx, open_rx) = watch::channel(());
    loop {
        let accepted = tokio::select! {
            r = l.accept() => r,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (tcp, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                accept_failed(e).await;
                continue;
            }
        };
        let conn = Connection {
            tls: tls.clone(),
            router: router.clone(),
            stop: stop.clone(),
            _open: open_rx.clone(),
        };
        tokio::spawn(conn.run(tcp, peer));
    }
    drop((l, open_rx));
    open_tx.closed().await;
    Ok(())
}

/// What one connection's task holds.
struct Connection {
    tls: TlsAcceptor,
    router: axum::Router,
    stop: watch::Receiver<bool>,
    /// Dropped when the connection ends (see [`serve`]).
    _open: watch::Receiver<()>,
}

impl Connection {
    async fn run(self, tcp: TcpStream, peer: SocketAddr) {
        let Connection {
            tls,
            router,
            mut stop,
            _open,
        } = self;
        let _ = tcp.set_nodelay(true);
        let stream = tokio::select! {
            r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&tls, tcp)) => match r {
                Ok(Ok(Some(s))) => s,
                Ok(Ok(None)) => {
                    tracing::debug!(%peer, "plain HTTP on the HTTPS API: told to use https://");
                    return;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "REST TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "REST TLS handshake timed out");
                    return;
                }
            },
            _ = stop.wait_for(|s| *s) => return,
        };
        let service = TowerToHyperService::new(router);
        let builder = auto::Builder::new(TokioExecutor::new());
        let conn = builder.serve_connection(TokioIo::new(stream), service);
        tokio::pin!(conn);
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    tracing::trace!(%peer, "REST connection: {e}");
                }
                return;
            }
            _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
        }
        let _ = conn.await;
    }
}

/// The TLS handshake; `None` when the client spoke plain HTTP (it is answered with a JSON error
/// body saying to use https://, so a wrong scheme is not mistaken for a manager that is down).
async fn handshake(
    tls: &TlsAcceptor,
    mut tcp: TcpStream,
) -> std::io::Result<Option<TlsStream<TcpStream>>> {
    let mut first = [0u8; 1];
    // A TLS connection starts with a handshake record (0x16); an HTTP request with its method.
    if tcp.peek(&mut first).await? == 1 && first[0].is_ascii_uppercase() {
        tell_to_use_https(&mut tcp).await?;
        return Ok(None);
    }
    tls.accept(tcp).await.map(Some)
}

/// Reads the request head (up to 16 KiB), answers 400 with the API's error body, and closes.
/// The request is never served: its token, if any, already crossed in clear text, but nothing
/// is sent back beyond the advice. What the client still sends is read for a moment, so the
/// close does not reset the connection before the client reads the answer.
async fn tell_to_use_https(tcp: &mut TcpStream) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while head.len() < 16 << 10 && !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let body = serde_json::json!({"error": {
        "status": 400,
        "reason": "Bad Request",
        "message": "this manager serves its API over HTTPS: use https:// with the manager's CA \
                    (ca.pem in its data directory; cellwall --ca or CELLWALL_CA)",
    }})
    .to_string();
    let resp = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(resp.as_bytes()).await?;
    tcp.shutdown().await?;
    let drain = async {
        let mut left = 1usize << 20;
        while let Ok(n @ 1..) = tcp.read(&mut buf).await {
            left = left.saturating_sub(n);
            if left == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    Ok(())
}

/// Accept errors are the listener's, not a client's: connection-level ones are skipped, others
/// (out of file descriptors) wait a second, as `axum::serve` does.
async fn accept_failed(e: std::io::Error) {
    use std::io::ErrorKind::*;
    if !matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    ) {
        tracing::error!("accepting a REST connection: {e}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

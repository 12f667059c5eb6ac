//! HTTPS for the client, trusting exactly one CA: the manager's (its `ca.pem`).
//!
//! Not ureq's `tls` feature: it always compiles in webpki-roots (the public web's CAs, which a
//! manager's certificate never chains to) and would switch HTTPS on for every other ureq user
//! in a build (the manager's imports and webhooks). ureq's `TlsConnector` seam takes this
//! small rustls connector instead: the same rustls 0.23 and ring the tree already has.

use super::ClientError;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use ureq::ReadWrite;

/// A TLS connector verifying servers against one CA file.
pub(super) struct Connector(Arc<rustls::ClientConfig>);

impl Connector {
    /// Reads the CA certificate(s) in `ca` (PEM).
    pub(super) fn new(ca: &Path) -> Result<Self, ClientError> {
        let bad = |detail: String| ClientError::Config {
            path: ca.display().to_string(),
            detail,
        };
        let pem = std::fs::read(ca).map_err(|e| bad(format!("cannot read the CA: {e}")))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| bad(format!("not a usable CA certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(bad(
                "no certificate in it (expected the manager's ca.pem)".into()
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| bad(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self(Arc::new(cfg)))
    }
}

impl ureq::TlsConnector for Connector {
    fn connect(
        &self,
        host: &str,
        mut io: Box<dyn ReadWrite>,
    ) -> Result<Box<dyn ReadWrite>, ureq::Error> {
        // ureq gives IPv6 addresses in brackets; the certificate names them without.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut conn =
            rustls::ClientConnection::new(self.0.clone(), name).map_err(io::Error::other)?;
        conn.complete_io(&mut io)?;
        Ok(Box::new(Stream(rustls::StreamOwned::new(conn, io))))
    }
}

struct Stream(rustls::StreamOwned<rustls::ClientConnection, Box<dyn ReadWrite>>);

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.0.read(buf) {
            // A server closing without close_notify: the end of the stream, as for plain
            // HTTP; the HTTP framing (length, chunks) still catches a truncated answer.
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
            r => r,
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsStream")
    }
}

impl ReadWrite for Stream {
    fn socket(&self) -> Option<&TcpStream> {
        self.0.get_ref().socket()
    }
}

/// The TLS error behind a failed call, if TLS is what failed (rustls reports through an
/// `io::Error` that ureq wraps).
pub(super) fn tls_error(e: &ureq::Error) -> Option<&rustls::Error> {
    let io = std::error::Error::source(e)?.downcast_ref::<io::Error>()?;
    io.get_ref()?.downcast_ref::<rustls::Error>()
}

#[cfg(test)]
mod tests {
    use super::super::{Client, ClientConfig, ClientError};
    use std::path::PathBuf;

    #[test]
    fn https_needs_a_ca_and_a_bad_ca_file_is_named() {
        let cfg = |ca: Option<&str>| ClientConfig {
            server: "https://127.0.0.1:1".into(),
            token: "t".into(),
            ca: ca.map(PathBuf::from),
        };
        let e = Client::with_config(&cfg(None)).err().unwrap().to_string();
        assert!(e.contains("--ca") && e.contains("CELLWALL_CA"), "{e}");
        let e = Client::new("https://127.0.0.1:1", "t").nodes().unwrap_err();
        assert!(matches!(e, ClientError::NoCa { .. }), "{e}");
        let e = Client::with_config(&cfg(Some("/nonexistent/ca.pem")))
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.starts_with("/nonexistent/ca.pem: cannot read the CA"),
            "{e}"
        );
        let not_pem = std::env::temp_dir().join(format!("cw-not-pem-{}", std::process::id()));
        std::fs::write(&not_pem, "hello").unwrap();
        let e = Client::with_config(&cfg(not_pem.to_str()))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("no certificate in it"), "{e}");
        let _ = std::fs::remove_file(&not_pem);
    }
}

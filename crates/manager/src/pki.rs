//! The manager's certificate authority and secrets: created on first start in the data
//! directory (private files 0600), reloaded afterwards.

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("certificate: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("random: the system's random source failed")]
    Random,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a private file readable only by its owner (created that way: never briefly wider).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// 32 random bytes, hex: bearer and bootstrap tokens.
pub fn new_token(prefix: &str) -> Result<String, PkiError> {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| PkiError::Random)?;
    Ok(format!("{prefix}{}", hex(&b)))
}

/// Tokens and certificates are stored by hash only.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The CA: its certificate (as first written, what agents trust) and a signer.
pub struct Ca {
    pub cert_pem: String,
    key: KeyPair,
    issuer: rcgen::Certificate,
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "Cellwall manager CA");
    dn.push(DnType::OrganizationName, "Cellwall");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2036, 1, 1);
    Ok(p)
}

impl Ca {
    /// Loads `ca.pem`/`ca.key` from `dir`, creating them on first start.
    pub fn load_or_create(dir: &Path) -> Result<(Self, bool), PkiError> {
        let (cert_path, key_path) = (dir.join("ca.pem"), dir.join("ca.key"));
        let created = !key_path.exists();
        let key = if created {
            let key = KeyPair::generate()?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            key
        } else {
            KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?
        };
        // The signer is rebuilt from the same name and key at every start; certificates it
        // signs verify against the CA certificate written the first time.
        let issuer = ca_params()?.self_signed(&key)?;
        let cert_pem = if created || !cert_path.exists() {
            let pem = issuer.pem();
            std::fs::write(&cert_path, &pem).map_err(io(&cert_path))?;
            pem
        } else {
            std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?
        };
        Ok((
            Self {
                cert_pem,
                key,
                issuer,
            },
            created,
        ))
    }

    /// A leaf certificate and its new key, PEM.
    /// A leaf certificate and its new key, PEM, and the SHA-256 of the certificate's DER.
    fn issue(
        &self,
        cn: &str,
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
    ) -> Result<(String, String, String), PkiError> {
        let mut p = CertificateParams::new(Vec::<String>::new())?;
        for s in sans {
            p.subject_alt_names
                .push(match s.parse::<std::net::IpAddr>() {
                    Ok(ip) => SanType::IpAddress(ip),
                    Err(_) => SanType::DnsName(s.clone().try_into()?),
                });
        }
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, cn);
        p.distinguished_name = dn;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        p.extended_key_usages = vec![usage];
        p.not_before = rcgen::date_time_ymd(2024, 1, 1);
        p.not_after = rcgen::date_time_ymd(2036, 1, 1);
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer, &self.key)?;
        Ok((cert.pem(), key.serialize_pem(), sha256_hex(cert.der())))
    }

    /// The manager's gRPC server certificate.
    pub fn server_cert(&self, sans: &[String]) -> Result<(String, String), PkiError> {
        let (cert, key, _) = self.issue(
            "cellwall-manager",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        Ok((cert, key))
    }

    /// A node's client certificate; returns (cert, key, sha256 of the DER the manager checks).
    pub fn node_cert(&self, node: &str) -> Result<(String, String, String), PkiError> {
        self.issue(
            &format!("node:{node}"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_survives_restart_and_tokens_are_random() {
        let dir = std::env::temp_dir().join(format!("cw-pki-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (a, created) = Ca::load_or_create(&dir).unwrap();
        assert!(created);
        let (b, created) = Ca::load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(a.cert_pem, b.cert_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let (_, _, h1) = b.node_cert("n1").unwrap();
        let (_, _, h2) = b.node_cert("n1").unwrap();
        assert_ne!(h1, h2, "every join gets its own certificate");
        assert_ne!(new_token("x").unwrap(), new_token("x").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

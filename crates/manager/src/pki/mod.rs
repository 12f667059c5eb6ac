//! The manager's certificate authority and secrets: created on first start in the data
//! directory (private files 0600), reloaded afterwards; rotated in steps ([`rotate`]).
//!
//! Files: `ca.key` (the first CA's key), `ca.pem` (every CA certificate agents and the CLI
//! trust: the signing one, and during a rotation the other one); rotated generations in
//! `ca-ID.key`/`ca-ID.pem`, the signing one named by `ca.signer` (see [`rotate`]).

pub mod rotate;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A rotation step asked in the wrong order (the message says which step comes next).
    #[error("{0}")]
    Rotation(String),
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
    #[error("certificate lifetime {0:?}: beyond what a certificate can say")]
    Lifetime(Duration),
}

/// A certificate's validity, both ends in Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// When it was issued (renewals are scheduled from here).
    pub issued_ms: i64,
    /// A little before it was issued, for nodes whose clocks lag.
    pub not_before_ms: i64,
    pub not_after_ms: i64,
}

impl Validity {
    /// From a little before now (clocks of manager and node may differ by minutes) for `ttl`.
    fn starting_now(ttl: Duration) -> Result<Self, PkiError> {
        let now = crate::config::now_ms();
        let ttl_ms = i64::try_from(ttl.as_millis()).map_err(|_| PkiError::Lifetime(ttl))?;
        // Whole seconds: what X.509 times can hold, so the numbers match the certificate.
        let not_before_ms = (now - CLOCK_SKEW_MS) / 1000 * 1000;
        let not_after_ms = now
            .checked_add(ttl_ms)
            .filter(|t| *t < MAX_NOT_AFTER_MS)
            .ok_or(PkiError::Lifetime(ttl))?
            / 1000
            * 1000;
        Ok(Self {
            issued_ms: now,
            not_before_ms,
            not_after_ms,
        })
    }

    fn apply(&self, p: &mut CertificateParams) -> Result<(), PkiError> {
        let t = |ms: i64| {
            time::OffsetDateTime::from_unix_timestamp(ms / 1000)
                .map_err(|_| PkiError::Lifetime(Duration::from_millis(ms.unsigned_abs())))
        };
        p.not_before = t(self.not_before_ms)?;
        p.not_after = t(self.not_after_ms)?;
        Ok(())
    }
}

/// How far before "now" a certificate starts to be valid: a node whose clock lags the
/// manager's by a few minutes can still use a certificate issued this second.
const CLOCK_SKEW_MS: i64 = 5 * 60_000;
/// 9999-12-31, the last time X.509 can express.
const MAX_NOT_AFTER_MS: i64 = 253_402_300_799_000;

/// A leaf certificate just issued: PEM certificate and key, the SHA-256 of the certificate's
/// DER (what the manager identifies nodes by) and its validity.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub sha256: String,
    pub validity: Validity,
    /// The signing CA's common name.
    pub signer: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes a private file readable only by its owner (created that way: never briefly wider).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    replace_file(path, data, 0o600)
}

/// Replaces `path` atomically with a file of `mode` (before the umask): a temporary file
/// synced, then renamed over it, so a reader or a crash sees the old contents or the new.
pub(crate) fn replace_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
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

/// The common name of the first CA (rotated ones carry their creation time).
pub const FIRST_CA_NAME: &str = "Cellwall manager CA";

/// The CA: what agents trust and the signer.
pub struct Ca {
    /// Every CA certificate agents and the CLI trust (`ca.pem`).
    pub bundle_pem: String,
    /// The signing CA's common name: an agent whose certificate another CA signed renews it.
    pub signer: String,
    key: KeyPair,
    issuer: rcgen::Certificate,
}

fn ca_params(name: &str, validity: Validity) -> Result<CertificateParams, PkiError> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn.push(DnType::OrganizationName, "Cellwall");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity.apply(&mut p)?;
    Ok(p)
}

impl Ca {
    /// Loads the CA from `dir`, creating it on first start, valid for `ttl`.
    pub fn load_or_create(dir: &Path, ttl: Duration) -> Result<(Self, bool), PkiError> {
        let id = rotate::Status::signer_id(dir)?;
        let (cert_path, key_path) = (dir.join("ca.pem"), rotate::key_path(dir, &id));
        let signer = rotate::name_of(&id);
        let created = id == rotate::FIRST && !key_path.exists();
        let key = if created {
            let key = KeyPair::generate()?;
            write_private(&key_path, key.serialize_pem().as_bytes())?;
            key
        } else {
            KeyPair::from_pem(&std::fs::read_to_string(&key_path).map_err(io(&key_path))?)?
        };
        // The signer is rebuilt from the same name and key at every start; certificates it
        // signs verify against the CA certificate written the first time.
        // Only the name and key matter for signing; the validity is that of the first start's
        // certificate, the one written to ca.pem.
        let issuer = ca_params(&signer, Validity::starting_now(ttl)?)?.self_signed(&key)?;
        let bundle_pem = if created || !cert_path.exists() {
            let pem = issuer.pem();
            std::fs::write(&cert_path, &pem).map_err(io(&cert_path))?;
            pem
        } else {
            std::fs::read_to_string(&cert_path).map_err(io(&cert_path))?
        };
        Ok((
            Self {
                bundle_pem,
                signer,
                key,
                issuer,
            },
            created,
        ))
    }

    /// A leaf certificate and its new key, valid from now for `ttl`.
    fn issue(
        &self,
        cn: &str,
        sans: &[String],
        usage: ExtendedKeyUsagePurpose,
        ttl: Duration,
    ) -> Result<Issued, PkiError> {
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
        let validity = Validity::starting_now(ttl)?;
        validity.apply(&mut p)?;
        let key = KeyPair::generate()?;
        let cert = p.signed_by(&key, &self.issuer, &self.key)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            sha256: sha256_hex(cert.der()),
            validity,
            signer: self.signer.clone(),
        })
    }

    /// The manager's server certificate (gRPC, and REST beyond loopback).
    pub fn server_cert(&self, sans: &[String], ttl: Duration) -> Result<Issued, PkiError> {
        self.issue(
            "cellwall-manager",
            sans,
            ExtendedKeyUsagePurpose::ServerAuth,
            ttl,
        )
    }

    /// A node's client certificate.
    pub fn node_cert(&self, node: &str, ttl: Duration) -> Result<Issued, PkiError> {
        self.issue(
            &format!("node:{node}"),
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
            ttl,
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
        let year = Duration::from_secs(365 * 86_400);
        let (a, created) = Ca::load_or_create(&dir, year).unwrap();
        assert!(created);
        let (b, created) = Ca::load_or_create(&dir, year).unwrap();
        assert!(!created);
        assert_eq!(a.bundle_pem, b.bundle_pem);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ca.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let day = Duration::from_secs(86_400);
        let (c1, c2) = (
            b.node_cert("n1", day).unwrap(),
            b.node_cert("n1", day).unwrap(),
        );
        assert_ne!(c1.sha256, c2.sha256, "every join gets its own certificate");
        let v = c1.validity;
        assert_eq!(v.not_after_ms - v.not_before_ms, 86_400_000 + CLOCK_SKEW_MS);
        assert!(b
            .node_cert("n1", Duration::from_secs(u64::MAX / 4))
            .is_err());
        assert_ne!(new_token("x").unwrap(), new_token("x").unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}

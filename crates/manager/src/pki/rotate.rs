//! Rotating the CA with overlap, in three steps, each followed by a restart of the manager:
//!
//! 1. [`begin`]: a new CA is created and trusted beside the signing one (`ca.pem` holds both);
//!    the old one still signs. Agents fetch the bundle whenever they connect.
//! 2. [`activate`]: the new CA signs (the server certificate at the restart, node certificates
//!    from then on); agents holding a certificate of the old CA renew it at once. Both are
//!    still trusted, so nothing breaks while they do.
//! 3. [`retire`]: the old CA is trusted no more (`ca.pem` holds the new one only) and its key
//!    is deleted.
//!
//! Each step is one atomic file replacement (`ca.signer`, `ca.next` or `ca.pem`), so a crash
//! leaves the step done or not done. Whether the nodes are ready for the next step is the
//! manager's to check (it knows what each node fetched and holds): see `cellwall-manager ca`.
//!
//! Files besides the first CA's (`ca.key`, and its certificate kept as `ca-first.pem`): a
//! generation `ID` is `ca-ID.key` and `ca-ID.pem`; `ca.signer` names the signing generation
//! (absent: the first), `ca.next` the staged one.

use super::{ca_params, io, write_private, PkiError, Validity, FIRST_CA_NAME};
use rcgen::KeyPair;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The first CA's generation id.
pub const FIRST: &str = "first";

/// Where a CA generation keeps its key and certificate.
pub fn key_path(dir: &Path, id: &str) -> PathBuf {
    if id == FIRST {
        dir.join("ca.key")
    } else {
        dir.join(format!("ca-{id}.key"))
    }
}

fn cert_path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("ca-{id}.pem"))
}

/// A generation's certificate common name (what agents compare to know who signed theirs).
pub fn name_of(id: &str) -> String {
    if id == FIRST {
        FIRST_CA_NAME.to_string()
    } else {
        format!("{FIRST_CA_NAME} {id}")
    }
}

fn read_opt(p: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(p) {
        Ok(s) => Ok(Some(s.trim().to_string())).map(|s| s.filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(p)(e)),
    }
}

/// Replaces a public file atomically (a reader sees the old contents or the new).
fn write_atomic(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    super::replace_file(path, data, 0o644)
}

/// Where a rotation stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The signing generation.
    pub signer: String,
    /// A generation staged by [`begin`], not signing yet.
    pub next: Option<String>,
    /// How many CA certificates `ca.pem` holds (2 during a rotation).
    pub trusted: usize,
}

impl Status {
    /// The signing generation (the first CA's until a rotation activated another).
    pub fn signer_id(dir: &Path) -> Result<String, PkiError> {
        Ok(read_opt(&dir.join("ca.signer"))?.unwrap_or_else(|| FIRST.into()))
    }

    pub fn read(dir: &Path) -> Result<Self, PkiError> {
        let signer = Self::signer_id(dir)?;
        // A crash after activation's pointer was written but before `ca.next` was removed.
        let next = read_opt(&dir.join("ca.next"))?.filter(|n| *n != signer);
        let bundle =
            std::fs::read_to_string(dir.join("ca.pem")).map_err(io(&dir.join("ca.pem")))?;
        Ok(Self {
            signer,
            next,
            trusted: bundle.matches("-----BEGIN CERTIFICATE-----").count(),
        })
    }
}

/// The signing generation's certificate alone.
fn signer_pem(dir: &Path, signer: &str) -> Result<String, PkiError> {
    let p = cert_path(dir, signer);
    match read_opt(&p)? {
        Some(pem) => Ok(pem + "\n"),
        // The first CA before any rotation: ca.pem is its certificate alone.
        None => {
            let pem =
                std::fs::read_to_string(dir.join("ca.pem")).map_err(io(&dir.join("ca.pem")))?;
            write_atomic(&p, pem.as_bytes())?;
            Ok(pem)
        }
    }
}

/// Step 1: creates a CA valid for `ttl` and trusts it beside the signing one. Returns its id.
/// Asked again before [`activate`], it finishes what a crash interrupted and changes nothing
/// else.
pub fn begin(dir: &Path, ttl: Duration) -> Result<String, PkiError> {
    let st = Status::read(dir)?;
    let id = match &st.next {
        Some(id) => id.clone(),
        None => {
            if st.trusted > 1 {
                return Err(PkiError::Rotation(
                    "ca.pem still trusts the previous CA: finish that rotation first \
                     (cellwall-manager ca retire)"
                        .into(),
                ));
            }
            let mut id = (crate::config::now_ms() / 1000).to_string();
            while key_path(dir, &id).exists() || id == st.signer {
                id.push('b');
            }
            let key = KeyPair::generate()?;
            let cert = ca_params(&name_of(&id), Validity::starting_now(ttl)?)?.self_signed(&key)?;
            write_private(&key_path(dir, &id), key.serialize_pem().as_bytes())?;
            write_atomic(&cert_path(dir, &id), cert.pem().as_bytes())?;
            write_atomic(&dir.join("ca.next"), id.as_bytes())?;
            id
        }
    };
    let bundle = signer_pem(dir, &st.signer)?
        + &std::fs::read_to_string(cert_path(dir, &id)).map_err(io(&cert_path(dir, &id)))?;
    write_atomic(&dir.join("ca.pem"), bundle.as_bytes())?;
    Ok(id)
}

/// Step 2: the staged CA signs from the next start. Returns its id.
pub fn activate(dir: &Path) -> Result<String, PkiError> {
    let st = Status::read(dir)?;
    let Some(id) = st.next else {
        return Err(PkiError::Rotation(
            "no CA is staged: begin a rotation first (cellwall-manager ca rotate)".into(),
        ));
    };
    let staged = std::fs::read_to_string(cert_path(dir, &id)).map_err(io(&cert_path(dir, &id)))?;
    let bundle = std::fs::read_to_string(dir.join("ca.pem")).map_err(io(&dir.join("ca.pem")))?;
    if !bundle.contains(staged.trim()) {
        return Err(PkiError::Rotation(
            "the staged CA is not in ca.pem yet: run cellwall-manager ca rotate again".into(),
        ));
    }
    write_atomic(&dir.join("ca.signer"), id.as_bytes())?;
    std::fs::remove_file(dir.join("ca.next")).map_err(io(&dir.join("ca.next")))?;
    Ok(id)
}

/// Step 3: only the signing CA is trusted; the other generations' keys are deleted.
pub fn retire(dir: &Path) -> Result<Vec<String>, PkiError> {
    let st = Status::read(dir)?;
    if st.next.is_some() {
        return Err(PkiError::Rotation(
            "a staged CA is not signing yet: activate it first (cellwall-manager ca activate)"
                .into(),
        ));
    }
    write_atomic(&dir.join("ca.pem"), signer_pem(dir, &st.signer)?.as_bytes())?;
    let mut gone = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io(dir))? {
        let p = e.map_err(io(dir))?.path();
        let Some(f) = p.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let id = match f {
            "ca.key" => FIRST,
            _ => match f.strip_prefix("ca-").and_then(|r| r.strip_suffix(".key")) {
                Some(id) => id,
                None => continue,
            },
        };
        if id != st.signer {
            std::fs::remove_file(&p).map_err(io(&p))?;
            gone.push(id.to_string());
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::super::Ca;
    use super::*;

    fn certs(dir: &Path) -> usize {
        Status::read(dir).unwrap().trusted
    }

    /// The steps in order, each refused out of order, and the signer following them.
    #[test]
    fn a_rotation_goes_begin_activate_retire() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let ttl = Duration::from_secs(86_400);
        let (first, _) = Ca::load_or_create(d, ttl).unwrap();
        assert_eq!(first.signer, FIRST_CA_NAME);
        assert!(matches!(activate(d), Err(PkiError::Rotation(_))));
        let id = begin(d, ttl).unwrap();
        assert_eq!(
            begin(d, ttl).unwrap(),
            id,
            "asked again: the same staged CA"
        );
        assert_eq!(certs(d), 2);
        assert!(matches!(retire(d), Err(PkiError::Rotation(_))));
        let (ca, _) = Ca::load_or_create(d, ttl).unwrap();
        assert_eq!(ca.signer, FIRST_CA_NAME, "staged, not signing");
        assert!(ca.bundle_pem.contains(first.bundle_pem.trim()));

        assert_eq!(activate(d).unwrap(), id);
        let (ca, _) = Ca::load_or_create(d, ttl).unwrap();
        assert_eq!(ca.signer, name_of(&id));
        assert_eq!(certs(d), 2, "both trusted while nodes renew");
        assert!(matches!(begin(d, ttl), Err(PkiError::Rotation(_))));

        assert_eq!(retire(d).unwrap(), vec![FIRST.to_string()]);
        assert!(!d.join("ca.key").exists(), "the old key is deleted");
        let (ca, _) = Ca::load_or_create(d, ttl).unwrap();
        assert_eq!(certs(d), 1);
        assert!(!ca.bundle_pem.contains(first.bundle_pem.trim()));
        assert_eq!(ca.signer, name_of(&id));
        // And again: the second rotation starts from a rotated CA.
        let id2 = begin(d, ttl).unwrap();
        assert_ne!(id2, id);
        activate(d).unwrap();
        assert_eq!(retire(d).unwrap(), vec![id]);
    }
}

//! `cellwall-manager ca ...`: the CA rotation steps ([`crate::pki::rotate`] changes the files),
//! each refused while a node is not ready for it, since a node left behind loses its manager:
//!
//! - `activate` (the new CA signs the server certificate): every node's agent must have fetched
//!   the bundle that trusts the new CA, or it cannot verify the manager after the restart.
//! - `retire` (the old CA is trusted no more): every node's certificate must come from the new
//!   CA, or its next call is refused.
//!
//! `--force` overrides, naming the nodes that will have to join again.

use crate::config::Config;
use crate::error::ManagerError;
use crate::pki::{rotate, sha256_hex};
use crate::store::NodeRow;

/// A rotation step, or where the rotation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Status,
    Rotate,
    Activate,
    Retire,
}

/// Runs `step` on the manager's data directory; returns what to tell the operator.
pub fn run(cfg: &Config, step: Step, force: bool) -> Result<String, ManagerError> {
    let dir = &cfg.data_dir;
    let nodes: Vec<NodeRow> = crate::store::open(&cfg.store())?
        .nodes()?
        .into_iter()
        .filter(|n| n.has_cert)
        .collect();
    let st = rotate::Status::read(dir)?;
    let bundle = std::fs::read(dir.join("ca.pem")).map_err(crate::error::io_err(format!(
        "reading {}/ca.pem",
        dir.display()
    )))?;
    let bundle_hash = sha256_hex(&bundle);
    let signer = rotate::name_of(&st.signer);
    let untrusting: Vec<&str> = nodes
        .iter()
        .filter(|n| n.trust_sha256 != bundle_hash)
        .map(|n| n.name.as_str())
        .collect();
    let old_certs: Vec<&str> = nodes
        .iter()
        .filter(|n| n.cert_ca != signer)
        .map(|n| n.name.as_str())
        .collect();
    let gate = |lagging: &[&str], why: &str| -> Result<String, ManagerError> {
        if lagging.is_empty() {
            return Ok(String::new());
        }
        let names = list(lagging);
        if force {
            Ok(format!("forced: {names} will have to join again ({why})\n"))
        } else {
            Err(ManagerError::Conflict(format!(
                "{} node(s) not ready: {names} {why}; wait (see cellwall-manager ca status) or \
                 pass --force",
                lagging.len()
            )))
        }
    };
    let restart = "restart the manager for it to take effect";
    Ok(match step {
        Step::Status => {
            let mut s = format!(
                "signing CA: {signer}\nstaged CA: {}\ntrusted CA certificates (ca.pem): {}\n",
                st.next.as_deref().map_or("none".into(), rotate::name_of),
                st.trusted
            );
            s += &format!(
                "nodes without the current trust bundle: {}\nnodes with a certificate of another CA: {}\n",
                list(&untrusting),
                list(&old_certs)
            );
            s += match (&st.next, st.trusted) {
                (Some(_), _) => {
                    "next: once every node has the bundle, cellwall-manager ca activate\n"
                }
                (None, 2..) => {
                    "next: once every node's certificate is the new CA's, cellwall-manager ca retire\n"
                }
                _ => "no rotation under way (cellwall-manager ca rotate starts one)\n",
            };
            s
        }
        Step::Rotate => {
            let id = rotate::begin(dir, cfg.lifetimes.ca)?;
            format!(
                "staged CA {}; ca.pem now trusts it too. {restart}: agents fetch the bundle when \
                 they reconnect; then cellwall-manager ca activate\n",
                rotate::name_of(&id)
            )
        }
        Step::Activate => {
            let forced = gate(&untrusting, "have not fetched the bundle with the new CA")?;
            let id = rotate::activate(dir)?;
            format!(
                "{forced}CA {} signs from the next start. {restart}: agents renew their \
                 certificates when they reconnect; then cellwall-manager ca retire\n",
                rotate::name_of(&id)
            )
        }
        Step::Retire => {
            let forced = gate(&old_certs, "still hold certificates of the old CA")?;
            let gone = rotate::retire(dir)?;
            format!(
                "{forced}ca.pem trusts {signer} only; deleted the key(s) of {}. {restart}; give \
                 ca.pem to CLI users who keep their own copy\n",
                gone.iter()
                    .map(|id| rotate::name_of(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    })
}

fn list(names: &[&str]) -> String {
    match names.len() {
        0 => "none".into(),
        1..=20 => names.join(", "),
        n => format!("{} and {} more", names[..20].join(", "), n - 20),
    }
}

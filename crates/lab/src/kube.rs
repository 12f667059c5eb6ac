//! `lab up --source kubernetes`: the lab's objects live in a Kubernetes API server — the repo's
//! fake one ([`cellwall_kube::fake`]), run as the lab's `kube-api` process — and the lab's
//! manager watches it (`--kubeconfig`) instead of receiving them over REST. `lab apply` and
//! `lab delete` write through that API (create, replace, delete), as `kubectl` would.

use crate::error::{io, LabError, Result};
use crate::state::state_dir;
use cellwall_api::client::Client;
use cellwall_api::ApplyRequest;
use cellwall_kube::fake::{same_content, FakeApi, TOKEN};
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The arguments after the running binary that start the lab's API server process: the
/// binary embedding this crate must route `lab kube-api --name NAME` to [`serve_api`].
pub const KUBE_API_COMMAND: [&str; 2] = ["lab", "kube-api"];

/// How long the manager's view may take to settle after a write to the API.
const SETTLE: Duration = Duration::from_secs(20);
/// No new revision for this long after one appeared: the watches delivered the write.
const QUIET: Duration = Duration::from_millis(300);

/// The lab's kubeconfig (written by the API server process when it is ready).
pub fn kubeconfig(name: &str) -> PathBuf {
    state_dir(name).join("kubeconfig")
}

fn endpoint_file(name: &str) -> PathBuf {
    state_dir(name).join("kube-api.url")
}

/// The context of the lab's kubeconfig.
pub fn context(name: &str) -> String {
    format!("lab-{name}")
}

/// The API server process: serves until killed.
pub fn serve_api(name: &str) -> Result<()> {
    let api = FakeApi::start().map_err(io("starting the fake Kubernetes API server"))?;
    write_private(&kubeconfig(name), &api.kubeconfig(&context(name)))?;
    // Written last: its presence says the server is up.
    write_private(&endpoint_file(name), &api.url())?;
    tracing::info!("fake Kubernetes API server for lab {name} at {}", api.url());
    loop {
        std::thread::park();
    }
}

pub(crate) fn write_private(path: &std::path::Path, text: &str) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)?;
        std::io::Write::write_all(&mut f, text.as_bytes())?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(io(format!("writing {}", path.display())))
}

/// Waits until the lab's API server process is up (it writes its URL).
pub(crate) fn wait_api(name: &str, log: &std::path::Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if endpoint_file(name).exists() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LabError::Refused {
                at: "the lab's Kubernetes API server".into(),
                reason: format!(
                    "not up after 20 s:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Every object of the request's documents (a `v1 List` counts as its items).
fn objects(req: &ApplyRequest) -> Result<Vec<Value>> {
    let mut out = Vec::new();
    for d in &req.documents {
        let values = cellwall_policy::load::read_values(&d.file, &d.text)
            .map_err(|e| LabError::Manifest(e.into()))?;
        for v in values {
            match v["kind"].as_str() {
                Some("List") => out.extend(v["items"].as_array().cloned().unwrap_or_default()),
                Some(_) => out.push(v),
                None => {}
            }
        }
    }
    Ok(out)
}

/// The object's URL under `base`, or none for kinds the API does not serve.
fn object_url(base: &str, v: &Value) -> Option<(String, String)> {
    let r = cellwall_kube::resource_of(v["apiVersion"].as_str()?, v["kind"].as_str()?)?;
    let name = v["metadata"]["name"].as_str()?;
    let collection = if r.namespaced {
        let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
        let prefix = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        format!("{base}{prefix}/namespaces/{ns}/{}", r.plural)
    } else {
        format!("{base}{}", r.path())
    };
    Some((format!("{collection}/{name}"), collection))
}

fn refused(at: &str, e: ureq::Error) -> LabError {
    let reason = match e {
        ureq::Error::Status(code, r) => format!("{code}: {}", r.into_string().unwrap_or_default()),
        other => other.to_string(),
    };
    LabError::Refused {
        at: at.into(),
        reason,
    }
}

/// Writes the request's objects to the lab's API server (create or replace; with `delete`,
/// delete them). Returns how many objects changed.
pub(crate) fn push(name: &str, req: &ApplyRequest, delete: bool) -> Result<usize> {
    let base = std::fs::read_to_string(endpoint_file(name))
        .map_err(io("reading the lab's Kubernetes API address"))?;
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(10))
        .build();
    let auth = format!("Bearer {TOKEN}");
    let mut changed = 0;
    for v in objects(req)? {
        let Some((item, collection)) = object_url(&base, &v) else {
            continue;
        };
        let current = match agent.get(&item).set("Authorization", &auth).call() {
            Ok(r) => Some(
                r.into_json::<Value>()
                    .map_err(io(format!("reading {item}")))?,
            ),
            Err(ureq::Error::Status(404, _)) => None,
            Err(e) => return Err(refused(&item, e)),
        };
        let r = match (delete, current) {
            (true, None) => continue,
            (true, Some(_)) => agent.delete(&item).set("Authorization", &auth).call(),
            (false, None) => agent
                .post(&collection)
                .set("Authorization", &auth)
                .send_json(&v),
            (false, Some(cur)) if same_content(&cur, &v) => continue,
            (false, Some(_)) => agent.put(&item).set("Authorization", &auth).send_json(&v),
        };
        r.map_err(|e| refused(&item, e))?;
        changed += 1;
    }
    Ok(changed)
}

/// Waits until the manager's revision moved past `before` and then stayed put for a moment
/// (every resource's watch delivered what was written), with at least `workloads` workloads.
/// Returns that revision.
pub(crate) fn settle(client: &Client, before: u64, workloads: usize) -> Result<u64> {
    let t0 = Instant::now();
    let mut last = (before, Instant::now());
    loop {
        let rev = client.nodes()?.revision;
        if rev != last.0 {
            last = (rev, Instant::now());
        }
        if rev > before && last.1.elapsed() >= QUIET && client.workloads()?.items.len() >= workloads
        {
            return Ok(rev);
        }
        if t0.elapsed() > SETTLE {
            return Err(LabError::Refused {
                at: "the lab's manager".into(),
                reason: format!(
                    "did not take the objects from the Kubernetes API within {SETTLE:?} \
                     (revision {rev}; see manager.log)"
                ),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

//! A lab's life: `up` (network, servers, manager, agent), `apply`/`delete` (labels into the
//! lab's state, everything through the manager), `host-add`, restarts, `exec`, and `down`,
//! which works from the name alone so it also cleans up after a crash.

use crate::error::{io, LabError, Result};
use crate::net;
use crate::state::{node_ns, ns_prefix, pin_dir, state_dir, LabState, LAB_NODE};
use crate::state::{Cni, DatapathKind, Source, Visibility};
use crate::supervise;
use cellwall_api::client::Client;
use cellwall_api::ApplyRequest;
use cellwall_manifests::{assemble, File, DEFAULT_POD_POOL};
use cellwall_policy::load::{Located, Object};
use cellwall_policy::{Inventory, Workload, WorkloadKey};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// How long `apply` waits for the agent to enforce a revision.
const APPLY_WAIT: Duration = Duration::from_secs(15);

/// What `up` builds.
#[derive(Debug, Clone)]
pub struct UpSpec {
    pub name: String,
    /// Manifests, as for `analyze`: Namespaces, Pods (one network namespace each), Nodes, policies.
    pub files: Vec<PathBuf>,
    pub datapath: DatapathKind,
    pub visibility: Visibility,
    /// Where the lab's manager takes the objects from.
    pub source: Source,
    /// Skip (with a warning) objects of kinds Cellwall does not read, instead of failing.
    pub ignore_unknown_kinds: bool,
    /// How pods are wired to the node.
    pub cni: Cni,
    /// With `Source::Kubernetes`: the name the manager gives the lab's cluster (its objects are
    /// then qualified, as when one manager watches several clusters).
    pub cluster: Option<String>,
}

/// A lab that is up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Up {
    pub elapsed: Duration,
    pub state_dir: PathBuf,
    /// The manager's revision after the manifests were applied.
    pub revision: u64,
}

/// What `down` removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down {
    pub namespaces_removed: usize,
}

/// Reads manifests once: their text (for the manager) and objects (for the lab). Skipped kinds
/// are reported as warnings.
fn read_manifests(paths: &[PathBuf], ignore_unknown: bool) -> Result<(Vec<File>, Vec<Located>)> {
    // The manager gets the files' text; standard input cannot be named to it.
    if paths.iter().any(|f| f.as_os_str() == "-") {
        return Err(LabError::Stdin);
    }
    let files = cellwall_manifests::read_files(paths)?;
    let loaded = cellwall_manifests::parse_files(&files, ignore_unknown)?;
    for u in &loaded.skipped {
        tracing::warn!("warning: skipped: {u}");
    }
    Ok((files, loaded.objects))
}

/// The manifests as the manager gets them: Pods bound to their lab nodes and addresses
/// ([`crate::bind`]).
fn request(files: Vec<File>, workloads: &[Workload], ignore_unknown: bool) -> ApplyRequest {
    ApplyRequest {
        documents: crate::bind::bind(files, workloads),
        ignore_unknown_kinds: ignore_unknown,
    }
}

/// Builds a lab from manifests and returns when its agent enforces them. On failure everything
/// created is removed again.
pub fn up(spec: &UpSpec) -> Result<Up> {
    let t0 = Instant::now();
    let name = spec.name.as_str();
    if state_dir(name).exists() || Path::new(&format!("/run/netns/{}", node_ns(name))).exists() {
        return Err(LabError::Exists { name: name.into() });
    }
    if let Some(c) = &spec.cluster {
        if spec.source != Source::Kubernetes {
            return Err(LabError::Refused {
                at: "--cluster".into(),
                reason: "a cluster name needs --source kubernetes".into(),
            });
        }
        if !cellwall_policy::clusters::valid_cluster_name(c) {
            return Err(LabError::Refused {
                at: "--cluster".into(),
                reason: format!("{c:?}: expected 1-63 characters of a-z, 0-9 and '-'"),
            });
        }
    }
    let (files, objects) = read_manifests(&spec.files, spec.ignore_unknown_kinds)?;
    let mut inv = assemble(objects, DEFAULT_POD_POOL.parse().expect("valid"))?.inventory;
    for w in inv.workloads.values_mut() {
        if w.node.is_none() {
            std::sync::Arc::make_mut(w).node = Some(LAB_NODE.to_string());
        }
    }
    std::fs::create_dir_all(state_dir(name)).map_err(io("creating the lab state directory"))?;
    let workloads: Vec<Workload> = inv.workloads.values().map(|w| Workload::clone(w)).collect();
    let req = request(files, &workloads, spec.ignore_unknown_kinds);
    let revision = match build(spec, inv, req) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("lab up failed; cleaning up");
            let _ = down(name);
            return Err(e);
        }
    };
    let up = Up {
        elapsed: t0.elapsed(),
        state_dir: state_dir(name),
        revision,
    };
    tracing::info!(
        "lab {name} is up in {:.1}s (state: {})",
        up.elapsed.as_secs_f64(),
        up.state_dir.display()
    );
    Ok(up)
}

fn build(spec: &UpSpec, inv: Inventory, req: ApplyRequest) -> Result<u64> {
    let pods = net::build(net::plan(&spec.name, &inv, spec.cni))?;
    let state = LabState {
        name: spec.name.clone(),
        datapath: spec.datapath,
        visibility: spec.visibility,
        source: spec.source,
        cni: spec.cni,
        cluster: spec.cluster.clone(),
        pods,
        namespaces: inv.namespaces.into_values().collect(),
        workloads: inv
            .workloads
            .into_values()
            .map(std::sync::Arc::unwrap_or_clone)
            .collect(),
        nodes: inv.nodes.into_values().collect(),
    };
    state.save()?;
    supervise::start_servers(&state)?;
    let (client, revision) = match state.source {
        Source::Files => {
            let client = supervise::start_manager(&state)?;
            let revision = client.apply(&req, false)?.revision;
            tracing::info!("manager: applied the manifests (revision {revision})");
            (client, revision)
        }
        Source::Kubernetes => {
            supervise::start_kube_api(&state)?;
            let n = crate::kube::push(&state.name, &req, false)?;
            let client = supervise::start_manager(&state)?;
            let revision = crate::kube::settle(&client, 0, state.workloads.len())?;
            tracing::info!(
                "manager: took {n} objects from the Kubernetes API (revision {revision})"
            );
            (client, revision)
        }
    };
    supervise::start_agent(&state, &client)?;
    Ok(revision)
}

/// Merges applied objects into the lab's state: labels of Pods, Namespaces and Nodes may
/// change; pods cannot be added nor their addresses, ports or hostNetwork changed; a delete
/// removes policies only. Policies themselves live in the manager.
pub(crate) fn merge(state: &mut LabState, objects: Vec<Located>, delete: bool) -> Result<()> {
    let refused = |at: &dyn std::fmt::Display, reason: String| LabError::Refused {
        at: at.to_string(),
        reason,
    };
    for o in objects {
        let src = o.source;
        match (o.object, delete) {
            // The manager reports what a delete did not find; host declarations live there too
            // (a host's namespace comes with `lab host-add`).
            (Object::Policy(_) | Object::Host(_), _) => {}
            (Object::Namespace(n), false) => {
                state.namespaces.retain(|m| m.name != n.name);
                state.namespaces.push(n);
            }
            (Object::Node(n), false) => {
                let old = state.nodes.iter().find(|m| m.name == n.name);
                if old.is_some_and(|o| o.ips != n.ips) {
                    return Err(refused(
                        &src,
                        "changing a node's addresses needs a new lab (down, then up)".into(),
                    ));
                }
                state.nodes.retain(|m| m.name != n.name);
                state.nodes.push(n);
            }
            (Object::Pod(mut w), false) => {
                let Some(old) = state.workloads.iter().find(|o| o.key() == w.key()) else {
                    return Err(refused(
                        &src,
                        format!(
                            "pod {} is not in the lab: adding pods needs a new lab (down, then up)",
                            w.key()
                        ),
                    ));
                };
                if w.ips.is_empty() {
                    w.ips = old.ips.clone();
                }
                if w.node.is_none() {
                    w.node = old.node.clone();
                }
                if w.ips != old.ips || w.ports != old.ports || w.host_network != old.host_network {
                    return Err(refused(&src, format!("pod {}: only labels can change in a running lab (addresses, ports and hostNetwork need down, then up)", w.key())));
                }
                state.workloads.retain(|o| o.key() != w.key());
                state.workloads.push(w);
            }
            (o, true) => {
                return Err(refused(
                    &src,
                    format!(
                        "lab delete removes policies; {} cannot be deleted from a running lab",
                        o.describe()
                    ),
                ))
            }
        }
    }
    Ok(())
}

/// Applies (or, with `delete`, removes the policies of) manifests to a running lab and waits
/// until its agents enforce the new revision, which it returns.
pub fn apply(name: &str, files: &[PathBuf], delete: bool) -> Result<u64> {
    let mut state = LabState::load(name)?;
    let (files, objects) = read_manifests(files, false)?;
    merge(&mut state, objects, delete)?;
    state.save()?;
    let c = Client::for_lab(name)?;
    let req = request(files, &state.workloads, false);
    let rev = match state.source {
        Source::Files => c.apply(&req, delete)?.revision,
        Source::Kubernetes => {
            let before = c.nodes()?.revision;
            if crate::kube::push(name, &req, delete)? == 0 {
                before
            } else {
                crate::kube::settle(&c, before, 0)?
            }
        }
    };
    c.wait_applied(rev, APPLY_WAIT)?;
    tracing::info!("revision {rev} enforced");
    Ok(rev)
}

/// Restarts the lab's manager (kill -9, then start on the same ports and data).
pub fn restart_manager(name: &str) -> Result<()> {
    supervise::start_manager(&LabState::load(name)?).map(|_| ())
}

/// What an agent does when it starts or is upgraded: restarts the lab's agent (kill -9), which
/// loads the programs, attaches them to every workload interface (replacing what is there
/// atomically) and re-applies policy.
pub fn reattach(name: &str) -> Result<()> {
    let state = LabState::load(name)?;
    supervise::start_agent(&state, &Client::for_lab(name)?)
}

/// Runs a command in a pod's network namespace (`ip netns exec`); returns its exit code.
pub fn exec(name: &str, pod: &WorkloadKey, command: &[String]) -> Result<i32> {
    let state = LabState::load(name)?;
    let p = state.pod(pod)?;
    let status = Command::new("ip")
        .args(["netns", "exec", &p.netns])
        .args(command)
        .status()
        .map_err(|source| LabError::Run {
            program: "ip netns exec".into(),
            source,
        })?;
    Ok(status.code().unwrap_or(1))
}

/// Adds a host to the lab: a network namespace acting as a VM or bare-metal host, its eth0
/// routed through the lab's node, protected by an agent in host mode as workload `hosts/HOST`.
/// Returns the host's namespace.
pub fn host_add(name: &str, host: &str, ip: IpAddr, labels: &[String]) -> Result<String> {
    let state = LabState::load(name)?;
    if state.datapath == DatapathKind::None {
        return Err(LabError::NoDatapath { name: name.into() });
    }
    crate::state::validate_host_name(host)?;
    let hosts = state_dir(name).join("hosts");
    if hosts.join(host).exists() {
        return Err(LabError::HostExists {
            name: name.into(),
            host: host.into(),
        });
    }
    let k = std::fs::read_dir(&hosts).map(|d| d.count()).unwrap_or(0);
    let plan = net::plan_host(name, k, ip);
    net::build_host(name, &plan)?;
    let client = Client::for_lab(name)?;
    // The manager accepts a host-mode agent's report only for a host an admin declared for its
    // node, with its labels and addresses: the lab declares it first, as an admin would.
    client.apply(&declare_host(host, ip, labels)?, false)?;
    supervise::start_host_agent(&state, &client, host, ip, labels, &plan.netns)?;
    tracing::info!(
        "host {host} ({ip}) is up in {}, protected on its eth0 by an agent in host mode",
        plan.netns
    );
    Ok(plan.netns)
}

/// The `Host` declaration of a lab host: workload `hosts/HOST` on node `HOST`, at `ip`, with
/// `labels` (`k=v`).
fn declare_host(host: &str, ip: IpAddr, labels: &[String]) -> Result<ApplyRequest> {
    let mut l = serde_json::Map::new();
    for kv in labels {
        let (k, v) = kv.split_once('=').ok_or_else(|| LabError::Refused {
            at: format!("--label {kv:?}"),
            reason: "expected KEY=VALUE".into(),
        })?;
        l.insert(k.to_string(), serde_json::Value::String(v.to_string()));
    }
    let doc = serde_json::json!({
        "apiVersion": "cellwall.io/v1alpha1",
        "kind": "Host",
        "metadata": {"name": host, "namespace": "hosts", "labels": l},
        "spec": {"node": host, "addresses": [ip.to_string()]},
    });
    Ok(ApplyRequest {
        documents: vec![cellwall_api::Document {
            file: format!("host {host}"),
            text: doc.to_string(),
        }],
        ignore_unknown_kinds: false,
    })
}

/// Removes the lab: its processes, namespaces (and with them every veth and tc filter), pins
/// and state. Works from the name alone, so it also cleans up after a crash.
pub fn down(name: &str) -> Result<Down> {
    supervise::kill_all(name);
    let prefix = ns_prefix(name);
    let mut removed = 0;
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&prefix) {
                net::netns_del(&n)?;
                removed += 1;
            }
        }
    }
    for dir in [pin_dir(name), state_dir(name)] {
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(io(format!("removing {}", dir.display())))?;
        }
    }
    tracing::info!("lab {name} is down ({removed} namespaces removed)");
    Ok(Down {
        namespaces_removed: removed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    fn objects(yaml: &str) -> Vec<Located> {
        cellwall_policy::load::parse_file("change.yaml", yaml)
            .unwrap()
            .objects
    }

    const RELABEL: &str = "apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a2}}
spec: {containers: [{ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
";

    #[test]
    fn labels_change_and_addresses_and_nodes_are_kept() {
        let mut s = sample();
        merge(&mut s, objects(RELABEL), false).unwrap();
        let a = s.workloads.iter().find(|w| w.name == "a").unwrap();
        assert_eq!(a.labels.get("app").map(String::as_str), Some("a2"));
        // Not given in the change: taken from the lab.
        assert_eq!(a.ips, ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert_eq!(a.node.as_deref(), Some("lab"));
        assert_eq!(s.workloads.len(), 2);
    }

    #[test]
    fn new_pods_new_ports_and_deletes_of_inventory_are_refused() {
        let mut s = sample();
        let e = merge(
            &mut s,
            objects(&RELABEL.replace("name: a,", "name: z,")),
            false,
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("change.yaml:1 (document 1): pod t/z is not in the lab"),
            "{e}"
        );
        let e = merge(&mut s, objects(&RELABEL.replace("80", "81")), false).unwrap_err();
        assert!(e.to_string().contains("only labels can change"), "{e}");
        let e = merge(&mut s, objects(RELABEL), true).unwrap_err();
        assert!(
            e.to_string().ends_with(
                "lab delete removes policies; Pod t/a cannot be deleted from a running lab"
            ),
            "{e}"
        );
        let policy = "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: p, namespace: t}
spec: {podSelector: {}}
";
        let before = s.clone();
        merge(&mut s, objects(policy), true).unwrap();
        merge(&mut s, objects(policy), false).unwrap();
        assert_eq!(s, before);
    }

    #[test]
    fn node_addresses_cannot_change() {
        let mut s = sample();
        let node = "apiVersion: v1
kind: Node
metadata: {name: n2, labels: {zone: a}}
status: {addresses: [{type: InternalIP, address: 10.9.0.2}]}
";
        merge(&mut s, objects(node), false).unwrap();
        merge(&mut s, objects(&node.replace("zone: a", "zone: b")), false).unwrap();
        assert_eq!(s.nodes.len(), 1);
        let e = merge(
            &mut s,
            objects(&node.replace("10.9.0.2", "10.9.0.3")),
            false,
        )
        .unwrap_err();
        assert!(e.to_string().contains("changing a node's addresses"), "{e}");
    }

    #[test]
    fn standard_input_is_refused_before_anything_is_read() {
        let e = read_manifests(&[PathBuf::from("-")], false).unwrap_err();
        assert!(matches!(e, LabError::Stdin));
    }

    #[test]
    fn an_apply_request_carries_every_file() {
        let r = request(
            vec![File {
                name: "a.yaml".into(),
                text: "x".into(),
            }],
            &[],
            true,
        );
        assert_eq!(r.documents[0].file, "a.yaml");
        assert!(r.ignore_unknown_kinds);
    }
}

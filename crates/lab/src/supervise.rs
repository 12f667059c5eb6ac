//! The lab's processes: its manager and agent (binaries installed beside the running one), the
//! server process, host-mode agents of `host-add`. Each runs in its own process group with its
//! output appended to a log in the state directory and its pid in a pid file; a pid file is
//! only acted on while the process's command line still names this lab's state directory.

use crate::error::{io, LabError, Result};
use crate::state::{node_ns, pin_dir, state_dir, LabState, LAB_NODE};
use cellwall_agent::node::{EndpointsFile, LocalEndpoint};
use cellwall_api::client::Client;
use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The arguments after the running binary that start the lab's server process: the binary
/// embedding this crate must route `lab serve --name NAME` to [`crate::serve`].
pub const SERVE_COMMAND: [&str; 2] = ["lab", "serve"];

/// A Cellwall binary installed beside the running one (`cargo build --workspace` builds all).
pub fn sibling(bin: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(io("locating the cellwall binary"))?;
    let p = exe.with_file_name(bin);
    if !p.exists() {
        return Err(LabError::SiblingMissing {
            bin: bin.into(),
            exe: exe.display().to_string(),
        });
    }
    Ok(p)
}

/// Starts a background process with its own process group, output appended to `log`.
fn spawn_bg(cmd: &mut Command, log: &Path, pidfile: &Path) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    let log_f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(io(format!("opening {}", log.display())))?;
    let out = log_f
        .try_clone()
        .map_err(io(format!("opening {}", log.display())))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log_f)
        .process_group(0)
        .spawn()
        .map_err(io(format!("starting {:?}", cmd.get_program())))?;
    write_pid(pidfile, child.id())?;
    Ok(child)
}

fn write_pid(pidfile: &Path, pid: u32) -> Result<()> {
    std::fs::write(pidfile, pid.to_string()).map_err(io(format!("writing {}", pidfile.display())))
}

/// The last lines of a log, for errors. A backtrace (printed when `RUST_BACKTRACE` is set) is
/// left out: its frames would push the error itself out of the tail.
fn log_tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let end = ["\nStack backtrace:", "\nstack backtrace:"].map(|m| s.find(m));
    let lines: Vec<&str> = s[..end.into_iter().flatten().min().unwrap_or(s.len())]
        .lines()
        .collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Kills (-9) the process of a pid file if it is still the one we started (its command line
/// contains `marker`, a path of this lab), waits up to 1 s for it to go, removes the file.
pub(crate) fn kill_pidfile(pidfile: &Path, marker: &str) {
    let Ok(pid) = std::fs::read_to_string(pidfile) else {
        return;
    };
    let pid = pid.trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(marker) {
        kill9(pid);
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(pidfile);
}

fn kill9(pid: &str) {
    let _ = Command::new("kill")
        .args(["-9", pid])
        .stderr(Stdio::null())
        .status();
}

/// Kills every process of lab `name`, also those a crash left without pid files: agents and
/// manager (their command lines name the state directory), then the server process.
pub(crate) fn kill_all(name: &str) {
    let dir = state_dir(name);
    let marker = dir.display().to_string();
    kill_pidfile(&dir.join("agent.pid"), &marker);
    kill_pidfile(&dir.join("manager.pid"), &marker);
    for bin in ["cellwall-agent", "cellwall-manager"] {
        let _ = Command::new("pkill")
            .args(["-9", "-f", &format!("{bin} .*{marker}/")])
            .stderr(Stdio::null())
            .status();
    }
    for pidfile in ["servers.pid", "kube-api.pid"] {
        if let Ok(pid) = std::fs::read_to_string(dir.join(pidfile)) {
            kill9(pid.trim());
        }
    }
    let api = crate::kube::KUBE_API_COMMAND.join(" ");
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("{api} --name {name}$")])
        .stderr(Stdio::null())
        .status();
    let serve = SERVE_COMMAND.join(" ");
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("{serve} --name {name}$")])
        .stderr(Stdio::null())
        .status();
}

/// The manager's ports: its previous run's (`manager.ports`: agents find a restarted manager
/// where they left it), else `None`: the manager binds free ports itself, as a port picked here
/// could be taken by any process on the host before the manager binds it.
fn manager_ports(dir: &Path) -> Result<Option<(u16, u16)>> {
    let ports = dir.join("manager.ports");
    match std::fs::read_to_string(&ports) {
        Ok(s) => {
            let v: Vec<u16> = s
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            match v[..] {
                [a, g] if a != 0 && g != 0 => Ok(Some((a, g))),
                _ => Err(LabError::DamagedFile {
                    path: ports.display().to_string(),
                    detail: String::new(),
                }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(format!("reading {}", ports.display()))(e)),
    }
}

/// Records the ports a manager bound (from its `endpoints.json`) for its next start.
fn save_manager_ports(dir: &Path, ep: &ManagerEndpoints) -> Result<()> {
    let port = |a: &str, what: &str| {
        a.parse::<std::net::SocketAddr>()
            .map(|s| s.port())
            .map_err(|e| LabError::DamagedFile {
                path: dir.join("manager/endpoints.json").display().to_string(),
                detail: format!(": {what} {a:?}: {e}"),
            })
    };
    let (api, grpc) = (port(&ep.api, "api")?, port(&ep.grpc, "grpc")?);
    let ports = dir.join("manager.ports");
    std::fs::write(&ports, format!("{api} {grpc}\n"))
        .map_err(io(format!("writing {}", ports.display())))
}

/// The manager's command line.
pub(crate) fn manager_args(data: &Path, api: u16, grpc: u16) -> Vec<OsString> {
    vec![
        "--data-dir".into(),
        data.into(),
        "--api-listen".into(),
        format!("127.0.0.1:{api}").into(),
        "--grpc-listen".into(),
        format!("127.0.0.1:{grpc}").into(),
    ]
}

/// (Re)starts the lab's manager on loopback (kill -9 first; the same ports and data as its
/// previous run, if any) and returns a client for it.
pub fn start_manager(state: &LabState) -> Result<Client> {
    let dir = state_dir(&state.name);
    let data = dir.join("manager");
    std::fs::create_dir_all(&data).map_err(io(format!("creating {}", data.display())))?;
    let saved = manager_ports(&dir)?;
    let (api, grpc) = saved.unwrap_or((0, 0));
    kill_pidfile(&dir.join("manager.pid"), &data.display().to_string());
    let _ = std::fs::remove_file(data.join("endpoints.json"));
    let log = dir.join("manager.log");
    let mut cmd = Command::new(sibling("cellwall-manager")?);
    cmd.args(manager_args(&data, api, grpc));
    if state.source == crate::state::Source::Kubernetes {
        cmd.arg("--kubeconfig")
            .arg(crate::kube::kubeconfig(&state.name));
        if let Some(c) = &state.cluster {
            cmd.arg("--kube-context")
                .arg(format!("{c}={}", crate::kube::context(&state.name)));
        }
    }
    let mut child = spawn_bg(&mut cmd, &log, &dir.join("manager.pid"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    // The manager replaces it atomically once both listeners are bound.
    let endpoints = data.join("endpoints.json");
    let ep = loop {
        if let Some(ep) = std::fs::read(&endpoints)
            .ok()
            .and_then(|b| serde_json::from_slice::<ManagerEndpoints>(&b).ok())
        {
            break ep;
        }
        if let Some(st) = child
            .try_wait()
            .map_err(io("waiting for the lab manager"))?
        {
            return Err(LabError::Exited {
                process: "manager",
                status: st.to_string(),
                log: log_tail(&log),
            });
        }
        if Instant::now() > deadline {
            return Err(LabError::ManagerNotStarted {
                log: log_tail(&log),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if saved.is_none() {
        save_manager_ports(&dir, &ep)?;
    }
    Ok(Client::for_lab(&state.name)?)
}

/// What the manager writes at start (`endpoints.json` in its data directory).
#[derive(serde::Deserialize)]
struct ManagerEndpoints {
    api: String,
    grpc: String,
}

/// The manager's gRPC address, from the file it writes at start.
fn grpc_addr(name: &str) -> Result<String> {
    let p = state_dir(name).join("manager").join("endpoints.json");
    let bytes = std::fs::read(&p).map_err(io(format!("reading {}", p.display())))?;
    let ep: ManagerEndpoints =
        serde_json::from_slice(&bytes).map_err(|e| LabError::DamagedFile {
            path: p.display().to_string(),
            detail: format!(": {e}"),
        })?;
    Ok(ep.grpc)
}

/// What every lab agent is given: the manager, its CA, the bootstrap token.
pub(crate) fn agent_base_args(grpc: &str, manager_data: &Path) -> Vec<OsString> {
    vec![
        "--manager".into(),
        grpc.into(),
        "--ca".into(),
        manager_data.join("ca.pem").into(),
        "--bootstrap-token-file".into(),
        manager_data.join("bootstrap.token").into(),
    ]
}

/// The lab agent's own arguments: every pod of the lab, in the node namespace.
pub(crate) fn lab_agent_args(state: &LabState) -> Vec<OsString> {
    let dir = state_dir(&state.name);
    let mut a: Vec<OsString> = vec![
        "--node".into(),
        LAB_NODE.into(),
        "--state-dir".into(),
        dir.join("agent").into(),
        "--endpoints".into(),
        dir.join("endpoints.json").into(),
        "--netns".into(),
        node_ns(&state.name).into(),
        "--pin-dir".into(),
        pin_dir(&state.name).into(),
    ];
    if state.agent_finds_interfaces() {
        a.push("--find-interfaces".into());
    }
    if let Some(c) = &state.cluster {
        a.push("--cluster".into());
        a.push(c.into());
    }
    for s in [
        "--datapath",
        state.datapath.as_str(),
        "--visibility",
        state.visibility.as_str(),
        "--metrics-listen",
        "127.0.0.1:0",
        "--flow-interval-ms",
        "200",
    ] {
        a.push(s.into());
    }
    a
}

/// A host-mode agent's own arguments (`host-add`): protects the host on its eth0.
pub(crate) fn host_agent_args(
    state: &LabState,
    host: &str,
    ip: IpAddr,
    labels: &[String],
    netns: &str,
) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![
        "--node".into(),
        host.into(),
        "--state-dir".into(),
        state_dir(&state.name).join("hosts").join(host).into(),
        "--netns".into(),
        netns.into(),
        "--pin-dir".into(),
        pin_dir(&state.name).join("hosts").join(host).into(),
    ];
    for s in [
        "--host-workload".to_string(),
        format!("hosts/{host}"),
        "--host-interface".into(),
        "eth0".into(),
        "--host-ip".into(),
        ip.to_string(),
        "--visibility".into(),
        state.visibility.as_str().into(),
        "--flow-interval-ms".into(),
        "200".into(),
    ] {
        a.push(s.into());
    }
    for l in labels {
        a.push("--host-label".into());
        a.push(l.into());
    }
    a
}

/// The endpoints file the lab agent reads: every pod, its interface, addresses and node (the one
/// agent enforces for every lab node; it reports only its own node's pods). An agent that finds
/// interfaces itself is told the lab's nodes only.
pub(crate) fn endpoints_file(state: &LabState) -> EndpointsFile {
    if state.agent_finds_interfaces() {
        return EndpointsFile {
            nodes: state
                .node_names()
                .into_iter()
                .map(|n| state.node_id(&n))
                .collect(),
            endpoints: Vec::new(),
        };
    }
    let node_of = |k: &cellwall_policy::WorkloadKey| {
        state
            .workloads
            .iter()
            .find(|w| &w.key() == k)
            .and_then(|w| w.node.clone())
    };
    EndpointsFile {
        nodes: state.node_names().into_iter().collect(),
        endpoints: state
            .pods
            .iter()
            .map(|p| LocalEndpoint {
                key: p.key.to_string(),
                ips: p.ips.clone(),
                interface: p.host_if.clone().unwrap_or_default(),
                ifindex: p.ifindex,
                nic: false,
                node: node_of(&p.key),
            })
            .collect(),
    }
}

fn agent_command(state: &LabState, own: Vec<OsString>) -> Result<Command> {
    let data = state_dir(&state.name).join("manager");
    let mut cmd = Command::new(sibling("cellwall-agent")?);
    let mut base = agent_base_args(&grpc_addr(&state.name)?, &data);
    if state.cluster.is_some() {
        // A named cluster's node joins only with a token bound to that cluster.
        if let Some(i) = base.iter().position(|a| a == "--bootstrap-token-file") {
            base[i + 1] = cluster_token_file(&state.name).into();
        }
    }
    cmd.args(base).args(own);
    Ok(cmd)
}

fn cluster_token_file(name: &str) -> PathBuf {
    state_dir(name).join("cluster-bootstrap.token")
}

/// A bootstrap token bound to the lab's named cluster (`CLUSTER:*`), made once: the manager's
/// own bootstrap token is for nodes outside the watched clusters.
fn ensure_cluster_token(state: &LabState, client: &Client) -> Result<()> {
    let (Some(c), f) = (&state.cluster, cluster_token_file(&state.name)) else {
        return Ok(());
    };
    if f.exists() {
        return Ok(());
    }
    let t = client.create_token(&cellwall_api::TokenRequest {
        role: cellwall_api::TokenRole::Bootstrap,
        name: format!("lab {} agents", state.name),
        node: Some(format!("{c}:*")),
        ttl: None,
        single_use: false,
        replace: false,
    })?;
    crate::kube::write_private(&f, &t.token)
}

/// (Re)starts the lab's agent: kills the running one (-9: what a crash or upgrade looks like),
/// starts a new one, and waits until it enforces the manager's current revision.
pub fn start_agent(state: &LabState, client: &Client) -> Result<()> {
    let dir = state_dir(&state.name);
    let ep = dir.join("endpoints.json");
    let text = serde_json::to_vec_pretty(&endpoints_file(state)).expect("endpoints serialize");
    std::fs::write(&ep, text).map_err(io(format!("writing {}", ep.display())))?;
    let agent_dir = dir.join("agent");
    ensure_cluster_token(state, client)?;
    kill_pidfile(&dir.join("agent.pid"), &agent_dir.display().to_string());
    let _ = std::fs::remove_file(agent_dir.join("ready"));
    // The first apply attaches two TCX links per pod, and the kernel creates each one under
    // RTNL with a full RCU grace period (~12 ms here): 1,000 pods take ~25 s before anything
    // else. The wait grows with the pods so large labs do not time out.
    let interfaces = state.pods.iter().filter(|p| p.host_if.is_some()).count();
    run_agent(
        agent_command(state, lab_agent_args(state))?,
        client,
        &state.node_id(LAB_NODE),
        &dir.join("agent.log"),
        &dir.join("agent.pid"),
        &agent_dir,
        Duration::from_secs(30) + Duration::from_millis(60) * interfaces as u32,
    )
}

/// Starts `host`'s agent in host mode (its state under `hosts/HOST`) and waits for it.
pub(crate) fn start_host_agent(
    state: &LabState,
    client: &Client,
    host: &str,
    ip: IpAddr,
    labels: &[String],
    netns: &str,
) -> Result<()> {
    let dir = state_dir(&state.name);
    let agent_dir = dir.join("hosts").join(host);
    std::fs::create_dir_all(&agent_dir).map_err(io(format!("creating {}", agent_dir.display())))?;
    run_agent(
        agent_command(state, host_agent_args(state, host, ip, labels, netns))?,
        client,
        host,
        &dir.join(format!("host-{host}.log")),
        &dir.join(format!("host-{host}.pid")),
        &agent_dir,
        Duration::from_secs(30),
    )
}

/// Starts an agent and waits until it enforces the manager's current revision (or, with the
/// manager down, the state it saved).
fn run_agent(
    mut cmd: Command,
    client: &Client,
    node: &str,
    log: &Path,
    pidfile: &Path,
    agent_dir: &Path,
    wait: Duration,
) -> Result<()> {
    let mut child = spawn_bg(&mut cmd, log, pidfile)?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(st) = child.try_wait().map_err(io("waiting for the lab agent"))? {
            return Err(LabError::Exited {
                process: "agent",
                status: st.to_string(),
                log: log_tail(log),
            });
        }
        let nodes = match client.nodes() {
            Ok(n) => n,
            // The manager is down: the agent enforces the state it saved; wait for that.
            Err(e) if agent_dir.join("ready").exists() => {
                tracing::warn!("manager unreachable ({e}); the agent enforces its saved state");
                return Ok(());
            }
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let applied = nodes
            .items
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.applied_version);
        if applied.is_some_and(|a| a >= nodes.revision) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(LabError::AgentLate {
                revision: nodes.revision,
                secs: wait.as_secs(),
                log: log_tail(log),
            });
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Starts the lab's Kubernetes API server process (`KUBE_API_COMMAND` of the running binary)
/// and waits until it serves.
pub(crate) fn start_kube_api(state: &LabState) -> Result<()> {
    let dir = state_dir(&state.name);
    let log = dir.join("kube-api.log");
    let exe = std::env::current_exe().map_err(io("locating the cellwall binary"))?;
    let mut cmd = Command::new(exe);
    cmd.args(crate::kube::KUBE_API_COMMAND)
        .args(["--name", &state.name]);
    spawn_bg(&mut cmd, &log, &dir.join("kube-api.pid"))?;
    crate::kube::wait_api(&state.name, &log)
}

/// Starts the server process (`SERVE_COMMAND` of the running binary) and waits until every
/// listener is up (it writes `ready`).
pub(crate) fn start_servers(state: &LabState) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let dir = state_dir(&state.name);
    let _ = std::fs::remove_file(dir.join("ready"));
    let log_path = dir.join("servers.log");
    let opening = || io(format!("creating {}", log_path.display()));
    let log = std::fs::File::create(&log_path).map_err(opening())?;
    let out = log.try_clone().map_err(opening())?;
    let exe = std::env::current_exe().map_err(io("locating the cellwall binary"))?;
    let child = Command::new(exe)
        .args(SERVE_COMMAND)
        .args(["--name", &state.name])
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(log)
        .process_group(0)
        .spawn()
        .map_err(io("starting the lab servers"))?;
    write_pid(&dir.join("servers.pid"), child.id())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("ready").exists() {
        if Instant::now() > deadline {
            return Err(LabError::ServersNotReady {
                log: log_path.display().to_string(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;
    use crate::state::{DatapathKind, Visibility};

    fn strings(a: &[OsString]) -> Vec<String> {
        a.iter().map(|s| s.to_string_lossy().into_owned()).collect()
    }

    fn value_of<'a>(a: &'a [String], flag: &str) -> &'a str {
        let i = a.iter().position(|x| x == flag).expect(flag);
        &a[i + 1]
    }

    #[test]
    fn the_lab_agent_gets_the_lab_datapath_and_visibility() {
        let mut s = sample();
        let a = strings(&lab_agent_args(&s));
        assert_eq!(value_of(&a, "--node"), LAB_NODE);
        assert_eq!(value_of(&a, "--netns"), "cw-t1-node");
        assert_eq!(value_of(&a, "--pin-dir"), "/sys/fs/bpf/cellwall/t1");
        assert_eq!(value_of(&a, "--datapath"), "ebpf");
        assert_eq!(value_of(&a, "--visibility"), "off");
        assert_eq!(value_of(&a, "--flow-interval-ms"), "200");
        assert!(value_of(&a, "--state-dir").ends_with("t1/agent"));
        assert!(value_of(&a, "--endpoints").ends_with("t1/endpoints.json"));
        (s.datapath, s.visibility) = (DatapathKind::None, Visibility::On);
        let a = strings(&lab_agent_args(&s));
        assert_eq!(value_of(&a, "--datapath"), "none");
        assert_eq!(value_of(&a, "--visibility"), "on");
    }

    #[test]
    fn a_host_agent_runs_in_host_mode_with_its_labels() {
        let s = sample();
        let labels = ["role=db".to_string(), "cve=yes".to_string()];
        let a = strings(&host_agent_args(
            &s,
            "db",
            "10.1.0.9".parse().unwrap(),
            &labels,
            "cw-t1-h0",
        ));
        assert_eq!(value_of(&a, "--node"), "db");
        assert_eq!(value_of(&a, "--host-workload"), "hosts/db");
        assert_eq!(value_of(&a, "--host-interface"), "eth0");
        assert_eq!(value_of(&a, "--host-ip"), "10.1.0.9");
        assert_eq!(value_of(&a, "--netns"), "cw-t1-h0");
        assert_eq!(
            value_of(&a, "--pin-dir"),
            "/sys/fs/bpf/cellwall/t1/hosts/db"
        );
        assert!(!a.contains(&"--datapath".to_string()));
        let l: Vec<&String> = a
            .iter()
            .enumerate()
            .filter(|(i, _)| *i > 0 && a[i - 1] == "--host-label")
            .map(|(_, v)| v)
            .collect();
        assert_eq!(l, [&labels[0], &labels[1]]);
    }

    #[test]
    fn manager_and_base_agent_arguments() {
        let m = strings(&manager_args(Path::new("/d/manager"), 7480, 7481));
        assert_eq!(
            m,
            [
                "--data-dir",
                "/d/manager",
                "--api-listen",
                "127.0.0.1:7480",
                "--grpc-listen",
                "127.0.0.1:7481"
            ]
        );
        let b = strings(&agent_base_args("127.0.0.1:7481", Path::new("/d/manager")));
        assert_eq!(
            b,
            [
                "--manager",
                "127.0.0.1:7481",
                "--ca",
                "/d/manager/ca.pem",
                "--bootstrap-token-file",
                "/d/manager/bootstrap.token"
            ]
        );
    }

    #[test]
    fn the_endpoints_file_lists_every_pod_and_node() {
        let s = sample();
        let e = endpoints_file(&s);
        assert_eq!(e.nodes, ["lab", "n2"]);
        assert_eq!(e.endpoints.len(), 2);
        assert_eq!(e.endpoints[1].key, "t/b");
        assert_eq!(e.endpoints[1].interface, "cw1234h1");
        assert_eq!(e.endpoints[1].ifindex, 8);
        assert!(!e.endpoints[0].nic);
    }

    #[test]
    fn saved_manager_ports_are_reused_and_damage_is_reported() {
        let d = crate::state::tests::Scratch::new("ports");
        // A first start: the manager picks its ports; what it bound is kept for the next.
        assert_eq!(manager_ports(&d.0).unwrap(), None);
        let ep = ManagerEndpoints {
            api: "127.0.0.1:41001".into(),
            grpc: "127.0.0.1:41002".into(),
        };
        save_manager_ports(&d.0, &ep).unwrap();
        assert_eq!(manager_ports(&d.0).unwrap(), Some((41001, 41002)));
        std::fs::write(d.0.join("manager.ports"), "1\n").unwrap();
        assert!(matches!(
            manager_ports(&d.0),
            Err(LabError::DamagedFile { .. })
        ));
    }

    #[test]
    fn a_log_tail_shows_the_error_not_its_backtrace() {
        let d = crate::state::tests::Scratch::new("tail");
        let log = d.0.join("m.log");
        let frames: String = (0..40).map(|i| format!("  {i}: frame\n")).collect();
        std::fs::write(
            &log,
            format!("Error: binding gRPC\n\nStack backtrace:\n{frames}"),
        )
        .unwrap();
        let t = log_tail(&log);
        assert!(t.contains("binding gRPC"), "{t}");
        assert!(!t.contains("frame"), "{t}");
    }
}

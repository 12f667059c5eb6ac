//! `cellwall lab`: real workloads on one machine. One network namespace per pod, a veth to a
//! per-lab "node" namespace that routes like a CNI, real TCP/UDP servers on every container port,
//! and enforcement through the node agent's code path (`cellwall_agent::Enforcer` programming the
//! kernel datapath). Everything a lab creates carries its name, so labs coexist and `down`
//! finds all of it even after a crash.

use crate::analyze::{parse_key, parse_probe, AnalyzeOutput, Output, ProbeMatrix};
use crate::manifests::{assemble, load_objects, DEFAULT_POD_POOL};
use anyhow::{bail, Context, Result};
use cellwall_agent::node::{EndpointsFile, LocalEndpoint};
use cellwall_datapath::{netns, KernelDatapath};
use cellwall_policy::identity::fnv1a;
use cellwall_policy::load::Object;
use cellwall_policy::{Inventory, Namespace, Node, Protocol, Workload, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(clap::Subcommand, Debug)]
pub enum LabCmd {
    /// Build a lab from manifests: namespaces, veths, servers, datapath; returns when ready.
    Up {
        /// Manifests, as for `analyze`: Namespaces, Pods (one network namespace each), Nodes, policies.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Lab name: labs with different names coexist.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
        /// `ebpf` enforces with the kernel datapath; `none` attaches nothing (a baseline).
        #[arg(long, value_enum, default_value = "ebpf")]
        datapath: DatapathKind,
        /// Flow visibility: `off` emits no flow events and skips tracking for pods no policy selects.
        #[arg(long, value_enum, default_value = "on")]
        visibility: Visibility,
        /// Skip (with a warning) objects of kinds Cellwall does not read, instead of failing.
        #[arg(long)]
        ignore_unknown_kinds: bool,
    },
    /// Apply policies and updated Pods/Namespaces/Nodes (labels) to a running lab.
    Apply {
        /// Policies to add or replace; Pods, Namespaces and Nodes whose labels changed.
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// Delete the policies named in the manifests from a running lab.
    Delete {
        /// Manifests naming the policies to remove (kind, namespace and name are what count).
        #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
        files: Vec<PathBuf>,
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// Connect from every pod to every pod with real sockets and print the truth tables.
    Probe {
        /// PROTO/PORT to probe (repeatable); default every container port in the lab.
        #[arg(long = "probe", value_parser = parse_probe)]
        probes: Vec<(Protocol, u16)>,
        /// How long a connection may take before it counts as blocked (denies drop silently).
        #[arg(long, default_value_t = 500)]
        timeout: u64,
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// Print the connection decisions the datapath recorded since the last call (new flows,
    /// drops, would-drops of audit-mode policies, revocations) with the deciding rule.
    Flows {
        #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
        output: Output,
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// Run a command in a pod's network namespace.
    Exec {
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
        /// The pod, NAMESPACE/NAME.
        #[arg(value_parser = parse_key)]
        pod: WorkloadKey,
        /// The command and its arguments, after `--`.
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Remove everything the lab created (also after a crash).
    Down {
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// (internal) The lab's server process.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
    },
    /// (internal) What an agent does when it starts or is upgraded: load the programs, attach
    /// them to every workload interface (replacing what is there atomically) and re-apply policy.
    /// Adds a host to the lab: a network namespace acting as a VM or bare-metal host, with its
    /// own NIC (eth0) routed through the lab's node, running the agent in host mode. It becomes
    /// the workload hosts/HOST with the given labels, protected on its NIC by the same policies.
    HostAdd {
        /// Host name: its node name and its workload name (hosts/HOST).
        host: String,
        /// Its address.
        #[arg(long)]
        ip: IpAddr,
        /// A label, k=v (repeatable).
        #[arg(long = "label")]
        labels: Vec<String>,
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    /// Restarts the lab's manager (kill -9, then start on the same ports and data).
    #[command(hide = true)]
    RestartManager {
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
    #[command(hide = true)]
    Reattach {
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    Ebpf,
    None,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    On,
    Off,
}

fn parse_lab_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 24
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?}: a lab name is 1-24 lowercase letters, digits or '-'"
        ))
    }
}

/// Where a lab keeps its state, logs and pid file.
pub fn state_dir(name: &str) -> PathBuf {
    PathBuf::from(std::env::var("CELLWALL_LAB_DIR").unwrap_or_else(|_| "/run/cellwall/labs".into()))
        .join(name)
}

fn pin_dir(name: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/cellwall").join(name)
}

fn node_ns(name: &str) -> String {
    format!("cw-{name}-node")
}

/// The node name given to pods that name none.
const LAB_NODE: &str = "lab";
/// The gateway every pod routes through (a local address of the node namespace, so it answers ARP).
const GATEWAY: &str = "169.254.1.1";

/// First octet of the MAC of a pod's veth, node side and pod side (locally administered).
const NODE_SIDE: u8 = 0x02;
const POD_SIDE: u8 = 0x06;

/// The MAC of pod `i`'s veth end. Fixed addresses let the lab write permanent neighbour
/// entries on both ends: the kernel's ARP table is one for all namespaces and, by default,
/// overflows at 1,024 learned entries (`gc_thresh3`), which a lab of 1,000 pods (one entry per
/// pod for the gateway, one per pod on the node) exceeds; permanent entries are exempt, and no
/// ARP runs inside the lab.
fn veth_mac(side: u8, i: usize) -> String {
    let b = (i as u32).to_be_bytes();
    format!(
        "{side:02x}:00:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3]
    )
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabPod {
    key: WorkloadKey,
    /// Network namespace the pod's processes live in (the node's for hostNetwork pods).
    netns: String,
    host_if: Option<String>,
    ifindex: u32,
    ips: Vec<IpAddr>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LabState {
    name: String,
    datapath: DatapathKind,
    #[serde(default)]
    visibility: Visibility,
    pods: Vec<LabPod>,
    namespaces: Vec<Namespace>,
    workloads: Vec<Workload>,
    nodes: Vec<Node>,
}

impl LabState {
    fn load(name: &str) -> Result<Self> {
        let p = state_dir(name).join("state.json");
        let text = std::fs::read_to_string(&p).with_context(|| {
            format!("no lab named {name:?} is up (cannot read {})", p.display())
        })?;
        serde_json::from_str(&text).with_context(|| {
            format!(
                "{} is damaged; `cellwall lab down --name {name}` cleans up",
                p.display()
            )
        })
    }

    fn save(&self) -> Result<()> {
        let dir = state_dir(&self.name);
        let tmp = dir.join("state.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, dir.join("state.json"))?;
        Ok(())
    }

    fn pod(&self, key: &WorkloadKey) -> Result<&LabPod> {
        self.pods
            .iter()
            .find(|p| &p.key == key)
            .with_context(|| format!("no pod {key} in lab {}", self.name))
    }

    fn node_names(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self
            .workloads
            .iter()
            .filter_map(|w| w.node.clone())
            .collect();
        s.extend(self.nodes.iter().map(|n| n.name.clone()));
        s
    }
}

fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!(
            "{:?} failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs `ip` commands in a namespace through one `ip -batch` process.
fn ip_batch(ns: Option<&str>, cmds: &[String]) -> Result<()> {
    let mut c = Command::new("ip");
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    let mut child = c
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run ip (iproute2)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(cmds.join("\n").as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "ip -batch in {}: {}",
            ns.unwrap_or("root"),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn write_sysctl(ns: &str, pairs: Vec<(String, String)>) -> Result<()> {
    netns::run_in(ns, move || -> std::io::Result<()> {
        for (k, v) in pairs {
            std::fs::write(format!("/proc/sys/{}", k.replace('.', "/")), v)?;
        }
        Ok(())
    })?
    .context("writing sysctls in the node namespace")
}

/// Whether this process runs as root (read from /proc: no unsafe outside the datapath crate).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

pub fn run(cmd: LabCmd) -> Result<()> {
    if !is_root() {
        bail!("cellwall lab needs root: it creates network namespaces and loads eBPF programs (try sudo)");
    }
    match cmd {
        LabCmd::Up {
            files,
            name,
            datapath,
            visibility,
            ignore_unknown_kinds,
        } => up(&files, &name, datapath, visibility, ignore_unknown_kinds),
        LabCmd::Apply { files, name } => apply(&files, &name, false),
        LabCmd::Delete { files, name } => apply(&files, &name, true),
        LabCmd::Probe {
            probes,
            timeout,
            output,
            name,
        } => probe(&name, probes, Duration::from_millis(timeout), output),
        LabCmd::Exec { name, pod, command } => exec(&name, &pod, &command),
        LabCmd::Flows { output, name } => flows(&name, output),
        LabCmd::Down { name } => down(&name),
        LabCmd::Serve { name } => serve(&name),
        LabCmd::HostAdd {
            host,
            ip,
            labels,
            name,
        } => host_add(&name, &host, ip, &labels),
        LabCmd::RestartManager { name } => {
            let state = LabState::load(&name)?;
            start_manager(&state).map(|_| ())
        }
        LabCmd::Reattach { name } => {
            let state = LabState::load(&name)?;
            start_agent(&state, &lab_client(&name)?)
        }
    }
}

pub(crate) fn up(
    files: &[PathBuf],
    name: &str,
    datapath: DatapathKind,
    visibility: Visibility,
    ignore_unknown: bool,
) -> Result<()> {
    let t0 = Instant::now();
    if state_dir(name).exists() || Path::new(&format!("/run/netns/{}", node_ns(name))).exists() {
        bail!("lab {name:?} already exists: `cellwall lab down --name {name}` first");
    }
    let a = assemble(
        load_objects(files, ignore_unknown)?,
        DEFAULT_POD_POOL.parse().expect("valid"),
    )?;
    let mut inv = a.inventory;
    for w in inv.workloads.values_mut() {
        if w.node.is_none() {
            w.node = Some(LAB_NODE.to_string());
        }
    }
    std::fs::create_dir_all(state_dir(name)).context("creating the lab state directory")?;
    let result = build(name, datapath, visibility, inv, files, ignore_unknown);
    if let Err(e) = result {
        eprintln!("lab up failed; cleaning up");
        let _ = down(name);
        return Err(e);
    }
    eprintln!(
        "lab {name} is up in {:.1}s (state: {})",
        t0.elapsed().as_secs_f64(),
        state_dir(name).display()
    );
    Ok(())
}

fn build(
    name: &str,
    datapath: DatapathKind,
    visibility: Visibility,
    inv: Inventory,
    files: &[PathBuf],
    ignore_unknown: bool,
) -> Result<()> {
    let id = format!("{:04x}", fnv1a(name) & 0xffff);
    let node = node_ns(name);
    sh(Command::new("ip").args(["netns", "add", &node]))?;
    // The node namespace: its loopback holds the gateway and the nodes' addresses (a local
    // address answers ARP on every interface, so pods resolve the gateway without proxy ARP).
    let mut node_ips: BTreeSet<IpAddr> = inv
        .nodes
        .values()
        .flat_map(|n| n.ips.iter().copied())
        .collect();
    node_ips.extend(
        inv.workloads
            .values()
            .filter(|w| w.host_network)
            .flat_map(|w| w.ips.iter().copied()),
    );
    let mut cmds = vec![
        "link set lo up".to_string(),
        format!("addr add {GATEWAY}/32 dev lo"),
    ];
    for ip in &node_ips {
        cmds.push(format!(
            "addr add {ip}/{} dev lo",
            if ip.is_ipv4() { 32 } else { 128 }
        ));
    }
    let mut pods = Vec::new();
    let mut sysctls = vec![
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ("net.ipv4.conf.all.rp_filter".into(), "0".into()),
    ];
    for (i, w) in inv.workloads.values().enumerate() {
        if w.host_network {
            pods.push(LabPod {
                key: w.key(),
                netns: node.clone(),
                host_if: None,
                ifindex: 0,
                ips: w.ips.clone(),
            });
            continue;
        }
        let pns = format!("cw-{name}-p{i}");
        let host_if = format!("cw{id}h{i:x}");
        let tmp_if = format!("cw{id}p{i:x}");
        sh(Command::new("ip").args(["netns", "add", &pns]))?;
        cmds.push(format!(
            "link add {host_if} address {} type veth peer name {tmp_if} address {} netns {pns}",
            veth_mac(NODE_SIDE, i),
            veth_mac(POD_SIDE, i)
        ));
        cmds.push(format!("link set {host_if} up"));
        for ip in &w.ips {
            cmds.push(format!(
                "route add {ip}/{} dev {host_if}",
                if ip.is_ipv4() { 32 } else { 128 }
            ));
            cmds.push(format!(
                "neigh add {ip} lladdr {} dev {host_if} nud permanent",
                veth_mac(POD_SIDE, i)
            ));
        }
        sysctls.push((format!("net.ipv4.conf.{host_if}.rp_filter"), "0".into()));
        pods.push(LabPod {
            key: w.key(),
            netns: pns,
            host_if: Some(host_if),
            ifindex: 0,
            ips: w.ips.clone(),
        });
    }
    ip_batch(Some(&node), &cmds)?;
    for (i, p) in pods.iter().enumerate() {
        let Some(_) = &p.host_if else { continue };
        let i = inv.workloads.keys().position(|k| *k == p.key).unwrap_or(i);
        let tmp_if = format!("cw{id}p{i:x}");
        let mut c = vec![
            format!("link set {tmp_if} name eth0"),
            "link set lo up".into(),
            "link set eth0 up".into(),
            format!(
                "neigh add {GATEWAY} lladdr {} dev eth0 nud permanent",
                veth_mac(NODE_SIDE, i)
            ),
        ];
        for ip in &p.ips {
            c.push(format!(
                "addr add {ip}/{} dev eth0",
                if ip.is_ipv4() { 32 } else { 128 }
            ));
        }
        c.push(format!("route add {GATEWAY} dev eth0 scope link"));
        c.push(format!("route add default via {GATEWAY} dev eth0"));
        ip_batch(Some(&p.netns), &c)?;
        // Pods open many short connections in probes and benchmarks: reuse TIME_WAIT ports.
        write_sysctl(
            &p.netns,
            vec![
                ("net.ipv4.tcp_tw_reuse".into(), "1".into()),
                ("net.ipv4.ip_local_port_range".into(), "1024 65000".into()),
            ],
        )?;
    }
    write_sysctl(&node, sysctls)?;
    // Interface indexes in the node namespace (the datapath's anti-spoofing check).
    let ifs: Vec<Option<String>> = pods.iter().map(|p| p.host_if.clone()).collect();
    let idx = netns::run_in(&node, move || {
        ifs.iter()
            .map(|i| i.as_deref().map(netns::ifindex).transpose())
            .collect::<Result<Vec<_>, _>>()
    })??;
    for (p, i) in pods.iter_mut().zip(idx) {
        p.ifindex = i.unwrap_or(0);
    }
    let state = LabState {
        name: name.to_string(),
        datapath,
        visibility,
        pods,
        namespaces: inv.namespaces.values().cloned().collect(),
        workloads: inv.workloads.values().cloned().collect(),
        nodes: inv.nodes.values().cloned().collect(),
    };
    state.save()?;
    start_servers(&state)?;
    let client = start_manager(&state)?;
    let r = client.write_files(files, false, ignore_unknown)?;
    eprintln!(
        "manager: applied the manifests (revision {})",
        r["revision"].as_u64().unwrap_or(0)
    );
    start_agent(&state, &client)?;
    Ok(())
}

/// A Cellwall binary installed beside this one (`cargo build --workspace` builds all three).
fn sibling(bin: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the cellwall binary")?;
    let p = exe.with_file_name(bin);
    if !p.exists() {
        bail!(
            "{} not found next to {} (build the whole workspace: cargo build --workspace)",
            bin,
            exe.display()
        );
    }
    Ok(p)
}

/// Starts a background process with its own process group, output appended to `log`.
fn spawn_bg(cmd: &mut Command, log: &Path, pidfile: &Path) -> Result<std::process::Child> {
    use std::os::unix::process::CommandExt;
    let log_f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log_f.try_clone()?)
        .stderr(log_f)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {:?}", cmd.get_program()))?;
    std::fs::write(pidfile, child.id().to_string())?;
    Ok(child)
}

fn log_tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Kills a process from its pid file if it is still the one we started (its command line
/// names this lab's state directory).
fn kill_pidfile(pidfile: &Path, marker: &str) {
    let Ok(pid) = std::fs::read_to_string(pidfile) else {
        return;
    };
    let pid = pid.trim();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if String::from_utf8_lossy(&cmdline).contains(marker) {
        let _ = Command::new("kill")
            .args(["-9", pid])
            .stderr(Stdio::null())
            .status();
        for _ in 0..100 {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = std::fs::remove_file(pidfile);
}

/// A free loopback port (the manager keeps it across restarts, so agents find it again).
fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Starts the lab's manager on loopback (the same ports as its previous run, if any) and
/// returns a client for it.
fn start_manager(state: &LabState) -> Result<crate::client::Client> {
    let dir = state_dir(&state.name);
    let data = dir.join("manager");
    std::fs::create_dir_all(&data)?;
    let ports = dir.join("manager.ports");
    let (api, grpc) = match std::fs::read_to_string(&ports) {
        Ok(s) => {
            let v: Vec<u16> = s
                .split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect();
            match v[..] {
                [a, g] => (a, g),
                _ => bail!("{} is damaged", ports.display()),
            }
        }
        Err(_) => {
            let p = (free_port()?, free_port()?);
            std::fs::write(&ports, format!("{} {}\n", p.0, p.1))?;
            p
        }
    };
    kill_pidfile(&dir.join("manager.pid"), &data.display().to_string());
    let _ = std::fs::remove_file(data.join("endpoints.json"));
    let log = dir.join("manager.log");
    let mut child = spawn_bg(
        Command::new(sibling("cellwall-manager")?)
            .arg("--data-dir")
            .arg(&data)
            .args(["--api-listen", &format!("127.0.0.1:{api}")])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc}")]),
        &log,
        &dir.join("manager.pid"),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !data.join("endpoints.json").exists() {
        if let Some(st) = child.try_wait()? {
            bail!("the lab manager exited ({st}):\n{}", log_tail(&log));
        }
        if Instant::now() > deadline {
            bail!("the lab manager did not start in 20 s:\n{}", log_tail(&log));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    lab_client(&state.name)
}

/// The manager's gRPC address, from the file it writes at start.
fn grpc_addr(name: &str) -> Result<String> {
    let p = state_dir(name).join("manager").join("endpoints.json");
    let v: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?,
    )?;
    v["grpc"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{}: no grpc address", p.display()))
}

/// (Re)starts the lab's agent: kills the running one (-9: what a crash or upgrade looks like),
/// starts a new one, and waits until it enforces the manager's current revision.
fn start_agent(state: &LabState, client: &crate::client::Client) -> Result<()> {
    let dir = state_dir(&state.name);
    let ep = EndpointsFile {
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
            })
            .collect(),
    };
    std::fs::write(dir.join("endpoints.json"), serde_json::to_vec_pretty(&ep)?)?;
    let agent_dir = dir.join("agent");
    kill_pidfile(&dir.join("agent.pid"), &agent_dir.display().to_string());
    let _ = std::fs::remove_file(agent_dir.join("ready"));
    let log = dir.join("agent.log");
    let mut cmd = agent_command(state)?;
    cmd.args(["--node", LAB_NODE])
        .arg("--state-dir")
        .arg(&agent_dir)
        .arg("--endpoints")
        .arg(dir.join("endpoints.json"))
        .args(["--netns", &node_ns(&state.name)])
        .arg("--pin-dir")
        .arg(pin_dir(&state.name))
        .args([
            "--datapath",
            match state.datapath {
                DatapathKind::Ebpf => "ebpf",
                DatapathKind::None => "none",
            },
            "--visibility",
            match state.visibility {
                Visibility::On => "on",
                Visibility::Off => "off",
            },
            "--metrics-listen",
            "127.0.0.1:0",
            "--flow-interval-ms",
            "200",
        ]);
    // The first apply attaches two TCX links per pod, and the kernel creates each one under
    // RTNL with a full RCU grace period (~12 ms here): 1,000 pods take ~25 s before anything
    // else. The wait grows with the pods so large labs do not time out.
    let interfaces = state.pods.iter().filter(|p| p.host_if.is_some()).count();
    run_agent(
        cmd,
        client,
        LAB_NODE,
        &log,
        &dir.join("agent.pid"),
        &agent_dir,
        Duration::from_secs(30) + Duration::from_millis(60) * interfaces as u32,
    )
}

/// The agent command line every lab agent shares (manager, CA, bootstrap token).
fn agent_command(state: &LabState) -> Result<Command> {
    let data = state_dir(&state.name).join("manager");
    let mut cmd = Command::new(sibling("cellwall-agent")?);
    cmd.arg("--manager")
        .arg(grpc_addr(&state.name)?)
        .arg("--ca")
        .arg(data.join("ca.pem"))
        .arg("--bootstrap-token-file")
        .arg(data.join("bootstrap.token"));
    Ok(cmd)
}

/// Starts an agent and waits until it enforces the manager's current revision (or, with the
/// manager down, the state it saved).
fn run_agent(
    mut cmd: Command,
    client: &crate::client::Client,
    node: &str,
    log: &Path,
    pidfile: &Path,
    agent_dir: &Path,
    wait: Duration,
) -> Result<()> {
    let mut child = spawn_bg(&mut cmd, log, pidfile)?;
    let deadline = Instant::now() + wait;
    loop {
        if let Some(st) = child.try_wait()? {
            bail!("the lab agent exited ({st}):\n{}", log_tail(log));
        }
        let v = match client.get("/v1/nodes", &[]) {
            Ok(v) => v,
            // The manager is down: the agent enforces the state it saved; wait for that.
            Err(e) if agent_dir.join("ready").exists() => {
                eprintln!("manager unreachable ({e:#}); the agent enforces its saved state");
                return Ok(());
            }
            Err(_) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
                continue;
            }
            Err(e) => return Err(e),
        };
        let rev = v["revision"].as_u64().unwrap_or(0);
        let applied = v["items"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|n| n["name"] == node)
            .and_then(|n| n["applied_version"].as_u64());
        if applied.is_some_and(|a| a >= rev) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the lab agent did not apply revision {rev} in {} s:\n{}",
                wait.as_secs(),
                log_tail(log)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A namespace acting as a host: veth from the node (routed like a pod's), the host's side
/// named eth0 (its NIC), and an agent in host mode protecting it.
fn host_add(name: &str, host: &str, ip: IpAddr, labels: &[String]) -> Result<()> {
    let state = LabState::load(name)?;
    if state.datapath == DatapathKind::None {
        bail!("lab {name} has no datapath (--datapath none): a host agent would enforce nothing");
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        || host.is_empty()
        || host.len() > 40
    {
        bail!("host name {host:?}: expected 1-40 lowercase letters, digits or '-'");
    }
    let dir = state_dir(name);
    let hosts = dir.join("hosts");
    if hosts.join(host).exists() {
        bail!("lab {name} already has a host {host}");
    }
    let k = std::fs::read_dir(&hosts).map(|d| d.count()).unwrap_or(0);
    let id = format!("{:04x}", fnv1a(name) & 0xffff);
    let (hns, node_if, tmp_if) = (
        format!("cw-{name}-h{k}"),
        format!("cw{id}v{k:x}"),
        format!("cw{id}w{k:x}"),
    );
    let bits = if ip.is_ipv4() { 32 } else { 128 };
    sh(Command::new("ip").args(["netns", "add", &hns]))?;
    ip_batch(
        Some(&node_ns(name)),
        &[
            format!("link add {node_if} type veth peer name {tmp_if} netns {hns}"),
            format!("link set {node_if} up"),
            format!("route add {ip}/{bits} dev {node_if}"),
        ],
    )?;
    write_sysctl(
        &node_ns(name),
        vec![(format!("net.ipv4.conf.{node_if}.rp_filter"), "0".into())],
    )?;
    ip_batch(
        Some(&hns),
        &[
            format!("link set {tmp_if} name eth0"),
            "link set lo up".into(),
            "link set eth0 up".into(),
            format!("addr add {ip}/{bits} dev eth0"),
            format!("route add {GATEWAY} dev eth0 scope link"),
            format!("route add default via {GATEWAY} dev eth0"),
        ],
    )?;
    let agent_dir = hosts.join(host);
    std::fs::create_dir_all(&agent_dir)?;
    let mut cmd = agent_command(&state)?;
    cmd.args(["--node", host])
        .arg("--state-dir")
        .arg(&agent_dir)
        .args(["--netns", &hns])
        .arg("--pin-dir")
        .arg(pin_dir(name).join("hosts").join(host))
        .args(["--host-workload", &format!("hosts/{host}")])
        .args(["--host-interface", "eth0"])
        .args(["--host-ip", &ip.to_string()])
        .args([
            "--visibility",
            match state.visibility {
                Visibility::On => "on",
                Visibility::Off => "off",
            },
            "--flow-interval-ms",
            "200",
        ]);
    for l in labels {
        cmd.args(["--host-label", l]);
    }
    run_agent(
        cmd,
        &lab_client(name)?,
        host,
        &dir.join(format!("host-{host}.log")),
        &dir.join(format!("host-{host}.pid")),
        &agent_dir,
        Duration::from_secs(30),
    )?;
    eprintln!("host {host} ({ip}) is up in {hns}, protected on its eth0 by an agent in host mode");
    Ok(())
}

pub(crate) fn lab_client(name: &str) -> Result<crate::client::Client> {
    crate::client::Client::from_target(&crate::client::Target {
        config: Some(cellwall_api::client::lab_client_config(name)),
        ..Default::default()
    })
}

fn start_servers(state: &LabState) -> Result<()> {
    let dir = state_dir(&state.name);
    let _ = std::fs::remove_file(dir.join("ready"));
    let log = std::fs::File::create(dir.join("servers.log"))?;
    let exe = std::env::current_exe()?;
    let child = {
        use std::os::unix::process::CommandExt;
        Command::new(exe)
            .args(["lab", "serve", "--name", &state.name])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the lab servers")?
    };
    std::fs::write(dir.join("servers.pid"), child.id().to_string())?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !dir.join("ready").exists() {
        if Instant::now() > deadline {
            bail!(
                "the lab servers did not become ready in 20 s; see {}",
                dir.join("servers.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The server process: a real listener on every container port of every pod.
fn serve(name: &str) -> Result<()> {
    let state = LabState::load(name)?;
    let sctp = netns::sctp_available();
    let mut handles = Vec::new();
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let mut expected = 0;
    for w in &state.workloads {
        let pod = state.pod(&w.key())?.clone();
        for port in &w.ports {
            if port.protocol == Protocol::Sctp && !sctp {
                println!(
                    "{}: SCTP {} not served: this kernel has no SCTP",
                    w.key(),
                    port.port
                );
                continue;
            }
            if port.protocol == Protocol::Sctp {
                println!(
                    "{}: SCTP {} not served: the lab serves TCP and UDP",
                    w.key(),
                    port.port
                );
                continue;
            }
            for ip in pod.ips.clone() {
                expected += 1;
                let (tx, ns, who, proto, p) = (
                    tx.clone(),
                    pod.netns.clone(),
                    w.key().to_string(),
                    port.protocol,
                    port.port,
                );
                handles.push(std::thread::spawn(move || {
                    if let Err(e) = netns::enter(&ns) {
                        let _ = tx.send(Err(format!("{who}: {e}")));
                        return;
                    }
                    let addr = SocketAddr::new(ip, p);
                    match proto {
                        Protocol::Tcp => match TcpListener::bind(addr) {
                            Ok(l) => {
                                let _ = tx.send(Ok(format!("{who} TCP {addr}")));
                                for s in l.incoming().flatten() {
                                    // Say who we are, then echo until the peer closes: probes
                                    // close at once; long-lived sessions (revocation tests) stay.
                                    let who = who.clone();
                                    let _ = std::thread::Builder::new()
                                        .stack_size(64 * 1024)
                                        .spawn(move || {
                                            let mut s = s;
                                            if writeln!(s, "{who}").is_err() {
                                                return;
                                            }
                                            let _ = std::io::copy(
                                                &mut s.try_clone().expect("clone socket"),
                                                &mut s,
                                            );
                                        });
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(format!("{who}: bind TCP {addr}: {e}")));
                            }
                        },
                        _ => match UdpSocket::bind(addr) {
                            Ok(u) => {
                                let _ = tx.send(Ok(format!("{who} UDP {addr}")));
                                let mut buf = [0u8; 1500];
                                while let Ok((_, from)) = u.recv_from(&mut buf) {
                                    let _ = u.send_to(who.as_bytes(), from);
                                }
                            }
                            Err(e) => {
                                let _ = tx.send(Err(format!("{who}: bind UDP {addr}: {e}")));
                            }
                        },
                    }
                }));
            }
        }
    }
    drop(tx);
    let mut failed = Vec::new();
    for _ in 0..expected {
        match rx.recv() {
            Ok(Ok(m)) => println!("listening: {m}"),
            Ok(Err(e)) => failed.push(e),
            Err(_) => break,
        }
    }
    if !failed.is_empty() {
        bail!("servers failed: {}", failed.join("; "));
    }
    std::fs::write(state_dir(name).join("ready"), format!("{expected}\n"))?;
    println!("ready: {expected} listeners");
    std::io::stdout().flush()?;
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

fn object_id(o: &Object) -> String {
    o.describe()
}

fn apply(files: &[PathBuf], name: &str, delete: bool) -> Result<()> {
    let mut state = LabState::load(name)?;
    let objects = load_objects(files, false)?;
    for o in objects {
        let src = o.source.clone();
        match (o.object, delete) {
            // Policies live in the manager (it reports what a delete did not find).
            (Object::Policy(_), _) => {}
            (Object::Namespace(n), false) => {
                state.namespaces.retain(|m| m.name != n.name);
                state.namespaces.push(n);
            }
            (Object::Node(n), false) => {
                let old = state.nodes.iter().find(|m| m.name == n.name);
                if old.is_some_and(|o| o.ips != n.ips) {
                    bail!("{src}: changing a node's addresses needs a new lab (down, then up)");
                }
                state.nodes.retain(|m| m.name != n.name);
                state.nodes.push(n);
            }
            (Object::Pod(mut w), false) => {
                let Some(old) = state.workloads.iter().find(|o| o.key() == w.key()) else {
                    bail!("{src}: pod {} is not in the lab: adding pods needs a new lab (down, then up)", w.key());
                };
                if w.ips.is_empty() {
                    w.ips = old.ips.clone();
                }
                if w.node.is_none() {
                    w.node = old.node.clone();
                }
                if w.ips != old.ips || w.ports != old.ports || w.host_network != old.host_network {
                    bail!("{src}: pod {}: only labels can change in a running lab (addresses, ports and hostNetwork need down, then up)", w.key());
                }
                state.workloads.retain(|o| o.key() != w.key());
                state.workloads.push(w);
            }
            (o, true) => bail!(
                "{src}: lab delete removes policies; {} cannot be deleted from a running lab",
                object_id(&o)
            ),
        }
    }
    state.save()?;
    let c = lab_client(name)?;
    let r = c.write_files(files, delete, false)?;
    let rev = r["revision"].as_u64().unwrap_or(0);
    c.wait_applied(rev, Duration::from_secs(15))?;
    eprintln!("revision {rev} enforced");
    Ok(())
}

/// One probe cell.
struct Job {
    from: usize,
    to: usize,
    netns: String,
    dst: IpAddr,
    proto: Protocol,
    port: u16,
}

/// One real connection from a lab pod to another pod's first address.
pub(crate) fn connect_from(
    name: &str,
    from: &WorkloadKey,
    to: &WorkloadKey,
    proto: Protocol,
    port: u16,
    timeout: Duration,
) -> Result<bool> {
    let state = LabState::load(name)?;
    let ns = state.pod(from)?.netns.clone();
    let dst = *state
        .pod(to)?
        .ips
        .first()
        .with_context(|| format!("{to} has no address"))?;
    Ok(netns::run_in(&ns, move || {
        connect(proto, dst, port, timeout)
    })?)
}

fn connect(proto: Protocol, dst: IpAddr, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(dst, port);
    match proto {
        Protocol::Tcp => TcpStream::connect_timeout(&addr, timeout).is_ok(),
        Protocol::Udp => {
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().expect("valid")
            } else {
                "[::]:0".parse().expect("valid")
            };
            let Ok(u) = UdpSocket::bind(bind) else {
                return false;
            };
            if u.connect(addr).is_err() || u.set_read_timeout(Some(timeout)).is_err() {
                return false;
            }
            let mut buf = [0u8; 256];
            // Two tries inside the timeout: a first datagram can be lost to neighbour resolution.
            for _ in 0..2 {
                if u.send(b"probe").is_err() {
                    return false;
                }
                let _ = u.set_read_timeout(Some(timeout / 2));
                if u.recv(&mut buf).is_ok() {
                    return true;
                }
            }
            false
        }
        Protocol::Sctp => false,
    }
}

fn probe(
    name: &str,
    probes: Vec<(Protocol, u16)>,
    timeout: Duration,
    output: Output,
) -> Result<()> {
    let state = LabState::load(name)?;
    let mut probes = if probes.is_empty() {
        let s: BTreeSet<(Protocol, u16)> = state
            .workloads
            .iter()
            .flat_map(|w| w.ports.iter().map(|p| (p.protocol, p.port)))
            .collect();
        s.into_iter().collect()
    } else {
        probes
    };
    if probes.iter().any(|p| p.0 == Protocol::Sctp) {
        eprintln!(
            "skipping SCTP probes: the lab serves TCP and UDP only (and this kernel {} SCTP)",
            if netns::sctp_available() {
                "has"
            } else {
                "has no"
            }
        );
        probes.retain(|p| p.0 != Protocol::Sctp);
    }
    let pods: Vec<(String, &LabPod)> = state
        .workloads
        .iter()
        .map(|w| (w.key().to_string(), state.pod(&w.key())))
        .map(|(k, p)| p.map(|p| (k, p)))
        .collect::<Result<_>>()?;
    let mut out = AnalyzeOutput { probes: Vec::new() };
    for (proto, port) in &probes {
        let mut jobs = Vec::new();
        for (i, (_, from)) in pods.iter().enumerate() {
            for (j, (_, to)) in pods.iter().enumerate() {
                if let Some(dst) = to.ips.first() {
                    jobs.push(Job {
                        from: i,
                        to: j,
                        netns: from.netns.clone(),
                        dst: *dst,
                        proto: *proto,
                        port: *port,
                    });
                }
            }
        }
        let results = run_jobs(jobs, timeout);
        let mut matrix: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
        for (from, _) in &pods {
            matrix.insert(
                from.clone(),
                pods.iter().map(|(to, _)| (to.clone(), false)).collect(),
            );
        }
        for (i, j, ok) in results {
            matrix
                .get_mut(&pods[i].0)
                .expect("row")
                .insert(pods[j].0.clone(), ok);
        }
        out.probes.push(ProbeMatrix {
            protocol: *proto,
            port: *port,
            matrix,
        });
    }
    let mut stdout = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(stdout, "{}", serde_json::to_string(&out)?)?,
        Output::Table => {
            for (i, m) in out.probes.iter().enumerate() {
                if i > 0 {
                    writeln!(stdout)?;
                }
                writeln!(
                    stdout,
                    "{}/{}  (measured; rows: from, columns: to; . allowed, X blocked)",
                    m.protocol, m.port
                )?;
                stdout.write_all(crate::analyze::render_table(m).as_bytes())?;
            }
        }
    }
    Ok(())
}

/// Runs probe jobs on a pool of threads; each thread enters the source pod's namespace.
fn run_jobs(jobs: Vec<Job>, timeout: Duration) -> Vec<(usize, usize, bool)> {
    let workers = jobs.len().clamp(1, 64);
    let queue = std::sync::Arc::new(std::sync::Mutex::new(jobs));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, tx) = (queue.clone(), tx.clone());
        handles.push(std::thread::spawn(move || {
            let mut current_ns = String::new();
            loop {
                let job = queue.lock().expect("queue").pop();
                let Some(job) = job else { break };
                if job.netns != current_ns {
                    if netns::enter(&job.netns).is_err() {
                        let _ = tx.send((job.from, job.to, false));
                        continue;
                    }
                    current_ns = job.netns.clone();
                }
                let ok = connect(job.proto, job.dst, job.port, timeout);
                let _ = tx.send((job.from, job.to, ok));
            }
        }));
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    for h in handles {
        let _ = h.join();
    }
    results
}

/// The lab's flows, as the manager stored them, with the datapath's own totals.
fn flows(name: &str, output: Output) -> Result<()> {
    let state = LabState::load(name)?;
    let c = lab_client(name)?;
    let v = c.get("/v1/flows", &[("limit", "100000".to_string())])?;
    let counters = if state.datapath == DatapathKind::Ebpf {
        Some(KernelDatapath::open(&pin_dir(name))?.counters()?)
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => {
            let mut v = v;
            if let Some(k) = counters {
                v["datapath"] = serde_json::json!({
                    "allowed": k.allowed, "denied": k.denied, "audit": k.audit,
                    "revoked": k.revoked, "events_lost": k.events_lost,
                });
            }
            writeln!(out, "{}", serde_json::to_string(&v)?)?
        }
        Output::Table => {
            let rows = v["flows"].as_array().cloned().unwrap_or_default();
            for r in &rows {
                writeln!(out, "{}", crate::client::flow_line(r))?;
            }
            write!(out, "{} flow records", rows.len())?;
            if let Some(k) = counters {
                write!(out, "; datapath totals: {} allowed, {} denied, {} audit, {} revoked, {} events lost", k.allowed, k.denied, k.audit, k.revoked, k.events_lost)?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn exec(name: &str, pod: &WorkloadKey, command: &[String]) -> Result<()> {
    let state = LabState::load(name)?;
    let p = state.pod(pod)?;
    let status = Command::new("ip")
        .args(["netns", "exec", &p.netns])
        .args(command)
        .status()
        .context("cannot run ip netns exec")?;
    std::process::exit(status.code().unwrap_or(1));
}

/// Removes the lab: server process, namespaces (and with them every veth and tc filter), pins
/// and state. Works from names alone, so it also cleans up after a crash.
pub fn down(name: &str) -> Result<()> {
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
    if let Ok(pid) = std::fs::read_to_string(dir.join("servers.pid")) {
        let _ = Command::new("kill")
            .args(["-9", pid.trim()])
            .stderr(Stdio::null())
            .status();
    }
    let _ = Command::new("pkill")
        .args(["-9", "-f", &format!("lab serve --name {name}$")])
        .stderr(Stdio::null())
        .status();
    let prefix = format!("cw-{name}-");
    let mut removed = 0;
    if let Ok(rd) = std::fs::read_dir("/run/netns") {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().to_string();
            if n.starts_with(&prefix) {
                sh(Command::new("ip").args(["netns", "del", &n]))?;
                removed += 1;
            }
        }
    }
    let pins = pin_dir(name);
    if pins.exists() {
        std::fs::remove_dir_all(&pins).with_context(|| format!("removing {}", pins.display()))?;
    }
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    eprintln!("lab {name} is down ({removed} namespaces removed)");
    Ok(())
}

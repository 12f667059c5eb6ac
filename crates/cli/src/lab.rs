//! `cellwall lab`: real workloads on one machine. One network namespace per pod, a veth to a
//! per-lab "node" namespace that routes like a CNI, real TCP/UDP servers on every container port,
//! and enforcement through the node agent's code path (`cellwall_agent::Enforcer` programming the
//! kernel datapath). Everything a lab creates carries its name, so labs coexist and `down`
//! finds all of it even after a crash.

use crate::analyze::{parse_key, parse_probe, AnalyzeOutput, Output, ProbeMatrix};
use crate::manifests::{assemble, load_objects, DEFAULT_POD_POOL};
use anyhow::{bail, Context, Result};
use cellwall_agent::Enforcer;
use cellwall_datapath::{netns, KernelDatapath};
use cellwall_policy::identity::fnv1a;
use cellwall_policy::load::Object;
use cellwall_policy::{
    Engine, Inventory, Namespace, Node, Policy, Protocol, Workload, WorkloadKey,
};
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
    policies: Vec<Policy>,
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

    fn inventory(&self) -> Inventory {
        let mut inv = Inventory::default();
        for n in &self.namespaces {
            inv.namespaces.insert(n.name.clone(), n.clone());
        }
        for w in &self.workloads {
            inv.workloads.insert(w.key(), w.clone());
        }
        for n in &self.nodes {
            inv.nodes.insert(n.name.clone(), n.clone());
        }
        inv
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
fn is_root() -> bool {
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
        LabCmd::Reattach { name } => {
            let state = LabState::load(&name)?;
            enforce(&state, true)
        }
    }
}

fn up(
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
    let result = build(name, datapath, visibility, inv, a.policies);
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
    policies: Vec<Policy>,
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
            "link add {host_if} type veth peer name {tmp_if} netns {pns}"
        ));
        cmds.push(format!("link set {host_if} up"));
        for ip in &w.ips {
            cmds.push(format!(
                "route add {ip}/{} dev {host_if}",
                if ip.is_ipv4() { 32 } else { 128 }
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
        let tmp_if = format!(
            "cw{id}p{:x}",
            inv.workloads.keys().position(|k| *k == p.key).unwrap_or(i)
        );
        let mut c = vec![
            format!("link set {tmp_if} name eth0"),
            "link set lo up".into(),
            "link set eth0 up".into(),
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
        policies,
    };
    state.save()?;
    if datapath == DatapathKind::Ebpf {
        enforce(&state, false)?;
    }
    start_servers(&state)?;
    Ok(())
}

/// The agent's enforcement path: compile the lab's policy for its nodes, attach the programs
/// where they are needed (every pod with visibility on; otherwise only pods some policy
/// selects), switch the maps, then detach where no longer needed. `reattach` replaces the
/// programs on every attached interface (what an agent restart or upgrade does).
fn enforce(state: &LabState, reattach: bool) -> Result<()> {
    if state.datapath == DatapathKind::None {
        return Ok(());
    }
    let mut engine = Engine::build(
        state.inventory(),
        state.policies.clone(),
        crate::analyze::now_unix(),
    );
    let pins = pin_dir(&state.name);
    let mut dp = KernelDatapath::open(&pins)?;
    dp.set_visibility(state.visibility == Visibility::On)?;
    let mut enforcer = Enforcer::new(state.node_names(), dp);
    for p in &state.pods {
        if p.ifindex != 0 {
            enforcer.set_interface(p.key.clone(), p.ifindex);
        }
    }
    let Some(desired) = enforcer.prepare(&mut engine) else {
        return Ok(());
    };
    let policed = |p: &LabPod| {
        p.ips.iter().any(|ip| {
            desired
                .endpoints
                .get(&cellwall_datapath::abi::addr16(*ip))
                .is_some_and(|e| e.2 != 0)
        })
    };
    let mut attach = Vec::new();
    let mut detach = Vec::new();
    for p in &state.pods {
        let Some(i) = &p.host_if else { continue };
        let needed = state.visibility == Visibility::On || policed(p);
        let attached = enforcer.datapath().is_attached(i);
        if needed && (!attached || reattach) {
            attach.push(i.clone());
        } else if !needed && attached {
            detach.push(i.clone());
        }
    }
    if !attach.is_empty() {
        let pins2 = pins.clone();
        netns::run_in(&node_ns(&state.name), move || -> Result<()> {
            let mut dp = KernelDatapath::open(&pins2)?;
            for i in &attach {
                dp.attach(i).with_context(|| format!("attaching to {i}"))?;
            }
            Ok(())
        })??;
    }
    let r = enforcer.commit(desired)?;
    eprintln!(
        "policy applied: slot {} epoch {} ({} entries written, {} removed) in {:?}",
        r.slot, r.epoch, r.written, r.removed, r.elapsed
    );
    for i in &detach {
        enforcer.datapath().detach(i)?;
    }
    Ok(())
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
            (Object::Policy(p), false) => {
                state.policies.retain(|q| q.id != p.id);
                state.policies.push(*p);
            }
            (Object::Policy(p), true) => {
                let before = state.policies.len();
                state.policies.retain(|q| q.id != p.id);
                if before == state.policies.len() {
                    eprintln!("{src}: {} is not in the lab (nothing to delete)", p.id);
                }
            }
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
    state.policies.sort_by(|a, b| a.id.cmp(&b.id));
    state.save()?;
    enforce(&state, false)
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

#[derive(Serialize)]
struct FlowRecord {
    time_ns: u64,
    verdict: &'static str,
    direction: &'static str,
    src: String,
    dst: String,
    protocol: String,
    port: u16,
    rule: Option<String>,
}

fn flows(name: &str, output: Output) -> Result<()> {
    let state = LabState::load(name)?;
    if state.datapath == DatapathKind::None {
        bail!("lab {name} has no datapath (--datapath none): nothing records flows");
    }
    let engine = Engine::build(
        state.inventory(),
        state.policies.clone(),
        crate::analyze::now_unix(),
    );
    let mut dp = KernelDatapath::open(&pin_dir(name))?;
    let events = dp.drain_events(usize::MAX)?;
    let counters = dp.counters()?;
    let hits: Vec<(String, u64)> = dp
        .rule_hits()?
        .into_iter()
        .map(|(id, n)| {
            (
                engine
                    .rule(id)
                    .map(|r| r.describe())
                    .unwrap_or_else(|| format!("rule {id} (no longer in force)")),
                n,
            )
        })
        .collect();
    let who = |a: [u8; 16]| -> String {
        let ip = std::net::Ipv6Addr::from(a);
        let ip: IpAddr = ip
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(ip));
        state
            .pods
            .iter()
            .find(|p| p.ips.contains(&ip))
            .map(|p| p.key.to_string())
            .unwrap_or_else(|| ip.to_string())
    };
    use cellwall_datapath::abi;
    let records: Vec<FlowRecord> = events
        .iter()
        .map(|e| FlowRecord {
            time_ns: e.ts_ns,
            verdict: match e.kind {
                abi::EV_ALLOW => "allowed",
                abi::EV_DENY => "denied",
                abi::EV_AUDIT => "audit",
                abi::EV_REVOKE => "revoked",
                _ => "unknown",
            },
            direction: if e.dir == abi::DIR_EGRESS {
                "egress"
            } else {
                "ingress"
            },
            src: who(e.saddr),
            dst: who(e.daddr),
            protocol: match e.proto {
                6 => "TCP".into(),
                17 => "UDP".into(),
                132 => "SCTP".into(),
                n => n.to_string(),
            },
            port: u16::from_be(e.dport),
            rule: engine.rule(e.rule).map(|r| r.describe()),
        })
        .collect();
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::json!({
                "flows": records,
                "rule_hits": hits.iter().map(|(r, n)| serde_json::json!({"rule": r, "connections": n})).collect::<Vec<_>>(),
                "events_lost": counters.events_lost,
                "denied": counters.denied,
                "allowed": counters.allowed
            })
        )?,
        Output::Table => {
            for r in &records {
                writeln!(
                    out,
                    "{:<8} {:<7} {} -> {} {}/{}  {}",
                    r.verdict,
                    r.direction,
                    r.src,
                    r.dst,
                    r.protocol,
                    r.port,
                    r.rule.as_deref().unwrap_or("(no rule: default allow)")
                )?;
            }
            for (r, n) in &hits {
                writeln!(out, "rule hits: {n:>6}  {r}")?;
            }
            writeln!(out, "{} events; datapath totals: {} allowed, {} denied, {} audit, {} revoked, {} events lost", records.len(), counters.allowed, counters.denied, counters.audit, counters.revoked, counters.events_lost)?;
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

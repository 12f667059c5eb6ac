//! `cellwall lab`: the command line of [`cellwall_lab`] (real workloads on this machine:
//! network namespaces, servers, manager, agent, kernel enforcement) and its output.

use crate::analyze::{parse_key, parse_probe, render_table, AnalyzeOutput, Output, ProbeMatrix};
use anyhow::{bail, Result};
use cellwall_policy::{Protocol, WorkloadKey};
use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

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
        /// Where the lab's manager takes the objects from: `files` (sent over REST) or
        /// `kubernetes` (held by the lab's own fake Kubernetes API server, which the manager
        /// watches; `lab apply`/`delete` then write through that API).
        #[arg(long, value_enum, default_value = "files")]
        source: Source,
        /// How pods are wired to the node: `routed` (a /32 route to each pod's veth, as Calico
        /// and Cilium do) or `bridge` (every veth a port of one bridge, as the `bridge` CNI
        /// plugin and flannel do). With `--source kubernetes` or `--cni bridge` the agent finds
        /// each pod's interface in the kernel, as a DaemonSet agent does (`--find-interfaces`);
        /// otherwise the lab tells it in an endpoints file.
        #[arg(long, value_enum, default_value = "routed")]
        cni: Cni,
        /// With `--source kubernetes`: the manager names the lab's cluster NAME, as when it
        /// watches several (--kube-context NAME=CONTEXT): pods are NAME:NAMESPACE/POD, the
        /// node is NAME:lab, and the agent runs with --cluster NAME.
        #[arg(long, value_name = "NAME", requires = "source")]
        cluster: Option<String>,
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
    /// (internal) The lab's Kubernetes API server process (`--source kubernetes`).
    #[command(hide = true)]
    KubeApi {
        #[arg(long)]
        name: String,
    },
    /// (internal) The lab's server process.
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        name: String,
    },
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
    /// (internal) What an agent does when it starts or is upgraded: load the programs, attach
    /// them to every workload interface (replacing what is there atomically) and re-apply policy.
    #[command(hide = true)]
    Reattach {
        /// Lab name.
        #[arg(long, default_value = "cellwall", value_parser = parse_lab_name)]
        name: String,
    },
}

/// `--datapath` ([`cellwall_lab::DatapathKind`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathKind {
    Ebpf,
    None,
}

impl From<DatapathKind> for cellwall_lab::DatapathKind {
    fn from(d: DatapathKind) -> Self {
        match d {
            DatapathKind::Ebpf => Self::Ebpf,
            DatapathKind::None => Self::None,
        }
    }
}

/// `--source` ([`cellwall_lab::Source`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Files,
    Kubernetes,
}

impl From<Source> for cellwall_lab::Source {
    fn from(s: Source) -> Self {
        match s {
            Source::Files => Self::Files,
            Source::Kubernetes => Self::Kubernetes,
        }
    }
}

/// `--cni`: how pods are wired to their node.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cni {
    Routed,
    Bridge,
}

impl From<Cni> for cellwall_lab::Cni {
    fn from(c: Cni) -> Self {
        match c {
            Cni::Routed => Self::Routed,
            Cni::Bridge => Self::Bridge,
        }
    }
}

/// `--visibility` ([`cellwall_lab::Visibility`]).
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Visibility {
    On,
    Off,
}

impl From<Visibility> for cellwall_lab::Visibility {
    fn from(v: Visibility) -> Self {
        match v {
            Visibility::On => Self::On,
            Visibility::Off => Self::Off,
        }
    }
}

fn parse_lab_name(s: &str) -> Result<String, String> {
    cellwall_lab::validate_name(s)
        .map(|_| s.to_string())
        .map_err(|e| e.to_string())
}

/// Prints the lab's progress (its `tracing` events) on stderr, one plain line each, as the
/// lab's messages always were.
pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .without_time()
        .with_level(false)
        .with_target(false)
        .with_ansi(false)
        .try_init();
}

pub fn run(cmd: LabCmd) -> Result<()> {
    if !cellwall_lab::is_root() {
        bail!("cellwall lab needs root: it creates network namespaces and loads eBPF programs (try sudo)");
    }
    match cmd {
        LabCmd::Up {
            files,
            name,
            datapath,
            visibility,
            ignore_unknown_kinds,
            source,
            cni,
            cluster,
        } => {
            cellwall_lab::up(&cellwall_lab::UpSpec {
                name,
                files,
                datapath: datapath.into(),
                visibility: visibility.into(),
                source: source.into(),
                ignore_unknown_kinds,
                cni: cni.into(),
                cluster,
            })?;
        }
        LabCmd::Apply { files, name } => {
            cellwall_lab::apply(&name, &files, false)?;
        }
        LabCmd::Delete { files, name } => {
            cellwall_lab::apply(&name, &files, true)?;
        }
        LabCmd::Probe {
            probes,
            timeout,
            output,
            name,
        } => probe(&name, probes, Duration::from_millis(timeout), output)?,
        LabCmd::Exec { name, pod, command } => {
            std::process::exit(cellwall_lab::exec(&name, &pod, &command)?)
        }
        LabCmd::Flows { output, name } => flows(&name, output)?,
        LabCmd::Down { name } => {
            cellwall_lab::down(&name)?;
        }
        LabCmd::Serve { name } => cellwall_lab::serve(&name)?,
        LabCmd::KubeApi { name } => cellwall_lab::serve_api(&name)?,
        LabCmd::HostAdd {
            host,
            ip,
            labels,
            name,
        } => {
            cellwall_lab::host_add(&name, &host, ip, &labels)?;
        }
        LabCmd::RestartManager { name } => cellwall_lab::restart_manager(&name)?,
        LabCmd::Reattach { name } => cellwall_lab::reattach(&name)?,
    }
    Ok(())
}

fn probe(
    name: &str,
    probes: Vec<(Protocol, u16)>,
    timeout: Duration,
    output: Output,
) -> Result<()> {
    let out = AnalyzeOutput {
        probes: cellwall_lab::probe(name, probes, timeout)?
            .into_iter()
            .map(|m| ProbeMatrix {
                protocol: m.protocol,
                port: m.port,
                matrix: m.matrix,
            })
            .collect(),
    };
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
                stdout.write_all(render_table(m).as_bytes())?;
            }
        }
    }
    Ok(())
}

/// The lab's flows, as the manager stored them, with the datapath's own totals.
fn flows(name: &str, output: Output) -> Result<()> {
    let f = cellwall_lab::flows(name)?;
    let mut out = std::io::stdout().lock();
    match output {
        // Through a JSON value: keys in order, as the manager's own answer.
        Output::Json => writeln!(
            out,
            "{}",
            serde_json::to_string(&serde_json::to_value(&f)?)?
        )?,
        Output::Table => {
            for r in &f.list.flows {
                writeln!(out, "{}", crate::client::flow_line(r))?;
            }
            write!(out, "{} flow records", f.list.flows.len())?;
            if let Some(k) = f.datapath {
                write!(out, "; datapath totals: {} allowed, {} denied, {} audit, {} revoked, {} events lost", k.allowed, k.denied, k.audit, k.revoked, k.events_lost)?;
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_names_are_validated_by_the_lab() {
        assert!(parse_lab_name("demo").is_ok());
        assert_eq!(
            parse_lab_name("Demo").unwrap_err(),
            "\"Demo\": a lab name is 1-24 lowercase letters, digits or '-'"
        );
    }
}

//! `cellwall analyze`: the policy engine on manifests, no cluster needed (or on a live
//! cluster's objects, read through its API with `--kubeconfig`).

use crate::manifests::{assemble, load_objects, DEFAULT_POD_POOL};
use anyhow::{bail, Context, Result};
use cellwall_policy::render::render_explanation;
use cellwall_policy::{Engine, Flow, Protocol, WorkloadKey};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
#[command(
    about = "Compute who can reach whom under a set of policies, from manifests alone",
    long_about = "Reads Kubernetes Namespace/Pod/Node manifests (the inventory) and policies \
(NetworkPolicy, ClusterNetworkPolicy v1alpha2, Cellwall Policy/ClusterPolicy, and the deprecated \
v1alpha1 AdminNetworkPolicy/BaselineAdminNetworkPolicy) and prints, for each probe, the truth table \
of which pod can connect to which.\n\n\
ClusterNetworkPolicy domainNames peers admit only addresses an agent learned from DNS answers: \
between pods, statically, they match nothing.\n\n\
Pods without status.podIP get a deterministic address from 10.244.0.0/16.\n\n\
With --kubeconfig the same objects are read from a live cluster's API instead (list access to \
namespaces, nodes, pods, networkpolicies and the policy CRDs it serves; kinds the cluster does \
not serve are skipped and named on stderr). The output is the same as from files.",
    after_help = "Examples:\n  cellwall analyze -f examples/shop/\n  cellwall analyze -f examples/shop/ --probe TCP/5432 -o json\n  \
cellwall analyze -f examples/shop/ --from shop/web --to shop/db --probe TCP/5432 --explain\n  \
cellwall analyze --kubeconfig ~/.kube/config --context prod --probe TCP/5432\n  \
cellwall analyze --kubeconfig ~/.kube/config --context east=prod-east --context west=prod-west"
)]
pub struct AnalyzeArgs {
    /// Manifest files or directories (recursive; .yaml, .yml, .json; multi-document). `-` reads stdin.
    #[arg(short = 'f', long = "filename", required_unless_present = "kubeconfig", num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Read the objects from a live cluster through this kubeconfig instead of files.
    #[arg(long, value_name = "FILE", conflicts_with = "files")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to read (default: its current context). Repeat it to analyze
    /// several clusters together, as one manager watching them sees them: each is named
    /// (NAME=CONTEXT, or the context's own name), its pods are NAME:NAMESPACE/POD and its
    /// policies select only its own pods and nodes.
    #[arg(long, value_name = "[NAME=]CONTEXT", requires = "kubeconfig")]
    pub context: Vec<String>,
    /// A probe PROTO/PORT, e.g. TCP/80 (repeatable). Default: every distinct container port.
    #[arg(long = "probe", value_parser = parse_probe)]
    pub probes: Vec<(Protocol, u16)>,
    /// Output format.
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Output,
    /// Source pod NS/POD (with --explain).
    #[arg(long, value_parser = parse_key)]
    pub from: Option<WorkloadKey>,
    /// Destination pod NS/POD (with --explain).
    #[arg(long, value_parser = parse_key)]
    pub to: Option<WorkloadKey>,
    /// Explain the decision for --from → --to on --probe: every tier, policy and rule considered.
    #[arg(long, requires_all = ["from", "to"])]
    pub explain: bool,
    /// Evaluate at this time (RFC 3339) instead of now: shows what expiring policies will do.
    #[arg(long, value_parser = parse_time)]
    pub at: Option<i64>,
    /// Skip (with a warning) objects of kinds Cellwall does not read, instead of failing.
    #[arg(long)]
    pub ignore_unknown_kinds: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub fn parse_probe(s: &str) -> Result<(Protocol, u16), String> {
    let (p, n) = s
        .split_once('/')
        .ok_or_else(|| format!("{s:?}: expected PROTO/PORT, e.g. TCP/80"))?;
    let proto = Protocol::parse(&p.to_ascii_uppercase())
        .ok_or_else(|| format!("{s:?}: protocol must be TCP, UDP or SCTP"))?;
    let port: u16 = n
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{s:?}: port must be 1-65535"))?;
    Ok((proto, port))
}

pub fn parse_key(s: &str) -> Result<WorkloadKey, String> {
    WorkloadKey::parse(s).ok_or_else(|| format!("{s:?}: expected NAMESPACE/POD"))
}

pub fn parse_time(s: &str) -> Result<i64, String> {
    cellwall_policy::de::parse_rfc3339(s)
        .ok_or_else(|| format!("{s:?}: expected an RFC 3339 time, e.g. 2026-12-01T10:00:00Z"))
}

/// The JSON contract: `{"probes":[{"protocol":"TCP","port":80,"matrix":{"x/a":{"x/b":true}}}]}`.
#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct AnalyzeOutput {
    pub probes: Vec<ProbeMatrix>,
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct ProbeMatrix {
    pub protocol: Protocol,
    pub port: u16,
    pub matrix: BTreeMap<String, BTreeMap<String, bool>>,
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Builds the engine from manifest paths, or from a cluster when `--kubeconfig` is given.
pub fn engine_from(args: &AnalyzeArgs) -> Result<Engine> {
    let objects = match &args.kubeconfig {
        Some(k) => crate::cluster::read_all(k, &args.context)?,
        None => load_objects(&args.files, args.ignore_unknown_kinds)?,
    };
    let at = args.at;
    let a = assemble(objects, DEFAULT_POD_POOL.parse().expect("valid pool"))?;
    Ok(Engine::build(
        a.inventory,
        a.policies,
        at.unwrap_or_else(now_unix),
    ))
}

/// Every distinct (protocol, containerPort) in the inventory, sorted.
pub fn default_probes(engine: &Engine) -> Vec<(Protocol, u16)> {
    let set: BTreeSet<(Protocol, u16)> = engine
        .inventory()
        .workloads
        .values()
        .flat_map(|w| w.ports.iter().map(|p| (p.protocol, p.port)))
        .collect();
    set.into_iter().collect()
}

/// Truth tables for the probes, evaluated on every ordered pair of pods.
pub fn matrices(engine: &Engine, probes: &[(Protocol, u16)]) -> AnalyzeOutput {
    let pods: Vec<(String, Option<std::net::IpAddr>)> = engine
        .inventory()
        .workloads
        .values()
        .map(|w| (w.key().to_string(), w.ips.first().copied()))
        .collect();
    let probes = probes
        .iter()
        .map(|(protocol, port)| {
            let mut matrix = BTreeMap::new();
            for (from, src) in &pods {
                let mut row = BTreeMap::new();
                for (to, dst) in &pods {
                    let allowed = match (src, dst) {
                        (Some(s), Some(d)) => {
                            engine
                                .evaluate(&Flow {
                                    src: *s,
                                    dst: *d,
                                    protocol: *protocol,
                                    port: *port,
                                })
                                .allowed
                        }
                        // A pod with no address (hostNetwork on an unknown node) cannot be reached.
                        _ => false,
                    };
                    row.insert(to.clone(), allowed);
                }
                matrix.insert(from.clone(), row);
            }
            ProbeMatrix {
                protocol: *protocol,
                port: *port,
                matrix,
            }
        })
        .collect();
    AnalyzeOutput { probes }
}

/// The upstream e2e PrettyPrint layout: tab-separated, `.` allowed, `X` blocked.
pub fn render_table(m: &ProbeMatrix) -> String {
    let cols: Vec<&String> = m.matrix.keys().collect();
    let mut s = String::from("-");
    for c in &cols {
        s.push('\t');
        s.push_str(c);
    }
    s.push('\n');
    for (from, row) in &m.matrix {
        s.push_str(from);
        for c in &cols {
            s.push('\t');
            s.push(if row.get(*c).copied().unwrap_or(false) {
                '.'
            } else {
                'X'
            });
        }
        s.push('\n');
    }
    s
}

pub fn run(args: AnalyzeArgs) -> Result<()> {
    let engine = engine_from(&args)?;
    let mut out = std::io::stdout().lock();
    if args.explain {
        let (Some(from), Some(to)) = (&args.from, &args.to) else {
            bail!("--explain needs --from and --to")
        };
        let [(protocol, port)] = args.probes[..] else {
            bail!("--explain needs exactly one --probe PROTO/PORT")
        };
        let ip = |k: &WorkloadKey| -> Result<std::net::IpAddr> {
            let w = engine
                .inventory()
                .workloads
                .get(k)
                .with_context(|| format!("no pod {k} in the manifests"))?;
            w.ips
                .first()
                .copied()
                .with_context(|| format!("pod {k} has no address"))
        };
        let ex = engine.explain(&Flow {
            src: ip(from)?,
            dst: ip(to)?,
            protocol,
            port,
        });
        match args.output {
            Output::Json => writeln!(out, "{}", serde_json::to_string_pretty(&ex)?)?,
            Output::Table => out.write_all(render_explanation(&ex).as_bytes())?,
        }
        return Ok(());
    }
    if args.from.is_some() || args.to.is_some() {
        bail!("--from/--to are used with --explain");
    }
    let probes = if args.probes.is_empty() {
        default_probes(&engine)
    } else {
        args.probes.clone()
    };
    if probes.is_empty() {
        bail!("no probes: the pods declare no container ports; pass --probe PROTO/PORT");
    }
    let result = matrices(&engine, &probes);
    match args.output {
        Output::Json => writeln!(out, "{}", serde_json::to_string(&result)?)?,
        Output::Table => {
            for (i, m) in result.probes.iter().enumerate() {
                if i > 0 {
                    writeln!(out)?;
                }
                writeln!(
                    out,
                    "{}/{}  (rows: from, columns: to; . allowed, X blocked)",
                    m.protocol, m.port
                )?;
                out.write_all(render_table(m).as_bytes())?;
            }
        }
    }
    Ok(())
}

//! The `cellwall` command.

mod analyze;
mod client;
mod cluster;
#[cfg(feature = "lab")]
mod demo;
mod discover;
#[cfg(feature = "lab")]
mod lab;
mod manifests;
mod tokens;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "cellwall",
    version,
    about = "Zero-trust micro-segmentation: see, propose, simulate and enforce east-west policy",
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    Analyze(analyze::AnalyzeArgs),
    /// Real workloads on this machine: network namespaces, servers, and kernel enforcement.
    #[cfg(feature = "lab")]
    #[command(subcommand)]
    Lab(lab::LabCmd),
    /// Create or update policies and inventory in the manager from manifests.
    Apply(client::ApplyArgs),
    /// Delete the policies (or other objects) named in manifests from the manager.
    Delete(client::ApplyArgs),
    /// List policies, workloads, nodes, namespaces or the audit trail from the manager.
    Get(client::GetArgs),
    /// Observed connections, as the agents reported them.
    Flows(client::FlowsArgs),
    /// Why the policy in force allows or denies a flow: NS/POD NS/POD|IP|DNS-NAME PROTO/PORT.
    Explain(discover::ExplainArgs),
    /// The application dependency map from flow history: who talks to whom, on which ports.
    Map(discover::MapArgs),
    /// Least-privilege policy proposed from observed traffic, with evidence per rule.
    Propose(discover::ProposeArgs),
    /// Replay flow history against candidate policies: what would break, what escaped.
    Simulate(discover::SimulateArgs),
    /// Business-flow approval: review a saved proposal (propose --save) rule by rule.
    Review(discover::ReviewArgs),
    /// Cut a workload off at once, both ways, existing connections included.
    Quarantine(client::QuarantineArgs),
    /// End a quarantine.
    Release(client::ReleaseArgs),
    /// Label workloads from a CMDB export or a vulnerability scanner report (CSV or JSON).
    Import(client::ImportArgs),
    /// Compliance alerts: escaped flows, audit-only and expiring allowances, new edges.
    Alerts(client::AlertsArgs),
    /// Tokens: bootstrap tokens that let agents join (bound to a node, expiring, single-use),
    /// and bearer tokens for people and scripts.
    #[command(subcommand)]
    Tokens(tokens::TokensCmd),
    /// Node credentials: withdraw a node's certificate.
    #[command(subcommand)]
    Nodes(tokens::NodesCmd),
    /// A guided tour on real traffic: build a lab, watch, lock down, catch lateral movement.
    #[cfg(feature = "lab")]
    Demo(demo::DemoArgs),
}

fn main() {
    let cli = Cli::parse();
    #[cfg(feature = "lab")]
    lab::init_logging();
    let r = match cli.command {
        Command::Analyze(a) => analyze::run(a),
        #[cfg(feature = "lab")]
        Command::Lab(l) => lab::run(l),
        Command::Apply(a) => client::apply(a, false),
        Command::Delete(a) => client::apply(a, true),
        Command::Get(a) => client::get(a),
        Command::Flows(a) => client::flows(a),
        Command::Explain(a) => discover::explain(a),
        #[cfg(feature = "lab")]
        Command::Demo(a) => demo::run(a),
        Command::Map(a) => discover::map(a),
        Command::Quarantine(a) => client::quarantine(a),
        Command::Import(a) => client::import(a),
        Command::Alerts(a) => client::alerts(a),
        Command::Tokens(t) => tokens::run(t),
        Command::Nodes(n) => tokens::nodes(n),
        Command::Release(a) => client::release(a),
        Command::Propose(a) => discover::propose(a),
        Command::Simulate(a) => discover::simulate(a),
        Command::Review(a) => discover::review(a),
    };
    if let Err(e) = r {
        // Broken pipes (e.g. `| head`) are not errors worth reporting.
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
        {
            std::process::exit(0);
        }
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

//! The `cellwall` command.

mod analyze;
mod lab;
mod manifests;

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
    #[command(subcommand)]
    Lab(lab::LabCmd),
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.command {
        Command::Analyze(a) => analyze::run(a),
        Command::Lab(l) => lab::run(l),
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

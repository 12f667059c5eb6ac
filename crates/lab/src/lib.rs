//! `cellwall lab`: real workloads on one machine. One network namespace per pod, a veth to a
//! per-lab "node" namespace that routes like a CNI, real TCP/UDP servers on every container
//! port, a real manager and node agent (enforcing with the kernel datapath), probes with real
//! connections. Everything a lab creates carries its name, so labs coexist and [`down`] finds
//! all of it even after a crash.
//!
//! The lab talks to its manager only through the typed client of `cellwall-api`
//! ([`cellwall_api::client::Client::for_lab`]), reads manifests with `cellwall-manifests`, and
//! starts `cellwall-manager` and `cellwall-agent` found beside the running binary; the server
//! process is the running binary again, with [`SERVE_COMMAND`] (see [`serve`]). Progress is
//! logged through `tracing` (the CLI prints it on stderr).
//!
//! Modules: `state` (names, paths, `state.json`), `net` (namespaces, veths, addresses),
//! `supervise` (processes), `serve` (the workload servers), `probe` (real connections),
//! `flows`, `lifecycle` (up, apply, down, ...), `cni` (pods added to a running lab as a CNI
//! would, for agents that find interfaces themselves). Most need root; the planning parts are
//! pure.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod bind;
mod cni;
mod error;
mod flows;
mod kube;
mod lifecycle;
mod net;
mod probe;
mod serve;
mod state;
mod supervise;

/// Network namespaces by name: setns per thread ([`cellwall_datapath::netns`]).
pub use cellwall_datapath::netns;
pub use cni::{cni_add, cni_del, CniPod};
pub use error::{LabError, Result};
pub use flows::{flows, DatapathTotals, LabFlows};
pub use kube::{kubeconfig, serve_api, KUBE_API_COMMAND};
pub use lifecycle::{apply, down, exec, host_add, reattach, restart_manager, up, Down, Up, UpSpec};
pub use net::{bridge_name, veth_mac, GATEWAY};
pub use probe::{connect, connect_from, probe, Matrix};
pub use serve::serve;
pub use state::{
    node_ns, pin_dir, state_dir, validate_host_name, validate_name, Cni, DatapathKind, LabPod,
    LabState, Source, Visibility, LAB_NODE,
};
pub use supervise::{sibling, SERVE_COMMAND};

/// Whether this process runs as root (read from /proc: no unsafe outside the datapath crate).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

//! What can go wrong in a lab; every variant names the lab, file, command or process involved.

use cellwall_api::client::ClientError;
use cellwall_datapath::DatapathError;
use cellwall_manifests::ManifestError;

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("{name:?}: a lab name is 1-24 lowercase letters, digits or '-'")]
    BadName { name: String },
    #[error("host name {host:?}: expected 1-40 lowercase letters, digits or '-'")]
    BadHostName { host: String },
    #[error("no lab named {name:?} is up (cannot read {path})")]
    NotUp {
        name: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is damaged; `cellwall lab down --name {name}` cleans up")]
    DamagedState {
        name: String,
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is damaged{detail}")]
    DamagedFile { path: String, detail: String },
    #[error("lab {name:?} already exists: `cellwall lab down --name {name}` first")]
    Exists { name: String },
    #[error("no pod {pod} in lab {lab}")]
    NoPod { pod: String, lab: String },
    #[error("{pod} has no address")]
    NoAddress { pod: String },
    #[error("{at}: {reason}")]
    Refused { at: String, reason: String },
    #[error("- (standard input) is not supported with the manager yet; pass files")]
    Stdin,
    #[error("lab {name} has no datapath (--datapath none): a host agent would enforce nothing")]
    NoDatapath { name: String },
    #[error("lab {name} already has a host {host}")]
    HostExists { name: String, host: String },
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot run {program}")]
    Run {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Failed { command: String, stderr: String },
    #[error("ip -batch in {netns}: {stderr}")]
    IpBatch { netns: String, stderr: String },
    #[error("writing sysctls in {netns}")]
    Sysctl {
        netns: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{bin} not found next to {exe} (build the whole workspace: cargo build --workspace)")]
    SiblingMissing { bin: String, exe: String },
    #[error("the lab {process} exited ({status}):\n{log}")]
    Exited {
        process: &'static str,
        status: String,
        log: String,
    },
    #[error("the lab manager did not start in 20 s:\n{log}")]
    ManagerNotStarted { log: String },
    #[error("the lab agent did not apply revision {revision} in {secs} s:\n{log}")]
    AgentLate {
        revision: u64,
        secs: u64,
        log: String,
    },
    #[error("the lab servers did not become ready in 20 s; see {log}")]
    ServersNotReady { log: String },
    #[error("servers failed: {failures}")]
    ServersFailed { failures: String },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
}

pub type Result<T, E = LabError> = std::result::Result<T, E>;

/// Wraps an I/O error with what was being done.
pub(crate) fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}

//! The agent library's one error type. Errors are logged where they are handled (the
//! reconnect loop, the enforcement loop), with their whole chain: [`chain`].

use cellwall_datapath::DatapathError;
use cellwall_proto::tonic;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("datapath")]
    Datapath(#[from] DatapathError),
    #[error("{what} {}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A configuration or local input the agent cannot use (endpoints file, host mode).
    #[error("{what}: {detail}")]
    Invalid { what: String, detail: String },
    #[error("{what} {}", path.display())]
    Json {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("this node has no certificate yet: pass --bootstrap-token-file (the manager's bootstrap.token)")]
    NoCertificate,
    #[error("manager address {addr:?}")]
    Address {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("connecting to the manager at {addr}")]
    Connect {
        addr: String,
        #[source]
        source: tonic::transport::Error,
    },
    /// A call the manager answered with an error status.
    #[error("{call} refused: {}", status.message())]
    Refused {
        call: &'static str,
        status: Box<tonic::Status>,
    },
    #[error("the manager closed the watch stream")]
    StreamClosed,
    /// The node certificate was renewed: the session reconnects with it at once.
    #[error(
        "renewed the node certificate (valid until {not_after_ms} Unix ms); reconnecting with it"
    )]
    Renewed { not_after_ms: i64 },
    #[error("desired state")]
    Payload(#[from] cellwall_proto::PayloadError),
    /// A delta that does not start from the version held: the session reconnects so the
    /// manager sends a snapshot.
    #[error(
        "a delta from version {base} arrived while holding {held}; reconnecting for a snapshot"
    )]
    OutOfOrder { base: u64, held: u64 },
    /// The enforcement thread could not apply a state on top of what it holds (the message
    /// says why): the session ends so the next one starts from a snapshot.
    #[error("{0}")]
    Resync(String),
    #[error("re-applying the saved state")]
    Restore(#[source] Box<AgentError>),
    #[error("the enforcement thread stopped")]
    EnforcementStopped,
    #[error("starting {what}")]
    Spawn {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl AgentError {
    pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.to_path_buf();
        move |source| AgentError::Io { what, path, source }
    }

    pub(crate) fn refused(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| AgentError::Refused {
            call,
            status: Box::new(status),
        }
    }
}

/// An error and its sources, `outer: inner: innermost` (what `anyhow`'s `{:#}` prints).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        // Some libraries repeat their source in their own message.
        if !s.ends_with(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_prints_every_source_once() {
        let e = AgentError::Restore(Box::new(AgentError::Datapath(DatapathError::Kernel {
            what: "writing cw_policy".into(),
            detail: "E2BIG".into(),
        })));
        assert_eq!(
            chain(&e),
            "re-applying the saved state: datapath: writing cw_policy: E2BIG"
        );
    }
}

//! Cellwall's node agent as a library, generic over the [`Datapath`](cellwall_datapath::Datapath)
//! it programs: the `cellwall-agent` binary runs it on the kernel's (or on none), tests on the
//! in-memory fake.
//!
//! Module map (each depends only on those above it):
//! - [`error`] — [`AgentError`] and [`chain`] (an error with its sources, for logs and acks).
//! - [`config`] — [`Config`]: the command line as a struct.
//! - [`discovery`] — local workloads (endpoints file, host mode) and what the node reports.
//! - [`state`] — the state directory: node key and certificate, `desired.json`, `ready`.
//! - [`metrics`] — the Prometheus metrics and their HTTP server.
//! - [`logging`] — `tracing` output, text or JSON.
//! - [`enforcer`] — engine changes → per-node incremental compile (on its own thread) →
//!   datapath apply, with emergency isolations kept over every commit until their own.
//! - [`emergency`] — which local endpoints a revision cuts off (quarantines), enforced before
//!   the revision waits behind a compile.
//! - [`node`] — [`NodeAgent`]: an engine in step with the manager's states, where programs
//!   must be attached, flow attribution.
//! - [`flows`] — kernel events aggregated into flow records; the bounded flow queue.
//! - [`fqdn`] — DNS answers held by the datapath: parsed, learned with their TTL, expired.
//! - [`enforce`] — the enforcement loop: apply in order, persist, ack, expire grants, collect.
//! - [`identity`] — the TLS channel and the join that buys the node certificate.
//! - [`session`] — one gRPC connection: watch, states, acks, flow batches.
//! - [`agent`] — [`Agent`] and [`run`]: threads, runtime, reconnects, start and stop.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod agent;
pub mod config;
pub mod discovery;
pub mod emergency;
pub mod enforce;
pub mod enforcer;
pub mod error;
pub mod flows;
pub mod fqdn;
pub mod identity;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod session;
pub mod state;

pub use agent::{run, Agent};
pub use config::{Config, DatapathKind, HostMode};
pub use discovery::{EndpointsFile, LocalEndpoint};
pub use enforcer::Enforcer;
pub use error::{chain, AgentError};
pub use node::NodeAgent;

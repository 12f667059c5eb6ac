//! Cellwall's manager: the store, the REST API for people and scripts, and the mTLS gRPC service
//! that pushes versioned desired state to agents and takes their acks and flow records.
//!
//! Desired state is the model (namespaces, workloads, nodes, policies) tagged with the store
//! revision; each agent compiles its own node's tables with the policy crate. An agent gets the
//! whole model once (a deflated snapshot) and then only what changed (a delta per revision), so
//! a relabel among 100,000 workloads sends one workload to every node, not the model. Each
//! message is encoded once per revision for every agent.
//!
//! Layers (a module uses only those above it): `config`, `error`, `validate`, `pki`, `store`, `history`,
//! `alerts`, `writer`, `limits`, `sessions`, `metrics` → `state`, `intake` → `manager` → the operations (`objects`, `tokens`, `nodes`, `flows`,
//! `imports`, `quarantines`, `discover`) → `services` → `rest`, `grpc`, `https` → `runtime`;
//! `rotation` (the `ca` command) beside them, over `store` and `pki`.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod alerts;
pub mod cluster;
pub mod cluster_status;
pub mod config;
pub mod discover;
pub mod drafts;
pub mod error;
pub mod flows;
pub mod grpc;
pub mod history;
pub mod https;
pub mod imports;
pub mod intake;
pub mod join_review;
pub mod limits;
pub mod manager;
pub mod metrics;
pub mod nodes;
pub mod objects;
pub mod pki;
pub mod quarantines;
pub mod rest;
pub mod rotation;
pub mod runtime;
pub mod services;
pub mod sessions;
pub mod state;
pub mod store;
pub mod tokens;
pub mod validate;
pub mod writer;

pub use config::{now_ms, parse_duration_ms, ApiTransport, Config};
pub use error::{ErrorKind, ManagerError};
pub use manager::{FirstStart, Manager};
pub use runtime::{start, Running};
pub use state::{Change, Published, QUARANTINE_LABEL};

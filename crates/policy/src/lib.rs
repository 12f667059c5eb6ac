//! Cellwall's pure policy engine.
//!
//! Architecture invariant: this crate performs no I/O (no files, sockets, clocks or threads) and
//! has no async runtime. Callers pass text in and get decisions out, and pass "now" explicitly,
//! so every result is reproducible and the same code runs in the CLI, the manager, the agent and
//! the tests that check the kernel datapath against it.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod clusters;
pub mod compile;
pub mod de;
pub mod discover;
pub mod engine;
pub mod fxhash;
pub mod identity;
pub mod import;
pub mod k8s;
pub mod labels;
pub mod load;
#[cfg(feature = "schema")]
mod manifest_schema;
pub mod model;
pub mod net;
pub mod render;
#[cfg(feature = "schema")]
mod schema;
#[cfg(feature = "synth")]
pub mod shapes;
#[cfg(feature = "synth")]
pub mod synth;

pub use compile::{compile, Compiler, NodePolicy};
pub use engine::{Decision, DirVerdict, Engine, Explanation, Flow, Reason, RuleInfo};
pub use labels::{LabelSelector, Labels, SharedLabels};
pub use load::{parse_file, LoadError, Located, Object};
pub use model::*;
pub use net::Cidr;

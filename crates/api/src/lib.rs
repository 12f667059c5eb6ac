//! The manager's REST contract, typed once for every side of it: the manager serializes these
//! types, the CLI deserializes them, and the OpenAPI document is generated from them, so a field
//! renamed on one side is a compile error or a failing drift test on the others.
//!
//! Every error answer has the body [`ErrorBody`]; every list answer is an object with its
//! items (never a bare array), so fields can be added without breaking clients.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod discover;
pub mod drafts;
pub mod error;
pub mod flows;
pub mod nodes;
pub mod objects;
pub mod respond;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "openapi")]
pub mod openapi;

/// The response header in which the manager states its request body limit (bytes), so a
/// client can split a large request before sending it.
pub const BODY_LIMIT_HEADER: &str = "cellwall-body-limit";

pub use discover::*;
pub use drafts::*;
pub use error::{ErrorBody, ErrorDetail};
pub use flows::*;
pub use nodes::*;
pub use objects::*;
pub use respond::*;

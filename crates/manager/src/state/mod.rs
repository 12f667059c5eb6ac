//! The desired state: stored objects read incrementally ([`raw`]), turned into the model agents
//! enforce ([`derive`], [`quarantine`]), and published revision by revision ([`publish`]).

mod derive;
mod owners;
pub mod publish;
pub mod quarantine;
pub mod raw;
pub mod reports;

pub use publish::{Change, Holders, Owner, Published, State};
pub use quarantine::{quarantine_policy, QUARANTINE_LABEL};
pub use reports::{Checked, Conflict};

//! The manager's errors, by whose fault they are. One mapping turns a kind into an HTTP status
//! and a gRPC code, so a database failure is never reported as the caller's bad request.

use crate::pki::PkiError;
use crate::store::StoreError;

/// Whose problem an error is, and so what the caller is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is wrong (bad input): fix it and retry.
    Invalid,
    /// What the request names does not exist.
    NotFound,
    /// No or unknown credentials.
    Unauthenticated,
    /// Valid credentials, not allowed to do this.
    Forbidden,
    /// The request conflicts with the current state (e.g. an ack from a node that never joined).
    Conflict,
    /// The request is larger than allowed.
    TooLarge,
    /// Too many requests from this caller: retry later.
    RateLimited,
    /// The manager cannot serve it now (database failure, shutting down): retry later.
    Unavailable,
    /// A bug or a broken environment.
    Internal,
}

impl ErrorKind {
    pub fn http_status(self) -> u16 {
        match self {
            ErrorKind::Invalid => 400,
            ErrorKind::NotFound => 404,
            ErrorKind::Unauthenticated => 401,
            ErrorKind::Forbidden => 403,
            ErrorKind::Conflict => 409,
            ErrorKind::TooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Unavailable => 503,
            ErrorKind::Internal => 500,
        }
    }

    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::Invalid => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
            ErrorKind::Forbidden => tonic::Code::PermissionDenied,
            ErrorKind::Conflict => tonic::Code::FailedPrecondition,
            ErrorKind::TooLarge => tonic::Code::ResourceExhausted,
            ErrorKind::RateLimited => tonic::Code::ResourceExhausted,
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

use cellwall_proto::tonic;

#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    RateLimited(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the manager is shutting down")]
    ShuttingDown,
    /// A dependency failed (the database); the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl ManagerError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            ManagerError::Invalid(_) => ErrorKind::Invalid,
            ManagerError::NotFound(_) => ErrorKind::NotFound,
            ManagerError::Unauthenticated(_) => ErrorKind::Unauthenticated,
            ManagerError::Forbidden(_) => ErrorKind::Forbidden,
            ManagerError::Conflict(_) => ErrorKind::Conflict,
            ManagerError::TooLarge(_) => ErrorKind::TooLarge,
            ManagerError::RateLimited(_) => ErrorKind::RateLimited,
            ManagerError::Store(StoreError::Conflict(_)) => ErrorKind::Conflict,
            ManagerError::Store(StoreError::Backend(_) | StoreError::Io { .. }) => {
                ErrorKind::Unavailable
            }
            ManagerError::Store(_) => ErrorKind::Internal,
            ManagerError::ShuttingDown | ManagerError::Unavailable(_) => ErrorKind::Unavailable,
            ManagerError::Pki(_)
            | ManagerError::Io { .. }
            | ManagerError::Transport(_)
            | ManagerError::Internal(_) => ErrorKind::Internal,
        }
    }

    /// As a gRPC status (what agents see).
    pub fn to_status(&self) -> tonic::Status {
        tonic::Status::new(self.kind().grpc_code(), self.to_string())
    }
}

/// An I/O error with what was being done.
pub fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ManagerError {
    let what = what.into();
    move |source| ManagerError::Io { what, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_failure_is_never_the_callers_fault() {
        let db = ManagerError::Store(StoreError::Backend(rusqlite::Error::InvalidQuery));
        assert_eq!(db.kind().http_status(), 503);
        assert_eq!(db.to_status().code(), tonic::Code::Unavailable);
        assert_eq!(ManagerError::ShuttingDown.kind().http_status(), 503);
        assert_eq!(ManagerError::Invalid("x".into()).kind().http_status(), 400);
        assert_eq!(
            ManagerError::Invalid("x".into()).to_status().code(),
            tonic::Code::InvalidArgument
        );
        let not_joined = ManagerError::Store(StoreError::Conflict("node n has not joined".into()));
        assert_eq!(not_joined.kind(), ErrorKind::Conflict);
    }
}

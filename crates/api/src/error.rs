//! The one error body every route answers with.

use serde::{Deserialize, Serialize};

/// `{"error": {"status": 400, "reason": "Bad Request", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    /// The HTTP status code, repeated for clients that only keep the body.
    pub status: u16,
    /// The status code's reason phrase.
    pub reason: String,
    /// What went wrong and, where the caller can fix it, what was expected.
    pub message: String,
}

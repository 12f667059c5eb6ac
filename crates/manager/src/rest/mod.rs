//! The REST API (JSON). Every route but `/healthz` and the OpenAPI document needs a bearer
//! token: `read` tokens may read, `admin` tokens may also write. A missing or unknown token is
//! 401, a read token on a write route is 403; every error, whatever produced it, has the body
//! [`cellwall_api::ErrorBody`]. Handlers are written against the narrow traits of
//! [`crate::services`], never the whole manager.

mod console;
mod discover;
mod objects;
mod observe;
mod respond;

use crate::error::ManagerError;
use crate::services::{Authenticate, Discover, Objects, Observe, Respond};
use crate::store::Role;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cellwall_api::{ErrorBody, ErrorDetail};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// An error answer: status and message, rendered as [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn detail(&self) -> ErrorDetail {
        ErrorDetail {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("").to_string(),
            message: self.message.clone(),
        }
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        let status = StatusCode::from_u16(e.kind().http_status())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        if status.is_server_error() {
            tracing::error!("answering {status}: {e}");
        }
        Self::new(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.detail(),
            }),
        )
            .into_response()
    }
}

pub type Api<T> = Result<Json<T>, ApiError>;

/// Checks the bearer token; returns the caller's name for the audit trail.
fn auth(s: &dyn Authenticate, headers: &HeaderMap, need: Role) -> Result<String, ApiError> {
    caller(s, headers, need).map(|(_, name)| name)
}

/// Checks the bearer token; returns the caller's role and name.
fn caller(
    s: &dyn Authenticate,
    headers: &HeaderMap,
    need: Role,
) -> Result<(Role, String), ApiError> {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, msg);
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <token>"))?;
    let (role, name) = s
        .authenticate(token.trim())?
        .ok_or_else(|| unauthorized("invalid token"))?;
    match (role, need) {
        (Role::Bootstrap, _) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "a bootstrap token only joins agents",
        )),
        (Role::Read, Role::Admin) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token may only read (an admin token is needed)",
        )),
        _ => Ok((role, name)),
    }
}

/// `GET /v1/whoami`: the token's name and role.
async fn whoami<S: Authenticate>(State(s): St<S>, h: HeaderMap) -> Api<cellwall_api::Identity> {
    let (role, name) = caller(&*s, &h, Role::Read)?;
    Ok(Json(cellwall_api::Identity { name, role }))
}

/// Runs store work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ManagerError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(ApiError::from)
}

/// A JSON request body, with serde's message (field, line, column) on failure.
fn body<T: DeserializeOwned>(b: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(b).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

/// The query string as `T` (unknown parameters are refused by `T`'s own rules).
fn query<T: DeserializeOwned>(req: &axum::http::Uri) -> Result<T, ApiError> {
    serde_urlencoded::from_str(req.query().unwrap_or(""))
        .map_err(|e| ApiError::bad(format!("query: {e}")))
}

/// Answers every request the router has no route for, and refused methods, with the error
/// body (axum's own 404/405 bodies are empty).
async fn fallback(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no route {} {} (see /v1/openapi.json)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// A route that exists, asked with a method it does not serve.
async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!(
            "{} {}: method not allowed (see /v1/openapi.json)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Every answer with an error status carries the error body, also those axum writes itself
/// (a body over the limit, a missing content type): their plain text becomes the message.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    ApiError::new(status, message).into_response()
}

/// The default limit on a request body: a 10,000-rule policy set or a large inventory fits;
/// `cellwall apply` splits what is larger into parts.
pub const DEFAULT_BODY_LIMIT: usize = 32 << 20;

/// The response header saying how large a request body may be.
pub const BODY_LIMIT_HEADER: &str = cellwall_api::BODY_LIMIT_HEADER;

pub fn router<S: Objects + Observe + Discover + Respond>(s: Arc<S>, body_limit: usize) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/whoami", get(whoami::<S>))
        .merge(console::routes())
        .route("/v1/apply", post(objects::apply::<S>))
        .route("/v1/delete", post(objects::delete::<S>))
        .route("/v1/policies", get(objects::policies::<S>))
        .route("/v1/policies/history", get(objects::history::<S>))
        .route("/v1/workloads", get(objects::workloads::<S>))
        .route("/v1/namespaces", get(objects::namespaces::<S>))
        .route("/v1/audit", get(objects::audit::<S>))
        .route(
            "/v1/tokens",
            post(objects::create_token::<S>).get(objects::tokens::<S>),
        )
        .route("/v1/tokens/revoke", post(objects::revoke_token::<S>))
        .route("/v1/nodes/revoke", post(objects::revoke_node::<S>))
        .route("/v1/nodes", get(observe::nodes::<S>))
        .route("/v1/flows", get(observe::flows::<S>))
        .route("/v1/alerts", get(observe::alerts::<S>))
        .route("/metrics", get(observe::metrics::<S>))
        .route("/v1/explain", get(discover::explain::<S>))
        .route("/v1/map", get(discover::map::<S>))
        .route("/v1/propose", get(discover::propose::<S>))
        .route("/v1/simulate", post(discover::simulate::<S>))
        .route(
            "/v1/drafts",
            post(discover::save_draft::<S>).get(discover::drafts::<S>),
        )
        .route("/v1/drafts/show", get(discover::draft::<S>))
        .route("/v1/rules", get(discover::rules::<S>))
        .route("/v1/drafts/review", post(discover::review::<S>))
        .route("/v1/drafts/apply", post(discover::apply_draft::<S>))
        .route("/v1/drafts/delete", post(discover::delete_draft::<S>))
        .route(
            "/v1/quarantine",
            post(respond::quarantine::<S>).get(respond::quarantines::<S>),
        )
        .route("/v1/release", post(respond::release::<S>))
        .route(
            "/v1/imports",
            post(respond::import::<S>).get(respond::imports::<S>),
        )
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        // Clients split a large request before sending it: a server refusing a body mid-upload
        // closes the connection, and the client may see a broken pipe instead of the 413.
        .layer(axum::middleware::map_response(
            move |mut r: Response| async move {
                r.headers_mut()
                    .insert(BODY_LIMIT_HEADER, axum::http::HeaderValue::from(body_limit));
                r
            },
        ))
        .layer(axum::middleware::map_response(json_errors))
        .with_state(s)
}

/// The OpenAPI document, generated once from the API's types (`cellwall_api::openapi`).
async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let doc = DOC.get_or_init(|| cellwall_api::openapi::document().to_string());
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        doc.as_str(),
    )
}

type St<S> = State<Arc<S>>;

#[cfg(test)]
mod tests;

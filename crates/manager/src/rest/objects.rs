//! Writes of manifests, and reads of stored objects, the audit trail and tokens.

use super::*;
use axum::body::Bytes;
use axum::http::Uri;
use cellwall_api::*;
use serde::Deserialize;

pub async fn apply<S: Objects>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Committed> {
    write(s, h, b, false).await
}

pub async fn delete<S: Objects>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Committed> {
    write(s, h, b, true).await
}

async fn write<S: Objects>(s: Arc<S>, h: HeaderMap, b: Bytes, delete: bool) -> Api<Committed> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: ApplyRequest = body(&b)?;
    Ok(Json(blocking(move || s.apply(&who, &req, delete)).await?))
}

pub async fn policies<S: Objects>(State(s): St<S>, h: HeaderMap) -> Api<PolicyList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(blocking(move || s.policies()).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryQuery {
    id: Option<String>,
}

pub async fn history<S: Objects>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<PolicyHistory> {
    auth(&*s, &h, Role::Read)?;
    let q: HistoryQuery = query(&u)?;
    let id = q.id.ok_or_else(|| {
        ApiError::bad("query parameter id (e.g. NetworkPolicy/ns/name) is required")
    })?;
    Ok(Json(blocking(move || s.policy_history(&id)).await?))
}

pub async fn workloads<S: Objects>(State(s): St<S>, h: HeaderMap) -> Api<WorkloadList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(s.workloads()?))
}

pub async fn namespaces<S: Objects>(State(s): St<S>, h: HeaderMap) -> Api<NamespaceList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(s.namespaces()?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    limit: Option<usize>,
}

pub async fn audit<S: Objects>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<AuditLog> {
    auth(&*s, &h, Role::Read)?;
    let q: AuditQuery = query(&u)?;
    let limit = q.limit.unwrap_or(100);
    Ok(Json(blocking(move || s.audit(limit)).await?))
}

pub async fn create_token<S: Objects>(
    State(s): St<S>,
    h: HeaderMap,
    b: Bytes,
) -> Api<TokenCreated> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: TokenRequest = body(&b)?;
    Ok(Json(blocking(move || s.create_token(&who, &req)).await?))
}

pub async fn tokens<S: Objects>(State(s): St<S>, h: HeaderMap) -> Api<TokenList> {
    auth(&*s, &h, Role::Admin)?;
    Ok(Json(blocking(move || s.tokens()).await?))
}

pub async fn revoke_token<S: Objects>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Revoked> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: RevokeTokenRequest = body(&b)?;
    Ok(Json(blocking(move || s.revoke_token(&who, req.id)).await?))
}

pub async fn revoke_node<S: Objects>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Revoked> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: RevokeNodeRequest = body(&b)?;
    Ok(Json(
        blocking(move || s.revoke_node(&who, &req.node)).await?,
    ))
}

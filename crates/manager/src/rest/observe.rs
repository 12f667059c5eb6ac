//! Nodes, flow records and alerts.

use super::*;
use axum::http::Uri;
use cellwall_api::*;

pub async fn nodes<S: Observe>(State(s): St<S>, h: HeaderMap) -> Api<NodeList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(blocking(move || s.nodes()).await?))
}

pub async fn flows<S: Observe>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<FlowList> {
    auth(&*s, &h, Role::Read)?;
    let q: FlowQuery = query(&u)?;
    Ok(Json(blocking(move || s.flows(&q)).await?))
}

pub async fn alerts<S: Observe>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<AlertList> {
    auth(&*s, &h, Role::Read)?;
    let q: AlertQuery = query(&u)?;
    Ok(Json(blocking(move || s.alerts(&q)).await?))
}

/// Prometheus metrics (a read token, as for every route that reveals state).
pub async fn metrics<S: Observe>(State(s): St<S>, h: HeaderMap) -> Result<Response, ApiError> {
    auth(&*s, &h, Role::Read)?;
    let text = blocking(move || s.metrics()).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

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

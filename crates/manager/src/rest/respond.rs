//! Quarantine, release and label imports.

use super::*;
use axum::body::Bytes;
use cellwall_api::*;

pub async fn quarantine<S: Respond>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Committed> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: QuarantineRequest = body(&b)?;
    Ok(Json(blocking(move || s.quarantine(&who, &req)).await?))
}

pub async fn release<S: Respond>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Committed> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: ReleaseRequest = body(&b)?;
    Ok(Json(
        blocking(move || s.release(&who, &req.workload)).await?,
    ))
}

pub async fn quarantines<S: Respond>(State(s): St<S>, h: HeaderMap) -> Api<QuarantineList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(blocking(move || s.quarantines()).await?))
}

pub async fn import<S: Respond>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<ImportResult> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: ImportRequest = body(&b)?;
    Ok(Json(blocking(move || s.import(&who, &req)).await?))
}

pub async fn imports<S: Respond>(State(s): St<S>, h: HeaderMap) -> Api<ImportList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(blocking(move || s.imports()).await?))
}

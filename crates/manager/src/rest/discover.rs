//! Explain, the dependency map, proposals and simulation (streamed as NDJSON with progress).

use super::*;
use crate::discover::since_ms;
use crate::objects::parse_candidate;
use axum::body::Bytes;
use axum::http::Uri;
use cellwall_api::*;

pub async fn explain<S: Discover>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<ExplainResponse> {
    auth(&*s, &h, Role::Read)?;
    let q: ExplainQuery = query(&u).map_err(|e| {
        ApiError::bad(format!(
            "{} (from, to and probe are required)",
            e.detail().message
        ))
    })?;
    Ok(Json(blocking(move || s.explain(&q)).await?))
}

pub async fn map<S: Discover>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<MapResponse> {
    auth(&*s, &h, Role::Read)?;
    let q: MapQuery = query(&u)?;
    Ok(Json(blocking(move || s.dependency_map(&q)).await?))
}

pub async fn propose<S: Discover>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<ProposeResponse> {
    auth(&*s, &h, Role::Read)?;
    let q: ProposeQuery = query(&u)?;
    Ok(Json(blocking(move || s.propose(&q)).await?))
}

fn line(l: &SimulateLine) -> Bytes {
    let mut v = serde_json::to_vec(l).expect("simulation lines serialize");
    v.push(b'\n');
    Bytes::from(v)
}

/// Streams NDJSON: `{"progress": {"done", "total"}}` lines while replaying, then one
/// `{"result": ...}` (or `{"error": ...}`) line.
pub async fn simulate<S: Discover>(
    State(s): St<S>,
    h: HeaderMap,
    b: Bytes,
) -> Result<Response, ApiError> {
    auth(&*s, &h, Role::Read)?;
    let mut req: SimulateRequest = body(&b)?;
    let since = since_ms(req.since.as_deref(), "24h")?;
    if let Some(name) = req.draft.clone() {
        let s = s.clone();
        req.documents
            .extend(blocking(move || s.draft_documents(&name)).await?);
    }
    if req.documents.is_empty() {
        return Err(ApiError::bad("documents or draft: nothing to simulate"));
    }
    let candidate = parse_candidate(&req.documents)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let progress = tx.clone();
        let mut report = |done, total| {
            let _ = progress.blocking_send(line(&SimulateLine::Progress { done, total }));
        };
        let last = match s.simulate(candidate, since, &mut report) {
            Ok(r) => SimulateLine::Result(Box::new(r)),
            Err(e) => SimulateLine::Error(ApiError::from(e).detail()),
        };
        let _ = tx.blocking_send(line(&last));
    });
    let stream = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::ReceiverStream::new(rx),
        Ok::<_, std::convert::Infallible>,
    );
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response())
}

pub async fn save_draft<S: Discover>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Draft> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: DraftRequest = body(&b)?;
    Ok(Json(blocking(move || s.save_draft(&who, &req)).await?))
}

pub async fn drafts<S: Discover>(State(s): St<S>, h: HeaderMap) -> Api<DraftList> {
    auth(&*s, &h, Role::Read)?;
    Ok(Json(blocking(move || s.drafts()).await?))
}

pub async fn draft<S: Discover>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<Draft> {
    auth(&*s, &h, Role::Read)?;
    let q: DraftName = query(&u)?;
    Ok(Json(blocking(move || s.draft(&q.name)).await?))
}

pub async fn review<S: Discover>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Draft> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: ReviewRequest = body(&b)?;
    Ok(Json(blocking(move || s.review(&who, &req)).await?))
}

pub async fn apply_draft<S: Discover>(
    State(s): St<S>,
    h: HeaderMap,
    b: Bytes,
) -> Api<DraftApplyResult> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: DraftName = body(&b)?;
    Ok(Json(
        blocking(move || s.apply_draft(&who, &req.name)).await?,
    ))
}

pub async fn delete_draft<S: Discover>(State(s): St<S>, h: HeaderMap, b: Bytes) -> Api<Committed> {
    let who = auth(&*s, &h, Role::Admin)?;
    let req: DraftName = body(&b)?;
    Ok(Json(
        blocking(move || s.delete_draft(&who, &req.name)).await?,
    ))
}

pub async fn rules<S: Discover>(State(s): St<S>, h: HeaderMap, u: Uri) -> Api<RuleList> {
    auth(&*s, &h, Role::Read)?;
    let q: RulesQuery = query(&u)?;
    Ok(Json(blocking(move || s.rules(&q)).await?))
}

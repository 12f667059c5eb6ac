//! The REST API (JSON). Every route but `/healthz` and the OpenAPI document needs a bearer
//! token: `read` tokens may read, `admin` tokens may also write. A missing or unknown token is
//! 401, a read token on a write route is 403; errors always have the same body:
//! `{"error": {"status": 401, "reason": "Unauthorized", "message": "..."}}`.

use crate::store::{FlowQuery, Kind, Role};
use crate::{Document, Manager, ManagerError};
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use cellwall_policy::{Flow, Policy, WorkloadKey};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
}

impl From<ManagerError> for ApiError {
    fn from(e: ManagerError) -> Self {
        match e {
            ManagerError::Invalid(m) => Self::bad(m),
            ManagerError::Unauthorized(m) => Self::new(StatusCode::UNAUTHORIZED, m),
            e => Self::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        }
    }
}

impl From<crate::store::StoreError> for ApiError {
    fn from(e: crate::store::StoreError) -> Self {
        ManagerError::from(e).into()
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {
            "status": self.status.as_u16(),
            "reason": self.status.canonical_reason().unwrap_or(""),
            "message": self.message,
        }});
        (self.status, Json(body)).into_response()
    }
}

type Api<T = Json<Value>> = Result<T, ApiError>;
type M = State<Arc<Manager>>;
type Q = Query<HashMap<String, String>>;

/// Checks the bearer token; returns the caller's name for the audit trail.
fn auth(m: &Manager, headers: &HeaderMap, need: Role) -> Result<String, ApiError> {
    let unauthorized = |msg: &str| ApiError::new(StatusCode::UNAUTHORIZED, msg);
    let h = headers
        .get(axum::http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <token>"))?;
    let token = h
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("Bearer "))
        .ok_or_else(|| unauthorized("expected Authorization: Bearer <token>"))?;
    let (role, name) = m
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
        _ => Ok(name),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
}

pub fn router(m: Arc<Manager>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/apply", post(apply))
        .route("/v1/delete", post(delete))
        .route("/v1/policies", get(policies))
        .route("/v1/policies/history", get(history))
        .route("/v1/workloads", get(workloads))
        .route("/v1/namespaces", get(namespaces))
        .route("/v1/nodes", get(nodes))
        .route("/v1/flows", get(flows))
        .route("/v1/explain", get(explain))
        .route("/v1/audit", get(audit))
        .route("/v1/tokens", post(create_token))
        .route("/v1/map", get(map))
        .route("/v1/quarantine", post(quarantine).get(quarantines))
        .route("/v1/release", post(release))
        .route("/v1/imports", post(import).get(imports))
        .route("/v1/alerts", get(alerts))
        .route("/v1/propose", get(propose))
        .route("/v1/simulate", post(simulate))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no such route (see /v1/openapi.json)",
            )
        })
        .with_state(m)
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ApplyBody {
    documents: Vec<Document>,
    #[serde(default)]
    ignore_unknown_kinds: bool,
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("request body: {e}")))
}

async fn apply(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    write(m, h, body, false).await
}

async fn delete(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    write(m, h, body, true).await
}

async fn write(m: Arc<Manager>, h: HeaderMap, body: Bytes, delete: bool) -> Api {
    let who = auth(&m, &h, Role::Admin)?;
    let b: ApplyBody = parse_json(&body)?;
    let c = blocking(move || {
        m.apply(&who, &b.documents, delete, b.ignore_unknown_kinds)
            .map_err(ApiError::from)
    })
    .await?;
    Ok(Json(serde_json::to_value(c).expect("json")))
}

fn policy_summary(p: &Policy) -> Value {
    json!({
        "id": p.id.to_string(),
        "kind": p.id.family.kind(),
        "namespace": p.id.namespace,
        "name": p.id.name,
        "tier": p.tier,
        "priority": p.priority,
        "mode": p.mode,
        "expires_at": p.expires_at,
        "rules": p.rules.len(),
    })
}

async fn policies(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let cur = blocking(move || Ok(m.store.current(Some(Kind::Policy))?)).await?;
    let now = crate::now_ms() / 1000;
    let items: Vec<Value> = cur
        .into_iter()
        .filter_map(|c| {
            let p: Policy = serde_json::from_str(&c.body).ok()?;
            let mut v = policy_summary(&p);
            v["version"] = json!(c.version);
            v["changed_by"] = json!(c.changed_by);
            v["changed_at_ms"] = json!(c.changed_at_ms);
            v["seconds_left"] = json!(p.expires_at.map(|t| (t - now).max(0)));
            v["policy"] = serde_json::to_value(&p).ok()?;
            Some(v)
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn history(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    auth(&m, &h, Role::Read)?;
    let id = q.get("id").cloned().ok_or_else(|| {
        ApiError::bad("query parameter id (e.g. NetworkPolicy/ns/name) is required")
    })?;
    let v = blocking(move || Ok(m.store.history(Kind::Policy, &id)?)).await?;
    Ok(Json(json!({ "versions": v })))
}

async fn workloads(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let p = m.published();
    Ok(Json(
        json!({ "revision": p.revision, "items": p.doc.workloads }),
    ))
}

async fn namespaces(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let p = m.published();
    Ok(Json(
        json!({ "revision": p.revision, "items": p.doc.namespaces }),
    ))
}

async fn nodes(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let revision = m.published().revision;
    let nodes = blocking(move || Ok(m.store.nodes()?)).await?;
    let now = crate::now_ms();
    let items: Vec<Value> = nodes
        .iter()
        .map(|n| {
            let mut v = serde_json::to_value(n).expect("json");
            v["lag"] = json!(revision.saturating_sub(n.applied_version));
            v["seconds_since_seen"] = json!((now - n.last_seen_ms).max(0) / 1000);
            v["workloads"] = serde_json::from_str(&n.workloads_json).unwrap_or(json!([]));
            v
        })
        .collect();
    Ok(Json(json!({ "revision": revision, "items": items })))
}

async fn flows(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    auth(&m, &h, Role::Read)?;
    let mut fq = FlowQuery {
        limit: 1000,
        ..Default::default()
    };
    for (k, v) in &q {
        match k.as_str() {
            "since" => {
                let ms = crate::parse_duration_ms(v).ok_or_else(|| {
                    ApiError::bad(format!(
                        "since={v}: expected a duration like 30s, 10m, 2h, 1d"
                    ))
                })?;
                let now_ns = crate::now_ms() as u64 * 1_000_000;
                fq.since_ns = Some(now_ns.saturating_sub(ms * 1_000_000));
            }
            "after" => {
                fq.after_id = Some(v.parse().map_err(|_| {
                    ApiError::bad(format!("after={v}: expected a flow id (integer)"))
                })?)
            }
            "verdict" => {
                if !matches!(v.as_str(), "allowed" | "denied" | "audit" | "revoked") {
                    return Err(ApiError::bad(format!(
                        "verdict={v}: expected allowed, denied, audit or revoked"
                    )));
                }
                fq.verdict = Some(v.clone())
            }
            "workload" => {
                WorkloadKey::parse(v).ok_or_else(|| {
                    ApiError::bad(format!("workload={v}: expected NAMESPACE/NAME"))
                })?;
                fq.workload = Some(v.clone())
            }
            "rule" => fq.rule = Some(v.clone()),
            "limit" => {
                fq.limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| ApiError::bad(format!("limit={v}: expected 1..100000")))?
            }
            other => return Err(ApiError::bad(format!("unknown query parameter {other:?}"))),
        }
    }
    let (rows, nodes) = blocking(move || Ok((m.store.flows(&fq)?, m.store.nodes()?))).await?;
    let lost: Value = nodes
        .iter()
        .map(|n| {
            (
                n.name.clone(),
                json!({
                    "kernel_events_lost": n.kernel_events_lost,
                    "agent_records_dropped": n.agent_records_dropped,
                    "batches_missed": n.flow_batches_missed,
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    Ok(Json(json!({ "flows": rows, "loss": lost })))
}

async fn explain(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    auth(&m, &h, Role::Read)?;
    let get = |k: &str| {
        q.get(k)
            .ok_or_else(|| ApiError::bad(format!("query parameter {k} is required")))
    };
    let key = |k: &str| -> Result<WorkloadKey, ApiError> {
        let v = get(k)?;
        WorkloadKey::parse(v)
            .ok_or_else(|| ApiError::bad(format!("{k}={v}: expected NAMESPACE/NAME")))
    };
    let (from, to) = (key("from")?, key("to")?);
    let probe = get("probe")?;
    let (proto, port) = probe
        .split_once('/')
        .and_then(|(p, n)| {
            Some((
                cellwall_policy::Protocol::parse(&p.to_ascii_uppercase())?,
                n.parse::<u16>().ok()?,
            ))
        })
        .ok_or_else(|| ApiError::bad(format!("probe={probe}: expected PROTO/PORT like TCP/80")))?;
    let ex = blocking(move || {
        m.with_engine(|engine, _| {
            let ip = |k: &WorkloadKey| -> Result<std::net::IpAddr, ApiError> {
                let w = engine.inventory().workloads.get(k).ok_or_else(|| {
                    ApiError::new(StatusCode::NOT_FOUND, format!("no workload {k}"))
                })?;
                w.ips
                    .first()
                    .copied()
                    .ok_or_else(|| ApiError::bad(format!("workload {k} has no address yet")))
            };
            Ok(engine.explain(&Flow {
                src: ip(&from)?,
                dst: ip(&to)?,
                protocol: proto,
                port,
            }))
        })
    })
    .await?;
    Ok(Json(json!({
        "explanation": ex,
        "text": cellwall_policy::render::render_explanation(&ex),
    })))
}

async fn audit(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    auth(&m, &h, Role::Read)?;
    let limit = q
        .get("limit")
        .map(|v| v.parse::<usize>())
        .transpose()
        .map_err(|_| ApiError::bad("limit: expected an integer"))?
        .unwrap_or(100);
    let (changes, events) =
        blocking(move || Ok((m.store.audit(limit)?, m.store.events(limit)?))).await?;
    Ok(Json(json!({ "changes": changes, "events": events })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenBody {
    role: String,
    name: String,
}

async fn create_token(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    let who = auth(&m, &h, Role::Admin)?;
    let b: TokenBody = parse_json(&body)?;
    let role = match b.role.as_str() {
        "admin" => Role::Admin,
        "read" => Role::Read,
        "bootstrap" => Role::Bootstrap,
        r => {
            return Err(ApiError::bad(format!(
                "role {r:?}: expected admin, read or bootstrap"
            )))
        }
    };
    let t = blocking(move || {
        let prefix = match role {
            Role::Admin => "cwa_",
            Role::Read => "cwr_",
            Role::Bootstrap => "cwb_",
        };
        let t = crate::pki::new_token(prefix).map_err(ManagerError::from)?;
        m.store
            .add_token(&crate::pki::sha256_hex(t.as_bytes()), role, &b.name)?;
        m.store.log_event(
            &who,
            "token-created",
            &format!("{} token {:?}", b.role, b.name),
        )?;
        Ok(t)
    })
    .await?;
    Ok(Json(json!({ "token": t })))
}

fn since_ms(q: &HashMap<String, String>, default: &str) -> Result<u64, ApiError> {
    let v = q.get("since").map(String::as_str).unwrap_or(default);
    crate::parse_duration_ms(v).ok_or_else(|| {
        ApiError::bad(format!(
            "since={v}: expected a duration like 30s, 10m, 2h, 1d"
        ))
    })
}

fn only(q: &HashMap<String, String>, allowed: &[&str]) -> Result<(), ApiError> {
    match q.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(ApiError::bad(format!(
            "unknown query parameter {k:?} (expected one of {})",
            allowed.join(", ")
        ))),
        None => Ok(()),
    }
}

async fn map(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    use cellwall_policy::discover::{dependency_map, to_dot, GroupBy};
    auth(&m, &h, Role::Read)?;
    only(&q, &["since", "group_by", "format"])?;
    let since = since_ms(&q, "1h")?;
    let by = match q.get("group_by").map(String::as_str).unwrap_or("app") {
        "app" => GroupBy::App,
        "namespace" => GroupBy::Namespace,
        "workload" => GroupBy::Workload,
        g => {
            return Err(ApiError::bad(format!(
                "group_by={g}: expected app, namespace or workload"
            )))
        }
    };
    let dot = match q.get("format").map(String::as_str).unwrap_or("json") {
        "json" => false,
        "dot" => true,
        f => return Err(ApiError::bad(format!("format={f}: expected json or dot"))),
    };
    let flows = blocking(move || Ok(m.history(since)?)).await?;
    let map = dependency_map(&flows, by);
    let mut v = json!({ "map": map });
    if dot {
        v["dot"] = json!(to_dot(&map));
    }
    Ok(Json(v))
}

async fn propose(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    use cellwall_policy::discover::{propose, render_yaml, ProposalFormat, ProposeOptions};
    auth(&m, &h, Role::Read)?;
    only(&q, &["since", "namespace", "format", "review_below"])?;
    let since = since_ms(&q, "24h")?;
    let format = match q.get("format").map(String::as_str).unwrap_or("cellwall") {
        "cellwall" => ProposalFormat::Cellwall,
        "networkpolicy" => ProposalFormat::NetworkPolicy,
        f => {
            return Err(ApiError::bad(format!(
                "format={f}: expected cellwall or networkpolicy"
            )))
        }
    };
    let mut opts = ProposeOptions {
        namespace: q.get("namespace").cloned(),
        ..Default::default()
    };
    if let Some(r) = q.get("review_below") {
        opts.review_below = r
            .parse()
            .map_err(|_| ApiError::bad(format!("review_below={r}: expected an integer")))?;
    }
    let (p, flows) = blocking(move || {
        let flows = m.history(since)?;
        let p = m.with_engine(|engine, _| propose(&flows, engine, &opts));
        Ok((p, flows.len()))
    })
    .await?;
    Ok(Json(json!({
        "proposal": p,
        "yaml": render_yaml(&p, format),
        "history_rows": flows,
    })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SimulateBody {
    documents: Vec<Document>,
    #[serde(default)]
    since: Option<String>,
}

/// Streams NDJSON: `{"progress": {"done", "total"}}` lines while replaying, then one
/// `{"result": ...}` (or `{"error": ...}`) line.
async fn simulate(State(m): M, h: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    auth(&m, &h, Role::Read)?;
    let b: SimulateBody = parse_json(&body)?;
    let mut q = HashMap::new();
    if let Some(s) = &b.since {
        q.insert("since".to_string(), s.clone());
    }
    let since = since_ms(&q, "24h")?;
    let candidate = crate::parse_candidate(&b.documents)?;
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
    tokio::task::spawn_blocking(move || {
        let progress = tx.clone();
        let r = m.simulate(candidate, since, |done, total| {
            let _ = progress.blocking_send(Bytes::from(format!(
                "{{\"progress\":{{\"done\":{done},\"total\":{total}}}}}\n"
            )));
        });
        let line = match r {
            Ok(v) => json!({ "result": v }),
            Err(e) => {
                json!({ "error": {"status": 500, "reason": "Internal Server Error", "message": e.to_string()} })
            }
        };
        let _ = tx.blocking_send(Bytes::from(format!("{line}\n")));
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

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct QuarantineBody {
    workload: String,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    allow_from: Option<String>,
}

async fn quarantine(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    let who = auth(&m, &h, Role::Admin)?;
    let b: QuarantineBody = parse_json(&body)?;
    let q = crate::Quarantine {
        workload: b.workload,
        reason: b.reason.unwrap_or_default(),
        allow_from: b.allow_from,
    };
    let c = blocking(move || Ok(m.quarantine(&who, q)?)).await?;
    Ok(Json(serde_json::to_value(c).expect("json")))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ReleaseBody {
    workload: String,
}

async fn release(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    let who = auth(&m, &h, Role::Admin)?;
    let b: ReleaseBody = parse_json(&body)?;
    let c = blocking(move || Ok(m.release(&who, &b.workload)?)).await?;
    Ok(Json(serde_json::to_value(c).expect("json")))
}

async fn quarantines(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let cur = blocking(move || Ok(m.store.current(Some(Kind::Quarantine))?)).await?;
    let items: Vec<Value> = cur
        .iter()
        .filter_map(|c| {
            let mut v: Value = serde_json::from_str(&c.body).ok()?;
            v["by"] = json!(c.changed_by);
            v["since_ms"] = json!(c.changed_at_ms);
            Some(v)
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    source: String,
    /// The file's name (for errors) and text, for an import now...
    #[serde(default)]
    file: Option<String>,
    #[serde(default)]
    text: Option<String>,
    /// ...or where the manager reads it (a path on its host or an http:// URL), now and, with
    /// `every`, on a schedule.
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    every: Option<String>,
}

async fn import(State(m): M, h: HeaderMap, body: Bytes) -> Api {
    let who = auth(&m, &h, Role::Admin)?;
    let b: ImportBody = parse_json(&body)?;
    let every_ms = match &b.every {
        Some(e) => Some(
            crate::parse_duration_ms(e)
                .filter(|ms| *ms >= 10_000)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "every={e}: expected a duration of at least 10s, like 1h"
                    ))
                })?,
        ),
        None => None,
    };
    let (c, matched, entries) = blocking(move || {
        let (origin, text) = match (&b.text, &b.location) {
            (Some(t), None) => (b.file.clone().unwrap_or_else(|| "import".into()), t.clone()),
            (None, Some(loc)) => (loc.clone(), crate::read_location(loc)?),
            _ => return Err(ApiError::bad("give either text (with file) or location")),
        };
        if every_ms.is_some() && b.location.is_none() {
            return Err(ApiError::bad(
                "every needs a location the manager can read again",
            ));
        }
        let (c, matched) = m.import_labels(
            &who,
            &b.source,
            &origin,
            &text,
            b.location.clone(),
            every_ms,
        )?;
        let n = matched.len();
        Ok((c, matched, n))
    })
    .await?;
    Ok(Json(json!({
        "revision": c.revision,
        "changes": c.changes,
        "entries": entries,
        "matched_workloads": matched.iter().sum::<usize>(),
        "unmatched_entries": matched.iter().filter(|n| **n == 0).count(),
    })))
}

async fn imports(State(m): M, h: HeaderMap) -> Api {
    auth(&m, &h, Role::Read)?;
    let cur = blocking(move || Ok(m.store.current(Some(Kind::Import))?)).await?;
    let items: Vec<Value> = cur
        .iter()
        .filter_map(|c| {
            let i: crate::LabelImport = serde_json::from_str(&c.body).ok()?;
            Some(json!({
                "source": i.source, "origin": i.origin, "entries": i.entries.len(),
                "location": i.location, "every_ms": i.every_ms,
                "by": c.changed_by, "changed_at_ms": c.changed_at_ms, "version": c.version,
            }))
        })
        .collect();
    Ok(Json(json!({ "items": items })))
}

async fn alerts(State(m): M, h: HeaderMap, Query(q): Q) -> Api {
    auth(&m, &h, Role::Read)?;
    only(&q, &["after", "limit"])?;
    let after: i64 = q
        .get("after")
        .map(|v| v.parse())
        .transpose()
        .map_err(|_| ApiError::bad("after: expected an alert id"))?
        .unwrap_or(0);
    let limit: usize = q
        .get("limit")
        .map(|v| v.parse())
        .transpose()
        .map_err(|_| ApiError::bad("limit: expected an integer"))?
        .unwrap_or(1000);
    let m2 = m.clone();
    let items = blocking(move || {
        // Connections still buffered are checked first: a reader sees every alert so far.
        m2.flush_history()?;
        Ok(m2.store.alerts(after, limit)?)
    })
    .await?;
    use std::sync::atomic::Ordering::Relaxed;
    Ok(Json(json!({
        "alerts": items,
        "suppressed": m.alerter.suppressed.load(Relaxed),
        "webhook_dropped": m.alerter.webhook_dropped.load(Relaxed),
    })))
}

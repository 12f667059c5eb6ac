//! The fake API server's HTTP side: routing collection paths, lists in pages and watch
//! streams, answered as the real API server answers.

use super::table;
use super::{at, Key, Shared, TOKEN};
use crate::Resource;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// A `Status` answer, as the API server writes its errors.
fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code.as_u16()
        })),
    )
        .into_response()
}

/// What a path names: a resource, its namespace, and an object's name for item paths
/// (`/api/v1/pods`, `/api/v1/namespaces/NS/pods[/NAME]`, `/api/v1/nodes[/NAME]`,
/// `/apis/G/V/PLURAL[/NAME]`, `/apis/G/V/namespaces/NS/PLURAL[/NAME]`).
struct Route {
    res: usize,
    ns: Option<String>,
    name: Option<String>,
    /// `/status`: the status subresource of the named object.
    status: bool,
}

fn route(path: &str) -> Option<Route> {
    let seg: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match seg.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let own = |s: &str| Some(s.to_string());
    let (rest, status) = match rest {
        [head @ .., "status"] if head.len() >= 2 => (head, true),
        _ => (rest, false),
    };
    let (ns, plural, name) = match rest {
        [p] => (None, *p, None),
        ["namespaces", ns, p] => (own(ns), *p, None),
        ["namespaces", ns, p, n] => (own(ns), *p, own(n)),
        [p, n] => (None, *p, own(n)),
        _ => return None,
    };
    let res = table()
        .iter()
        .position(|r| r.group == group && r.version == version && r.plural == plural)?;
    // Namespaced objects are named with their namespace; cluster-scoped ones without.
    let scoped = table()[res].namespaced;
    if (ns.is_some() && !scoped) || (name.is_some() && scoped && ns.is_none()) {
        return None;
    }
    if status && !crate::crd::has_status(&table()[res]) {
        return None;
    }
    Some(Route {
        res,
        ns,
        name,
        status,
    })
}

/// A request body that must be one JSON object; otherwise the API server's 400 with why.
fn json_object(body: &[u8]) -> Result<Value, String> {
    match serde_json::from_slice(body) {
        Ok(v @ Value::Object(_)) => Ok(v),
        Ok(_) => Err("the body must be a JSON object".into()),
        Err(e) => Err(format!("the body is not JSON: {e}")),
    }
}

fn not_found(what: &str) -> Response {
    status(StatusCode::NOT_FOUND, "NotFound", what)
}

pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let authorized = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h == format!("Bearer {TOKEN}"));
    if !authorized {
        return status(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized");
    }
    if uri.path() == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return token_review(&shared, &method, &body);
    }
    let Some(Route {
        res,
        ns,
        name,
        status: subresource,
    }) = route(uri.path())
    else {
        return not_found("the server could not find the requested resource");
    };
    if !shared.lock().served[res] {
        return not_found("the server could not find the requested resource");
    }
    for sel in ["labelSelector", "fieldSelector"] {
        if q.get(sel).is_some_and(|s| !s.is_empty()) {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                &format!("{sel} is not supported by the fake API server"),
            );
        }
    }
    let r = &table()[res];
    let Some(name) = name else {
        return match method {
            Method::GET if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) => {
                watch(shared, res, ns, &q)
            }
            Method::GET => list(&shared, res, ns, &q),
            Method::POST => write(&shared, r, ns, None, &body),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "collections are listed, watched and created (POST)",
            ),
        };
    };
    let key = Key {
        res,
        ns: ns.clone().unwrap_or_default(),
        name: name.clone(),
    };
    let missing = || not_found(&format!("{} \"{name}\" not found", r.plural));
    if subresource {
        return match method {
            Method::GET => match shared.get(&key) {
                Some(o) => axum::Json((*o).clone()).into_response(),
                None => missing(),
            },
            Method::PATCH => patch_status(&shared, &key, &headers, &body),
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "the status subresource is read (GET) and merge-patched (PATCH)",
            ),
        };
    }
    match method {
        Method::GET => match shared.get(&key) {
            Some(o) => axum::Json((*o).clone()).into_response(),
            None => missing(),
        },
        Method::PUT => write(&shared, r, ns, Some(&name), &body),
        Method::DELETE => match shared.delete(&key) {
            Some(o) => axum::Json((*o).clone()).into_response(),
            None => missing(),
        },
        _ => status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "objects are read (GET), replaced (PUT) and deleted (DELETE)",
        ),
    }
}

/// A create (POST to the collection, `name` none) or a replace (PUT to the object): the
/// body's type and namespace must be the path's, a create of an existing object is a conflict
/// and a replace of a missing one is not found, as the real API server answers.
fn write(
    shared: &Shared,
    r: &Resource,
    ns: Option<String>,
    name: Option<&str>,
    body: &[u8],
) -> Response {
    let bad = |m: String| status(StatusCode::BAD_REQUEST, "BadRequest", &m);
    let mut obj = match json_object(body) {
        Ok(v) => v,
        Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", &why),
    };
    for (field, want) in [
        ("apiVersion", r.api_version()),
        ("kind", r.kind.to_string()),
    ] {
        match obj[field].as_str() {
            None => obj[field] = json!(want),
            Some(v) if v == want => {}
            Some(v) => return bad(format!("{field} {v:?} does not match the path ({want})")),
        }
    }
    if let Some(ns) = &ns {
        match obj["metadata"]["namespace"].as_str() {
            None => obj["metadata"]["namespace"] = json!(ns),
            Some(v) if v == ns => {}
            Some(v) => {
                return bad(format!(
                    "metadata.namespace {v:?} does not match the path ({ns})"
                ))
            }
        }
    }
    // A create may ask for a generated name (as Events do): a prefix and a unique suffix.
    if name.is_none()
        && obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .is_empty()
    {
        if let Some(prefix) = obj["metadata"]["generateName"].as_str() {
            let n = format!("{prefix}{:05x}", shared.lock().rv);
            obj["metadata"]["name"] = json!(n);
        }
    }
    let body_name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if let Some(n) = name {
        if body_name != n {
            return bad(format!(
                "metadata.name {body_name:?} does not match the path ({n})"
            ));
        }
    }
    let key = Key {
        res: table().iter().position(|x| x == r).expect("from the table"),
        ns: ns.unwrap_or_default(),
        name: body_name.clone(),
    };
    let exists = shared.get(&key).is_some();
    match (name, exists) {
        (None, true) => {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{body_name}\" already exists", r.plural),
            )
        }
        (Some(_), false) => return not_found(&format!("{} \"{body_name}\" not found", r.plural)),
        _ => {}
    }
    match shared.apply(&obj) {
        Ok(_) => {
            let code = if exists {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let stored = shared.get(&key).map(|o| (*o).clone()).unwrap_or(obj);
            (code, axum::Json(stored)).into_response()
        }
        Err(e) => status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e),
    }
}

/// `POST tokenreviews`: the review with its status filled in, as the API server answers.
fn token_review(shared: &Shared, method: &Method, body: &[u8]) -> Response {
    if method != Method::POST {
        return status(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "token reviews are created (POST)",
        );
    }
    let mut review = match json_object(body) {
        Ok(v) => v,
        Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", &why),
    };
    let token = review["spec"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let audiences: Vec<String> = review["spec"]["audiences"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    review["apiVersion"] = json!("authentication.k8s.io/v1");
    review["kind"] = json!("TokenReview");
    review["status"] = shared.review(&token, &audiences);
    (StatusCode::CREATED, axum::Json(review)).into_response()
}

/// A JSON merge patch (RFC 7386) of an object's status: only `status` may be in the patch,
/// as the real API server ignores everything else sent to the subresource.
fn patch_status(shared: &Shared, key: &Key, headers: &HeaderMap, body: &[u8]) -> Response {
    let merge = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.starts_with("application/merge-patch+json"));
    if !merge {
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            "the fake API server takes merge patches (application/merge-patch+json) only",
        );
    }
    let patch = match json_object(body) {
        Ok(v) => v,
        Err(why) => return status(StatusCode::BAD_REQUEST, "BadRequest", &why),
    };
    match shared.patch_status(key, &patch["status"]) {
        Some(o) => axum::Json((*o).clone()).into_response(),
        None => not_found(&format!("\"{}\" not found", key.name)),
    }
}

fn visible(key: &Key, res: usize, ns: &Option<String>) -> bool {
    key.res == res && ns.as_ref().is_none_or(|n| *n == key.ns)
}

/// Built-in lists leave the items' type out; custom resources' lists keep it.
fn as_item(r: &Resource, obj: &Value) -> Value {
    let mut v = obj.clone();
    if !r.custom {
        if let Some(m) = v.as_object_mut() {
            m.remove("apiVersion");
            m.remove("kind");
        }
    }
    v
}

fn list(shared: &Shared, res: usize, ns: Option<String>, q: &HashMap<String, String>) -> Response {
    let r = &table()[res];
    let mut inner = shared.lock();
    inner.stats.lists += 1;
    let limit = q
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .filter(|l| *l > 0);
    // A continue token: the snapshot's resourceVersion and the last key served.
    let (snapshot, after) = match q.get("continue").filter(|c| !c.is_empty()) {
        None => (inner.rv, None),
        Some(token) => {
            let Some((rv, after)) = decode_token(token) else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "invalid continue token",
                );
            };
            if inner.expire_continues > 0 || rv < inner.compacted {
                inner.expire_continues = inner.expire_continues.saturating_sub(1);
                inner.stats.gone += 1;
                return status(
                    StatusCode::GONE,
                    "Expired",
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                );
            }
            (rv, Some(after))
        }
    };
    let mut items = Vec::new();
    let mut remaining = 0usize;
    for (key, versions) in inner.store.iter() {
        if !visible(key, res, &ns) || after.as_ref().is_some_and(|a| key <= a) {
            continue;
        }
        let Some(obj) = at(versions, snapshot) else {
            continue;
        };
        if limit.is_some_and(|l| items.len() >= l) {
            remaining += 1;
        } else {
            items.push((key.clone(), as_item(r, obj)));
        }
    }
    let mut meta = json!({"resourceVersion": snapshot.to_string()});
    if let Some(last) = items.last().filter(|_| remaining > 0) {
        meta["continue"] = json!(encode_token(snapshot, &last.0));
        meta["remainingItemCount"] = json!(remaining);
    }
    let body = json!({
        "kind": format!("{}List", r.kind), "apiVersion": r.api_version(),
        "metadata": meta,
        "items": items.into_iter().map(|(_, v)| v).collect::<Vec<_>>(),
    });
    axum::Json(body).into_response()
}

fn encode_token(rv: u64, key: &Key) -> String {
    let raw = format!("{rv}\n{}\n{}\n{}", key.res, key.ns, key.name);
    raw.bytes().map(|b| format!("{b:02x}")).collect()
}

fn decode_token(token: &str) -> Option<(u64, Key)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let raw = String::from_utf8(bytes?).ok()?;
    let mut parts = raw.splitn(4, '\n');
    let rv = parts.next()?.parse().ok()?;
    let res = parts.next()?.parse().ok()?;
    let ns = parts.next()?.to_string();
    let name = parts.next()?.to_string();
    Some((rv, Key { res, ns, name }))
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = serde_json::to_string(&json!({"type": kind, "object": object}))
        .expect("JSON values serialise");
    s.push('\n');
    Bytes::from(s)
}

fn watch(
    shared: Arc<Shared>,
    res: usize,
    ns: Option<String>,
    q: &HashMap<String, String>,
) -> Response {
    let r = &table()[res];
    let bookmarks = matches!(
        q.get("allowWatchBookmarks").map(String::as_str),
        Some("true" | "1")
    );
    let timeout = q
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(1800));
    let from = q.get("resourceVersion").cloned().unwrap_or_default();
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(256);
    // Subscribed before the replay is read, under the lock: no event falls between the two.
    let (mut live, replay, mut last, every) = {
        let mut inner = shared.lock();
        inner.stats.watches += 1;
        let replay: Vec<Bytes> = if from.is_empty() || from == "0" {
            // No version: the current objects as ADDED, then changes.
            inner
                .store
                .iter()
                .filter(|(k, _)| visible(k, res, &ns))
                .filter_map(|(_, v)| v.last()?.1.as_ref())
                .map(|o| line("ADDED", o))
                .collect()
        } else {
            let Ok(from) = from.parse::<u64>() else {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    "resourceVersion: not a number",
                );
            };
            if from < inner.compacted {
                // As the real server does: a 200 whose one event is the 410 Status.
                inner.stats.gone += 1;
                let gone = json!({
                    "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                    "message": format!("too old resource version: {from} ({})", inner.compacted),
                    "reason": "Expired", "code": 410
                });
                return (StatusCode::OK, Body::from(line("ERROR", &gone))).into_response();
            }
            inner
                .log
                .iter()
                .filter(|e| e.rv > from && visible(&e.key, res, &ns))
                .map(|e| line(e.kind, &e.object))
                .collect()
        };
        // Events are sent under this lock, so every one the subscription sees is newer than
        // the replay: nothing is lost or sent twice.
        (
            shared.events.subscribe(),
            replay,
            inner.rv,
            inner.bookmark_every,
        )
    };
    let api_version = r.api_version();
    let kind = r.kind;
    let mut kick = shared.kick.subscribe();
    tokio::spawn(async move {
        for b in replay {
            if tx.send(Ok(b)).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = kick.changed() => return,
                _ = tick.tick(), if bookmarks => {
                    let mark = json!({"kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": last.to_string()}});
                    if tx.send(Ok(line("BOOKMARK", &mark))).await.is_err() {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(e) => {
                        if shared.lock().partitioned {
                            continue;
                        }
                        last = last.max(e.rv);
                        if visible(&e.key, res, &ns)
                            && tx.send(Ok(line(e.kind, &e.object))).await.is_err()
                        {
                            return;
                        }
                    }
                    // Fell behind: end the stream; the client watches again from its version.
                    Err(_) => return,
                }
            }
        }
    });
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response()
}

//! The OpenAPI document, generated from the API's own types: every route with its access, query
//! parameters, body and answer, and the JSON Schema of every type they use. The manager serves
//! it at `/v1/openapi.json`; `docs/openapi.json` is a committed copy that a test keeps equal.

use crate::*;
use schemars::generate::{Contract, SchemaSettings};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token.
    Public,
    /// A read or admin token.
    Read,
    /// An admin token.
    Admin,
}

type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// One route of the API.
#[derive(Clone, Copy)]
pub struct Route {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub access: Access,
    /// A struct whose fields are the query parameters.
    pub query: Option<SchemaFn>,
    /// The JSON request body.
    pub body: Option<SchemaFn>,
    /// The answer (one line of it, for NDJSON).
    pub answer: SchemaFn,
    /// `application/json`, `application/x-ndjson` or `text/plain`.
    pub media: &'static str,
}

fn reference<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<T>()
}

/// The object schema of `T` itself (for query parameters, which are not referenced), with the
/// generator's OpenAPI transforms applied as they are to referenced schemas.
fn inline<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let mut s = T::json_schema(g);
    for t in g.transforms_mut() {
        t.transform(&mut s);
    }
    s
}

fn text(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "string"})
}

fn openapi_doc(_: &mut SchemaGenerator) -> Schema {
    schemars::json_schema!({"type": "object", "description": "This document."})
}

/// The query of `GET /v1/policies/history`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct HistoryQuery {
    /// The policy: `Kind/namespace/name` or `Kind/name`.
    id: String,
}

/// The query of `GET /v1/audit`.
#[derive(JsonSchema)]
#[allow(dead_code)]
struct AuditQuery {
    /// At most this many versions and events (default 100).
    #[schemars(range(min = 1, max = 100_000))]
    limit: Option<usize>,
}

const JSON: &str = "application/json";

fn route(
    method: &'static str,
    path: &'static str,
    access: Access,
    summary: &'static str,
    answer: SchemaFn,
) -> Route {
    Route {
        method,
        path,
        summary,
        access,
        query: None,
        body: None,
        answer,
        media: JSON,
    }
}

impl Route {
    fn query(mut self, q: SchemaFn) -> Self {
        self.query = Some(q);
        self
    }
    fn body(mut self, b: SchemaFn) -> Self {
        self.body = Some(b);
        self
    }
    fn media(mut self, m: &'static str) -> Self {
        self.media = m;
        self
    }
}

/// Every route the manager serves.
pub fn routes() -> Vec<Route> {
    use Access::*;
    vec![
        route("get", "/healthz", Public, "Liveness: answers `ok`", text).media("text/plain"),
        route("get", "/v1/openapi.json", Public, "This document", openapi_doc),
        route("get", "/v1/whoami", Read, "Who the token belongs to and its role", reference::<Identity>),
        route("post", "/v1/apply", Admin, "Create or update every object of the documents, all or nothing", reference::<Committed>)
            .body(reference::<ApplyRequest>),
        route("post", "/v1/delete", Admin, "Delete every object the documents name, all or nothing", reference::<Committed>)
            .body(reference::<ApplyRequest>),
        route("get", "/v1/policies", Read, "Stored policies with their versions", reference::<PolicyList>),
        route("get", "/v1/policies/history", Read, "Every version of one policy: who changed it, when", reference::<PolicyHistory>)
            .query(inline::<HistoryQuery>),
        route("get", "/v1/workloads", Read, "Workloads of the published revision", reference::<WorkloadList>),
        route("get", "/v1/namespaces", Read, "Namespaces of the published revision", reference::<NamespaceList>),
        route("get", "/v1/audit", Read, "The newest object versions and events", reference::<AuditLog>)
            .query(inline::<AuditQuery>),
        route("post", "/v1/tokens", Admin, "A new token (shown once, stored hashed); bootstrap tokens may be bound to a node name or pattern, expire, be single-use, or replace a node's certificate", reference::<TokenCreated>)
            .body(reference::<TokenRequest>),
        route("get", "/v1/tokens", Admin, "Every token (never its secret), valid or not", reference::<TokenList>),
        route("post", "/v1/tokens/revoke", Admin, "Revoke a token: it stops working at once", reference::<Revoked>)
            .body(reference::<RevokeTokenRequest>),
        route("post", "/v1/nodes/revoke", Admin, "Withdraw a node's certificate: its calls are refused and its streams closed at once", reference::<Revoked>)
            .body(reference::<RevokeNodeRequest>),
        route("get", "/v1/nodes", Read, "Nodes: the revision each enforces, lag, loss counters", reference::<NodeList>),
        route("get", "/v1/flows", Read, "Flow records, oldest first, with every node's loss counters", reference::<FlowList>)
            .query(inline::<FlowQuery>),
        route("get", "/v1/alerts", Read, "Compliance alerts, oldest first", reference::<AlertList>)
            .query(inline::<AlertQuery>),
        route("get", "/metrics", Read, "Prometheus metrics: refusals of what outside parties sent (joins, reports, flow records, rates) and each node's state", text)
            .media("application/openmetrics-text"),
        route("get", "/v1/explain", Read, "Why the policy in force allows or denies a connection", reference::<ExplainResponse>)
            .query(inline::<ExplainQuery>),
        route("get", "/v1/map", Read, "The application dependency map of the flow history", reference::<MapResponse>)
            .query(inline::<MapQuery>),
        route("get", "/v1/propose", Read, "Least-privilege policy proposed from the flow history", reference::<ProposeResponse>)
            .query(inline::<ProposeQuery>),
        route("post", "/v1/simulate", Read, "Replay the flow history against a candidate (NDJSON: progress lines, then a result or an error)", reference::<SimulateLine>)
            .body(reference::<SimulateRequest>)
            .media("application/x-ndjson"),
        route("get", "/v1/rules", Read, "Rule hygiene: every rule in force with the history it decides per day, unused and overly broad rules flagged", reference::<RuleList>)
            .query(inline::<RulesQuery>),
        route("post", "/v1/drafts", Admin, "Save a proposal learned from history now as a draft for review", reference::<Draft>)
            .body(reference::<DraftRequest>),
        route("get", "/v1/drafts", Read, "Drafts and how far their review got", reference::<DraftList>),
        route("get", "/v1/drafts/show", Read, "A draft: its rules with their evidence and decisions", reference::<Draft>)
            .query(inline::<DraftName>),
        route("post", "/v1/drafts/review", Admin, "Approve or reject rules of a draft (recorded with who, when and the comment)", reference::<Draft>)
            .body(reference::<ReviewRequest>),
        route("post", "/v1/drafts/apply", Admin, "Apply a draft's approved rules", reference::<DraftApplyResult>)
            .body(reference::<DraftName>),
        route("post", "/v1/drafts/delete", Admin, "Delete a draft (its versions stay in the audit trail)", reference::<Committed>)
            .body(reference::<DraftName>),
        route("post", "/v1/quarantine", Admin, "Cut a workload off both ways, open connections included", reference::<Committed>)
            .body(reference::<QuarantineRequest>),
        route("get", "/v1/quarantine", Read, "Quarantines in force", reference::<QuarantineList>),
        route("post", "/v1/release", Admin, "End a quarantine", reference::<Committed>)
            .body(reference::<ReleaseRequest>),
        route("post", "/v1/imports", Admin, "Import labels from an outside source, all or nothing", reference::<ImportResult>)
            .body(reference::<ImportRequest>),
        route("get", "/v1/imports", Read, "Label imports as last run", reference::<ImportList>),
    ]
}

/// A query struct's properties as OpenAPI parameters.
fn parameters(schema: &Schema) -> Vec<Value> {
    let v = schema.as_value();
    let required: Vec<&str> = v["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let mut out = Vec::new();
    for (name, prop) in v["properties"].as_object().into_iter().flatten() {
        let mut p = json!({
            "name": name,
            "in": "query",
            "required": required.contains(&name.as_str()),
            "schema": prop,
        });
        if let Some(d) = prop.get("description") {
            p["description"] = d.clone();
        }
        out.push(p);
    }
    out
}

/// Schemas of what the manager answers (the serialize contract: a field always written is
/// required) and of what it takes (the deserialize contract: a field with a default may be
/// left out).
struct Generators {
    answers: SchemaGenerator,
    requests: SchemaGenerator,
}

fn operation(r: &Route, g: &mut Generators) -> Value {
    let mut op = json!({
        "summary": r.summary,
        "operationId": format!("{}{}", r.method, r.path.replace(['/', '.'], "_")),
        "responses": {
            "200": {"description": "OK", "content": {r.media: {"schema": (r.answer)(&mut g.answers)}}},
            "default": {
                "description": "An error: 400 bad input, 401 no valid token, 403 not allowed, 404 not found, 409 conflict, 413 too large, 429 too many requests, 503 unavailable (retry), 500 a bug",
                "content": {JSON: {"schema": reference::<ErrorBody>(&mut g.answers)}}
            }
        }
    });
    op["security"] = match r.access {
        Access::Public => json!([]),
        _ => json!([{"bearer": []}]),
    };
    op["x-cellwall-access"] = json!(match r.access {
        Access::Public => "public",
        Access::Read => "read",
        Access::Admin => "admin",
    });
    if let Some(q) = r.query {
        op["parameters"] = Value::Array(parameters(&q(&mut g.requests)));
    }
    if let Some(b) = r.body {
        op["requestBody"] =
            json!({"required": true, "content": {JSON: {"schema": b(&mut g.requests)}}});
    }
    op
}

/// The whole document.
pub fn document() -> Value {
    let settings = |c: Contract| {
        SchemaSettings::openapi3()
            .with(|s| s.contract = c)
            .into_generator()
    };
    let mut g = Generators {
        answers: settings(Contract::Serialize),
        requests: settings(Contract::Deserialize),
    };
    let mut paths = Map::new();
    for r in routes() {
        let entry = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        entry[r.method] = operation(&r, &mut g);
    }
    let mut schemas = g.answers.take_definitions(true);
    for (name, schema) in g.requests.take_definitions(true) {
        match schemas.get(&name) {
            // A type both sent and taken must read the same both ways, or it needs two names.
            Some(other) => assert_eq!(
                other, &schema,
                "{name} differs between what the API sends and what it takes"
            ),
            None => {
                schemas.insert(name, schema);
            }
        }
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "Cellwall manager API",
            "version": "1",
            "description": "The manager's REST API. Every route but /healthz and this document needs `Authorization: Bearer <token>`: read tokens may read, admin tokens may also write. Every error has the body ErrorBody. Generated from the types in crates/api."
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas,
        },
        "paths": paths,
    })
}

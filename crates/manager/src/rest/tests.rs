//! The REST layer against a fake behind the narrow traits: status codes and bodies come from
//! the error kinds, never from where an error happened to be raised.

use super::*;
use crate::store::{Committed, StoreError};
use axum::body::Body;
use axum::http::Request;
use cellwall_api::*;
use cellwall_policy::Policy;
use tower::ServiceExt;

/// Every operation fails the way `fail` says.
struct Fake {
    fail: fn() -> ManagerError,
}

type R<T> = Result<T, ManagerError>;

impl Authenticate for Fake {
    fn authenticate(&self, token: &str) -> R<Option<(Role, String)>> {
        Ok(match token {
            "adm" => Some((Role::Admin, "admin".into())),
            "rd" => Some((Role::Read, "reader".into())),
            "boot" => Some((Role::Bootstrap, "boot".into())),
            _ => None,
        })
    }
}

impl Objects for Fake {
    fn apply(&self, _: &str, _: &ApplyRequest, _: bool) -> R<Committed> {
        Err((self.fail)())
    }
    fn policies(&self) -> R<PolicyList> {
        Err((self.fail)())
    }
    fn policy_history(&self, _: &str) -> R<PolicyHistory> {
        Err((self.fail)())
    }
    fn workloads(&self) -> R<WorkloadList> {
        Err((self.fail)())
    }
    fn namespaces(&self) -> R<NamespaceList> {
        Err((self.fail)())
    }
    fn audit(&self, _: usize) -> R<AuditLog> {
        Err((self.fail)())
    }
    fn create_token(&self, _: &str, _: &TokenRequest) -> R<TokenCreated> {
        Err((self.fail)())
    }
    fn tokens(&self) -> R<TokenList> {
        Err((self.fail)())
    }
    fn revoke_token(&self, _: &str, _: i64) -> R<Revoked> {
        Err((self.fail)())
    }
    fn revoke_node(&self, _: &str, _: &str) -> R<Revoked> {
        Err((self.fail)())
    }
}

impl Observe for Fake {
    fn nodes(&self) -> R<NodeList> {
        Ok(NodeList {
            revision: 7,
            items: Vec::new(),
        })
    }
    fn flows(&self, _: &FlowQuery) -> R<FlowList> {
        Err((self.fail)())
    }
    fn alerts(&self, _: &AlertQuery) -> R<AlertList> {
        Err((self.fail)())
    }
    fn metrics(&self) -> R<String> {
        Err((self.fail)())
    }
}

impl Discover for Fake {
    fn explain(&self, _: &ExplainQuery) -> R<ExplainResponse> {
        Err((self.fail)())
    }
    fn dependency_map(&self, _: &MapQuery) -> R<MapResponse> {
        Err((self.fail)())
    }
    fn propose(&self, _: &ProposeQuery) -> R<ProposeResponse> {
        Err((self.fail)())
    }
    fn simulate(
        &self,
        _: Vec<Policy>,
        _: u64,
        _: &mut dyn FnMut(usize, usize),
    ) -> R<SimulateResult> {
        Err((self.fail)())
    }
    fn rules(&self, _: &RulesQuery) -> R<RuleList> {
        Err((self.fail)())
    }
    fn save_draft(&self, _: &str, _: &DraftRequest) -> R<Draft> {
        Err((self.fail)())
    }
    fn drafts(&self) -> R<DraftList> {
        Err((self.fail)())
    }
    fn draft(&self, _: &str) -> R<Draft> {
        Err((self.fail)())
    }
    fn review(&self, _: &str, _: &ReviewRequest) -> R<Draft> {
        Err((self.fail)())
    }
    fn draft_documents(&self, _: &str) -> R<Vec<Document>> {
        Err((self.fail)())
    }
    fn apply_draft(&self, _: &str, _: &str) -> R<DraftApplyResult> {
        Err((self.fail)())
    }
    fn delete_draft(&self, _: &str, _: &str) -> R<Committed> {
        Err((self.fail)())
    }
}

impl Respond for Fake {
    fn quarantine(&self, _: &str, _: &QuarantineRequest) -> R<Committed> {
        Err((self.fail)())
    }
    fn release(&self, _: &str, _: &str) -> R<Committed> {
        Err((self.fail)())
    }
    fn quarantines(&self) -> R<QuarantineList> {
        Err((self.fail)())
    }
    fn import(&self, _: &str, _: &ImportRequest) -> R<ImportResult> {
        Err((self.fail)())
    }
    fn imports(&self) -> R<ImportList> {
        Err((self.fail)())
    }
}

async fn call(
    fail: fn() -> ManagerError,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, ErrorBody) {
    let app = router(Arc::new(Fake { fail }), 1 << 20);
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header("Authorization", format!("Bearer {t}"));
    }
    let resp = app
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap();
    let err: ErrorBody = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{method} {uri}: not the error body ({e}): {bytes:?}"));
    assert_eq!(err.error.status, status, "the body repeats the status");
    (status, err)
}

fn db_down() -> ManagerError {
    ManagerError::Store(StoreError::Backend(rusqlite::Error::SqliteFailure(
        rusqlite::ffi::Error::new(10),
        Some("disk I/O error".into()),
    )))
}

#[tokio::test]
async fn a_database_failure_is_503_not_the_callers_400() {
    let doc = r#"{"documents": []}"#;
    let (s, e) = call(db_down, "POST", "/v1/apply", Some("adm"), doc).await;
    assert_eq!(s, 503, "{e:?}");
    assert_eq!(e.error.reason, "Service Unavailable");
    let (s, _) = call(db_down, "GET", "/v1/policies", Some("rd"), "").await;
    assert_eq!(s, 503);
    let (s, _) = call(
        || ManagerError::ShuttingDown,
        "GET",
        "/v1/flows",
        Some("rd"),
        "",
    )
    .await;
    assert_eq!(s, 503);
}

#[tokio::test]
async fn each_error_kind_has_its_status() {
    let cases: [(fn() -> ManagerError, u16); 5] = [
        (|| ManagerError::Invalid("bad".into()), 400),
        (|| ManagerError::NotFound("none".into()), 404),
        (|| ManagerError::Conflict("later".into()), 409),
        (|| ManagerError::Internal("bug".into()), 500),
        (|| ManagerError::RateLimited("slow down".into()), 429),
    ];
    for (fail, want) in cases {
        let (s, e) = call(fail, "GET", "/v1/quarantine", Some("rd"), "").await;
        assert_eq!(s, want, "{e:?}");
    }
}

#[tokio::test]
async fn refusals_before_the_handler_have_the_error_body_too() {
    let ok = || ManagerError::Internal("not reached".into());
    // No token, a bad token, a read token writing, a bootstrap token on REST.
    assert_eq!(call(ok, "GET", "/v1/nodes", None, "").await.0, 401);
    assert_eq!(call(ok, "GET", "/v1/nodes", Some("nope"), "").await.0, 401);
    assert_eq!(call(ok, "POST", "/v1/apply", Some("rd"), "{}").await.0, 403);
    assert_eq!(call(ok, "GET", "/v1/nodes", Some("boot"), "").await.0, 403);
    // An unknown route, a refused method, a malformed body, an unknown query parameter.
    assert_eq!(call(ok, "GET", "/v1/nope", Some("rd"), "").await.0, 404);
    let (s, e) = call(ok, "DELETE", "/v1/apply", Some("adm"), "").await;
    assert_eq!(s, 405, "{e:?}");
    let (s, e) = call(ok, "POST", "/v1/apply", Some("adm"), "{not json").await;
    assert_eq!(s, 400);
    assert!(e.error.message.starts_with("request body:"), "{e:?}");
    let (s, e) = call(ok, "GET", "/v1/flows?colour=red", Some("rd"), "").await;
    assert_eq!(s, 400);
    assert!(e.error.message.contains("colour"), "{e:?}");
    let (s, e) = call(ok, "GET", "/v1/flows?verdict=maybe", Some("rd"), "").await;
    assert_eq!(s, 400);
    assert!(e.error.message.contains("allowed, denied, audit"), "{e:?}");
}

/// Every route the OpenAPI document lists is served (a request without a token is refused for
/// the token, never "no route"), and every route the router serves is in the document.
#[tokio::test]
async fn the_router_serves_exactly_the_documented_routes() {
    let ok = || ManagerError::Internal("not reached".into());
    let documented = cellwall_api::openapi::routes();
    for r in &documented {
        let app = router(Arc::new(Fake { fail: ok }), 1 << 20);
        let req = Request::builder()
            .method(r.method.to_uppercase().as_str())
            .uri(r.path)
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        let want = match r.access {
            cellwall_api::openapi::Access::Public => 200,
            _ => 401,
        };
        assert_eq!(resp.status().as_u16(), want, "{} {}", r.method, r.path);
    }
    // The routes in this module's router, by reading its source: a route added without
    // documenting it fails here.
    let src = include_str!("mod.rs");
    let mut served: Vec<&str> = src
        .split(".route(")
        .skip(1)
        .filter_map(|s| s.trim_start().strip_prefix('"'))
        .map(|s| s.split('"').next().unwrap())
        .collect();
    served.sort();
    served.dedup();
    let mut paths: Vec<&str> = documented.iter().map(|r| r.path).collect();
    paths.sort();
    paths.dedup();
    assert_eq!(served, paths);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_with_the_error_body() {
    let ok = || ManagerError::Internal("not reached".into());
    let big = format!(
        "{{\"documents\": [{{\"file\": \"a\", \"text\": \"{}\"}}]}}",
        "x".repeat(2 << 20)
    );
    let (s, e) = call(ok, "POST", "/v1/apply", Some("adm"), &big).await;
    assert_eq!(s, 413, "{e:?}");
    assert_eq!(e.error.reason, "Payload Too Large");
}

/// `GET /v1/whoami` names the token's role, so the console shows write controls only to
/// admins; a bootstrap token is refused there as everywhere on REST.
#[tokio::test]
async fn whoami_names_the_role_and_refuses_what_is_not_a_rest_token() {
    let ok = || ManagerError::Internal("not reached".into());
    for (token, want) in [
        ("adm", ("admin", TokenRole::Admin)),
        ("rd", ("reader", TokenRole::Read)),
    ] {
        let app = router(Arc::new(Fake { fail: ok }), 1 << 20);
        let req = Request::get("/v1/whoami")
            .header("Authorization", format!("Bearer {token}"))
            .body(Body::empty())
            .unwrap();
        let resp = app.oneshot(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let b = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .unwrap();
        let id: Identity = serde_json::from_slice(&b).unwrap();
        assert_eq!((id.name.as_str(), id.role), want);
    }
    assert_eq!(call(ok, "GET", "/v1/whoami", None, "").await.0, 401);
    assert_eq!(call(ok, "GET", "/v1/whoami", Some("boot"), "").await.0, 403);
}

/// The console's files need no token (they hold no data) and come with a policy that lets a
/// page run only this origin's scripts and connect only here.
#[tokio::test]
async fn the_console_is_served_with_a_policy_that_allows_only_this_origin() {
    let ok = || ManagerError::Internal("not reached".into());
    for (path, kind) in [
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/style.css", "text/css"),
    ] {
        let app = router(Arc::new(Fake { fail: ok }), 1 << 20);
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        let h = resp.headers();
        assert!(
            h["content-type"].to_str().unwrap().starts_with(kind),
            "{path}"
        );
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
        assert!(!csp.contains("unsafe-inline"), "{csp}");
        assert!(csp.contains("require-trusted-types-for 'script'"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        let b = axum::body::to_bytes(resp.into_body(), 16 << 20)
            .await
            .unwrap();
        assert!(b.len() > 100, "{path} is built, not empty");
    }
    let index = router(Arc::new(Fake { fail: ok }), 1 << 20)
        .oneshot(Request::get("/ui/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    let html = axum::body::to_bytes(index.into_body(), 1 << 20)
        .await
        .unwrap();
    let html = String::from_utf8_lossy(&html);
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "nothing from outside"
    );
    assert!(!html.contains("<script>"), "no inline script: {html}");
    for path in ["/", "/ui"] {
        let app = router(Arc::new(Fake { fail: ok }), 1 << 20);
        let resp = app
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert!(resp.status().is_redirection(), "{path}");
        assert_eq!(resp.headers()["location"], "/ui/");
    }
}

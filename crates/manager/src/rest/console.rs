//! The web console at `/ui/`: static files built from `ui/` by `build.rs` and embedded, so the
//! binary carries its console and a browser loads nothing from anywhere else. The files hold no
//! data and need no token; every datum comes from the REST API with the user's bearer token.
//! The Content-Security-Policy forbids inline scripts and foreign origins: a workload name or
//! an imported label that smuggles markup cannot run script even if a page ever rendered it.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/index.html"));
const APP: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/app.js"));
const STYLE: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/ui/style.css"));

/// What pages may load and where they may connect: this origin only. Trusted Types with no
/// policy make every HTML sink (`innerHTML` and kin) throw in the browser: the console's rule
/// of building elements from text is enforced at run time too, not only by the invariant grep.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data: blob:; connect-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'none'; require-trusted-types-for 'script'; \
     trusted-types 'none'";

fn file(body: &'static [u8], content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // A new manager binary brings a new console: the browser revalidates every load.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { file(INDEX, "text/html; charset=utf-8") }),
        )
        .route(
            "/ui/app.js",
            get(|| async { file(APP, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/ui/style.css",
            get(|| async { file(STYLE, "text/css; charset=utf-8") }),
        )
}

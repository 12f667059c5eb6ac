//! The OpenAPI document is generated from the API's types; `docs/openapi.json` is the committed
//! copy people and tools read. This test fails when the two drift (rerun with
//! `UPDATE_OPENAPI=1` after a deliberate API change and review the diff), and when the document
//! refers to a schema it does not define.
#![cfg(feature = "openapi")]

use cellwall_api::openapi::{document, routes};
use serde_json::Value;
use std::path::PathBuf;

fn committed() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

#[test]
fn the_committed_document_is_the_generated_one() {
    let got = serde_json::to_string_pretty(&document()).unwrap() + "\n";
    let path = committed();
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_OPENAPI=1 writes it)", path.display()));
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        panic!(
            "docs/openapi.json drifted from the API types at line {}:\n  generated: {}\n  committed: {}\nRerun with UPDATE_OPENAPI=1 and review the diff.",
            line + 1,
            got.lines().nth(line).unwrap_or("(end)"),
            want.lines().nth(line).unwrap_or("(end)")
        );
    }
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|x| refs(x, out));
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves_and_every_route_is_documented_once() {
    let d = document();
    let mut all = Vec::new();
    refs(&d, &mut all);
    assert!(all.len() > 20, "the document refers to its types");
    for r in all {
        let name = r
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("unexpected reference {r}"));
        assert!(
            d["components"]["schemas"].get(name).is_some(),
            "{r} is not defined"
        );
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in routes() {
        assert!(
            seen.insert((r.method, r.path)),
            "{} {} twice",
            r.method,
            r.path
        );
        assert!(d["paths"][r.path][r.method].is_object());
    }
    // Writes need an admin token; nothing but liveness and the document itself is public.
    let public: Vec<_> = routes()
        .into_iter()
        .filter(|r| r.access == cellwall_api::openapi::Access::Public)
        .map(|r| r.path)
        .collect();
    assert_eq!(public, ["/healthz", "/v1/openapi.json"]);
}

//! The CRDs in `deploy/crds.yaml` are what `cellwall_kube::crd::crds()` generates from the spec
//! types (`UPDATE_CRDS=1 cargo test -p cellwall-kube --test crds` rewrites the file); their
//! schemas are structural, as the API server demands of a CRD; and every case in
//! `crd_cases.yaml` is accepted or refused by the loader as the case says. The same cases are
//! checked against the CRDs' schemas and CEL rules by `scripts/validate-deploy.py`, so the API
//! server's first line and the loader are held to one list.

use cellwall_kube::crd::crds;
use serde_json::Value;
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

const HEADER: &str = "# Generated from the policy crate's spec types by cellwall_kube::crd::crds(); do not edit.\n# Regenerate: UPDATE_CRDS=1 cargo test -p cellwall-kube --test crds\n";

fn rendered() -> String {
    let mut out = HEADER.to_string();
    for c in crds() {
        out.push_str("---\n");
        out.push_str(&serde_saphyr::to_string(&c).expect("CRD renders as YAML"));
    }
    out
}

#[test]
fn deploy_crds_are_what_the_types_generate() {
    let path = root().join("deploy/crds.yaml");
    let want = rendered();
    if std::env::var_os("UPDATE_CRDS").is_some() {
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "deploy/crds.yaml differs from the spec types' CRDs; regenerate with \
         UPDATE_CRDS=1 cargo test -p cellwall-kube --test crds and review the diff"
    );
}

/// Every field the CRDs use is a field of the API's CRD type: k8s-openapi reads each one back
/// to the same JSON (a keyword the API does not know, like `examples`, would be lost).
#[test]
fn crds_are_valid_crd_objects() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    for c in crds() {
        let typed: CustomResourceDefinition = serde_json::from_value(c.clone()).unwrap();
        let back = serde_json::to_value(&typed).unwrap();
        assert!(
            numbers_as_f64(back) == numbers_as_f64(c.clone()),
            "{} does not survive the API's type",
            c["metadata"]["name"]
        );
    }
}

/// The API's type holds `minimum` and `maximum` as floats: 1 and 1.0 are one value.
fn numbers_as_f64(v: Value) -> Value {
    match v {
        Value::Number(n) => serde_json::json!(n.as_f64().unwrap()),
        Value::Array(a) => Value::Array(a.into_iter().map(numbers_as_f64).collect()),
        Value::Object(o) => {
            Value::Object(o.into_iter().map(|(k, v)| (k, numbers_as_f64(v))).collect())
        }
        v => v,
    }
}

/// Keywords a structural schema forbids inside `anyOf`, `allOf`, `oneOf` and `not`.
const NOT_IN_JUNCTORS: &[&str] = &[
    "type",
    "description",
    "default",
    "nullable",
    "additionalProperties",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-validations",
];

/// The structural-schema rules the API server applies to a CRD's schema (apiextensions
/// validation: every node has a type, no references, junctors only validate, properties and
/// additionalProperties exclusive), returning every violation with its path.
fn structural(s: &Value, at: &str, junctor: bool, out: &mut Vec<String>) {
    let Some(o) = s.as_object() else {
        out.push(format!("{at}: not an object"));
        return;
    };
    if o.contains_key("$ref") {
        out.push(format!("{at}: $ref"));
    }
    if junctor {
        for k in NOT_IN_JUNCTORS {
            if o.contains_key(*k) {
                out.push(format!("{at}: {k} inside a junctor"));
            }
        }
    } else if !o.contains_key("type")
        && o.get("x-kubernetes-int-or-string") != Some(&Value::Bool(true))
        && o.get("x-kubernetes-preserve-unknown-fields") != Some(&Value::Bool(true))
    {
        out.push(format!("{at}: no type"));
    }
    if let Some(t) = o.get("type") {
        if !t.is_string() {
            out.push(format!("{at}: type {t} is not one type"));
        }
    }
    if o.contains_key("properties") && o.contains_key("additionalProperties") {
        out.push(format!(
            "{at}: properties and additionalProperties together"
        ));
    }
    if let Some(p) = o.get("properties").and_then(Value::as_object) {
        for (k, v) in p {
            structural(v, &format!("{at}.{k}"), junctor, out);
        }
    }
    for k in ["items", "additionalProperties"] {
        if let Some(v) = o.get(k).filter(|v| v.is_object()) {
            structural(v, &format!("{at}[{k}]"), junctor, out);
        }
    }
    for k in ["anyOf", "allOf", "oneOf"] {
        for (i, v) in o
            .get(k)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            structural(v, &format!("{at}.{k}[{i}]"), true, out);
        }
    }
    if let Some(v) = o.get("not") {
        structural(v, &format!("{at}.not"), true, out);
    }
}

#[test]
fn crd_schemas_are_structural() {
    let mut problems = Vec::new();
    for c in crds() {
        for v in c["spec"]["versions"].as_array().unwrap() {
            let name = c["metadata"]["name"].as_str().unwrap();
            structural(&v["schema"]["openAPIV3Schema"], name, false, &mut problems);
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn the_structural_check_finds_violations() {
    let mut p = Vec::new();
    let bad = serde_json::json!({"type": "object", "properties": {
        "a": {"nullable": true},
        "b": {"type": ["string", "null"]},
        "c": {"$ref": "#/x", "type": "object"},
        "d": {"type": "string", "anyOf": [{"type": "string"}]}
    }});
    structural(&bad, "t", false, &mut p);
    assert_eq!(p.len(), 4, "{p:#?}");
}

/// A namespaced Policy's schema has no namespaceSelector; a ClusterPolicy's has.
#[test]
fn only_a_cluster_policy_selects_namespaces() {
    let all = crds();
    let spec = |kind: &str| {
        let c = all
            .iter()
            .find(|c| c["spec"]["names"]["kind"] == kind)
            .unwrap();
        c["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"].clone()
    };
    assert!(spec("Policy")["properties"]
        .get("namespaceSelector")
        .is_none());
    assert!(spec("ClusterPolicy")["properties"]
        .get("namespaceSelector")
        .is_some());
}

/// Each case says whether it must be accepted; the loader must agree.
#[test]
fn the_loader_agrees_with_every_crd_case() {
    let text = std::fs::read_to_string(root().join("crates/kube/tests/crd_cases.yaml")).unwrap();
    let mut n = 0;
    for doc in text.split("\n---\n").filter(|d| d.contains("kind:")) {
        let v: serde_json::Value = serde_saphyr_from(doc);
        let expect = v["metadata"]["annotations"]["cellwall.io/test-expect"]
            .as_str()
            .expect("each case has a cellwall.io/test-expect annotation");
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        let loaded = cellwall_policy::load::parse_json(&name, &v.to_string())
            .map(|p| cellwall_policy::load::into_model(p.objects.into_iter().map(|o| o.object)));
        match expect {
            "accepted" => assert!(loaded.is_ok(), "{name}: refused: {:?}", loaded.err()),
            "refused" => assert!(loaded.is_err(), "{name}: accepted"),
            other => panic!("{name}: unknown expectation {other}"),
        }
        n += 1;
    }
    assert!(n >= 20, "only {n} cases");
}

fn serde_saphyr_from(doc: &str) -> serde_json::Value {
    serde_saphyr::from_str(doc).unwrap_or_else(|e| panic!("case does not parse: {e}\n{doc}"))
}

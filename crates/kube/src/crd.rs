//! The CustomResourceDefinitions of Cellwall's own kinds (Policy, ClusterPolicy, Host),
//! generated from the policy crate's spec types, so the API server's schema and the loader
//! cannot drift apart (`deploy/crds.yaml` is this output; a test fails when it differs).
//!
//! Generated with schemars and kube-core's structural-schema transforms, not with kube's
//! `#[derive(CustomResource)]`: the derive wants spec types that also serialize and clone,
//! and ours are the loader's validating deserializers, which must stay the single definition.
//!
//! What a structural schema cannot say (exactly one peer kind, Pass only in the admin tier,
//! domains only on egress, a Policy selecting no namespaces) is written as CEL rules
//! (`x-kubernetes-validations`) beside the types, so `kubectl apply` refuses such an object
//! before the manager sees it. The manager still converts every object with the loader and
//! refuses what it refuses: the schema is a first line, not the authority.

use crate::{Resource, RESOURCES};
use cellwall_policy::k8s::{CellwallSpec, HostSpec};
use kube_core::schema::{OptionalEnum, OptionalIntOrString, StructuralSchemaRewriter};
use schemars::{generate::SchemaSettings, JsonSchema};
use serde_json::{json, Value};

/// Whether the manager writes `status` for this kind (its CRD has the status subresource):
/// policies, which nodes enforce; not hosts, which are declarations.
pub fn has_status(r: &Resource) -> bool {
    r.group == "cellwall.io" && matches!(r.kind, "Policy" | "ClusterPolicy")
}

/// The CRDs of every Cellwall kind in [`RESOURCES`], in that order.
pub fn crds() -> Vec<Value> {
    RESOURCES
        .iter()
        .filter(|r| r.group == "cellwall.io")
        .map(crd)
        .collect()
}

fn crd(r: &Resource) -> Value {
    let (spec, description, columns, short) = match r.kind {
        "Policy" => {
            let mut spec = spec_schema::<CellwallSpec>();
            strip_namespace_selector(&mut spec);
            (
                spec,
                "Cellwall policy for the pods of its namespace: tiers, priorities, deny and \
                 pass, audit mode, expiry, CIDR, node, entity and domain peers.",
                policy_columns(),
                "cwp",
            )
        }
        "ClusterPolicy" => (
            spec_schema::<CellwallSpec>(),
            "Cellwall policy for the pods of the namespaces it selects (all when absent).",
            policy_columns(),
            "cwcp",
        ),
        "Host" => (
            spec_schema::<HostSpec>(),
            "A VM or bare-metal host an administrator declares: the node whose host-mode agent \
             may report it, its labels (metadata.labels) and the addresses it may have.",
            vec![
                column("Node", "string", ".spec.node"),
                column("Age", "date", ".metadata.creationTimestamp"),
            ],
            "cwh",
        ),
        other => unreachable!("no CRD for cellwall.io kind {other}"),
    };
    let singular = r.kind.to_ascii_lowercase();
    let mut properties = json!({
        "apiVersion": {"type": "string"},
        "kind": {"type": "string"},
        "metadata": {"type": "object"},
        "spec": spec
    });
    let mut version = json!({
        "name": r.version,
        "served": true,
        "storage": true,
        "additionalPrinterColumns": columns
    });
    if has_status(r) {
        properties["status"] = status_schema();
        version["subresources"] = json!({"status": {}});
        version["additionalPrinterColumns"]
            .as_array_mut()
            .expect("a list")
            .insert(3, column("Enforced", "string", ".status.enforced"));
    }
    version["schema"] = json!({"openAPIV3Schema": {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": ["spec"]
    }});
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": format!("{}.{}", r.plural, r.group),
            "labels": {"app.kubernetes.io/part-of": "cellwall"}
        },
        "spec": {
            "group": r.group,
            "names": {
                "kind": r.kind,
                "listKind": format!("{}List", r.kind),
                "plural": r.plural,
                "singular": singular,
                "shortNames": [short],
                "categories": ["cellwall"]
            },
            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
            "versions": [version]
        }
    })
}

/// What the manager writes back (`crates/manager/src/cluster_status.rs`): which generation it
/// read, the store revision that holds it, on how many of the joined nodes that revision is in
/// force, and two conditions in the `metav1.Condition` form.
fn status_schema() -> Value {
    json!({
        "type": "object",
        "description": "Written by the Cellwall manager.",
        "properties": {
            "observedGeneration": {"type": "integer", "format": "int64", "description": "The metadata.generation this status describes."},
            "revision": {"type": "integer", "format": "int64", "description": "The manager's revision that holds this generation (0: not stored, refused)."},
            "enforcedNodes": {"type": "integer", "format": "int32", "description": "Joined nodes whose agent enforces that revision or a later one."},
            "nodes": {"type": "integer", "format": "int32", "description": "Joined nodes."},
            "enforced": {"type": "string", "description": "enforcedNodes/nodes, for kubectl get."},
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type", "status", "reason", "message", "lastTransitionTime"],
                    "properties": {
                        "type": {"type": "string", "description": "Accepted (the manager could read it) or Enforced (every joined node enforces it)."},
                        "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "observedGeneration": {"type": "integer", "format": "int64"},
                        "lastTransitionTime": {"type": "string", "format": "date-time"}
                    }
                }
            }
        }
    })
}

fn column(name: &str, ty: &str, path: &str) -> Value {
    json!({"name": name, "type": ty, "jsonPath": path})
}

fn policy_columns() -> Vec<Value> {
    vec![
        column("Tier", "string", ".spec.tier"),
        column("Priority", "integer", ".spec.priority"),
        column("Mode", "string", ".spec.mode"),
        column("Age", "date", ".metadata.creationTimestamp"),
    ]
}

/// A namespaced Policy applies in its own namespace: its spec has no `namespaceSelector`
/// (the loader refuses one), so the field is not in its schema, and an object that sets it is
/// refused by the API server's strict field validation (kubectl's default).
fn strip_namespace_selector(spec: &mut Value) {
    if let Some(p) = spec.get_mut("properties").and_then(Value::as_object_mut) {
        p.remove("namespaceSelector");
    }
}

/// A spec type's schema as the API server takes it: inlined (no `$ref`), OpenAPI 3.0
/// `nullable` instead of `null` types, enums and options in structural form, and no keywords
/// the CRD schema type does not have.
fn spec_schema<T: JsonSchema>() -> Value {
    let settings = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .with_transform(OptionalEnum)
        .with_transform(OptionalIntOrString)
        .with_transform(StructuralSchemaRewriter);
    let mut v = settings
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value();
    tidy(&mut v);
    v
}

/// Removes what a CRD schema cannot carry: `title`, `examples` (plural), `$defs`, the
/// `default: null` that `#[serde(default)]` options produce (an absent field is the default),
/// and `null` in the enums of optional fields (`nullable` already says it).
fn tidy(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for k in ["title", "examples", "$defs", "$schema"] {
                o.remove(k);
            }
            if o.get("default") == Some(&Value::Null) {
                o.remove("default");
            }
            if let Some(Value::Array(e)) = o.get_mut("enum") {
                e.retain(|v| !v.is_null());
            }
            o.values_mut().for_each(tidy);
        }
        Value::Array(a) => a.iter_mut().for_each(tidy),
        _ => {}
    }
}

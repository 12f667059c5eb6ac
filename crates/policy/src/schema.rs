//! JSON Schema of the types the manager's REST API sends and takes (feature `schema`), for its
//! OpenAPI document. Most types derive `schemars::JsonSchema` beside their serde derives; this
//! module holds the hand-written schemas of types with hand-written serde forms, and the test
//! that every schema agrees with what serde really produces.

use crate::net::{Cidr, DomainPattern};
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use std::borrow::Cow;

/// A CIDR is serialized as its canonical text (`10.0.0.0/8`, `fd00::/64`).
impl JsonSchema for Cidr {
    fn schema_name() -> Cow<'static, str> {
        "Cidr".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::Cidr").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "An IPv4 or IPv6 network in canonical form, ADDRESS/PREFIX (host bits cleared).",
            "pattern": "^[0-9A-Fa-f:.]+/[0-9]{1,3}$",
            "examples": ["10.0.0.0/8", "fd00::/64"]
        })
    }
}

/// A grouping is serialized as its `--group-by` text.
impl JsonSchema for crate::discover::GroupBy {
    fn schema_name() -> Cow<'static, str> {
        "GroupBy".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::GroupBy").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "How learning groups workloads into applications: auto (controller, well-known labels, then behaviour), app, owner, workload, namespace, or label:KEY[,KEY].",
            "pattern": "^(auto|app|owner|workload|namespace|label:[^,= ]+(,[^,= ]+)*)$",
            "examples": ["auto", "label:app.kubernetes.io/name", "owner"]
        })
    }
}

/// A domain pattern is serialized as its text (`example.com`, `*.example.com`).
impl JsonSchema for DomainPattern {
    fn schema_name() -> Cow<'static, str> {
        "DomainPattern".into()
    }

    fn schema_id() -> Cow<'static, str> {
        concat!(module_path!(), "::DomainPattern").into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "A DNS name, or `*.` and a name: one or more whole labels in front of it. Lowercase, no trailing dot.",
            "examples": ["api.example.com", "*.example.com"]
        })
    }
}

#[cfg(test)]
mod tests {
    //! Serializes representative values of every top-level type and checks each against its
    //! schema with a small structural check: every key serde writes is a property of the schema
    //! (or allowed by `additionalProperties`), every required property is written, types, enums
    //! and constants match, and exactly one branch of a `oneOf` fits.

    use crate::discover::{self, Endpoint, HistFlow, Observed, ProposeOptions};
    use crate::engine::{Engine, Flow};
    use crate::import::{self, Target};
    use crate::load::{into_model, parse_file};
    use crate::model::*;
    use schemars::JsonSchema;
    use serde::Serialize;
    use serde_json::Value;

    fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/$defs/").expect("local reference");
                resolve(root, &root["$defs"][name])
            }
            None => schema,
        }
    }

    fn type_ok(t: &str, v: &Value) -> bool {
        match t {
            "object" => v.is_object(),
            "array" => v.is_array(),
            "string" => v.is_string(),
            "boolean" => v.is_boolean(),
            "null" => v.is_null(),
            "integer" => v.is_i64() || v.is_u64(),
            "number" => v.is_number(),
            other => panic!("unknown type {other}"),
        }
    }

    fn check(root: &Value, schema: &Value, v: &Value, at: &str) -> Result<(), String> {
        let s = resolve(root, schema);
        if s == &Value::Bool(true) {
            return Ok(());
        }
        let fail = |m: String| Err(format!("{at}: {m} (value {v}, schema {s})"));
        if let Some(t) = s.get("type") {
            let ok = match t {
                Value::String(t) => type_ok(t, v),
                Value::Array(ts) => ts.iter().any(|t| type_ok(t.as_str().unwrap(), v)),
                _ => false,
            };
            if !ok {
                return fail(format!("type {t}"));
            }
        }
        if let Some(e) = s.get("enum").and_then(Value::as_array) {
            if !e.contains(v) {
                return fail("not in enum".into());
            }
        }
        if let Some(c) = s.get("const") {
            if c != v {
                return fail("not the constant".into());
            }
        }
        for sub in s
            .get("allOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            check(root, sub, v, at)?;
        }
        if let Some(any) = s.get("anyOf").and_then(Value::as_array) {
            if !any.iter().any(|sub| check(root, sub, v, at).is_ok()) {
                return fail("no anyOf branch fits".into());
            }
        }
        if let Some(one) = s.get("oneOf").and_then(Value::as_array) {
            let fits = one
                .iter()
                .filter(|sub| check(root, sub, v, at).is_ok())
                .count();
            if fits != 1 {
                return fail(format!("{fits} oneOf branches fit"));
            }
        }
        if let Value::Object(obj) = v {
            check_object(root, s, obj, at)?;
        }
        if let Value::Array(items) = v {
            let prefix = s.get("prefixItems").and_then(Value::as_array);
            for (i, item) in items.iter().enumerate() {
                let at = format!("{at}[{i}]");
                match (prefix.and_then(|p| p.get(i)), s.get("items")) {
                    (Some(p), _) => check(root, p, item, &at)?,
                    (None, Some(items_schema)) => check(root, items_schema, item, &at)?,
                    (None, None) if prefix.is_some() => return fail("too many items".into()),
                    (None, None) => {}
                }
            }
        }
        Ok(())
    }

    fn check_object(
        root: &Value,
        s: &Value,
        obj: &serde_json::Map<String, Value>,
        at: &str,
    ) -> Result<(), String> {
        let props = s.get("properties").and_then(Value::as_object);
        let extra = s.get("additionalProperties");
        if props.is_none() && extra.is_none() && s.get("type") != Some(&"object".into()) {
            // A branch of a oneOf that says nothing about objects (checked by its siblings).
            return Ok(());
        }
        for (k, val) in obj {
            let at = format!("{at}.{k}");
            match (props.and_then(|p| p.get(k)), extra) {
                (Some(p), _) => check(root, p, val, &at)?,
                (None, Some(Value::Bool(false))) | (None, None) if props.is_some() => {
                    return Err(format!("{at}: serde writes a key the schema does not name"))
                }
                (None, Some(e)) => check(root, e, val, &at)?,
                (None, None) => {}
            }
        }
        for r in s
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let r = r.as_str().unwrap();
            if !obj.contains_key(r) {
                return Err(format!("{at}: required {r} is not written by serde"));
            }
        }
        Ok(())
    }

    fn agrees<T: JsonSchema + Serialize>(value: &T) {
        let schema = schemars::schema_for!(T);
        let root = serde_json::to_value(&schema).unwrap();
        let v = serde_json::to_value(value).unwrap();
        check(&root, &root, &v, &T::schema_name()).unwrap_or_else(|e| panic!("{e}"));
    }

    const MANIFESTS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {env: prod}}
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {zone: a}}
status: {addresses: [{type: InternalIP, address: 10.250.0.1}]}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {app: web}}
spec: {nodeName: n1, containers: [{ports: [{name: http, containerPort: 8080}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: db, namespace: shop, labels: {app: db}}
spec: {nodeName: n1, containers: [{ports: [{containerPort: 5432, protocol: UDP}]}]}
status: {podIPs: [{ip: 10.0.0.2}, {ip: "fd00::2"}]}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
  - from:
    - podSelector: {matchExpressions: [{key: app, operator: In, values: [web]}]}
    - namespaceSelector: {}
    - ipBlock: {cidr: 10.0.0.0/8, except: [10.1.0.0/16]}
    ports: [{port: 5432, protocol: UDP}, {port: http}, {port: 1, endPort: 9}]
---
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: guard}
spec:
  tier: admin
  priority: 3
  mode: audit
  expiresAt: "2030-01-01T00:00:00Z"
  ingress:
  - {action: Deny, name: world, from: [{entity: world}, {nodeSelector: {}}], expiresAt: "2029-01-01T00:00:00Z"}
  - {action: Pass}
---
apiVersion: policy.networking.k8s.io/v1alpha1
kind: AdminNetworkPolicy
metadata: {name: anp}
spec:
  priority: 1
  subject: {namespaces: {}}
  egress: [{action: Allow, to: [{networks: [192.0.2.0/24]}], ports: [{namedPort: http}]}]
"#;

    fn model() -> (Inventory, Vec<Policy>) {
        into_model(
            parse_file("m.yaml", MANIFESTS)
                .unwrap()
                .objects
                .into_iter()
                .map(|o| o.object),
        )
    }

    #[test]
    fn model_types_agree() {
        let (inv, policies) = model();
        for p in &policies {
            agrees(p);
            agrees(&p.id);
        }
        for w in inv.workloads.values() {
            agrees(w);
            agrees(&w.key());
        }
        for n in inv.namespaces.values() {
            agrees(n);
        }
        for n in inv.nodes.values() {
            agrees(n);
        }
        let entity_peers = [Entity::Host, Entity::Cluster, Entity::All].map(Peer::Entity);
        for p in entity_peers.iter().chain([&Peer::Any]) {
            agrees(p);
        }
    }

    #[test]
    fn explanation_types_agree() {
        let (inv, policies) = model();
        let engine = Engine::build(inv, policies, 0);
        for (src, dst, port) in [
            ("192.0.2.9", "10.0.0.2", 5432),
            ("10.0.0.1", "10.0.0.2", 5432),
            ("10.0.0.2", "192.0.2.1", 8080),
            ("10.250.0.1", "10.0.0.1", 80),
        ] {
            let flow = Flow {
                src: src.parse().unwrap(),
                dst: dst.parse().unwrap(),
                protocol: Protocol::Udp,
                port,
            };
            let ex = engine.explain(&flow);
            agrees(&ex);
            agrees(&ex.decision);
            if let Some(info) = engine.rule(ex.decision.deciding().1.rule) {
                agrees(info);
            }
        }
        for i in engine.identities() {
            agrees(i);
        }
    }

    #[test]
    fn discover_types_agree() {
        let (inv, policies) = model();
        let ep = |k: &str| {
            let w = &inv.workloads[&WorkloadKey::parse(k).unwrap()];
            Endpoint::Workload {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                labels: crate::Labels::clone(&w.labels),
            }
        };
        let ext = Endpoint::External {
            ip: "192.0.2.9".parse().unwrap(),
            names: vec!["api.example.com".into()],
        };
        let flows: Vec<HistFlow> = [
            (
                ep("shop/web"),
                ep("shop/db"),
                Observed::Allowed,
                Some("NetworkPolicy/shop/db ingress[0]"),
            ),
            (ext.clone(), ep("shop/db"), Observed::Denied, None),
            (ep("shop/db"), ext, Observed::Audit, None),
        ]
        .into_iter()
        .map(|(src, dst, observed, rule)| HistFlow {
            src,
            dst,
            protocol: Protocol::Udp,
            port: 5432,
            observed,
            rule: rule.map(str::to_string),
            connections: 2,
            first_ns: 1,
            last_ns: 2,
        })
        .collect();
        for f in &flows {
            agrees(f);
        }
        for by in [
            "app",
            "workload",
            "auto",
            "label:app,tier",
            "owner",
            "namespace",
        ] {
            let by: discover::GroupBy = by.parse().unwrap();
            agrees(&by);
            let g = discover::Grouping::build(&flows, &inv, &by);
            agrees(&discover::dependency_map(&flows, &g));
        }
        assert!("label:".parse::<discover::GroupBy>().is_err());
        assert!("label:a=b".parse::<discover::GroupBy>().is_err());
        assert!("apps".parse::<discover::GroupBy>().is_err());
        let current = Engine::build(inv.clone(), policies.clone(), 0);
        agrees(&discover::propose(
            &flows,
            &current,
            &ProposeOptions::default(),
        ));
        let replay = discover::Replay::new(&inv, &flows);
        let cur = Engine::build(replay.inventory.clone(), policies, 0);
        let cand = Engine::build(replay.inventory.clone(), Vec::<Policy>::new(), 0);
        let (summary, rows) = discover::simulate(&replay, &cur, &cand, &flows, |_, _| {});
        agrees(&summary);
        for r in &rows {
            agrees(r);
        }
    }

    #[test]
    fn import_types_agree() {
        let csv = "ip,owner\n10.0.0.1,shop\n";
        let json = r#"[{"hostname": "vm1", "tier": "a"}, {"workload": "shop/web", "x": "1"}]"#;
        let mut entries = import::parse("a.csv", csv, "cmdb").unwrap();
        entries.extend(import::parse("b.json", json, "cmdb").unwrap());
        let targets: Vec<&Target> = entries.iter().map(|e| &e.target).collect();
        assert_eq!(targets.len(), 3);
        for e in &entries {
            agrees(e);
        }
    }

    #[test]
    fn the_check_finds_disagreement() {
        // A schema that does not name a key serde writes, and one that requires a missing key.
        let root = serde_json::json!({"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]});
        assert!(check(&root, &root, &serde_json::json!({"a": 1}), "t").is_ok());
        assert!(check(&root, &root, &serde_json::json!({"a": 1, "b": 2}), "t").is_err());
        assert!(check(&root, &root, &serde_json::json!({}), "t").is_err());
        assert!(check(&root, &root, &serde_json::json!({"a": "x"}), "t").is_err());
    }
}

//! Parsing manifest text (YAML multi-document, or JSON) into model objects. Pure: the caller
//! reads files; this module never touches the filesystem. Every failure says file, line, column,
//! field path and what was expected, and no input makes it panic (see the fuzz test).

mod decode;
mod kinds;

use crate::k8s::ConvertError;
use crate::model::{HostDecl, Inventory, Namespace, Node, Policy, Workload};
use decode::{decode, Ctx, Format};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::fmt;

/// One object read from a manifest, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Workload),
    Node(Node),
    Policy(Box<Policy>),
    /// A host an admin declared (its node, labels, addresses).
    Host(HostDecl),
}

impl Object {
    /// This object of cluster `cluster`, as a manager watching several clusters holds it
    /// (`crate::clusters`).
    pub fn qualified(self, cluster: &str) -> Object {
        use crate::clusters as c;
        match self {
            Object::Namespace(mut n) => {
                c::qualify_namespace(cluster, &mut n);
                Object::Namespace(n)
            }
            Object::Pod(mut w) => {
                c::qualify_workload(cluster, &mut w);
                Object::Pod(w)
            }
            Object::Node(mut n) => {
                c::qualify_node(cluster, &mut n);
                Object::Node(n)
            }
            Object::Host(mut h) => {
                c::qualify_host(cluster, &mut h);
                Object::Host(h)
            }
            Object::Policy(p) => Object::Policy(Box::new(c::qualify_policy(cluster, *p))),
        }
    }

    /// Refuses a name holding the cluster separator, with its field path: only the manager
    /// qualifies the inventory's names (`crate::clusters`), so no file or request can pose as
    /// a cluster's namespace, pod, node or host.
    fn check_unqualified(&self) -> Result<(), (&'static str, String)> {
        let check = |path: &'static str, n: &str| {
            crate::clusters::check_unqualified(n).map_err(|e| (path, e))
        };
        match self {
            Object::Namespace(n) => check("metadata.name", &n.name),
            Object::Pod(w) => {
                check("metadata.namespace", &w.namespace)?;
                check("metadata.name", &w.name)?;
                w.node
                    .as_deref()
                    .map_or(Ok(()), |n| check("spec.nodeName", n))
            }
            Object::Node(n) => check("metadata.name", &n.name),
            // A namespaced policy may be written into a watched cluster's namespace
            // (`east:shop`: a quarantine, a proposal for that namespace); its name is its own.
            Object::Policy(p) => check("metadata.name", &p.id.name),
            Object::Host(h) => {
                check("metadata.namespace", &h.namespace)?;
                check("metadata.name", &h.name)?;
                check("spec.node", &h.node)
            }
        }
    }

    /// `Kind ns/name` for messages.
    pub fn describe(&self) -> String {
        match self {
            Object::Namespace(n) => format!("Namespace {}", n.name),
            Object::Pod(w) => format!("Pod {}/{}", w.namespace, w.name),
            Object::Node(n) => format!("Node {}", n.name),
            Object::Policy(p) => p.id.to_string(),
            Object::Host(h) => format!("Host {}/{}", h.namespace, h.name),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Located {
    pub object: Object,
    pub source: Source,
}

/// Where a document starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub file: String,
    /// 1-based document number within the file.
    pub document: usize,
    /// 1-based line where the document starts.
    pub line: usize,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} (document {})",
            self.file, self.line, self.document
        )
    }
}

/// A precise load error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {}{message}", if path.is_empty() { String::new() } else { format!("{path}: ") })]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    /// Field path inside the document, e.g. `spec.ingress[0].ports[1].port`; empty if none.
    pub path: String,
    pub message: String,
    /// True when the document is well-formed but of a kind Cellwall does not read.
    pub unknown_kind: bool,
}

/// The kinds Cellwall reads, for messages.
pub const SUPPORTED_KINDS: &str = "v1 Namespace/Pod/Node, networking.k8s.io/v1 NetworkPolicy, \
policy.networking.k8s.io/v1alpha2 ClusterNetworkPolicy, \
policy.networking.k8s.io/v1alpha1 AdminNetworkPolicy/BaselineAdminNetworkPolicy (deprecated), \
cellwall.io/v1alpha1 Policy/ClusterPolicy/Host (and v1 List of these)";

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    #[serde(default)]
    api_version: Option<String>,
    #[serde(default)]
    kind: Option<String>,
}

/// Result of parsing one file: the objects and the non-fatal unknown-kind reports. Hard errors
/// stop the file (nothing from a broken file is used).
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Located>,
    pub unknown: Vec<LoadError>,
}

/// Puts parsed objects into the model: an inventory and a policy set (a later object replaces an
/// earlier one of the same name; callers that must refuse duplicates check before).
pub fn into_model(objects: impl IntoIterator<Item = Object>) -> (Inventory, Vec<Policy>) {
    let mut inv = Inventory::default();
    let mut policies: Vec<Policy> = Vec::new();
    for o in objects {
        match o {
            Object::Namespace(n) => {
                inv.namespaces.insert(n.name.clone(), n);
            }
            Object::Pod(w) => {
                inv.workloads.insert(w.key(), w.into());
            }
            Object::Node(n) => {
                inv.nodes.insert(n.name.clone(), n);
            }
            Object::Policy(p) => {
                policies.retain(|q| q.id != p.id);
                policies.push(*p);
            }
            Object::Host(h) => {
                let w = h.workload();
                inv.workloads.insert(w.key(), w.into());
            }
        }
    }
    (inv, policies)
}

/// Parses a whole file. `file` names it in errors; `.json` files are read as JSON, anything else as
/// (multi-document) YAML.
pub fn parse_file(file: &str, text: &str) -> Result<Parsed, LoadError> {
    let mut out = Parsed::default();
    if file.ends_with(".json") {
        parse_document(file, 1, 1, text, Format::Json, &mut out)?;
        return Ok(out);
    }
    for (i, (line, doc)) in split_documents(text).into_iter().enumerate() {
        parse_document(file, i + 1, line, doc, Format::Yaml, &mut out)?;
    }
    Ok(out)
}

/// Parses one JSON document whatever `name` says (an object read from a Kubernetes API server:
/// `name` says where it came from, as a file name would).
pub fn parse_json(name: &str, text: &str) -> Result<Parsed, LoadError> {
    let mut out = Parsed::default();
    parse_document(name, 1, 1, text, Format::Json, &mut out)?;
    Ok(out)
}

/// Every (apiVersion, kind) the loader reads, for readers that must fetch exactly these.
pub fn supported_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
    kinds::kinds().map(|k| (k.api_version, k.kind))
}

/// Reads every document of a file as plain values, within the loader's YAML limits (no
/// document-count cap: a `kubectl get -o yaml` dump of 1,000 pods is 1,000 documents).
/// For callers that edit manifests rather than load them (the lab binds its pods); errors
/// name the file, line and column as the loader's do.
pub fn read_values(file: &str, text: &str) -> Result<Vec<serde_json::Value>, LoadError> {
    if file.ends_with(".json") {
        let ctx = Ctx { file, base_line: 1 };
        return Ok(vec![decode(&ctx, text, Format::Json)?]);
    }
    split_documents(text)
        .into_iter()
        .map(|(line, doc)| {
            let ctx = Ctx {
                file,
                base_line: line,
            };
            decode(&ctx, doc, Format::Yaml)
        })
        .collect()
}

/// Splits YAML text at `---` document markers, returning (1-based start line, text) pairs.
/// A document's text keeps its own lines so positions can be offset back to the file.
fn split_documents(text: &str) -> Vec<(usize, &str)> {
    let mut docs = Vec::new();
    let mut start_byte = 0;
    let mut start_line = 1;
    let mut offset = 0;
    for (idx, line) in text.split_inclusive('\n').enumerate() {
        let trimmed = line.trim_end_matches(['\n', '\r']);
        let is_marker =
            trimmed == "---" || trimmed.starts_with("--- ") || trimmed.starts_with("---\t");
        let is_end = trimmed == "..." || trimmed.starts_with("... ");
        if is_marker || is_end {
            docs.push((start_line, &text[start_byte..offset]));
            if is_marker && trimmed.len() > 3 {
                // `--- {inline}`: the document starts on this line after the marker.
                start_byte = offset + 4;
                start_line = idx + 1;
            } else {
                start_byte = offset + line.len();
                start_line = idx + 2;
            }
        }
        offset += line.len();
    }
    docs.push((start_line, &text[start_byte.min(text.len())..]));
    docs.retain(|(_, d)| {
        d.lines().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#') && t != "%YAML 1.2" && !t.starts_with("%")
        })
    });
    docs
}

/// One document: its text and the value parsed from it. Families read their manifest type from
/// the value (no second parse); when the value does not fit, the text is read again into the
/// type, which locates the error (line, column, field path) or, where YAML reads a scalar as a
/// string that the plain value holds as a number, null or boolean, gives the manifest.
pub(crate) struct Document<'a> {
    ctx: &'a Ctx<'a>,
    value: &'a serde_json::Value,
    text: &'a str,
    format: Format,
}

impl Document<'_> {
    fn read<M: DeserializeOwned>(&self) -> Result<M, LoadError> {
        match M::deserialize(self.value) {
            Ok(m) => Ok(m),
            Err(_) => decode(self.ctx, self.text, self.format),
        }
    }

    /// Reads the manifest, then converts it; a conversion error names its field path.
    pub(crate) fn convert<M: DeserializeOwned>(
        &self,
        f: impl FnOnce(M) -> Result<Object, ConvertError>,
    ) -> Result<Object, LoadError> {
        let m = self.read()?;
        let o = f(m).map_err(|e| self.ctx.err(None, None, e.path, e.message))?;
        o.check_unqualified()
            .map_err(|(path, message)| self.ctx.err(None, None, path.to_string(), message))?;
        Ok(o)
    }
}

fn parse_document(
    file: &str,
    document: usize,
    base_line: usize,
    text: &str,
    format: Format,
    out: &mut Parsed,
) -> Result<(), LoadError> {
    let ctx = Ctx { file, base_line };
    // The text is parsed once, into a plain value; header and manifest are read from it, and the
    // text again only to locate an error (see `Document`).
    let value: serde_json::Value = decode(&ctx, text, format)?;
    let source = Source {
        file: file.to_string(),
        document,
        line: base_line,
    };
    let doc = Document {
        ctx: &ctx,
        value: &value,
        text,
        format,
    };
    read_object(&doc, &source, out)
}

/// The apiVersion and kind of an object.
fn header(doc: &Document) -> Result<(String, String), LoadError> {
    let header: Header = doc.read()?;
    let missing = |field: &str| {
        doc.ctx.err(
            None,
            None,
            field.into(),
            "missing: every object needs apiVersion and kind".into(),
        )
    };
    match (header.api_version, header.kind) {
        (Some(a), Some(k)) => Ok((a, k)),
        (None, _) => Err(missing("apiVersion")),
        (_, None) => Err(missing("kind")),
    }
}

/// One document's value: nothing (null), a List, or an object of a kind some family reads.
fn read_object(doc: &Document, source: &Source, out: &mut Parsed) -> Result<(), LoadError> {
    let ctx = doc.ctx;
    if doc.value.is_null() {
        return Ok(());
    }
    if !doc.value.is_object() {
        return Err(ctx.err(
            None,
            None,
            String::new(),
            "expected a Kubernetes-style object (a mapping with apiVersion and kind)".into(),
        ));
    }
    let (api, kind) = header(doc)?;
    if kind == "List" && api == "v1" {
        return parse_list(doc, source, out);
    }
    let object = match kinds::kinds().find(|k| k.api_version == api && k.kind == kind) {
        Some(k) => (k.read)(doc)?,
        None if kinds::kinds().any(|k| k.kind == kind) => {
            return Err(ctx.err(
                None,
                None,
                "apiVersion".into(),
                format!(
                "unsupported apiVersion {api:?} for kind {kind}: cellwall reads {SUPPORTED_KINDS}"
            ),
            ))
        }
        None => {
            let mut e = ctx.err(
                None,
                None,
                "kind".into(),
                format!("unknown kind {kind} (apiVersion {api}): cellwall reads {SUPPORTED_KINDS}"),
            );
            e.unknown_kind = true;
            out.unknown.push(e);
            return Ok(());
        }
    };
    out.objects.push(Located {
        object,
        source: source.clone(),
    });
    Ok(())
}

/// A `v1 List`: items are read one by one (their text, for locating an error, is the item
/// re-encoded, read as YAML whatever the file: JSON text is YAML); errors name `items[i]` and
/// the List's own position.
fn parse_list(doc: &Document, source: &Source, out: &mut Parsed) -> Result<(), LoadError> {
    let ctx = doc.ctx;
    let items = match doc.value.get("items") {
        Some(serde_json::Value::Array(s)) => s.as_slice(),
        None | Some(serde_json::Value::Null) => &[],
        Some(_) => {
            return Err(ctx.err(
                None,
                None,
                "items".into(),
                "expected a list of objects".into(),
            ))
        }
    };
    for (i, item) in items.iter().enumerate() {
        let text = item.to_string();
        let item_doc = Document {
            ctx,
            value: item,
            text: &text,
            format: Format::Yaml,
        };
        let mut sub = Parsed::default();
        read_object(&item_doc, source, &mut sub).map_err(|mut e| {
            e.line = ctx.base_line;
            e.column = 1;
            e.path = if e.path.is_empty() {
                format!("items[{i}]")
            } else {
                format!("items[{i}].{}", e.path)
            };
            e
        })?;
        out.objects.extend(sub.objects);
        out.unknown.extend(sub.unknown);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;

    #[test]
    fn splits_documents_with_lines() {
        let t = "a: 1\n---\nb: 2\n\n---\n# only a comment\n---\nc: 3\n";
        let d = split_documents(t);
        assert_eq!(d.len(), 3);
        assert_eq!(d[0].0, 1);
        assert_eq!(d[1].0, 3);
        assert_eq!(d[2].0, 8);
    }

    #[test]
    fn parses_all_kinds() {
        let t = r#"
apiVersion: v1
kind: Namespace
metadata: {name: x, labels: {team: a}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {pod: a}}
spec:
  containers:
  - ports: [{containerPort: 80, name: http}, {containerPort: 53, protocol: UDP}]
status: {podIP: 10.0.0.5}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: np, namespace: x}
spec:
  podSelector: {}
  ingress:
  - from: [{podSelector: {matchLabels: {pod: b}}}]
    ports: [{port: http}, {port: 1000, endPort: 2000, protocol: UDP}]
"#;
        let p = parse_file("t.yaml", t).unwrap();
        assert_eq!(p.objects.len(), 3);
        let Object::Pod(w) = &p.objects[1].object else {
            panic!()
        };
        assert_eq!(w.ports[1].protocol, Protocol::Udp);
        assert_eq!(w.ips, vec!["10.0.0.5".parse::<std::net::IpAddr>().unwrap()]);
        let Object::Policy(np) = &p.objects[2].object else {
            panic!()
        };
        assert_eq!(np.isolates, [true, false]);
        assert_eq!(
            np.rules[0].ports[1],
            PortSpec::Range {
                protocol: Protocol::Udp,
                lo: 1000,
                hi: 2000
            }
        );
        assert_eq!(p.objects[2].source.line, 14);
    }

    #[test]
    fn errors_name_line_column_and_path() {
        let t = "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 70000\n";
        let e = parse_file("f.yaml", t).unwrap_err();
        assert_eq!(e.line, 12, "{e}");
        assert_eq!(e.path, "spec.ingress[0].ports[0].port", "{e}");
        assert!(e.message.contains("1-65535"), "{e}");
        assert!(e.to_string().starts_with("f.yaml:12:"), "{e}");
    }

    #[test]
    fn unknown_fields_in_policies_are_errors() {
        let t = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np}\nspec:\n  podSelector: {}\n  ingres: []\n";
        let e = parse_file("f.yaml", t).unwrap_err();
        assert!(e.message.contains("unknown field `ingres`"), "{e}");
        assert_eq!(e.line, 6, "{e}");
    }

    #[test]
    fn unknown_kinds_are_reported() {
        let t = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n";
        let p = parse_file("f.yaml", t).unwrap();
        assert!(p.objects.is_empty());
        assert_eq!(p.unknown.len(), 1);
        assert!(p.unknown[0].message.contains("unknown kind Deployment"));
        let t = "apiVersion: networking.k8s.io/v1beta1\nkind: NetworkPolicy\nmetadata: {name: d}\n";
        assert!(parse_file("f.yaml", t)
            .unwrap_err()
            .message
            .contains("unsupported apiVersion"));
    }

    #[test]
    fn json_and_lists() {
        let t = r#"{"apiVersion":"v1","kind":"List","items":[{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"a"}},
{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1","labels":{"kubernetes.io/os":"linux"}},"status":{"addresses":[{"type":"InternalIP","address":"192.0.2.1"}]}}]}"#;
        let p = parse_file("f.json", t).unwrap();
        assert_eq!(p.objects.len(), 2);
        let e = parse_file(
            "g.json",
            "{\"apiVersion\": \"v1\", \"kind\": \"Pod\", \"metadata\": {\"name\": 5}}",
        )
        .unwrap_err();
        assert_eq!(e.path, "metadata.name", "{e}");
        assert_eq!(e.line, 1);
    }

    #[test]
    fn semantic_errors() {
        let bad = [
            ("spec:\n  podSelector: {matchExpressions: [{key: a, operator: In}]}\n", "needs at least one value"),
            ("spec:\n  podSelector: {matchExpressions: [{key: a, operator: Is}]}\n", "unknown operator"),
            ("spec:\n  podSelector: {}\n  ingress: [{from: [{ipBlock: {cidr: 10.0.0.0/8, except: [11.0.0.0/16]}}]}]\n", "strict subnet"),
            ("spec:\n  podSelector: {}\n  ingress: [{from: [{}]}]\n", "a peer needs"),
            ("spec:\n  podSelector: {}\n  ingress: [{ports: [{port: 90, endPort: 80}]}]\n", "greater than or equal"),
            ("spec:\n  podSelector: {}\n  ingress: [{ports: [{protocol: ICMP}]}]\n", "unknown protocol"),
        ];
        for (spec, want) in bad {
            let t = format!("apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: np}}\n{spec}");
            let e = parse_file("f.yaml", &t).unwrap_err();
            assert!(e.to_string().contains(want), "{want}: got {e}");
        }
    }

    #[test]
    fn hosts_are_declared_with_node_labels_and_addresses() {
        let y = "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {name: db-vm, namespace: hosts, labels: {role: db}}\nspec: {node: db-vm, addresses: [192.0.2.10, 10.1.0.0/24]}\n";
        let p = parse_file("h.yaml", y).unwrap();
        let Object::Host(h) = &p.objects[0].object else {
            panic!("{:?}", p.objects)
        };
        assert_eq!((h.namespace.as_str(), h.node.as_str()), ("hosts", "db-vm"));
        assert_eq!(h.labels["role"], "db");
        assert_eq!(h.addresses.len(), 2);
        assert_eq!(
            h.workload().ips,
            ["192.0.2.10".parse::<std::net::IpAddr>().unwrap()]
        );
        for (bad, path) in [
            ("spec: {node: BAD, addresses: [192.0.2.1]}", "spec.node"),
            ("spec: {node: n, addresses: [nope]}", "spec.addresses[0]"),
            ("spec: {node: n}", "spec.addresses"),
            (
                "spec: {node: n, addresses: [192.0.2.1], labels: {a: b}}",
                "spec",
            ),
        ] {
            let y = format!(
                "apiVersion: cellwall.io/v1alpha1\nkind: Host\nmetadata: {{name: h}}\n{bad}\n"
            );
            let e = parse_file("h.yaml", &y).unwrap_err().to_string();
            assert!(e.contains(path), "{bad}: {e}");
        }
    }
}

//! What the lab sends its manager: the user's manifests with every Pod bound to its lab node
//! and given its lab address (`spec.nodeName`, `status.podIP`), as the Kubernetes API would
//! hold them once scheduled. The manager accepts an agent's report only for pods bound to that
//! agent's node, so pods must arrive bound; documents other than Pods travel as they were.

use cellwall_api::Document;
use cellwall_manifests::File;
use cellwall_policy::{Workload, WorkloadKey};
use serde_json::{json, Value};
use std::collections::HashMap;

/// Binds the Pods of `files` (also inside `v1 List`s) as `workloads` say; files without Pods
/// are sent unchanged (their text, so the manager's errors cite their lines).
pub fn bind(files: Vec<File>, workloads: &[Workload]) -> Vec<Document> {
    let by_key: HashMap<WorkloadKey, &Workload> = workloads.iter().map(|w| (w.key(), w)).collect();
    files
        .into_iter()
        .map(|f| {
            let text = rewrite(&f.name, &f.text, &by_key).unwrap_or(f.text);
            Document { file: f.name, text }
        })
        .collect()
}

/// The file's documents as JSON with Pods bound, or `None` when nothing changed (or the text
/// does not read: then the manager reports it, with its lines). Read as the manager's loader
/// reads, so any file the manager accepts is bound (a reader with a document cap once left a
/// 1,110-document file unbound and every pod's report refused).
fn rewrite(file: &str, text: &str, by_key: &HashMap<WorkloadKey, &Workload>) -> Option<String> {
    let mut docs = cellwall_policy::load::read_values(file, text).ok()?;
    let mut changed = false;
    for d in docs.iter_mut() {
        changed |= bind_value(d, by_key);
    }
    changed.then(|| {
        docs.iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join("\n---\n")
    })
}

/// Binds `v` if it is a Pod, or the Pods of a `List`; true if it changed anything.
fn bind_value(v: &mut Value, by_key: &HashMap<WorkloadKey, &Workload>) -> bool {
    match v["kind"].as_str() {
        Some("List") => v["items"]
            .as_array_mut()
            .map(|items| {
                items
                    .iter_mut()
                    .fold(false, |c, i| bind_value(i, by_key) | c)
            })
            .unwrap_or(false),
        Some("Pod") => {
            let ns = v["metadata"]["namespace"].as_str().unwrap_or("default");
            let Some(name) = v["metadata"]["name"].as_str() else {
                return false;
            };
            let Some(w) = by_key.get(&WorkloadKey::new(ns, name)) else {
                return false;
            };
            bind_pod(v, w)
        }
        _ => false,
    }
}

fn bind_pod(v: &mut Value, w: &Workload) -> bool {
    let mut changed = false;
    if let (Some(node), true) = (&w.node, v["spec"]["nodeName"].is_null()) {
        if !v["spec"].is_object() {
            v["spec"] = json!({});
        }
        v["spec"]["nodeName"] = json!(node);
        changed = true;
    }
    if !w.host_network && !w.ips.is_empty() && v["status"]["podIP"].is_null() {
        if !v["status"].is_object() {
            v["status"] = json!({});
        }
        v["status"]["podIP"] = json!(w.ips[0].to_string());
        v["status"]["podIPs"] = Value::Array(
            w.ips
                .iter()
                .map(|ip| json!({"ip": ip.to_string()}))
                .collect(),
        );
        changed = true;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, node: &str, ip: &str) -> Workload {
        Workload {
            namespace: "t".into(),
            name: name.into(),
            labels: Default::default(),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            node: Some(node.into()),
            host_network: false,
            owner: None,
        }
    }

    fn file(text: &str) -> File {
        File {
            name: "m.yaml".into(),
            text: text.into(),
        }
    }

    #[test]
    fn pods_are_bound_and_addressed_and_the_rest_left_alone() {
        let pods = [w("a", "lab", "10.0.0.1"), w("b", "n2", "10.0.0.2")];
        let text = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: t}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: t}\nspec: {nodeName: n2}\nstatus: {podIP: 10.0.0.2}\n";
        let d = bind(vec![file(text)], &pods);
        let docs = cellwall_policy::load::read_values("m.yaml", &d[0].text).unwrap();
        assert_eq!(docs[0]["spec"]["nodeName"], "lab");
        assert_eq!(docs[0]["status"]["podIP"], "10.0.0.1");
        assert_eq!(docs[1]["spec"]["nodeName"], "n2");
        // The manager reads it back as the same pods, now bound.
        let parsed = cellwall_policy::load::parse_file("m.yaml", &d[0].text).unwrap();
        assert_eq!(parsed.objects.len(), 2);
        let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: p, namespace: t}\nspec: {podSelector: {}}\n";
        assert_eq!(bind(vec![file(policy)], &pods)[0].text, policy);
    }

    #[test]
    fn pods_in_lists_are_bound() {
        let pods = [w("a", "lab", "10.0.0.1")];
        let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata: {name: a, namespace: t}\n";
        let d = bind(vec![file(text)], &pods);
        assert!(d[0].text.contains("\"nodeName\":\"lab\""), "{}", d[0].text);
    }

    #[test]
    fn a_file_of_more_than_a_thousand_pods_is_bound_whole() {
        // 1,500 documents: past serde-saphyr's default document cap, which the manager's
        // loader does not have (the footprint bench's 1,000-pod file once arrived unbound).
        let pods: Vec<Workload> = (0..1500)
            .map(|i| {
                w(
                    &format!("p{i}"),
                    "lab",
                    &format!("10.1.{}.{}", i / 200, i % 200 + 1),
                )
            })
            .collect();
        let text: Vec<String> = (0..1500)
            .map(|i| format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: t}}\n"))
            .collect();
        let d = bind(vec![file(&text.join("---\n"))], &pods);
        let parsed = cellwall_policy::load::parse_file("m.yaml", &d[0].text).unwrap();
        let bound = parsed
            .objects
            .iter()
            .filter(|o| matches!(&o.object, cellwall_policy::Object::Pod(w) if w.node.as_deref() == Some("lab")))
            .count();
        assert_eq!(bound, 1500);
    }
}

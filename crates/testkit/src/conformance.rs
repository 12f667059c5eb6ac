//! The conformance harness shared by the analyze tier and the lab (root) tier: reads the cases
//! in ../shared/conformance, builds the model's manifests, applies each step's actions, runs the
//! probes through a [`Runner`] and compares every expected cell.

use crate::bin::Bin;
use serde_yaml::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub fn conformance_dir() -> Option<PathBuf> {
    if let Ok(d) = std::env::var("CELLWALL_CONFORMANCE_DIR") {
        return Some(PathBuf::from(d));
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance");
    root.join("cases").is_dir().then_some(root)
}

/// Address plan: every pod IP inside 10.0.0.0/4's containing /4 (0.0.0.0/4), as the npapi
/// suite assumes; nodes get their own addresses.
const NODES: [(&str, &str); 2] = [("node-1", "10.245.0.1"), ("node-2", "10.245.0.2")];

fn host_port(i: usize) -> u16 {
    30000 + i as u16
}

#[derive(Clone)]
pub struct Pod {
    ns: String,
    name: String,
    labels: BTreeMap<String, String>,
    ports: Vec<(u16, String, Option<String>)>,
    host_network: bool,
    ip: String,
    node: String,
}

pub struct World {
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    pub pods: Vec<Pod>,
    /// Policies keyed by (kind, namespace, name), as YAML values.
    pub policies: BTreeMap<(String, String, String), Value>,
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn labels_of(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .map(|m| m.iter().map(|(k, v)| (s(k), s(v))).collect())
        .unwrap_or_default()
}

impl World {
    pub fn substitute(&self, text: &str) -> String {
        let mut t = text.to_string();
        for (i, _) in (0..8).enumerate() {
            t = t.replace(&format!("${{HOST_PORT[{i}]}}"), &host_port(i).to_string());
        }
        for p in &self.pods {
            let id = format!("{}/{}", p.ns, p.name);
            t = t.replace(&format!("${{IP:{id}}}"), &p.ip);
            let first: u8 = p.ip.split('.').next().unwrap().parse().unwrap();
            t = t.replace(
                &format!("${{CIDR4:{id}}}"),
                &format!("{}.0.0.0/4", first & 0xf0),
            );
        }
        assert!(!t.contains("${"), "unsubstituted placeholder in: {t}");
        t
    }

    fn key_of(obj: &Value) -> (String, String, String) {
        let kind = s(&obj["kind"]);
        let ns = if kind == "NetworkPolicy" {
            s(&obj["metadata"]["namespace"])
        } else {
            String::new()
        };
        (kind, ns, s(&obj["metadata"]["name"]))
    }

    pub fn manifests(&self) -> String {
        let mut docs: Vec<String> = Vec::new();
        for (ns, labels) in &self.namespaces {
            let mut l = labels.clone();
            l.remove("kubernetes.io/metadata.name");
            docs.push(
                serde_yaml::to_string(&serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns, "labels": l}
                }))
                .unwrap(),
            );
        }
        for (name, ip) in NODES {
            docs.push(serde_yaml::to_string(&serde_json::json!({
                "apiVersion": "v1", "kind": "Node",
                "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/hostname": name}},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}
            })).unwrap());
        }
        for p in &self.pods {
            let ports: Vec<serde_json::Value> = p
                .ports
                .iter()
                .map(|(port, proto, name)| {
                    let mut m = serde_json::json!({"containerPort": port, "protocol": proto});
                    if let Some(n) = name {
                        m["name"] = serde_json::json!(n);
                    }
                    m
                })
                .collect();
            docs.push(serde_yaml::to_string(&serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": p.name, "namespace": p.ns, "labels": p.labels},
                "spec": {"nodeName": p.node, "hostNetwork": p.host_network, "containers": [{"name": "c", "ports": ports}]},
                "status": {"podIP": p.ip}
            })).unwrap());
        }
        for obj in self.policies.values() {
            docs.push(serde_yaml::to_string(obj).unwrap());
        }
        self.substitute(&docs.join("---\n"))
    }
}

fn load_k8s_model(case: &Value) -> World {
    let m = &case["model"];
    let mut namespaces = BTreeMap::new();
    for n in m["namespaces"].as_sequence().unwrap() {
        namespaces.insert(s(&n["name"]), labels_of(&n["labels"]));
    }
    let mut pods = Vec::new();
    for (i, p) in m["pods"].as_sequence().unwrap().iter().enumerate() {
        let ports = p["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["containerPort"].as_u64().unwrap() as u16,
                    s(&c["protocol"]),
                    c["portName"].as_str().map(String::from),
                )
            })
            .collect();
        pods.push(Pod {
            ns: s(&p["namespace"]),
            name: s(&p["name"]),
            labels: labels_of(&p["labels"]),
            ports,
            host_network: false,
            ip: format!("10.244.0.{}", i + 10),
            node: NODES[i % 2].0.to_string(),
        });
    }
    World {
        namespaces,
        pods,
        policies: BTreeMap::new(),
    }
}

fn load_npapi_model(dir: &Path) -> World {
    let text = std::fs::read_to_string(dir.join("cases/_npapi-conformance-model.yaml")).unwrap();
    let m: Value = serde_yaml::from_str(&text).unwrap();
    let mut namespaces = BTreeMap::new();
    for n in m["namespaces"].as_sequence().unwrap() {
        namespaces.insert(s(&n["name"]), labels_of(&n["labels"]));
    }
    let mut pods = Vec::new();
    let mut hostnet = 0;
    for (i, p) in m["pods"].as_sequence().unwrap().iter().enumerate() {
        let host_network = p["hostNetwork"].as_bool().unwrap_or(false);
        let ports = p["listeners"]
            .as_sequence()
            .unwrap()
            .iter()
            .map(|c| {
                let port = match &c["containerPort"] {
                    Value::Number(n) => n.as_u64().unwrap() as u16,
                    other => {
                        let t = s(other);
                        let i: usize = t
                            .trim_start_matches("${HOST_PORT[")
                            .trim_end_matches("]}")
                            .parse()
                            .unwrap();
                        host_port(i)
                    }
                };
                let name = c["portName"].as_str().map(|n| {
                    let mut n = n.to_string();
                    for i in 0..8 {
                        n = n.replace(&format!("${{HOST_PORT[{i}]}}"), &host_port(i).to_string());
                    }
                    n
                });
                (port, s(&c["protocol"]), name)
            })
            .collect();
        let (ip, node) = if host_network {
            let n = NODES[hostnet % 2];
            hostnet += 1;
            (n.1.to_string(), n.0.to_string())
        } else {
            (format!("10.244.1.{}", i + 10), NODES[i % 2].0.to_string())
        };
        pods.push(Pod {
            ns: s(&p["namespace"]),
            name: s(&p["name"]),
            labels: labels_of(&p["labels"]),
            ports,
            host_network,
            ip,
            node,
        });
    }
    World {
        namespaces,
        pods,
        policies: BTreeMap::new(),
    }
}

pub type Matrices = BTreeMap<(String, u16), BTreeMap<String, BTreeMap<String, bool>>>;

/// Something that turns the world of one step into measured or computed truth tables.
pub trait Runner {
    /// Called once per case before its first step.
    fn start_case(&mut self, _world: &World, _tmp: &Path) {}
    fn step(&mut self, world: &World, probes: &[(String, u16)], tmp: &Path) -> Matrices;
    /// Called after a case.
    fn end_case(&mut self) {}
    /// Whether this runner can probe that protocol (the lab cannot probe SCTP here).
    fn supports(&self, _proto: &str) -> bool {
        true
    }
}

/// Computes the tables with `cellwall analyze -o json` (the binary given).
pub struct AnalyzeRunner(pub Bin);

impl Runner for AnalyzeRunner {
    fn step(&mut self, world: &World, probes: &[(String, u16)], tmp: &Path) -> Matrices {
        let file = tmp.join("manifests.yaml");
        std::fs::write(&file, world.manifests()).unwrap();
        let mut cmd = self.0.command();
        cmd.arg("analyze")
            .arg("-f")
            .arg(&file)
            .arg("-o")
            .arg("json");
        for (p, port) in probes {
            cmd.arg("--probe").arg(format!("{p}/{port}"));
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "analyze failed: {}\nmanifests:\n{}",
            String::from_utf8_lossy(&out.stderr),
            world.manifests()
        );
        parse_matrices(&out.stdout)
    }
}

pub fn parse_matrices(stdout: &[u8]) -> Matrices {
    let v: serde_json::Value = serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(stdout)));
    let mut res = BTreeMap::new();
    for p in v["probes"].as_array().unwrap() {
        let m: BTreeMap<String, BTreeMap<String, bool>> =
            serde_json::from_value(p["matrix"].clone()).unwrap();
        res.insert(
            (
                p["protocol"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap() as u16,
            ),
            m,
        );
    }
    res
}

fn apply_k8s_action(world: &mut World, a: &Value) {
    match a["op"].as_str().unwrap() {
        "create" | "update" => {
            let obj = a["object"].clone();
            world.policies.insert(World::key_of(&obj), obj);
        }
        "delete_all_networkpolicies" => {
            let nss: Vec<String> = a["namespaces"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(s)
                .collect();
            world
                .policies
                .retain(|(k, ns, _), _| !(k == "NetworkPolicy" && nss.contains(ns)));
        }
        "add_pod_labels" => {
            let id = s(&a["pod"]);
            let p = world
                .pods
                .iter_mut()
                .find(|p| format!("{}/{}", p.ns, p.name) == id)
                .unwrap();
            p.labels.extend(labels_of(&a["labels"]));
        }
        "add_namespace_labels" => {
            world
                .namespaces
                .get_mut(&s(&a["namespace"]))
                .unwrap()
                .extend(labels_of(&a["labels"]));
        }
        "patch" => {
            let obj = a["resulting_object"].clone();
            world.policies.insert(World::key_of(&obj), obj);
        }
        "delete" => {
            let t = &a["target"];
            let key = (
                s(&t["kind"]),
                if s(&t["kind"]) == "NetworkPolicy" {
                    s(&t["namespace"])
                } else {
                    String::new()
                },
                s(&t["name"]),
            );
            assert!(
                world.policies.remove(&key).is_some(),
                "delete of unknown object {key:?}"
            );
        }
        op => panic!("unknown op {op}"),
    }
}

pub struct Outcome {
    pub cells: usize,
    pub skipped: usize,
    pub failures: Vec<String>,
}

pub fn run_case(dir: &Path, path: &Path, tmp: &Path, runner: &mut dyn Runner) -> Outcome {
    let case: Value = serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let id = s(&case["id"]);
    let npapi = case.get("initial_objects").is_some();
    let mut world = if npapi {
        load_npapi_model(dir)
    } else {
        load_k8s_model(&case)
    };
    if npapi {
        for o in case["initial_objects"].as_sequence().unwrap() {
            world.policies.insert(World::key_of(o), o.clone());
        }
    }
    let mut out = Outcome {
        cells: 0,
        skipped: 0,
        failures: Vec::new(),
    };
    runner.start_case(&world, tmp);
    for (si, step) in case["steps"].as_sequence().unwrap().iter().enumerate() {
        for a in step["actions"]
            .as_sequence()
            .map(|v| v.as_slice())
            .unwrap_or(&[])
        {
            apply_k8s_action(&mut world, a);
        }
        let all_probes = step["probes"].as_sequence().unwrap();
        let probes: Vec<&Value> = all_probes
            .iter()
            .filter(|p| runner.supports(&s(&p["protocol"])))
            .collect();
        out.skipped += all_probes.len() - probes.len();
        let mut wanted: Vec<(String, u16)> = Vec::new();
        let parse_port = |v: &Value| -> u16 { world.substitute(&s(v)).parse().unwrap() };
        for p in &probes {
            let k = (s(&p["protocol"]), parse_port(&p["port"]));
            if !wanted.contains(&k) {
                wanted.push(k);
            }
        }
        if wanted.is_empty() {
            continue;
        }
        let got = runner.step(&world, &wanted, tmp);
        for p in probes {
            let k = (s(&p["protocol"]), parse_port(&p["port"]));
            let m = &got[&k];
            if npapi {
                let (from, to) = (s(&p["from"]), s(&p["to"]));
                let want = p["expected"].as_bool().unwrap();
                out.cells += 1;
                if m[&from][&to] != want {
                    out.failures.push(format!(
                        "{id} step {si} {}/{} {from} -> {to}: expected {want}",
                        k.0, k.1
                    ));
                }
            } else {
                let ignore_loopback = p["ignore_loopback"].as_bool().unwrap_or(false);
                for (from, row) in p["expected"].as_mapping().unwrap() {
                    for (to, want) in row.as_mapping().unwrap() {
                        let (from, to, want) = (s(from), s(to), want.as_bool().unwrap());
                        if ignore_loopback && from == to {
                            continue;
                        }
                        out.cells += 1;
                        if m[&from][&to] != want {
                            out.failures.push(format!(
                                "{id} step {si} {}/{} {from} -> {to}: expected {want}",
                                k.0, k.1
                            ));
                        }
                    }
                }
            }
        }
    }
    runner.end_case();
    out
}

/// Runs every case with a runner; returns (cases, cells, skipped probes, failures).
pub fn run_all(runner: &mut dyn Runner, tag: &str) -> Option<(usize, usize, usize, Vec<String>)> {
    let Some(dir) = conformance_dir() else {
        eprintln!("SKIPPED: conformance cases not found (../shared/conformance next to the repo, or set CELLWALL_CONFORMANCE_DIR)");
        return None;
    };
    let tmp =
        std::env::temp_dir().join(format!("cellwall-conformance-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let only = std::env::var("CELLWALL_CONFORMANCE_ONLY").ok();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("cases"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.file_name().unwrap().to_str().unwrap().starts_with('_')
        })
        .filter(|p| {
            only.as_ref()
                .is_none_or(|o| p.to_string_lossy().contains(o.as_str()))
        })
        .collect();
    files.sort();
    let (mut cells, mut skipped, mut failures) = (0, 0, Vec::new());
    for f in &files {
        let t = std::time::Instant::now();
        let o = run_case(&dir, f, &tmp, runner);
        eprintln!(
            "{}: {} cells, {} failed, {} probes skipped ({:.1}s)",
            f.file_name().unwrap().to_string_lossy(),
            o.cells,
            o.failures.len(),
            o.skipped,
            t.elapsed().as_secs_f64()
        );
        cells += o.cells;
        skipped += o.skipped;
        failures.extend(o.failures);
    }
    let _ = std::fs::remove_dir_all(&tmp);
    Some((files.len(), cells, skipped, failures))
}

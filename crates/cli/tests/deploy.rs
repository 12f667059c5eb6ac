//! deploy/ and the code cannot drift apart: every flag the manifests pass exists in the binary
//! that gets it, the manager's ClusterRole grants exactly the reads the Kubernetes source makes
//! (and the Events and policy statuses it writes), and the agent finds its node and its pods as a DaemonSet must.
//! (The manifests' schemas are checked by scripts/validate-deploy.py.)

use cellwall_testkit::kube::yaml_documents;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(file: &str) -> Vec<Value> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(file);
    yaml_documents(&std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
}

fn containers(docs: &[Value]) -> Vec<Value> {
    docs.iter()
        .filter_map(|d| d["spec"]["template"]["spec"]["containers"].as_array())
        .flatten()
        .cloned()
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn every_flag_the_manifests_pass_exists() {
    let mut checked = 0;
    for file in ["manager.yaml", "agent.yaml"] {
        for c in containers(&deploy(file)) {
            let cmd = strings(&c["command"]);
            // Built beside `cellwall` (the unit tier builds every binary first).
            let bin = cellwall_testkit::bin!("cellwall").sibling(&cmd[0]);
            let help = bin.stdout(&["--help"]);
            for arg in strings(&c["args"]) {
                let flag = arg.split('=').next().unwrap();
                assert!(
                    help.contains(&format!("{flag} ")) || help.contains(&format!("{flag}\n")),
                    "deploy/{file}: {} has no {flag}",
                    cmd[0]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 10, "{checked} flags");
}

#[test]
fn the_managers_cluster_role_grants_what_the_kubernetes_source_reads_and_no_more() {
    let docs = deploy("manager.yaml");
    let role = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole")
        .expect("a ClusterRole");
    let mut granted = BTreeSet::new();
    for rule in role["rules"].as_array().unwrap() {
        for g in strings(&rule["apiGroups"]) {
            for r in strings(&rule["resources"]) {
                for v in strings(&rule["verbs"]) {
                    granted.insert((g.clone(), r.clone(), v));
                }
            }
        }
    }
    let mut wanted = BTreeSet::new();
    for r in cellwall_kube::RESOURCES {
        for v in ["get", "list", "watch"] {
            wanted.insert((r.group.to_string(), r.plural.to_string(), v.to_string()));
        }
    }
    wanted.insert((String::new(), "events".into(), "create".into()));
    // Agents' joins (crates/manager/src/join_review.rs).
    wanted.insert((
        "authentication.k8s.io".into(),
        "tokenreviews".into(),
        "create".into(),
    ));
    // Status back to the policies (crates/manager/src/cluster_status.rs): the status
    // subresource only, so the manager cannot change what a policy says.
    for r in cellwall_kube::RESOURCES
        .iter()
        .filter(|r| cellwall_kube::crd::has_status(r))
    {
        let sub = format!("{}/status", r.plural);
        wanted.insert((r.group.to_string(), sub, "patch".into()));
    }
    assert_eq!(granted, wanted, "deploy/manager.yaml's ClusterRole");
}

#[test]
fn the_agent_daemonset_finds_its_node_and_pods_itself_with_the_capabilities_it_uses() {
    let docs = deploy("agent.yaml");
    let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    let c = &containers(&docs)[0];
    let node = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NODE_NAME")
        .expect("NODE_NAME");
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let args = strings(&c["args"]);
    assert!(args.contains(&"--find-interfaces".to_string()));
    assert!(
        !args.iter().any(|a| a.starts_with("--node")),
        "--node comes from NODE_NAME"
    );
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
    assert_eq!(
        strings(&caps["add"]),
        ["BPF", "PERFMON", "NET_ADMIN", "NET_RAW"]
    );
    assert_ne!(c["securityContext"]["privileged"], true);
}

/// The agent joins with a projected token the manager can review: the manager's
/// `--join-service-account` is the DaemonSet's ServiceAccount, its `--join-audience` the
/// token's audience, and the agent's token file is that projected token (no shared Secret).
#[test]
fn the_agent_joins_with_the_projected_token_the_manager_reviews() {
    let agent = deploy("agent.yaml");
    let manager = deploy("manager.yaml");
    let flag = |args: &[String], name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{name}=")).map(str::to_string))
            .unwrap_or_else(|| panic!("--{name} is passed"))
    };
    let margs = strings(&containers(&manager)[0]["args"]);
    let aargs = strings(&containers(&agent)[0]["args"]);
    let ds = agent.iter().find(|d| d["kind"] == "DaemonSet").unwrap();
    let spec = &ds["spec"]["template"]["spec"];
    let sa = format!(
        "{}/{}",
        "cellwall-system",
        spec["serviceAccountName"].as_str().unwrap()
    );
    assert_eq!(flag(&margs, "join-service-account"), sa);
    let token_file = flag(&aargs, "bootstrap-token-file");
    let mount = containers(&agent)[0]["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| token_file.starts_with(m["mountPath"].as_str().unwrap()))
        .expect("the token file is on a mounted volume")
        .clone();
    let volume = spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    let projected = &volume["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(projected["audience"], flag(&margs, "join-audience"));
    assert!(token_file.ends_with(projected["path"].as_str().unwrap()));
    assert_ne!(
        projected["audience"], "https://kubernetes.default.svc",
        "never the API server's audience"
    );
    assert_eq!(spec["automountServiceAccountToken"], false);
}

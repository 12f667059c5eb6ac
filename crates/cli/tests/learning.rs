//! Root tier: least privilege on labelling conventions nobody here chose (examples/learning): a
//! shop whose pods share one coarse `app` label and differ by `name`, a store labelled the
//! app.kubernetes.io way with a StatefulSet, VMs known only by CMDB labels, and the cluster DNS.
//! Real traffic along the call graph → `propose` (group-by auto) → `apply` → every pair probed
//! over real sockets: 100% of observed edges connect, 100% of unobserved (workload, served port)
//! pairs are blocked.

use cellwall_policy::Protocol;
use cellwall_testkit::lab::{netns, unique_name};
use serde_json::Value;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// (client service, server service, port, protocol); a service is `NS/NAME`.
type Call = (String, String, u16, Protocol);

fn calls() -> Vec<Call> {
    std::fs::read_to_string(repo().join("examples/learning/calls.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let proto = match f.get(3) {
                Some(&"UDP") => Protocol::Udp,
                _ => Protocol::Tcp,
            };
            (f[0].into(), f[1].into(), f[2].parse().unwrap(), proto)
        })
        .collect()
}

struct Pod {
    key: String,
    netns: String,
    ip: IpAddr,
    ports: Vec<(u16, Protocol)>,
}

/// The service a pod belongs to: `NS/NAME` when the pod is named NAME or NAME-...
fn service_of<'c>(pod: &str, services: &'c BTreeSet<String>) -> Option<&'c str> {
    services
        .iter()
        .filter(|s| pod == s.as_str() || pod.starts_with(&format!("{s}-")))
        .max_by_key(|s| s.len())
        .map(String::as_str)
}

/// One attempt from `from` to `to`: a TCP connect, or a UDP datagram answered.
fn reach(from: &Pod, to: &Pod, port: u16, proto: Protocol) -> bool {
    let dst = SocketAddr::new(to.ip, port);
    netns::run_in(&from.netns, move || match proto {
        Protocol::Udp => {
            let s = UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut buf = [0u8; 256];
            s.send_to(b"q", dst).is_ok() && s.recv_from(&mut buf).is_ok()
        }
        _ => TcpStream::connect_timeout(&dst, Duration::from_millis(300)).is_ok(),
    })
    .unwrap()
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn proposals_are_least_privilege_on_every_labelling_convention() {
    let lab =
        cellwall_testkit::lab::Lab::new(cellwall_testkit::bin!("cellwall"), &unique_name("lrn"));
    let app = repo().join("examples/learning/app.yaml");
    lab.cw(&[
        "lab",
        "up",
        "-f",
        app.to_str().unwrap(),
        "--name",
        &lab.name,
    ]);
    let state = lab.state();
    let pods: Vec<Pod> = state
        .pods
        .iter()
        .map(|p| {
            let w = state
                .workloads
                .iter()
                .find(|w| w.key() == p.key)
                .expect("every pod is a workload");
            Pod {
                key: p.key.to_string(),
                netns: p.netns.clone(),
                ip: p.ips[0],
                ports: w.ports.iter().map(|c| (c.port, c.protocol)).collect(),
            }
        })
        .collect();
    // The VMs are known only by what the CMDB says.
    let cmdb = repo().join("examples/learning/cmdb.csv");
    lab.cw(&[
        "import",
        "--source",
        "cmdb",
        "-f",
        cmdb.to_str().unwrap(),
        "--wait",
        "--lab",
        &lab.name,
    ]);
    let calls = calls();
    let services: BTreeSet<String> = calls
        .iter()
        .flat_map(|(c, s, ..)| [c.clone(), s.clone()])
        .collect();
    let svc = |p: &Pod| service_of(&p.key, &services).map(str::to_string);
    let of = |s: &str| -> Vec<&Pod> {
        pods.iter()
            .filter(|p| svc(p).as_deref() == Some(s))
            .collect()
    };

    // Real traffic: every replica of each client calls every replica of its server.
    for _ in 0..3 {
        for (c, s, port, proto) in &calls {
            for from in of(c) {
                for to in of(s) {
                    assert!(
                        reach(from, to, *port, *proto),
                        "{} -> {}:{port}/{proto} failed before any policy",
                        from.key,
                        to.key
                    );
                }
            }
        }
    }
    std::thread::sleep(Duration::from_millis(1200));

    // The grouping says what decided each application.
    let groups = lab.cw(&["map", "--groups", "--lab", &lab.name]);
    for want in [
        "owner Deployment/cart",
        "owner StatefulSet/db",
        "owner Deployment/api",
        "cmdb.import.cellwall.io/role=db",
        "owner Deployment/coredns",
    ] {
        assert!(groups.contains(want), "{want} missing:\n{groups}");
    }

    // Business-flow approval through the CLI: saved as a draft, every rule approved but the
    // ones of the web VM's policy, which a reviewer rejects; simulated; applied.
    let yaml = lab.cw(&["propose", "--lab", &lab.name]);
    let saved = lab.cw(&["propose", "--save", "shop-v1", "--lab", &lab.name]);
    assert!(saved.contains("draft shop-v1"), "{saved}");
    let draft: Value =
        serde_json::from_str(&lab.cw(&["review", "shop-v1", "-o", "json", "--lab", &lab.name]))
            .unwrap();
    let web_group = draft["proposal"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| {
            g["members"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m == "dc/web-01")
        })
        .unwrap()["id"]
        .clone();
    let web_policy = draft["proposal"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["group"] == web_group)
        .map(|p| {
            format!(
                "{}/{}",
                p["namespace"].as_str().unwrap(),
                p["name"].as_str().unwrap()
            )
        })
        .unwrap();
    lab.cw(&[
        "review",
        "shop-v1",
        "reject",
        &web_policy,
        "--comment",
        "the web tier goes through the WAF",
        "--lab",
        &lab.name,
    ]);
    let table = lab.cw(&[
        "review",
        "shop-v1",
        "approve",
        "pending",
        "--comment",
        "observed, expected",
        "--lab",
        &lab.name,
    ]);
    assert!(table.contains("0 pending"), "{table}");
    let sim: Value = serde_json::from_str(&lab.cw(&[
        "simulate", "--draft", "shop-v1", "-o", "json", "--lab", &lab.name,
    ]))
    .unwrap();
    // Exactly the rejected edge breaks.
    let broken: BTreeSet<(String, String)> = sim["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "would-be-rejected")
        .map(|d| {
            (
                d["src"].as_str().unwrap().into(),
                d["dst"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        broken,
        BTreeSet::from([("dc/web-01".to_string(), "dc/app-01".to_string())]),
        "{sim}"
    );
    lab.cw(&["apply", "--draft", "shop-v1", "--wait", "--lab", &lab.name]);

    // Every pair of pods on every served port, probed for real (a thread per source pod).
    let mut want: BTreeSet<(String, String, u16, Protocol)> = calls.iter().cloned().collect();
    want.remove(&("dc/web-01".into(), "dc/app-01".into(), 8080, Protocol::Tcp));
    let results: Vec<(String, bool, bool)> = std::thread::scope(|sc| {
        let handles: Vec<_> = pods
            .iter()
            .map(|from| {
                let (pods, want, svc) = (&pods, &want, &svc);
                sc.spawn(move || {
                    let mut out = Vec::new();
                    for to in pods.iter().filter(|t| t.key != from.key) {
                        for &(port, proto) in &to.ports {
                            let expect = match (svc(from), svc(to)) {
                                (Some(a), Some(b)) => want.contains(&(a, b, port, proto)),
                                _ => false,
                            };
                            let got = reach(from, to, port, proto);
                            let what = format!("{} -> {}:{port}/{proto}", from.key, to.key);
                            out.push((what, expect, got));
                        }
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let observed: Vec<_> = results.iter().filter(|r| r.1).collect();
    let unobserved: Vec<_> = results.iter().filter(|r| !r.1).collect();
    let broken: Vec<&str> = observed
        .iter()
        .filter(|r| !r.2)
        .map(|r| r.0.as_str())
        .collect();
    let open: Vec<&str> = unobserved
        .iter()
        .filter(|r| r.2)
        .map(|r| r.0.as_str())
        .collect();
    eprintln!(
        "observed pairs connected: {}/{}; unobserved pairs blocked: {}/{}",
        observed.len() - broken.len(),
        observed.len(),
        unobserved.len() - open.len(),
        unobserved.len()
    );
    assert!(
        broken.is_empty() && open.is_empty(),
        "broken: {broken:#?}\nleft open: {open:#?}\n{yaml}"
    );
    assert!(observed.len() >= 30 && unobserved.len() >= 200);

    // Rule hygiene: every proposed rule decided some of the history; a legacy rule nobody used
    // is listed as unused, and its `podSelector: {}` would be flagged broad once used.
    let legacy = lab.file(
        "legacy.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {namespace: shop, name: legacy-ssh}\n\
         spec:\n  podSelector: {matchLabels: {name: redis}}\n  ingress: [{from: [{podSelector: {}}], ports: [{port: 22}]}]\n",
    );
    lab.cw(&["apply", "-f", &legacy, "--lab", &lab.name]);
    let unused: Value = serde_json::from_str(&lab.cw(&[
        "get", "policies", "--unused", "30d", "-o", "json", "--lab", &lab.name,
    ]))
    .unwrap();
    let unused: Vec<&str> = unused["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["rule"].as_str().unwrap())
        .collect();
    assert!(
        unused.contains(&"NetworkPolicy/shop/legacy-ssh ingress[0]"),
        "{unused:?}"
    );
    assert!(
        !unused.iter().any(|r| r.starts_with("Policy/")),
        "{unused:?}"
    );
    let rules = lab.cw(&["get", "rules", "--since", "1h", "--lab", &lab.name]);
    assert!(rules.contains("unused in 1h"), "{rules}");

    // The JSON list carries the grouping with its evidence, for scripts.
    let list: Value =
        serde_json::from_str(&lab.cw(&["propose", "-o", "json", "--lab", &lab.name])).unwrap();
    assert!(list["groups"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["evidence"] == "owner StatefulSet/db"
            && g["members"].as_array().unwrap().len() == 2));
}

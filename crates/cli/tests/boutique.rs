//! Root tier: the lifecycle on Google's Online Boutique in a lab (examples/boutique): real
//! traffic along its call graph → flow history in the manager → `map` → `propose` →
//! `simulate` (zero breakage) → `apply` → lateral movement blocked and recorded; an audit-mode
//! policy drops nothing but is seen; a candidate that forgets one edge breaks exactly that edge.

use cellwall_testkit::lab::{netns, unique_name};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cw(args: &[&str]) -> (bool, String, String) {
    cellwall_testkit::bin!("cellwall").result(args)
}

fn ok(args: &[&str]) -> String {
    let (ok, out, err) = cw(args);
    assert!(ok, "cellwall {}: {err}{out}", args.join(" "));
    out
}

struct Lab {
    lab: cellwall_testkit::lab::Lab,
    name: String,
    pods: BTreeMap<String, (String, IpAddr)>,
}

impl Lab {
    fn up() -> Self {
        let lab = cellwall_testkit::lab::Lab::new(
            cellwall_testkit::bin!("cellwall"),
            &unique_name("btq"),
        );
        let name = lab.name.clone();
        let app = repo().join("examples/boutique/app.yaml");
        ok(&["lab", "up", "-f", app.to_str().unwrap(), "--name", &name]);
        let pods = lab
            .state()
            .pods
            .into_iter()
            .map(|p| (p.key.name, (p.netns, p.ips[0])))
            .collect();
        Lab { lab, name, pods }
    }

    fn connect(&self, from: &str, to: &str, port: u16) -> bool {
        let (ns, _) = self.pods[from].clone();
        let dst = SocketAddr::new(self.pods[to].1, port);
        netns::run_in(&ns, move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(300)).is_ok()
        })
        .unwrap()
    }

    fn cw(&self, args: &[&str]) -> String {
        let mut a = args.to_vec();
        a.extend(["--lab", &self.name]);
        ok(&a)
    }

    fn file(&self, name: &str, text: &str) -> String {
        self.lab.file(name, text)
    }
}

fn calls() -> Vec<(String, String, u16)> {
    std::fs::read_to_string(repo().join("examples/boutique/calls.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f[0].to_string(), f[1].to_string(), f[2].parse().unwrap())
        })
        .collect()
}

const AUDIT: &str = "apiVersion: cellwall.io/v1alpha1
kind: Policy
metadata: {name: ads-audit, namespace: boutique}
spec:
  mode: audit
  podSelector: {matchLabels: {app: adservice}}
  ingress:
  - name: would-deny-everyone
    action: Deny
    from: [{podSelector: {}}]
";

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn boutique_map_propose_simulate_enforce() {
    let lab = Lab::up();
    let audit = lab.file("audit.yaml", AUDIT);
    lab.cw(&["apply", "-f", &audit, "--wait"]);

    // Traffic along the call graph: every call several times.
    let calls = calls();
    for _ in 0..4 {
        for (c, s, p) in &calls {
            assert!(
                lab.connect(c, s, *p),
                "{c} -> {s}:{p} failed before any policy"
            );
        }
    }
    std::thread::sleep(Duration::from_millis(800));

    // The map has exactly the call graph, all allowed; the audit policy was seen, dropped nothing.
    let map: Value =
        serde_json::from_str(&lab.cw(&["map", "--group-by", "workload", "-o", "json"])).unwrap();
    let edges: BTreeSet<(String, String, u64)> = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["denied"], 0, "{e}");
            (
                e["src"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("boutique/")
                    .to_string(),
                e["dst"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("boutique/")
                    .to_string(),
                e["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, u64)> = calls
        .iter()
        .map(|(c, s, p)| (c.clone(), s.clone(), *p as u64))
        .collect();
    assert_eq!(edges, want);
    let ads = map["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["dst"] == "boutique/adservice")
        .unwrap();
    assert_eq!(ads["audit"], 4, "{ads}");
    let audited: Value =
        serde_json::from_str(&lab.cw(&["flows", "--verdict", "audit", "-o", "json"])).unwrap();
    assert!(audited["flows"]
        .as_array()
        .unwrap()
        .iter()
        .all(|f| f["dst"] == "boutique/adservice"
            && f["rule"].as_str().unwrap().contains("ads-audit")));
    assert!(!audited["flows"].as_array().unwrap().is_empty());
    // Compliance: the audit-only allowance raised one alert for the edge, not one per connection.
    let alerts: Value = serde_json::from_str(&lab.cw(&["alerts", "-o", "json"])).unwrap();
    let audit_alerts: Vec<&Value> = alerts["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "audit-only")
        .collect();
    assert_eq!(audit_alerts.len(), 1, "{alerts}");
    assert_eq!(audit_alerts[0]["dst"], "boutique/adservice");
    assert!(
        audit_alerts[0]["rule"]
            .as_str()
            .unwrap_or("")
            .contains("ads-audit"),
        "{alerts}"
    );
    let dot = lab.cw(&["map", "-o", "dot"]);
    assert!(dot.starts_with("digraph"), "{dot}");

    // The proposal allows exactly the observed edges on their ports, and nothing else.
    let yaml = lab.cw(&["propose", "--format", "networkpolicy"]);
    let proposal = lab.file("proposal.yaml", &yaml);
    let app = repo().join("examples/boutique/app.yaml");
    let matrix: Value = serde_json::from_str(&ok(&[
        "analyze",
        "-f",
        app.to_str().unwrap(),
        "-f",
        &proposal,
        "-o",
        "json",
    ]))
    .unwrap();
    let mut allowed = BTreeSet::new();
    for p in matrix["probes"].as_array().unwrap() {
        let port = p["port"].as_u64().unwrap();
        for (from, row) in p["matrix"].as_object().unwrap() {
            for (to, ok) in row.as_object().unwrap() {
                if ok == true {
                    allowed.insert((
                        from.trim_start_matches("boutique/").to_string(),
                        to.trim_start_matches("boutique/").to_string(),
                        port,
                    ));
                }
            }
        }
    }
    assert_eq!(
        allowed, want,
        "the proposal allows more or less than observed:\n{yaml}"
    );
    // Same history, same proposal; and it is stable across formats' parsing.
    assert_eq!(lab.cw(&["propose", "--format", "networkpolicy"]), yaml);
    let json_list = lab.cw(&["propose", "--format", "networkpolicy", "-o", "json"]);
    // Cellwall's own format parses too.
    let cw_yaml = lab.file("proposal-cw.yaml", &lab.cw(&["propose"]));
    ok(&[
        "analyze",
        "-f",
        app.to_str().unwrap(),
        "-f",
        &cw_yaml,
        "-o",
        "json",
    ]);
    let json_file = lab.file("proposal.json", &json_list);
    ok(&[
        "analyze",
        "-f",
        app.to_str().unwrap(),
        "-f",
        &json_file,
        "-o",
        "json",
    ]);

    // Simulating the proposal against history: zero breakage.
    let sim: Value =
        serde_json::from_str(&lab.cw(&["simulate", "-f", &proposal, "-o", "json"])).unwrap();
    assert_eq!(sim["breakage"], 0, "{sim}");
    assert_eq!(
        sim["summary"]["permitted"]["flows"].as_u64().unwrap() as usize,
        calls.len(),
        "{sim}"
    );
    lab.cw(&["simulate", "-f", &proposal, "--fail-on-breakage"]);

    // Enforced: the shop works, the frontend cannot reach redis, and that is recorded.
    lab.cw(&["apply", "-f", &proposal, "--wait"]);
    for (c, s, p) in &calls {
        assert!(
            lab.connect(c, s, *p),
            "{c} -> {s}:{p} broken by the proposal"
        );
    }
    assert!(
        !lab.connect("frontend", "redis-cart", 6379),
        "lateral movement got through"
    );
    std::thread::sleep(Duration::from_millis(800));
    let denied: Value = serde_json::from_str(&lab.cw(&[
        "flows",
        "--verdict",
        "denied",
        "--workload",
        "boutique/redis-cart",
        "-o",
        "json",
    ]))
    .unwrap();
    let hit = denied["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src"] == "boutique/frontend" && f["port"] == 6379)
        .unwrap_or_else(|| panic!("frontend -> redis not recorded: {denied}"));
    // Dropped where it starts (the frontend may only call its services) or where it lands.
    let rule = hit["rule"].as_str().unwrap();
    assert!(
        rule.starts_with("NetworkPolicy/boutique/cw-frontend egress")
            || rule.starts_with("NetworkPolicy/boutique/cw-redis-cart ingress"),
        "{hit}"
    );

    // A candidate that forgets checkout -> email breaks exactly that edge.
    let mut list: Value = serde_json::from_str(&json_list).unwrap();
    for item in list["items"].as_array_mut().unwrap() {
        if item["metadata"]["name"] == "cw-emailservice" {
            item["spec"]["ingress"] = serde_json::json!([]);
        }
    }
    let forgot = lab.file("forgot.json", &list.to_string());
    let (status, out, _) = cw(&[
        "simulate",
        "-f",
        &forgot,
        "-o",
        "json",
        "--fail-on-breakage",
        "--lab",
        &lab.name,
    ]);
    assert!(!status, "--fail-on-breakage must fail");
    let sim: Value = serde_json::from_str(&out).unwrap();
    let broken: Vec<(String, String, u64)> = sim["details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "would-be-rejected")
        .map(|d| {
            (
                d["src"].as_str().unwrap().to_string(),
                d["dst"].as_str().unwrap().to_string(),
                d["port"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        broken,
        vec![(
            "boutique/checkoutservice".to_string(),
            "boutique/emailservice".to_string(),
            8080
        )],
        "{sim}"
    );
}

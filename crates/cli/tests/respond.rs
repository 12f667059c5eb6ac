//! Root tier: labels from a vulnerability scanner drive enforcement (examples/cve): the
//! WannaCry example blocks TCP 445 both ways for exactly the workloads the report marks, and a
//! broken report is refused with its line and column and changes nothing.

use cellwall_testkit::lab::{netns, unique_name, Lab};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
        .to_string_lossy()
        .to_string()
}

fn cw(args: &[&str]) -> (bool, String, String) {
    cellwall_testkit::bin!("cellwall").result(args)
}

/// A lab named `TAG` + pid, taken down however the test ends.
fn lab(tag: &str) -> Lab {
    Lab::new(cellwall_testkit::bin!("cellwall"), &unique_name(tag))
}

fn netns_of(lab: &str, pod: &str) -> String {
    cellwall_testkit::lab::pod(lab, pod).netns
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn scanner_labels_block_smb_for_exactly_the_vulnerable() {
    let lab = lab("cve");
    let (ok, _, err) = cw(&[
        "lab",
        "up",
        "-f",
        &repo("examples/cve/inventory.yaml"),
        "-f",
        &repo("examples/cve/deny-smb.yaml"),
        "--name",
        &lab.name,
    ]);
    assert!(ok, "{err}");
    let ip = |pod: &str| -> IpAddr {
        match pod {
            "fileserver-old" => "10.78.0.1",
            "fileserver-new" => "10.78.0.2",
            _ => "10.78.0.3",
        }
        .parse()
        .unwrap()
    };
    let connects = |from: &str, to: &str, port: u16| {
        let ns = netns_of(&lab.name, from);
        let dst = SocketAddr::new(ip(to), port);
        netns::run_in(&ns, move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(300)).is_ok()
        })
        .unwrap()
    };
    // Nothing labelled yet: SMB flows everywhere.
    assert!(connects("workstation", "fileserver-old", 445));

    // A broken report: precise location, nothing changes.
    let bad = lab.dir.join("bad.csv");
    std::fs::write(
        &bad,
        "ip,cve-2017-0144\n10.78.0.1,vulnerable\n10.78.0.999,vulnerable\n",
    )
    .unwrap();
    let (_, before, _) = cw(&["get", "nodes", "-o", "json", "--lab", &lab.name]);
    let (ok, _, err) = cw(&[
        "import",
        "--source",
        "scanner",
        "-f",
        bad.to_str().unwrap(),
        "--lab",
        &lab.name,
    ]);
    assert!(!ok);
    assert!(err.contains("bad.csv:3:1: ip \"10.78.0.999\""), "{err}");
    let (_, after, _) = cw(&["get", "nodes", "-o", "json", "--lab", &lab.name]);
    let rev = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap()["revision"].clone();
    assert_eq!(
        rev(&before),
        rev(&after),
        "a refused import changed the state"
    );
    assert!(connects("workstation", "fileserver-old", 445));

    // The real report: 445 blocked in and out for the vulnerable server only.
    let (ok, out, err) = cw(&[
        "import",
        "--source",
        "scanner",
        "-f",
        &repo("examples/cve/scanner-report.csv"),
        "--wait",
        "--lab",
        &lab.name,
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("2 workloads labelled"), "{out}");
    assert!(
        !connects("workstation", "fileserver-old", 445),
        "445 into the vulnerable server"
    );
    assert!(
        !connects("fileserver-old", "fileserver-new", 445),
        "445 out of the vulnerable server"
    );
    assert!(
        connects("workstation", "fileserver-new", 445),
        "445 between patched workloads"
    );
    assert!(connects("fileserver-new", "workstation", 445));
    assert!(
        connects("workstation", "fileserver-old", 80),
        "only 445 is blocked"
    );
    // The imported labels are selectable and visible, apart from native ones.
    let (_, out, _) = cw(&["get", "workloads", "-o", "json", "--lab", &lab.name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let old = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "fileserver-old")
        .unwrap();
    assert_eq!(
        old["labels"]["scanner.import.cellwall.io/cve-2017-0144"],
        "vulnerable"
    );
    assert_eq!(old["labels"]["app"], "fileserver");
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn host_mode_protects_a_host_on_its_nic_with_pod_policies() {
    let lab = lab("hst");
    let inv = lab.dir.join("inv.yaml");
    std::fs::write(
        &inv,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: t}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: client, namespace: t, labels: {app: client}}\nspec: {containers: [{ports: [{containerPort: 9}]}]}\nstatus: {podIP: 10.77.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: other, namespace: t, labels: {app: other}}\nspec: {containers: [{ports: [{containerPort: 9}]}]}\nstatus: {podIP: 10.77.0.3}\n",
    )
    .unwrap();
    let (ok, _, err) = cw(&[
        "lab",
        "up",
        "-f",
        inv.to_str().unwrap(),
        "--name",
        &lab.name,
    ]);
    assert!(ok, "{err}");
    let (ok, _, err) = cw(&[
        "lab",
        "host-add",
        "vm1",
        "--ip",
        "10.77.9.1",
        "--label",
        "role=db",
        "--name",
        &lab.name,
    ]);
    assert!(ok, "{err}");
    // A database listening on the host itself.
    let hns = format!("cw-{}-h0", lab.name);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&hns).unwrap();
        let l = std::net::TcpListener::bind("10.77.9.1:5432").unwrap();
        tx.send(()).unwrap();
        for s in l.incoming() {
            drop(s);
        }
    });
    rx.recv().unwrap();
    let connects = |from: &str| {
        let ns = netns_of(&lab.name, from);
        let dst: SocketAddr = "10.77.9.1:5432".parse().unwrap();
        netns::run_in(&ns, move || {
            TcpStream::connect_timeout(&dst, Duration::from_millis(300)).is_ok()
        })
        .unwrap()
    };
    assert!(connects("client") && connects("other"), "no policy yet");
    // The host is a workload with its labels, on its own node.
    let (_, out, _) = cw(&["get", "workloads", "-o", "json", "--lab", &lab.name]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let vm = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["namespace"] == "hosts" && w["name"] == "vm1")
        .unwrap_or_else(|| panic!("no hosts/vm1 in {out}"));
    assert_eq!(vm["labels"]["role"], "db");
    assert_eq!(vm["node"], "vm1");
    // The same policy language as for pods selects it by label.
    let pol = lab.dir.join("db.yaml");
    std::fs::write(
        &pol,
        "apiVersion: cellwall.io/v1alpha1\nkind: ClusterPolicy\nmetadata: {name: db-hosts}\nspec:\n  podSelector: {matchLabels: {role: db}}\n  ingress:\n  - name: clients-only\n    from: [{namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}]\n    ports: [{port: 5432}]\n",
    )
    .unwrap();
    let (ok, _, err) = cw(&[
        "apply",
        "-f",
        pol.to_str().unwrap(),
        "--wait",
        "--lab",
        &lab.name,
    ]);
    assert!(ok, "{err}");
    assert!(connects("client"), "the allowed client was cut off");
    assert!(
        !connects("other"),
        "the host's NIC let a denied peer through"
    );
    std::thread::sleep(Duration::from_millis(700));
    let (_, out, _) = cw(&[
        "flows",
        "--verdict",
        "denied",
        "--workload",
        "hosts/vm1",
        "-o",
        "json",
        "--lab",
        &lab.name,
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["flows"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["src"] == "t/other"
                && f["node"] == "vm1"
                && f["rule"]
                    .as_str()
                    .unwrap_or("")
                    .contains("ClusterPolicy/db-hosts")),
        "{out}"
    );
}

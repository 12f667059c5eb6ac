//! Root tier: labels from a vulnerability scanner drive enforcement (examples/cve): the
//! WannaCry example blocks TCP 445 both ways for exactly the workloads the report marks, and a
//! broken report is refused with its line and column and changes nothing.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

fn repo(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(p)
        .to_string_lossy()
        .to_string()
}

fn cw(args: &[&str]) -> (bool, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_cellwall"))
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

struct Lab {
    name: String,
    dir: PathBuf,
}

impl Drop for Lab {
    fn drop(&mut self) {
        let _ = cw(&["lab", "down", "--name", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn netns_of(lab: &str, pod: &str) -> String {
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("/run/cellwall/labs/{lab}/state.json")).unwrap(),
    )
    .unwrap();
    state["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["key"]["name"] == pod)
        .unwrap()["netns"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn scanner_labels_block_smb_for_exactly_the_vulnerable() {
    let name = format!("cve{}", std::process::id() % 100000);
    let dir = std::env::temp_dir().join(format!("cellwall-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    let lab = Lab { name, dir };
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
        cellwall_datapath::netns::run_in(&ns, move || {
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

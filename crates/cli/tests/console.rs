//! Root tier: the web console in headless Chromium (Debian's, driven by playwright-core)
//! against a real manager holding a lab's traffic — the `cellwall demo` shop, locked down and
//! attacked. The browser part is `ui/e2e/console.mjs` (every page, read-only and admin tokens,
//! the draft workflow, quarantine and release; screenshots into docs/console/), then
//! `ui/e2e/map-bench.mjs` (first render and pan of 1,000 services and 10,000 edges).

use cellwall_testkit::lab::{lab_file, unique_name, Lab};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(p)
}

fn node(script: &str, args: &[&str]) {
    let out = Command::new("node")
        .arg(repo(script))
        .args(args)
        .output()
        .expect("node runs (scripts/setup.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{script} failed:\n{text}");
}

#[test]
#[ignore = "root tier: needs network namespaces, BPF and Chromium"]
fn the_console_drives_the_whole_lifecycle_in_a_real_browser() {
    let name = unique_name("ui");
    let lab = Lab::new(cellwall_testkit::bin!("cellwall"), &name);
    let (ok, _, err) = lab.bin.result(&["demo", "--keep", "--name", &lab.name]);
    assert!(ok, "{err}");
    let manager = |f: &str| lab_file(&lab.name, &format!("manager/{f}"));
    let client: serde_json::Value =
        serde_json::from_slice(&std::fs::read(manager("client.json")).unwrap()).unwrap();
    let server = client["server"].as_str().unwrap().to_string();
    let token = |f: &str| {
        std::fs::read_to_string(manager(f))
            .unwrap()
            .trim()
            .to_string()
    };
    let shots = repo("docs/console");
    node(
        "ui/e2e/console.mjs",
        &[
            "--server",
            &server,
            "--admin",
            &token("admin.token"),
            "--read",
            &token("read.token"),
            "--screenshots",
            shots.to_str().unwrap(),
            "--cellwall",
            lab.bin.path().to_str().unwrap(),
            "--lab",
            &lab.name,
        ],
    );
    let noise = std::env::var("CELLWALL_BENCH_NOISE_FACTOR").unwrap_or_else(|_| "1".into());
    node(
        "ui/e2e/map-bench.mjs",
        &[
            "--server",
            &server,
            "--token",
            &token("read.token"),
            "--noise",
            &noise,
        ],
    );
}

//! The `cellwall` binary against a manager serving its API over TLS (in-process, loopback,
//! `api_tls`): found through client.json, `--ca` or `CELLWALL_CA`; refused without a CA or with
//! another manager's; and a warning when a token would cross the network in plain HTTP.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Runs `cellwall ARGS` with only `env` of the Cellwall variables and a HOME without configs:
/// (success, stdout, stderr).
fn cw(home: &Path, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_cellwall"));
    for k in [
        "CELLWALL_SERVER",
        "CELLWALL_TOKEN",
        "CELLWALL_CONFIG",
        "CELLWALL_CA",
    ] {
        c.env_remove(k);
    }
    let out = c
        .args(args)
        .env("HOME", home)
        .env("CELLWALL_LAB_DIR", home.join("labs"))
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn cli_talks_https_with_the_managers_ca() {
    let (dir, home) = (tmpdir("tls"), tmpdir("tls-home"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut cfg = cellwall_manager::Config::local(&dir);
    cfg.api_tls = true;
    let running = rt.block_on(cellwall_manager::start(cfg)).unwrap();
    let url = running.api_url.clone();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let token = std::fs::read_to_string(dir.join("admin.token")).unwrap();
    let token = token.trim();
    let (config, ca) = (dir.join("client.json"), dir.join("ca.pem"));
    let (config, ca) = (config.to_str().unwrap(), ca.to_str().unwrap());

    // client.json names the CA: nothing else needed.
    let (ok, out, err) = cw(
        &home,
        &["get", "nodes", "-o", "json", "--config", config],
        &[],
    );
    assert!(ok, "{err}");
    assert!(out.contains("\"items\""), "{out}");
    assert!(err.is_empty(), "no warning over TLS: {err}");

    // Server and token given, no CA: refused before anything is sent, saying what to pass.
    let direct = ["get", "nodes", "--server", &url, "--token", token];
    let (ok, _, err) = cw(&home, &direct, &[]);
    assert!(!ok);
    assert!(err.contains("--ca FILE or set CELLWALL_CA"), "{err}");
    let (ok, _, err) = cw(&home, &[&direct[..], &["--ca", ca]].concat(), &[]);
    assert!(ok, "{err}");
    let (ok, _, err) = cw(&home, &direct, &[("CELLWALL_CA", ca)]);
    assert!(ok, "{err}");

    // Another manager's CA: a verification error, not "cannot reach".
    let other = tmpdir("tls-other");
    cellwall_manager::pki::Ca::load_or_create(&other, std::time::Duration::from_secs(86_400))
        .unwrap();
    let other_ca = other.join("ca.pem");
    let (ok, _, err) = cw(
        &home,
        &[
            "get",
            "nodes",
            "--config",
            config,
            "--ca",
            other_ca.to_str().unwrap(),
        ],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("failed verification"), "{err}");
    assert!(!err.contains("cannot reach"), "{err}");

    // A token for a plain-HTTP address beyond loopback: warned, not refused. 0.0.0.0 is not
    // loopback by name, yet Linux connects it locally, so nothing leaves this host; the
    // manager's HTTPS port answers with its advice.
    let port = running.api.port();
    let plain = format!("http://0.0.0.0:{port}");
    let (ok, _, err) = cw(
        &home,
        &["get", "nodes", "--server", &plain, "--token", token],
        &[],
    );
    assert!(!ok);
    assert!(
        err.contains("warning:") && err.contains("clear text"),
        "{err}"
    );
    assert!(err.contains("over HTTPS"), "{err}");

    rt.block_on(running.stop()).unwrap();
    for d in [dir, home, other] {
        let _ = std::fs::remove_dir_all(d);
    }
}

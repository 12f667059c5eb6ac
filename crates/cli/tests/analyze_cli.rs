//! The `cellwall analyze` contract as users and scripts see it: exact JSON shape, tables,
//! explanations, and errors that name file, line, column and field.

use std::process::Command;

fn analyze(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellwall"))
        .arg("analyze")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn example() -> String {
    format!("{}/../../examples/shop", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn json_has_exactly_the_contract_shape() {
    let (code, out, err) = analyze(&["-f", &example(), "--probe", "TCP/5432", "-o", "json"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["probes"]);
    let p = &v["probes"][0];
    assert_eq!(
        p.as_object().unwrap().keys().collect::<Vec<_>>(),
        vec!["matrix", "port", "protocol"]
    );
    assert_eq!(p["protocol"], "TCP");
    assert_eq!(p["port"], 5432);
    assert_eq!(p["matrix"]["shop/api"]["data/db"], true);
    assert_eq!(p["matrix"]["tools/debug"]["data/db"], false);
    assert_eq!(
        p["matrix"].as_object().unwrap().len(),
        5,
        "every pod is a row"
    );
    assert_eq!(
        p["matrix"]["shop/web"].as_object().unwrap().len(),
        5,
        "every pod is a column"
    );
}

#[test]
fn default_probes_are_every_container_port() {
    let (code, out, _) = analyze(&["-f", &example(), "-o", "json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let probes: Vec<(String, u64)> = v["probes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [22, 80, 5432, 6379, 8080, 9090]
        .iter()
        .map(|p| ("TCP".to_string(), *p))
        .collect();
    assert_eq!(probes, want);
}

#[test]
fn table_uses_dots_and_crosses() {
    let (code, out, _) = analyze(&["-f", &example(), "--probe", "TCP/8080"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("TCP/8080"));
    assert_eq!(
        lines[1],
        "-\tdata/cache\tdata/db\tshop/api\tshop/web\ttools/debug"
    );
    // tools/debug is selected by no policy: everything may reach it.
    assert_eq!(lines[5], "shop/web\tX\tX\t.\tX\t.");
}

#[test]
fn explain_names_the_deciding_rule() {
    let ex = example();
    let args = [
        "-f",
        ex.as_str(),
        "--from",
        "tools/debug",
        "--to",
        "data/db",
        "--probe",
        "TCP/5432",
        "--explain",
    ];
    let (code, out, _) = analyze(&args);
    assert_eq!(code, 0);
    assert!(
        out.starts_with("tools/debug (10.244.0.5) -> data/db (10.244.0.2) TCP/5432: DENIED"),
        "{out}"
    );
    assert!(
        out.contains(
            "decided by AdminNetworkPolicy/prod-isolated-from-dev ingress[0] \"deny-from-dev\""
        ),
        "{out}"
    );
    let (code, out, _) = analyze(&[&args[..], &["-o", "json"]].concat());
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["decision"]["allowed"], false);
    assert_eq!(v["ingress"]["tiers"][0]["outcome"], "Deny");
}

#[test]
fn errors_name_file_line_column_and_field() {
    let dir = std::env::temp_dir().join(format!("cellwall-cli-err-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("bad.yaml");
    std::fs::write(
        &f,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: np, namespace: x}\nspec:\n  podSelector: {}\n  ingress:\n  - ports:\n    - port: 70000\n",
    )
    .unwrap();
    let (code, out, err) = analyze(&["-f", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(out.is_empty());
    let want = format!("error: {}:12:", f.display());
    assert!(err.starts_with(&want), "{err}");
    assert!(err.contains("spec.ingress[0].ports[0].port: port 70000 is out of range: expected a port number 1-65535"), "{err}");
    // Duplicates name both places; unknown kinds are refused unless asked to skip them.
    std::fs::write(dir.join("bad.yaml"), "apiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: x}\n").unwrap();
    let (code, _, err) = analyze(&["-f", f.to_str().unwrap(), "--probe", "TCP/1"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("Namespace x is defined twice (first at"),
        "{err}"
    );
    std::fs::write(dir.join("bad.yaml"), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: x}\nspec: {containers: [{ports: [{containerPort: 80}]}]}\n").unwrap();
    let (code, _, err) = analyze(&["-f", f.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("unknown kind Deployment") && err.contains("--ignore-unknown-kinds"),
        "{err}"
    );
    let (code, out, err) = analyze(&[
        "-f",
        f.to_str().unwrap(),
        "--ignore-unknown-kinds",
        "-o",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("warning: skipped"), "{err}");
    assert!(out.contains("\"x/p\""));
    let (code, _, err) = analyze(&["-f", "/nonexistent/dir"]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot read /nonexistent/dir"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn expiry_is_evaluated_at_the_given_time() {
    let dir = std::env::temp_dir().join(format!("cellwall-cli-exp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("m.yaml"),
        "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x, labels: {app: a}}\nspec: {containers: [{ports: [{containerPort: 80}]}]}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x, labels: {app: b}}\nspec: {containers: [{ports: [{containerPort: 80}]}]}\n---\napiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {name: grant, namespace: x}\nspec:\n  podSelector: {matchLabels: {app: b}}\n  ingress:\n  - {from: [{podSelector: {matchLabels: {app: a}}}], expiresAt: \"2030-01-01T00:00:00Z\"}\n",
    )
    .unwrap();
    let d = dir.to_str().unwrap();
    let cell = |at: &str| {
        let (code, out, err) = analyze(&["-f", d, "-o", "json", "--at", at]);
        assert_eq!(code, 0, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["probes"][0]["matrix"]["x/a"]["x/b"].as_bool().unwrap()
    };
    assert!(cell("2029-12-31T23:59:59Z"), "granted before expiry");
    assert!(
        !cell("2030-01-01T00:00:00Z"),
        "isolated, nothing allowed, once it expired"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

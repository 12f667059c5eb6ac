//! `cellwall analyze --kubeconfig`: a cluster's objects read through kube-rs from the fake API
//! server (real list protocol: pages, continue tokens, 410 Gone, built-in items without their
//! type, server-set metadata) give exactly what the same objects give from files.

use cellwall_testkit::conformance::{run_all, AnalyzeRunner};
use cellwall_testkit::kube::{load_yaml, write_kubeconfig, FakeApi, KubeAnalyzeRunner, TOKEN};
use std::path::PathBuf;

fn cellwall() -> cellwall_testkit::bin::Bin {
    cellwall_testkit::bin!("cellwall")
}

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("cw-kube-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(path)
}

#[test]
fn conformance_cases_through_the_kubernetes_api() {
    let mut runner = KubeAnalyzeRunner::new(cellwall());
    let Some((cases, cells, skipped, failures)) = run_all(&mut runner, "analyze-kube") else {
        return;
    };
    eprintln!(
        "conformance (analyze --kubeconfig): {cases} cases, {cells} cells, {} mismatches",
        failures.len()
    );
    assert!(cases >= 40, "expected the full case set, found {cases}");
    assert_eq!(skipped, 0);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    // Every step synced the world: objects were modified and deleted, not only created.
    assert!(runner.api().resource_version() > 100);
}

#[test]
fn the_shop_from_a_cluster_equals_the_shop_from_files() {
    let api = FakeApi::start().unwrap();
    let mut n = 0;
    for f in [
        "examples/shop/inventory.yaml",
        "examples/shop/policies.yaml",
    ] {
        n += load_yaml(&api, &std::fs::read_to_string(repo(f)).unwrap());
    }
    assert!(n > 10);
    let dir = scratch("shop");
    let kc = write_kubeconfig(&api, &dir);
    let shop = repo("examples/shop");
    for extra in [&[][..], &["--probe", "TCP/5432"][..]] {
        let mut files = vec!["analyze", "-f", shop.to_str().unwrap(), "-o", "json"];
        files.extend(extra);
        let mut cluster = vec![
            "analyze",
            "--kubeconfig",
            kc.to_str().unwrap(),
            "-o",
            "json",
        ];
        cluster.extend(extra);
        let a = cellwall().run(&files);
        let (ok, b, err) = cellwall().result(&cluster);
        assert!(ok, "{err}");
        assert_eq!(String::from_utf8_lossy(&a.stdout), b);
        assert!(err.contains("read context \"fake\""), "{err}");
    }
    // The explanation names the same policies and rules.
    let explain = [
        "--from",
        "shop/web",
        "--to",
        "data/db",
        "--probe",
        "TCP/5432",
        "--explain",
    ];
    let mut files = vec!["analyze", "-f", shop.to_str().unwrap()];
    files.extend(explain);
    let mut cluster = vec!["analyze", "--kubeconfig", kc.to_str().unwrap()];
    cluster.extend(explain);
    let a = cellwall().run(&files);
    let b = cellwall().run(&cluster);
    assert_eq!(a.stdout, b.stdout);
    std::fs::remove_dir_all(dir).ok();
}

/// 1,200 pods are three pages; an expired continue token restarts the list instead of
/// mixing two snapshots; a CRD the cluster does not serve is skipped, and said so.
#[test]
fn paged_lists_survive_expiry_and_missing_crds() {
    let api = FakeApi::start().unwrap();
    let mut docs = String::from("apiVersion: v1\nkind: Namespace\nmetadata: {name: big}\n");
    for i in 0..1200 {
        docs.push_str(&format!(
            "---\napiVersion: v1\nkind: Pod\nmetadata: {{name: p{i:04}, namespace: big, labels: {{app: a{}}}}}\n\
spec: {{containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n",
            i % 3
        ));
    }
    docs.push_str(
        "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: only-a0, namespace: big}\n\
spec: {podSelector: {matchLabels: {app: a1}}, ingress: [{from: [{podSelector: {matchLabels: {app: a0}}}]}]}\n",
    );
    load_yaml(&api, &docs);
    api.serve(
        "policy.networking.k8s.io/v1alpha1",
        "AdminNetworkPolicy",
        false,
    );
    api.expire_next_continues(1);
    let dir = scratch("paged");
    let kc = write_kubeconfig(&api, &dir);
    let kc = kc.to_str().unwrap();
    let before = api.stats();
    let probe = |from: &str, to: &str| {
        let (ok, out, err) = cellwall().result(&[
            "analyze",
            "--kubeconfig",
            kc,
            "--from",
            from,
            "--to",
            to,
            "--probe",
            "TCP/80",
            "--explain",
            "-o",
            "json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (
            v["decision"]["allowed"]
                .as_bool()
                .expect("decision.allowed in the explanation"),
            err,
        )
    };
    let (allowed, err) = probe("big/p0000", "big/p0001");
    assert!(allowed, "a0 → a1 is allowed");
    assert!(err.contains("1200 pods"), "{err}");
    assert!(
        err.contains("not served") && err.contains("adminnetworkpolicies"),
        "{err}"
    );
    let s = api.stats();
    assert_eq!(
        s.gone - before.gone,
        1,
        "the expired token was presented once"
    );
    // pods: 1 expired attempt (at least 2 pages) + 3 pages; one page for every other kind.
    assert!(s.lists - before.lists >= 5 + 8, "{s:?}");
    let (allowed, _) = probe("big/p0002", "big/p0001");
    assert!(!allowed, "a2 → a1 is isolated by only-a0");
    std::fs::remove_dir_all(dir).ok();
}

/// What a user gets wrong: a bad token, a context that does not exist, a server that is down,
/// a malformed policy in the cluster. Each is an error that says which and where.
#[test]
fn cluster_errors_name_the_cause() {
    let api = FakeApi::start().unwrap();
    load_yaml(
        &api,
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n\
apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: typo, namespace: shop}\n\
spec: {podSelector: {}, ingres: []}\n",
    );
    let dir = scratch("errors");
    let kc = write_kubeconfig(&api, &dir);
    let (ok, _, err) = cellwall().result(&["analyze", "--kubeconfig", kc.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("fake:networkpolicies/shop/typo"), "{err}");
    assert!(err.contains("ingres"), "{err}");

    let (ok, _, err) = cellwall().result(&[
        "analyze",
        "--kubeconfig",
        kc.to_str().unwrap(),
        "--context",
        "nope",
    ]);
    assert!(!ok);
    assert!(err.contains("nope"), "{err}");

    let bad = dir.join("bad-token");
    std::fs::write(
        &bad,
        api.kubeconfig("fake")
            .replace(cellwall_kube::fake::TOKEN, "stolen"),
    )
    .unwrap();
    let (ok, _, err) = cellwall().result(&["analyze", "--kubeconfig", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("401"), "{err}");

    let url = api.url();
    drop(api);
    let down = dir.join("down");
    std::fs::write(
        &down,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: {url}}}\n\
contexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\nusers:\n- name: u\n  user: {{token: t}}\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = cellwall().result(&["analyze", "--kubeconfig", down.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains(&url), "{err}");

    let (ok, _, err) = cellwall().result(&["analyze", "--kubeconfig", "/nonexistent/kubeconfig"]);
    assert!(!ok);
    assert!(err.contains("/nonexistent/kubeconfig"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// The files path keeps working beside it (and the two cannot be mixed).
#[test]
fn files_and_kubeconfig_exclude_each_other() {
    let (ok, _, err) = cellwall().result(&[
        "analyze",
        "-f",
        repo("examples/shop").to_str().unwrap(),
        "--kubeconfig",
        "/x",
    ]);
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
    let (ok, _, err) = cellwall().result(&["analyze"]);
    assert!(!ok);
    assert!(
        err.contains("--filename") || err.contains("--kubeconfig"),
        "{err}"
    );
    let _ = AnalyzeRunner(cellwall());
}

/// Two clusters with the same names, analyzed together (`--context NAME=CONTEXT` twice): each
/// cluster's pods are qualified, and each cluster's NetworkPolicy admits only its own web.
#[test]
fn two_clusters_are_analyzed_together_and_kept_apart() {
    let shop = |net: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: shop}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: shop, labels: {{app: web}}}}\n\
             spec: {{containers: [{{name: c}}]}}\nstatus: {{podIP: {net}.1}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{name: db, namespace: shop, labels: {{app: db}}}}\n\
             spec: {{containers: [{{name: c, ports: [{{containerPort: 5432}}]}}]}}\nstatus: {{podIP: {net}.2}}\n---\n\
             apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {{name: db, namespace: shop}}\n\
             spec:\n  podSelector: {{matchLabels: {{app: db}}}}\n  \
             ingress: [{{from: [{{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: web}}}}}}]}}]\n"
        )
    };
    let (east, west) = (FakeApi::start().unwrap(), FakeApi::start().unwrap());
    load_yaml(&east, &shop("10.1.0"));
    load_yaml(&west, &shop("10.2.0"));
    let dir = scratch("two");
    let kc = dir.join("kubeconfig");
    let cluster = |name: &str, api: &FakeApi| {
        format!("- name: {name}\n  cluster:\n    server: {}\n", api.url())
    };
    let context =
        |name: &str| format!("- name: {name}-ctx\n  context:\n    cluster: {name}\n    user: u\n");
    std::fs::write(
        &kc,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n{}{}contexts:\n{}{}\
             current-context: east-ctx\nusers:\n- name: u\n  user:\n    token: {TOKEN}\n",
            cluster("east", &east),
            cluster("west", &west),
            context("east"),
            context("west"),
        ),
    )
    .unwrap();
    let kc = kc.to_str().unwrap();
    let reach = |from: &str, to: &str| {
        let (ok, out, err) = cellwall().result(&[
            "analyze",
            "--kubeconfig",
            kc,
            "--context",
            "east=east-ctx",
            "--context",
            "west=west-ctx",
            "--from",
            from,
            "--to",
            to,
            "--probe",
            "TCP/5432",
            "--explain",
            "-o",
            "json",
        ]);
        assert!(ok, "{err}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert!(v["src"].as_str().unwrap().starts_with(from), "{v}");
        v["decision"]["allowed"].as_bool().unwrap()
    };
    assert!(reach("east:shop/web", "east:shop/db"));
    assert!(reach("west:shop/web", "west:shop/db"));
    assert!(!reach("west:shop/web", "east:shop/db"));
    assert!(!reach("east:shop/web", "west:shop/db"));

    // A name that is no cluster name is refused, with the way out.
    let (ok, _, err) = cellwall().result(&[
        "analyze",
        "--kubeconfig",
        kc,
        "--context",
        "east-ctx",
        "--context",
        "West=west-ctx",
    ]);
    assert!(!ok);
    assert!(err.contains("NAME=CONTEXT"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

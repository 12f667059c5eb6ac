//! Compliance alerts at a real webhook, and scheduled label imports. Needs no root.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escaped_flow_raises_exactly_one_alert_at_the_webhook() {
    let dir = tmpdir("alerts");
    let (url, got) = receiver();
    let mut cfg = config(&dir);
    cfg.webhooks = vec![url];
    let running = start(cfg).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let (b, a) = (base.clone(), admin.clone());
    tokio::task::spawn_blocking(move || {
        let (s, v) = call(&b, "POST", "/v1/apply", Some(&a), Some(json!({"documents": [
            {"file": "inv.yaml", "text": inventory_with_ips()}, {"file": "p.yaml", "text": POLICY}]})));
        assert_eq!(s, 200, "{v}");
    })
    .await
    .unwrap();
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    // db admits web on 5432 only; a connection on 9999 that the datapath let through escaped
    // (an agent lagging behind, a host Cellwall does not protect). Reported twice.
    let now = unix_ns();
    for (seq, port) in [(1u64, 9999u32), (2, 9999), (3, 5432)] {
        let rec = record(now, port);
        c.report_flows(cellwall_proto::FlowBatch {
            node: "n1".into(),
            records: vec![rec],
            kernel_events_lost: 0,
            agent_records_dropped: 0,
            seq,
        })
        .await
        .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while got.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let hooks = got.lock().unwrap().clone();
    let escaped: Vec<&Value> = hooks.iter().filter(|h| h["kind"] == "escaped").collect();
    assert_eq!(escaped.len(), 1, "{hooks:?}");
    assert_eq!(escaped[0]["src"], "shop/web");
    assert_eq!(escaped[0]["dst"], "shop/db");
    assert_eq!(escaped[0]["port"], 9999);
    assert!(
        escaped[0]["rule"].as_str().unwrap().contains("db-from-web"),
        "{hooks:?}"
    );
    // The allowed 5432 flow is no deviation (it is a new edge into a policed workload, though).
    assert!(
        hooks
            .iter()
            .all(|h| h["port"] != 5432 || h["kind"] == "new-edge"),
        "{hooks:?}"
    );
    let (s, v) =
        tokio::task::spawn_blocking(move || call(&base, "GET", "/v1/alerts", Some(&admin), None))
            .await
            .unwrap();
    assert_eq!(s, 200);
    let stored: Vec<&Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "escaped")
        .collect();
    assert_eq!(stored.len(), 1, "{v}");
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// A connection is judged by the policy in force when it was opened: one opened a second
/// before a quarantine, reported after it, is no escape; one opened after the quarantine had
/// been in force past the propagation grace is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_opened_before_a_quarantine_is_not_an_escape() {
    let dir = tmpdir("escape-time");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    let (b, a) = (base.clone(), admin.clone());
    let opened = tokio::task::spawn_blocking(move || {
        let (s, v) = call(&b, "POST", "/v1/apply", Some(&a), Some(json!({"documents": [
            {"file": "inv.yaml", "text": inventory_with_ips()}, {"file": "p.yaml", "text": POLICY}]})));
        assert_eq!(s, 200, "{v}");
        // web -> db:5432 is allowed; the connection opens, then the operator quarantines web.
        std::thread::sleep(Duration::from_millis(2_500));
        let opened = unix_ns();
        std::thread::sleep(Duration::from_millis(1_000));
        let (s, v) = call(&b, "POST", "/v1/quarantine", Some(&a),
            Some(json!({"workload": "shop/web", "reason": "suspected"})));
        assert_eq!(s, 200, "{v}");
        opened
    })
    .await
    .unwrap();
    // Its record arrives after the quarantine.
    c.report_flows(cellwall_proto::FlowBatch {
        node: "n1".into(),
        records: vec![record(opened, 5432)],
        kernel_events_lost: 0,
        agent_records_dropped: 0,
        seq: 1,
    })
    .await
    .unwrap();
    let escaped = |base: String, admin: String| {
        let (s, v) = call(&base, "GET", "/v1/alerts", Some(&admin), None);
        assert_eq!(s, 200);
        v["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["kind"] == "escaped")
            .cloned()
            .collect::<Vec<Value>>()
    };
    let (b, a) = (base.clone(), admin.clone());
    let before = tokio::task::spawn_blocking(move || escaped(b, a))
        .await
        .unwrap();
    assert!(before.is_empty(), "{before:?}");
    // Past the grace, a new connection from the quarantined workload is an escape.
    tokio::time::sleep(Duration::from_millis(
        cellwall_manager::alerts::PROPAGATION_GRACE_MS as u64 + 200,
    ))
    .await;
    c.report_flows(cellwall_proto::FlowBatch {
        node: "n1".into(),
        records: vec![record(unix_ns(), 5432)],
        kernel_events_lost: 0,
        agent_records_dropped: 0,
        seq: 2,
    })
    .await
    .unwrap();
    let after = tokio::task::spawn_blocking(move || escaped(base, admin))
        .await
        .unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(
        after[0]["message"]
            .as_str()
            .unwrap()
            .contains("when they were opened"),
        "{after:?}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_import_follows_its_file_and_a_broken_run_changes_nothing() {
    let dir = tmpdir("import");
    let mut cfg = config(&dir);
    // The operator allows imports from this directory only.
    cfg.imports.dirs = vec![dir.clone()];
    let running = start(cfg).await.unwrap();
    let admin = token(&dir, "admin.token");
    let base = format!("http://{}", running.api);
    let report = dir.join("report.csv");
    std::fs::write(&report, "ip,owner\n10.9.0.1,shop\n").unwrap();
    let label = |base: String, admin: String| -> Option<String> {
        let (_, v) = call(&base, "GET", "/v1/workloads", Some(&admin), None);
        v["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == "web")
            .and_then(|w| {
                w["labels"]["cmdb.import.cellwall.io/owner"]
                    .as_str()
                    .map(str::to_string)
            })
    };
    let (b, a, r) = (base.clone(), admin.clone(), report.clone());
    tokio::task::spawn_blocking(move || {
        let (s, v) = call(
            &b,
            "POST",
            "/v1/apply",
            Some(&a),
            Some(apply_body("inv.yaml", &inventory_with_ips())),
        );
        assert_eq!(s, 200, "{v}");
        let (s, v) = call(
            &b,
            "POST",
            "/v1/imports",
            Some(&a),
            Some(json!({
            "source": "cmdb", "location": r.to_str().unwrap(), "every": "10s"})),
        );
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["matched_workloads"], 1);
        assert_eq!(label(b.clone(), a.clone()).as_deref(), Some("shop"));
        // An interval under 10 s, or a schedule without a location, is refused.
        let (s, _) = call(
            &b,
            "POST",
            "/v1/imports",
            Some(&a),
            Some(json!({
            "source": "cmdb", "location": r.to_str().unwrap(), "every": "1s"})),
        );
        assert_eq!(s, 400);
    })
    .await
    .unwrap();
    // The file changes: the next scheduled run picks it up.
    std::fs::write(&report, "ip,owner\n10.9.0.1,payments\n").unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (b, a) = (base.clone(), admin.clone());
        let got = tokio::task::spawn_blocking(move || label(b, a))
            .await
            .unwrap();
        if got.as_deref() == Some("payments") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the scheduled import never ran: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // A broken file at the next run: an event, and the labels stay.
    std::fs::write(&report, "ip,owner\nnot-an-ip,x\n").unwrap();
    tokio::time::sleep(Duration::from_secs(12)).await;
    let (b, a) = (base.clone(), admin.clone());
    let (got, events) = tokio::task::spawn_blocking(move || {
        (
            label(b.clone(), a.clone()),
            call(&b, "GET", "/v1/audit", Some(&a), None).1,
        )
    })
    .await
    .unwrap();
    assert_eq!(got.as_deref(), Some("payments"));
    assert!(
        events["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "import-failed"
                && e["detail"].as_str().unwrap().contains("report.csv:2:1")),
        "{events}"
    );
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// Counters past what the store holds (SQL integers) are refused as invalid, never a
/// database failure (found by the `rest` fuzz target).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_flow_counters_are_refused_not_a_database_error() {
    let dir = tmpdir("seq-range");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let boot = token(&dir, "bootstrap.token");
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    for (seq, lost) in [(u64::MAX, 0), (1, u64::MAX)] {
        let e = c
            .report_flows(cellwall_proto::FlowBatch {
                node: "n1".into(),
                records: vec![record(unix_ns(), 80)],
                kernel_events_lost: lost,
                agent_records_dropped: 0,
                seq,
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

//! The agent service over real mTLS sockets: join → watch → ack, refused credentials, and a
//! slow agent that falls behind and catches up. Needs no root.

mod common;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_join_watch_ack_and_refused_credentials() {
    let dir = tmpdir("grpc");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let boot = token(&dir, "bootstrap.token");
    let admin = token(&dir, "admin.token");
    let base = format!("http://{}", running.api);
    let g = running.grpc;
    // A REST GET as the admin, off the runtime's threads.
    let get = |path: &'static str| {
        let (base, admin) = (base.clone(), admin.clone());
        async move {
            tokio::task::spawn_blocking(move || call(&base, "GET", path, Some(&admin), None))
                .await
                .unwrap()
        }
    };

    // A wrong bootstrap token, or an API token, buys nothing.
    let mut c = BootstrapClient::new(channel(g, &ca, None).await.unwrap());
    for t in ["cwb_wrong".to_string(), admin.clone()] {
        let e = c
            .join(JoinRequest {
                token: t,
                node: "n1".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    // Without a certificate, nothing but Join.
    let e = AgentClient::new(channel(g, &ca, None).await.unwrap())
        .watch(WatchRequest {
            node: "n1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");

    let j = c
        .join(JoinRequest {
            token: boot.clone(),
            node: "n1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(j.ca_pem, ca);
    let id = Identity::from_pem(&j.cert_pem, &j.key_pem);
    let mut c = AgentClient::new(channel(g, &ca, Some(id.clone())).await.unwrap());

    // The certificate is n1's: claiming another node is refused.
    let e = c
        .ack(AckRequest {
            node: "n2".into(),
            version: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    // A certificate from another CA does not get through the handshake.
    let other = tmpdir("other-ca");
    let day = Duration::from_secs(86_400);
    let forged = cellwall_manager::pki::Ca::load_or_create(&other, day)
        .unwrap()
        .0
        .node_cert("n1", day)
        .unwrap();
    let id = Identity::from_pem(forged.cert_pem, forged.key_pem);
    let refused = match channel(g, &ca, Some(id)).await {
        Err(_) => true,
        Ok(ch) => AgentClient::new(ch)
            .ack(AckRequest {
                node: "n1".into(),
                version: 1,
                ..Default::default()
            })
            .await
            .is_err(),
    };
    assert!(refused, "a foreign certificate was accepted");

    // Watch: the current state at once (with the addresses this agent reports), then every
    // change pushed as it is written.
    let base2 = base.clone();
    let admin2 = admin.clone();
    tokio::task::spawn_blocking(move || {
        call(
            &base2,
            "POST",
            "/v1/apply",
            Some(&admin2),
            Some(apply_body(
                "inv.yaml",
                // web is scheduled on n1 (only n1's agent may report its address).
                &INVENTORY.replace(
                    "spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}",
                    "spec: {nodeName: n1, containers: [{name: c, ports: [{containerPort: 80}]}]}",
                ),
            )),
        )
    })
    .await
    .unwrap();
    let mut stream = c
        .watch(WatchRequest {
            node: "n1".into(),
            applied_version: 0,
            workloads: vec![LocalWorkload {
                key: "shop/web".into(),
                ips: vec!["10.9.0.1".into()],
                interface: "veth1".into(),
                ..Default::default()
            }],
            agent_version: "test".into(),
            accepts_parts: false,
        })
        .await
        .unwrap()
        .into_inner();
    let first = stream.message().await.unwrap().unwrap();
    let Payload::Snapshot(doc) = first.payload().unwrap() else {
        panic!("a new agent gets the whole model first");
    };
    let web = doc.workloads.iter().find(|w| w.name == "web").unwrap();
    assert_eq!(
        web.ips,
        vec!["10.9.0.1".parse::<std::net::IpAddr>().unwrap()]
    );
    assert_eq!(web.node.as_deref(), Some("n1"));
    let (b, a) = (base.clone(), admin.clone());
    let rev = tokio::task::spawn_blocking(move || {
        call(
            &b,
            "POST",
            "/v1/apply",
            Some(&a),
            Some(apply_body("p.yaml", POLICY)),
        )
        .1["revision"]
            .as_u64()
            .unwrap()
    })
    .await
    .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), stream.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(next.version, rev);
    // Then only what changed: the one policy, on top of the snapshot's version.
    match next.payload().unwrap() {
        Payload::Delta {
            base_version,
            delta,
        } => {
            assert_eq!(base_version, first.version);
            assert_eq!(delta.policies.len(), 1);
            assert_eq!(delta.len(), 1);
        }
        p => panic!("expected a delta, got {p:?}"),
    }
    // Reconnecting at the latest version costs a marker, not the model; at an older one, the
    // snapshot again.
    for (applied, snapshot) in [(rev, false), (first.version, true)] {
        let again = c
            .watch(WatchRequest {
                node: "n1".into(),
                applied_version: applied,
                workloads: vec![LocalWorkload {
                    key: "shop/web".into(),
                    ips: vec!["10.9.0.1".into()],
                    interface: "veth1".into(),
                    ..Default::default()
                }],
                agent_version: "test".into(),
                accepts_parts: false,
            })
            .await
            .unwrap()
            .into_inner()
            .message()
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.version, rev);
        match again.payload().unwrap() {
            Payload::Snapshot(d) => {
                assert!(snapshot);
                assert_eq!(d.policies.len(), 1);
            }
            Payload::Delta {
                base_version,
                delta,
            } => {
                assert!(!snapshot);
                assert_eq!(base_version, rev);
                assert!(delta.is_empty());
            }
        }
    }
    // Not acked yet: the node is pending on the newest revision, and for how long.
    let (s, v) = get("/v1/nodes").await;
    assert_eq!(s, 200);
    assert!(v["items"][0]["lag"].as_u64().unwrap() > 0, "{v}");
    assert!(v["items"][0]["pending_ms"].as_i64().unwrap() >= 0, "{v}");
    c.ack(AckRequest {
        node: "n1".into(),
        version: rev,
        apply_micros: 1234,
        error: String::new(),
        applied_unix_micros: 1,
    })
    .await
    .unwrap();
    let (s, v) = get("/v1/nodes").await;
    assert_eq!(s, 200);
    assert_eq!(v["items"][0]["applied_version"], rev);
    assert_eq!(v["items"][0]["lag"], 0);
    assert!(v["items"][0].get("pending_ms").is_none(), "{v}");

    // A node that cannot enforce a revision (full maps) says so; the manager raises an alert.
    c.ack(AckRequest {
        node: "n1".into(),
        version: rev,
        error: "datapath: cw_policy: map full".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let (s, v) = get("/v1/alerts").await;
    assert_eq!(s, 200);
    let failed: Vec<&serde_json::Value> = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "enforcement-failed")
        .collect();
    assert_eq!(failed.len(), 1, "{v}");
    let msg = failed[0]["message"].as_str().unwrap();
    assert!(msg.contains("node n1") && msg.contains("map full"), "{msg}");
    // A compromised node's error text: huge, with newlines and terminal escapes. It is stored
    // bounded and printable, and a second failure within the hour raises no second alert.
    c.ack(AckRequest {
        node: "n1".into(),
        version: rev,
        error: format!("forged\nALERT 1 [escaped]\x1b[2J{}", "x".repeat(1 << 20)),
        ..Default::default()
    })
    .await
    .unwrap();
    let (_, v) = get("/v1/nodes").await;
    let last = v["items"][0]["last_error"].as_str().unwrap();
    assert!(last.len() <= 1100, "{} bytes kept", last.len());
    assert!(!last.chars().any(char::is_control), "{last:?}");
    let (_, v) = get("/v1/alerts").await;
    let n = v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["kind"] == "enforcement-failed")
        .count();
    assert_eq!(n, 1, "one alert per node per hour: {v}");

    // The bootstrap token cannot take over a node that joined (attack: Join(token, "n1")).
    let mut c0 = BootstrapClient::new(channel(g, &ca, None).await.unwrap());
    let e = c0
        .join(JoinRequest {
            token: boot,
            node: "n1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    c.ack(AckRequest {
        node: "n1".into(),
        version: rev,
        ..Default::default()
    })
    .await
    .expect("the real n1 keeps working");
    // An admin's replacement token does: the old certificate stops working at once.
    let (s, v) = {
        let (base, admin) = (base.clone(), admin.clone());
        tokio::task::spawn_blocking(move || {
            call(
                &base,
                "POST",
                "/v1/tokens",
                Some(&admin),
                Some(serde_json::json!({"role": "bootstrap", "name": "replace n1", "node": "n1", "replace": true, "single_use": true})),
            )
        })
        .await
        .unwrap()
    };
    assert_eq!(s, 200, "{v}");
    let replace = v["token"].as_str().unwrap().to_string();
    c0.join(JoinRequest {
        token: replace.clone(),
        node: "n1".into(),
    })
    .await
    .unwrap();
    let e = c
        .ack(AckRequest {
            node: "n1".into(),
            version: rev,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated);
    // Single-use: the replacement token does not work twice.
    let e = c0
        .join(JoinRequest {
            token: replace,
            node: "n1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// An agent that reads its stream slowly (it fell more than 256 revisions behind) still ends
/// at exactly the manager's state: deltas apply in order on top of what it holds, and after
/// the gap it gets a snapshot again, never a delta from a version it does not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_agent_gets_a_snapshot_after_falling_behind_and_ends_in_step() {
    let dir = tmpdir("lag");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let mut c = joined(running.grpc, &ca, &boot, "n1").await;
    let mut stream = c
        .watch(WatchRequest {
            node: "n1".into(),
            agent_version: "test".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    // 300 revisions while the agent reads nothing: pods come and go, labels change.
    let (b, a) = (base.clone(), admin.clone());
    let last = tokio::task::spawn_blocking(move || {
        let mut rev = 0;
        for i in 0..300 {
            let pod = format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{}, namespace: shop, labels: {{v: \"{i}\"}}}}\nstatus: {{podIP: 10.9.1.{}}}\n",
                i % 7,
                i % 7 + 1
            );
            let path = if i % 5 == 4 { "/v1/delete" } else { "/v1/apply" };
            let (s, v) = call(&b, "POST", path, Some(&a), Some(apply_body("p.yaml", &pod)));
            if s == 200 {
                rev = v["revision"].as_u64().unwrap();
            }
        }
        rev
    })
    .await
    .unwrap();
    let mut held: Option<(u64, cellwall_proto::StateDoc)> = None;
    let mut snapshots = 0;
    while held.as_ref().map(|h| h.0) != Some(last) {
        let m = tokio::time::timeout(Duration::from_secs(10), stream.message())
            .await
            .expect("the stream reaches the last revision")
            .unwrap()
            .unwrap();
        match m.payload().unwrap() {
            Payload::Snapshot(d) => {
                snapshots += 1;
                held = Some((m.version, d));
            }
            Payload::Delta {
                base_version,
                delta,
            } => {
                let (v, d) = held.as_mut().expect("a snapshot comes first");
                assert_eq!(
                    base_version, *v,
                    "a delta from a version the agent does not hold"
                );
                d.apply(delta);
                *v = m.version;
            }
        }
    }
    assert!(snapshots >= 2, "falling behind should have cost a snapshot");
    let (_, doc) = held.unwrap();
    let p = running.manager.published();
    assert_eq!(p.revision, last);
    assert_eq!(&doc, p.doc.as_ref());
}

/// A snapshot larger than a part goes in parts to an agent that takes them (each part at most
/// 64 KiB, slices of the one encoded copy) and whole to one that does not (an earlier
/// version); the parts joined are byte for byte the whole message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_goes_in_parts_only_to_agents_that_take_them() {
    let dir = tmpdir("parts");
    let running = start(config(&dir)).await.unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.pem")).unwrap();
    let (boot, admin) = (token(&dir, "bootstrap.token"), token(&dir, "admin.token"));
    let base = format!("http://{}", running.api);
    let pods: String = (0..5000)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: shop, labels: {{app: a{}, v: \"{}\"}}}}\nstatus: {{podIP: 10.9.{}.{}}}\n---\n",
                i % 37,
                i * 7919 % 10007,
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    let (s, _) = tokio::task::spawn_blocking(move || {
        call(
            &base,
            "POST",
            "/v1/apply",
            Some(&admin),
            Some(apply_body("p.yaml", &pods)),
        )
    })
    .await
    .unwrap();
    assert_eq!(s, 200);
    let watch = |node: &'static str, parts: bool| {
        let (ca, boot) = (ca.clone(), boot.clone());
        let g = running.grpc;
        async move {
            let mut c = joined(g, &ca, &boot, node).await;
            let mut s = c
                .watch(WatchRequest {
                    node: node.into(),
                    agent_version: "test".into(),
                    accepts_parts: parts,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            let mut got = Vec::new();
            loop {
                let m = tokio::time::timeout(Duration::from_secs(10), s.message())
                    .await
                    .expect("the snapshot arrives")
                    .unwrap()
                    .unwrap();
                let more = m.more;
                got.push(m);
                if !more {
                    return got;
                }
            }
        }
    };
    let parts = watch("n1", true).await;
    let whole = watch("n2", false).await;
    assert_eq!(whole.len(), 1);
    let n = whole[0].state_json.len();
    assert!(
        n > PART_BYTES,
        "the snapshot is larger than a part: {n} bytes"
    );
    assert_eq!(parts.len(), whole[0].state_json.len().div_ceil(PART_BYTES));
    assert!(parts.iter().all(|p| p.state_json.len() <= PART_BYTES));
    let mut r = Reassembly::new(256 << 20);
    let joined: Vec<_> = parts
        .into_iter()
        .filter_map(|p| r.push(p).unwrap())
        .collect();
    assert_eq!(joined, whole);
    match joined[0].payload().unwrap() {
        Payload::Snapshot(d) => assert_eq!(&d, running.manager.published().doc.as_ref()),
        p => panic!("{p:?}"),
    }
    running.stop().await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

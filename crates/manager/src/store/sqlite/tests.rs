use super::*;
use cellwall_policy::discover::{Endpoint, Observed};

fn q(workload: &str, reason: &str) -> Body {
    Body::Quarantine(QuarantineRecord {
        workload: workload.into(),
        reason: reason.into(),
        allow_from: None,
    })
}

fn w(kind: Kind, key: &str, body: Option<Body>) -> Write {
    Write {
        kind,
        key: key.into(),
        body,
    }
}

fn tmp(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("cw-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn versions_audit_and_reopen() {
    let dir = tmp("versions");
    let path = dir.join("t.db");
    let k = Kind::Quarantine;
    {
        let s = SqliteStore::open(&path).unwrap();
        let c = s.write("alice", &[w(k, "p", Some(q("a/p", "1")))]).unwrap();
        assert_eq!(
            (c.revision, c.changes[0].action),
            (1, ChangeAction::Created)
        );
        let c = s.write("alice", &[w(k, "p", Some(q("a/p", "1")))]).unwrap();
        assert_eq!(
            (c.revision, c.changes[0].action),
            (1, ChangeAction::Unchanged)
        );
        let c = s.write("bob", &[w(k, "p", Some(q("a/p", "2")))]).unwrap();
        assert_eq!(
            (c.revision, c.changes[0].action),
            (2, ChangeAction::Configured)
        );
        let c = s.write("carol", &[w(k, "p", None)]).unwrap();
        assert_eq!(
            (c.revision, c.changes[0].action),
            (3, ChangeAction::Deleted)
        );
        let c = s.write("carol", &[w(k, "q", None)]).unwrap();
        assert_eq!(
            (c.revision, c.changes[0].action),
            (3, ChangeAction::NotFound)
        );
        s.write("dave", &[w(k, "n", Some(q("b/n", "x")))]).unwrap();
    }
    // Everything survives a reopen: versions, actors, deletions, the revision.
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(s.revision().unwrap(), 4);
    let h = s.history(k, "p").unwrap();
    let who: Vec<_> = h.iter().map(|v| (v.actor.as_str(), v.deleted)).collect();
    assert_eq!(who, [("alice", false), ("bob", false), ("carol", true)]);
    assert_eq!(h[1].body, Some(q("a/p", "2")));
    let cur = s.current(k).unwrap();
    assert_eq!(cur.len(), 1);
    assert_eq!(cur[0].key, "n");
    assert!(s.current(Kind::Policy).unwrap().is_empty());
    let a = s.audit(10).unwrap();
    assert_eq!(a[0].actor, "dave");
    assert!(a[0].body.is_none(), "audit listings leave bodies out");
    assert!(a[1].deleted);
    let ch = s.changes_since(2).unwrap();
    let keys: Vec<_> = ch
        .iter()
        .map(|c| (c.key.as_str(), c.body.is_some()))
        .collect();
    assert_eq!(keys, [("p", false), ("n", true)]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unknown_kinds_are_skipped_and_corrupt_bodies_reported() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.write("a", &[w(Kind::Quarantine, "x/y", Some(q("x/y", "r")))])
        .unwrap();
    {
        let db = s.conn();
        // What a newer manager might have written, and a damaged body.
        db.execute(
            "INSERT INTO objects VALUES ('Gizmo', 'g', 1, 2, '{}', 'z', 0, 1)",
            [],
        )
        .unwrap();
        db.execute(
            "INSERT INTO objects VALUES ('Policy', 'p', 1, 3, '{\"not\": \"a policy\"}', 'z', 0, 1)",
            [],
        )
        .unwrap();
    }
    let a = s.audit(10).unwrap();
    assert!(a.iter().all(|v| v.kind != Kind::Policy || v.key == "p"));
    assert_eq!(a.len(), 2, "the unknown kind is not read as another kind");
    match s.changes_since(0) {
        Err(StoreError::Corrupt { kind, key, .. }) => {
            assert_eq!((kind.as_str(), key.as_str()), ("Policy", "p"))
        }
        other => panic!("{other:?}"),
    }
}

fn flow(verdict: Verdict, count: u64) -> FlowRow {
    FlowRow {
        id: 0,
        time_unix_ns: 5,
        node: String::new(),
        src: "a/b".into(),
        dst: "c/d".into(),
        src_ip: "10.0.0.1".parse().unwrap(),
        dst_ip: "10.0.0.2".parse().unwrap(),
        protocol: "TCP".into(),
        port: 80,
        verdict,
        direction: FlowDirection::Egress,
        rule: Some("r".into()),
        count,
        dst_names: Vec::new(),
    }
}

fn cert(sha256: &str, expires_ms: i64) -> NodeCertRecord {
    NodeCertRecord {
        sha256: sha256.into(),
        expires_ms,
        ca: "ca".into(),
    }
}

/// A renewal keeps the certificate it was asked with valid until the new one is used; a
/// renewal asked with a certificate that is neither current nor previous changes nothing.
#[test]
fn renewed_certificates_overlap_until_first_use() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    let owner = |h: &str| s.node_by_cert(h).unwrap().map(|o| o.previous);
    s.join_node("n1", &cert("a", 10)).unwrap();
    assert!(s.renew_node_cert("n1", "a", &cert("b", 20)).unwrap());
    assert_eq!((owner("a"), owner("b")), (Some(true), Some(false)));
    // The answer was lost: the agent renews again with "a"; "b" (never used) is dropped.
    assert!(s.renew_node_cert("n1", "a", &cert("c", 30)).unwrap());
    assert_eq!(
        (owner("a"), owner("b"), owner("c")),
        (Some(true), None, Some(false))
    );
    assert!(
        !s.renew_node_cert("n1", "b", &cert("d", 40)).unwrap(),
        "b is nobody's"
    );
    assert!(!s.renew_node_cert("n1", "", &cert("d", 40)).unwrap());
    assert!(s.retire_previous_cert("n1").unwrap());
    assert!(!s.retire_previous_cert("n1").unwrap());
    assert_eq!((owner("a"), owner("c")), (None, Some(false)));
    assert_eq!(s.nodes().unwrap()[0].cert_expires_ms, Some(30));
    // A join (replacement) or a revocation leaves no previous certificate behind.
    assert!(s.renew_node_cert("n1", "c", &cert("e", 50)).unwrap());
    assert!(s.revoke_node("n1").unwrap());
    assert_eq!((owner("c"), owner("e")), (None, None));
    assert!(!s.renew_node_cert("n1", "e", &cert("f", 60)).unwrap());
    assert_eq!(owner(""), None);
}

/// A withdrawn node is known as withdrawn (a ServiceAccount join does not bring it back) and
/// is no longer counted among the nodes a policy's status waits for; a node never seen is
/// neither.
#[test]
fn withdrawn_nodes_are_told_apart_from_unknown_ones() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("a", 10)).unwrap();
    s.join_node("n2", &cert("b", 10)).unwrap();
    let names = |s: &SqliteStore| -> Vec<String> {
        s.nodes_applied()
            .unwrap()
            .into_iter()
            .map(|n| n.name)
            .collect()
    };
    assert_eq!(names(&s), ["n1", "n2"]);
    assert!(s.revoke_node("n1").unwrap());
    assert!(s.node_withdrawn("n1").unwrap());
    assert!(!s.node_withdrawn("n2").unwrap());
    assert!(!s.node_withdrawn("never").unwrap());
    assert_eq!(names(&s), ["n2"]);
    s.join_node("n1", &cert("c", 10)).unwrap();
    assert!(!s.node_withdrawn("n1").unwrap());
}

#[test]
fn flow_loss_is_counted() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("abc", 1)).unwrap();
    let owner = |h: &str| s.node_by_cert(h).unwrap().map(|o| (o.node, o.previous));
    assert_eq!(owner("abc"), Some(("n1".into(), false)));
    assert_eq!(owner("other"), None);
    let mut row = flow(Verdict::Denied, 2);
    row.dst_names = vec!["api.example.com".into(), "edge.cdn.net".into()];
    s.insert_flows("n1", std::slice::from_ref(&row), 1, 0, 0)
        .unwrap();
    s.insert_flows("n1", std::slice::from_ref(&row), 4, 7, 3)
        .unwrap();
    let n = &s.nodes().unwrap()[0];
    assert_eq!(
        (
            n.flow_batches_missed,
            n.kernel_events_lost,
            n.agent_records_dropped
        ),
        (2, 7, 3)
    );
    let f = FlowFilter {
        workload: Some("c/d".into()),
        verdict: Some(Verdict::Denied),
        limit: 10,
        ..Default::default()
    };
    let got = s.flows(&f).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(
        (got[0].src_ip, got[0].verdict),
        (row.src_ip, Verdict::Denied)
    );
    assert_eq!(got[0].dst_names, row.dst_names, "DNS names round-trip");
    let f = FlowFilter {
        verdict: Some(Verdict::Allowed),
        limit: 10,
        ..Default::default()
    };
    assert!(s.flows(&f).unwrap().is_empty());
}

/// The console pages back over history (`before`) and filters by port: the newest `limit`
/// records below the id, oldest first.
#[test]
fn flows_page_back_by_id_and_filter_by_port() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("abc", 1)).unwrap();
    let rows: Vec<FlowRow> = (0..10)
        .map(|i| FlowRow {
            port: if i % 2 == 0 { 80 } else { 443 },
            ..flow(Verdict::Allowed, 1)
        })
        .collect();
    s.insert_flows("n1", &rows, 1, 0, 0).unwrap();
    let all = s
        .flows(&FlowFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<i64> = all.iter().map(|r| r.id).collect();
    let page = |before: Option<i64>, port: Option<u16>| -> Vec<i64> {
        let f = FlowFilter {
            before_id: before,
            port,
            limit: 3,
            ..Default::default()
        };
        s.flows(&f).unwrap().iter().map(|r| r.id).collect()
    };
    assert_eq!(page(None, None), ids[7..].to_vec());
    assert_eq!(page(Some(ids[7]), None), ids[4..7].to_vec());
    assert_eq!(page(Some(ids[1]), None), ids[..1].to_vec());
    let https = page(None, Some(443));
    assert_eq!(https, vec![ids[5], ids[7], ids[9]]);
    assert_eq!(page(Some(ids[5]), Some(443)), vec![ids[1], ids[3]]);
}

#[test]
fn counts_saturate_instead_of_wrapping() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("abc", 1)).unwrap();
    s.insert_flows("n1", &[flow(Verdict::Allowed, u64::MAX)], 1, 0, 0)
        .unwrap();
    let got = s
        .flows(&FlowFilter {
            limit: 1,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(got[0].count, i64::MAX as u64);
    let h = HistRow {
        bucket: 1,
        flow: HistFlow {
            src: Endpoint::External {
                ip: "10.0.0.1".parse().unwrap(),
                names: vec![],
            },
            dst: Endpoint::External {
                ip: "10.0.0.2".parse().unwrap(),
                names: vec!["api.example.com".into()],
            },
            protocol: cellwall_policy::Protocol::Tcp,
            port: 80,
            observed: Observed::Allowed,
            rule: None,
            connections: u64::MAX - 1,
            first_ns: BUCKET_NS,
            last_ns: BUCKET_NS,
        },
    };
    s.add_history(&[h.clone(), h.clone()]).unwrap();
    let back = s.history_since(0).unwrap();
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].connections, i64::MAX as u64);
    assert_eq!(back[0].dst, h.flow.dst, "names kept in history");
}

#[test]
fn missed_batches_saturate_instead_of_turning_into_a_float() {
    // Found by the rest fuzz target: two jumps near i64::MAX overflowed the SQL sum, which
    // SQLite keeps as REAL, and every later node listing failed.
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("abc", 1)).unwrap();
    let max = i64::MAX as u64;
    for seq in [1, max - 1, 2, max] {
        s.insert_flows("n1", &[], seq, 0, 0).unwrap();
    }
    assert_eq!(s.nodes().unwrap()[0].flow_batches_missed, max);
}

#[test]
fn reported_workloads_round_trip_and_bump_only_on_change() {
    let s = SqliteStore::open(Path::new(":memory:")).unwrap();
    s.join_node("n1", &cert("abc", 1)).unwrap();
    let r = vec![ReportedWorkload {
        key: "a/b".into(),
        ips: vec!["10.0.0.1".into()],
        interface: "veth1".into(),
        labels: Default::default(),
        host: false,
    }];
    assert!(s.report_workloads("n1", &r).unwrap().is_some());
    assert!(s.report_workloads("n1", &r).unwrap().is_none());
    assert_eq!(s.nodes().unwrap()[0].workloads, r);
}

#[test]
fn the_database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp("perm");
    let path = dir.join("c.db");
    let s = SqliteStore::open(&path).unwrap();
    s.log_event("a", "b", "c").unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let p = std::path::PathBuf::from(format!("{}{suffix}", path.display()));
        if p.exists() {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{}", p.display());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A data directory of the first release (schema 1: tokens without binding or expiry, nodes
/// without certificate expiry) opens under this build and keeps what it held: its tokens still
/// authenticate (unbound, unexpiring, as they were), its nodes keep their certificates.
#[test]
fn a_first_release_database_opens_and_keeps_its_rows() {
    let dir = tmp("schema1");
    let path = dir.join("v1.db");
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch(SCHEMA).unwrap();
        db.execute_batch(
            "INSERT INTO tokens(hash, role, name, created_ms) VALUES ('h-admin', 'admin', 'ops', 5);
             INSERT INTO nodes(name, joined_ms, cert_sha256, applied_version)
               VALUES ('n1', 7, 'cert-n1', 3);
             UPDATE meta SET v = 12 WHERE k = 'revision';",
        )
        .unwrap();
        let v: i64 = db
            .query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 1);
    }
    let s = SqliteStore::open(&path).unwrap();
    let t = s.token("h-admin").unwrap().expect("the token survives");
    assert_eq!((t.token.name.as_str(), t.token.node.clone()), ("ops", None));
    assert_eq!(
        (t.token.expires_ms, t.revoked, t.used_ms),
        (None, false, None)
    );
    let owner = s
        .node_by_cert("cert-n1")
        .unwrap()
        .expect("the node's certificate survives");
    assert_eq!((owner.node.as_str(), owner.previous), ("n1", false));
    let n = &s.nodes().unwrap()[0];
    assert_eq!((n.cert_expires_ms, n.refused_reports), (None, 0));
    let schema: i64 =
        s.db.lock()
            .unwrap()
            .query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0))
            .unwrap();
    assert_eq!(schema, migrate::SCHEMA_VERSION);
    drop(s);
    // Opening again is a no-op.
    assert!(SqliteStore::open(&path).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}

/// One object's current version, as a watch event checks it (not every object of its kind).
#[test]
fn current_one_follows_writes_and_deletes() {
    let dir = tmp("current-one");
    let s = SqliteStore::open(&dir.join("t.db")).unwrap();
    let k = Kind::Quarantine;
    assert!(s.current_one(k, "p").unwrap().is_none());
    s.write("alice", &[w(k, "p", Some(q("a/p", "1")))]).unwrap();
    s.write("kubernetes:c/pods", &[w(k, "p", Some(q("a/p", "2")))])
        .unwrap();
    s.write("alice", &[w(k, "r", Some(q("a/r", "1")))]).unwrap();
    let c = s.current_one(k, "p").unwrap().unwrap();
    assert_eq!(
        (c.version, c.changed_by.as_str(), c.body),
        (2, "kubernetes:c/pods", q("a/p", "2"))
    );
    assert_eq!(
        s.declarer(k, "p").unwrap().as_deref(),
        Some("kubernetes:c/pods")
    );
    s.write("bob", &[w(k, "p", None)]).unwrap();
    assert!(s.current_one(k, "p").unwrap().is_none());
    assert!(s.current_one(Kind::Pod, "r").unwrap().is_none());
    // The declarers, bodies unread: a deleted object has none.
    assert_eq!(s.declarer(k, "p").unwrap(), None);
    assert_eq!(s.declarer(Kind::Pod, "r").unwrap(), None);
    assert_eq!(
        s.declarers(k).unwrap(),
        vec![("r".to_string(), "alice".to_string())]
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Who declared an object is part of it: the same body from another actor is a new version
/// (a cluster takes over what REST wrote first); from the same actor it is unchanged.
#[test]
fn the_same_body_from_another_actor_is_a_new_version() {
    let dir = tmp("owner");
    let s = SqliteStore::open(&dir.join("t.db")).unwrap();
    let k = Kind::Quarantine;
    s.write("alice", &[w(k, "p", Some(q("a/p", "1")))]).unwrap();
    let c = s
        .write("kubernetes:c/pods", &[w(k, "p", Some(q("a/p", "1")))])
        .unwrap();
    assert_eq!(
        (c.revision, c.changes[0].action, c.changes[0].version),
        (2, ChangeAction::Configured, 2)
    );
    let c = s
        .write("kubernetes:c/pods", &[w(k, "p", Some(q("a/p", "1")))])
        .unwrap();
    assert_eq!(
        (c.revision, c.changes[0].action),
        (2, ChangeAction::Unchanged)
    );
    assert_eq!(
        s.current_one(k, "p").unwrap().unwrap().changed_by,
        "kubernetes:c/pods"
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Rows written before schema 5 hold sorted-key text; this build writes field order. The same
/// body applied again after the upgrade is unchanged (compared by value), not a new version of
/// every object; a changed one is a new version, and from then on text decides.
#[test]
fn bodies_of_an_earlier_schema_compare_by_value() {
    let dir = tmp("schema4");
    let path = dir.join("v4.db");
    let k = Kind::Quarantine;
    let body = q("a/p", "1");
    let sorted = serde_json::to_string(&body.to_json()).unwrap();
    assert_ne!(
        sorted,
        super::objects::encode(&body),
        "the two forms differ"
    );
    // Field order is the stored form: a reordered stored type makes new versions (objects.rs).
    assert_eq!(
        super::objects::encode(&body),
        r#"{"workload":"a/p","reason":"1","allow_from":null}"#
    );
    {
        let db = Connection::open(&path).unwrap();
        db.execute_batch(SCHEMA).unwrap();
        db.execute(
            "INSERT INTO objects(kind, key, version, revision, body, actor, at_ms)
             VALUES ('Quarantine', 'p', 1, 1, ?1, 'alice', 0)",
            [&sorted],
        )
        .unwrap();
        db.execute_batch("UPDATE meta SET v = 1 WHERE k = 'revision'")
            .unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    let action =
        |key: &str, b: Body| s.write("alice", &[w(k, key, Some(b))]).unwrap().changes[0].action;
    let row = |key: &str| -> (String, bool) {
        s.conn()
            .query_row(
                "SELECT body, direct FROM objects WHERE kind = 'Quarantine' AND key = ?1
                 ORDER BY version DESC LIMIT 1",
                [key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap()
    };
    assert_eq!(action("p", q("a/p", "1")), ChangeAction::Unchanged);
    // Equal by value: rewritten in field order in place, so text alone decides from now on.
    assert_eq!(row("p"), (super::objects::encode(&body), true));
    assert_eq!(s.history(k, "p").unwrap().len(), 1);
    assert_eq!(action("p", q("a/p", "2")), ChangeAction::Configured);
    assert_eq!(action("p", q("a/p", "2")), ChangeAction::Unchanged);
    assert_eq!(action("p", q("a/p", "1")), ChangeAction::Configured);
    assert_eq!(s.history(k, "p").unwrap().len(), 3);
    // An earlier row that no longer decodes is replaced by a new version, not an error.
    s.conn()
        .execute(
            "INSERT INTO objects(kind, key, version, revision, body, actor, at_ms)
             VALUES ('Quarantine', 'd', 1, 1, '{\"damaged\": 1}', 'alice', 0)",
            [],
        )
        .unwrap();
    assert_eq!(action("d", q("a/d", "1")), ChangeAction::Configured);
    assert_eq!(row("d"), (super::objects::encode(&q("a/d", "1")), true));
    drop(s);
    let _ = std::fs::remove_dir_all(&dir);
}

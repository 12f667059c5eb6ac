//! The model crosses the wire as JSON of the policy crate's types (`state_json`); these tests pin
//! that JSON to committed fixtures, so renaming a Rust field fails here before it silently
//! changes what agents receive. `UPDATE_GOLDEN=1 cargo test -p cellwall-proto --test golden`
//! rewrites the fixtures after a deliberate change (review the diff: it is a wire change).

use cellwall_policy::load::{parse_file, Object};
use cellwall_policy::{Inventory, Policy};
use cellwall_proto::{DesiredState, Payload, StateDelta, StateDoc};
use std::path::PathBuf;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The model of `fixtures/model.yaml`.
fn model() -> StateDoc {
    let text = std::fs::read_to_string(fixtures().join("model.yaml")).unwrap();
    let parsed = parse_file("model.yaml", &text).unwrap();
    assert!(parsed.unknown.is_empty(), "{:?}", parsed.unknown);
    let (mut inv, mut pols) = (Inventory::default(), Vec::<Policy>::new());
    for o in parsed.objects {
        match o.object {
            Object::Namespace(n) => {
                inv.namespaces.insert(n.name.clone(), n);
            }
            Object::Pod(w) => {
                inv.workloads.insert(w.key(), w.into());
            }
            Object::Node(n) => {
                inv.nodes.insert(n.name.clone(), n);
            }
            Object::Policy(p) => pols.push(*p),
            Object::Host(h) => {
                let w = h.workload();
                inv.workloads.insert(w.key(), w.into());
            }
        }
    }
    StateDoc::new(&inv, &pols)
}

/// Compares `value`'s JSON with the fixture `name` (or rewrites it under UPDATE_GOLDEN).
fn golden(name: &str, value: &impl serde::Serialize) {
    let got = serde_json::to_string_pretty(value).unwrap() + "\n";
    let path = fixtures().join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 creates it)", path.display()));
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(got.lines().count().min(want.lines().count()));
        panic!(
            "the wire form of {name} changed at line {}:\n  now:     {}\n  fixture: {}\n\
             A renamed or retyped model field changes what agents receive. If that is \
             deliberate, rerun with UPDATE_GOLDEN=1 and review the diff.",
            line + 1,
            got.lines().nth(line).unwrap_or("(end)"),
            want.lines().nth(line).unwrap_or("(end)")
        );
    }
}

#[test]
fn snapshot_json_is_pinned() {
    let doc = model();
    // Every family and peer kind made it into the model (a fixture that lost them would pin
    // less than it claims).
    assert_eq!(doc.policies.len(), 4);
    assert_eq!(doc.workloads.len(), 2);
    golden("snapshot.json", &doc);
    // And it reads back as the same model, through the message.
    let m = DesiredState::snapshot(3, &doc, 1_700_000_000_000);
    match m.payload().unwrap() {
        Payload::Snapshot(got) => assert_eq!(got, doc),
        p => panic!("{p:?}"),
    }
}

#[test]
fn delta_json_is_pinned() {
    let old = model();
    let mut new = old.clone();
    let mut w = cellwall_policy::Workload::clone(&new.workloads[1]);
    w.labels.insert("tier".into(), "front".into());
    new.workloads[1] = std::sync::Arc::new(w);
    new.workloads.remove(0);
    new.policies.remove(0);
    new.nodes.clear();
    let d = StateDelta::between(&old, &new);
    golden("delta.json", &d);
    let m = DesiredState::delta(4, 3, &d, 1_700_000_000_000);
    match m.payload().unwrap() {
        Payload::Delta {
            base_version: 3,
            delta,
        } => assert_eq!(delta, d),
        p => panic!("{p:?}"),
    }
}

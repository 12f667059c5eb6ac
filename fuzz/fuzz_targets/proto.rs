//! Every gRPC message the manager or an agent receives (`crates/proto`), and the desired state
//! inside `DesiredState`.
//!
//! Input: a selector byte, then the bytes:
//! - 0 JoinRequest, 1 WatchRequest, 2 AckRequest, 3 FlowBatch, 4 DesiredState: protobuf,
//!   decoded with prost (a `DesiredState` then read with `payload()`);
//! - 5 / 6: the JSON of a snapshot / of a delta (`state_json` of an undeflated DesiredState);
//! - 7 / 8: the same JSON, deflated here and sent with `deflate: true` (so the fuzzer mutates
//!   what is inflated; arbitrary deflate streams come through 4);
//! - 9 RenewRequest (protobuf).
//!
//! The selector is the first byte modulo 10.
//!
//! Asserts:
//! - no panic;
//! - a decoded message encodes and decodes to the same message;
//! - a snapshot comes out normalized (every list sorted by key, each key once), its JSON reads
//!   back equal, and it crosses the wire again (`DesiredState::snapshot`, deflated when large)
//!   unchanged;
//! - a delta's JSON reads back equal; applied onto a small document (the golden fixture's
//!   model) it gives what applying its changes one by one gives — updates in order, the last
//!   of a key winning, then removals — whatever its size (small and large deltas take
//!   different code paths), leaves every list sorted and unique, and the delta between the
//!   document before and after turns one into the other.

#![no_main]

use cellwall_policy::load::{into_model, parse_file};
use cellwall_proto::{
    AckRequest, DesiredState, FlowBatch, JoinRequest, Keyed, Payload, RenewRequest, StateDelta,
    StateDoc, WatchRequest,
};
use libfuzzer_sys::fuzz_target;
use prost::Message;
use std::cmp::Ordering;
use std::io::Write;
use std::sync::OnceLock;

fn base() -> &'static StateDoc {
    static DOC: OnceLock<StateDoc> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = include_str!("../../crates/proto/tests/fixtures/model.yaml");
        let parsed = parse_file("model.yaml", text).expect("the fixture parses");
        let (inv, pols) = into_model(parsed.objects.into_iter().map(|o| o.object));
        StateDoc::new(&inv, &pols)
    })
}

fn roundtrip<M: Message + Default + PartialEq + std::fmt::Debug>(b: &[u8]) -> Option<M> {
    let m = M::decode(b).ok()?;
    let again = M::decode(m.encode_to_vec().as_slice()).expect("a re-encoded message decodes");
    assert_eq!(again, m);
    Some(m)
}

fn sorted_unique<T: Keyed>(v: &[T]) -> bool {
    v.windows(2).all(|w| w[0].cmp_item(&w[1]) == Ordering::Less)
}

fn normalized(d: &StateDoc) -> bool {
    sorted_unique(&d.namespaces)
        && sorted_unique(&d.workloads)
        && sorted_unique(&d.nodes)
        && sorted_unique(&d.policies)
}

/// Applying one list's changes the plain way: each update in order, then each removal.
fn reference<T: Keyed>(list: &[T], ups: &[T], removed: &[T::Key]) -> Vec<T> {
    let mut out: Vec<T> = list.to_vec();
    for u in ups {
        match out.iter().position(|x| x.cmp_item(u) == Ordering::Equal) {
            Some(i) => out[i] = u.clone(),
            None => out.push(u.clone()),
        }
    }
    out.retain(|x| !removed.iter().any(|k| x.cmp_key(k) == Ordering::Equal));
    out.sort_by(|a, b| a.cmp_item(b));
    out
}

fn check_snapshot(doc: StateDoc) {
    assert!(normalized(&doc), "a snapshot is read normalized");
    let back = StateDoc::from_json(&doc.to_json()).expect("a snapshot's JSON reads back");
    assert_eq!(back, doc);
    match DesiredState::snapshot(3, &doc, 0).payload() {
        Ok(Payload::Snapshot(again)) => assert_eq!(again, doc),
        other => panic!("a snapshot re-sent reads back as {other:?}"),
    }
}

fn check_delta(delta: StateDelta) {
    let json = serde_json::to_vec(&delta).expect("a delta serializes");
    let back: StateDelta = serde_json::from_slice(&json).expect("a delta's JSON reads back");
    assert_eq!(back, delta);
    let before = base().clone();
    let want = StateDoc {
        namespaces: reference(
            &before.namespaces,
            &delta.namespaces,
            &delta.removed_namespaces,
        ),
        workloads: reference(
            &before.workloads,
            &delta.workloads,
            &delta.removed_workloads,
        ),
        nodes: reference(&before.nodes, &delta.nodes, &delta.removed_nodes),
        policies: reference(&before.policies, &delta.policies, &delta.removed_policies),
    };
    let mut after = before.clone();
    after.apply(delta.clone());
    assert!(
        normalized(&after),
        "apply keeps the lists sorted and unique"
    );
    assert_eq!(after, want, "apply of {} changes", delta.len());
    let d = StateDelta::between(&before, &after);
    let mut again = before.clone();
    again.apply(d);
    assert_eq!(again, after);
}

fn check_payload(m: &DesiredState) {
    match m.payload() {
        Ok(Payload::Snapshot(doc)) => check_snapshot(doc),
        Ok(Payload::Delta {
            base_version,
            delta,
        }) => {
            assert_eq!(base_version, m.base_version);
            check_delta(delta)
        }
        Err(_) => {}
    }
}

fn deflate(b: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
    z.write_all(b).unwrap();
    z.finish().unwrap()
}

fn state(json: &[u8], delta: bool, deflated: bool) -> DesiredState {
    DesiredState {
        version: 2,
        state_json: json.to_vec().into(),
        issued_unix_ms: 0,
        base_version: u64::from(delta),
        deflate: deflated,
        more: false,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, b)) = data.split_first() else {
        return;
    };
    match sel % 10 {
        0 => drop(roundtrip::<JoinRequest>(b)),
        1 => drop(roundtrip::<WatchRequest>(b)),
        2 => drop(roundtrip::<AckRequest>(b)),
        3 => drop(roundtrip::<FlowBatch>(b)),
        4 => {
            if let Some(m) = roundtrip::<DesiredState>(b) {
                check_payload(&m);
                // A part (or a whole message) from a hostile stream: an error, never a panic,
                // and never more than the limit held.
                let mut r = cellwall_proto::Reassembly::new(1 << 12);
                for _ in 0..3 {
                    let _ = r.push(m.clone());
                }
            }
        }
        5 => check_payload(&state(b, false, false)),
        6 => check_payload(&state(b, true, false)),
        // The input is the JSON: deflating it here lets the fuzzer mutate what is inflated.
        7 => check_payload(&state(&deflate(b), false, true)),
        8 => check_payload(&state(&deflate(b), true, true)),
        _ => drop(roundtrip::<RenewRequest>(b)),
    }
});

//! The enforcement loop against the in-memory datapath (unit tier: no root, no manager): order,
//! resync, expiry on the agent's clock, persistence before acks, restarts, flow collection.

mod common;

use cellwall_agent::enforce::{Ack, Clock, Enforcement};
use cellwall_agent::flows::FlowQueue;
use cellwall_agent::metrics::Metrics;
use cellwall_agent::state::StateDir;
use cellwall_agent::NodeAgent;
use cellwall_datapath::{abi, Event, FakeDatapath};
use cellwall_proto::{DesiredState, StateDelta, StateDoc};
use common::*;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// Unix seconds the tests start at.
const T0: u64 = 1_800_000_000;

struct Rig {
    e: Enforcement<FakeDatapath>,
    dp: FakeDatapath,
    state: StateDir,
    metrics: Arc<Metrics>,
    flows: Arc<FlowQueue>,
    now: Arc<AtomicU64>,
}

fn rig(dir: &std::path::Path, queue: usize) -> Rig {
    let dp = FakeDatapath::new();
    let state = StateDir::create(dir).unwrap();
    let metrics = Arc::new(Metrics::new());
    let flows = Arc::new(FlowQueue::new(queue, metrics.records_dropped.clone()));
    let now = Arc::new(AtomicU64::new(T0));
    let clock: Clock = {
        let now = now.clone();
        Arc::new(move || Duration::from_secs(now.load(Relaxed)))
    };
    let node = NodeAgent::new(dp.clone(), endpoints(), "n1", false).unwrap();
    let e = Enforcement::new(node, state.clone(), metrics.clone(), flows.clone()).with_clock(clock);
    Rig {
        e,
        dp,
        state,
        metrics,
        flows,
        now,
    }
}

fn saved_version(st: &StateDir) -> u64 {
    st.load_desired().unwrap().expect("a saved state").0
}

fn delta(version: u64, base: u64, from: &StateDoc, to: &StateDoc) -> DesiredState {
    DesiredState::delta(version, base, &StateDelta::between(from, to), 0)
}

fn assert_ok(a: &Ack, version: u64) {
    assert!(a.ok(), "version {version}: {}", a.error);
    assert_eq!(a.version, version);
    assert!(!a.resync);
}

#[test]
fn a_snapshot_then_deltas_apply_in_order_and_a_wrong_base_asks_for_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(dir.path(), 100);
    let (open, closed) = (doc(&[]), doc(&[B_CLOSED]));
    let granted = doc(&[B_CLOSED, &grant(T0 as i64 + 3600)]);

    let a = r.e.handle(&DesiredState::snapshot(1, &open, 0));
    assert_ok(&a, 1);
    assert!(a_reaches_b(&r.dp));
    assert_eq!(saved_version(&r.state), 1, "persisted before the ack");

    let a = r.e.handle(&delta(2, 1, &open, &closed));
    assert_ok(&a, 2);
    assert!(!a_reaches_b(&r.dp), "the delta closed x/b");
    assert_eq!(saved_version(&r.state), 2);

    let a = r.e.handle(&delta(3, 2, &closed, &granted));
    assert_ok(&a, 3);
    assert!(a_reaches_b(&r.dp), "the grant opened x/b to x/a");
    assert_eq!((r.e.held(), r.metrics.applied_version.get()), (3, 3));

    // A delta that does not start from what is held changes nothing and asks for a resync.
    let applies = r.dp.applies();
    let a = r.e.handle(&delta(4, 2, &closed, &open));
    assert!(!a.ok() && a.resync, "{a:?}");
    assert!(
        a.error.contains("from version 2") && a.error.contains("holding 3"),
        "{}",
        a.error
    );
    assert_eq!(r.dp.applies(), applies, "nothing reached the datapath");
    assert!(a_reaches_b(&r.dp));
    assert_eq!((r.e.held(), saved_version(&r.state)), (3, 3));
    assert_eq!(r.metrics.apply_errors.get(), 1);

    // The snapshot the session reconnects for is applied whatever is held.
    let a = r.e.handle(&DesiredState::snapshot(5, &closed, 0));
    assert_ok(&a, 5);
    assert!(!a_reaches_b(&r.dp));
    // A reconnect to a manager at the version held: an empty delta, nothing to compile.
    let applies = r.dp.applies();
    assert_ok(&r.e.handle(&delta(5, 5, &closed, &closed)), 5);
    assert_eq!(r.dp.applies(), applies);
}

#[test]
fn an_expired_grant_is_retired_on_the_agents_clock() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(dir.path(), 100);
    let until = T0 as i64 + 90;
    assert_ok(
        &r.e.handle(&DesiredState::snapshot(
            1,
            &doc(&[B_CLOSED, &grant(until)]),
            0,
        )),
        1,
    );
    assert!(a_reaches_b(&r.dp));
    assert_eq!(r.e.node().next_expiry(), Some(until));

    r.now.store(until as u64 - 1, Relaxed);
    assert!(!r.e.retire_expired(), "not yet");
    assert!(a_reaches_b(&r.dp));

    // No manager says anything: the agent's own clock ends the grant.
    r.now.store(until as u64, Relaxed);
    assert!(r.e.retire_expired());
    assert!(!a_reaches_b(&r.dp), "the grant ended at its expiresAt");
    assert_eq!(r.e.node().next_expiry(), None);
    assert!(!r.e.retire_expired(), "nothing left to retire");
}

#[test]
fn a_restart_reapplies_the_saved_state_before_hearing_from_the_manager() {
    let dir = tempfile::tempdir().unwrap();
    let until = T0 as i64 + 600;
    {
        let mut r = rig(dir.path(), 100);
        assert_ok(&r.e.handle(&DesiredState::snapshot(4, &doc(&[]), 0)), 4);
        assert_ok(
            &r.e.handle(&delta(5, 4, &doc(&[]), &doc(&[B_CLOSED, &grant(until)]))),
            5,
        );
    }
    // A new process on a fresh datapath: nothing from the manager, only the state directory.
    let mut r = rig(dir.path(), 100);
    assert!(a_reaches_b(&r.dp), "a fresh datapath enforces nothing");
    assert_eq!(r.e.restore().unwrap(), Some(5));
    assert_eq!((r.e.held(), r.metrics.applied_version.get()), (5, 5));
    assert!(a_reaches_b(&r.dp), "the saved grant");
    assert!(r.dp.applies() > 0);
    // Deltas continue from the saved version.
    let a = r.e.handle(&delta(
        6,
        5,
        &doc(&[B_CLOSED, &grant(until)]),
        &doc(&[B_CLOSED]),
    ));
    assert_ok(&a, 6);
    assert!(!a_reaches_b(&r.dp));

    // A restart after the grant expired does not bring it back.
    let mut r = rig(dir.path(), 100);
    std::fs::write(
        r.state.desired(),
        serde_json::to_vec(&(7u64, doc(&[B_CLOSED, &grant(until)]))).unwrap(),
    )
    .unwrap();
    r.now.store(until as u64 + 1, Relaxed);
    assert_eq!(r.e.restore().unwrap(), Some(7));
    assert!(!a_reaches_b(&r.dp));

    // An unreadable file is ignored (the manager will send a snapshot).
    let mut r = rig(dir.path(), 100);
    std::fs::write(r.state.desired(), b"{not json").unwrap();
    assert_eq!(r.e.restore().unwrap(), None);
    assert_eq!(r.e.held(), 0);
}

#[test]
fn nothing_is_acked_that_is_not_persisted() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(dir.path(), 100);
    assert_ok(&r.e.handle(&DesiredState::snapshot(1, &doc(&[]), 0)), 1);
    // desired.json cannot be replaced (a non-empty directory is in its way; root ignores
    // permissions, not this).
    std::fs::remove_file(r.state.desired()).unwrap();
    std::fs::create_dir_all(r.state.desired().join("in-the-way")).unwrap();
    let a = r.e.handle(&DesiredState::snapshot(2, &doc(&[B_CLOSED]), 0));
    assert!(!a.ok(), "an unpersisted version must not be acked: {a:?}");
    assert!(a.error.contains("desired.json"), "{}", a.error);
    assert_eq!(a.applied_unix_us, 0);
    assert_eq!(r.metrics.apply_errors.get(), 1);

    // A failed apply is not acked either, and the previous state stays.
    std::fs::remove_dir_all(r.state.desired()).unwrap();
    r.dp.fail_next_apply("map full");
    let before = r.dp.active();
    let a = r.e.handle(&DesiredState::snapshot(3, &doc(&[]), 0));
    assert!(!a.ok() && a.error.contains("map full"), "{a:?}");
    assert_eq!(r.dp.active(), before);
    assert!(
        r.state.load_desired().unwrap().is_none(),
        "nothing persisted"
    );
}

#[test]
fn flow_events_are_aggregated_and_overflow_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut r = rig(dir.path(), 2);
    assert_ok(
        &r.e.handle(&DesiredState::snapshot(1, &doc(&[B_CLOSED]), 0)),
        1,
    );
    let (a, b) = (
        abi::addr16(A.parse().unwrap()),
        abi::addr16(B.parse().unwrap()),
    );
    let ev = |s, d, port: u16, kind| Event {
        saddr: s,
        daddr: d,
        proto: 6,
        dport: port.to_be(),
        kind,
        dir: abi::DIR_INGRESS,
        ..Event::default()
    };
    // Three connection kinds (five events): one record each, but the queue holds two.
    r.dp.push_events([
        ev(a, b, 80, abi::EV_DENY),
        ev(a, b, 80, abi::EV_DENY),
        ev(a, b, 81, abi::EV_DENY),
        ev(b, a, 80, abi::EV_ALLOW),
        ev(b, a, 80, abi::EV_ALLOW),
    ]);
    r.dp.lose_events(9);
    assert_eq!(r.e.collect_flows().unwrap(), 3);
    assert_eq!(r.dp.pending_events(), 0);
    assert_eq!(r.flows.len(), 2);
    let dropped = r.metrics.records_dropped.get();
    assert!(dropped >= 1, "the record that did not fit is counted");
    assert_eq!(r.metrics.kernel_events_lost.get(), 9);
    let recs = r.flows.take(10);
    let total: u64 = recs.iter().map(|x| x.count).sum();
    assert_eq!(total + dropped, 5, "every event is delivered or counted");
    assert!(recs
        .iter()
        .all(|x| (x.src.as_str(), x.dst.as_str()) == ("x/a", "x/b")
            || (x.src.as_str(), x.dst.as_str()) == ("x/b", "x/a")));
    let text = r.metrics.render();
    assert!(
        text.contains(&format!(
            "cellwall_agent_flow_records_dropped_total {dropped}\n"
        )),
        "{text}"
    );
}

//! Emergencies first (issue 16): a quarantine reaches the datapath while a large compile is in
//! progress, instead of waiting behind it; the large revision and the quarantine's own compile
//! then follow in order. The real enforcement loop and compiler on the in-memory datapath.

mod common;

use cellwall_agent::enforce::{self, Ack, Enforcement, Work};
use cellwall_agent::flows::FlowQueue;
use cellwall_agent::metrics::Metrics;
use cellwall_agent::state::StateDir;
use cellwall_agent::NodeAgent;
use cellwall_datapath::FakeDatapath;
use cellwall_policy::labels::LabelSelector;
use cellwall_policy::model::*;
use cellwall_policy::Cidr;
use cellwall_proto::{DesiredState, StateDelta, StateDoc};
use common::*;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A firewall export on x/a: `n` rules, each a distinct /32 source and port.
fn firewall(n: usize) -> Policy {
    let rules = (0..n)
        .map(|i| Rule {
            direction: Direction::Ingress,
            index: i,
            name: None,
            action: Action::Allow,
            peers: vec![Peer::Cidr {
                cidr: Cidr::host(source(i)),
                except: vec![],
            }],
            ports: vec![PortSpec::Range {
                protocol: Protocol::Tcp,
                lo: port(i),
                hi: port(i),
            }],
            expires_at: None,
        })
        .collect();
    Policy {
        id: PolicyId::new(Family::Policy, Some("x"), "firewall"),
        tier: Tier::Application,
        priority: 0,
        mode: Mode::Enforce,
        expires_at: None,
        subject: Subject {
            namespaces: NamespaceMatch::Named("x".into()),
            pods: LabelSelector::from_labels([("app", "a")]),
        },
        isolates: [true, false],
        rules,
    }
}

fn source(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i as u32,
    ))
}

fn port(i: usize) -> u16 {
    1 + (i % 60_000) as u16
}

/// What the manager's quarantine of x/b sends: the mark on the pod and the policy that cuts it
/// off (but for a management exception from x/a).
const QUARANTINE: &str = "apiVersion: cellwall.io/v1alpha1\nkind: Policy\nmetadata: {name: quarantine-b, namespace: x}\nspec:\n  tier: admin\n  priority: -1000000\n  podSelector: {matchLabels: {quarantine.cellwall.io/pod: qb}}\n  ingress:\n  - {name: management-exception, from: [{podSelector: {matchLabels: {app: a}}}]}\n  - {name: quarantine, action: Deny, from: [{entity: all}]}\n  egress:\n  - {name: quarantine, action: Deny, to: [{entity: all}]}\n";

fn quarantined(base: &StateDoc) -> StateDoc {
    let mut d = base.clone();
    let q = doc(&[QUARANTINE]);
    d.policies.extend(q.policies);
    for w in d.workloads.iter_mut().filter(|w| w.name == "b") {
        let mut b = (**w).clone();
        b.labels
            .insert("quarantine.cellwall.io/pod".into(), "qb".into());
        *w = Arc::new(b);
    }
    d
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether x/b may open a connection to an address outside the cluster.
fn b_reaches_out(dp: &FakeDatapath) -> bool {
    dp.decide(ip(B), ip("192.0.2.9"), 6, 443)
}

/// The enforcement of node n1 (pods x/a and x/b) on an in-memory datapath, and that datapath.
fn enforcement(dir: &std::path::Path) -> (Enforcement<FakeDatapath>, FakeDatapath) {
    let dp = FakeDatapath::new();
    let state = StateDir::create(dir).unwrap();
    let metrics = Arc::new(Metrics::new());
    let flows = Arc::new(FlowQueue::new(100, metrics.records_dropped.clone()));
    let node = NodeAgent::new(dp.clone(), endpoints(), "n1", false).unwrap();
    (Enforcement::new(node, state, metrics, flows), dp)
}

#[test]
fn a_quarantine_is_enforced_while_a_large_compile_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (e, dp) = enforcement(dir.path());
    let (work, work_rx) = mpsc::channel();
    let (ack_tx, mut acks) = tokio::sync::mpsc::unbounded_channel::<Ack>();
    let looping = std::thread::spawn(move || {
        enforce::run(e, work_rx, ack_tx, Duration::from_secs(3600), None)
    });
    let next_ack = |acks: &mut tokio::sync::mpsc::UnboundedReceiver<Ack>| {
        let t = Instant::now();
        loop {
            if let Ok(a) = acks.try_recv() {
                return (a, Instant::now());
            }
            assert!(t.elapsed() < Duration::from_secs(300), "no ack");
            std::thread::sleep(Duration::from_millis(1));
        }
    };

    let open = doc(&[]);
    work.send(Work::State(DesiredState::snapshot(1, &open, 0)))
        .unwrap();
    assert!(next_ack(&mut acks).0.ok());
    assert!(b_reaches_out(&dp));

    // A revision whose compile takes a while (seconds in a debug build).
    let mut big = open.clone();
    big.policies.push(firewall(40_000).into());
    let sent_big = Instant::now();
    let d = StateDelta::between(&open, &big);
    work.send(Work::State(DesiredState::delta(2, 1, &d, 0)))
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));

    // The quarantine, while that compile runs.
    let q = quarantined(&big);
    let d = StateDelta::between(&big, &q);
    let msg = DesiredState::delta(3, 2, &d, 0);
    let sent_q = Instant::now();
    work.send(Work::State(msg)).unwrap();
    let t = Instant::now();
    while b_reaches_out(&dp) {
        assert!(t.elapsed() < Duration::from_secs(300), "never isolated");
        std::thread::sleep(Duration::from_millis(1));
    }
    let isolated = sent_q.elapsed();
    let (a2, big_acked) = next_ack(&mut acks);
    assert!(a2.ok() && a2.version == 2, "{a2:?}");
    let big_took = big_acked - sent_big;
    println!("large compile: acked after {big_took:?}; quarantine enforced {isolated:?} after it was sent");
    assert!(
        big_acked > sent_q + isolated,
        "the quarantine must not wait for the large compile ({big_took:?}), but took {isolated:?}"
    );
    assert!(
        isolated < Duration::from_millis(500),
        "quarantine latency {isolated:?} while a compile ran"
    );
    assert!(!dp.decide(ip(A), ip(B), 6, 80), "isolated both ways");

    // Then the quarantine's own compile: the exact policy, management exception included.
    let (a3, _) = next_ack(&mut acks);
    assert!(a3.ok() && a3.version == 3, "{a3:?}");
    assert!(!b_reaches_out(&dp), "still cut off");
    assert!(dp.decide(ip(A), ip(B), 6, 80), "the management exception");
    assert!(!dp.decide(ip(B), ip(A), 6, 80));
    // And the large revision is in force.
    assert!(dp.decide(source(7), ip(A), 6, port(7)));
    assert!(!dp.decide(source(7), ip(A), 6, port(8)));

    drop(work);
    looping.join().unwrap().unwrap();
}

#[test]
fn revisions_waiting_behind_a_compile_are_compiled_together() {
    let dir = tempfile::tempdir().unwrap();
    let (mut e, dp) = enforcement(dir.path());
    let open = doc(&[]);
    let closed = doc(&[B_CLOSED]);
    let granted = doc(&[B_CLOSED, &grant(4_000_000_000)]);
    let (_work, rx) = mpsc::channel();
    let mut stash = Default::default();
    let batch = [
        DesiredState::snapshot(1, &open, 0),
        DesiredState::delta(2, 1, &StateDelta::between(&open, &closed), 0),
        // Out of order: answered alone, asking for a resync; the others still apply.
        DesiredState::delta(9, 7, &StateDelta::between(&open, &closed), 0),
        DesiredState::delta(3, 2, &StateDelta::between(&closed, &granted), 0),
    ];
    let acks = e.handle_batch(&batch, &rx, &mut stash);
    let versions: Vec<(u64, bool)> = acks.iter().map(|a| (a.version, a.ok())).collect();
    assert_eq!(versions, vec![(1, true), (2, true), (9, false), (3, true)]);
    assert!(acks[2].resync);
    assert_eq!(dp.applies(), 1, "one compile and one switch for the batch");
    assert_eq!(e.held(), 3);
    assert!(a_reaches_b(&dp), "the newest revision is in force");
}

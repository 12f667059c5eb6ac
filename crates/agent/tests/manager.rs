//! The whole agent (session, reconnects, enforcement thread, metrics) against a real manager
//! started in this process, on the in-memory datapath (unit tier: no root).

mod common;

use cellwall_agent::Agent;
use cellwall_datapath::{abi, Event, FakeDatapath};
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn saved_version(state: &std::path::Path) -> u64 {
    let b = std::fs::read(state.join("desired.json")).unwrap();
    serde_json::from_slice::<(u64, serde_json::Value)>(&b)
        .unwrap()
        .0
}

fn scrape(agent: &Agent, name: &str) -> u64 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(agent.metrics_addr().unwrap()).unwrap();
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

#[test]
fn joins_enforces_acks_and_reconnects_after_a_manager_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Manager::start(&tmp.path().join("manager"));
    let rev = m.apply(MODEL, false);
    let state = tmp.path().join("agent");
    let dp = FakeDatapath::new();
    let agent = Agent::start(m.agent_config(&state), dp.clone()).unwrap();
    assert_eq!(agent.restored(), None);
    assert!(state.join("ready").exists());
    assert_eq!(
        std::fs::read_to_string(state.join("metrics.addr")).unwrap(),
        agent.metrics_addr().unwrap().to_string()
    );

    wait_until(LIMIT, "the node acks the model", || m.acked("n1") >= rev);
    for f in ["node.key", "node.pem", "desired.json"] {
        let mode = std::fs::metadata(state.join(f))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{f}");
    }
    assert!(a_reaches_b(&dp));
    assert_eq!(scrape(&agent, "cellwall_agent_connected"), 1);

    let rev = m.apply(B_CLOSED, false);
    wait_until(LIMIT, "the node acks the policy", || m.acked("n1") >= rev);
    assert!(!a_reaches_b(&dp), "acked means enforced");
    assert!(saved_version(&state) >= rev, "acked means persisted");
    assert_eq!(scrape(&agent, "cellwall_agent_applied_version"), rev);
    assert!(
        dp.attached().contains_key("cwb"),
        "the policed pod has programs"
    );

    // The manager goes away: the agent notices and keeps enforcing.
    m.stop();
    wait_until(LIMIT, "the agent sees the manager gone", || {
        agent.metrics().connected.get() == 0
    });
    assert!(!a_reaches_b(&dp));

    // It comes back on the same data and ports: the agent reconnects with its certificate
    // (no token needed now) and follows what changes next.
    std::fs::remove_file(m.dir.join("bootstrap.token")).ok();
    m.restart();
    let rev = m.apply(B_CLOSED, true);
    wait_until(LIMIT, "the node acks after the restart", || {
        m.acked("n1") >= rev
    });
    assert!(a_reaches_b(&dp));
    assert!(agent.metrics().reconnects.get() >= 1);
    assert_eq!(agent.metrics().connected.get(), 1);
    assert_eq!(agent.metrics().apply_errors.get(), 0);
    agent.stop().unwrap();
}

#[test]
fn a_restarted_agent_enforces_its_saved_state_while_the_manager_is_down() {
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Manager::start(&tmp.path().join("manager"));
    m.apply(MODEL, false);
    let rev = m.apply(B_CLOSED, false);
    let state = tmp.path().join("agent");
    let agent = Agent::start(m.agent_config(&state), FakeDatapath::new()).unwrap();
    wait_until(LIMIT, "the node acks", || m.acked("n1") >= rev);
    // (The workloads the agent reported may have made a revision of their own.)
    let rev = m.settled("n1");
    agent.stop().unwrap();
    m.stop();

    // A new process with nothing from the manager: its saved state is enforced before start
    // returns (and `ready` says so).
    let dp = FakeDatapath::new();
    let agent = Agent::start(m.agent_config(&state), dp.clone()).unwrap();
    assert_eq!(agent.restored(), Some(rev));
    assert!(state.join("ready").exists());
    assert!(!a_reaches_b(&dp), "the saved policy, manager down");
    assert_eq!(agent.metrics().connected.get(), 0);

    // The manager returns: the agent reports what it holds and continues from there.
    m.restart();
    wait_until(LIMIT, "the agent reconnects", || {
        agent.metrics().connected.get() == 1
    });
    let rev = m.apply(B_CLOSED, true);
    wait_until(LIMIT, "the node acks the deletion", || m.acked("n1") >= rev);
    assert!(a_reaches_b(&dp));
    agent.stop().unwrap();
}

#[test]
fn flow_events_reach_the_manager_attributed_to_workloads() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Manager::start(&tmp.path().join("manager"));
    m.apply(MODEL, false);
    let rev = m.apply(B_CLOSED, false);
    let dp = FakeDatapath::new();
    let agent = Agent::start(m.agent_config(&tmp.path().join("agent")), dp.clone()).unwrap();
    wait_until(LIMIT, "the node acks", || m.acked("n1") >= rev);
    let (a, b) = (
        abi::addr16(A.parse().unwrap()),
        abi::addr16(B.parse().unwrap()),
    );
    let denied = Event {
        saddr: a,
        daddr: b,
        proto: 6,
        dport: 80u16.to_be(),
        kind: abi::EV_DENY,
        dir: abi::DIR_INGRESS,
        ..Event::default()
    };
    dp.push_events([denied; 3]);
    wait_until(LIMIT, "the manager accepts the record", || {
        agent.metrics().records_delivered.get() >= 1
    });
    let flows = m
        .client()
        .flows(&cellwall_api::FlowQuery::default())
        .unwrap()
        .flows;
    let f = flows
        .iter()
        .find(|f| f.src == "x/a" && f.dst == "x/b")
        .unwrap_or_else(|| panic!("no x/a -> x/b in {flows:?}"));
    assert_eq!((f.port, f.count, f.node.as_str()), (80, 3, "n1"));
    assert_eq!(agent.metrics().records_dropped.get(), 0);
    agent.stop().unwrap();
}

/// The agent renews its certificate at two thirds of its life, without a restart or a token,
/// and keeps following the manager past the first certificate's expiry; the certificate it
/// replaced is refused as soon as the new one is in use (before it expires).
#[test]
fn the_agent_renews_its_certificate_before_it_expires() {
    let tmp = tempfile::tempdir().unwrap();
    let m = Manager::start_with(&tmp.path().join("manager"), |c| {
        c.lifetimes.node = Duration::from_secs(6);
    });
    let rev = m.apply(MODEL, false);
    let state = tmp.path().join("agent");
    let agent = Agent::start(m.agent_config(&state), FakeDatapath::new()).unwrap();
    wait_until(LIMIT, "the node acks the model", || m.acked("n1") >= rev);
    let read = |f: &str| std::fs::read_to_string(state.join(f)).unwrap();
    let (first_cert, first_key) = (read("node.pem"), read("node.key"));
    let expires = |m: &Manager| {
        m.client().nodes().unwrap().items[0]
            .cert_expires_ms
            .expect("an expiry")
    };
    let first_expiry = expires(&m);
    // The first certificate is still good: a second client holding it is accepted.
    assert_eq!(ack_with(&m, &first_cert, &first_key), Ok(()));
    // No token from here on: renewal is by the certificate alone.
    std::fs::remove_file(m.dir.join("bootstrap.token")).unwrap();

    wait_until(LIMIT, "the agent renews (at 4 s of 6)", || {
        read("node.pem") != first_cert
    });
    assert_ne!(
        read("node.key"),
        first_key,
        "a new key with the new certificate"
    );
    wait_until(LIMIT, "the agent reconnects with it", || {
        agent.metrics().connected.get() == 1 && expires(&m) > first_expiry
    });
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let refused = ack_with(&m, &first_cert, &first_key);
    if now + 500 < first_expiry {
        // Not expired yet: refused by the manager because it was replaced.
        assert_eq!(refused, Err("unknown or replaced node certificate".into()));
    } else {
        assert!(refused.is_err(), "a machine this slow only proves expiry");
    }
    // Past the first certificate's expiry the agent still follows the manager.
    std::thread::sleep(Duration::from_millis(3000));
    let rev = m.apply(B_CLOSED, false);
    wait_until(LIMIT, "the node acks after the first expiry", || {
        m.acked("n1") >= rev
    });
    let audit = m.client().audit(100).unwrap();
    assert!(audit.events.iter().any(|e| e.action == "cert-renewed"));
    agent.stop().unwrap();
}

/// An ack from a client holding `cert`/`key` (the TLS error or the manager's message).
fn ack_with(m: &Manager, cert: &str, key: &str) -> Result<(), String> {
    use cellwall_proto::tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ca = std::fs::read_to_string(m.dir.join("ca.pem")).unwrap();
    rt.block_on(async {
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(ca))
            .domain_name("localhost")
            .identity(Identity::from_pem(cert, key));
        let ch = Endpoint::from_shared(format!("https://{}", m.grpc))
            .unwrap()
            .tls_config(tls)
            .unwrap()
            .connect()
            .await
            .map_err(|e| format!("{e:?}"))?;
        cellwall_proto::AgentClient::new(ch)
            .ack(cellwall_proto::AckRequest {
                node: "n1".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    })
}

/// A CA rotation with a real agent: the new CA is trusted beside the old, then signs, then the
/// old is dropped; the agent follows each step by itself (fetches the bundle, renews its
/// certificate) and never stops following the manager. Each step waits for the node.
#[test]
fn the_agent_follows_a_ca_rotation() {
    use cellwall_manager::rotation::{run, Step};
    let tmp = tempfile::tempdir().unwrap();
    let mut m = Manager::start(&tmp.path().join("manager"));
    let rev = m.apply(MODEL, false);
    let state = tmp.path().join("agent");
    let agent = Agent::start(m.agent_config(&state), FakeDatapath::new()).unwrap();
    wait_until(LIMIT, "the node acks the model", || m.acked("n1") >= rev);
    let cfg = cellwall_manager::Config::local(&m.dir);
    let certs = |f: &std::path::Path| {
        std::fs::read_to_string(f)
            .unwrap_or_default()
            .matches("BEGIN CERTIFICATE")
            .count()
    };
    let signer = || {
        let b = std::fs::read(state.join("node.cert.json")).unwrap();
        serde_json::from_slice::<serde_json::Value>(&b).unwrap()["signer"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(signer(), "Cellwall manager CA");
    std::fs::remove_file(m.dir.join("bootstrap.token")).unwrap();

    // 1. A new CA, trusted beside the old. Activating before the node has the bundle is refused.
    let out = run(&cfg, Step::Rotate, false).unwrap();
    assert!(out.contains("staged CA"), "{out}");
    let e = run(&cfg, Step::Activate, false).unwrap_err().to_string();
    assert!(e.contains("n1"), "{e}");
    m.stop();
    m.restart();
    wait_until(LIMIT, "the agent fetches the two-CA bundle", || {
        certs(&state.join("ca.pem")) == 2
    });
    let rev = m.apply(B_CLOSED, false);
    wait_until(LIMIT, "the node acks with the bundle", || {
        m.acked("n1") >= rev
    });

    // 2. The new CA signs: the server certificate after the restart, the node's at once.
    let e = run(&cfg, Step::Retire, false).unwrap_err().to_string();
    assert!(e.contains("activate it first"), "{e}");
    let out = run(&cfg, Step::Activate, false).unwrap();
    assert!(out.contains("signs from the next start"), "{out}");
    let e = run(&cfg, Step::Retire, false).unwrap_err().to_string();
    assert!(
        e.contains("n1"),
        "the node's certificate is still the old CA's: {e}"
    );
    m.stop();
    m.restart();
    wait_until(LIMIT, "the agent renews with the new CA", || {
        signer() != "Cellwall manager CA"
    });
    let rev = m.apply(B_CLOSED, true);
    wait_until(LIMIT, "the node acks on the new CA", || {
        m.acked("n1") >= rev
    });
    // A second node that joined with the old CA's certificate and never came back would hold
    // retirement up; this one is ready.
    let status = run(&cfg, Step::Status, false).unwrap();
    assert!(
        status.contains("nodes with a certificate of another CA: none"),
        "{status}"
    );

    // 3. The old CA is trusted no more, and its key is gone.
    let out = run(&cfg, Step::Retire, false).unwrap();
    assert!(out.contains("deleted the key"), "{out}");
    assert!(!m.dir.join("ca.key").exists());
    assert_eq!(certs(&m.dir.join("ca.pem")), 1);
    m.stop();
    m.restart();
    wait_until(LIMIT, "the agent drops the old CA", || {
        certs(&state.join("ca.pem")) == 1
    });
    let rev = m.apply(B_CLOSED, false);
    wait_until(LIMIT, "the node acks after the rotation", || {
        m.acked("n1") >= rev
    });
    let status = run(&cfg, Step::Status, false).unwrap();
    assert!(status.contains("no rotation under way"), "{status}");
    assert_eq!(agent.metrics().apply_errors.get(), 0);
    agent.stop().unwrap();
}

//! Root tier: pods that start and stop on a running `--source kubernetes` lab, as kubelet and a
//! CNI would, are policed and released by an agent that finds their interfaces itself — on the
//! routed and on the bridged node layout. Timings are the benchmark's (apply_latency); here the
//! policy is checked on real connections at each step.

use cellwall_testkit::lab::Lab;
use cellwall_testkit::pods::{start_and_stop, MANIFESTS};

fn run(cni: &str) {
    run_in(cni, None, 3);
}

fn run_in(cni: &str, cluster: Option<&str>, pods: usize) {
    let mut args = vec!["--source", "kubernetes", "--cni", cni];
    if let Some(c) = cluster {
        args.extend(["--cluster", c]);
    }
    let lab = Lab::up_with(cellwall_testkit::bin!("cellwall"), "pods", MANIFESTS, &args);
    if let Some(c) = cluster {
        // The manager knows the node and the pods by their qualified names.
        let (ok, out, err) = lab.cw_lab(&["get", "nodes", "-o", "json"]);
        assert!(ok, "{err}");
        assert!(out.contains(&format!("\"{c}:lab\"")), "{out}");
    }
    let t = start_and_stop(&lab, pods);
    eprintln!(
        "--cni {cni}, cluster {cluster:?}: policed after {:?} ms, released after {:?} ms",
        t.policed, t.released
    );
}

/// One of several clusters (the manager qualifies the lab's objects, the agent joins as
/// `CLUSTER:lab` and finds the pods bound to that node): the same real enforcement.
#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn pods_of_a_named_cluster_are_policed_and_released() {
    run_in("routed", Some("east"), 2);
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn pods_starting_on_a_routed_node_are_policed_and_released() {
    run("routed");
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn pods_starting_on_a_bridged_node_are_policed_and_released() {
    run("bridge");
}

/// The attack on a bridged node: a pod teaches the bridge another pod's MAC, so the bridge's
/// tables put the victim's address behind the attacker's port, then connects with the victim's
/// address to a database only the victim may reach. The agent keeps the victim bound to its
/// own port (a binding held stays while its port exists), so the attacker's port never gets
/// the victim's identity and anti-spoofing drops the posing connection.
#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn a_pod_teaching_the_bridge_another_pods_mac_does_not_get_its_identity() {
    use cellwall_testkit::pods::{connects, connects_as, reachable, Api, Server};
    use std::net::IpAddr;
    use std::process::Command;
    use std::time::{Duration, Instant};
    let lab = Lab::up_with(
        cellwall_testkit::bin!("cellwall"),
        "spoof",
        MANIFESTS,
        &["--source", "kubernetes", "--cni", "bridge"],
    );
    let api = Api::of(&lab.name);
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let (db, victim, attacker) = (ip("10.83.1.10"), ip("10.83.1.20"), ip("10.83.1.30"));
    let pods: Vec<_> = [(db, "db"), (victim, "client"), (attacker, "other")]
        .iter()
        .enumerate()
        .map(|(k, (addr, app))| {
            let p = cellwall_lab::cni_add(&lab.name, k, &[*addr]).expect("CNI add");
            let server = Server::start(&p.netns);
            api.create_pod(&format!("{app}-{k}"), app, *addr);
            (p, server)
        })
        .collect();
    let (victim_ns, attacker_ns) = (&pods[1].0.netns, &pods[2].0.netns);
    let links = cellwall_lab::pin_dir(&lab.name).join("links");
    let t = Instant::now();
    while !pods
        .iter()
        .all(|(p, _)| links.join(format!("{}_from_pod", p.host_if)).exists())
    {
        assert!(t.elapsed() < Duration::from_secs(10), "pods not attached");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        reachable(victim_ns, db, Duration::from_secs(5)),
        "the client reaches db"
    );
    assert!(
        !connects(attacker_ns, db, Duration::from_millis(300)),
        "policy: other may not reach db"
    );
    let ip_in = |ns: &str, args: &[&str]| {
        let ok = Command::new("ip")
            .args(["-n", ns])
            .args(args)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "ip -n {ns} {args:?}");
    };
    // The attacker takes the victim's MAC and address and talks: the bridge learns the
    // victim's MAC on the attacker's port, and the node's neighbour entry for the victim's
    // address now leads there.
    let out = Command::new("ip")
        .args(["-n", victim_ns, "-br", "link", "show", "eth0"])
        .output()
        .unwrap();
    let victim_mac = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(2)
        .expect("the victim's MAC")
        .to_string();
    ip_in(
        attacker_ns,
        &["link", "set", "eth0", "address", &victim_mac],
    );
    ip_in(
        attacker_ns,
        &["addr", "add", "10.83.1.20/32", "dev", "eth0"],
    );
    // Its IP packets with the victim's address are dropped on the veth before the bridge sees
    // them; its ARP requests are not (forgetting the gateway makes it ask again).
    let attacker_if = &pods[2].0.host_if;
    let node = cellwall_lab::node_ns(&lab.name);
    let mut learned = 0;
    for _ in 0..10 {
        ip_in(attacker_ns, &["neigh", "flush", "dev", "eth0"]);
        connects_as(attacker_ns, victim, db, Duration::from_millis(100));
        let fdb = Command::new("bridge")
            .args(["-n", &node, "fdb", "show", "dev", attacker_if])
            .output()
            .unwrap();
        learned += String::from_utf8_lossy(&fdb.stdout)
            .lines()
            .any(|l| l.starts_with(&victim_mac) && !l.contains("permanent"))
            as usize;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        learned > 0,
        "the attack did not take effect (the bridge never learned the victim's MAC on the \
         attacker's port), so this test proves nothing"
    );
    // Several scans later the victim is still bound to its own port and the posing
    // connection is dropped.
    std::thread::sleep(Duration::from_millis(600));
    assert!(
        !connects_as(attacker_ns, victim, db, Duration::from_millis(500)),
        "the attacker reached db with the victim's address"
    );
    assert!(links
        .join(format!("{}_from_pod", pods[1].0.host_if))
        .exists());
}

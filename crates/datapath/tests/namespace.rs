//! A datapath opened for a network namespace attaches and looks up interfaces inside it, and
//! not outside (root tier: BPF and network namespaces).

use cellwall_datapath::{netns, Datapath, KernelDatapath};
use std::path::PathBuf;
use std::process::Command;

fn ip(args: &[&str]) {
    let ok = Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "ip {args:?}");
}

/// A network namespace with one veth pair, and a pin directory, removed on drop.
struct Scratch {
    ns: String,
    pins: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

#[test]
#[ignore = "root tier: needs BPF and network namespaces"]
fn attaches_inside_the_namespace_it_was_opened_for() {
    let id = std::process::id();
    let s = Scratch {
        ns: format!("cw-dpns-{id}"),
        pins: PathBuf::from(format!("/sys/fs/bpf/cw-dpns-{id}")),
    };
    ip(&["netns", "add", &s.ns]);
    ip(&[
        "-n", &s.ns, "link", "add", "cwns0", "type", "veth", "peer", "name", "cwns1",
    ]);
    ip(&["-n", &s.ns, "link", "set", "cwns0", "up"]);

    let mut here: Box<dyn Datapath> = Box::new(KernelDatapath::open(&s.pins).unwrap());
    assert!(
        here.interface_index("cwns0").is_err(),
        "the veth is not in this namespace"
    );
    assert!(here.attach("cwns0").is_err());

    let mut dp: Box<dyn Datapath> =
        Box::new(KernelDatapath::open_in(&s.pins, Some(&s.ns)).unwrap());
    let want = netns::ifindex_in(Some(&s.ns), "cwns0").unwrap();
    assert_eq!(dp.interface_index("cwns0").unwrap(), want);
    assert!(!dp.is_attached("cwns0"));
    dp.attach("cwns0").unwrap();
    assert!(dp.is_attached("cwns0"));
    // Attachments outlive the instance (and are seen through the pins from anywhere).
    drop(dp);
    assert!(here.is_attached("cwns0"));
    // A new instance's attach replaces the programs in place.
    let mut dp = KernelDatapath::open_in(&s.pins, Some(&s.ns)).unwrap();
    Datapath::attach(&mut dp, "cwns0").unwrap();
    Datapath::detach(&mut dp, "cwns0").unwrap();
    assert!(!here.is_attached("cwns0"));
    // The host NIC side attaches there too.
    Datapath::attach_nic(&mut dp, "cwns0").unwrap();
    assert!(Datapath::is_attached(&dp, "cwns0"));
    Datapath::detach(&mut dp, "cwns0").unwrap();
}

/// A pod's network namespace, removed on drop.
struct PodNs(String);

impl Drop for PodNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// How a DaemonSet agent finds its pods: in a namespace standing for a node, a routed pod (a
/// /32 route to its veth) and a bridged pod (a bridge port holding its MAC) each resolve to
/// their host-side interface; a pod whose veth is gone, or whose MAC the bridge has not learned,
/// resolves to nothing.
#[test]
#[ignore = "root tier: needs network namespaces"]
fn finds_routed_and_bridged_pods_interfaces_in_the_kernel_tables() {
    use cellwall_datapath::interfaces;
    use std::net::IpAddr;
    let id = std::process::id();
    let s = Scratch {
        ns: format!("cw-dpfind-{id}"),
        pins: PathBuf::from(format!("/sys/fs/bpf/cw-dpfind-{id}")),
    };
    let n = s.ns.as_str();
    ip(&["netns", "add", n]);
    // Routed: veth with a host route (the pod end stays in the node namespace: only the host
    // side matters here).
    ip(&[
        "-n", n, "link", "add", "cwr0", "type", "veth", "peer", "name", "cwr0p",
    ]);
    ip(&["-n", n, "link", "set", "cwr0", "up"]);
    ip(&["-n", n, "route", "add", "10.77.0.5/32", "dev", "cwr0"]);
    ip(&["-n", n, "-6", "route", "add", "fd77::5/128", "dev", "cwr0"]);
    // Bridged: a bridge, a port, a neighbour entry and a forwarding entry for the pod's MAC.
    // A fixed MAC: a bridge that takes its ports' lowest changes it as ports come, and the
    // kernel then flushes the bridge's neighbour entries (permanent ones too).
    ip(&[
        "-n",
        n,
        "link",
        "add",
        "cwbr",
        "address",
        "02:77:ff:00:00:01",
        "type",
        "bridge",
    ]);
    ip(&[
        "-n", n, "link", "add", "cwb0", "type", "veth", "peer", "name", "cwb0p",
    ]);
    ip(&["-n", n, "link", "set", "cwb0", "master", "cwbr"]);
    for l in ["cwbr", "cwb0"] {
        ip(&["-n", n, "link", "set", l, "up"]);
    }
    ip(&["-n", n, "route", "add", "10.88.0.7/32", "dev", "cwbr"]);
    let mac = "02:77:00:00:00:07";
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "10.88.0.7",
        "lladdr",
        mac,
        "dev",
        "cwbr",
        "nud",
        "permanent",
    ]);
    let ok = Command::new("bridge")
        .args([
            "-n", n, "fdb", "add", mac, "dev", "cwb0", "master", "static",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "bridge fdb add");
    // A bridged pod whose MAC the bridge has not learned.
    ip(&[
        "-n",
        n,
        "neigh",
        "add",
        "10.88.0.9",
        "lladdr",
        "02:77:00:00:00:09",
        "dev",
        "cwbr",
        "nud",
        "permanent",
    ]);

    let addrs: Vec<IpAddr> = [
        "10.77.0.5",
        "fd77::5",
        "10.88.0.7",
        "10.88.0.9",
        "10.99.0.1",
    ]
    .iter()
    .map(|a| a.parse().unwrap())
    .collect();
    let found = interfaces::find(Some(n), &addrs).unwrap().by_addr;
    let name = |a: &str| {
        found
            .get(&a.parse::<IpAddr>().unwrap())
            .map(|h| h.name.as_str())
    };
    assert_eq!(name("10.77.0.5"), Some("cwr0"));
    assert_eq!(name("fd77::5"), Some("cwr0"));
    assert_eq!(name("10.88.0.7"), Some("cwb0"));
    let b = &found[&"10.88.0.7".parse::<IpAddr>().unwrap()];
    assert_eq!(b.bridge.as_deref(), Some("cwbr"));
    assert_eq!(b.ifindex, netns::ifindex_in(Some(n), "cwb0").unwrap());
    assert_eq!(name("10.88.0.9"), None, "MAC not in the bridge's table");
    assert_eq!(name("10.99.0.1"), None);
    // Nothing is found from outside the namespace.
    assert!(interfaces::find(None, &addrs).unwrap().by_addr.is_empty());

    // A silent bridged pod behind a subnet route (flannel's cni0 layout), in a namespace of
    // its own: no neighbour entry until someone talks to it. The first scan asks the kernel to
    // resolve it; its ARP answer teaches the bridge its port, and a later scan finds it.
    let pod = PodNs(format!("cw-dpfind-p{id}"));
    ip(&["netns", "add", &pod.0]);
    ip(&[
        "-n", n, "link", "add", "cwb1", "type", "veth", "peer", "name", "eth0", "netns", &pod.0,
    ]);
    ip(&["-n", n, "link", "set", "cwb1", "master", "cwbr"]);
    ip(&["-n", n, "link", "set", "cwb1", "up"]);
    ip(&["-n", n, "addr", "add", "10.66.0.1/24", "dev", "cwbr"]);
    ip(&["-n", &pod.0, "link", "set", "eth0", "up"]);
    ip(&["-n", &pod.0, "addr", "add", "10.66.0.20/24", "dev", "eth0"]);
    let silent: IpAddr = "10.66.0.20".parse().unwrap();
    let t = std::time::Instant::now();
    let found = loop {
        let f = interfaces::find(Some(n), &[silent]).unwrap().by_addr;
        if let Some(h) = f.get(&silent) {
            break h.clone();
        }
        assert!(t.elapsed().as_secs() < 5, "silent bridged pod never found");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        (found.name.as_str(), found.bridge.as_deref()),
        ("cwb1", Some("cwbr"))
    );
    // The routed pod goes: its veth (and with it the route) is deleted.
    let before = interfaces::find(Some(n), &addrs).unwrap().present;
    let cwr0 = netns::ifindex_in(Some(n), "cwr0").unwrap();
    assert!(before.contains(&cwr0));
    ip(&["-n", n, "link", "del", "cwr0"]);
    let after = interfaces::find(Some(n), &addrs).unwrap();
    assert!(
        !after.present.contains(&cwr0),
        "a deleted veth is not present"
    );
    let found = after.by_addr;
    assert!(!found.contains_key(&"10.77.0.5".parse::<IpAddr>().unwrap()));
    assert_eq!(found.len(), 1);
    drop(pod);
}

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

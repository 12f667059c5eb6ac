//! Root tier: FQDN egress on real traffic, in the lab of `cellwall_testkit::fqdn` (a real DNS
//! server, a web server outside the inventory on many addresses, a client whose
//! ClusterNetworkPolicy accepts `*.allowed.test` on one port and denies every other address).
//! Checked: an allowed name connects; a name outside the rule, an address without a lookup and
//! a pod's own address are dropped; a workload "answering" unasked cannot plant an address under
//! an allowed name; CNAME chains, DNS over TCP, an answer that changes; the first connection
//! after a fresh answer succeeds in 1,000 of 1,000 tries (each try a new name on a new address,
//! so nothing was programmed before its answer); flows and the map show the names.
//! (The latency the hold adds: `benches/dns_latency.rs`.)

use cellwall_testkit::fqdn::*;
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, CLASS};
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

/// How many fresh names the race test resolves and connects to.
const FRESH: usize = 1000;

/// The attack: a workload "answers" the client from port 53, unasked, planting an address
/// under an allowed name. Not a reply to any query of the client: it must never be learned.
fn plant_unasked_answer(attacker_ns: &str) {
    in_netns(attacker_ns, || {
        let sock = UdpSocket::bind("0.0.0.0:53").unwrap();
        let mut p = Packet::new_reply(7);
        let IpAddr::V4(planted) = web_addr(1010) else {
            unreachable!()
        };
        p.answers.push(simple_dns::ResourceRecord::new(
            Name::new_unchecked("evil.allowed.test"),
            CLASS::IN,
            300,
            RData::A(simple_dns::rdata::A {
                address: planted.into(),
            }),
        ));
        let msg = p.build_bytes_vec().unwrap();
        for port in [40000u16, 40001, 53] {
            sock.send_to(&msg, (CLIENT_IP, port)).unwrap();
        }
    });
    std::thread::sleep(Duration::from_millis(300));
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn fqdn_egress_on_real_traffic() {
    let mut hosts = String::new();
    for i in 0..FRESH {
        hosts.push_str(&format!("{} n{i}.allowed.test\n", web_addr(i)));
    }
    for (i, name) in [
        (1001, "other.blocked.test"),
        (1002, "target.cdn.test"),
        (1003, "rot.allowed.test"),
        (1005, "tcp.allowed.test"),
    ] {
        hosts.push_str(&format!("{} {name}\n", web_addr(i)));
    }
    let f = FqdnLab::up(
        cellwall_testkit::bin!("cellwall"),
        "fqdn",
        &hosts,
        &["alias.allowed.test,target.cdn.test"],
    );

    let ok = in_netns(&f.client_ns, || {
        // The DNS server is up once it answers.
        let t = Instant::now();
        while try_resolve("n0.allowed.test").is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "dnsmasq never answered"
            );
        }
        // Neither a name outside the rule, nor an address without a lookup, nor a pod's own
        // address (a name cannot make a pod an FQDN peer).
        let (blocked, _) = resolve("other.blocked.test");
        assert_eq!(blocked, [web_addr(1001)]);
        assert!(!connects(blocked[0]), "other.blocked.test is not allowed");
        assert!(!connects(web_addr(1004)), "an address nobody resolved");
        assert!(
            !connects(WEB_POD_IP.parse().unwrap()),
            "the web pod's own address"
        );
        // Answers are held and learned from here on (n0 was): the attack is a real one.
        plant_unasked_answer(&f.plain_ns);
        assert!(
            !connects(web_addr(1010)),
            "an address planted by an unasked answer"
        );
        // A CNAME chain: the alias matches the rule, the address is the target's.
        let (alias, _) = resolve("alias.allowed.test");
        assert_eq!(alias, [web_addr(1002)]);
        assert!(connects(alias[0]), "alias.allowed.test via CNAME");
        // DNS over TCP.
        let tcp = resolve_tcp("tcp.allowed.test");
        assert_eq!(tcp, [web_addr(1005)]);
        assert!(connects(tcp[0]), "tcp.allowed.test over TCP");
        // An answer that changes: the new address is followed at once.
        let (rot, _) = resolve("rot.allowed.test");
        assert!(connects(rot[0]));
        let moved = std::fs::read_to_string(&f.hosts).unwrap().replace(
            &format!("{} rot.allowed.test", web_addr(1003)),
            &format!("{} rot.allowed.test", web_addr(1007)),
        );
        std::fs::write(&f.hosts, moved).unwrap();
        f.dns.reload();
        let t = Instant::now();
        let rot2 = loop {
            let (a, _) = resolve("rot.allowed.test");
            if a == [web_addr(1007)] {
                break a;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "dnsmasq did not reload"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert!(connects(rot2[0]), "the rotated address");
        // The race: a fresh name on a fresh address, connected right after its answer (n0,
        // resolved first of all above, counts too).
        let mut ok = usize::from(connects(web_addr(0)));
        for i in 1..FRESH {
            let (a, _) = resolve(&format!("n{i}.allowed.test"));
            if a == [web_addr(i)] && connects(a[0]) {
                ok += 1;
            } else {
                eprintln!("first connection to n{i}.allowed.test ({a:?}) failed");
            }
        }
        ok
    });
    eprintln!("FQDN: first connection after a fresh answer: {ok}/{FRESH}");
    assert_eq!(
        ok, FRESH,
        "every first connection after a fresh answer succeeds"
    );
    // Visibility: the flows carry the names, and the map shows names, not addresses.
    let t = Instant::now();
    loop {
        let (_, out, _) = f
            .lab
            // Every flow of the client: its 1,000 fresh names and their lookups come after
            // target.cdn.test, past the default limit of the newest 1,000.
            .cw_lab(&[
                "flows",
                "--workload",
                "app/client",
                "--limit",
                "100000",
                "-o",
                "json",
            ]);
        let (_, map, _) = f.lab.cw_lab(&["map", "--since", "1h", "-o", "json"]);
        let named_flow = out.contains("\"target.cdn.test\"");
        let named_node = map.contains("\"n7.allowed.test\"");
        if named_flow && named_node {
            assert!(
                !map.contains("\"198.18.0.8\""),
                "named addresses are not map nodes"
            );
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "no named flows or map nodes after 30 s:\n{out}\n{map}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // Explain decides on the recorded name (and the address the flow went to).
    let (ok, out, err) = f
        .lab
        .cw_lab(&["explain", "app/client", "n7.allowed.test", "TCP/8081"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("ALLOWED") && out.contains("allowed-names") && out.contains("198.18.0.8"),
        "{out}"
    );
    let (ok, out, err) = f
        .lab
        .cw_lab(&["explain", "app/client", "other.blocked.test", "TCP/8081"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("DENIED") && out.contains("nothing-else"),
        "{out}"
    );
    let (ok, _, err) = f
        .lab
        .cw_lab(&["explain", "app/client", "never.seen.test", "TCP/8081"]);
    assert!(!ok && err.contains("never.seen.test=IP"), "{err}");
}

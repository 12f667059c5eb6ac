//! Root tier: FQDN egress on real traffic. A lab with a real DNS server (dnsmasq, Debian's
//! `dnsmasq-base`) in a pod, a web server outside the inventory on many addresses, and a client
//! whose ClusterNetworkPolicy accepts `*.allowed.test` on one port and denies every other
//! address. Checked: an allowed name connects; a name outside the rule, the same addresses
//! without a lookup, and a pod's own address are dropped; CNAME chains, DNS over TCP, an answer
//! that changes; the first connection after a fresh answer succeeds in 1,000 of 1,000 tries
//! (each try a new name on a new address, so nothing was programmed before the answer). The DNS
//! answer latency with and without holding is printed (docs/benchmarks.md "FQDN").

use cellwall_testkit::lab::{netns, Lab};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, Question, CLASS, TYPE};
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const DNS_IP: &str = "10.78.0.2";
/// The web server's port on its extra (non-inventory) addresses.
const PORT: u16 = 8081;
/// How many fresh names the race test resolves and connects to.
const FRESH: usize = 1000;

fn manifests() -> String {
    let pod = |ns: &str, name: &str, ip: &str, ports: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
             spec: {{containers: [{{name: c, ports: [{ports}]}}]}}\nstatus: {{podIP: {ip}}}\n"
        )
    };
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n".to_string(),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ext}\n".to_string(),
        pod("app", "client", "10.78.0.1", "{containerPort: 9}"),
        pod("app", "dns", DNS_IP, ""),
        pod("ext", "web", "10.78.0.3", "{containerPort: 8080}"),
        pod("app", "plain", "10.78.0.4", "{containerPort: 9}"),
        r#"apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {name: client-egress}
spec:
  tier: Admin
  priority: 10
  subject: {pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: client}}}}
  egress:
  - name: dns
    action: Accept
    to: [{pods: {namespaceSelector: {}, podSelector: {matchLabels: {app: dns}}}}]
    protocols: [{udp: {destinationPort: {number: 53}}}, {tcp: {destinationPort: {number: 53}}}]
  - name: allowed-names
    action: Accept
    to: [{domainNames: ["*.allowed.test"]}]
    protocols: [{tcp: {destinationPort: {number: 8081}}}]
  - name: nothing-else
    action: Deny
    to: [{networks: ["0.0.0.0/0"]}]
"#
        .to_string(),
    ]
    .join("---\n")
}

/// The i-th address of the web server's extra range 198.18.0.0/21 (RFC 2544 test space).
fn web_addr(i: usize) -> IpAddr {
    IpAddr::from([198, 18, (i / 250) as u8, (i % 250 + 1) as u8])
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// dnsmasq in the DNS pod, answering from `hosts` (re-read on SIGHUP) with a 5 s TTL.
struct Dns {
    child: Child,
}

impl Dns {
    fn start(netns: &str, hosts: &str, cnames: &[&str]) -> Dns {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground"])
            .args([
                "--no-resolv",
                "--no-hosts",
                "--addn-hosts",
                hosts,
                "--local-ttl=5",
            ])
            .args(["--listen-address", DNS_IP, "--bind-interfaces", "--port=53"])
            .args([
                "--user=root",
                "--pid-file",
                "--log-facility=-",
                "--conf-file=/dev/null",
            ]);
        for c in cnames {
            cmd.arg(format!("--cname={c}"));
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base; scripts/setup.sh installs it)");
        Dns { child }
    }

    fn reload(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn query_bytes(name: &str, id: u16) -> Vec<u8> {
    let mut p = Packet::new_query(id);
    p.set_flags(simple_dns::PacketFlag::RECURSION_DESIRED);
    p.questions.push(Question::new(
        Name::new_unchecked(name),
        TYPE::A.into(),
        CLASS::IN.into(),
        false,
    ));
    p.build_bytes_vec().unwrap()
}

fn addresses(msg: &[u8]) -> Vec<IpAddr> {
    let p = Packet::parse(msg).unwrap();
    p.answers
        .iter()
        .filter_map(|a| match &a.rdata {
            RData::A(a) => Some(IpAddr::from(std::net::Ipv4Addr::from(a.address))),
            _ => None,
        })
        .collect()
}

/// Resolves `name` over UDP (three tries of 1 s): the addresses and the time the answer took.
fn resolve(name: &str) -> (Vec<IpAddr>, Duration) {
    try_resolve(name).unwrap_or_else(|| panic!("no DNS answer for {name}"))
}

fn try_resolve(name: &str) -> Option<(Vec<IpAddr>, Duration)> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let server: SocketAddr = format!("{DNS_IP}:53").parse().unwrap();
    let mut buf = [0u8; 1500];
    for attempt in 0..3u16 {
        let t = Instant::now();
        s.send_to(&query_bytes(name, 7 + attempt), server).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some((addresses(&buf[..n]), t.elapsed()));
        }
    }
    None
}

/// Resolves `name` over TCP.
fn resolve_tcp(name: &str) -> Vec<IpAddr> {
    let mut s = TcpStream::connect_timeout(
        &format!("{DNS_IP}:53").parse().unwrap(),
        Duration::from_secs(2),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let q = query_bytes(name, 9);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend(q);
    s.write_all(&framed).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut msg = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut msg).unwrap();
    addresses(&msg)
}

fn connects(ip: IpAddr) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(ip, PORT), Duration::from_millis(700)).is_ok()
}

/// The attack: a workload "answers" the client from port 53, unasked, planting an address
/// under an allowed name. Not a reply to any query of the client: it must never be learned.
fn plant_unasked_answer(attacker_ns: &str) {
    let ns = attacker_ns.to_string();
    std::thread::spawn(move || {
        netns::enter(&ns).unwrap();
        let sock = UdpSocket::bind("0.0.0.0:53").unwrap();
        let mut p = Packet::new_reply(7);
        p.answers.push(simple_dns::ResourceRecord::new(
            Name::new_unchecked("evil.allowed.test"),
            CLASS::IN,
            300,
            RData::A(simple_dns::rdata::A {
                address: match web_addr(1010) {
                    IpAddr::V4(a) => a.into(),
                    _ => unreachable!(),
                },
            }),
        ));
        let msg = p.build_bytes_vec().unwrap();
        for port in [40000u16, 40001, 53] {
            sock.send_to(&msg, ("10.78.0.1", port)).unwrap();
        }
    })
    .join()
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

#[test]
#[ignore = "root tier: needs network namespaces and BPF"]
fn fqdn_egress_on_real_traffic() {
    let lab = Lab::up(cellwall_testkit::bin!("cellwall"), "fqdn", &manifests());
    let (client, web, dns, plain) = (
        lab.pod("client"),
        lab.pod("web"),
        lab.pod("dns"),
        lab.pod("plain"),
    );
    // The web server answers on every address of 198.18.0.0/21, none of them in the inventory.
    let node = format!("cw-{}-node", lab.name);
    ip(&[
        "-n",
        &web.netns,
        "route",
        "add",
        "local",
        "198.18.0.0/21",
        "dev",
        "lo",
    ]);
    ip(&[
        "-n",
        &node,
        "route",
        "add",
        "198.18.0.0/21",
        "via",
        "10.78.0.3",
    ]);
    let web_ns = web.netns.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        netns::enter(&web_ns).unwrap();
        let l = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
        ready_tx.send(()).unwrap();
        for s in l.incoming().flatten() {
            drop(s);
        }
    });
    ready_rx.recv().unwrap();

    let mut hosts = String::new();
    for i in 0..FRESH {
        hosts.push_str(&format!("{} n{i}.allowed.test\n", web_addr(i)));
    }
    hosts.push_str(&format!("{} other.blocked.test\n", web_addr(1001)));
    hosts.push_str(&format!("{} target.cdn.test\n", web_addr(1002)));
    hosts.push_str(&format!("{} rot.allowed.test\n", web_addr(1003)));
    hosts.push_str(&format!("{} tcp.allowed.test\n", web_addr(1005)));
    let hosts_file = lab.file("hosts", &hosts);
    let server = Dns::start(
        &dns.netns,
        &hosts_file,
        &["alias.allowed.test,target.cdn.test"],
    );

    let client_ns = client.netns.clone();
    let plain_ns = plain.netns.clone();
    let lab_dir = lab.dir.clone();
    let results = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&client_ns).unwrap();
            // The DNS server is up once it answers.
            let t = Instant::now();
            while try_resolve("n0.allowed.test").is_none() {
                assert!(
                    t.elapsed() < Duration::from_secs(20),
                    "dnsmasq never answered"
                );
            }
            // Neither a name outside the rule, nor an address without a lookup, nor a pod's
            // own address (a name cannot make a pod an FQDN peer).
            let (blocked, _) = resolve("other.blocked.test");
            assert_eq!(blocked, [web_addr(1001)]);
            assert!(!connects(blocked[0]), "other.blocked.test is not allowed");
            assert!(!connects(web_addr(1004)), "an address nobody resolved");
            assert!(
                !connects("10.78.0.3".parse().unwrap()),
                "the web pod's own address"
            );
            // Answers are held and learned from here on (n0 was): the attack is a real one.
            plant_unasked_answer(&plain_ns);
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
            let moved = std::fs::read_to_string(lab_dir.join("hosts"))
                .unwrap()
                .replace(
                    &format!("{} rot.allowed.test", web_addr(1003)),
                    &format!("{} rot.allowed.test", web_addr(1007)),
                );
            std::fs::write(lab_dir.join("hosts"), moved).unwrap();
            server.reload();
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
            // The race: a fresh name on a fresh address, connected right after its answer
            // (n0, resolved first of all above, counts too).
            let mut ok = usize::from(connects(web_addr(0)));
            let mut held = Vec::new();
            for i in 1..FRESH {
                let (a, took) = resolve(&format!("n{i}.allowed.test"));
                held.push(took);
                if a == [web_addr(i)] && connects(a[0]) {
                    ok += 1;
                } else {
                    eprintln!("first connection to n{i}.allowed.test ({a:?}) failed");
                }
            }
            (ok, held)
        })
        .join()
        .unwrap()
    });
    let (ok, mut held) = results;
    // The control: a pod whose answers are not held (no FQDN policy).
    let mut free = std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(&plain_ns).unwrap();
            (0..FRESH.min(300))
                .map(|_| resolve("n1.allowed.test").1)
                .collect::<Vec<_>>()
        })
        .join()
        .unwrap()
    });
    eprintln!(
        "FQDN: first connection after a fresh answer: {ok}/{FRESH}; DNS answer latency p50/p99: held {:?}/{:?}, not held {:?}/{:?}",
        percentile(&mut held, 0.5),
        percentile(&mut held, 0.99),
        percentile(&mut free, 0.5),
        percentile(&mut free, 0.99),
    );
    assert_eq!(
        ok, FRESH,
        "every first connection after a fresh answer succeeds"
    );
    drop(server);
}

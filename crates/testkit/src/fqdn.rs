//! A lab for FQDN egress, shared by its root test and its latency benchmark: a real DNS server
//! (dnsmasq, Debian's `dnsmasq-base`) in pod `app/dns`, a web server outside the inventory on
//! every address of 198.18.0.0/21 (RFC 2544 test space, routed from the lab's node to a
//! namespace of its own: the outside world, not a pod, whose veth would drop what it sends
//! from addresses that are not its own), a client
//! whose ClusterNetworkPolicy accepts `*.allowed.test` on one port and denies every other
//! address, and a `plain` pod no policy selects (its answers are not held). Plus a DNS client.

use crate::lab::{netns, Lab};
use simple_dns::rdata::RData;
use simple_dns::{Name, Packet, Question, CLASS, TYPE};
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const DNS_IP: &str = "10.78.0.2";
pub const CLIENT_IP: &str = "10.78.0.1";
pub const WEB_POD_IP: &str = "10.78.0.3";
/// The web server's port on its extra (non-inventory) addresses; the one the policy allows.
pub const PORT: u16 = 8081;

fn pod(ns: &str, name: &str, ip: &str, ports: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {name}}}}}\n\
         spec: {{containers: [{{name: c, ports: [{ports}]}}]}}\nstatus: {{podIP: {ip}}}\n"
    )
}

/// The lab's manifests.
pub fn manifests() -> String {
    [
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n".to_string(),
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: ext}\n".to_string(),
        pod("app", "client", CLIENT_IP, "{containerPort: 9}"),
        pod("app", "dns", DNS_IP, ""),
        pod("ext", "web", WEB_POD_IP, "{containerPort: 8080}"),
        pod("app", "plain", "10.78.0.4", "{containerPort: 9}"),
        format!(
            r#"apiVersion: policy.networking.k8s.io/v1alpha2
kind: ClusterNetworkPolicy
metadata: {{name: client-egress}}
spec:
  tier: Admin
  priority: 10
  subject: {{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: client}}}}}}}}
  egress:
  - name: dns
    action: Accept
    to: [{{pods: {{namespaceSelector: {{}}, podSelector: {{matchLabels: {{app: dns}}}}}}}}]
    protocols: [{{udp: {{destinationPort: {{number: 53}}}}}}, {{tcp: {{destinationPort: {{number: 53}}}}}}]
  - name: allowed-names
    action: Accept
    to: [{{domainNames: ["*.allowed.test"]}}]
    protocols: [{{tcp: {{destinationPort: {{number: {PORT}}}}}}}]
  - name: nothing-else
    action: Deny
    to: [{{networks: ["0.0.0.0/0"]}}]
"#
        ),
    ]
    .join("---\n")
}

/// The i-th address of the web server's range (i < 2,000).
pub fn web_addr(i: usize) -> IpAddr {
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

/// dnsmasq in a pod, answering from a hosts file (re-read on SIGHUP) with a 5 s TTL.
pub struct Dns {
    child: Child,
}

impl Dns {
    pub fn start(netns: &str, hosts: &str, cnames: &[&str]) -> Dns {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", netns, "dnsmasq", "--keep-in-foreground"])
            .args(["--no-resolv", "--no-hosts", "--addn-hosts", hosts])
            .args(["--local-ttl=5", "--listen-address", DNS_IP])
            .args([
                "--bind-interfaces",
                "--port=53",
                "--user=root",
                "--pid-file",
            ])
            .args(["--log-facility=-", "--conf-file=/dev/null"]);
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

    /// Re-reads the hosts file.
    pub fn reload(&self) {
        let ok = Command::new("kill")
            .args(["-HUP", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "signalling dnsmasq");
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The lab, its DNS server, and the web server on the extra addresses.
pub struct FqdnLab {
    pub lab: Lab,
    pub dns: Dns,
    /// The hosts file dnsmasq answers from.
    pub hosts: std::path::PathBuf,
    pub client_ns: String,
    pub plain_ns: String,
}

impl FqdnLab {
    /// Up (with `cellwall`, the caller's `bin!("cellwall")`), with `hosts` (lines
    /// `ADDRESS NAME`) and dnsmasq `--cname` aliases.
    pub fn up(cellwall: crate::bin::Bin, tag: &str, hosts: &str, cnames: &[&str]) -> FqdnLab {
        let lab = Lab::up(cellwall, tag, &manifests());
        let (client, dns, plain) = (lab.pod("client"), lab.pod("dns"), lab.pod("plain"));
        let node = format!("cw-{}-node", lab.name);
        // Inside the lab's prefix: `lab down` removes it.
        let outside = format!("cw-{}-outside", lab.name);
        let link = format!("cwo{}", lab.name);
        let gw = cellwall_lab::GATEWAY;
        ip(&["netns", "add", &outside]);
        ip(&[
            "-n", &node, "link", "add", &link, "type", "veth", "peer", "name", "eth0", "netns",
            &outside,
        ]);
        for (ns, dev) in [
            (node.as_str(), link.as_str()),
            (&outside, "eth0"),
            (&outside, "lo"),
        ] {
            ip(&["-n", ns, "link", "set", dev, "up"]);
        }
        for r in [
            &["route", "add", "local", "198.18.0.0/21", "dev", "lo"][..],
            &["route", "add", gw, "dev", "eth0", "scope", "link"],
            &["route", "add", "default", "via", gw, "dev", "eth0"],
        ] {
            ip(&[&["-n", outside.as_str()][..], r].concat());
        }
        ip(&["-n", &node, "route", "add", "198.18.0.0/21", "dev", &link]);
        let rp = format!("/proc/sys/net/ipv4/conf/{link}/rp_filter");
        netns::run_in(&node, move || std::fs::write(rp, "0"))
            .unwrap()
            .unwrap();
        let web_ns = outside;
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
        let path = lab.file("hosts", hosts);
        let server = Dns::start(&dns.netns, &path, cnames);
        FqdnLab {
            dns: server,
            hosts: path.into(),
            client_ns: client.netns,
            plain_ns: plain.netns,
            lab,
        }
    }
}

pub fn query_bytes(name: &str, id: u16) -> Vec<u8> {
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

/// The IPv4 addresses of an answer.
pub fn addresses(msg: &[u8]) -> Vec<IpAddr> {
    let p = Packet::parse(msg).unwrap();
    p.answers
        .iter()
        .filter_map(|a| match &a.rdata {
            RData::A(a) => Some(IpAddr::from(Ipv4Addr::from(a.address))),
            _ => None,
        })
        .collect()
}

/// Resolves `name` over UDP (three tries of 1 s), from the calling thread's namespace: the
/// addresses and the time the answer took.
pub fn try_resolve(name: &str) -> Option<(Vec<IpAddr>, Duration)> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let server: SocketAddr = format!("{DNS_IP}:53").parse().unwrap();
    let mut buf = [0u8; 1500];
    for attempt in 0..3u16 {
        let t = std::time::Instant::now();
        s.send_to(&query_bytes(name, 7 + attempt), server).unwrap();
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            return Some((addresses(&buf[..n]), t.elapsed()));
        }
    }
    None
}

pub fn resolve(name: &str) -> (Vec<IpAddr>, Duration) {
    try_resolve(name).unwrap_or_else(|| panic!("no DNS answer for {name}"))
}

/// Resolves `name` over TCP.
pub fn resolve_tcp(name: &str) -> Vec<IpAddr> {
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

/// Whether a TCP connection to the web server at `ip` opens (a drop times out in 700 ms).
pub fn connects(ip: IpAddr) -> bool {
    TcpStream::connect_timeout(&SocketAddr::new(ip, PORT), Duration::from_millis(700)).is_ok()
}

/// Runs `f` on a thread inside network namespace `ns`.
pub fn in_netns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            netns::enter(ns).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

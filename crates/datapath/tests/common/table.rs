//! The vocabulary and the runner of the table-driven program tests (tests/programs.rs). A row
//! sets up policy, sends packets through the real programs (BPF_PROG_TEST_RUN on the real
//! object and maps), and states everything that must hold after its last packet: the verdict,
//! the whole conntrack and admitted-pair maps, what the packet added to the counters and rule
//! hits, and the event it produced. Nothing is left unchecked: a field left at its `ROW`
//! default expects "nothing" (no entry, no count, no event).

use super::{allowed_cpus, ip_packet, ip_packet_frag, packet_flags, run_on_cpu, set_cpus, Pins};
use cellwall_datapath::abi::{self, addr16, AdmitKey, CtKey, Event};
use cellwall_datapath::{Counters, Desired, Hook, KernelDatapath};
use cellwall_policy::{Compiler, Engine, Protocol};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

pub const IN: u8 = abi::DIR_INGRESS;
pub const EG: u8 = abi::DIR_EGRESS;
pub const OK: i32 = super::TC_ACT_OK;
pub const SHOT: i32 = super::TC_ACT_SHOT;

/// A packet's layer 4 (or what stands in for it).
#[derive(Clone, Copy, Debug)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    /// An ICMP (IPv4) or ICMPv6 message of this type.
    Icmp(u8),
    /// Any other protocol (IPv6: next header) number, no ports.
    Proto(u8),
    /// A non-first IPv4 fragment of this protocol: no ports in it.
    Fragment(u8),
}

#[derive(Clone, Copy, Debug)]
pub enum Pkt {
    Ip { src: IpAddr, dst: IpAddr, l4: L4 },
    Arp,
}

pub const SYN: u8 = 0x02;
pub const ACK: u8 = 0x10;
pub const SYN_ACK: u8 = 0x12;
pub const RST: u8 = 0x04;

pub const fn tcp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, flags: u8) -> Pkt {
    let l4 = L4::Tcp {
        sport,
        dport,
        flags,
    };
    Pkt::Ip { src, dst, l4 }
}

pub const fn udp(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Pkt {
    let l4 = L4::Udp { sport, dport };
    Pkt::Ip { src, dst, l4 }
}

pub const fn ip(src: IpAddr, dst: IpAddr, l4: L4) -> Pkt {
    Pkt::Ip { src, dst, l4 }
}

impl Pkt {
    fn bytes(&self) -> Vec<u8> {
        let Pkt::Ip { src, dst, l4 } = *self else {
            return super::arp();
        };
        let v6 = src.is_ipv6();
        match l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => packet_flags(src, dst, Protocol::Tcp, sport, dport, flags),
            L4::Udp { sport, dport } => packet_flags(src, dst, Protocol::Udp, sport, dport, 0),
            L4::Sctp { sport, dport } => packet_flags(src, dst, Protocol::Sctp, sport, dport, 0),
            L4::Icmp(t) if v6 => ip_packet(src, dst, 58, &[&[t][..], &[0u8; 23][..]].concat()),
            L4::Icmp(t) => ip_packet(src, dst, 1, &[t, 0, 0, 0, 0, 0, 0, 0]),
            L4::Proto(n) => ip_packet(src, dst, n, &[0u8; 8]),
            L4::Fragment(n) => ip_packet_frag(src, dst, n, &[0u8; 16], 185),
        }
    }

    /// (source, destination, source port, destination port, protocol) as the programs parse it.
    fn tuple(&self) -> ([u8; 16], [u8; 16], u16, u16, u8) {
        let Pkt::Ip { src, dst, l4 } = *self else {
            panic!("ARP has no tuple")
        };
        let (sport, dport, proto) = match l4 {
            L4::Tcp { sport, dport, .. } => (sport, dport, 6),
            L4::Udp { sport, dport } => (sport, dport, 17),
            L4::Sctp { sport, dport } => (sport, dport, 132),
            L4::Icmp(_) => (0, 0, if src.is_ipv6() { 58 } else { 1 }),
            L4::Proto(n) | L4::Fragment(n) => (0, 0, n),
        };
        (addr16(src), addr16(dst), sport, dport, proto)
    }
}

/// What happens before the packet under test.
#[derive(Clone, Copy, Debug)]
pub enum Step {
    /// Sends a packet; it must get this verdict.
    Send(Hook, Pkt, i32),
    /// Applies these policies (with the same pods) in place of the row's: a commit, epoch + 1.
    Apply(&'static [&'static str]),
}

/// A conntrack entry: at endpoint `at`, direction `dir`, keyed by `key`'s tuple as sent.
#[derive(Clone, Copy, Debug)]
pub struct CtWant {
    pub at: IpAddr,
    pub dir: u8,
    pub key: Pkt,
    pub revoked: bool,
}

pub const fn tracked(at: IpAddr, dir: u8, key: Pkt) -> CtWant {
    CtWant {
        at,
        dir,
        key,
        revoked: false,
    }
}

pub const fn revoked(at: IpAddr, dir: u8, key: Pkt) -> CtWant {
    CtWant {
        at,
        dir,
        key,
        revoked: true,
    }
}

/// An admitted-pair record: `at` admitted `of`'s connection in `dir` (peer and port from it).
#[derive(Clone, Copy, Debug)]
pub struct PairWant {
    pub at: IpAddr,
    pub dir: u8,
    pub of: Pkt,
}

pub const fn pair(at: IpAddr, dir: u8, of: Pkt) -> PairWant {
    PairWant { at, dir, of }
}

/// A flow event: kind (abi::EV_*), direction, the deciding rule's description ("" = none),
/// about `of` (None: the packet under test).
#[derive(Clone, Copy, Debug)]
pub struct EvWant {
    pub kind: u8,
    pub dir: u8,
    pub rule: &'static str,
    pub of: Option<Pkt>,
}

pub const fn ev(kind: u8, dir: u8, rule: &'static str) -> Option<EvWant> {
    Some(EvWant {
        kind,
        dir,
        rule,
        of: None,
    })
}

pub const fn ev_of(kind: u8, dir: u8, rule: &'static str, of: Pkt) -> Option<EvWant> {
    Some(EvWant {
        kind,
        dir,
        rule,
        of: Some(of),
    })
}

pub struct Row {
    pub name: &'static str,
    /// Policies in force (YAML documents added to the table's pods).
    pub policy: &'static [&'static str],
    /// Flow events on (the default after load) or off.
    pub visible: bool,
    /// Endpoint `a` on the interface BPF_PROG_TEST_RUN uses (loopback), every other endpoint
    /// elsewhere; false: no arrival-interface check.
    pub spoof_check: bool,
    pub before: &'static [Step],
    /// The packet under test, and its verdict.
    pub send: (Hook, Pkt),
    pub verdict: i32,
    /// Exactly the conntrack entries after it.
    pub ct: &'static [CtWant],
    /// Exactly the admitted pairs after it.
    pub pairs: &'static [PairWant],
    /// What it added to the counters.
    pub counters: Counters,
    /// What it added to rule hits, by rule description.
    pub hits: &'static [(&'static str, u64)],
    /// The one event it produced, or none.
    pub event: Option<EvWant>,
}

pub const NONE: Counters = Counters {
    allowed: 0,
    denied: 0,
    audit: 0,
    ct_hits: 0,
    events_lost: 0,
    spoofed: 0,
    revoked: 0,
    dns_held: 0,
    dns_lost: 0,
    dns_unsolicited: 0,
};

/// A new connection allowed (counted once).
pub const ALLOWED: Counters = Counters { allowed: 1, ..NONE };
/// Allowed, and an audit-mode rule would have denied it.
pub const AUDITED: Counters = Counters {
    allowed: 1,
    audit: 1,
    ..NONE
};
pub const DENIED: Counters = Counters { denied: 1, ..NONE };
/// A packet of a known connection.
pub const CT_HIT: Counters = Counters { ct_hits: 1, ..NONE };
pub const SPOOFED: Counters = Counters { spoofed: 1, ..NONE };
pub const REVOKED: Counters = Counters { revoked: 1, ..NONE };

/// A row that expects nothing (a row overrides what it expects).
pub const ROW: Row = Row {
    name: "",
    policy: &[],
    visible: true,
    spoof_check: false,
    before: &[],
    send: (Hook::ToPod, Pkt::Arp),
    verdict: OK,
    ct: &[],
    pairs: &[],
    counters: NONE,
    hits: &[],
    event: None,
};

/// Runs every row once with all its packets on one CPU and once with its packets alternating
/// between two CPUs (the verdict and endpoint caches are per CPU and must not change what is
/// observed), each on a fresh datapath. Panics listing every failing row by name.
pub fn run_table(pods: &str, rows: &[Row]) {
    let cpus = allowed_cpus();
    let _restore = Affinity(cpus.clone());
    let mut modes = vec![(cpus[0], cpus[0])];
    match cpus.get(1) {
        Some(c) => modes.push((cpus[0], *c)),
        None => eprintln!("one CPU only: rows run without alternating CPUs"),
    }
    let mut failures = Vec::new();
    for (one, two) in modes {
        for row in rows {
            let mode = if one == two {
                format!("cpu {one}")
            } else {
                format!("cpus {one}/{two}")
            };
            if let Err(e) = run_row(pods, row, [one, two]) {
                failures.push(format!("[{mode}] {}:\n    {}", row.name, e.join("\n    ")));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} row runs failed ({} rows, each on one CPU and alternating):\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    eprintln!("{} rows passed", rows.len());
}

/// Gives the thread back every CPU it had when dropped (also when a row panics).
struct Affinity(Vec<usize>);

impl Drop for Affinity {
    fn drop(&mut self) {
        set_cpus(&self.0);
    }
}

/// Compiles `pods` + `policy` for node n1: the entries to write and the engine that names the
/// rules.
fn compile(pods: &str, policy: &[&str], spoof_check: bool) -> (Desired, Engine) {
    let yaml = std::iter::once(pods)
        .chain(policy.iter().copied())
        .collect::<Vec<_>>()
        .join("\n---\n");
    let (inv, pols) = super::load(&yaml);
    let engine = Engine::build(inv, pols, 0);
    let np = Compiler::new("n1").full(&engine);
    let d = Desired::from_node_policy(&np, |wk| match (spoof_check, wk.name.as_str()) {
        (false, _) => 0,
        (true, "a") => 1,
        (true, _) => 9999,
    });
    (d, engine)
}

fn run_row(pods: &str, row: &Row, cpus: [usize; 2]) -> Result<(), Vec<String>> {
    let pins = Pins::new("row");
    let mut dp = KernelDatapath::open(&pins.0).map_err(|e| vec![format!("open: {e}")])?;
    let (d, engine) = compile(pods, row.policy, row.spoof_check);
    dp.apply(&d).map_err(|e| vec![format!("apply: {e}")])?;
    dp.set_visibility(row.visible).unwrap();
    let mut engines = vec![engine];
    for (i, step) in row.before.iter().enumerate() {
        match *step {
            Step::Send(hook, pkt, want) => {
                run_on_cpu(cpus[i % 2]);
                let got = dp.test_run(hook, &pkt.bytes()).unwrap();
                if got != want {
                    return Err(vec![format!(
                        "before[{i}] {hook:?} {pkt:?}: verdict {} (want {})",
                        verdict(got),
                        verdict(want)
                    )]);
                }
            }
            Step::Apply(policy) => {
                let (d, engine) = compile(pods, policy, row.spoof_check);
                dp.apply(&d).map_err(|e| vec![format!("apply: {e}")])?;
                engines.push(engine);
            }
        }
    }
    let describe = |id: u32| -> String {
        if id == 0 {
            return String::new();
        }
        engines
            .iter()
            .find_map(|e| e.rule(id))
            .map(|r| r.describe())
            .unwrap_or_else(|| format!("rule #{id}"))
    };
    let counters = dp.counters().unwrap();
    let hits = dp.rule_hits().unwrap();
    dp.drain_events(usize::MAX).unwrap();

    run_on_cpu(cpus[row.before.len() % 2]);
    let (hook, pkt) = row.send;
    let got = dp.test_run(hook, &pkt.bytes()).unwrap();
    let mut errs = Vec::new();
    if got != row.verdict {
        errs.push(format!(
            "{hook:?} {pkt:?}: verdict {} (want {})",
            verdict(got),
            verdict(row.verdict)
        ));
    }

    let eps: BTreeMap<[u8; 16], u32> = super::endpoints(&pins)
        .into_iter()
        .map(|(k, v)| (k.addr, v.ep_id))
        .collect();
    let ep = |a: IpAddr| eps.get(&addr16(a)).copied().unwrap_or(u32::MAX);
    let name = |id: u32| {
        eps.iter()
            .find(|(_, e)| **e == id)
            .map(|(a, _)| show(*a))
            .unwrap_or_else(|| format!("ep #{id}"))
    };

    let c = dp.counters().unwrap();
    let added = Counters {
        allowed: c.allowed - counters.allowed,
        denied: c.denied - counters.denied,
        audit: c.audit - counters.audit,
        ct_hits: c.ct_hits - counters.ct_hits,
        events_lost: c.events_lost - counters.events_lost,
        spoofed: c.spoofed - counters.spoofed,
        revoked: c.revoked - counters.revoked,
        dns_held: c.dns_held - counters.dns_held,
        dns_lost: c.dns_lost - counters.dns_lost,
        dns_unsolicited: c.dns_unsolicited - counters.dns_unsolicited,
    };
    if added != row.counters {
        errs.push(format!(
            "counters added {added:?}\n      want {:?}",
            row.counters
        ));
    }

    let mut hit_delta = BTreeMap::new();
    for (id, n) in dp.rule_hits().unwrap() {
        let d = n - hits.get(&id).copied().unwrap_or(0);
        if d != 0 {
            hit_delta.insert(describe(id), d);
        }
    }
    let want_hits: BTreeMap<String, u64> =
        row.hits.iter().map(|(r, n)| (r.to_string(), *n)).collect();
    if hit_delta != want_hits {
        errs.push(format!("rule hits added {hit_delta:?}, want {want_hits:?}"));
    }

    let ct_key = |w: &CtWant| {
        let (s, d, sp, dp, proto) = w.key.tuple();
        let t = CtTuple {
            ep: ep(w.at),
            dir: w.dir,
            proto,
            src: s,
            sport: sp,
            dst: d,
            dport: dp,
        };
        ct_line(&t, w.revoked, &name)
    };
    let got_ct: BTreeSet<String> = super::conntrack(&pins)
        .iter()
        .map(|(k, v)| ct_of(k, v.flags & 1 != 0, &name))
        .collect();
    let want_ct: BTreeSet<String> = row.ct.iter().map(ct_key).collect();
    if got_ct != want_ct {
        errs.push(format!("conntrack {got_ct:?}\n      want {want_ct:?}"));
    }

    let got_pairs: BTreeSet<String> = super::admitted(&pins)
        .iter()
        .map(|(k, _)| pair_of(k, &name))
        .collect();
    let want_pairs: BTreeSet<String> = row
        .pairs
        .iter()
        .map(|w| {
            let (s, d, _, dport, proto) = w.of.tuple();
            let peer = if w.dir == EG { d } else { s };
            pair_line(ep(w.at), w.dir, proto, peer, dport, &name)
        })
        .collect();
    if got_pairs != want_pairs {
        errs.push(format!(
            "admitted pairs {got_pairs:?}\n      want {want_pairs:?}"
        ));
    }

    let got_ev: Vec<String> = dp
        .drain_events(usize::MAX)
        .unwrap()
        .iter()
        .map(|e| event_line(e, &describe, &name))
        .collect();
    let want_ev: Vec<String> = row
        .event
        .iter()
        .map(|w| {
            let (s, d, sp, dport, proto) = w.of.unwrap_or(pkt).tuple();
            let at = if w.dir == EG { s } else { d };
            let e = Event {
                ts_ns: 0,
                saddr: s,
                daddr: d,
                sport: sp.to_be(),
                dport: dport.to_be(),
                proto,
                dir: w.dir,
                kind: w.kind,
                pad: 0,
                ep_id: eps.get(&at).copied().unwrap_or(u32::MAX),
                peer: 0,
                rule: 0,
            };
            event_line(&e, &|_| w.rule.to_string(), &name)
        })
        .collect();
    if got_ev != want_ev {
        errs.push(format!("events {got_ev:?}\n      want {want_ev:?}"));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(errs)
    }
}

fn verdict(v: i32) -> &'static str {
    match v {
        OK => "TC_ACT_OK",
        SHOT => "TC_ACT_SHOT",
        _ => "other",
    }
}

/// An address as written (IPv4 without its v4-mapped prefix).
fn show(a: [u8; 16]) -> String {
    let v6 = std::net::Ipv6Addr::from(a);
    v6.to_ipv4_mapped()
        .map(|v4| v4.to_string())
        .unwrap_or_else(|| v6.to_string())
}

fn dir(d: u8) -> &'static str {
    if d == EG {
        "egress"
    } else {
        "ingress"
    }
}

/// A conntrack entry's key in host order, for printing.
struct CtTuple {
    ep: u32,
    dir: u8,
    proto: u8,
    src: [u8; 16],
    sport: u16,
    dst: [u8; 16],
    dport: u16,
}

fn ct_line(t: &CtTuple, revoked: bool, name: &dyn Fn(u32) -> String) -> String {
    format!(
        "at {} {} proto {} {}:{} -> {}:{}{}",
        name(t.ep),
        dir(t.dir),
        t.proto,
        show(t.src),
        t.sport,
        show(t.dst),
        t.dport,
        if revoked { " REVOKED" } else { "" }
    )
}

fn ct_of(k: &CtKey, revoked: bool, name: &dyn Fn(u32) -> String) -> String {
    let t = CtTuple {
        ep: k.ep_id,
        dir: k.dir,
        proto: k.proto,
        src: k.saddr,
        sport: u16::from_be(k.sport),
        dst: k.daddr,
        dport: u16::from_be(k.dport),
    };
    ct_line(&t, revoked, name)
}

fn pair_line(
    ep: u32,
    d: u8,
    proto: u8,
    peer: [u8; 16],
    port: u16,
    name: &dyn Fn(u32) -> String,
) -> String {
    format!(
        "at {} {} proto {proto} peer {} port {port}",
        name(ep),
        dir(d),
        show(peer)
    )
}

fn pair_of(k: &AdmitKey, name: &dyn Fn(u32) -> String) -> String {
    pair_line(k.ep_id, k.dir, k.proto, k.addr, u16::from_be(k.dport), name)
}

fn event_line(e: &Event, rule: &dyn Fn(u32) -> String, name: &dyn Fn(u32) -> String) -> String {
    let kind = match e.kind {
        abi::EV_ALLOW => "ALLOW",
        abi::EV_DENY => "DENY",
        abi::EV_AUDIT => "AUDIT",
        abi::EV_REVOKE => "REVOKE",
        _ => "?",
    };
    format!(
        "{kind} {} at {} proto {} {}:{} -> {}:{} rule {:?}",
        dir(e.dir),
        name(e.ep_id),
        e.proto,
        show(e.saddr),
        u16::from_be(e.sport),
        show(e.daddr),
        u16::from_be(e.dport),
        rule(e.rule)
    )
}

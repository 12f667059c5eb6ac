//! Root tier: the programs' decisions, table-driven, through BPF_PROG_TEST_RUN on the real
//! object and maps. Each row: the policies in force, the packet (from_pod = what the endpoint
//! sends, to_pod = what it receives), the verdict, and what must hold after it (common/table.rs
//! checks the whole conntrack and admitted-pair maps, the counters and rule hits it added, and
//! its event). Stateful rows (replies, revocation, untracked paths) are in tests/connections.rs.
//!
//! To add a row: copy the nearest one, change what differs, keep `..ROW` (which expects nothing
//! else). `cargo test -p cellwall-datapath --test programs -- --ignored` (as root).

mod common;

use cellwall_datapath::abi::{EV_ALLOW, EV_AUDIT, EV_DENY};
use cellwall_datapath::Hook::{FromPod, ToPod};
use common::table::*;
use common::world::*;

const SYN_AB: Pkt = tcp(A4, B4, 40000, 80, SYN);
const SYN_AB6: Pkt = tcp(A6, B6, 40000, 80, SYN);
const UDP_AB: Pkt = udp(A4, B4, 5353, 53);
const SCTP_AB: Pkt = ip(
    A4,
    B4,
    L4::Sctp {
        sport: 5000,
        dport: 9,
    },
);
const TO_8000: Pkt = tcp(A4, B4, 40000, 8000, SYN);
const TO_8063: Pkt = tcp(A4, B4, 40000, 8063, SYN);
const TO_8064: Pkt = tcp(A6, B6, 40000, 8064, SYN);
const TO_8100: Pkt = tcp(A4, B4, 40000, 8100, SYN);
const FROM_A: Pkt = tcp(A4, W4, 40000, 443, SYN);
/// A link-local IPv6 address (neighbour discovery's source).
const LINK_LOCAL6: std::net::IpAddr =
    std::net::IpAddr::V6(std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1));

const ROWS: &[Row] = &[
    // Not policy's business: passes before any lookup, records nothing.
    Row {
        name: "ARP leaving a fully isolated endpoint passes untouched",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, Pkt::Arp),
        ..ROW
    },
    Row {
        name: "ARP arriving passes untouched",
        policy: &[B_IN, B_OUT_NONE],
        send: (ToPod, Pkt::Arp),
        ..ROW
    },
    Row {
        name: "IPv6 neighbour solicitation from a fully isolated endpoint passes",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(B6, SNM_A6, L4::Icmp(135))),
        ..ROW
    },
    Row {
        name: "IPv6 neighbour advertisement into a fully isolated endpoint passes",
        policy: &[B_IN, B_OUT_NONE],
        send: (ToPod, ip(A6, B6, L4::Icmp(136))),
        ..ROW
    },
    Row {
        name: "ICMP echo into an isolated endpoint passes (ICMP is never policed)",
        policy: &[B_IN],
        send: (ToPod, ip(C4, B4, L4::Icmp(8))),
        ..ROW
    },
    Row {
        name: "unknown source: from a pod's interface, an address no local endpoint has is \
               dropped (a pod posing as a pod of another node)",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, tcp(N4, W4, 1000, 443, SYN)),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "unknown source: ICMP with it is dropped too",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(N4, W4, L4::Icmp(8))),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "unknown source: a link-local one passes (neighbour discovery)",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(LINK_LOCAL6, W6, L4::Icmp(135))),
        ..ROW
    },
    Row {
        name: "unknown source: a link-local one passes whatever follows (MLD's hop-by-hop header)",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(LINK_LOCAL6, W6, L4::Proto(0))),
        ..ROW
    },
    Row {
        name: "unknown source: ICMPv6 from a global address is dropped",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(W6, A6, L4::Icmp(128))),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "unknown endpoint: a packet to an address no endpoint has passes",
        policy: &[B_IN, B_OUT_NONE],
        send: (ToPod, tcp(W4, N4, 443, 1000, SYN)),
        ..ROW
    },
    // Allow and deny of new connections.
    Row {
        name: "allow IPv4: a's SYN into b (only b's ingress policed: pair recorded, no conntrack)",
        policy: &[B_IN],
        send: (ToPod, SYN_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "allow IPv6: a's SYN into b",
        policy: &[B_IN],
        send: (ToPod, SYN_AB6),
        pairs: &[pair(B6, IN, SYN_AB6)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "allow a peer on another node by its identity (ipcache)",
        policy: &[B_IN],
        send: (ToPod, tcp(R4, B4, 40000, 80, SYN)),
        pairs: &[pair(B4, IN, tcp(R4, B4, 40000, 80, SYN))],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "deny IPv4: c's SYN into b is dropped silently, reported with the isolation rule",
        policy: &[B_IN],
        send: (ToPod, tcp(C4, B4, 40000, 80, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "deny IPv6: c's SYN into b",
        policy: &[B_IN],
        send: (ToPod, tcp(C6, B6, 40000, 80, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "deny: an address outside the cluster into b",
        policy: &[B_IN],
        send: (ToPod, tcp(W4, B4, 40000, 80, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "deny: a's SYN to a port b does not admit",
        policy: &[B_IN],
        send: (ToPod, tcp(A4, B4, 40000, 81, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "deny egress: b's SYN out of its isolated egress",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, tcp(B4, A4, 40000, 80, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_OUT_ISO, 1)],
        event: ev(EV_DENY, EG, B_OUT_ISO),
        ..ROW
    },
    Row {
        name: "UDP allowed into b is tracked (conntrack entry)",
        policy: &[B_IN],
        send: (ToPod, UDP_AB),
        ct: &[tracked(B4, IN, UDP_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "UDP denied into b",
        policy: &[B_IN],
        send: (ToPod, udp(C4, B4, 5353, 53)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "SCTP allowed into b is tracked",
        policy: &[B_IN],
        send: (ToPod, SCTP_AB),
        ct: &[tracked(B4, IN, SCTP_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "another protocol (GRE) into a policed endpoint is dropped, decided by no rule",
        policy: &[B_IN],
        send: (ToPod, ip(A4, B4, L4::Proto(47))),
        verdict: SHOT,
        counters: DENIED,
        event: ev(EV_DENY, IN, ""),
        ..ROW
    },
    Row {
        name: "known limitation: a non-first IPv4 fragment is decided as port 0 (dropped here)",
        policy: &[B_IN],
        send: (ToPod, ip(A4, B4, L4::Fragment(17))),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name:
            "known limitation: an IPv6 fragment (an extension header) into a policed b is dropped",
        policy: &[B_IN],
        send: (ToPod, ip(A6, B6, L4::Proto(44))),
        verdict: SHOT,
        counters: DENIED,
        event: ev(EV_DENY, IN, ""),
        ..ROW
    },
    Row {
        name: "known limitation: IPv6 hop-by-hop (an MLD report) out of policed egress is dropped",
        policy: &[B_IN, B_OUT_NONE],
        send: (FromPod, ip(B6, MLD6, L4::Proto(0))),
        verdict: SHOT,
        counters: DENIED,
        event: ev(EV_DENY, EG, ""),
        ..ROW
    },
    // Port ranges: 8000-8100 is the LPM prefixes 8000/12.., each boundary tried.
    Row {
        name: "port range: 7999, below it, is denied",
        policy: &[B_IN],
        send: (ToPod, tcp(A4, B4, 40000, 7999, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "port range: 8000, its first port",
        policy: &[B_IN],
        send: (ToPod, TO_8000),
        pairs: &[pair(B4, IN, TO_8000)],
        counters: ALLOWED,
        hits: &[(B_IN1, 1)],
        event: ev(EV_ALLOW, IN, B_IN1),
        ..ROW
    },
    Row {
        name: "port range: 8063, the end of one prefix",
        policy: &[B_IN],
        send: (ToPod, TO_8063),
        pairs: &[pair(B4, IN, TO_8063)],
        counters: ALLOWED,
        hits: &[(B_IN1, 1)],
        event: ev(EV_ALLOW, IN, B_IN1),
        ..ROW
    },
    Row {
        name: "port range: 8064 (IPv6), the start of the next",
        policy: &[B_IN],
        send: (ToPod, TO_8064),
        pairs: &[pair(B6, IN, TO_8064)],
        counters: ALLOWED,
        hits: &[(B_IN1, 1)],
        event: ev(EV_ALLOW, IN, B_IN1),
        ..ROW
    },
    Row {
        name: "port range: 8100, its last port",
        policy: &[B_IN],
        send: (ToPod, TO_8100),
        pairs: &[pair(B4, IN, TO_8100)],
        counters: ALLOWED,
        hits: &[(B_IN1, 1)],
        event: ev(EV_ALLOW, IN, B_IN1),
        ..ROW
    },
    Row {
        name: "port range: 8101, above it, is denied",
        policy: &[B_IN],
        send: (ToPod, tcp(A4, B4, 40000, 8101, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    // Audit mode: passes, counted and reported as audit with the rule that would deny.
    Row {
        name: "audit: the SYN passes, reported with the audit rule that would deny it",
        policy: &[B_IN, AUDIT_80],
        send: (ToPod, SYN_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: AUDITED,
        hits: &[(B_IN0, 1), (WOULD_DENY, 1)],
        event: ev(EV_AUDIT, IN, WOULD_DENY),
        ..ROW
    },
    Row {
        name: "audit with visibility off: counted, not reported",
        policy: &[B_IN, AUDIT_80],
        visible: false,
        send: (ToPod, SYN_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: AUDITED,
        hits: &[(B_IN0, 1), (WOULD_DENY, 1)],
        ..ROW
    },
    Row {
        name: "audit: a port the audit rule does not name is a plain allow",
        policy: &[B_IN, AUDIT_80],
        send: (ToPod, UDP_AB),
        ct: &[tracked(B4, IN, UDP_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    // Visibility and the default allow of endpoints (or directions) no policy selects.
    Row {
        name: "visibility off: an allowed SYN is counted, not reported",
        policy: &[B_IN],
        visible: false,
        send: (ToPod, SYN_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        ..ROW
    },
    Row {
        name: "visibility off: a denied SYN is dropped and counted, not reported",
        policy: &[B_IN],
        visible: false,
        send: (ToPod, tcp(C4, B4, 40000, 80, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        ..ROW
    },
    Row {
        name: "visibility off: an endpoint no policy selects is not even looked at",
        policy: &[B_IN],
        visible: false,
        send: (FromPod, udp(C4, W4, 5353, 53)),
        ..ROW
    },
    Row {
        name: "default allow: an unpoliced endpoint's TCP SYN is reported, not tracked",
        policy: &[B_IN],
        send: (FromPod, tcp(C4, W4, 40000, 443, SYN)),
        counters: ALLOWED,
        event: ev(EV_ALLOW, EG, ""),
        ..ROW
    },
    Row {
        name: "default allow: an unpoliced endpoint's UDP flow is tracked and reported",
        policy: &[B_IN],
        send: (FromPod, udp(C4, W4, 5353, 53)),
        ct: &[tracked(C4, EG, udp(C4, W4, 5353, 53))],
        counters: ALLOWED,
        event: ev(EV_ALLOW, EG, ""),
        ..ROW
    },
    Row {
        name: "default allow: that UDP flow's next packet is not counted or reported again",
        policy: &[B_IN],
        before: &[Step::Send(FromPod, udp(C4, W4, 5353, 53), OK)],
        send: (FromPod, udp(C4, W4, 5353, 53)),
        ct: &[tracked(C4, EG, udp(C4, W4, 5353, 53))],
        ..ROW
    },
    Row {
        name: "default allow: a's unpoliced egress opens a connection (reported, not tracked)",
        policy: &[B_IN],
        send: (FromPod, SYN_AB),
        counters: ALLOWED,
        event: ev(EV_ALLOW, EG, ""),
        ..ROW
    },
    Row {
        name: "default allow: into an endpoint no policy selects",
        policy: &[B_IN],
        send: (ToPod, tcp(B4, C4, 40000, 80, SYN)),
        counters: ALLOWED,
        event: ev(EV_ALLOW, IN, ""),
        ..ROW
    },
    // Anti-spoofing: `a` on the test interface, every other endpoint elsewhere.
    Row {
        name: "anti-spoofing: a's own address from a's interface passes",
        policy: &[B_IN],
        spoof_check: true,
        send: (FromPod, FROM_A),
        counters: ALLOWED,
        event: ev(EV_ALLOW, EG, ""),
        ..ROW
    },
    Row {
        name: "anti-spoofing: b's address from a's interface is dropped and counted",
        policy: &[B_IN],
        spoof_check: true,
        send: (FromPod, tcp(B4, W4, 40000, 443, SYN)),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "anti-spoofing: b's IPv6 address from a's interface is dropped",
        policy: &[B_IN],
        spoof_check: true,
        send: (FromPod, tcp(B6, W6, 40000, 443, SYN)),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "anti-spoofing comes before ICMP passes",
        policy: &[B_IN],
        spoof_check: true,
        send: (FromPod, ip(B4, W4, L4::Icmp(8))),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
    Row {
        name: "anti-spoofing applies to what an endpoint sends only (to_pod: no check)",
        policy: &[B_IN],
        spoof_check: true,
        send: (ToPod, SYN_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    Row {
        name: "anti-spoofing: a remote pod's address from a's interface is dropped",
        policy: &[B_IN],
        spoof_check: true,
        send: (FromPod, tcp(R4, B4, 40000, 80, SYN)),
        verdict: SHOT,
        counters: SPOOFED,
        ..ROW
    },
];

#[test]
#[ignore = "root tier: needs BPF"]
fn program_decisions() {
    common::require_root();
    run_table(PODS, ROWS);
}

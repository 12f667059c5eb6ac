//! Root tier: the programs' connection state, table-driven (the rows' shape and how to add one:
//! tests/programs.rs and common/table.rs). Replies of tracked connections, established
//! segments, revocation when a commit bumps the epoch, and the untracked fast paths
//! ARCHITECTURE.md documents: each row sends its `before` steps, then the packet under test.

mod common;

use cellwall_datapath::abi::{EV_ALLOW, EV_DENY, EV_REVOKE};
use cellwall_datapath::Hook::{FromPod, ToPod};
use common::table::*;
use common::world::*;

const SYN_AB: Pkt = tcp(A4, B4, 40000, 80, SYN);
const ACK_AB: Pkt = tcp(A4, B4, 40000, 80, ACK);
const SYNACK_BA: Pkt = tcp(B4, A4, 80, 40000, SYN_ACK);
const ACK_BA: Pkt = tcp(B4, A4, 80, 40000, ACK);
const ACK_CB: Pkt = tcp(C4, B4, 40000, 80, ACK);
const RST_CB: Pkt = tcp(C4, B4, 443, 40000, RST);
const UDP_AB: Pkt = udp(A4, B4, 5353, 53);
const UDP_BA: Pkt = udp(B4, A4, 53, 5353);

/// a's connection into b, then a commit that no longer admits a (same for both policings).
const OPEN_THEN_DENY: &[Step] = &[
    Step::Send(ToPod, SYN_AB, OK),
    Step::Apply(&[B_IN_NONE, B_OUT_NONE]),
];
const OPEN_THEN_DENY_UNTRACKED: &[Step] =
    &[Step::Send(ToPod, SYN_AB, OK), Step::Apply(&[B_IN_NONE])];

const ROWS: &[Row] = &[
    // Replies and established segments.
    Row {
        name: "reply: b's SYN-ACK leaves b's isolated egress on the entry a's SYN made",
        policy: &[B_IN, B_OUT_NONE],
        before: &[Step::Send(ToPod, SYN_AB, OK)],
        send: (FromPod, SYNACK_BA),
        ct: &[tracked(B4, IN, SYN_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "established (tracked): a's next segment into b passes",
        policy: &[B_IN, B_OUT_NONE],
        before: &[Step::Send(ToPod, SYN_AB, OK)],
        send: (ToPod, ACK_AB),
        ct: &[tracked(B4, IN, SYN_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "established (untracked, b's egress unpoliced): a's next segment passes",
        policy: &[B_IN],
        before: &[Step::Send(ToPod, SYN_AB, OK)],
        send: (ToPod, ACK_AB),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "established (untracked): a's RST passes like any segment",
        policy: &[B_IN],
        before: &[Step::Send(ToPod, SYN_AB, OK)],
        send: (ToPod, tcp(A4, B4, 40000, 80, RST)),
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "UDP reply leaves b's isolated egress on the entry of a's datagram",
        policy: &[B_IN, B_OUT_NONE],
        before: &[Step::Send(ToPod, UDP_AB, OK)],
        send: (FromPod, UDP_BA),
        ct: &[tracked(B4, IN, UDP_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "UDP reply out of b's unpoliced egress: passes, opens no flow, reported no more",
        policy: &[B_IN],
        before: &[Step::Send(ToPod, UDP_AB, OK)],
        send: (FromPod, UDP_BA),
        ct: &[tracked(B4, IN, UDP_AB)],
        ..ROW
    },
    Row {
        name: "UDP reply out of an unpoliced endpoint is not reported as its own flow",
        before: &[Step::Send(ToPod, udp(A4, C4, 5353, 53), OK)],
        send: (FromPod, udp(C4, A4, 53, 5353)),
        ct: &[tracked(C4, IN, udp(A4, C4, 5353, 53))],
        ..ROW
    },
    Row {
        name: "isolated later: replies of a's UDP flow opened before still pass a's ingress",
        before: &[
            Step::Send(FromPod, udp(A4, W4, 5353, 53), OK),
            Step::Send(ToPod, udp(W4, A4, 53, 5353), OK),
            Step::Apply(&[A_IN_NONE]),
        ],
        send: (ToPod, udp(W4, A4, 53, 5353)),
        ct: &[tracked(A4, EG, udp(A4, W4, 5353, 53))],
        ..ROW
    },
    Row {
        name: "UDP reply still passes once b's egress is policed too (b's ingress admits the flow)",
        policy: &[B_IN],
        before: &[
            Step::Send(ToPod, UDP_AB, OK),
            Step::Send(FromPod, UDP_BA, OK),
            Step::Apply(&[B_IN, B_OUT_NONE]),
        ],
        send: (FromPod, UDP_BA),
        ct: &[tracked(B4, IN, UDP_AB)],
        ..ROW
    },
    Row {
        name: "isolated opener: a's SYN out of its unpoliced egress is tracked for its replies",
        policy: &[A_IN_NONE],
        send: (FromPod, SYN_AB),
        ct: &[tracked(A4, EG, SYN_AB)],
        counters: ALLOWED,
        event: ev(EV_ALLOW, EG, ""),
        ..ROW
    },
    Row {
        name: "isolated opener: the reply passes a's isolated ingress on that entry",
        policy: &[A_IN_NONE],
        before: &[Step::Send(FromPod, SYN_AB, OK)],
        send: (ToPod, SYNACK_BA),
        ct: &[tracked(A4, EG, SYN_AB)],
        counters: CT_HIT,
        ..ROW
    },
    Row {
        name: "isolated opener: a new connection into a is dropped",
        policy: &[A_IN_NONE],
        send: (ToPod, tcp(B4, A4, 80, 40000, SYN)),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(A_IN_ISO, 1)],
        event: ev(EV_DENY, IN, A_IN_ISO),
        ..ROW
    },
    // Revocation: a commit bumps the epoch; connections are decided again at their next packet.
    Row {
        name: "revocation (tracked): the established connection is cut at its next segment",
        policy: &[B_IN, B_OUT_NONE],
        before: OPEN_THEN_DENY,
        send: (ToPod, ACK_AB),
        verdict: SHOT,
        ct: &[revoked(B4, IN, SYN_AB)],
        counters: REVOKED,
        event: ev(EV_REVOKE, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "revocation (tracked) holds: the next segment is dropped silently",
        policy: &[B_IN, B_OUT_NONE],
        before: &[
            Step::Send(ToPod, SYN_AB, OK),
            Step::Apply(&[B_IN_NONE, B_OUT_NONE]),
            Step::Send(ToPod, ACK_AB, SHOT),
        ],
        send: (ToPod, ACK_AB),
        verdict: SHOT,
        ct: &[revoked(B4, IN, SYN_AB)],
        ..ROW
    },
    Row {
        name: "revocation (tracked) from b's side: its reply is cut, reported as a's connection",
        policy: &[B_IN, B_OUT_NONE],
        before: OPEN_THEN_DENY,
        send: (FromPod, ACK_BA),
        verdict: SHOT,
        ct: &[revoked(B4, IN, SYN_AB)],
        counters: REVOKED,
        event: ev_of(EV_REVOKE, IN, B_IN_ISO, SYN_AB),
        ..ROW
    },
    Row {
        name: "revocation (untracked pair): the next segment is cut and tracked as revoked",
        policy: &[B_IN],
        before: OPEN_THEN_DENY_UNTRACKED,
        send: (ToPod, ACK_AB),
        verdict: SHOT,
        ct: &[revoked(B4, IN, ACK_AB)],
        pairs: &[pair(B4, IN, SYN_AB)],
        counters: REVOKED,
        event: ev(EV_REVOKE, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "revocation (untracked pair) holds: the next segment is dropped silently",
        policy: &[B_IN],
        before: &[
            Step::Send(ToPod, SYN_AB, OK),
            Step::Apply(&[B_IN_NONE]),
            Step::Send(ToPod, ACK_AB, SHOT),
        ],
        send: (ToPod, ACK_AB),
        verdict: SHOT,
        ct: &[revoked(B4, IN, ACK_AB)],
        pairs: &[pair(B4, IN, SYN_AB)],
        ..ROW
    },
    Row {
        name: "revocation (UDP): the flow's next datagram is dropped",
        policy: &[B_IN, B_OUT_NONE],
        before: &[
            Step::Send(ToPod, UDP_AB, OK),
            Step::Apply(&[B_IN_NONE, B_OUT_NONE]),
        ],
        send: (ToPod, UDP_AB),
        verdict: SHOT,
        ct: &[revoked(B4, IN, UDP_AB)],
        counters: REVOKED,
        event: ev(EV_REVOKE, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "re-admitted: a revoked connection passes again once a commit admits it",
        policy: &[B_IN, B_OUT_NONE],
        before: &[
            Step::Send(ToPod, SYN_AB, OK),
            Step::Apply(&[B_IN_NONE, B_OUT_NONE]),
            Step::Send(ToPod, ACK_AB, SHOT),
            Step::Apply(&[B_IN, B_OUT_NONE]),
        ],
        send: (ToPod, ACK_AB),
        ct: &[tracked(B4, IN, SYN_AB)],
        ..ROW
    },
    Row {
        name: "a commit that still admits: the connection continues, not reported again",
        policy: &[B_IN, B_OUT_NONE],
        before: &[
            Step::Send(ToPod, SYN_AB, OK),
            Step::Apply(&[B_IN, B_OUT_NONE]),
        ],
        send: (ToPod, ACK_AB),
        ct: &[tracked(B4, IN, SYN_AB)],
        ..ROW
    },
    Row {
        name: "after a revoking commit, a new connection from a is denied",
        policy: &[B_IN, B_OUT_NONE],
        before: OPEN_THEN_DENY,
        send: (ToPod, tcp(A4, B4, 40001, 80, SYN)),
        verdict: SHOT,
        ct: &[tracked(B4, IN, SYN_AB)],
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "a SYN reusing a revoked connection's tuple is decided afresh (entry reopened)",
        policy: &[B_IN, B_OUT_NONE],
        before: &[
            Step::Send(ToPod, SYN_AB, OK),
            Step::Apply(&[B_IN_NONE, B_OUT_NONE]),
            Step::Send(ToPod, ACK_AB, SHOT),
            Step::Apply(&[B_IN, B_OUT_NONE]),
        ],
        send: (ToPod, SYN_AB),
        ct: &[tracked(B4, IN, SYN_AB)],
        counters: ALLOWED,
        hits: &[(B_IN0, 1)],
        event: ev(EV_ALLOW, IN, B_IN0),
        ..ROW
    },
    // Untracked fast paths (ARCHITECTURE.md, "Untracked fast paths").
    Row {
        name: "unpoliced direction: a segment that opens nothing passes, no lookup, no record",
        policy: &[B_IN],
        send: (FromPod, ACK_BA),
        ..ROW
    },
    Row {
        name: "a segment predating tracking passes if the opposite direction admits it",
        policy: &[B_IN],
        send: (ToPod, ACK_CB),
        ..ROW
    },
    Row {
        name: "... and is dropped when neither direction admits it",
        policy: &[B_IN, B_OUT_NONE],
        send: (ToPod, ACK_CB),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "RST from a peer b's ingress denies passes (b's own connection may predate tracking)",
        policy: &[B_IN],
        send: (ToPod, RST_CB),
        ..ROW
    },
    Row {
        name: "RST from a peer neither direction admits is dropped",
        policy: &[B_IN, B_OUT_NONE],
        send: (ToPod, RST_CB),
        verdict: SHOT,
        counters: DENIED,
        hits: &[(B_IN_ISO, 1)],
        event: ev(EV_DENY, IN, B_IN_ISO),
        ..ROW
    },
    Row {
        name: "a SYN-ACK into an isolated endpoint passes (a's connection may predate tracking)",
        policy: &[A_IN_NONE],
        send: (ToPod, SYNACK_BA),
        ..ROW
    },
    Row {
        name: "an admitted segment that is no SYN records no pair (it may be a reply)",
        policy: &[B_IN],
        send: (ToPod, ACK_AB),
        counters: CT_HIT,
        ..ROW
    },
];

#[test]
#[ignore = "root tier: needs BPF"]
fn program_connections() {
    common::require_root();
    run_table(PODS, ROWS);
}

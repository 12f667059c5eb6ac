//! The world the program tables run in: pods on node n1 (and one on n2), the policies rows
//! combine, the rules' descriptions as events and hit counters name them, and the addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// a, b and c on n1 (dual stack), r on n2 with a's labels (admitted wherever a is).
pub const PODS: &str = r#"
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: x, labels: {app: a}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.1.0.1}, {ip: "fd00::1"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: x, labels: {app: b}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.1.0.2}, {ip: "fd00::2"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: c, namespace: x, labels: {app: c}}
spec: {nodeName: n1}
status: {podIPs: [{ip: 10.1.0.3}, {ip: "fd00::3"}]}
---
apiVersion: v1
kind: Pod
metadata: {name: r, namespace: x, labels: {app: a}}
spec: {nodeName: n2}
status: {podIP: 10.2.0.1}
"#;

/// b admits a (and r): TCP 80, UDP 53, SCTP 9 (rule 0) and TCP 8000-8100 (rule 1).
pub const B_IN: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-in, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: 80}, {protocol: UDP, port: 53}, {protocol: SCTP, port: 9}]
  - from: [{podSelector: {matchLabels: {app: a}}}]
    ports: [{port: 8000, endPort: 8100}]
"#;

/// b-in changed to admit nothing (replaces B_IN: same name).
pub const B_IN_NONE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-in, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Ingress]
"#;

/// b's egress isolated: its replies need conntrack entries.
pub const B_OUT_NONE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: b-out, namespace: x}
spec:
  podSelector: {matchLabels: {app: b}}
  policyTypes: [Egress]
"#;

/// a's ingress isolated: replies to a's own connections need the entries a's SYNs make.
pub const A_IN_NONE: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: a-in, namespace: x}
spec:
  podSelector: {matchLabels: {app: a}}
  policyTypes: [Ingress]
"#;

/// An admin-tier deny of TCP 80 into b, in audit mode.
pub const AUDIT_80: &str = r#"
apiVersion: cellwall.io/v1alpha1
kind: ClusterPolicy
metadata: {name: audit-80}
spec:
  tier: admin
  mode: audit
  podSelector: {matchLabels: {app: b}}
  ingress: [{name: would-deny, action: Deny, ports: [{port: 80}]}]
"#;

pub const B_IN0: &str = "NetworkPolicy/x/b-in ingress[0]";
pub const B_IN1: &str = "NetworkPolicy/x/b-in ingress[1]";
pub const B_IN_ISO: &str = "NetworkPolicy/x/b-in ingress (isolation: no rule allows)";
pub const B_OUT_ISO: &str = "NetworkPolicy/x/b-out egress (isolation: no rule allows)";
pub const A_IN_ISO: &str = "NetworkPolicy/x/a-in ingress (isolation: no rule allows)";
pub const WOULD_DENY: &str = "ClusterPolicy/audit-80 ingress[0] \"would-deny\"";

const fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

const fn v6(a: u16, h: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(a, 0, 0, 0, 0, 0, 0, h))
}

pub const A4: IpAddr = v4(10, 1, 0, 1);
pub const B4: IpAddr = v4(10, 1, 0, 2);
pub const C4: IpAddr = v4(10, 1, 0, 3);
/// r, on the other node.
pub const R4: IpAddr = v4(10, 2, 0, 1);
/// Outside the cluster.
pub const W4: IpAddr = v4(192, 0, 2, 9);
/// The node itself (no endpoint).
pub const N4: IpAddr = v4(10, 9, 9, 9);
pub const A6: IpAddr = v6(0xfd00, 1);
pub const B6: IpAddr = v6(0xfd00, 2);
pub const C6: IpAddr = v6(0xfd00, 3);
pub const W6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9));
/// All MLDv2-capable routers (where MLD reports go).
pub const MLD6: IpAddr = v6(0xff02, 0x16);
/// a's solicited-node multicast address (where neighbour solicitations for a go).
pub const SNM_A6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00, 1));

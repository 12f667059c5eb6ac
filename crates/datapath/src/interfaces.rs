//! Finding pods' host-side interfaces in the kernel's own tables, as a DaemonSet agent must (no
//! CNI plugin tells it). Routed CNIs (Calico, Cilium's native routing) put a host route, /32 or
//! /128, to each pod on the pod's veth; bridged CNIs (the `bridge` plugin, flannel's cni0) put
//! the pod behind a bridge port, found through the neighbour entry (address → MAC) and the
//! bridge's forwarding database (MAC → port).
//!
//! One scan is a few netlink dumps (links, routes, neighbours, FDB); [`Tables::resolve`] is
//! pure, so the lookup rules are unit-tested without a kernel. netlink-packet-route parses the
//! messages (no hand-written netlink).
//!
//! A bridged pod that has sent nothing has no neighbour entry yet: for an address routed to a
//! bridge without one, [`find`] asks the kernel to resolve it (a neighbour update with
//! `NTF_USE`, as `ip neigh replace ADDR dev BRIDGE use` does). The pod's ARP (or ND) answer
//! fills the neighbour entry and teaches the bridge the port, so the next scan finds it.

use crate::{netns, DatapathError};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP,
    NLM_F_REPLACE, NLM_F_REQUEST,
};
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkInfo, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::collections::HashMap;
use std::net::IpAddr;

/// The host-side interface in front of a pod address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInterface {
    pub name: String,
    pub ifindex: u32,
    /// The bridge the interface is a port of (bridged CNIs), `None` for a routed veth.
    pub bridge: Option<String>,
}

/// What a scan found for the addresses asked about.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Found {
    /// Address → the interface in front of it now.
    pub by_addr: HashMap<IpAddr, HostInterface>,
    /// Every interface index that exists now (a binding the agent already holds stays while
    /// its interface exists: see the agent's discovery).
    pub present: std::collections::HashSet<u32>,
}

/// A link as the scan needs it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Link {
    pub name: String,
    pub is_bridge: bool,
    /// The bridge this link is a port of.
    pub master: Option<u32>,
}

/// What one scan read: enough to resolve any address.
#[derive(Debug, Clone, Default)]
pub struct Tables {
    pub links: HashMap<u32, Link>,
    /// Host routes of the main table: destination → output interface.
    pub host_routes: HashMap<IpAddr, u32>,
    /// Main-table routes to a bridge, any prefix (a bridged CNI's subnet route): (network,
    /// prefix length, bridge).
    pub bridge_routes: Vec<(IpAddr, u8, u32)>,
    /// Usable neighbour entries: (address, interface) → MAC.
    pub neighbours: HashMap<(IpAddr, u32), [u8; 6]>,
    /// Bridge forwarding entries: (MAC, bridge) → port.
    pub fdb: HashMap<([u8; 6], u32), u32>,
}

impl Tables {
    /// The host-side interface of `ip`: its host route's interface when that is not a bridge
    /// (routed), else the bridge port that holds the MAC the bridge's neighbour entry gives
    /// (bridged). `None` when neither is there yet (the pod is still starting, or its MAC has
    /// not been learned).
    pub fn resolve(&self, ip: IpAddr) -> Option<HostInterface> {
        if let Some(l) = self.host_routes.get(&ip).and_then(|i| self.found(*i)) {
            if l.bridge.is_none() && !self.links[&l.ifindex].is_bridge {
                return Some(l);
            }
        }
        // Bridged: every bridge that has a neighbour entry for the address, lowest index first
        // (deterministic when a pod address appears on two bridges, which a CNI never does).
        let mut bridges: Vec<(u32, [u8; 6])> = self
            .neighbours
            .iter()
            .filter(|((a, i), _)| *a == ip && self.links.get(i).is_some_and(|l| l.is_bridge))
            .map(|((_, i), mac)| (*i, *mac))
            .collect();
        bridges.sort();
        bridges.into_iter().find_map(|(br, mac)| {
            let port = *self.fdb.get(&(mac, br))?;
            (port != br).then(|| self.found(port)).flatten()
        })
    }

    /// The bridge `ip` is routed to (longest prefix) when the bridge has no usable neighbour
    /// entry for it: the address to ask the kernel to resolve.
    pub fn to_resolve(&self, ip: IpAddr) -> Option<u32> {
        let (_, _, br) = self
            .bridge_routes
            .iter()
            .filter(|(net, len, _)| contains(*net, *len, ip))
            .max_by_key(|(_, len, _)| *len)?;
        (!self.neighbours.contains_key(&(ip, *br))).then_some(*br)
    }

    fn found(&self, ifindex: u32) -> Option<HostInterface> {
        let l = self.links.get(&ifindex)?;
        Some(HostInterface {
            name: l.name.clone(),
            ifindex,
            bridge: l
                .master
                .and_then(|m| self.links.get(&m))
                .filter(|m| m.is_bridge)
                .map(|m| m.name.clone()),
        })
    }
}

/// Whether `ip` is inside `net`/`len` (families must match).
fn contains(net: IpAddr, len: u8, ip: IpAddr) -> bool {
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(len.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Scans namespace `ns` (`None`: the calling thread's) and resolves each of `ips`; addresses
/// with no interface yet are left out, and those routed to a bridge that has no neighbour
/// entry for them are resolved by the kernel for the next scan.
pub fn find(ns: Option<&str>, ips: &[IpAddr]) -> Result<Found, DatapathError> {
    netns::within(ns, || {
        let mut s = socket()?;
        let tables = scan_with(&mut s)?;
        let mut out = Found {
            present: tables.links.keys().copied().collect(),
            ..Found::default()
        };
        for ip in ips {
            match tables.resolve(*ip) {
                Some(h) => {
                    out.by_addr.insert(*ip, h);
                }
                None => {
                    if let Some(br) = tables.to_resolve(*ip) {
                        resolve_neighbour(&mut s, *ip, br)?;
                    }
                }
            }
        }
        Ok(out)
    })
}

/// Asks the kernel to resolve `ip` on `bridge` (creates the neighbour entry if needed and
/// sends the ARP or ND probe, as `ip neigh replace IP dev BRIDGE use`).
fn resolve_neighbour(s: &mut Socket, ip: IpAddr, bridge: u32) -> Result<(), DatapathError> {
    let mut m = NeighbourMessage::default();
    m.header.family = if ip.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    m.header.ifindex = bridge;
    m.header.state = NeighbourState::Permanent;
    m.header.flags = NeighbourFlags::Use;
    m.attributes.push(NeighbourAttribute::Destination(match ip {
        IpAddr::V4(v) => NeighbourAddress::Inet(v),
        IpAddr::V6(v) => NeighbourAddress::Inet6(v),
    }));
    let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;
    request(s, RouteNetlinkMessage::NewNeighbour(m), flags).map(|_| ())
}

fn socket() -> Result<Socket, DatapathError> {
    let mut s = Socket::new(NETLINK_ROUTE).map_err(|e| nl_err("socket", e))?;
    s.bind_auto().map_err(|e| nl_err("bind", e))?;
    s.connect(&SocketAddr::new(0, 0))
        .map_err(|e| nl_err("connect", e))?;
    Ok(s)
}

fn nl_err(what: &str, e: impl std::fmt::Display) -> DatapathError {
    DatapathError::Kernel {
        what: format!("netlink: {what}"),
        detail: e.to_string(),
    }
}

/// Reads links, host routes, neighbours and the FDB of the calling thread's namespace.
pub fn scan() -> Result<Tables, DatapathError> {
    scan_with(&mut socket()?)
}

fn scan_with(s: &mut Socket) -> Result<Tables, DatapathError> {
    let mut t = Tables::default();
    for m in dump(s, RouteNetlinkMessage::GetLink(LinkMessage::default()))? {
        if let RouteNetlinkMessage::NewLink(l) = m {
            t.links.insert(l.header.index, link(&l));
        }
    }
    for family in [AddressFamily::Inet, AddressFamily::Inet6] {
        let mut req = RouteMessage::default();
        req.header.address_family = family;
        for m in dump(s, RouteNetlinkMessage::GetRoute(req))? {
            if let RouteNetlinkMessage::NewRoute(r) = m {
                if let Some((ip, len, oif)) = main_route(&r) {
                    if t.links.get(&oif).is_some_and(|l| l.is_bridge) {
                        t.bridge_routes.push((ip, len, oif));
                    }
                    if len == if ip.is_ipv4() { 32 } else { 128 } {
                        t.host_routes.insert(ip, oif);
                    }
                }
            }
        }
        let mut req = NeighbourMessage::default();
        req.header.family = family;
        for m in dump(s, RouteNetlinkMessage::GetNeighbour(req))? {
            if let RouteNetlinkMessage::NewNeighbour(n) = m {
                if let Some((ip, mac)) = neighbour(&n) {
                    t.neighbours.insert((ip, n.header.ifindex), mac);
                }
            }
        }
    }
    let mut req = NeighbourMessage::default();
    req.header.family = AddressFamily::Bridge;
    for m in dump(s, RouteNetlinkMessage::GetNeighbour(req))? {
        if let RouteNetlinkMessage::NewNeighbour(n) = m {
            let master = n.attributes.iter().find_map(|a| match a {
                NeighbourAttribute::Controller(m) => Some(*m),
                _ => None,
            });
            if let (Some(mac), Some(br)) = (mac_of(&n), master) {
                t.fdb.entry((mac, br)).or_insert(n.header.ifindex);
            }
        }
    }
    Ok(t)
}

fn link(l: &LinkMessage) -> Link {
    let mut out = Link::default();
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => out.name = n.clone(),
            LinkAttribute::Controller(m) => out.master = Some(*m),
            LinkAttribute::LinkInfo(infos) => {
                out.is_bridge = infos
                    .iter()
                    .any(|i| matches!(i, LinkInfo::Kind(InfoKind::Bridge)));
            }
            _ => {}
        }
    }
    out
}

/// A main-table route with one output interface: (destination, prefix length, interface).
fn main_route(r: &RouteMessage) -> Option<(IpAddr, u8, u32)> {
    let h = &r.header;
    let table = r
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(h.table as u32);
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let ip: IpAddr = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v)) => Some((*v).into()),
        RouteAttribute::Destination(RouteAddress::Inet6(v)) => Some((*v).into()),
        _ => None,
    })?;
    let oif = r.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    Some((ip, h.destination_prefix_length, oif))
}

/// A neighbour entry that names a MAC the address is at (not failed or still resolving).
fn neighbour(n: &NeighbourMessage) -> Option<(IpAddr, [u8; 6])> {
    if matches!(
        n.header.state,
        NeighbourState::Failed | NeighbourState::Incomplete | NeighbourState::None
    ) {
        return None;
    }
    let ip: IpAddr = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(v)) => Some((*v).into()),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(v)) => Some((*v).into()),
        _ => None,
    })?;
    Some((ip, mac_of(n)?))
}

fn mac_of(n: &NeighbourMessage) -> Option<[u8; 6]> {
    n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(m) => m.as_slice().try_into().ok(),
        _ => None,
    })
}

/// Sends one dump request and collects every answer until `Done`.
fn dump(
    s: &mut Socket,
    req: RouteNetlinkMessage,
) -> Result<Vec<RouteNetlinkMessage>, DatapathError> {
    request(s, req, NLM_F_DUMP | NLM_F_REQUEST)
}

/// Sends one request and collects the answers until `Done` (a dump) or the acknowledgement.
fn request(
    s: &mut Socket,
    req: RouteNetlinkMessage,
    flags: u16,
) -> Result<Vec<RouteNetlinkMessage>, DatapathError> {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    let mut msg = NetlinkMessage::new(h, NetlinkPayload::from(req));
    msg.finalize();
    let mut buf = vec![0; msg.header.length as usize];
    msg.serialize(&mut buf);
    s.send(&buf, 0).map_err(|e| nl_err("send", e))?;
    let mut out = Vec::new();
    let mut rx = vec![0u8; 1 << 16];
    loop {
        let n = s.recv(&mut &mut rx[..], 0).map_err(|e| nl_err("recv", e))?;
        let mut off = 0;
        while off < n {
            let m: NetlinkMessage<RouteNetlinkMessage> =
                NetlinkMessage::deserialize(&rx[off..n]).map_err(|e| nl_err("parse", e))?;
            let len = m.header.length as usize;
            match m.payload {
                NetlinkPayload::Done(_) => return Ok(out),
                // An acknowledgement is an error message with code 0.
                NetlinkPayload::Error(e) if e.code.is_none() => return Ok(out),
                NetlinkPayload::Error(e) => return Err(nl_err("request", e)),
                NetlinkPayload::InnerMessage(i) => out.push(i),
                _ => {}
            }
            if len == 0 {
                break;
            }
            off += (len + 3) & !3;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        let mut t = Tables::default();
        let l = |name: &str, is_bridge, master| Link {
            name: name.into(),
            is_bridge,
            master,
        };
        t.links.insert(1, l("lo", false, None));
        t.links.insert(2, l("eth0", false, None));
        t.links.insert(3, l("cali1", false, None));
        t.links.insert(10, l("cni0", true, None));
        t.links.insert(11, l("veth-a", false, Some(10)));
        t.links.insert(12, l("veth-b", false, Some(10)));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        t.host_routes.insert(ip("10.1.0.5"), 3);
        // A bridged pod: route to the bridge, neighbour on the bridge, FDB on its port.
        t.host_routes.insert(ip("10.2.0.7"), 10);
        t.neighbours
            .insert((ip("10.2.0.7"), 10), [2, 0, 0, 0, 0, 7]);
        t.fdb.insert(([2, 0, 0, 0, 0, 7], 10), 12);
        // The bridge's own MAC is on the bridge itself: never a pod's port.
        t.neighbours
            .insert((ip("10.2.0.1"), 10), [2, 0, 0, 0, 0, 1]);
        t.fdb.insert(([2, 0, 0, 0, 0, 1], 10), 10);
        // A neighbour whose MAC the bridge has not learned yet.
        t.neighbours
            .insert((ip("10.2.0.9"), 10), [2, 0, 0, 0, 0, 9]);
        // A neighbour on a non-bridge link does not make a bridged pod.
        t.neighbours
            .insert((ip("192.0.2.1"), 2), [2, 0, 0, 0, 0, 3]);
        t
    }

    #[test]
    fn routed_and_bridged_pods_resolve_to_their_host_side_interface() {
        let t = tables();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            t.resolve(ip("10.1.0.5")),
            Some(HostInterface {
                name: "cali1".into(),
                ifindex: 3,
                bridge: None
            })
        );
        assert_eq!(
            t.resolve(ip("10.2.0.7")),
            Some(HostInterface {
                name: "veth-b".into(),
                ifindex: 12,
                bridge: Some("cni0".into())
            })
        );
        for unknown in ["10.2.0.1", "10.2.0.9", "192.0.2.1", "10.9.9.9"] {
            assert_eq!(t.resolve(ip(unknown)), None, "{unknown}");
        }
    }

    #[test]
    fn addresses_routed_to_a_bridge_without_a_neighbour_are_the_ones_to_resolve() {
        let mut t = tables();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // A bridged CNI's subnet route, and a /32 route on a bridge.
        t.bridge_routes.push((ip("10.2.0.0"), 24, 10));
        t.bridge_routes.push((ip("10.3.0.0"), 16, 10));
        t.bridge_routes.push((ip("fd00::"), 64, 10));
        assert_eq!(t.to_resolve(ip("10.2.0.44")), Some(10));
        assert_eq!(t.to_resolve(ip("10.3.255.1")), Some(10));
        assert_eq!(t.to_resolve(ip("fd00::9")), Some(10));
        assert_eq!(t.to_resolve(ip("10.2.0.7")), None, "has a neighbour entry");
        assert_eq!(t.to_resolve(ip("10.4.0.1")), None, "not routed to a bridge");
        assert_eq!(t.to_resolve(ip("fd01::9")), None);
        assert!(contains(ip("0.0.0.0"), 0, ip("192.0.2.1")));
        assert!(!contains(ip("0.0.0.0"), 0, ip("fd00::1")));
    }
}

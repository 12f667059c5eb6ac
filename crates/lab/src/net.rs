//! The lab's network: one namespace per pod with a veth to the lab's node namespace, which
//! routes like a CNI: each veth with its pod's route ([`Cni::Routed`]), or every veth a port of
//! one bridge that holds the routes ([`Cni::Bridge`]; the pods' MACs are static forwarding
//! entries, which the bridge would otherwise learn from the pods' first frames). Planned as `ip` commands from the inventory (pure, tested), then run
//! through one `ip -batch` per namespace.
//!
//! Pods route everything through [`GATEWAY`], a local address of the node namespace (a local
//! address answers ARP on every interface, so no proxy ARP). Veth ends get fixed MACs
//! ([`veth_mac`]) so both ends carry permanent neighbour entries: the kernel's ARP table is one
//! for all namespaces and by default overflows at 1,024 learned entries (`gc_thresh3`), which a
//! lab of 1,000 pods exceeds; permanent entries are exempt, and no ARP runs inside the lab.

use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{if_id, node_ns, Cni, LabPod};
use cellwall_policy::Inventory;
use std::collections::BTreeSet;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};

/// The gateway every pod routes through.
pub const GATEWAY: &str = "169.254.1.1";

/// The bridge of lab `name`'s node namespace (`--cni bridge`).
pub fn bridge_name(name: &str) -> String {
    format!("cw{}br", if_id(name))
}

/// The MAC of the bridge of a bridged lab (the pods' gateway).
const BRIDGE_MAC: &str = "02:ff:00:00:00:01";

/// First octet of the MAC of a pod's veth, node side and pod side (locally administered).
const NODE_SIDE: u8 = 0x02;
const POD_SIDE: u8 = 0x06;

/// The MAC of pod `i`'s veth end on the node side (`pod_side == false`) or in the pod.
pub fn veth_mac(pod_side: bool, i: usize) -> String {
    let side = if pod_side { POD_SIDE } else { NODE_SIDE };
    let b = (i as u32).to_be_bytes();
    format!(
        "{side:02x}:00:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3]
    )
}

/// `/32` or `/128`.
pub(crate) fn host_bits(ip: &IpAddr) -> u8 {
    if ip.is_ipv4() {
        32
    } else {
        128
    }
}

/// Sysctls every pod namespace gets: pods open many short connections in probes and
/// benchmarks, so TIME_WAIT ports are reused.
pub(crate) fn pod_sysctls() -> Vec<(String, String)> {
    vec![
        ("net.ipv4.tcp_tw_reuse".into(), "1".into()),
        ("net.ipv4.ip_local_port_range".into(), "1024 65000".into()),
    ]
}

/// The whole network of a lab, as commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NetPlan {
    pub node: String,
    /// Namespaces to create after the node's, in order.
    pub pod_namespaces: Vec<String>,
    /// One `ip -batch` in the node namespace: addresses, veths, routes, neighbours.
    pub node_cmds: Vec<String>,
    pub node_sysctls: Vec<(String, String)>,
    /// One `ip -batch` per pod namespace (not for hostNetwork pods).
    pub pod_cmds: Vec<(String, Vec<String>)>,
    /// One `bridge -batch` in the node namespace (bridged layout: forwarding entries).
    pub bridge_cmds: Vec<String>,
    /// The pods, interface indexes still 0.
    pub pods: Vec<LabPod>,
}

/// Plans lab `name`'s network for `inv` (every workload a pod, in key order), laid out as `cni`.
pub(crate) fn plan(name: &str, inv: &Inventory, cni: Cni) -> NetPlan {
    let id = if_id(name);
    let node = node_ns(name);
    // The node's loopback holds the gateway, the nodes' addresses and hostNetwork pods'.
    let mut node_ips: BTreeSet<IpAddr> = inv
        .nodes
        .values()
        .flat_map(|n| n.ips.iter().copied())
        .collect();
    node_ips.extend(
        inv.workloads
            .values()
            .filter(|w| w.host_network)
            .flat_map(|w| w.ips.iter().copied()),
    );
    let mut node_cmds = vec![
        "link set lo up".to_string(),
        format!("addr add {GATEWAY}/32 dev lo"),
    ];
    for ip in &node_ips {
        node_cmds.push(format!("addr add {ip}/{} dev lo", host_bits(ip)));
    }
    let mut node_sysctls = vec![
        ("net.ipv4.ip_forward".to_string(), "1".to_string()),
        ("net.ipv4.conf.all.rp_filter".into(), "0".into()),
    ];
    let (mut pods, mut pod_namespaces, mut pod_cmds) = (Vec::new(), Vec::new(), Vec::new());
    let mut bridge_cmds = Vec::new();
    let bridge = bridge_name(name);
    if cni == Cni::Bridge {
        node_cmds.push(format!(
            "link add {bridge} address {BRIDGE_MAC} type bridge"
        ));
        node_cmds.push(format!("link set {bridge} up"));
        node_sysctls.push((format!("net.ipv4.conf.{bridge}.rp_filter"), "0".into()));
    }
    for (i, w) in inv.workloads.values().enumerate() {
        if w.host_network {
            pods.push(LabPod {
                key: w.key(),
                netns: node.clone(),
                host_if: None,
                ifindex: 0,
                ips: w.ips.clone(),
            });
            continue;
        }
        let pns = format!("cw-{name}-p{i}");
        let host_if = format!("cw{id}h{i:x}");
        let tmp_if = format!("cw{id}p{i:x}");
        node_cmds.push(format!(
            "link add {host_if} address {} type veth peer name {tmp_if} address {} netns {pns}",
            veth_mac(false, i),
            veth_mac(true, i)
        ));
        // Where the node reaches the pod: its veth, or the bridge it is a port of.
        let via = match cni {
            Cni::Routed => host_if.clone(),
            Cni::Bridge => {
                node_cmds.push(format!("link set {host_if} master {bridge}"));
                bridge_cmds.push(format!(
                    "fdb add {} dev {host_if} master static",
                    veth_mac(true, i)
                ));
                bridge.clone()
            }
        };
        node_cmds.push(format!("link set {host_if} up"));
        for ip in &w.ips {
            node_cmds.push(format!("route add {ip}/{} dev {via}", host_bits(ip)));
            node_cmds.push(format!(
                "neigh add {ip} lladdr {} dev {via} nud permanent",
                veth_mac(true, i)
            ));
        }
        node_sysctls.push((format!("net.ipv4.conf.{host_if}.rp_filter"), "0".into()));
        let mut c = vec![
            format!("link set {tmp_if} name eth0"),
            "link set lo up".into(),
            "link set eth0 up".into(),
            format!(
                "neigh add {GATEWAY} lladdr {} dev eth0 nud permanent",
                match cni {
                    Cni::Routed => veth_mac(false, i),
                    Cni::Bridge => BRIDGE_MAC.to_string(),
                }
            ),
        ];
        for ip in &w.ips {
            c.push(format!("addr add {ip}/{} dev eth0", host_bits(ip)));
        }
        c.push(format!("route add {GATEWAY} dev eth0 scope link"));
        c.push(format!("route add default via {GATEWAY} dev eth0"));
        pod_cmds.push((pns.clone(), c));
        pod_namespaces.push(pns.clone());
        pods.push(LabPod {
            key: w.key(),
            netns: pns,
            host_if: Some(host_if),
            ifindex: 0,
            ips: w.ips.clone(),
        });
    }
    NetPlan {
        node,
        pod_namespaces,
        node_cmds,
        node_sysctls,
        pod_cmds,
        bridge_cmds,
        pods,
    }
}

/// Creates the planned network; returns the pods with their interface indexes. On failure the
/// caller removes the lab (`down` works from the name).
pub(crate) fn build(plan: NetPlan) -> Result<Vec<LabPod>> {
    netns_add(&plan.node)?;
    for ns in &plan.pod_namespaces {
        netns_add(ns)?;
    }
    ip_batch(Some(&plan.node), &plan.node_cmds)?;
    if !plan.bridge_cmds.is_empty() {
        batch("bridge", Some(&plan.node), &plan.bridge_cmds)?;
    }
    for (ns, cmds) in &plan.pod_cmds {
        ip_batch(Some(ns), cmds)?;
        write_sysctl(ns, pod_sysctls())?;
    }
    write_sysctl(&plan.node, plan.node_sysctls)?;
    // Interface indexes in the node namespace (the datapath's anti-spoofing check).
    let ifs: Vec<Option<String>> = plan.pods.iter().map(|p| p.host_if.clone()).collect();
    let idx = netns::run_in(&plan.node, move || {
        ifs.iter()
            .map(|i| i.as_deref().map(netns::ifindex).transpose())
            .collect::<Result<Vec<_>, _>>()
    })??;
    let mut pods = plan.pods;
    for (p, i) in pods.iter_mut().zip(idx) {
        p.ifindex = i.unwrap_or(0);
    }
    Ok(pods)
}

/// A host added to a lab: a namespace whose eth0 is routed from the node like a pod's veth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPlan {
    pub netns: String,
    pub node_cmds: Vec<String>,
    pub node_sysctls: Vec<(String, String)>,
    pub host_cmds: Vec<String>,
}

/// Plans the `k`-th host of lab `name`, with address `ip`.
pub(crate) fn plan_host(name: &str, k: usize, ip: IpAddr) -> HostPlan {
    let id = if_id(name);
    let (hns, node_if, tmp_if) = (
        format!("cw-{name}-h{k}"),
        format!("cw{id}v{k:x}"),
        format!("cw{id}w{k:x}"),
    );
    let bits = host_bits(&ip);
    HostPlan {
        node_cmds: vec![
            format!("link add {node_if} type veth peer name {tmp_if} netns {hns}"),
            format!("link set {node_if} up"),
            format!("route add {ip}/{bits} dev {node_if}"),
        ],
        node_sysctls: vec![(format!("net.ipv4.conf.{node_if}.rp_filter"), "0".into())],
        host_cmds: vec![
            format!("link set {tmp_if} name eth0"),
            "link set lo up".into(),
            "link set eth0 up".into(),
            format!("addr add {ip}/{bits} dev eth0"),
            format!("route add {GATEWAY} dev eth0 scope link"),
            format!("route add default via {GATEWAY} dev eth0"),
        ],
        netns: hns,
    }
}

/// Creates a planned host's namespace and link.
pub(crate) fn build_host(name: &str, plan: &HostPlan) -> Result<()> {
    let node = node_ns(name);
    netns_add(&plan.netns)?;
    ip_batch(Some(&node), &plan.node_cmds)?;
    write_sysctl(&node, plan.node_sysctls.clone())?;
    ip_batch(Some(&plan.netns), &plan.host_cmds)
}

/// Runs a command to completion; its stderr is the error when it fails.
pub(crate) fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Run {
            program: format!("{:?}", cmd.get_program()),
            source,
        })?;
    if !out.status.success() {
        return Err(LabError::Failed {
            command: format!("{cmd:?}"),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

pub(crate) fn netns_add(ns: &str) -> Result<()> {
    sh(Command::new("ip").args(["netns", "add", ns]))
}

pub(crate) fn netns_del(ns: &str) -> Result<()> {
    sh(Command::new("ip").args(["netns", "del", ns]))
}

/// Runs `ip` commands in a namespace through one `ip -batch` process.
pub(crate) fn ip_batch(ns: Option<&str>, cmds: &[String]) -> Result<()> {
    batch("ip", ns, cmds)
}

/// Runs commands of iproute2's `tool` (`ip`, `bridge`) in a namespace through one `-batch`.
fn batch(tool: &str, ns: Option<&str>, cmds: &[String]) -> Result<()> {
    let mut c = Command::new(tool);
    if let Some(ns) = ns {
        c.args(["-n", ns]);
    }
    let run = |source| LabError::Run {
        program: format!("{tool} (iproute2)"),
        source,
    };
    let mut child = c
        .args(["-batch", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run)?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(cmds.join("\n").as_bytes())
        .map_err(run)?;
    let out = child.wait_with_output().map_err(run)?;
    if !out.status.success() {
        return Err(LabError::IpBatch {
            netns: ns.unwrap_or("root").into(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().into(),
        });
    }
    Ok(())
}

/// Writes sysctls (`net.ipv4.x` = value) inside a namespace (setns on a thread of its own).
pub(crate) fn write_sysctl(ns: &str, pairs: Vec<(String, String)>) -> Result<()> {
    netns::run_in(ns, move || -> std::io::Result<()> {
        for (k, v) in pairs {
            std::fs::write(format!("/proc/sys/{}", k.replace('.', "/")), v)?;
        }
        Ok(())
    })?
    .map_err(|source| LabError::Sysctl {
        netns: ns.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{inventory, PODS};

    #[test]
    fn macs_are_fixed_per_pod_and_side() {
        assert_eq!(veth_mac(false, 0), "02:00:00:00:00:00");
        assert_eq!(veth_mac(true, 0x0102_0304), "06:00:01:02:03:04");
        assert_ne!(veth_mac(true, 1), veth_mac(false, 1));
        assert_ne!(veth_mac(true, 1), veth_mac(true, 2));
    }

    #[test]
    fn a_plan_routes_every_pod_through_the_gateway() {
        let inv = inventory(&format!(
            "{PODS}---
apiVersion: v1
kind: Node
metadata: {{name: n2}}
status: {{addresses: [{{type: InternalIP, address: 10.9.0.2}}]}}
---
apiVersion: v1
kind: Pod
metadata: {{name: h, namespace: t}}
spec: {{nodeName: n2, hostNetwork: true}}
status: {{podIP: 10.9.0.2}}
"
        ));
        let p = plan("x", &inv, Cni::Routed);
        let id = if_id("x");
        assert_eq!(p.node, "cw-x-node");
        assert_eq!(p.pod_namespaces, ["cw-x-p0", "cw-x-p1"]);
        assert_eq!(p.pods.len(), 3);
        // hostNetwork pods live in the node namespace, with no veth.
        let h = &p.pods[2];
        assert_eq!(
            (h.netns.as_str(), h.host_if.as_deref()),
            ("cw-x-node", None)
        );
        assert!(p
            .node_cmds
            .contains(&format!("addr add {GATEWAY}/32 dev lo")));
        assert!(p
            .node_cmds
            .contains(&"addr add 10.9.0.2/32 dev lo".to_string()));
        assert!(p
            .node_cmds
            .contains(&format!("route add 10.0.0.1/32 dev cw{id}h0")));
        assert!(p.node_cmds.contains(&format!(
            "neigh add 10.0.0.2 lladdr 06:00:00:00:00:01 dev cw{id}h1 nud permanent"
        )));
        assert!(p
            .node_sysctls
            .contains(&(format!("net.ipv4.conf.cw{id}h1.rp_filter"), "0".into())));
        let (ns, cmds) = &p.pod_cmds[1];
        assert_eq!(ns, "cw-x-p1");
        assert_eq!(cmds[0], format!("link set cw{id}p1 name eth0"));
        assert!(cmds.contains(&"addr add 10.0.0.2/32 dev eth0".to_string()));
        assert!(cmds.contains(&format!(
            "neigh add {GATEWAY} lladdr 02:00:00:00:00:01 dev eth0 nud permanent"
        )));
        assert_eq!(
            cmds.last().unwrap(),
            &format!("route add default via {GATEWAY} dev eth0")
        );
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        let id = if_id("a-long-lab-name-of-24-ch");
        for i in [0usize, 0xfff, 0xffff_ffff] {
            assert!(format!("cw{id}h{i:x}").len() <= 15);
        }
        let h = plan_host("x", 3, "10.1.0.9".parse().unwrap());
        assert_eq!(h.netns, "cw-x-h3");
        assert!(h.node_cmds[2].starts_with("route add 10.1.0.9/32 dev cw"));
        assert!(h
            .host_cmds
            .contains(&"addr add 10.1.0.9/32 dev eth0".to_string()));
        let h6 = plan_host("x", 0, "fd00::9".parse().unwrap());
        assert!(h6
            .host_cmds
            .contains(&"addr add fd00::9/128 dev eth0".to_string()));
    }

    #[test]
    fn a_bridged_plan_puts_every_veth_on_one_bridge_that_routes() {
        let p = plan("x", &inventory(PODS), Cni::Bridge);
        let id = if_id("x");
        let br = format!("cw{id}br");
        let has = |c: String| p.node_cmds.contains(&c);
        assert!(has(format!(
            "link add {br} address {BRIDGE_MAC} type bridge"
        )));
        assert!(has(format!("link set cw{id}h1 master {br}")));
        assert!(has(format!("route add 10.0.0.2/32 dev {br}")));
        assert!(has(format!(
            "neigh add 10.0.0.2 lladdr 06:00:00:00:00:01 dev {br} nud permanent"
        )));
        assert!(!has(format!("route add 10.0.0.2/32 dev cw{id}h1")));
        assert_eq!(
            p.bridge_cmds,
            [
                format!("fdb add 06:00:00:00:00:00 dev cw{id}h0 master static"),
                format!("fdb add 06:00:00:00:00:01 dev cw{id}h1 master static"),
            ]
        );
        assert!(p.pod_cmds[0].1.contains(&format!(
            "neigh add {GATEWAY} lladdr {BRIDGE_MAC} dev eth0 nud permanent"
        )));
        assert!(plan("x", &inventory(PODS), Cni::Routed)
            .bridge_cmds
            .is_empty());
    }
}

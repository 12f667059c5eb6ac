//! Pods added to a running lab the way a CNI plugin's ADD and DEL would (the lab's own pods are
//! wired at `up`): a namespace and a veth laid out as the lab's `--cni`, the pod's addresses
//! and routes, and no static neighbour or forwarding entries, so the node learns the pod by ARP
//! as on a real node. For tests of an agent that finds interfaces by itself
//! (`--find-interfaces`); the API object is the test's to write.

use crate::error::Result;
use crate::net::{self, bridge_name, host_bits, GATEWAY};
use crate::state::{if_id, node_ns, ns_prefix, Cni, LabState};
use std::net::IpAddr;

/// A pod added with [`cni_add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CniPod {
    pub netns: String,
    /// Its veth's end in the node namespace.
    pub host_if: String,
    pub ips: Vec<IpAddr>,
}

/// The network namespace of lab `name`'s `k`-th added pod (inside the lab's prefix, so
/// `lab down` removes it too).
fn pod_ns(name: &str, k: usize) -> String {
    format!("{}x{k}", ns_prefix(name))
}

/// The node-side end of pod `k`'s veth.
fn host_if(name: &str, k: usize) -> String {
    format!("cw{}x{k:x}", if_id(name))
}

/// Wires pod `k` with `ips` into lab `name` (CNI ADD).
pub fn cni_add(name: &str, k: usize, ips: &[IpAddr]) -> Result<CniPod> {
    let state = LabState::load(name)?;
    let netns = pod_ns(name, k);
    let host_if = host_if(name, k);
    net::netns_add(&netns)?;
    let mut node = vec![format!(
        "link add {host_if} type veth peer name eth0 netns {netns}"
    )];
    let via = match state.cni {
        Cni::Routed => host_if.clone(),
        Cni::Bridge => {
            let br = bridge_name(name);
            node.push(format!("link set {host_if} master {br}"));
            br
        }
    };
    node.push(format!("link set {host_if} up"));
    for ip in ips {
        node.push(format!("route add {ip}/{} dev {via}", host_bits(ip)));
    }
    let mut pod = vec!["link set lo up".to_string(), "link set eth0 up".into()];
    for ip in ips {
        pod.push(format!("addr add {ip}/{} dev eth0", host_bits(ip)));
    }
    pod.push(format!("route add {GATEWAY} dev eth0 scope link"));
    pod.push(format!("route add default via {GATEWAY} dev eth0"));
    net::ip_batch(Some(&node_ns(name)), &node)?;
    net::write_sysctl(
        &node_ns(name),
        vec![(format!("net.ipv4.conf.{host_if}.rp_filter"), "0".into())],
    )?;
    net::ip_batch(Some(&netns), &pod)?;
    net::write_sysctl(&netns, net::pod_sysctls())?;
    Ok(CniPod {
        netns,
        host_if,
        ips: ips.to_vec(),
    })
}

/// Removes pod `k` of lab `name` (CNI DEL): its veth at once, as a plugin does (the routes go
/// with it), then its namespace (whose teardown the kernel finishes later, ~1 s here).
pub fn cni_del(name: &str, k: usize) -> Result<()> {
    net::ip_batch(
        Some(&node_ns(name)),
        &[format!("link del {}", host_if(name, k))],
    )?;
    net::netns_del(&pod_ns(name, k))
}

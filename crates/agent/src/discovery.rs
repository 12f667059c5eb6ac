//! Local workload discovery: which workloads live on this node and the host-side interface in
//! front of each, plus the host itself in host mode. Two ways:
//! - an endpoints file (the lab writes one; a CNI plugin could), read at start;
//! - `--find-interfaces` (a DaemonSet agent): the pods the manager's state binds to this node
//!   (the cluster says which), their interfaces looked up in the kernel's routes and bridge
//!   tables at every state and every few hundred milliseconds ([`found_endpoints`]).
//!
//! What the agent reports to the manager comes from here.

use crate::config::Config;
use crate::AgentError;
use cellwall_datapath::{Datapath, Found, HostInterface};
use cellwall_proto::{LocalWorkload, StateDoc};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;

/// A workload on this node and the host-side interface in front of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalEndpoint {
    /// `namespace/name`.
    pub key: String,
    pub ips: Vec<IpAddr>,
    /// Host-side interface name (where the programs attach); empty when there is none
    /// (hostNetwork pods).
    pub interface: String,
    pub ifindex: u32,
    /// Host mode: `interface` is the host's own NIC (programs attach the other way round).
    #[serde(default)]
    pub nic: bool,
    /// The node the workload is bound to, when the file serves several (the lab): the agent
    /// enforces for all of them but reports only its own node's workloads, the only ones the
    /// manager accepts from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// The discovery file an agent reads (the lab writes it; a CNI plugin would on a real node).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointsFile {
    /// Nodes whose workloads this agent enforces (more than one only in the lab).
    pub nodes: Vec<String>,
    pub endpoints: Vec<LocalEndpoint>,
}

/// What this node holds: the endpoints file, and the host's NIC in host mode (its index looked
/// up through the datapath, in the namespace the datapath attaches in).
pub fn discover(cfg: &Config, datapath: &dyn Datapath) -> Result<EndpointsFile, AgentError> {
    let mut found: EndpointsFile = match &cfg.endpoints {
        Some(p) => {
            let b = std::fs::read(p).map_err(AgentError::io("reading", p))?;
            serde_json::from_slice(&b).map_err(|source| AgentError::Json {
                what: "not an endpoints file:",
                path: p.clone(),
                source,
            })?
        }
        None => EndpointsFile::default(),
    };
    if let Some(h) = &cfg.host {
        if cellwall_policy::WorkloadKey::parse(&h.workload).is_none() {
            return Err(AgentError::Invalid {
                what: format!("--host-workload {:?}", h.workload),
                detail: "expected NAMESPACE/NAME".into(),
            });
        }
        let ifindex = datapath.interface_index(&h.interface)?;
        found.nodes.push(cfg.node.clone());
        found.endpoints.push(LocalEndpoint {
            key: h.workload.clone(),
            ips: h.ips.clone(),
            interface: h.interface.clone(),
            ifindex,
            nic: true,
            node: None,
        });
    }
    Ok(found)
}

/// Kernel discovery's bindings of local pods to their interfaces.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Bindings {
    /// Sorted by key.
    pub endpoints: Vec<LocalEndpoint>,
    /// Pods left unbound because their address resolves to an interface another pod holds or
    /// claims too, with why. On a bridge, a pod can teach the bridge another pod's MAC or
    /// answer ARP for another's address; binding the claimed address to the claimant's port
    /// would hand it the other pod's identity.
    pub conflicts: Vec<String>,
}

/// Kernel discovery: binds the pods `doc` puts on `nodes` (hostNetwork pods have no interface
/// of their own and are skipped) to the interfaces `found` shows in front of their addresses.
/// - A binding held in `current` stays while its interface exists and the pod's addresses are
///   the same, whatever the tables say now (bridge tables can be taught by any pod).
/// - A new binding is made only to an interface no other pod holds or claims in the same scan.
/// - Pods whose interface is not there yet are left out until a later scan.
///
/// Host-mode endpoints of `current` are kept.
pub fn found_endpoints(
    doc: &StateDoc,
    nodes: &BTreeSet<String>,
    found: &Found,
    current: &[LocalEndpoint],
) -> Bindings {
    let mut taken: HashMap<u32, String> = HashMap::new();
    let mut out = Bindings::default();
    let mut pending = Vec::new();
    for w in local_pods(doc, nodes) {
        let key = w.key().to_string();
        let held = current.iter().find(|e| !e.nic && e.key == key);
        match held {
            Some(e)
                if found.present.contains(&e.ifindex)
                    && e.ips == w.ips
                    && !taken.contains_key(&e.ifindex) =>
            {
                taken.insert(e.ifindex, key);
                out.endpoints.push(LocalEndpoint {
                    node: w.node.clone(),
                    ..e.clone()
                });
            }
            _ => pending.push(w),
        }
    }
    let mut claims: BTreeMap<u32, Vec<(&cellwall_policy::Workload, &HostInterface)>> =
        BTreeMap::new();
    for w in pending {
        if let Some(h) = w.ips.iter().find_map(|ip| found.by_addr.get(ip)) {
            claims.entry(h.ifindex).or_default().push((w, h));
        }
    }
    for (ifindex, claim) in claims {
        let (w, h) = claim[0];
        if let Some(holder) = taken.get(&ifindex) {
            for (w, h) in &claim {
                out.conflicts.push(format!(
                    "{} resolves to {}, which {holder} holds: not bound",
                    w.key(),
                    h.name
                ));
            }
            continue;
        }
        if claim.len() > 1 {
            let keys: Vec<String> = claim.iter().map(|(w, _)| w.key().to_string()).collect();
            out.conflicts.push(format!(
                "{} all resolve to {}: none bound",
                keys.join(", "),
                h.name
            ));
            continue;
        }
        taken.insert(ifindex, w.key().to_string());
        out.endpoints.push(LocalEndpoint {
            key: w.key().to_string(),
            ips: w.ips.clone(),
            interface: h.name.clone(),
            ifindex,
            nic: false,
            node: w.node.clone(),
        });
    }
    out.endpoints
        .extend(current.iter().filter(|e| e.nic).cloned());
    out.endpoints.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// The pods of `doc` bound to one of `nodes` that could have an interface here.
pub fn local_pods<'a>(
    doc: &'a StateDoc,
    nodes: &'a BTreeSet<String>,
) -> impl Iterator<Item = &'a cellwall_policy::Workload> + 'a {
    doc.workloads
        .iter()
        .map(|w| &**w)
        .filter(|w| !w.host_network && !w.ips.is_empty())
        .filter(|w| w.node.as_ref().is_some_and(|n| nodes.contains(n)))
}

/// The workloads this node reports when it opens its watch (the host's labels with them).
pub fn reported(cfg: &Config, found: &EndpointsFile) -> Vec<LocalWorkload> {
    let host_labels = cfg.host.as_ref().map(|h| &h.labels);
    found
        .endpoints
        .iter()
        .filter(|e| e.node.as_deref().is_none_or(|n| n == cfg.node))
        .map(|e| LocalWorkload {
            key: e.key.clone(),
            ips: e.ips.iter().map(|i| i.to_string()).collect(),
            interface: e.interface.clone(),
            labels: match (e.nic, host_labels) {
                (true, Some(l)) => l.iter().cloned().collect(),
                _ => Default::default(),
            },
            host: e.nic,
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A model with workloads x/a (10.0.0.1, veth cwa) and x/b (10.0.0.2, veth cwb) on node n1,
    /// plus `policy` (YAML, may be empty).
    pub(crate) fn doc_with(policy: &str) -> StateDoc {
        let yaml = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: x}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{namespace: x, name: a, labels: {{app: a}}}}\n\
             spec: {{nodeName: n1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n\
             status: {{podIP: 10.0.0.1}}\n---\n\
             apiVersion: v1\nkind: Pod\nmetadata: {{namespace: x, name: b, labels: {{app: b}}}}\n\
             spec: {{nodeName: n1, containers: [{{name: c, ports: [{{containerPort: 80}}]}}]}}\n\
             status: {{podIP: 10.0.0.2}}\n{policy}"
        );
        let parsed = cellwall_policy::load::parse_file("test.yaml", &yaml).expect("test model");
        let (inv, pols) =
            cellwall_policy::load::into_model(parsed.objects.into_iter().map(|l| l.object));
        StateDoc::new(&inv, &pols)
    }

    use crate::config::HostMode;
    use cellwall_datapath::FakeDatapath;

    #[test]
    fn host_mode_adds_the_nic_with_its_index_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("endpoints.json");
        std::fs::write(
            &file,
            r#"{"nodes":["n1"],"endpoints":[{"key":"x/a","ips":["10.0.0.1"],"interface":"cwa","ifindex":4}]}"#,
        )
        .unwrap();
        let mut cfg = Config::new("127.0.0.1:1", "ca.pem", "n2", dir.path());
        cfg.endpoints = Some(file);
        cfg.host = Some(HostMode {
            workload: "hosts/db".into(),
            interface: "eth0".into(),
            ips: vec!["10.9.0.1".parse().unwrap()],
            labels: vec![("role".into(), "db".into())],
        });
        let dp = FakeDatapath::new();
        assert!(
            discover(&cfg, &dp).is_err(),
            "a NIC that does not exist is an error"
        );
        dp.add_interface("eth0", 9);
        let found = discover(&cfg, &dp).unwrap();
        assert_eq!(found.nodes, ["n1", "n2"]);
        assert_eq!(found.endpoints[1].ifindex, 9);
        assert!(found.endpoints[1].nic);
        let rep = reported(&cfg, &found);
        assert!(rep[0].labels.is_empty() && !rep[0].host);
        assert_eq!(rep[1].labels.get("role").map(String::as_str), Some("db"));
        assert!(rep[1].host);

        cfg.host.as_mut().unwrap().workload = "no-slash".into();
        assert!(discover(&cfg, &dp).is_err());
    }

    /// The attack: a pod on a bridge teaches the bridge its victim's MAC (or answers ARP for
    /// the victim's address), so the tables put the victim's address behind the attacker's
    /// port. Binding it there would give the attacker's port the victim's identity
    /// (anti-spoofing would then accept the victim's address from it).
    #[test]
    fn a_pod_claiming_another_pods_address_on_a_bridge_gets_nothing() {
        let doc = doc_with("");
        let nodes: BTreeSet<String> = ["n1".to_string()].into();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let port = |name: &str, ifindex| HostInterface {
            name: name.into(),
            ifindex,
            bridge: Some("cni0".into()),
        };
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let mut found = Found::default();
        found.present.extend([11, 12]);
        found.by_addr.insert(a, port("veth-a", 11));
        found.by_addr.insert(b, port("veth-b", 12));
        let bound = found_endpoints(&doc, &nodes, &found, &[]);
        assert!(bound.conflicts.is_empty());
        let held = bound.endpoints;
        assert_eq!(held.iter().map(|e| e.ifindex).collect::<Vec<_>>(), [11, 12]);

        // a poisons the tables: b's address now resolves to a's port. b keeps its port.
        found.by_addr.insert(b, port("veth-a", 11));
        let after = found_endpoints(&doc, &nodes, &found, &held);
        assert_eq!(
            after.endpoints, held,
            "bindings held stay while their ports exist"
        );

        // b is new on this node (restarted elsewhere, or the agent restarted) while the tables
        // are poisoned: a's port is a's, so b is not bound to it.
        let only_a: Vec<LocalEndpoint> = held.iter().filter(|e| e.ifindex == 11).cloned().collect();
        let after = found_endpoints(&doc, &nodes, &found, &only_a);
        assert_eq!(after.endpoints, only_a);
        assert_eq!(
            after.conflicts,
            ["x/b resolves to veth-a, which x/a holds: not bound"]
        );

        // Neither is bound yet and both resolve to one port: neither gets it.
        let after = found_endpoints(&doc, &nodes, &found, &[]);
        assert!(after.endpoints.is_empty(), "{:?}", after.endpoints);
        assert_eq!(
            after.conflicts,
            ["x/a, x/b all resolve to veth-a: none bound"]
        );

        // b's port goes (the pod was deleted and started again): it is bound where it is now.
        found.present.remove(&12);
        found.by_addr.insert(b, port("veth-b2", 13));
        found.present.insert(13);
        let after = found_endpoints(&doc, &nodes, &found, &held);
        assert_eq!(after.endpoints[1].interface, "veth-b2");
        assert!(after.conflicts.is_empty());
    }

    /// One manager, two clusters with the same node name: the agent of `east:n1` finds only
    /// east's pods (a west pod of the same name and node is another node's).
    #[test]
    fn an_agent_of_one_cluster_takes_only_its_clusters_pods() {
        let base = doc_with("");
        let mut inv = cellwall_policy::Inventory::default();
        for (c, shift) in [("east", 0u8), ("west", 100)] {
            for w in &base.workloads {
                let mut w = (**w).clone();
                w.ips = w
                    .ips
                    .iter()
                    .map(|ip| match ip {
                        IpAddr::V4(v) => {
                            let [a, b, x, d] = v.octets();
                            IpAddr::from([a, b, x + shift, d])
                        }
                        other => *other,
                    })
                    .collect();
                let q = cellwall_policy::Object::Pod(w).qualified(c);
                let cellwall_policy::Object::Pod(w) = q else {
                    unreachable!()
                };
                inv.workloads.insert(w.key(), std::sync::Arc::new(w));
            }
        }
        let doc = StateDoc::new(&inv, &[]);
        let nodes: BTreeSet<String> = ["east:n1".to_string()].into();
        let mine: Vec<String> = local_pods(&doc, &nodes)
            .map(|w| w.key().to_string())
            .collect();
        assert_eq!(mine, ["east:x/a", "east:x/b"]);
    }
}

//! A lab's names, paths and saved state. Everything a lab creates carries its name (namespaces
//! `cw-NAME-*`, state under [`state_dir`], pins under [`pin_dir`]), so labs coexist and `down`
//! finds all of it from the name alone, even after a crash.

use crate::error::{io, LabError, Result};
use cellwall_policy::identity::fnv1a;
use cellwall_policy::{Namespace, Node, Workload, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The node name given to pods that name none (and the lab agent's node).
pub const LAB_NODE: &str = "lab";

/// The datapath a lab enforces with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DatapathKind {
    /// The kernel datapath, programmed by the agent.
    Ebpf,
    /// Nothing attached (a benchmark baseline).
    None,
}

impl DatapathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::None => "none",
        }
    }
}

/// Where the lab's manager takes the objects from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Sent to the manager over REST (`cellwall apply`).
    #[default]
    Files,
    /// Held by the lab's Kubernetes API server, which the manager watches.
    Kubernetes,
}

/// How pods are wired to the node namespace, as a CNI would.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    /// Each pod's veth carries a /32 (/128) route to the pod (Calico-style).
    #[default]
    Routed,
    /// Every pod's veth is a port of one bridge, which routes (the `bridge` plugin's layout).
    Bridge,
}

/// Flow visibility: `Off` emits no flow events and skips tracking for pods no policy selects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    #[default]
    On,
    Off,
}

impl Visibility {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
        }
    }
}

/// Checks a lab name: 1-24 lowercase letters, digits or `-` (it becomes part of namespace
/// names and paths).
pub fn validate_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 24
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(LabError::BadName { name: name.into() })
    }
}

/// Checks a host name for `host-add`: 1-40 lowercase letters, digits or `-`.
pub fn validate_host_name(host: &str) -> Result<()> {
    let ok = !host.is_empty()
        && host.len() <= 40
        && host
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(LabError::BadHostName { host: host.into() })
    }
}

/// Where a lab keeps its state, logs and pid files ([`cellwall_api::client::lab_dir`]).
pub fn state_dir(name: &str) -> PathBuf {
    cellwall_api::client::lab_dir(name)
}

/// Where the lab's agents pin their programs and maps.
pub fn pin_dir(name: &str) -> PathBuf {
    PathBuf::from("/sys/fs/bpf/cellwall").join(name)
}

/// The lab's node namespace (routes between pods like a CNI; hostNetwork pods live here).
pub fn node_ns(name: &str) -> String {
    format!("cw-{name}-node")
}

/// The prefix of every network namespace of the lab.
pub fn ns_prefix(name: &str) -> String {
    format!("cw-{name}-")
}

/// Four hex digits from the lab name, in interface names (`cw{id}h{i}`: at most 15 characters).
pub(crate) fn if_id(name: &str) -> String {
    format!("{:04x}", fnv1a(name) & 0xffff)
}

/// One pod of a lab, as built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabPod {
    pub key: WorkloadKey,
    /// Network namespace the pod's processes live in (the node's for hostNetwork pods).
    pub netns: String,
    /// The node-side end of the pod's veth (none for hostNetwork pods).
    pub host_if: Option<String>,
    /// That interface's index in the node namespace (0 when none).
    pub ifindex: u32,
    pub ips: Vec<IpAddr>,
}

/// What a lab is: saved as `state.json` in its state directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabState {
    pub name: String,
    pub datapath: DatapathKind,
    #[serde(default)]
    pub visibility: Visibility,
    #[serde(default)]
    pub source: Source,
    #[serde(default)]
    pub cni: Cni,
    /// With `--source kubernetes`: the manager names the lab's cluster (one of several it
    /// could watch), so its nodes are `CLUSTER:NODE` (`cellwall_policy::clusters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    pub pods: Vec<LabPod>,
    pub namespaces: Vec<Namespace>,
    pub workloads: Vec<Workload>,
    pub nodes: Vec<Node>,
}

impl LabState {
    /// Whether the lab's agent finds pods' interfaces in the kernel (`--find-interfaces`), as a
    /// DaemonSet agent does: with pods from the Kubernetes API, and always for the bridged
    /// layout. Otherwise it reads them from the endpoints file the lab writes.
    pub fn agent_finds_interfaces(&self) -> bool {
        self.source == Source::Kubernetes || self.cni == Cni::Bridge
    }

    /// A lab node's name as the manager knows it (qualified with the lab's cluster).
    pub fn node_id(&self, node: &str) -> String {
        match &self.cluster {
            Some(c) => cellwall_policy::clusters::qualified(c, node),
            None => node.to_string(),
        }
    }

    /// The state of the running lab `name`.
    pub fn load(name: &str) -> Result<Self> {
        Self::load_from(&state_dir(name), name)
    }

    pub(crate) fn load_from(dir: &Path, name: &str) -> Result<Self> {
        let p = dir.join("state.json");
        let text = std::fs::read_to_string(&p).map_err(|source| LabError::NotUp {
            name: name.into(),
            path: p.display().to_string(),
            source,
        })?;
        serde_json::from_str(&text).map_err(|source| LabError::DamagedState {
            name: name.into(),
            path: p.display().to_string(),
            source,
        })
    }

    /// Saves the state atomically (write, then rename).
    pub fn save(&self) -> Result<()> {
        self.save_to(&state_dir(&self.name))
    }

    pub(crate) fn save_to(&self, dir: &Path) -> Result<()> {
        let tmp = dir.join("state.json.tmp");
        let text = serde_json::to_vec_pretty(self).expect("lab state serializes");
        std::fs::write(&tmp, text).map_err(io(format!("writing {}", tmp.display())))?;
        std::fs::rename(&tmp, dir.join("state.json"))
            .map_err(io(format!("renaming {}", tmp.display())))
    }

    pub fn pod(&self, key: &WorkloadKey) -> Result<&LabPod> {
        self.pods
            .iter()
            .find(|p| &p.key == key)
            .ok_or_else(|| LabError::NoPod {
                pod: key.to_string(),
                lab: self.name.clone(),
            })
    }

    /// The nodes the lab's agent enforces for: every pod's node and every Node object.
    pub fn node_names(&self) -> BTreeSet<String> {
        let mut s: BTreeSet<String> = self
            .workloads
            .iter()
            .filter_map(|w| w.node.clone())
            .collect();
        s.extend(self.nodes.iter().map(|n| n.name.clone()));
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A scratch directory removed on drop.
    pub(crate) struct Scratch(pub PathBuf);

    impl Scratch {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "cellwall-lab-test-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Parses manifests into an inventory, as the lab does.
    pub(crate) fn inventory(yaml: &str) -> cellwall_policy::Inventory {
        let parsed = cellwall_policy::load::parse_file("t.yaml", yaml).unwrap();
        cellwall_manifests::assemble(parsed.objects, "10.244.0.0/16".parse().unwrap())
            .unwrap()
            .inventory
    }

    pub(crate) const PODS: &str = "
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: t, labels: {app: a}}
spec: {nodeName: lab, containers: [{ports: [{containerPort: 80}, {containerPort: 53, protocol: UDP}]}]}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata: {name: b, namespace: t, labels: {app: b}}
spec: {nodeName: n2, containers: [{ports: [{containerPort: 80}, {containerPort: 9, protocol: SCTP}]}]}
status: {podIP: 10.0.0.2}
";

    pub(crate) fn sample() -> LabState {
        let inv = inventory(PODS);
        let w: Vec<Workload> = inv.workloads.values().map(|w| Workload::clone(w)).collect();
        LabState {
            name: "t1".into(),
            datapath: DatapathKind::Ebpf,
            visibility: Visibility::Off,
            source: Source::Files,
            cni: Cni::Routed,
            cluster: None,
            pods: w
                .iter()
                .enumerate()
                .map(|(i, w)| LabPod {
                    key: w.key(),
                    netns: format!("cw-t1-p{i}"),
                    host_if: Some(format!("cw1234h{i}")),
                    ifindex: 7 + i as u32,
                    ips: w.ips.clone(),
                })
                .collect(),
            namespaces: inv.namespaces.values().cloned().collect(),
            workloads: w,
            nodes: vec![],
        }
    }

    #[test]
    fn lab_names_are_checked() {
        for ok in ["cellwall", "a", "lab-1", "x23456789012345678901234"] {
            assert!(validate_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Lab", "a_b", "a.b", "x234567890123456789012345", "a/b"] {
            let e = validate_name(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{bad:?}: a lab name is 1-24 lowercase letters, digits or '-'")
            );
        }
        assert!(validate_host_name("db-1").is_ok());
        assert!(validate_host_name("").is_err());
        assert!(validate_host_name(&"h".repeat(41)).is_err());
        assert!(validate_host_name("DB").is_err());
    }

    #[test]
    fn names_carry_the_lab_name() {
        assert_eq!(node_ns("x"), "cw-x-node");
        assert!(node_ns("x").starts_with(&ns_prefix("x")));
        assert_eq!(pin_dir("x"), Path::new("/sys/fs/bpf/cellwall/x"));
        assert_eq!(if_id("x").len(), 4);
        assert_ne!(if_id("a"), if_id("b"));
    }

    #[test]
    fn state_round_trips_and_reports_damage() {
        let d = Scratch::new("state");
        let s = sample();
        s.save_to(&d.0).unwrap();
        assert_eq!(LabState::load_from(&d.0, "t1").unwrap(), s);
        assert!(!d.0.join("state.json.tmp").exists());
        assert_eq!(
            s.node_names().into_iter().collect::<Vec<_>>(),
            ["lab", "n2"]
        );
        assert!(s.pod(&s.workloads[0].key()).is_ok());
        assert_eq!(
            s.pod(&WorkloadKey::parse("t/zz").unwrap())
                .unwrap_err()
                .to_string(),
            "no pod t/zz in lab t1"
        );
        std::fs::write(d.0.join("state.json"), "{").unwrap();
        let e = LabState::load_from(&d.0, "t1").unwrap_err();
        assert!(
            e.to_string()
                .ends_with("is damaged; `cellwall lab down --name t1` cleans up"),
            "{e}"
        );
        let e = LabState::load_from(&d.0.join("nope"), "t1").unwrap_err();
        assert!(matches!(e, LabError::NotUp { .. }), "{e}");
    }

    #[test]
    fn older_states_without_visibility_load() {
        let d = Scratch::new("vis");
        let mut v = serde_json::to_value(sample()).unwrap();
        v.as_object_mut().unwrap().remove("visibility");
        std::fs::write(d.0.join("state.json"), v.to_string()).unwrap();
        assert_eq!(
            LabState::load_from(&d.0, "t1").unwrap().visibility,
            Visibility::On
        );
    }
}

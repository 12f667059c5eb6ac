//! From visibility to policy, on aggregated flow history: the dependency map, least-privilege
//! proposals, and simulation of a candidate policy set. Pure: the manager reads history from its
//! store and passes it in; the same code runs in tests and benchmarks.
//!
//! Modules: `map` (the dependency map and its Graphviz text), `propose` (least privilege from
//! history), `render` (a proposal as YAML manifests), `simulate` (history replayed against a
//! candidate). This file holds the history types they all read.

mod group;
mod group_by;
mod hygiene;
mod map;
mod propose;
mod render;
#[cfg(test)]
mod scenarios;
mod simulate;
#[cfg(test)]
mod test_support;

pub use group::{infer_owner, AppGroup, GroupBy, GroupByError, Grouping};
pub use hygiene::{rule_stats, RuleStats};
pub use map::{dependency_map, group, to_dot, DependencyMap, MapEdge, MapNode};
pub use propose::{
    address, propose, Evidence, Excluded, Proposal, ProposeOptions, ProposedPeer, ProposedPolicy,
    ProposedRule,
};
pub use render::{render_yaml, ProposalFormat};
pub use simulate::{simulate, Replay, SimClass, SimRow, SimSummary, SimVerdict};

use crate::labels::Labels;
use crate::model::Protocol;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// One end of a historical flow, as it was when the flow was seen.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    /// A workload with its labels (and its namespace's) at the time.
    Workload {
        namespace: String,
        name: String,
        labels: Labels,
    },
    /// An address no workload owned, with the DNS names it was reached by (FQDN policy).
    External {
        ip: IpAddr,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        names: Vec<String>,
    },
}

impl Endpoint {
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Workload {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            Endpoint::External { ip, names } => match names.first() {
                Some(n) => format!("{n} ({ip})"),
                None => ip.to_string(),
            },
        }
    }
    pub(super) fn namespace(&self) -> Option<&str> {
        match self {
            Endpoint::Workload { namespace, .. } => Some(namespace),
            Endpoint::External { .. } => None,
        }
    }
}

/// What the datapath decided for the connections of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Observed {
    Allowed,
    Denied,
    /// Allowed, but an audit-mode policy would have denied it.
    Audit,
}

impl Observed {
    pub fn happened(self) -> bool {
        self != Observed::Denied
    }
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "allowed" => Self::Allowed,
            "denied" => Self::Denied,
            "audit" => Self::Audit,
            _ => return None,
        })
    }
}

/// Connections between two endpoints on one port with one outcome, over a span of time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HistFlow {
    pub src: Endpoint,
    pub dst: Endpoint,
    pub protocol: Protocol,
    pub port: u16,
    pub observed: Observed,
    /// The deciding rule, as the agent described it.
    pub rule: Option<String>,
    pub connections: u64,
    pub first_ns: u64,
    pub last_ns: u64,
}

/// External addresses are grouped by /24 (IPv4) or /64 (IPv6) on the map, unless DNS named
/// them (FQDN policy): then by name, so addresses that rotate behind a name stay one node.
pub(super) fn external_group(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v) => {
            let o = v.octets();
            format!("{}.{}.{}.0/24", o[0], o[1], o[2])
        }
        IpAddr::V6(v) => {
            let s = v.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Labels that differ between replicas of one application: never part of its identity.
const REPLICA_LABELS: [&str; 4] = [
    "pod-template-hash",
    "controller-revision-hash",
    "statefulset.kubernetes.io/pod-name",
    "pod-template-generation",
];

/// The labels that select a workload's application: `app`, else `app.kubernetes.io/name`,
/// else every label but the per-replica ones. Empty when it has none.
pub fn app_selector(labels: &Labels) -> Labels {
    for k in ["app", "app.kubernetes.io/name", "k8s-app"] {
        if let Some(v) = labels.get(k) {
            let mut l = Labels::new();
            l.insert(k.to_string(), v.clone());
            return l;
        }
    }
    labels
        .iter()
        .filter(|(k, _)| !REPLICA_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

pub(super) fn selector_text(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_selector_prefers_app_labels_and_drops_replica_labels() {
        let l = |p: &[(&str, &str)]| -> Labels {
            p.iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        assert_eq!(
            app_selector(&l(&[("app", "web"), ("pod-template-hash", "x")])),
            l(&[("app", "web")])
        );
        assert_eq!(
            app_selector(&l(&[("tier", "fe"), ("pod-template-hash", "x")])),
            l(&[("tier", "fe")])
        );
        assert!(app_selector(&l(&[("pod-template-hash", "x")])).is_empty());
        assert_eq!(selector_text(&l(&[("a", "1"), ("b", "2")])), "a=1,b=2");
        assert_eq!(Observed::parse("audit"), Some(Observed::Audit));
        assert!(!Observed::Denied.happened());
    }
}

//! The dependency map: history grouped by application (or namespace, or workload), one edge per
//! (source, destination, protocol, port) with connection counts per outcome; and its Graphviz
//! text.

use super::{app_selector, external_group, selector_text, Endpoint, Grouping, HistFlow, Observed};
use crate::model::Protocol;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The first round's map node of an endpoint (`app` label grouping): compliance alerts name
/// edges this way, whatever grouping learning uses.
pub fn group(ep: &Endpoint) -> String {
    match ep {
        Endpoint::External { ip, names } => match names.first() {
            Some(n) => n.clone(),
            None => external_group(*ip),
        },
        Endpoint::Workload {
            namespace,
            name,
            labels,
        } => {
            let sel = app_selector(labels);
            if sel.is_empty() {
                format!("{namespace}/{name}")
            } else {
                format!("{namespace}/{}", selector_text(&sel))
            }
        }
    }
}

/// What a map node stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    /// Workloads (grouped by application, namespace, or one each).
    Workload,
    /// Addresses outside the inventory (grouped by network).
    External,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MapNode {
    pub id: String,
    pub kind: NodeKind,
    pub namespace: Option<String>,
    pub members: BTreeSet<String>,
    /// Which evidence made these workloads one node (see `AppGroup`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
    /// Why they were split from a larger candidate group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MapEdge {
    pub src: String,
    pub dst: String,
    pub protocol: Protocol,
    pub port: u16,
    pub allowed: u64,
    pub denied: u64,
    pub audit: u64,
    pub first_ns: u64,
    pub last_ns: u64,
    /// Rules that decided these connections.
    pub rules: BTreeSet<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DependencyMap {
    pub nodes: Vec<MapNode>,
    pub edges: Vec<MapEdge>,
}

/// The map of `flows`, workloads grouped as `grouping` says (see [`Grouping::build`]).
pub fn dependency_map(flows: &[HistFlow], grouping: &Grouping) -> DependencyMap {
    let mut nodes: BTreeMap<String, MapNode> = BTreeMap::new();
    let mut edges: BTreeMap<(String, String, Protocol, u16), MapEdge> = BTreeMap::new();
    for f in flows {
        let ids = [&f.src, &f.dst].map(|ep| {
            let id = grouping.node_id(ep);
            let g = grouping.of(ep);
            let n = nodes.entry(id.clone()).or_insert_with(|| MapNode {
                id: id.clone(),
                kind: match ep {
                    Endpoint::Workload { .. } => NodeKind::Workload,
                    Endpoint::External { .. } => NodeKind::External,
                },
                namespace: ep.namespace().map(str::to_string),
                members: BTreeSet::new(),
                evidence: g.map(|g| g.evidence.clone()),
                split: g.and_then(|g| g.split.clone()),
            });
            n.members.insert(ep.describe());
            id
        });
        let [s, d] = ids;
        let e = edges
            .entry((s.clone(), d.clone(), f.protocol, f.port))
            .or_insert_with(|| MapEdge {
                src: s,
                dst: d,
                protocol: f.protocol,
                port: f.port,
                allowed: 0,
                denied: 0,
                audit: 0,
                first_ns: f.first_ns,
                last_ns: f.last_ns,
                rules: BTreeSet::new(),
            });
        match f.observed {
            Observed::Allowed => e.allowed += f.connections,
            Observed::Denied => e.denied += f.connections,
            Observed::Audit => e.audit += f.connections,
        }
        e.first_ns = e.first_ns.min(f.first_ns);
        e.last_ns = e.last_ns.max(f.last_ns);
        if let Some(r) = &f.rule {
            e.rules.insert(r.clone());
        }
    }
    DependencyMap {
        nodes: nodes.into_values().collect(),
        edges: edges.into_values().collect(),
    }
}

/// Graphviz text of a map.
pub fn to_dot(m: &DependencyMap) -> String {
    let q = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    let mut s = String::from(
        "digraph cellwall {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n",
    );
    for n in &m.nodes {
        let shape = if n.kind == NodeKind::External {
            ", shape=ellipse"
        } else {
            ""
        };
        s.push_str(&format!(
            "  {}{};\n",
            q(&n.id),
            if shape.is_empty() {
                String::new()
            } else {
                format!(" [{}]", &shape[2..])
            }
        ));
    }
    for e in &m.edges {
        let color = if e.denied > 0 && e.allowed + e.audit == 0 {
            "red"
        } else if e.denied > 0 || e.audit > 0 {
            "orange"
        } else {
            "black"
        };
        s.push_str(&format!(
            "  {} -> {} [label={}, color={color}];\n",
            q(&e.src),
            q(&e.dst),
            q(&format!(
                "{}/{} ({} ok, {} denied{})",
                e.protocol,
                e.port,
                e.allowed + e.audit,
                e.denied,
                if e.audit > 0 {
                    format!(", {} audit", e.audit)
                } else {
                    String::new()
                }
            ))
        ));
    }
    s.push_str("}\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::test_support::*;
    use crate::discover::GroupBy;

    #[test]
    fn map_groups_replicas_and_externals() {
        let (inv, _) = inv_and_policies(INV);
        let ext = Endpoint::External {
            ip: "203.0.113.9".parse().unwrap(),
            names: vec![],
        };
        // A name whose addresses rotate: one node, named.
        let api = |ip: &str| Endpoint::External {
            ip: ip.parse().unwrap(),
            names: vec!["api.example.com".into()],
        };
        let flows = vec![
            flow(
                ep(&inv, "a/web-1"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                3,
            ),
            flow(
                ep(&inv, "a/web-2"),
                ep(&inv, "a/db"),
                5432,
                Observed::Allowed,
                2,
            ),
            flow(
                ep(&inv, "b/debug"),
                ep(&inv, "a/db"),
                5432,
                Observed::Denied,
                1,
            ),
            flow(ep(&inv, "a/web-1"), ext, 443, Observed::Allowed, 1),
            flow(
                ep(&inv, "a/web-1"),
                api("198.51.100.1"),
                443,
                Observed::Allowed,
                1,
            ),
            flow(
                ep(&inv, "a/web-2"),
                api("192.0.2.77"),
                443,
                Observed::Allowed,
                2,
            ),
        ];
        let m = dependency_map(&flows, &Grouping::build(&flows, &inv, &GroupBy::App));
        let e: Vec<_> = m
            .edges
            .iter()
            .map(|e| (e.src.as_str(), e.dst.as_str(), e.port, e.allowed, e.denied))
            .collect();
        assert_eq!(
            e,
            [
                ("a/app=web", "203.0.113.0/24", 443, 1, 0),
                ("a/app=web", "a/app=db", 5432, 5, 0),
                ("a/app=web", "api.example.com", 443, 3, 0),
                ("b/app=debug", "a/app=db", 5432, 0, 1)
            ]
        );
        let web = m.nodes.iter().find(|n| n.id == "a/app=web").unwrap();
        assert_eq!(web.members.len(), 2);
        assert!(to_dot(&m).contains("\"a/app=web\" -> \"a/app=db\""));
    }
}

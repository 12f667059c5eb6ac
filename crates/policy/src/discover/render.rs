//! A proposal as YAML documents that `cellwall apply -f` (and kubectl, for NetworkPolicy) take as
//! they are, with each rule's evidence as a comment above it. Hand-written text rather than a
//! serializer: the comments and the flow style are the point.

use super::{selector_text, Proposal, ProposedPeer, ProposedPolicy, ProposedRule};
use crate::labels::Labels;

/// Output formats of a proposal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProposalFormat {
    Cellwall,
    NetworkPolicy,
    /// A baseline-tier ClusterNetworkPolicy per group: NetworkPolicies still refine it, and its
    /// final Deny rules make it least privilege (CNP selection does not isolate by itself).
    ClusterNetworkPolicy,
}

/// A YAML double-quoted string (JSON's escaping is valid YAML).
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}

fn time(ns: u64) -> String {
    crate::de::format_rfc3339((ns / 1_000_000_000) as i64)
}

fn labels_yaml(l: &Labels) -> String {
    let items: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{}: {}", q(k), q(v)))
        .collect();
    format!("{{matchLabels: {{{}}}}}", items.join(", "))
}

/// YAML documents that `cellwall apply -f` (and kubectl, for NetworkPolicy) take as they are,
/// with each rule's evidence as a comment above it.
pub fn render_yaml(p: &Proposal, format: ProposalFormat) -> String {
    let mut s = String::new();
    for (i, pol) in p.policies.iter().enumerate() {
        if i > 0 {
            s.push_str("---\n");
        }
        if let Some(g) = p.groups.iter().find(|g| g.id == pol.group) {
            group_comment(&mut s, g);
        }
        render_policy(&mut s, pol, format);
    }
    let unselectable: Vec<_> = p.groups.iter().filter(|g| g.selector.is_none()).collect();
    if !unselectable.is_empty() {
        s.push_str("# Not proposed (no label set selects them alone):\n");
        for g in unselectable {
            comment(&mut s, "#   ", &format!("{}: {}", g.id, g.evidence));
        }
    }
    if !p.excluded.is_empty() {
        s.push_str("# Observed but not proposed:\n");
        for e in &p.excluded {
            let line = format!(
                "{} -> {} {}/{} ({} connections): {}",
                e.src, e.dst, e.protocol, e.port, e.connections, e.reason
            );
            comment(&mut s, "#   ", &line);
        }
    }
    s
}

/// Why these workloads are one application: the evidence, the members, any split. Every line
/// is a comment whatever the names hold: a line break in one must never start YAML.
fn group_comment(s: &mut String, g: &super::AppGroup) {
    let members: Vec<&str> = g.members.iter().map(String::as_str).collect();
    let shown = members.len().min(5);
    let mut text = format!(
        "Group {} by {}: {}{}.",
        g.id,
        g.evidence,
        members[..shown].join(", "),
        if members.len() > shown {
            format!(" and {} more", members.len() - shown)
        } else {
            String::new()
        }
    );
    for n in g.split.iter().chain(&g.note) {
        text.push_str(&format!("\n{n}."));
    }
    comment(s, "# ", &text);
}

/// `text` as comment lines behind `prefix`, whatever it holds: names come from manifests and
/// imports, and a line break in one must never end the comment and start YAML.
fn comment(s: &mut String, prefix: &str, text: &str) {
    for line in text.split(['\n', '\r']) {
        s.push_str(prefix);
        s.push_str(line);
        s.push('\n');
    }
}

/// The comment every proposed policy starts with: what it was learned from.
fn header(s: &mut String, pol: &ProposedPolicy) {
    let seen: u64 = pol
        .ingress
        .iter()
        .chain(&pol.egress)
        .map(|r| r.evidence.connections)
        .sum();
    s.push_str(&format!(
        "# Proposed by cellwall from {seen} observed connections of {}/{}.\n",
        pol.namespace,
        selector_text(&pol.selector)
    ));
}

fn render_policy(s: &mut String, pol: &ProposedPolicy, format: ProposalFormat) {
    if format == ProposalFormat::ClusterNetworkPolicy {
        return render_cnp(s, pol);
    }
    header(s, pol);
    let (api, kind) = match format {
        ProposalFormat::NetworkPolicy => ("networking.k8s.io/v1", "NetworkPolicy"),
        // (ClusterNetworkPolicy is rendered by render_cnp.)
        _ => ("cellwall.io/v1alpha1", "Policy"),
    };
    s.push_str(&format!(
        "apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: {}\n  namespace: {}\nspec:\n  podSelector: {}\n",
        q(&pol.name),
        q(&pol.namespace),
        labels_yaml(&pol.selector)
    ));
    if format == ProposalFormat::NetworkPolicy {
        s.push_str("  policyTypes: [Ingress, Egress]\n");
    }
    for (dir, rules, field) in [
        ("ingress", &pol.ingress, "from"),
        ("egress", &pol.egress, "to"),
    ] {
        if rules.is_empty() {
            s.push_str(&format!("  {dir}: []\n"));
            continue;
        }
        s.push_str(&format!("  {dir}:\n"));
        for r in rules {
            render_rule(s, pol, r, dir, field, format);
        }
    }
}

fn render_rule(
    s: &mut String,
    pol: &ProposedPolicy,
    r: &ProposedRule,
    dir: &str,
    field: &str,
    format: ProposalFormat,
) {
    if let (ProposedPeer::Domain { name }, ProposalFormat::NetworkPolicy) = (&r.peer, format) {
        s.push_str(&format!(
            "  # observed to {name} {}/{}: NetworkPolicy cannot name DNS names (use --format cellwall or clusternetworkpolicy); not written\n",
            r.protocol, r.port
        ));
        return;
    }
    evidence_comment(s, "  ", r);
    let name = match format {
        ProposalFormat::NetworkPolicy => String::new(),
        _ => format!("    name: {}\n", q(&rule_name(r, dir))),
    };
    s.push_str(&format!(
        "  - {field}: [{}]\n{name}    ports: [{{protocol: {}, port: {}}}]\n",
        peer_yaml(&r.peer, &pol.namespace, format),
        r.protocol,
        r.port
    ));
}

/// A rule's peer in flow style; pods of the policy's own namespace need no namespace selector.
fn peer_yaml(peer: &ProposedPeer, own_ns: &str, format: ProposalFormat) -> String {
    match peer {
        ProposedPeer::Cidr { cidr } => match format {
            ProposalFormat::NetworkPolicy => format!("{{ipBlock: {{cidr: {}}}}}", q(cidr)),
            _ => format!("{{cidr: {}}}", q(cidr)),
        },
        ProposedPeer::Domain { name } => format!("{{domain: {}}}", q(name)),
        ProposedPeer::Pods { namespace, labels } if namespace == own_ns => {
            format!("{{podSelector: {}}}", labels_yaml(labels))
        }
        ProposedPeer::Pods { namespace, labels } => ns_pods(namespace, labels),
    }
}

fn evidence_comment(s: &mut String, indent: &str, r: &ProposedRule) {
    let e = &r.evidence;
    s.push_str(&format!(
        "{indent}# {}{} connections, {} .. {}, {:.1}% of this direction's traffic\n",
        if e.review {
            "REVIEW: seen rarely: "
        } else {
            ""
        },
        e.connections,
        time(e.first_ns),
        time(e.last_ns),
        e.coverage * 100.0
    ));
}

/// A namespace's pods matching `labels`: a namespace selector on its name and a pod selector
/// (NetworkPolicy and Cellwall peers; CNP `pods` selectors).
fn ns_pods(namespace: &str, labels: &Labels) -> String {
    // A watched cluster's namespace (`east:shop`): its own name and its cluster's label.
    let ns = match crate::clusters::split(namespace) {
        Some((c, bare)) => format!(
            "\"kubernetes.io/metadata.name\": {}, {}: {}",
            q(bare),
            q(crate::clusters::CLUSTER_LABEL),
            q(c)
        ),
        None => format!("\"kubernetes.io/metadata.name\": {}", q(namespace)),
    };
    format!(
        "{{namespaceSelector: {{matchLabels: {{{ns}}}}}, podSelector: {}}}",
        labels_yaml(labels)
    )
}

/// One group as a ClusterNetworkPolicy: its observed edges as `Accept` rules, then a `Deny`
/// of everything else in each direction. CNP ingress peers are pods only, so an observed
/// ingress edge from outside the cluster cannot be written: it is listed in a comment (and
/// the final ingress Deny, which only covers pods, does not block it either).
fn render_cnp(s: &mut String, pol: &ProposedPolicy) {
    header(s, pol);
    s.push_str(&format!(
        "apiVersion: policy.networking.k8s.io/v1alpha2\nkind: ClusterNetworkPolicy\nmetadata:\n  name: {}\nspec:\n  tier: Baseline\n  priority: 100\n  subject:\n    pods: {}\n",
        q(&format!("{}.{}", pol.namespace, pol.name)),
        ns_pods(&pol.namespace, &pol.selector)
    ));
    for (dir, rules, field) in [
        ("ingress", &pol.ingress, "from"),
        ("egress", &pol.egress, "to"),
    ] {
        s.push_str(&format!("  {dir}:\n"));
        for r in rules {
            let peer = match &r.peer {
                ProposedPeer::Pods { namespace, labels } => {
                    format!("{{pods: {}}}", ns_pods(namespace, labels))
                }
                ProposedPeer::Cidr { cidr } if dir == "egress" => {
                    format!("{{networks: [{}]}}", q(cidr))
                }
                ProposedPeer::Domain { name } => format!("{{domainNames: [{}]}}", q(name)),
                ProposedPeer::Cidr { cidr } => {
                    s.push_str(&format!(
                        "  # observed from {cidr} {}/{}: ClusterNetworkPolicy ingress peers are pods only; not written, and not denied below\n",
                        r.protocol, r.port
                    ));
                    continue;
                }
            };
            evidence_comment(s, "  ", r);
            s.push_str(&format!(
                "  - name: {}\n    action: Accept\n    {field}: [{peer}]\n    protocols: [{{{}: {{destinationPort: {{number: {}}}}}}}]\n",
                q(&rule_name(r, dir)),
                r.protocol.as_str().to_lowercase(),
                r.port
            ));
        }
        let everything = if dir == "ingress" {
            "[{namespaces: {}}]"
        } else {
            "[{namespaces: {}}, {networks: [\"0.0.0.0/0\", \"::/0\"]}]"
        };
        s.push_str(&format!(
            "  - name: {}\n    action: Deny\n    {field}: {everything}\n",
            q(&format!("deny-other-{dir}"))
        ));
    }
}

/// `from-NS-VALUES-tcp80`, `to-203.0.113.9-32-udp53`: readable, and unique within a policy.
fn rule_name(r: &ProposedRule, dir: &str) -> String {
    format!(
        "{}-{}-{}{}",
        if dir == "ingress" { "from" } else { "to" },
        match &r.peer {
            ProposedPeer::Cidr { cidr } => cidr.replace(['/', ':'], "-"),
            ProposedPeer::Domain { name } => name.clone(),
            ProposedPeer::Pods { namespace, labels } => format!(
                "{namespace}-{}",
                labels.values().cloned().collect::<Vec<_>>().join("-")
            ),
        },
        r.protocol.as_str().to_lowercase(),
        r.port
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_group_comment_never_ends_early() {
        let g = crate::discover::AppGroup {
            id: "a/x\nkind: Evil".into(),
            namespace: "a".into(),
            members: ["a/x\r\n---".to_string()].into(),
            evidence: "labels".into(),
            split: Some("s\nt".into()),
            selector: None,
            note: None,
            short: "x".into(),
        };
        let mut s = String::new();
        group_comment(&mut s, &g);
        assert!(s.lines().all(|l| l.starts_with("# ")), "{s}");
        // Unselectable groups and excluded flows are listed as comments too.
        let p = Proposal {
            groups: vec![g],
            excluded: vec![Excluded {
                src: "a\n---".into(),
                dst: "b".into(),
                protocol: crate::model::Protocol::Tcp,
                port: 1,
                connections: 1,
                reason: "r\nkind: Policy".into(),
            }],
            ..Default::default()
        };
        let y = render_yaml(&p, ProposalFormat::Cellwall);
        assert!(y.lines().all(|l| l.starts_with('#')), "{y}");
    }

    use super::*;
    use crate::discover::{Evidence, Excluded};
    use crate::model::Protocol;

    fn proposal() -> Proposal {
        let labels: Labels = [("app".to_string(), "web".to_string())].into();
        let rule = |peer| ProposedRule {
            peer,
            protocol: Protocol::Tcp,
            port: 443,
            evidence: Evidence {
                connections: 2,
                first_ns: 0,
                last_ns: 60_000_000_000,
                coverage: 0.5,
                review: true,
            },
        };
        Proposal {
            policies: vec![ProposedPolicy {
                namespace: "shop".into(),
                name: "cw-db".into(),
                group: "shop/app=db".into(),
                selector: [("app".to_string(), "db".to_string())].into(),
                ingress: vec![
                    rule(ProposedPeer::Pods {
                        namespace: "shop".into(),
                        labels: labels.clone(),
                    }),
                    rule(ProposedPeer::Pods {
                        namespace: "edge".into(),
                        labels,
                    }),
                ],
                egress: vec![rule(ProposedPeer::Cidr {
                    cidr: "203.0.113.9/32".into(),
                })],
            }],
            groups: Vec::new(),
            excluded: vec![Excluded {
                src: "a/x".into(),
                dst: "a/y".into(),
                protocol: Protocol::Udp,
                port: 53,
                connections: 4,
                reason: "explicitly denied".into(),
            }],
            flows_considered: 10,
        }
    }

    /// A watched cluster's namespace is selected by its own name and its cluster's label (its
    /// `kubernetes.io/metadata.name` is the bare name).
    #[test]
    fn a_cluster_namespace_is_selected_by_name_and_cluster() {
        let l = Labels::from([("app".to_string(), "web".to_string())]);
        let y = ns_pods("east:shop", &l);
        assert!(
            y.contains(
                "\"kubernetes.io/metadata.name\": \"shop\", \"cellwall.io/cluster\": \"east\""
            ),
            "{y}"
        );
        assert!(ns_pods("shop", &l).contains("\"kubernetes.io/metadata.name\": \"shop\"}"));
    }

    #[test]
    fn renders_evidence_names_and_peers() {
        let y = render_yaml(&proposal(), ProposalFormat::Cellwall);
        assert!(y.contains("# Proposed by cellwall from 6 observed connections of shop/app=db."));
        assert!(y.contains("  # REVIEW: seen rarely: 2 connections, 1970-01-01T00:00:00Z .. 1970-01-01T00:01:00Z, 50.0% of this direction's traffic"));
        assert!(y.contains("  - from: [{podSelector: {matchLabels: {\"app\": \"web\"}}}]\n    name: \"from-shop-web-tcp443\"\n"));
        assert!(y.contains("\"kubernetes.io/metadata.name\": \"edge\""));
        assert!(y.contains(
            "  - to: [{cidr: \"203.0.113.9/32\"}]\n    name: \"to-203.0.113.9-32-tcp443\""
        ));
        assert!(y.ends_with("#   a/x -> a/y UDP/53 (4 connections): explicitly denied\n"));
        let np = render_yaml(&proposal(), ProposalFormat::NetworkPolicy);
        assert!(np.contains("kind: NetworkPolicy\n"));
        assert!(np.contains("  policyTypes: [Ingress, Egress]\n"));
        assert!(np.contains("{ipBlock: {cidr: \"203.0.113.9/32\"}}"));
        assert!(!np.contains("    name:"));
        crate::load::parse_file("p.yaml", &np).unwrap();
    }
}

//! Adversarial rule shapes (issue 16): rule sets as security teams bring them, not as our
//! examples look. Each shape is one server policed by `n` rules of that shape, with clients and
//! nodes around it, and the addresses and ports worth probing (rule boundaries, inside and just
//! outside). Used by the shapes benchmark and by property tests on small instances.

use crate::labels::{LabelSelector, Labels, Operator, Requirement};
use crate::model::*;
use crate::net::Cidr;
use crate::synth::Rng;
use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// A data-centre firewall migrated rule by rule: a distinct /32 source and port per rule.
    Firewall,
    /// Overlapping port ranges over overlapping networks, allows and denies mixed.
    Ranges,
    /// Admin-tier rules over policies at every priority 0-1000, Allow/Deny/Pass, with a baseline.
    AdminLimits,
    /// A server with up to 1,000 named ports; ingress and egress rules naming them.
    NamedPorts,
    /// Nested CIDR excepts around the pod network.
    Excepts,
    /// Pod selectors with `matchExpressions` (In, NotIn, Exists, DoesNotExist).
    Expressions,
}

impl Shape {
    pub const ALL: [Shape; 6] = [
        Shape::Firewall,
        Shape::Ranges,
        Shape::AdminLimits,
        Shape::NamedPorts,
        Shape::Excepts,
        Shape::Expressions,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Shape::Firewall => "firewall",
            Shape::Ranges => "ranges",
            Shape::AdminLimits => "admin-limits",
            Shape::NamedPorts => "named-ports",
            Shape::Excepts => "excepts",
            Shape::Expressions => "expressions",
        }
    }

    pub fn parse(s: &str) -> Option<Shape> {
        Shape::ALL.into_iter().find(|x| x.name() == s)
    }
}

/// A shape instance: inventory, policies, and what to probe.
#[derive(Debug, Clone)]
pub struct ShapeScenario {
    pub inventory: Inventory,
    pub policies: Vec<Policy>,
    /// The server (on node `n1`): the endpoint the rules police.
    pub server: WorkloadKey,
    pub addresses: Vec<IpAddr>,
    pub ports: Vec<u16>,
}

const CLIENTS: usize = 24;
const APPS: [&str; 4] = ["web", "api", "batch", "cache"];
const TEAMS: [&str; 3] = ["red", "blue", "green"];

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

/// The n-th /32 of 172.16.0.0/12 (a million of them).
fn source(i: usize) -> Cidr {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(172, 16, 0, 1)) + i as u32);
    Cidr::host(IpAddr::V4(ip))
}

fn cidr(s: &str) -> Cidr {
    s.parse().expect("valid cidr")
}

fn tcp(lo: u16, hi: u16) -> PortSpec {
    PortSpec::Range {
        protocol: Protocol::Tcp,
        lo,
        hi,
    }
}

fn named_ports(n: usize) -> usize {
    n.clamp(1, 1000)
}

fn inventory(shape: Shape, n: usize) -> (Inventory, WorkloadKey) {
    let mut inv = Inventory::default();
    inv.namespaces.insert(
        "fw".into(),
        Namespace::new("fw", labels(&[("env", "prod")])),
    );
    inv.namespaces.insert(
        "ops".into(),
        Namespace::new("ops", labels(&[("env", "dev")])),
    );
    for i in 0..2u8 {
        let name = format!("n{}", i + 1);
        inv.nodes.insert(
            name.clone(),
            Node {
                name,
                labels: labels(&[("zone", ["a", "b"][i as usize])]),
                ips: vec![v4(10, 250, 0, i + 1)],
            },
        );
    }
    let ports = match shape {
        Shape::NamedPorts => (0..named_ports(n))
            .map(|i| ContainerPort {
                name: Some(format!("p{i}")),
                port: 10_000 + i as u16,
                protocol: if i % 5 == 4 {
                    Protocol::Udp
                } else {
                    Protocol::Tcp
                },
            })
            .collect(),
        _ => vec![ContainerPort {
            name: Some("http".into()),
            port: 8080,
            protocol: Protocol::Tcp,
        }],
    };
    let server = Workload {
        namespace: "fw".into(),
        name: "server".into(),
        labels: labels(&[("app", "server"), ("team", "red")]).into(),
        ips: vec![v4(10, 128, 0, 1)],
        ports,
        node: Some("n1".into()),
        host_network: false,
        owner: None,
    };
    let key = server.key();
    inv.workloads.insert(key.clone(), server.into());
    for i in 0..CLIENTS {
        let ns = if i % 4 == 3 { "ops" } else { "fw" };
        let mut l = labels(&[("app", APPS[i % 4]), ("team", TEAMS[i % 3])]);
        if i % 2 == 0 {
            l.insert("version".into(), format!("v{}", i % 3));
        }
        let w = Workload {
            namespace: ns.into(),
            name: format!("client-{i}"),
            labels: l.into(),
            ips: vec![v4(10, 128, 1, i as u8 + 1)],
            ports: vec![ContainerPort {
                name: Some(format!("p{}", i % 7)),
                port: 10_000 + (i % 7) as u16,
                protocol: Protocol::Tcp,
            }],
            node: Some(["n1", "n2"][i % 2].into()),
            host_network: false,
            owner: None,
        };
        inv.workloads.insert(w.key(), w.into());
    }
    (inv, key)
}

fn rule(
    direction: Direction,
    index: usize,
    action: Action,
    peer: Peer,
    ports: Vec<PortSpec>,
) -> Rule {
    Rule {
        direction,
        index,
        name: None,
        action,
        peers: vec![peer],
        ports,
        expires_at: None,
    }
}

fn policy(id: PolicyId, tier: Tier, priority: i32, subject: Subject, rules: Vec<Rule>) -> Policy {
    let isolates = [
        rules.iter().any(|r| r.direction == Direction::Ingress),
        rules.iter().any(|r| r.direction == Direction::Egress),
    ];
    Policy {
        id,
        tier,
        priority,
        mode: Mode::Enforce,
        expires_at: None,
        subject,
        isolates,
        rules,
    }
}

fn server_subject() -> Subject {
    Subject {
        namespaces: NamespaceMatch::Named("fw".into()),
        pods: LabelSelector::from_labels([("app", "server")]),
    }
}

/// One application-tier policy on the server with these ingress rules.
fn server_policy(name: &str, rules: Vec<Rule>) -> Policy {
    let id = PolicyId::new(Family::Policy, Some("fw"), name);
    policy(id, Tier::Application, 0, server_subject(), rules)
}

fn random_expressions(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::everything();
    for _ in 0..1 + rng.below(3) {
        let key = *rng.pick(&["app", "team", "version"]);
        let operator = *rng.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let pool: &[&str] = match key {
            "app" => &APPS,
            "team" => &TEAMS,
            _ => &["v0", "v1", "v2"],
        };
        let values = match operator {
            Operator::In | Operator::NotIn => (0..1 + rng.below(2))
                .map(|_| rng.pick(pool).to_string())
                .collect(),
            _ => Default::default(),
        };
        s.match_expressions.push(Requirement {
            key: key.into(),
            operator,
            values,
        });
    }
    s
}

/// `n` rules of the given shape around one server.
pub fn shape_scenario(shape: Shape, n: usize, seed: u64) -> ShapeScenario {
    let mut rng = Rng::new(seed);
    let (inventory, server) = inventory(shape, n);
    let mut ports: Vec<u16> = vec![0, 1, 53, 80, 8080, 65535];
    let mut addresses: Vec<IpAddr> = inventory
        .workloads
        .values()
        .flat_map(|w| w.ips.clone())
        .chain(inventory.nodes.values().flat_map(|n| n.ips.clone()))
        .collect();
    addresses.extend([v4(8, 8, 8, 8), v4(10, 7, 0, 9), v4(172, 16, 0, 1)]);
    let in_ = Direction::Ingress;
    let policies = match shape {
        Shape::Firewall => {
            let rules = (0..n)
                .map(|i| {
                    let port = 1 + ((i * 7919) % 65_000) as u16;
                    if i % (n / 16).max(1) == 0 {
                        probe_cidr(&source(i), &mut addresses);
                        probe_ports(port, port, &mut ports);
                    }
                    rule(
                        in_,
                        i,
                        Action::Allow,
                        Peer::Cidr {
                            cidr: source(i),
                            except: vec![],
                        },
                        vec![tcp(port, port)],
                    )
                })
                .collect();
            vec![server_policy("firewall", rules)]
        }
        Shape::Ranges => {
            let rules = (0..n)
                .map(|i| {
                    let net = match rng.below(3) {
                        0 => cidr(&format!("172.16.{}.0/24", rng.below(256))),
                        1 => cidr(&format!("172.{}.0.0/16", 16 + rng.below(16))),
                        _ => cidr(&format!("10.128.{}.0/24", rng.below(2))),
                    };
                    let lo = rng.below(60_000) as u16;
                    let hi = lo + rng.below(2_000) as u16;
                    if i % (n / 16).max(1) == 0 {
                        probe_cidr(&net, &mut addresses);
                        probe_ports(lo, hi, &mut ports);
                    }
                    let action = if rng.chance(20) {
                        Action::Deny
                    } else {
                        Action::Allow
                    };
                    rule(
                        in_,
                        i,
                        action,
                        Peer::Cidr {
                            cidr: net,
                            except: vec![],
                        },
                        vec![tcp(lo, hi)],
                    )
                })
                .collect();
            vec![server_policy("ranges", rules)]
        }
        Shape::AdminLimits => admin_limits(n, &mut rng, &mut ports),
        Shape::NamedPorts => {
            let k = named_ports(n);
            ports.extend((0..k.min(64)).map(|i| 10_000 + i as u16));
            let rules = (0..n)
                .map(|i| {
                    let peer = Peer::Pods {
                        namespaces: NamespaceMatch::Selector(LabelSelector::everything()),
                        pods: LabelSelector::from_labels([("team", TEAMS[i % 3])]),
                    };
                    let named = PortSpec::Named {
                        name: format!("p{}", (i * 31) % k),
                        protocol: None,
                    };
                    rule(in_, i, Action::Allow, peer, vec![named])
                })
                .collect();
            // Clients' egress names the server's ports (resolved against each destination).
            let egress = (0..n.min(1000))
                .map(|i| {
                    let peer = Peer::Pods {
                        namespaces: NamespaceMatch::Named("fw".into()),
                        pods: LabelSelector::everything(),
                    };
                    let named = PortSpec::Named {
                        name: format!("p{}", i % k),
                        protocol: Some(Protocol::Tcp),
                    };
                    rule(Direction::Egress, i, Action::Allow, peer, vec![named])
                })
                .collect();
            let clients = Subject {
                namespaces: NamespaceMatch::Selector(LabelSelector::everything()),
                pods: LabelSelector::from_labels([("app", "web")]),
            };
            let id = PolicyId::new(Family::ClusterPolicy, None, "client-egress");
            vec![
                server_policy("named", rules),
                policy(id, Tier::Application, 0, clients, egress),
            ]
        }
        Shape::Excepts => {
            let rules = (0..n)
                .map(|i| {
                    let a = (i / 2) % 256;
                    let (net, except) = match i % 3 {
                        0 => (cidr("10.0.0.0/8"), vec![cidr(&format!("10.{a}.0.0/16"))]),
                        1 => (
                            cidr(&format!("10.{a}.0.0/16")),
                            vec![cidr(&format!("10.{a}.{}.0/24", i % 256))],
                        ),
                        _ => (
                            cidr(&format!("10.{a}.{}.0/24", i % 256)),
                            vec![cidr(&format!("10.{a}.{}.{}/30", i % 256, (i * 4) % 256))],
                        ),
                    };
                    for c in std::iter::once(&net).chain(&except) {
                        if i % (n / 24).max(1) == 0 {
                            probe_cidr(c, &mut addresses);
                        }
                    }
                    let action = if i % 4 == 1 {
                        Action::Deny
                    } else {
                        Action::Allow
                    };
                    let port = 8000 + (i % 200) as u16;
                    rule(
                        in_,
                        i,
                        action,
                        Peer::Cidr { cidr: net, except },
                        vec![tcp(port, port + 10)],
                    )
                })
                .collect();
            ports.extend([8000, 8005, 8010, 8011, 8100]);
            vec![server_policy("excepts", rules)]
        }
        Shape::Expressions => {
            let rules = (0..n)
                .map(|i| {
                    let peer = Peer::Pods {
                        namespaces: NamespaceMatch::Selector(LabelSelector::everything()),
                        pods: random_expressions(&mut rng),
                    };
                    let port = 9000 + (i % 50) as u16;
                    let action = if i % 7 == 3 {
                        Action::Deny
                    } else {
                        Action::Allow
                    };
                    rule(in_, i, action, peer, vec![tcp(port, port)])
                })
                .collect();
            ports.extend([9000, 9001, 9049, 9050]);
            vec![server_policy("expressions", rules)]
        }
    };
    ports.sort_unstable();
    ports.dedup();
    addresses.sort();
    addresses.dedup();
    ShapeScenario {
        inventory,
        policies,
        server,
        addresses,
        ports,
    }
}

fn probe_cidr(c: &Cidr, addresses: &mut Vec<IpAddr>) {
    addresses.push(c.addr());
    addresses.push(c.last());
}

fn probe_ports(lo: u16, hi: u16, ports: &mut Vec<u16>) {
    ports.extend([lo.saturating_sub(1), lo, hi, hi.saturating_add(1)]);
}

/// Admin rules over policies at priorities 0-1000 (100 rules each), actions mixed, peers by
/// network and by namespace; a baseline tier that denies what is left.
fn admin_limits(n: usize, rng: &mut Rng, ports: &mut Vec<u16>) -> Vec<Policy> {
    let mut out = Vec::new();
    let per = 100;
    for (p, chunk) in (0..n).collect::<Vec<_>>().chunks(per).enumerate() {
        let rules = chunk
            .iter()
            .map(|i| {
                let peer = if rng.chance(50) {
                    Peer::Cidr {
                        cidr: cidr(&format!("10.128.{}.0/24", rng.below(2))),
                        except: vec![],
                    }
                } else {
                    Peer::Pods {
                        namespaces: NamespaceMatch::Selector(LabelSelector::from_labels([(
                            "env",
                            *rng.pick(&["prod", "dev"]),
                        )])),
                        pods: LabelSelector::everything(),
                    }
                };
                let action = *rng.pick(&[Action::Allow, Action::Deny, Action::Pass]);
                let lo = 1 + rng.below(65_000) as u16;
                let hi = lo + rng.below(300) as u16;
                if *i % 97 == 0 {
                    ports.extend([lo - 1, lo, hi, hi + 1]);
                }
                rule(
                    Direction::Ingress,
                    i - chunk[0],
                    action,
                    peer,
                    vec![tcp(lo, hi)],
                )
            })
            .collect();
        let id = PolicyId::new(Family::ClusterPolicy, None, &format!("admin-{p}"));
        let priority = (p * 37 % 1001) as i32;
        out.push(policy(id, Tier::Admin, priority, server_subject(), rules));
    }
    let deny_all = rule(Direction::Ingress, 0, Action::Deny, Peer::Any, vec![]);
    let id = PolicyId::new(Family::ClusterPolicy, None, "baseline");
    out.push(policy(
        id,
        Tier::Baseline,
        1000,
        server_subject(),
        vec![deny_all],
    ));
    out
}

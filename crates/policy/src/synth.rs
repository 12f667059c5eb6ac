//! Deterministic synthetic inventories and policy sets, for property tests and benchmarks.
//! A tiny PRNG keeps this free of dependencies and identical on every machine.

use crate::labels::{LabelSelector, Labels, Operator, Requirement};
use crate::model::*;
use crate::net::Cidr;
use std::net::{IpAddr, Ipv4Addr};

/// xorshift64*: fast, deterministic, good enough for test data.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E3779B97F4A7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545F4914F6CDD1D)
    }
    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len())]
    }
}

fn labels(pairs: &[(&str, String)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

const KEYS: [&str; 3] = ["app", "tier", "env"];
const VALUES: [&str; 3] = ["a", "b", "c"];
pub const PORT_NAMES: [&str; 2] = ["http", "dns"];

/// A small, highly varied scenario: 3 namespaces, up to 12 pods on 2 nodes, a handful of
/// policies of every family using every feature. Pod IPs 10.1.0.x; nodes 10.9.0.x.
pub fn random_scenario(rng: &mut Rng) -> (Inventory, Vec<Policy>) {
    let mut inv = Inventory::default();
    for ns in ["x", "y", "z"] {
        let mut l = Labels::new();
        if rng.chance(60) {
            l.insert("env".into(), rng.pick(&VALUES).to_string());
        }
        inv.namespaces.insert(ns.into(), Namespace::new(ns, l));
    }
    for (i, n) in ["n1", "n2"].iter().enumerate() {
        let l = labels(&[
            ("kubernetes.io/os", "linux".into()),
            ("zone", VALUES[i].into()),
        ]);
        inv.nodes.insert(
            n.to_string(),
            Node {
                name: n.to_string(),
                labels: l,
                ips: vec![IpAddr::V4(Ipv4Addr::new(10, 9, 0, i as u8 + 1))],
            },
        );
    }
    let pods = 4 + rng.below(9);
    for i in 0..pods {
        let ns = ["x", "y", "z"][rng.below(3)];
        let mut l = Labels::new();
        for k in KEYS {
            if rng.chance(70) {
                l.insert(k.into(), rng.pick(&VALUES).to_string());
            }
        }
        let mut ports = vec![ContainerPort {
            name: Some("http".into()),
            port: *rng.pick(&[80u16, 81, 8080]),
            protocol: Protocol::Tcp,
        }];
        if rng.chance(50) {
            ports.push(ContainerPort {
                name: Some("dns".into()),
                port: 53,
                protocol: *rng.pick(&[Protocol::Udp, Protocol::Tcp]),
            });
        }
        let host_network = rng.chance(8);
        let node = ["n1", "n2"][rng.below(2)];
        let ips = if host_network {
            inv.nodes[node].ips.clone()
        } else {
            vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, i as u8 + 1))]
        };
        inv.workloads.insert(
            WorkloadKey::new(ns, format!("p{i}")),
            std::sync::Arc::new(Workload {
                namespace: ns.into(),
                name: format!("p{i}"),
                labels: l.into(),
                ips,
                ports,
                node: Some(node.into()),
                host_network,
                owner: None,
            }),
        );
    }
    let npol = 1 + rng.below(6);
    let mut policies = Vec::new();
    for i in 0..npol {
        policies.push(random_policy(rng, i));
    }
    (inv, policies)
}

pub fn random_selector(rng: &mut Rng) -> LabelSelector {
    let mut s = LabelSelector::everything();
    if rng.chance(50) {
        s.match_labels
            .insert(rng.pick(&KEYS).to_string(), rng.pick(&VALUES).to_string());
    }
    if rng.chance(30) {
        let op = *rng.pick(&[
            Operator::In,
            Operator::NotIn,
            Operator::Exists,
            Operator::DoesNotExist,
        ]);
        let values = match op {
            Operator::In | Operator::NotIn => (0..1 + rng.below(2))
                .map(|_| rng.pick(&VALUES).to_string())
                .collect(),
            _ => Default::default(),
        };
        s.match_expressions.push(Requirement {
            key: rng.pick(&KEYS).to_string(),
            operator: op,
            values,
        });
    }
    s
}

fn random_peer(rng: &mut Rng, own_ns: Option<&str>) -> Peer {
    match rng.below(10) {
        0 => Peer::Any,
        1..=4 => Peer::Pods {
            namespaces: match (own_ns, rng.chance(50)) {
                (Some(ns), true) => NamespaceMatch::Named(ns.into()),
                _ => NamespaceMatch::Selector(if rng.chance(50) {
                    LabelSelector::everything()
                } else {
                    random_selector(rng)
                }),
            },
            pods: random_selector(rng),
        },
        5 => Peer::Nodes(if rng.chance(50) {
            LabelSelector::everything()
        } else {
            LabelSelector::from_labels([("zone", *rng.pick(&VALUES))])
        }),
        6 | 7 => {
            let (cidr, except): (Cidr, Vec<Cidr>) = match rng.below(4) {
                0 => (
                    "10.1.0.0/24".parse().unwrap(),
                    vec![format!("10.1.0.{}/32", 1 + rng.below(8)).parse().unwrap()],
                ),
                1 => (
                    format!("10.1.0.{}/31", 2 * rng.below(5)).parse().unwrap(),
                    vec![],
                ),
                2 => (
                    "0.0.0.0/0".parse().unwrap(),
                    vec!["10.0.0.0/8".parse().unwrap()],
                ),
                _ => ("192.0.2.0/24".parse().unwrap(), vec![]),
            };
            Peer::Cidr { cidr, except }
        }
        _ => Peer::Entity(*rng.pick(&[Entity::World, Entity::Host, Entity::Cluster, Entity::All])),
    }
}

fn random_ports(rng: &mut Rng) -> Vec<PortSpec> {
    let n = rng.below(3);
    (0..n)
        .map(|_| match rng.below(4) {
            0 => PortSpec::Range {
                protocol: Protocol::Tcp,
                lo: 80,
                hi: 80,
            },
            1 => PortSpec::Range {
                protocol: *rng.pick(&Protocol::ALL),
                lo: 50,
                hi: 90,
            },
            2 => PortSpec::Named {
                protocol: if rng.chance(50) {
                    None
                } else {
                    Some(Protocol::Tcp)
                },
                name: rng.pick(&PORT_NAMES).to_string(),
            },
            _ => PortSpec::Range {
                protocol: Protocol::Udp,
                lo: 0,
                hi: 65535,
            },
        })
        .collect()
}

/// Random DNS names for a few addresses (some outside the inventory, one perhaps a pod's,
/// whose names must not count), as an agent would learn them.
pub fn random_names(rng: &mut Rng, engine: &mut crate::Engine) {
    const NAMES: [&str; 5] = [
        "api.example.com",
        "a.b.example.com",
        "example.org",
        "other.net",
        "example.com",
    ];
    let mut addrs: Vec<std::net::IpAddr> = ["192.0.2.7", "8.8.8.8", "10.1.0.200"]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
    if let Some(w) = engine.inventory().workloads.values().next() {
        addrs.extend(w.ips.first().copied());
    }
    for ip in addrs {
        let names = (0..rng.below(3))
            .map(|_| rng.pick(&NAMES).to_string())
            .collect();
        engine.set_names(ip, names);
    }
}

/// One random policy of a random family.
pub fn random_policy(rng: &mut Rng, i: usize) -> Policy {
    let family = *rng.pick(&[
        Family::NetworkPolicy,
        Family::AdminNetworkPolicy,
        Family::BaselineAdminNetworkPolicy,
        Family::Policy,
        Family::ClusterPolicy,
        Family::ClusterNetworkPolicy,
    ]);
    let ns = ["x", "y", "z"][rng.below(3)];
    let own = family.is_namespaced().then_some(ns);
    let tier = match family {
        Family::NetworkPolicy => Tier::Application,
        Family::AdminNetworkPolicy => Tier::Admin,
        Family::BaselineAdminNetworkPolicy => Tier::Baseline,
        Family::ClusterNetworkPolicy => *rng.pick(&[Tier::Admin, Tier::Baseline]),
        _ => *rng.pick(&Tier::ALL),
    };
    let mut rules = Vec::new();
    for dir in Direction::BOTH {
        for index in 0..rng.below(3) {
            let action = match (family, tier) {
                (Family::NetworkPolicy, _) => Action::Allow,
                (_, Tier::Admin) | (Family::ClusterNetworkPolicy, _) => {
                    *rng.pick(&[Action::Allow, Action::Deny, Action::Pass])
                }
                _ => *rng.pick(&[Action::Allow, Action::Deny]),
            };
            let mut peers: Vec<Peer> = (0..1 + rng.below(2))
                .map(|_| random_peer(rng, own))
                .collect();
            // FQDN peers (CNP `domainNames`, Accept only) beside the others: they must match
            // nothing statically, in the compiler as in the evaluator.
            if family == Family::ClusterNetworkPolicy && action == Action::Allow && rng.chance(30) {
                let d = *rng.pick(&["*.example.com", "api.example.com", "example.org"]);
                peers.push(Peer::Domain(d.parse().unwrap()));
            }
            rules.push(Rule {
                direction: dir,
                index,
                name: None,
                action,
                peers,
                ports: random_ports(rng),
                expires_at: None,
            });
        }
    }
    Policy {
        id: PolicyId::new(family, own, &format!("p{i}")),
        tier,
        priority: rng.below(4) as i32,
        mode: if family.is_namespaced() || family == Family::ClusterPolicy {
            if rng.chance(20) {
                Mode::Audit
            } else {
                Mode::Enforce
            }
        } else {
            Mode::Enforce
        },
        expires_at: None,
        subject: Subject {
            namespaces: match own {
                Some(ns) => NamespaceMatch::Named(ns.into()),
                None => NamespaceMatch::Selector(if rng.chance(50) {
                    LabelSelector::everything()
                } else {
                    random_selector(rng)
                }),
            },
            pods: random_selector(rng),
        },
        isolates: [rng.chance(70), rng.chance(50)],
        rules,
    }
}

/// A cluster-scale scenario for benchmarks: `namespaces` × `apps` apps of `replicas` pods over
/// `nodes` nodes, and `policies` policies: per app a NetworkPolicy allowing its callers, plus admin
/// denies between environments, a baseline default deny, world egress by CIDR and audit policies.
pub fn scale_scenario(
    namespaces: usize,
    apps: usize,
    replicas: usize,
    nodes: usize,
    policies: usize,
) -> (Inventory, Vec<Policy>) {
    let mut rng = Rng::new(42);
    let mut inv = Inventory::default();
    for n in 0..nodes {
        let node = scale_node(n);
        inv.nodes.insert(node.name.clone(), node);
    }
    let mut idx: u32 = 0;
    for ns in 0..namespaces {
        let nsname = format!("ns-{ns}");
        let env = if ns % 3 == 0 { "dev" } else { "prod" };
        let nsl = labels(&[("team", format!("team-{}", ns % 7)), ("env", env.into())]);
        inv.namespaces
            .insert(nsname.clone(), Namespace::new(&nsname, nsl));
        for app in 0..apps {
            for r in 0..replicas {
                idx += 1;
                let node = format!("node-{}", rng.below(nodes));
                let w = scale_pod(&nsname, app, r, idx, node);
                inv.workloads.insert(w.key(), w.into());
            }
        }
    }
    let mut out = Vec::new();
    for i in 0..policies {
        let ns = format!("ns-{}", i % namespaces);
        let app = (i / namespaces) % apps;
        let caller = (app + 1 + rng.below(apps.max(2) - 1)) % apps;
        out.push(match i % 20 {
            0 => admin_deny_dev(i, app),
            1 => egress_to_world(i, &ns, app),
            _ => allow_callers(i, &ns, app, caller),
        });
    }
    (inv, out)
}

fn scale_node(n: usize) -> Node {
    Node {
        name: format!("node-{n}"),
        labels: labels(&[("kubernetes.io/os", "linux".into())]),
        ips: vec![IpAddr::V4(Ipv4Addr::new(
            10,
            250,
            (n / 250) as u8,
            (n % 250) as u8 + 1,
        ))],
    }
}

/// Replica `r` of app `app`, the `idx`-th pod of the cluster (its address is 10.128.0.0 + idx).
fn scale_pod(ns: &str, app: usize, r: usize, idx: u32, node: String) -> Workload {
    let ip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 128, 0, 0)) + idx);
    let port = |name: &str, port| ContainerPort {
        name: Some(name.into()),
        port,
        protocol: Protocol::Tcp,
    };
    Workload {
        namespace: ns.to_string(),
        name: format!("app-{app}-{r}"),
        labels: labels(&[
            ("app", format!("app-{app}")),
            ("tier", ["web", "api", "db"][app % 3].into()),
            ("version", "v1".into()),
        ])
        .into(),
        ips: vec![IpAddr::V4(ip)],
        ports: vec![port("http", 8080), port("metrics", 9090)],
        node: Some(node),
        host_network: false,
        owner: None,
    }
}

fn app_selector(app: usize) -> LabelSelector {
    LabelSelector::from_labels([("app", format!("app-{app}"))])
}

fn rule(direction: Direction, index: usize, peers: Vec<Peer>, ports: Vec<PortSpec>) -> Rule {
    Rule {
        direction,
        index,
        name: None,
        action: Action::Allow,
        peers,
        ports,
        expires_at: None,
    }
}

/// Admin tier: an app in a prod namespace takes nothing from dev namespaces.
fn admin_deny_dev(i: usize, app: usize) -> Policy {
    let env = |e: &str| NamespaceMatch::Selector(LabelSelector::from_labels([("env", e)]));
    let mut deny = rule(
        Direction::Ingress,
        0,
        vec![Peer::Pods {
            namespaces: env("dev"),
            pods: LabelSelector::everything(),
        }],
        vec![],
    );
    deny.name = Some("no-dev".into());
    deny.action = Action::Deny;
    Policy {
        id: PolicyId::new(Family::AdminNetworkPolicy, None, &format!("anp-{i}")),
        tier: Tier::Admin,
        priority: (i % 1000) as i32,
        mode: Mode::Enforce,
        expires_at: None,
        subject: Subject {
            namespaces: env("prod"),
            pods: app_selector(app),
        },
        isolates: [false, false],
        rules: vec![deny],
    }
}

/// Egress isolation: HTTPS to the world outside 10/8, and anything in the own namespace; every
/// other one in audit mode.
fn egress_to_world(i: usize, ns: &str, app: usize) -> Policy {
    let world = Peer::Cidr {
        cidr: "0.0.0.0/0".parse().unwrap(),
        except: vec!["10.0.0.0/8".parse().unwrap()],
    };
    let https = PortSpec::Range {
        protocol: Protocol::Tcp,
        lo: 443,
        hi: 443,
    };
    let own_ns = Peer::Pods {
        namespaces: NamespaceMatch::Named(ns.to_string()),
        pods: LabelSelector::everything(),
    };
    Policy {
        id: PolicyId::new(Family::Policy, Some(ns), &format!("egress-{i}")),
        tier: Tier::Application,
        priority: 100,
        mode: if i % 40 == 1 {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        expires_at: None,
        subject: Subject {
            namespaces: NamespaceMatch::Named(ns.to_string()),
            pods: app_selector(app),
        },
        isolates: [false, true],
        rules: vec![
            rule(Direction::Egress, 0, vec![world], vec![https]),
            rule(Direction::Egress, 1, vec![own_ns], vec![]),
        ],
    }
}

/// A NetworkPolicy: the app takes http (named) and metrics from its caller app and from web
/// pods of one team's namespaces.
fn allow_callers(i: usize, ns: &str, app: usize, caller: usize) -> Policy {
    let peers = vec![
        Peer::Pods {
            namespaces: NamespaceMatch::Named(ns.to_string()),
            pods: app_selector(caller),
        },
        Peer::Pods {
            namespaces: NamespaceMatch::Selector(LabelSelector::from_labels([(
                "team",
                format!("team-{}", i % 7),
            )])),
            pods: LabelSelector::from_labels([("tier", "web")]),
        },
    ];
    let ports = vec![
        PortSpec::Named {
            protocol: Some(Protocol::Tcp),
            name: "http".into(),
        },
        PortSpec::Range {
            protocol: Protocol::Tcp,
            lo: 9090,
            hi: 9090,
        },
    ];
    Policy {
        id: PolicyId::new(Family::NetworkPolicy, Some(ns), &format!("allow-{i}")),
        tier: Tier::Application,
        priority: 0,
        mode: Mode::Enforce,
        expires_at: None,
        subject: Subject {
            namespaces: NamespaceMatch::Named(ns.to_string()),
            pods: app_selector(app),
        },
        isolates: [true, false],
        rules: vec![rule(Direction::Ingress, 0, peers, ports)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenarios_are_deterministic_per_seed() {
        let (a, pa) = random_scenario(&mut Rng::new(3));
        let (b, pb) = random_scenario(&mut Rng::new(3));
        assert_eq!((a, pa), (b, pb));
        let (c, _) = random_scenario(&mut Rng::new(4));
        let (a, _) = random_scenario(&mut Rng::new(3));
        assert_ne!(a, c);
        let mut r = Rng::new(9);
        assert!((0..1000).all(|_| r.below(7) < 7));
    }

    #[test]
    fn scale_scenarios_have_the_requested_shape() {
        let (inv, policies) = scale_scenario(3, 4, 2, 5, 40);
        assert_eq!(inv.namespaces.len(), 3);
        assert_eq!(inv.workloads.len(), 3 * 4 * 2);
        assert_eq!(inv.nodes.len(), 5);
        assert_eq!(policies.len(), 40);
        assert_eq!((inv, policies), scale_scenario(3, 4, 2, 5, 40));
    }
}

//! Property tests: compiled node tables agree with the evaluator on random scenarios, and
//! incremental compilation equals a fresh full compile after random changes.

use cellwall_policy::compile::{Compiler, EntryVerdict};
use cellwall_policy::synth::{random_names, random_policy, random_scenario, random_selector, Rng};
use cellwall_policy::*;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

/// Per label identity (by content, not by number), the policies that apply to it per direction.
type IdentityPolicies = BTreeMap<(String, Labels, Labels), [Vec<PolicyId>; 2]>;

fn applicable_by_labels(e: &Engine) -> IdentityPolicies {
    e.identities()
        .map(|i| {
            let per_dir =
                Direction::BOTH.map(|d| e.applicable(i.id, d).map(|p| p.id.clone()).collect());
            (
                (
                    i.namespace.clone(),
                    i.namespace_labels.clone(),
                    i.labels.clone(),
                ),
                per_dir,
            )
        })
        .collect()
}

fn addresses(inv: &Inventory) -> Vec<IpAddr> {
    let mut a: Vec<IpAddr> = inv.workloads.values().flat_map(|w| w.ips.clone()).collect();
    a.extend(inv.nodes.values().flat_map(|n| n.ips.clone()));
    a.push(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
    a.push(IpAddr::V4(Ipv4Addr::new(8, 8, 8, 8)));
    a.push(IpAddr::V4(Ipv4Addr::new(10, 1, 0, 200)));
    a.sort();
    a.dedup();
    a
}

fn check_agreement(engine: &Engine, np: &NodePolicy, rng: &mut Rng, flows: usize) -> usize {
    let addrs = addresses(engine.inventory());
    let mut checked = 0;
    for _ in 0..flows {
        let src = *rng.pick(&addrs);
        let dst = *rng.pick(&addrs);
        let proto = *rng.pick(&Protocol::ALL);
        let port = *rng.pick(&[53u16, 80, 81, 82, 90, 443, 8080, 1]);
        let flow = Flow {
            src,
            dst,
            protocol: proto,
            port,
        };
        let d = engine.evaluate(&flow);
        let (eg, ing) = np.decide(src, dst, proto, port);
        let local = |ip: IpAddr| np.endpoints.values().any(|e| e.ips.contains(&ip));
        let audit = d.audit.unwrap_or(cellwall_policy::engine::AuditOutcome {
            allowed: d.allowed,
            egress: d.egress,
            ingress: d.ingress,
        });
        if local(src) {
            let want = EntryVerdict {
                allow: d.egress.allowed,
                rule: d.egress.rule,
                audit_allow: audit.egress.allowed,
                audit_rule: audit.egress.rule,
            };
            assert_eq!(eg, want, "egress {flow:?}\n{:#?}", engine.explain(&flow));
            checked += 1;
        }
        if local(dst) {
            let want = EntryVerdict {
                allow: d.ingress.allowed,
                rule: d.ingress.rule,
                audit_allow: audit.ingress.allowed,
                audit_rule: audit.ingress.rule,
            };
            assert_eq!(ing, want, "ingress {flow:?}\n{:#?}", engine.explain(&flow));
            checked += 1;
        }
    }
    checked
}

#[test]
fn compiled_tables_agree_with_evaluate() {
    let mut checked = 0;
    for seed in 0..1000 {
        let mut rng = Rng::new(seed);
        let (inv, pols) = random_scenario(&mut rng);
        let mut engine = Engine::build(inv, pols, 0);
        random_names(&mut rng, &mut engine);
        for node in ["n1", "n2"] {
            let np = Compiler::new(node).full(&engine);
            checked += check_agreement(&engine, &np, &mut rng, 60);
        }
    }
    assert!(checked > 10_000, "only {checked} verdicts checked");
}

#[test]
fn incremental_equals_full() {
    for seed in 0..600 {
        let mut rng = Rng::new(1000 + seed);
        let (inv, pols) = random_scenario(&mut rng);
        let mut engine = Engine::build(inv, pols, 0);
        let mut comp = Compiler::new("n1");
        comp.full(&engine);
        for step in 0..8 {
            match rng.below(7) {
                6 => random_names(&mut rng, &mut engine),
                0 => {
                    // Relabel a pod.
                    let keys: Vec<WorkloadKey> =
                        engine.inventory().workloads.keys().cloned().collect();
                    let mut w = Workload::clone(&engine.inventory().workloads[rng.pick(&keys)]);
                    w.labels = random_selector(&mut rng).match_labels.into();
                    engine.set_workload(w);
                }
                1 => {
                    let i = rng.below(8);
                    let p = random_policy(&mut rng, i);
                    engine.set_policy(p);
                }
                2 => {
                    let ids: Vec<PolicyId> = engine.policies().map(|p| p.id.clone()).collect();
                    if !ids.is_empty() {
                        let id = rng.pick(&ids).clone();
                        engine.remove_policy(&id);
                    }
                }
                3 => {
                    let ns = ["x", "y", "z"][rng.below(3)];
                    let mut l = Labels::new();
                    l.insert("env".into(), ["a", "b"][rng.below(2)].into());
                    engine.set_namespace(Namespace::new(ns, l));
                }
                4 => {
                    let keys: Vec<WorkloadKey> =
                        engine.inventory().workloads.keys().cloned().collect();
                    let k = rng.pick(&keys).clone();
                    engine.remove_workload(&k);
                }
                _ => {
                    let keys: Vec<WorkloadKey> =
                        engine.inventory().workloads.keys().cloned().collect();
                    let mut w = Workload::clone(&engine.inventory().workloads[rng.pick(&keys)]);
                    w.name = format!("new{step}");
                    w.ips = vec![IpAddr::V4(Ipv4Addr::new(10, 1, 0, 100 + step as u8))];
                    w.node = Some("n1".into());
                    w.host_network = false;
                    engine.set_workload(w);
                }
            }
            let changes = engine.take_changes();
            let inc = comp.update(&engine, &changes);
            let full = Compiler::new("n1").full(&engine);
            assert_eq!(
                inc.endpoints, full.endpoints,
                "seed {seed} step {step}: endpoint tables differ"
            );
            assert_eq!(
                inc.ipcache, full.ipcache,
                "seed {seed} step {step}: ipcache differs"
            );
            check_agreement(&engine, &inc, &mut rng, 20);
            // The engine's index after these changes is the one a fresh build makes.
            // (Names are the agent's, not the model's: a fresh build has none.)
            let rebuilt = Engine::build(
                engine.inventory().clone(),
                engine.policies().cloned().collect::<Vec<_>>(),
                engine.now(),
            );
            assert_eq!(
                applicable_by_labels(&engine),
                applicable_by_labels(&rebuilt),
                "seed {seed} step {step}: policy index differs from a fresh build"
            );
        }
    }
}

/// Two workloads on one address (a reused IP, a stale record): the compiler's shortcut from a
/// peer's representative address to the engine's record must not pick up the other workload.
#[test]
fn shared_addresses_compile_like_full() {
    for seed in 0..300 {
        let mut rng = Rng::new(5000 + seed);
        let (inv, pols) = random_scenario(&mut rng);
        let mut engine = Engine::build(inv, pols, 0);
        let mut comp = Compiler::new("n1");
        comp.full(&engine);
        let pods: Vec<Workload> = engine
            .inventory()
            .workloads
            .values()
            .filter(|w| !w.host_network)
            .map(|w| Workload::clone(w))
            .collect();
        if pods.is_empty() {
            continue;
        }
        let mut twin = rng.pick(&pods).clone();
        twin.name = "twin".into();
        twin.labels = random_selector(&mut rng).match_labels.into();
        twin.node = Some(["n1", "n2"][rng.below(2)].into());
        let key = twin.key();
        for step in 0..3 {
            match step {
                0 => engine.set_workload(twin.clone()),
                1 => {
                    // A pod (perhaps the twin's original) is relabelled; the twin keeps the address.
                    let mut w = rng.pick(&pods).clone();
                    w.labels = random_selector(&mut rng).match_labels.into();
                    engine.set_workload(w);
                }
                _ => engine.remove_workload(&key),
            }
            let changes = engine.take_changes();
            let inc = comp.update(&engine, &changes);
            let full = Compiler::new("n1").full(&engine);
            // Only the tables: which workload's identity a shared address resolves to in the
            // ipcache depends on the order they were bound (not settled for shared addresses).
            assert_eq!(
                inc.endpoints, full.endpoints,
                "seed {seed} step {step}: endpoint tables differ"
            );
        }
    }
}

#[test]
fn compile_is_deterministic() {
    let mut rng = Rng::new(7);
    let (inv, pols) = random_scenario(&mut rng);
    let mut rev = pols.clone();
    rev.reverse();
    let a = compile(inv.clone(), pols, "n1", 0);
    let b = compile(inv, rev, "n1", 0);
    assert_eq!(
        serde_json::to_string(&a).unwrap(),
        serde_json::to_string(&b).unwrap()
    );
}

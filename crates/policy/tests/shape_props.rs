//! Property tests on small instances of every adversarial shape (issue 16): the compiled tables
//! of both nodes decide every probed (source, destination, protocol, port) exactly as
//! `Engine::evaluate` does, and after a one-rule change the incremental compile equals a full one.

use cellwall_policy::compile::{Compiler, EntryVerdict};
use cellwall_policy::shapes::{shape_scenario, Shape, ShapeScenario};
use cellwall_policy::synth::Rng;
use cellwall_policy::*;
use std::net::IpAddr;

/// Checks `flows` random probes (rule boundaries and just outside them) whose either end is local
/// to the node; returns the verdicts checked.
fn agree(engine: &Engine, np: &NodePolicy, sc: &ShapeScenario, flows: usize, what: &str) -> usize {
    let locals: Vec<IpAddr> = np
        .endpoints
        .values()
        .flat_map(|e| e.ips.iter().copied())
        .collect();
    if locals.is_empty() {
        return 0;
    }
    let local = |ip: IpAddr| locals.contains(&ip);
    let mut rng = Rng::new(flows as u64);
    let mut checked = 0;
    for i in 0..flows {
        let (mut src, mut dst) = (*rng.pick(&sc.addresses), *rng.pick(&locals));
        if i % 2 == 1 {
            std::mem::swap(&mut src, &mut dst);
        }
        let flow = Flow {
            src,
            dst,
            protocol: *rng.pick(&[Protocol::Tcp, Protocol::Udp]),
            port: *rng.pick(&sc.ports),
        };
        let d = engine.evaluate(&flow);
        let (eg, ing) = np.decide(src, dst, flow.protocol, flow.port);
        let audit = d.audit.as_ref();
        let want = |v: &DirVerdict, a: Option<&DirVerdict>| EntryVerdict {
            allow: v.allowed,
            rule: v.rule,
            audit_allow: a.unwrap_or(v).allowed,
            audit_rule: a.unwrap_or(v).rule,
        };
        if local(src) {
            let w = want(&d.egress, audit.map(|a| &a.egress));
            assert_eq!(eg, w, "{what}: egress {flow:?}");
            checked += 1;
        }
        if local(dst) {
            let w = want(&d.ingress, audit.map(|a| &a.ingress));
            assert_eq!(ing, w, "{what}: ingress {flow:?}");
            checked += 1;
        }
    }
    checked
}

#[test]
fn every_shape_compiles_to_what_evaluate_decides() {
    for shape in Shape::ALL {
        let mut checked = 0;
        for (seed, n) in (0..16).map(|i| (i, [3, 12, 40, 150][i as usize % 4])) {
            let sc = shape_scenario(shape, n, seed);
            let engine = Engine::build(sc.inventory.clone(), sc.policies.clone(), 0);
            for node in ["n1", "n2"] {
                let np = Compiler::new(node).full(&engine);
                let what = format!("{} n={n} seed={seed} node={node}", shape.name());
                checked += agree(&engine, &np, &sc, 4_000, &what);
            }
        }
        assert!(checked > 5_000, "{}: only {checked} verdicts", shape.name());
    }
}

#[test]
fn one_rule_changed_compiles_incrementally_like_full() {
    for shape in Shape::ALL {
        for seed in 0..4 {
            let sc = shape_scenario(shape, 60, 100 + seed);
            let mut engine = Engine::build(sc.inventory.clone(), sc.policies.clone(), 0);
            let mut comp = Compiler::new("n1");
            comp.full(&engine);
            let mut rng = Rng::new(seed);
            for step in 0..4 {
                let mut p = rng.pick(&sc.policies).clone();
                let r = rng.below(p.rules.len());
                let lo = rng.below(60_000) as u16;
                p.rules[r].ports = vec![PortSpec::Range {
                    protocol: Protocol::Tcp,
                    lo,
                    hi: lo + rng.below(100) as u16,
                }];
                if step == 1 {
                    p.rules[r].action = match p.rules[r].action {
                        Action::Allow => Action::Deny,
                        _ => Action::Allow,
                    };
                }
                if step == 2 {
                    p.rules[r].peers = vec![Peer::Cidr {
                        cidr: "10.128.1.0/28".parse().unwrap(),
                        except: vec!["10.128.1.4/30".parse().unwrap()],
                    }];
                }
                engine.set_policy(p);
                let changes = engine.take_changes();
                let inc = comp.update(&engine, &changes);
                let full = Compiler::new("n1").full(&engine);
                let what = format!("{} seed={seed} step={step}", shape.name());
                assert_eq!(inc.endpoints, full.endpoints, "{what}: tables differ");
                assert_eq!(inc.ipcache, full.ipcache, "{what}: ipcache differs");
                agree(&engine, &inc, &sc, 1_000, &what);
            }
        }
    }
}

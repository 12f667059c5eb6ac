//! The manifest loader, and everything a user's YAML reaches after it.
//!
//! Input: manifest text (bytes read as UTF-8, invalid sequences replaced). Read as YAML, and
//! also as a `.json` file when it looks like JSON.
//!
//! Asserts:
//! - no panic, no hang (libFuzzer's timeout);
//! - an error names the file and a position inside the input (line 1..=lines+1, column >= 1),
//!   and so does every unknown-kind report; objects name the document they came from;
//! - what parses assembles (`cellwall_manifests::assemble`) or is refused with an error; what
//!   assembles crosses the wire unchanged: the model's JSON (a snapshot) reads back equal;
//! - the engine built from it and the tables compiled for each node agree with the evaluator on
//!   flows between every pair of addresses (what an agent enforces is what `explain` says).

#![no_main]

use cellwall_policy::compile::{Compiler, EntryVerdict};
use cellwall_policy::engine::AuditOutcome;
use cellwall_policy::load::{parse_file, LoadError, Located};
use cellwall_policy::{Cidr, Engine, Flow, Protocol};
use cellwall_proto::StateDoc;
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeSet;
use std::net::IpAddr;

/// Fixed "now" (Unix ms) for expiry: 2026-06-01.
const NOW: i64 = 1_780_272_000_000;

/// Lines as YAML counts them: `\r\n`, `\n` and a lone `\r` each end one.
fn line_count(text: &str) -> usize {
    let b = text.as_bytes();
    let breaks = (0..b.len())
        .filter(|&i| b[i] == b'\n' || (b[i] == b'\r' && b.get(i + 1) != Some(&b'\n')))
        .count();
    breaks + 1
}

fn check_position(e: &LoadError, name: &str, text: &str) {
    let lines = line_count(text) + 1;
    assert_eq!(e.file, name, "{e}");
    assert!(e.to_string().starts_with(name), "{e}");
    assert!(
        e.line >= 1 && e.line <= lines,
        "line {} outside 1..={lines}: {e}",
        e.line
    );
    assert!(e.column >= 1, "column 0: {e}");
    assert!(!e.message.is_empty(), "empty message: {e:?}");
}

fn load(name: &str, text: &str) -> Option<Vec<Located>> {
    match parse_file(name, text) {
        Err(e) => {
            check_position(&e, name, text);
            assert!(!e.unknown_kind, "an unknown kind is not a hard error: {e}");
            None
        }
        Ok(p) => {
            for u in &p.unknown {
                check_position(u, name, text);
                assert!(u.unknown_kind, "{u}");
            }
            let lines = line_count(text);
            for o in &p.objects {
                assert_eq!(o.source.file, name);
                assert!(o.source.document >= 1);
                assert!(
                    o.source.line >= 1 && o.source.line <= lines + 1,
                    "{} starts at line {} of {lines}",
                    o.object.describe(),
                    o.source.line
                );
            }
            Some(p.objects)
        }
    }
}

/// The compiled tables of each node against the evaluator, on flows between the model's
/// addresses and two outside ones.
fn check_compiled(engine: &Engine) {
    let inv = engine.inventory();
    let mut addrs: BTreeSet<IpAddr> = inv.workloads.values().flat_map(|w| w.ips.clone()).collect();
    addrs.extend(inv.nodes.values().flat_map(|n| n.ips.clone()));
    // An address two parties claim (a pod's that is also a node's, a hostNetwork pod's) is
    // ambiguous by construction: the evaluator and the tables may each pick one owner.
    let mut claims: Vec<IpAddr> = inv
        .workloads
        .values()
        .flat_map(|w| w.ips.clone())
        .chain(inv.nodes.values().flat_map(|n| n.ips.clone()))
        .collect();
    claims.sort();
    if claims.windows(2).any(|w| w[0] == w[1]) {
        return;
    }
    addrs.insert("192.0.2.7".parse().unwrap());
    addrs.insert("2001:db8::7".parse().unwrap());
    let addrs: Vec<IpAddr> = addrs.into_iter().take(10).collect();
    let mut nodes: BTreeSet<String> = inv
        .workloads
        .values()
        .filter_map(|w| w.node.clone())
        .collect();
    nodes.extend(inv.nodes.keys().cloned());
    let ports = [53u16, 80, 443, 8080, 1, 65535];
    for node in nodes.iter().take(3) {
        let np = Compiler::new(node).full(engine);
        let local = |ip: IpAddr| np.endpoints.values().any(|e| e.ips.contains(&ip));
        let mut i = 0usize;
        for &src in &addrs {
            for &dst in &addrs {
                i += 1;
                let protocol = Protocol::ALL[i % Protocol::ALL.len()];
                let port = ports[i % ports.len()];
                let flow = Flow {
                    src,
                    dst,
                    protocol,
                    port,
                };
                let d = engine.evaluate(&flow);
                let (eg, ing) = np.decide(src, dst, protocol, port);
                let audit = d.audit.unwrap_or(AuditOutcome {
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
                    assert_eq!(
                        eg,
                        want,
                        "node {node} egress {flow:?}\n{:#?}",
                        engine.explain(&flow)
                    );
                }
                if local(dst) {
                    let want = EntryVerdict {
                        allow: d.ingress.allowed,
                        rule: d.ingress.rule,
                        audit_allow: audit.ingress.allowed,
                        audit_rule: audit.ingress.rule,
                    };
                    assert_eq!(
                        ing,
                        want,
                        "node {node} ingress {flow:?}\n{:#?}",
                        engine.explain(&flow)
                    );
                }
                // explain walks the same code as evaluate.
                if i.is_multiple_of(7) {
                    assert_eq!(engine.explain(&flow).decision, d, "{flow:?}");
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut objects = load("fuzz.yaml", &text);
    let t = text.trim_start();
    if t.starts_with('{') || t.starts_with('[') {
        if let Some(json) = load("fuzz.json", &text) {
            objects = Some(json);
        }
    }
    let Some(objects) = objects else { return };
    let pool: Cidr = cellwall_manifests::DEFAULT_POD_POOL.parse().unwrap();
    let Ok(a) = cellwall_manifests::assemble(objects, pool) else {
        return;
    };
    for w in a.inventory.workloads.values() {
        assert!(
            !w.ips.is_empty() || w.host_network,
            "{} has no address",
            w.key()
        );
    }
    // The wire form of the model (a snapshot) reads back as the same model.
    let doc = StateDoc::new(&a.inventory, &a.policies);
    let back = StateDoc::from_json(&doc.to_json()).expect("a snapshot reads back");
    assert_eq!(back, doc);
    let engine = Engine::build(a.inventory, a.policies, NOW);
    check_compiled(&engine);
});

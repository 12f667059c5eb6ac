//! Engine benchmarks at cluster scale (10,000 pods, 1,000 policies), with the goals of the policy
//! engine issue checked: full compile < 1 s, incremental relabel / policy change < 10 ms,
//! evaluate < 1 µs per flow. Exits non-zero when a goal is missed. Run:
//!   cargo bench -p cellwall-policy --bench engine
//! Results are written down in docs/benchmarks.md.

use cellwall_policy::synth::{scale_scenario, Rng};
use cellwall_policy::*;
use std::time::{Duration, Instant};

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (namespaces, apps, replicas, nodes, policies) = (50, 20, 10, 20, 1000);
    let (inv, pols) = scale_scenario(namespaces, apps, replicas, nodes, policies);
    println!(
        "scenario: {} pods, {} namespaces, {} nodes, {} policies",
        inv.workloads.len(),
        namespaces,
        nodes,
        pols.len()
    );
    let mut failures = Vec::new();
    // On shared CI machines, a result between the goal and goal x factor is reported but does
    // not fail; past it, it does. Locally (no factor) the goal itself is the limit.
    let factor: f64 = std::env::var("CELLWALL_BENCH_NOISE_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let mut goal = |name: &str, got: Duration, limit: Duration| {
        let hard = limit.mul_f64(factor);
        let verdict = if got <= limit {
            "OK"
        } else if got <= hard {
            "MISSED (within the noise band)"
        } else {
            "MISSED"
        };
        println!("  goal {name}: {got:?} (limit {limit:?}) {verdict}");
        if got > hard {
            failures.push(name.to_string());
        }
    };

    // Index build.
    let t = Instant::now();
    let mut engine = Engine::build(inv.clone(), pols.clone(), 0);
    let build = t.elapsed();
    println!(
        "engine build (index {} identities): {build:?}",
        engine.identities().count()
    );

    let only_eval = std::env::var("CELLWALL_BENCH_ONLY").is_ok_and(|v| v == "evaluate");
    // Full compile of one node, and of every node.
    let runs = if quick || only_eval { 1 } else { 5 };
    let mut full = Vec::new();
    let mut np = None;
    for _ in 0..runs {
        let t = Instant::now();
        let mut c = Compiler::new("node-0");
        np = Some(c.full(&engine));
        full.push(t.elapsed());
    }
    let np = np.unwrap();
    let full_med = percentile(&mut full, 0.5);
    println!(
        "full compile node-0 ({} local endpoints, {} table entries, {} ipcache entries): median {full_med:?}",
        np.endpoints.len(),
        np.entry_count(),
        np.ipcache.len()
    );
    let t = Instant::now();
    let mut entries = 0;
    for n in 0..if only_eval { 0 } else { nodes } {
        entries += Compiler::new(&format!("node-{n}"))
            .full(&engine)
            .entry_count();
    }
    let all_nodes = t.elapsed();
    println!("full compile of all {nodes} nodes ({entries} entries): {all_nodes:?}");
    let t = Instant::now();
    let whole = compile(inv.clone(), pols.clone(), "node-0", 0);
    let whole_t = t.elapsed();
    assert_eq!(whole.endpoints.len(), np.endpoints.len());
    println!("compile(inventory, policies, node) from scratch incl. indexing: {whole_t:?}");
    goal("full compile < 1 s", whole_t, Duration::from_secs(1));

    if only_eval {
        evaluate_bench(&engine, quick, &mut goal);
        return;
    }
    // Incremental relabel: a node-0 pod changes app.
    let mut comp = Compiler::new("node-0");
    comp.full(&engine);
    engine.take_changes();
    let local: Vec<WorkloadKey> = engine
        .inventory()
        .workloads
        .values()
        .filter(|w| w.node.as_deref() == Some("node-0"))
        .map(|w| w.key())
        .collect();
    let mut rng = Rng::new(9);
    let mut relabel = Vec::new();
    let iters = if only_eval {
        1
    } else if quick {
        20
    } else {
        200
    };
    for i in 0..iters {
        let k = rng.pick(&local).clone();
        let mut w = engine.inventory().workloads[&k].clone();
        w.labels.insert("app".into(), format!("app-{}", i % apps));
        let t = Instant::now();
        engine.set_workload(w);
        let ch = engine.take_changes();
        let out = comp.update(&engine, &ch);
        relabel.push(t.elapsed());
        std::hint::black_box(out);
    }
    let (r50, r99) = (
        percentile(&mut relabel, 0.5),
        percentile(&mut relabel, 0.99),
    );
    println!("incremental relabel (engine + node compile): p50 {r50:?} p99 {r99:?}");
    goal(
        "incremental relabel p50 < 10 ms",
        r50,
        Duration::from_millis(10),
    );

    // Incremental policy change: one NetworkPolicy's port changes.
    let np_ids: Vec<Policy> = engine
        .policies()
        .filter(|p| p.id.family == Family::NetworkPolicy)
        .cloned()
        .collect();
    let mut change = Vec::new();
    for i in 0..iters {
        let mut p = rng.pick(&np_ids).clone();
        if let Some(r) = p.rules.first_mut() {
            r.ports = vec![PortSpec::Range {
                protocol: Protocol::Tcp,
                lo: 9000 + i as u16,
                hi: 9000 + i as u16,
            }];
        }
        let t = Instant::now();
        engine.set_policy(p);
        let ch = engine.take_changes();
        let out = comp.update(&engine, &ch);
        change.push(t.elapsed());
        std::hint::black_box(out);
    }
    let (c50, c99) = (percentile(&mut change, 0.5), percentile(&mut change, 0.99));
    println!("incremental policy change (engine + node compile): p50 {c50:?} p99 {c99:?}");
    goal(
        "incremental policy change p50 < 10 ms",
        c50,
        Duration::from_millis(10),
    );

    evaluate_bench(&engine, quick, &mut goal);
    if !failures.is_empty() {
        eprintln!("benchmark goals missed: {}", failures.join(", "));
        std::process::exit(1);
    }
}

fn evaluate_bench(engine: &Engine, quick: bool, goal: &mut dyn FnMut(&str, Duration, Duration)) {
    let mut rng = Rng::new(11);
    let ips: Vec<std::net::IpAddr> = engine
        .inventory()
        .workloads
        .values()
        .map(|w| w.ips[0])
        .collect();
    let n = if quick { 200_000 } else { 2_000_000 };
    let flows: Vec<Flow> = (0..4096)
        .map(|_| Flow {
            src: *rng.pick(&ips),
            dst: *rng.pick(&ips),
            protocol: Protocol::Tcp,
            port: *rng.pick(&[8080u16, 9090, 443, 22]),
        })
        .collect();
    let t = Instant::now();
    let mut allowed = 0usize;
    for i in 0..n {
        if engine.evaluate(&flows[i & 4095]).allowed {
            allowed += 1;
        }
    }
    let per = t.elapsed() / n as u32;
    println!("evaluate: {per:?} per flow over {n} flows ({allowed} allowed)");
    goal("evaluate < 1 µs per flow", per, Duration::from_micros(1));
}

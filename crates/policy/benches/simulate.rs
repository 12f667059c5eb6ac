//! Simulation at scale: 1,000,000 aggregated historical flows of a 10,000-pod, 1,000-policy
//! cluster replayed against the policies in force and a candidate (the same set minus 100
//! policies), plus the map and a proposal from the same history, grouped by the app label and
//! by `auto` side by side. Goals: the replay in seconds (< 10 s), and `auto` grouping's propose
//! within 2x of the app label's (both fail past CELLWALL_BENCH_NOISE_FACTOR times that). Run:
//!   cargo bench -p cellwall-policy --bench simulate [-- --flows N]
//! Results are written down in docs/benchmarks.md.

use cellwall_policy::discover::{
    dependency_map, propose, simulate, Endpoint, GroupBy, Grouping, HistFlow, Observed,
    ProposeOptions, Replay,
};
use cellwall_policy::synth::{scale_scenario, Rng};
use cellwall_policy::*;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let factor: f64 = std::env::var("CELLWALL_BENCH_NOISE_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1.0);
    let (inv, pols) = scale_scenario(50, 20, 10, 20, 1000);
    let pods: Vec<&Workload> = inv
        .workloads
        .values()
        .filter(|w| !w.host_network)
        .map(|w| &**w)
        .collect();
    let t = Instant::now();
    let flows = history(&pods, n);
    println!(
        "history: {} aggregated flows over {} pods, {} policies (generated in {:?})",
        flows.len(),
        pods.len(),
        pols.len(),
        t.elapsed()
    );
    let t = Instant::now();
    let replay = Replay::new(&inv, &flows);
    let current = replay.engine(pols.clone(), 0);
    let candidate = replay.engine(pols[100..].to_vec(), 0);
    let setup = t.elapsed();
    let t = Instant::now();
    let mut steps = 0;
    let (summary, rows) = simulate(&replay, &current, &candidate, &flows, |_, _| steps += 1);
    let replay_time = t.elapsed();
    println!("replay setup (stand-ins, two engines): {setup:?}");
    println!(
        "simulate: {replay_time:?} for {} flows ({:.0} ns/flow, {} progress reports, {} detail rows)",
        summary.flows,
        replay_time.as_nanos() as f64 / summary.flows as f64,
        steps,
        rows.len()
    );
    for (c, (f, conns)) in &summary.classes {
        println!("  {c:?}: {f} flows, {conns} connections");
    }
    let ratio = map_and_proposal(&flows, &current);
    if ratio > 2.0 * factor {
        eprintln!("FAIL: behaviour-aware grouping made propose {ratio:.2}x slower (goal < 2x)");
        std::process::exit(1);
    }
    let limit = Duration::from_secs(10);
    let total = setup + replay_time;
    let hard = limit.mul_f64(factor);
    println!("goal: replay of {n} flows < {limit:?}: {total:?}");
    if total > hard {
        eprintln!("FAIL: simulation took {total:?}, past {hard:?}");
        std::process::exit(1);
    }
}

/// `n` aggregated flows between random pods on common ports, one in seven denied.
fn history(pods: &[&Workload], n: usize) -> Vec<HistFlow> {
    let mut rng = Rng::new(9);
    let ports = [80u16, 443, 5432, 6379, 8080, 9090];
    let ep = |w: &Workload| Endpoint::Workload {
        namespace: w.namespace.clone(),
        name: w.name.clone(),
        labels: Labels::clone(&w.labels),
    };
    (0..n)
        .map(|i| {
            let (s, d) = (*rng.pick(pods), *rng.pick(pods));
            HistFlow {
                src: ep(s),
                dst: ep(d),
                protocol: Protocol::Tcp,
                port: *rng.pick(&ports),
                observed: if i % 7 == 0 {
                    Observed::Denied
                } else {
                    Observed::Allowed
                },
                rule: None,
                connections: 1 + (i % 50) as u64,
                first_ns: i as u64,
                last_ns: i as u64 + 1000,
            }
        })
        .collect()
}

/// The dependency map and a proposal from the same history (timed, no goal).
/// Returns how much slower propose is with `--group-by auto` than with the app label alone
/// (the first round's grouping).
fn map_and_proposal(flows: &[HistFlow], current: &Engine) -> f64 {
    for by in [GroupBy::App, GroupBy::Auto] {
        let t = Instant::now();
        let map = dependency_map(flows, &Grouping::build(flows, current.inventory(), &by));
        println!(
            "map (group by {by}): {:?}, {} nodes, {} edges",
            t.elapsed(),
            map.nodes.len(),
            map.edges.len()
        );
    }
    let mut took = Vec::new();
    for by in [GroupBy::App, GroupBy::Auto] {
        let t = Instant::now();
        let opts = ProposeOptions {
            group_by: by.clone(),
            ..Default::default()
        };
        let p = propose(flows, current, &opts);
        took.push(t.elapsed());
        println!(
            "propose (group by {by}): {:?}, {} groups, {} policies, {} excluded",
            t.elapsed(),
            p.groups.len(),
            p.policies.len(),
            p.excluded.len()
        );
    }
    let ratio = took[1].as_secs_f64() / took[0].as_secs_f64();
    println!(
        "behaviour-aware grouping costs {ratio:.2}x the app-label grouping's propose (goal < 2x)"
    );
    ratio
}

//! An agent's memory at cluster scale (issue 16: < 250 MiB at 100,000 workloads × 10,000
//! policies): the real `NodeAgent` (engine, compiler, tables) on the in-memory datapath, fed the
//! snapshot a manager sends, in a child process of its own so that its resident size is the
//! agent's and nothing the scenario generator left behind.
//!   cargo bench -p cellwall-agent --bench memory [-- --scale 10k|100k]
//! Prints the child's resident size after decoding the snapshot and after enforcing it, and the
//! peak; numbers in docs/benchmarks.md. Reported, not gated (scripts/test.sh does not run it).

use cellwall_agent::{EndpointsFile, LocalEndpoint, NodeAgent};
use cellwall_datapath::FakeDatapath;
use cellwall_policy::synth::scale_scenario;
use cellwall_proto::{DesiredState, Payload, StateDoc};
use std::time::Instant;

const NODE: &str = "node-0";

/// This process's resident size now and at peak, MiB.
fn rss_mib() -> (f64, f64) {
    let p = cellwall_testkit::proc::read(std::process::id());
    (p.rss_kib as f64 / 1024.0, p.hwm_kib as f64 / 1024.0)
}

fn decode(path: &str) -> StateDoc {
    let bytes = std::fs::read(path).expect("snapshot file");
    let msg = DesiredState {
        state_json: bytes.into(),
        deflate: true,
        version: 1,
        ..Default::default()
    };
    match msg.payload().expect("the snapshot decodes") {
        Payload::Snapshot(doc) => doc,
        _ => panic!("not a snapshot"),
    }
}

/// Where it goes: the same pieces built one at a time (the decoded model, the engine with its
/// own inventory, the compiled node policy, the flattened tables).
fn stages(path: &str) {
    let mut at = vec![("base", rss_mib().0)];
    let doc = decode(path);
    at.push(("model", rss_mib().0));
    let engine = cellwall_policy::Engine::build(doc.inventory(), doc.policies.clone(), 0);
    at.push(("engine", rss_mib().0));
    let np = cellwall_policy::Compiler::new(NODE).full(&engine);
    at.push(("compiled", rss_mib().0));
    let d = cellwall_datapath::Desired::from_node_policy(&np, |_| 0);
    at.push(("tables", rss_mib().0));
    let line: Vec<String> = at
        .windows(2)
        .map(|w| format!("{} +{:.0}", w[1].0, w[1].1 - w[0].1))
        .collect();
    println!("STAGES {}", line.join(", "));
    std::hint::black_box((&doc, &engine, &np, &d));
}

/// The agent's side: decode the snapshot file, enforce it, report.
fn child(path: &str) {
    let base = rss_mib().0;
    let t = Instant::now();
    let doc = decode(path);
    let decoded = rss_mib().0;
    let endpoints = doc
        .workloads
        .iter()
        .filter(|w| w.node.as_deref() == Some(NODE))
        .enumerate()
        .map(|(i, w)| LocalEndpoint {
            key: w.key().to_string(),
            ips: w.ips.clone(),
            interface: format!("veth{i}"),
            ifindex: i as u32 + 10,
            nic: false,
            node: Some(NODE.into()),
        })
        .collect();
    let discovery = EndpointsFile {
        nodes: vec![NODE.into()],
        endpoints,
    };
    let mut agent = NodeAgent::new(FakeDatapath::default(), discovery, NODE, false).expect("agent");
    let applied = agent.apply(&doc, 0).expect("enforce the snapshot");
    drop(doc);
    let took = t.elapsed();
    let rss = rss_mib().0;
    println!(
        "RESULT base {base:.0} decoded {decoded:.0} enforced {rss:.0} peak {:.0} seconds {:.1} \
         ipcache {} policy {}",
        rss_mib().1,
        took.as_secs_f64(),
        applied.ipcache_entries,
        applied.policy_entries
    );
    // Held until measured: the agent lives on.
    std::hint::black_box(&agent);
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--child") {
        return child(&args[i + 1]);
    }
    if let Some(i) = args.iter().position(|a| a == "--stages") {
        return stages(&args[i + 1]);
    }
    let scale = args
        .iter()
        .position(|a| a == "--scale")
        .map(|i| args[i + 1].clone())
        .unwrap_or_else(|| "100k".into());
    let (ns, apps, replicas, nodes, policies) = match scale.as_str() {
        "10k" => (50, 20, 10, 100, 1000),
        "100k" => (500, 20, 10, 1000, 10000),
        s => panic!("--scale {s}: expected 10k or 100k"),
    };
    let (inv, pols) = scale_scenario(ns, apps, replicas, nodes, policies);
    let (w, p) = (inv.workloads.len(), pols.len());
    let snap = DesiredState::snapshot(1, &StateDoc::new(&inv, &pols), 0);
    assert!(snap.deflate);
    let file = std::env::temp_dir().join(format!("cellwall-memory-{}.snap", std::process::id()));
    std::fs::write(&file, &snap.state_json).unwrap();
    // `--save FILE` keeps the snapshot, to profile the agent's side alone
    // (`heaptrack BENCH --child FILE`).
    if let Some(i) = args.iter().position(|a| a == "--save") {
        std::fs::copy(&file, &args[i + 1]).expect("--save FILE");
    }
    let run = |mode: &str| {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([mode, file.to_str().unwrap()])
            .output()
            .expect("run the agent side");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let text = run("--child");
    let stages = run("--stages");
    let _ = std::fs::remove_file(&file);
    let line = text.lines().find(|l| l.starts_with("RESULT")).unwrap();
    let f: Vec<&str> = line.split_whitespace().collect();
    let get = |k: &str| f[f.iter().position(|x| *x == k).unwrap() + 1];
    println!(
        "agent memory: {w} workloads × {p} policies, {NODE} ({} ipcache and {} policy entries; \
         snapshot {:.1} MiB deflated)",
        get("ipcache"),
        get("policy"),
        snap.state_json.len() as f64 / (1 << 20) as f64
    );
    println!(
        "  resident: process base {} MiB, snapshot decoded {} MiB, enforced {} MiB (peak {} \
         MiB), in {} s",
        get("base"),
        get("decoded"),
        get("enforced"),
        get("peak"),
        get("seconds")
    );
    if let Some(l) = stages.lines().find(|l| l.starts_with("STAGES")) {
        println!("  built one at a time, MiB added by each: {}", &l[7..]);
    }
    let enforced: f64 = get("enforced").parse().unwrap();
    let verdict = if enforced < 250.0 { "OK" } else { "MISSED" };
    println!("  goal (at 100k × 10k) resident < 250 MiB: {enforced:.0} MiB {verdict}");
}

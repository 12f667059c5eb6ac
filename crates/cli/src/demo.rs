//! `cellwall demo`: Cellwall's main job on real traffic, in a few minutes a person can follow.
//! A lab (real namespaces, servers, manager, agent, eBPF) runs a small shop; we watch its
//! traffic, apply least-privilege policy through the manager, and catch a compromised pod's
//! lateral movement in the act, with the rule that stopped it.

use crate::client::{table, Client};
use anyhow::{bail, Result};
use cellwall_api::{ExplainQuery, GroupBy, MapQuery};
use cellwall_lab::{self as lab, DatapathKind, Visibility};
use cellwall_policy::{Protocol, WorkloadKey};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const APP: &str = include_str!("../../../examples/demo/app.yaml");
const POLICY: &str = include_str!("../../../examples/demo/policy.yaml");

#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Lab name (removed at the end unless --keep).
    #[arg(long, default_value = "demo")]
    pub name: String,
    /// Leave the lab running afterwards (then try: cellwall get policies --lab demo).
    #[arg(long)]
    pub keep: bool,
}

fn step(n: u32, title: &str) {
    println!("\n\x1b[1m{n}. {title}\x1b[0m");
}

fn key(s: &str) -> WorkloadKey {
    WorkloadKey::parse(s).expect("demo names are NS/NAME")
}

/// Normal business: the frontend calls the API, the API its database and cache.
const BUSINESS: [(&str, &str, u16); 3] = [
    ("web/frontend", "backend/api", 8080),
    ("backend/api", "backend/db", 5432),
    ("backend/api", "backend/cache", 6379),
];

/// What an attacker on the blog pod tries next.
const LATERAL: [(&str, &str, u16); 3] = [
    ("web/blog", "backend/db", 5432),
    ("web/blog", "backend/cache", 6379),
    ("web/blog", "backend/api", 8080),
];

fn traffic(name: &str, conns: &[(&str, &str, u16)], times: usize) -> Result<Vec<bool>> {
    let mut out = Vec::new();
    for (from, to, port) in conns {
        let mut ok = true;
        for _ in 0..times {
            ok &= lab::connect_from(
                name,
                &key(from),
                &key(to),
                Protocol::Tcp,
                *port,
                Duration::from_millis(400),
            )?;
        }
        out.push(ok);
    }
    Ok(out)
}

/// Waits for the agent's next flow shipment (it ships every 200 ms).
fn settle() {
    std::thread::sleep(Duration::from_millis(700));
}

/// Observed edges: (src, dst, port, verdict) → (connections, deciding rules).
type Edges = BTreeMap<(String, String, String, String), (u64, String)>;

/// The manager's dependency map of the demo's history, one row per edge and outcome.
fn edges(c: &Client) -> Result<Edges> {
    let v = c.dependency_map(&MapQuery {
        since: Some("1h".into()),
        group_by: Some(GroupBy::Workload),
        format: None,
    })?;
    let mut m = BTreeMap::new();
    for e in &v.map.edges {
        let rules: Vec<&str> = e.rules.iter().map(String::as_str).collect();
        for (verdict, n) in [("allowed", e.allowed + e.audit), ("denied", e.denied)] {
            if n > 0 {
                m.insert(
                    (
                        e.src.clone(),
                        e.dst.clone(),
                        format!("{}/{}", e.protocol, e.port),
                        verdict.to_string(),
                    ),
                    (n, rules.join("; ")),
                );
            }
        }
    }
    Ok(m)
}

fn print_edges(m: &Edges) {
    let mut rows = vec![
        ["FROM", "TO", "PORT", "VERDICT", "CONNECTIONS", "DECIDED BY"]
            .map(String::from)
            .to_vec(),
    ];
    for ((s, d, p, v), (n, r)) in m {
        rows.push(vec![
            s.clone(),
            d.clone(),
            p.clone(),
            v.clone(),
            n.to_string(),
            if r.is_empty() { "-".into() } else { r.clone() },
        ]);
    }
    for l in table(&rows).lines() {
        println!("   {l}");
    }
}

pub fn run(a: DemoArgs) -> Result<()> {
    let t0 = Instant::now();
    if !lab::is_root() {
        bail!("cellwall demo builds a lab (network namespaces, eBPF): it needs root (try sudo)");
    }
    let dir = std::env::temp_dir().join(format!("cellwall-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (app, policy) = (dir.join("app.yaml"), dir.join("policy.yaml"));
    std::fs::write(&app, APP)?;
    std::fs::write(&policy, POLICY)?;
    if lab::state_dir(&a.name).exists() {
        eprintln!("removing a lab {} left from an earlier run", a.name);
        lab::down(&a.name)?;
    }
    let r = tour(&a.name, &app, &policy);
    if !a.keep {
        let _ = lab::down(&a.name);
    } else {
        println!("\nThe lab is still up: cellwall get policies --lab {0}; cellwall flows --lab {0}; cellwall lab down --name {0}", a.name);
    }
    let _ = std::fs::remove_dir_all(&dir);
    r?;
    println!("\nDemo finished in {:.0}s.", t0.elapsed().as_secs_f64());
    Ok(())
}

fn tour(name: &str, app: &PathBuf, policy: &PathBuf) -> Result<()> {
    step(
        1,
        "A shop on real workloads: web/frontend, web/blog, backend/api, backend/db, backend/cache",
    );
    println!(
        "   Each pod is a network namespace with a real server; a Cellwall manager and a node"
    );
    println!("   agent run beside them, the agent's eBPF programs on every pod's interface.");
    lab::up(&lab::UpSpec {
        name: name.to_string(),
        files: std::slice::from_ref(app).to_vec(),
        datapath: DatapathKind::Ebpf,
        visibility: Visibility::On,
        source: lab::Source::Files,
        ignore_unknown_kinds: false,
        cni: lab::Cni::Routed,
        cluster: None,
    })?;
    let c = Client::for_lab(name)?;
    for n in c.nodes()?.items {
        println!(
            "   node {} joined over mTLS, enforcing revision {} for {} workloads",
            n.name,
            n.applied_version,
            n.workloads.len()
        );
    }

    step(
        2,
        "Business as usual, no policy yet: everything may talk to everything",
    );
    let ok = traffic(name, &BUSINESS, 5)?;
    let ok2 = traffic(name, &LATERAL[..1], 1)?;
    if ok.contains(&false) || ok2.contains(&false) {
        bail!(
            "the shop's own traffic failed before any policy: see the lab logs in {}",
            lab::state_dir(name).display()
        );
    }
    settle();
    let seen = edges(&c)?;
    println!("   What the agent reported to the manager (cellwall map --group-by workload):");
    print_edges(&seen);
    println!("   Note web/blog -> backend/db: nothing stops a blog from reaching the database.");

    step(
        3,
        "Apply least privilege through the manager (cellwall apply -f examples/demo/policy.yaml)",
    );
    let r = c.apply(
        &crate::client::documents(std::slice::from_ref(policy), false)?,
        false,
    )?;
    let rev = r.revision;
    let applied = Instant::now();
    c.wait_applied(rev, Duration::from_secs(15))?;
    for ch in &r.changes {
        println!("   {} {}", ch.key, ch.action.as_str());
    }
    println!(
        "   revision {rev} enforced in the kernel {:.0} ms after the manager accepted it",
        applied.elapsed().as_secs_f64() * 1000.0
    );

    step(4, "The shop still works");
    let ok = traffic(name, &BUSINESS, 3)?;
    for ((f, t, p), ok) in BUSINESS.iter().zip(&ok) {
        println!(
            "   {f} -> {t} TCP/{p}: {}",
            if *ok { "connected" } else { "BLOCKED" }
        );
    }
    if ok.contains(&false) {
        bail!("the policy broke the shop's own traffic");
    }

    step(5, "An attacker on web/blog moves laterally");
    let ok = traffic(name, &LATERAL, 1)?;
    for ((f, t, p), ok) in LATERAL.iter().zip(&ok) {
        println!(
            "   {f} -> {t} TCP/{p}: {}",
            if *ok {
                "CONNECTED (not stopped!)"
            } else {
                "no answer: dropped in the kernel"
            }
        );
    }
    if ok.contains(&true) {
        bail!("a lateral movement attempt got through");
    }
    settle();
    let seen = edges(&c)?;
    let denied: BTreeMap<_, _> = seen
        .into_iter()
        .filter(|((s, _, _, v), _)| v == "denied" && s == "web/blog")
        .collect();
    println!("   Recorded by the agent, stored by the manager (cellwall map, denied edges):");
    print_edges(&denied);
    if denied.len() < LATERAL.len() {
        bail!(
            "not every blocked attempt was recorded ({} of {})",
            denied.len(),
            LATERAL.len()
        );
    }

    step(6, "Why? (cellwall explain web/blog backend/db TCP/5432)");
    let v = c.explain(&ExplainQuery {
        from: "web/blog".into(),
        to: "backend/db".into(),
        probe: "TCP/5432".into(),
    })?;
    for l in v.text.lines().take(8) {
        println!("   {l}");
    }
    Ok(())
}

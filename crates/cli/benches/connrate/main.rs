//! The datapath against netfilter, side by side in one run (root). Two measurements between two
//! lab pods, each lab a separate `cellwall lab`:
//!   conn — new TCP connections/s (connect and close in a loop)
//!   bulk — one TCP stream pushing bytes for the window, Gb/s (delivered: the server reports
//!          the bytes it read after the client's FIN, and the clock stops then)
//! for N = 0, 10, 100, 1,000 and 10,000 rules and these configurations:
//!   none         — no filter at all (the physical limit here)
//!   iptables     — the node's FORWARD chain: conntrack ESTABLISHED,RELATED accept first, then
//!                  N linear rules (N-1 decoy /32 sources and the client)
//!   ipset        — the same conntrack rule, then one rule matching a hash:net ipset of N entries
//!   nftables     — a table with `ct state established,related accept`, then one rule matching an
//!                  interval set of N entries
//!   cellwall     — Cellwall enforcing a NetworkPolicy of N rules (N-1 decoy ipBlock /32s and
//!                  the client: N ipcache entries and policy rows), visibility off
//!   cellwall-vis — the same with flow visibility on (an event per new flow, per-rule counters)
//!   cellwall-both — (only with --configs) cellwall with the server isolated on egress too (replies
//!                  only), so every connection is tracked in conntrack for its replies
//! With N = 0 nothing is enforced: netfilter keeps its conntrack rule (and the set lookup) with
//! a default accept; Cellwall has no policy (visibility off: nothing attached; on: the programs
//! record every flow). Netfilter state lives in the lab's node namespace and goes with it.
//!
//! Labs are grouped by N (one group of six at a time, the `none` lab shared): each group is
//! measured on its own against `none`. One client thread alternates between a group's labs
//! every window (20 ms, order rotated each round) and each round's value is divided by the same
//! round's `none` value: the paired ratio survives this machine's noise.
//!
//! Goals (issue 7): cellwall >= 0.97 of none at 10,000 rules, cellwall-vis >= 0.95 (checked
//! for both measurements; MISSED is printed, not hidden). The run fails (exit 1) only below a
//! hard floor: goal - band, band 0.17 (so 0.80 and 0.78) times CELLWALL_BENCH_NOISE_FACTOR
//! (default 1), or CELLWALL_CONNRATE_BAND; CELLWALL_CONNRATE_FLOOR sets the visibility-off floor
//! directly (the visibility-on floor stays 0.02 below it). The floor is enforced from 100
//! rounds up: a 20-round smoke run's median on a loaded machine moves by more than the band
//! (it read 0.735 and then, at 150 rounds, 0.934), so there a breach is printed, not fatal.
//! The run also fails when connections fail.
//!   cargo build --release --workspace
//!   cargo bench -p cellwall-cli --bench connrate -- [--rounds 150] [--rules 0,10,100,1000,10000]
//!       [--window-ms 20] [--json PATH] [--configs cellwall,cellwall-vis] [--no-bulk]
//! `--configs` and `--no-bulk` narrow a run for profiling; goal checks need both phases.

mod filters;

use cellwall_testkit::lab::{down_stale_labs, listen, netns, Guard};
use filters::{in_node, ipset_rules, iptables_rules, manifests, nft_rules};
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

const PORT: u16 = 5001;
/// The rule count the goals are stated for.
const GOAL_N: usize = 10_000;
/// (configuration, goal as a ratio to none at GOAL_N).
const GOALS: [(Kind, f64); 2] = [(Kind::Cellwall, 0.97), (Kind::CellwallVis, 0.95)];
/// How far below its goal a ratio may fall before the run fails (times the noise factor).
const BAND: f64 = 0.17;
/// Fewer rounds than this and a median below the floor is reported without failing the run.
const FLOOR_MIN_ROUNDS: usize = 100;

/// What a lab's server does with the next connection it accepts.
const CONN: u8 = 0;
const BULK: u8 = 1;
const STOP: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Unfiltered,
    Iptables,
    Ipset,
    Nftables,
    Cellwall,
    CellwallVis,
    /// `cellwall` with the BPF object at CELLWALL_CONNRATE_B_OBJECT: an A/B run of a datapath
    /// change, side by side (only with `--configs`); CELLWALL_CONNRATE_B_VISIBILITY=on
    /// compares against `cellwall-vis`.
    CellwallB,
    /// `cellwall` with the server policed on egress too (no egress rule: replies only), so
    /// every connection is tracked in conntrack, which its replies need (only with
    /// `--configs`). The default configuration polices ingress only, the common shape.
    CellwallBoth,
}

impl Kind {
    const FILTERS: [Kind; 5] = [
        Kind::Iptables,
        Kind::Ipset,
        Kind::Nftables,
        Kind::Cellwall,
        Kind::CellwallVis,
    ];

    fn label(self) -> &'static str {
        match self {
            Kind::Unfiltered => "none",
            Kind::Iptables => "iptables",
            Kind::Ipset => "ipset",
            Kind::Nftables => "nftables",
            Kind::Cellwall => "cellwall",
            Kind::CellwallVis => "cellwall-vis",
            Kind::CellwallB => "cellwall-b",
            Kind::CellwallBoth => "cellwall-both",
        }
    }
}

#[derive(Clone, Copy)]
enum Phase {
    Conn,
    Bulk,
}

struct Lab {
    kind: Kind,
    n: usize,
    name: String,
    client_ns: String,
    server: SocketAddr,
    mode: Arc<AtomicU8>,
    server_thread: Option<std::thread::JoinHandle<()>>,
}

struct Args {
    rounds: usize,
    rules: Vec<usize>,
    window: Duration,
    json: Option<PathBuf>,
    /// The filtered configurations to measure (`none` is always measured).
    configs: Vec<Kind>,
    /// Skip the bulk phase (for profiling the connection path alone).
    no_bulk: bool,
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    // `cargo bench` adds `--bench`; unknown arguments are ignored, known ones must parse.
    let value = |flag: &str| -> Option<String> {
        let i = args.iter().position(|a| a == flag)?;
        let v = args
            .get(i + 1)
            .unwrap_or_else(|| panic!("{flag} needs a value"));
        Some(v.clone())
    };
    let num = |flag: &str, default: usize| -> usize {
        value(flag).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{flag}: not a number: {v}"))
        })
    };
    let rules = value("--rules").map_or(vec![0, 10, 100, 1_000, 10_000], |v| {
        v.split(',')
            .map(|s| {
                s.trim()
                    .replace('_', "")
                    .parse()
                    .unwrap_or_else(|_| panic!("--rules: not a number: {s}"))
            })
            .collect()
    });
    assert!(
        rules.iter().all(|&n| n <= 60_000),
        "--rules: at most 60,000 (the decoy address block)"
    );
    let rounds = num("--rounds", 150);
    assert!(rounds > 0, "--rounds must be positive");
    let configs = value("--configs").map_or(Kind::FILTERS.to_vec(), |v| {
        v.split(',')
            .map(|s| {
                *Kind::FILTERS
                    .iter()
                    .chain(&[Kind::CellwallB, Kind::CellwallBoth])
                    .find(|k| k.label() == s.trim())
                    .unwrap_or_else(|| {
                        panic!("--configs: unknown configuration {s:?} (iptables, ipset, nftables, cellwall, cellwall-vis, cellwall-b, cellwall-both)")
                    })
            })
            .collect()
    });
    Args {
        rounds,
        rules,
        window: Duration::from_millis(num("--window-ms", 20) as u64),
        json: value("--json").map(PathBuf::from),
        configs,
        no_bulk: args.iter().any(|a| a == "--no-bulk"),
    }
}

/// A lean server: accept-and-close for `conn`, read-everything-then-report-the-count for `bulk`,
/// so the measurement is about the path, not the server.
fn serve(ns: String, mode: Arc<AtomicU8>, ready: mpsc::Sender<Result<(), String>>) {
    let l = match netns::enter(&ns)
        .map_err(|e| e.to_string())
        .and_then(|_| listen(PORT).map_err(|e| e.to_string()))
    {
        Ok(l) => {
            let _ = ready.send(Ok(()));
            l
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut buf = vec![0u8; 256 * 1024];
    for s in l.incoming() {
        match mode.load(Ordering::SeqCst) {
            CONN => drop(s),
            BULK => {
                let Ok(mut s) = s else { continue };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut total = 0u64;
                while let Ok(k) = s.read(&mut buf) {
                    if k == 0 {
                        let _ = s.write_all(&total.to_le_bytes());
                        break;
                    }
                    total += k as u64;
                }
            }
            _ => return,
        }
    }
}

/// Brings up one lab, applies its filter and starts its server.
fn lab_up(kind: Kind, n: usize, net: u8, dir: &Path, guard: &mut Cleanup) -> Lab {
    let name = format!("cr{net}p{}", std::process::id());
    let rules = if matches!(
        kind,
        Kind::Cellwall | Kind::CellwallVis | Kind::CellwallB | Kind::CellwallBoth
    ) {
        n
    } else {
        0
    };
    let (dp, vis) = match kind {
        Kind::Cellwall | Kind::CellwallBoth => ("ebpf", "off"),
        Kind::CellwallB => match std::env::var("CELLWALL_CONNRATE_B_VISIBILITY").as_deref() {
            Ok("on") => ("ebpf", "on"),
            _ => ("ebpf", "off"),
        },
        Kind::CellwallVis => ("ebpf", "on"),
        _ => ("none", "off"),
    };
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, manifests(net, rules, kind == Kind::CellwallBoth)).unwrap();
    let t = Instant::now();
    // Registered first: a lab that fails half-way is taken down too (`down` works by name).
    guard.0.add(&name);
    let up: &[&str] = &[
        "lab",
        "up",
        "-f",
        f.to_str().unwrap(),
        "--name",
        &name,
        "--datapath",
        dp,
        "--visibility",
        vis,
    ];
    if kind == Kind::CellwallB {
        let obj = std::env::var("CELLWALL_CONNRATE_B_OBJECT")
            .expect("cellwall-b needs CELLWALL_CONNRATE_B_OBJECT (a cellwall.bpf.o)");
        cw().stdout_env(up, &[("CELLWALL_BPF_OBJECT", &obj)]);
    } else {
        cw().stdout(up);
    }
    let up = t.elapsed().as_secs_f64();
    let t = Instant::now();
    match kind {
        Kind::Iptables => in_node(&name, &["iptables-legacy-restore"], &iptables_rules(net, n)),
        Kind::Ipset => {
            let (set, rules) = ipset_rules(net, n);
            in_node(&name, &["ipset", "restore"], &set);
            in_node(&name, &["iptables-legacy-restore"], &rules);
        }
        Kind::Nftables => in_node(&name, &["nft", "-f", "-"], &nft_rules(net, n)),
        _ => {}
    }
    eprintln!(
        "{}-{n} ({name}): lab up in {up:.1}s, filter loaded in {:.1}s",
        kind.label(),
        t.elapsed().as_secs_f64()
    );
    let ns_of = |pod: &str| cellwall_testkit::lab::pod(&name, pod).netns;
    let mode = Arc::new(AtomicU8::new(CONN));
    let (tx, rx) = mpsc::channel();
    let (server_ns, m) = (ns_of("server"), mode.clone());
    let server_thread = std::thread::spawn(move || serve(server_ns, m, tx));
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("server in {name}: {e}"));
    Lab {
        kind,
        n,
        client_ns: ns_of("client"),
        server: format!("10.81.{net}.2:{PORT}").parse().unwrap(),
        name,
        mode,
        server_thread: Some(server_thread),
    }
}

/// Stops the lab's server thread (it holds the server's namespace) and takes the lab down.
fn lab_down(mut lab: Lab, guard: &mut Cleanup) {
    lab.mode.store(STOP, Ordering::SeqCst);
    let server = lab.server;
    // Wake the blocked accept from the client's side.
    let _ = netns::run_in(&lab.client_ns, move || {
        TcpStream::connect_timeout(&server, Duration::from_secs(1))
    });
    if let Some(t) = lab.server_thread.take() {
        let _ = t.join();
    }
    guard.0.down(&lab.name);
}

/// One bulk window: connect, write for `window`, half-close, wait for the server's byte count.
/// Returns Gb/s delivered.
fn bulk_once(addr: &SocketAddr, window: Duration, buf: &[u8]) -> std::io::Result<f64> {
    let t = Instant::now();
    let mut s = TcpStream::connect_timeout(addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let end = t + window;
    let mut sent = 0u64;
    while Instant::now() < end {
        sent += s.write(buf)? as u64;
    }
    s.shutdown(Shutdown::Write)?;
    let mut ack = [0u8; 8];
    s.read_exact(&mut ack)?;
    let secs = t.elapsed().as_secs_f64();
    if u64::from_le_bytes(ack) != sent {
        return Err(std::io::Error::other("server read a different byte count"));
    }
    Ok(sent as f64 * 8.0 / secs / 1e9)
}

/// What one phase measured.
struct Measured {
    /// Per round, per lab: connections/s or Gb/s.
    values: Vec<Vec<f64>>,
    /// Per lab: connections (streams) that completed, and that failed.
    ok: Vec<u64>,
    failed: Vec<u64>,
}

/// One client thread, round-robin over the labs (order rotated each round).
fn measure(
    labs: &[(String, SocketAddr)],
    rounds: usize,
    window: Duration,
    phase: Phase,
) -> Measured {
    let labs = labs.to_vec();
    std::thread::spawn(move || {
        let mut values = vec![vec![0f64; labs.len()]; rounds];
        let mut failures = vec![0u64; labs.len()];
        let mut ok = vec![0u64; labs.len()];
        let buf = vec![0x5au8; 256 * 1024];
        for (r, round) in values.iter_mut().enumerate() {
            for k in 0..labs.len() {
                let c = (k + r) % labs.len();
                netns::enter(&labs[c].0).unwrap();
                match phase {
                    Phase::Conn => {
                        let start = Instant::now();
                        let end = start + window;
                        let mut count = 0u64;
                        while Instant::now() < end {
                            match TcpStream::connect_timeout(&labs[c].1, Duration::from_millis(200))
                            {
                                Ok(s) => {
                                    drop(s);
                                    count += 1;
                                }
                                Err(_) => failures[c] += 1,
                            }
                        }
                        // Over the time actually spent: a connect that times out stretches it.
                        round[c] = count as f64 / start.elapsed().as_secs_f64();
                        ok[c] += count;
                    }
                    Phase::Bulk => match bulk_once(&labs[c].1, window, &buf) {
                        Ok(gbps) => {
                            round[c] = gbps;
                            ok[c] += 1;
                        }
                        Err(_) => failures[c] += 1,
                    },
                }
            }
        }
        Measured {
            values,
            ok,
            failed: failures,
        }
    })
    .join()
    .unwrap()
}

#[derive(Clone, Copy, Default)]
struct Summary {
    median: f64,
    p10: f64,
    p50: f64,
    p90: f64,
}

fn q(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Median of lab `i`'s values and p10/p50/p90 of its per-round ratio to lab 0 (`none`); rounds
/// where either side failed are left out of the ratios.
fn summarize(values: &[Vec<f64>], i: usize) -> Summary {
    let mut own: Vec<f64> = values.iter().map(|r| r[i]).collect();
    let mut ratios: Vec<f64> = values
        .iter()
        .filter(|r| r[0] > 0.0 && r[i] > 0.0)
        .map(|r| r[i] / r[0])
        .collect();
    own.sort_by(|a, b| a.total_cmp(b));
    ratios.sort_by(|a, b| a.total_cmp(b));
    Summary {
        median: q(&own, 0.5),
        p10: q(&ratios, 0.1),
        p50: q(&ratios, 0.5),
        p90: q(&ratios, 0.9),
    }
}

struct Row {
    kind: Kind,
    n: usize,
    conn: Summary,
    bulk: Summary,
    conn_failures: u64,
    conn_total: u64,
    bulk_failures: u64,
}

fn ratios(s: &Summary) -> String {
    format!("{:.3} ({:.3}..{:.3})", s.p50, s.p10, s.p90)
}

fn print_rows(rows: &[Row]) {
    println!(
        "{:<13} {:>6} {:>9} {:>25} {:>7} {:>25} {:>9}",
        "config",
        "N",
        "conn/s",
        "conn ratio p50 (p10..p90)",
        "Gb/s",
        "bulk ratio p50 (p10..p90)",
        "failures"
    );
    for r in rows {
        println!(
            "{:<13} {:>6} {:>9.0} {:>25} {:>7.2} {:>25} {:>9}",
            r.kind.label(),
            r.n,
            r.conn.median,
            ratios(&r.conn),
            r.bulk.median,
            ratios(&r.bulk),
            format!("{}/{}", r.conn_failures, r.bulk_failures)
        );
    }
}

fn summary_json(s: &Summary) -> serde_json::Value {
    serde_json::json!({"median": s.median, "ratio_p10": s.p10, "ratio_p50": s.p50, "ratio_p90": s.p90})
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let args = parse_args();
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    down_stale_labs(&cw(), "connrate", |n| {
        n.strip_prefix("cr")
            .and_then(|s| s.split_once('p'))
            .filter(|(net, _)| net.parse::<u8>().is_ok())
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
    });
    let dir = run_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let mut guard = Cleanup(Guard::new(cw()));
    let mut net = 1u8;
    let none = lab_up(Kind::Unfiltered, 0, net, &dir, &mut guard);
    let mut rows: Vec<Row> = Vec::new();
    let mut failed: Vec<String> = Vec::new();
    let ms = args.window.as_millis();
    println!(
        "datapath vs netfilter: labs grouped by N (one group at a time, each measured against \
         the shared `none` lab in the same rounds); per group and phase {} rounds of {ms} ms per \
         configuration, one client thread",
        args.rounds
    );
    println!("conn = new TCP connections/s; bulk = one TCP stream for the window, Gb/s delivered");
    for &n in &args.rules {
        let t = Instant::now();
        let mut group = Vec::new();
        for &kind in &args.configs {
            net = net.checked_add(1).expect("at most 254 labs per run");
            group.push(lab_up(kind, n, net, &dir, &mut guard));
        }
        eprintln!("group N={n}: labs up in {:.1}s", t.elapsed().as_secs_f64());
        let labs: Vec<&Lab> = std::iter::once(&none).chain(group.iter()).collect();
        let targets: Vec<(String, SocketAddr)> = labs
            .iter()
            .map(|l| (l.client_ns.clone(), l.server))
            .collect();
        let conn = measure(&targets, args.rounds, args.window, Phase::Conn);
        for l in &labs {
            l.mode.store(BULK, Ordering::SeqCst);
        }
        let bulk = if args.no_bulk {
            Measured {
                values: vec![vec![f64::NAN; targets.len()]; args.rounds],
                ok: vec![0; targets.len()],
                failed: vec![0; targets.len()],
            }
        } else {
            measure(&targets, args.rounds, args.window, Phase::Bulk)
        };
        for l in &labs {
            l.mode.store(CONN, Ordering::SeqCst);
        }
        let first = rows.len();
        for (i, l) in labs.iter().enumerate() {
            rows.push(Row {
                kind: l.kind,
                n: if l.kind == Kind::Unfiltered { n } else { l.n },
                conn: summarize(&conn.values, i),
                bulk: summarize(&bulk.values, i),
                conn_failures: conn.failed[i],
                conn_total: conn.ok[i] + conn.failed[i],
                bulk_failures: bulk.failed[i],
            });
        }
        println!(
            "\ngroup N={n} ({:.0}s with lab setup):",
            t.elapsed().as_secs_f64()
        );
        print_rows(&rows[first..]);
        if let Ok(secs) = std::env::var("CELLWALL_CONNRATE_HOLD") {
            // Keep the labs up for inspection (e.g. `bpftool prog show` with kernel.bpf_stats_enabled).
            std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(30)));
        }
        for l in group {
            lab_down(l, &mut guard);
        }
    }
    lab_down(none, &mut guard);
    let _ = std::fs::remove_dir_all(&dir);

    println!(
        "\nall groups (ratios are to the same group's `none`; failures = conn/bulk connections failed):"
    );
    print_rows(&rows);

    // Goals, and the hard floor that makes a regression fail the run.
    let band = env_f64("CELLWALL_CONNRATE_BAND").unwrap_or(BAND)
        * env_f64("CELLWALL_BENCH_NOISE_FACTOR").unwrap_or(1.0);
    let floor_override = env_f64("CELLWALL_CONNRATE_FLOOR");
    let mut goals = Vec::new();
    for (kind, goal) in GOALS {
        let floor = match floor_override {
            Some(f) => f - (GOALS[0].1 - goal),
            None => goal - band,
        };
        let Some(row) = rows.iter().find(|r| r.kind == kind && r.n == GOAL_N) else {
            println!(
                "goal: {} >= {goal:.2} of none at N={GOAL_N}: NOT MEASURED (add {GOAL_N} to --rules)",
                kind.label()
            );
            continue;
        };
        let metrics = [("conn/s", row.conn.p50), ("bulk Gb/s", row.bulk.p50)];
        for (metric, got) in metrics.into_iter().take(if args.no_bulk { 1 } else { 2 }) {
            let met = got >= goal;
            let below = got.is_nan() || got < floor;
            let hard = below && args.rounds >= FLOOR_MIN_ROUNDS;
            println!(
                "goal: {} {metric} >= {goal:.2} of none at N={GOAL_N}: {got:.3} {} (hard floor {floor:.2}: {})",
                kind.label(),
                if met { "OK" } else { "MISSED" },
                match (below, hard) {
                    (false, _) => "above".to_string(),
                    (true, true) => "BELOW, failing the run".to_string(),
                    (true, false) => format!(
                        "BELOW, not failing: {} rounds are too few for the floor (>= {FLOOR_MIN_ROUNDS})",
                        args.rounds
                    ),
                }
            );
            if hard {
                failed.push(format!(
                    "{} {metric} at {got:.3} of none is below the hard floor {floor:.2}",
                    kind.label()
                ));
            }
            goals.push(serde_json::json!({
                "config": kind.label(), "n": GOAL_N, "metric": metric, "ratio_p50": got,
                "goal": goal, "met": met, "hard_floor": floor, "below_floor": below,
                "failed_run": hard,
            }));
        }
    }
    // A few failed connects (TIME_WAIT reuse races) happen with or without a filter; many mean
    // the path dropped allowed traffic.
    for r in &rows {
        if r.conn_failures * 200 > r.conn_total || r.bulk_failures * 100 > args.rounds as u64 {
            failed.push(format!(
                "{}-{}: {} of {} connections and {} of {} bulk streams failed",
                r.kind.label(),
                r.n,
                r.conn_failures,
                r.conn_total,
                r.bulk_failures,
                args.rounds
            ));
        }
    }
    if let Some(path) = &args.json {
        let results: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "config": r.kind.label(), "n": r.n,
                    "conn_per_s": summary_json(&r.conn), "bulk_gbps": summary_json(&r.bulk),
                    "conn_failures": r.conn_failures, "conn_total": r.conn_total,
                    "bulk_failures": r.bulk_failures,
                })
            })
            .collect();
        let doc = serde_json::json!({
            "bench": "connrate",
            "rounds": args.rounds,
            "window_ms": ms as u64,
            "rules": args.rules,
            "grouped_by_n": true,
            "results": results,
            "goals": goals,
            "failures": failed,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc).unwrap() + "\n")
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        println!("results written to {}", path.display());
    }
    if !failed.is_empty() {
        for f in &failed {
            eprintln!("FAILED: {f}");
        }
        std::process::exit(1);
    }
}

/// This run's manifests.
fn run_dir() -> PathBuf {
    std::env::temp_dir().join(format!("cellwall-connrate-{}", std::process::id()))
}

/// Takes the labs down even if the benchmark panics (their nft tables and ipsets live in the
/// labs' node namespaces and go with them), and removes the run's manifests.
struct Cleanup(Guard);

impl Drop for Cleanup {
    fn drop(&mut self) {
        // The guard takes the labs down after this.
        let _ = std::fs::remove_dir_all(run_dir());
    }
}

/// The `cellwall` binary under test.
fn cw() -> cellwall_testkit::bin::Bin {
    cellwall_testkit::bin!("cellwall")
}

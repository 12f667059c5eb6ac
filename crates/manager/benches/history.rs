//! The manager's history path at scale, without the network: 1,000,000 aggregated flows written
//! into the SQLite history (the write rate), read back summed over the window (what `map`,
//! `propose` and `simulate` start with), and simulated through `Manager::simulate`. Run:
//!   cargo bench -p cellwall-manager --bench history [-- --flows N]
//! Results are written down in docs/benchmarks.md.

use cellwall_manager::store::{HistRow, SqliteStore, Store};
use cellwall_policy::discover::{Endpoint, HistFlow, Observed};
use cellwall_policy::synth::{scale_scenario, Rng};
use cellwall_policy::Protocol;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args
        .iter()
        .position(|a| a == "--flows")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("cw-hist-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let store = SqliteStore::open(&dir.join("h.db")).unwrap();
    let (inv, _) = scale_scenario(50, 20, 10, 20, 1000);
    let pods: Vec<_> = inv.workloads.values().filter(|w| !w.host_network).collect();
    let mut rng = Rng::new(3);
    let now_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let rows: Vec<HistRow> = (0..n)
        .map(|i| {
            let (s, d) = (*rng.pick(&pods), *rng.pick(&pods));
            let ep = |w: &cellwall_policy::Workload| Endpoint::Workload {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                labels: cellwall_policy::Labels::clone(&w.labels),
            };
            // A day of minutes.
            let t = now_ns - (i as u64 % 1440) * 60_000_000_000;
            HistRow {
                bucket: t / 60_000_000_000,
                flow: HistFlow {
                    src: ep(s),
                    dst: ep(d),
                    protocol: Protocol::Tcp,
                    port: *rng.pick(&[80u16, 443, 5432, 8080]),
                    observed: if i % 7 == 0 {
                        Observed::Denied
                    } else {
                        Observed::Allowed
                    },
                    rule: None,
                    connections: 1 + (i % 20) as u64,
                    first_ns: t,
                    last_ns: t + 1_000_000,
                },
            }
        })
        .collect();
    let t = Instant::now();
    for chunk in rows.chunks(5000) {
        store.add_history(chunk).unwrap();
    }
    let w = t.elapsed();
    println!(
        "write: {n} history rows in {w:?} ({:.0} rows/s, batches of 5,000, synchronous=FULL)",
        n as f64 / w.as_secs_f64()
    );
    let t = Instant::now();
    let flows = store.history_since(now_ns - 86_400_000_000_000).unwrap();
    println!(
        "read back, summed over the day: {} flows in {:?}",
        flows.len(),
        t.elapsed()
    );
    let size = std::fs::metadata(dir.join("h.db"))
        .map(|m| m.len())
        .unwrap_or(0)
        + std::fs::metadata(dir.join("h.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
    println!("database size: {:.0} MB", size as f64 / 1e6);
    let _ = std::fs::remove_dir_all(&dir);
}

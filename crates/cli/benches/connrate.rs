//! New TCP connections per second between two lab pods, side by side in one run (root):
//!   none        — a lab with no program attached (the physical limit here)
//!   cellwall-10 — Cellwall enforcing a policy of 10 rules
//!   cellwall-10k — Cellwall enforcing a policy of 10,000 rules (10,000 CIDR rules: 10,000
//!                  ipcache entries and policy rows)
//!   cellwall-10k-vis — the same with flow visibility on (a ring-buffer event per new flow)
//!   cellwall-0   — programs attached, no policy (the cost of the hooks themselves)
//! (the Cellwall ones with visibility off unless named -vis)
//!   iptables-10k — no program; the node's FORWARD chain holds the same 10,000 rules as iptables
//!                  (conntrack ESTABLISHED first, as real firewalls do)
//! One client thread alternates between the four every 20 ms and counts completed connections;
//! the result is the paired ratio to `none` per round (median and spread), which survives this
//! machine's noise. Goal: cellwall-10k >= 97% of none.
//!   cargo bench -p cellwall-cli --bench connrate [-- --rounds N]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const PORT: u16 = 5001;

struct Config {
    label: &'static str,
    client_ns: String,
    server: SocketAddr,
}

fn cw(args: &[&str]) {
    let out = Command::new(env!("CARGO_BIN_EXE_cellwall"))
        .args(args)
        .output()
        .expect("run cellwall");
    assert!(
        out.status.success(),
        "cellwall {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn manifests(net: u8, rules: usize) -> String {
    let mut s = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: b}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: client, namespace: b, labels: {{app: client}}}}\nspec: {{containers: [{{ports: [{{containerPort: 9}}]}}]}}\nstatus: {{podIP: 10.81.{net}.1}}\n---\napiVersion: v1\nkind: Pod\nmetadata: {{name: server, namespace: b, labels: {{app: server}}}}\nspec: {{containers: [{{ports: [{{containerPort: 80}}]}}]}}\nstatus: {{podIP: 10.81.{net}.2}}\n"
    );
    if rules > 0 {
        s.push_str("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: server-in, namespace: b}\nspec:\n  podSelector: {matchLabels: {app: server}}\n  ingress:\n");
        for i in 0..rules - 1 {
            // Addresses from TEST-NET-2/3 style blocks: entries in the maps, never traffic.
            s.push_str(&format!("  - from: [{{ipBlock: {{cidr: 198.18.{}.{}/32}}}}]\n    ports: [{{port: {PORT}}}]\n", i / 250, i % 250));
        }
        s.push_str(&format!("  - from: [{{podSelector: {{matchLabels: {{app: client}}}}}}]\n    ports: [{{port: {PORT}}}]\n"));
    }
    s
}

fn iptables_rules(net: u8, rules: usize) -> String {
    let mut s =
        String::from("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
    s.push_str("-A FORWARD -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n");
    for i in 0..rules - 1 {
        s.push_str(&format!(
            "-A FORWARD -s 198.18.{}.{}/32 -d 10.81.{net}.2/32 -p tcp --dport {PORT} -j ACCEPT\n",
            i / 250,
            i % 250
        ));
    }
    s.push_str(&format!(
        "-A FORWARD -s 10.81.{net}.1/32 -d 10.81.{net}.2/32 -p tcp --dport {PORT} -j ACCEPT\n"
    ));
    s.push_str("COMMIT\n");
    s
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let window = Duration::from_millis(20);
    let tag = std::process::id() % 10000;
    let dir = std::env::temp_dir().join(format!("cellwall-connrate-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    // (label, subnet, rules, datapath, visibility)
    let setups: [(&str, u8, usize, &str, &str); 6] = [
        ("none", 1, 0, "none", "off"),
        ("cellwall-0", 6, 0, "ebpf", "off"),
        ("cellwall-10", 2, 10, "ebpf", "off"),
        ("cellwall-10k", 3, 10_000, "ebpf", "off"),
        ("cellwall-10k-vis", 5, 10_000, "ebpf", "on"),
        ("iptables-10k", 4, 0, "none", "off"),
    ];
    let mut configs = Vec::new();
    let mut guard = Cleanup(Vec::new());
    for (label, net, rules, dp, vis) in setups {
        let lab = format!("cr{net}x{tag}");
        let f = dir.join(format!("{label}.yaml"));
        std::fs::write(&f, manifests(net, rules)).unwrap();
        let t = Instant::now();
        cw(&[
            "lab",
            "up",
            "-f",
            f.to_str().unwrap(),
            "--name",
            &lab,
            "--datapath",
            dp,
            "--visibility",
            vis,
        ]);
        guard.0.push(lab.clone());
        eprintln!("{label}: lab up in {:.1}s", t.elapsed().as_secs_f64());
        if label == "iptables-10k" {
            let mut child = Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &format!("cw-{lab}-node"),
                    "iptables-legacy-restore",
                ])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .expect("iptables-legacy-restore (apt install iptables)");
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(iptables_rules(net, 10_000).as_bytes())
                .unwrap();
            assert!(child.wait().unwrap().success(), "iptables-restore failed");
        }
        let state: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(format!("/run/cellwall/labs/{lab}/state.json")).unwrap(),
        )
        .unwrap();
        let ns_of = |name: &str| {
            state["pods"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["key"]["name"] == name)
                .unwrap()["netns"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let server_ns = ns_of("server");
        // A lean accept-and-close server, so the measurement is about the path, not the server.
        std::thread::spawn(move || {
            cellwall_datapath::netns::enter(&server_ns).unwrap();
            let l = TcpListener::bind(("0.0.0.0", PORT)).unwrap();
            for s in l.incoming() {
                drop(s);
            }
        });
        configs.push(Config {
            label,
            client_ns: ns_of("client"),
            server: format!("10.81.{net}.2:{PORT}").parse().unwrap(),
        });
    }
    std::thread::sleep(Duration::from_millis(200));
    // Measurement: one client thread, round-robin over the configurations.
    let cfgs: Vec<(String, SocketAddr)> = configs
        .iter()
        .map(|c| (c.client_ns.clone(), c.server))
        .collect();
    let counts = std::thread::spawn(move || {
        let mut counts = vec![vec![0u64; cfgs.len()]; rounds];
        let mut failures = vec![0u64; cfgs.len()];
        for (r, round) in counts.iter_mut().enumerate() {
            for k in 0..cfgs.len() {
                // Rotate the order each round so no configuration always follows another.
                let c = (k + r) % cfgs.len();
                cellwall_datapath::netns::enter(&cfgs[c].0).unwrap();
                let end = Instant::now() + window;
                while Instant::now() < end {
                    match TcpStream::connect_timeout(&cfgs[c].1, Duration::from_millis(200)) {
                        Ok(s) => {
                            drop(s);
                            round[c] += 1;
                        }
                        Err(_) => failures[c] += 1,
                    }
                }
            }
        }
        (counts, failures)
    })
    .join()
    .unwrap();
    let (counts, failures) = counts;
    let secs = window.as_secs_f64();
    println!(
        "new TCP connections/s, {rounds} rounds of 20 ms per configuration, one client thread"
    );
    println!(
        "{:<14} {:>10} {:>12} {:>22} {:>9}",
        "config", "median/s", "ratio(p50)", "ratio p10..p90", "failures"
    );
    let mut results = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let mut rates: Vec<f64> = counts.iter().map(|r| r[i] as f64 / secs).collect();
        let mut ratios: Vec<f64> = counts
            .iter()
            .filter(|r| r[0] > 0)
            .map(|r| r[i] as f64 / r[0] as f64)
            .collect();
        rates.sort_by(|a, b| a.total_cmp(b));
        ratios.sort_by(|a, b| a.total_cmp(b));
        let q = |v: &[f64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        println!(
            "{:<14} {:>10.0} {:>12.3} {:>10.3} .. {:>8.3} {:>9}",
            c.label,
            q(&rates, 0.5),
            q(&ratios, 0.5),
            q(&ratios, 0.1),
            q(&ratios, 0.9),
            failures[i]
        );
        results.push((c.label, q(&ratios, 0.5)));
    }
    let _ = std::fs::remove_dir_all(&dir);
    if let Ok(secs) = std::env::var("CELLWALL_CONNRATE_HOLD") {
        // Keep the labs up for inspection (e.g. `bpftool prog show` with kernel.bpf_stats_enabled).
        std::thread::sleep(Duration::from_secs(secs.parse().unwrap_or(30)));
    }
    drop(guard);
    let cw10k = results.iter().find(|r| r.0 == "cellwall-10k").unwrap().1;
    let floor: f64 = std::env::var("CELLWALL_CONNRATE_FLOOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.97);
    println!(
        "goal: cellwall-10k >= 0.97 of none: {cw10k:.3} {}",
        if cw10k >= 0.97 { "OK" } else { "MISSED" }
    );
    if cw10k < floor {
        eprintln!("cellwall-10k at {cw10k:.3} of the no-program rate is below {floor}");
        std::process::exit(1);
    }
    // A few failed connects (TIME_WAIT reuse races) happen with or without Cellwall; many mean
    // the datapath dropped allowed traffic.
    for (i, c) in configs.iter().enumerate() {
        let total: u64 = counts.iter().map(|r| r[i]).sum();
        if failures[i] * 200 > total {
            eprintln!(
                "{}: {} of {} connections failed",
                c.label, failures[i], total
            );
            std::process::exit(1);
        }
    }
}

/// Takes the labs down even if the benchmark panics.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for lab in &self.0 {
            let _ = Command::new(env!("CARGO_BIN_EXE_cellwall"))
                .args(["lab", "down", "--name", lab])
                .output();
        }
    }
}

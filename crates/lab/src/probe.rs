//! Probes: real connections from every pod to every pod's first address, on a pool of threads
//! that each enter the source pod's namespace (setns affects one thread). A denied connection
//! is a silent drop, so it costs its whole timeout: probes run in parallel.

use crate::error::{LabError, Result};
use crate::netns;
use crate::state::{LabPod, LabState};
use cellwall_policy::{Protocol, WorkloadKey};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// At most this many probe threads.
const WORKERS: usize = 64;

/// One measured truth table: `matrix[from][to]`, keys `namespace/name` (as `analyze`'s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matrix {
    pub protocol: Protocol,
    pub port: u16,
    pub matrix: BTreeMap<String, BTreeMap<String, bool>>,
}

/// One probe cell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Job {
    pub from: usize,
    pub to: usize,
    pub netns: String,
    pub dst: IpAddr,
    pub proto: Protocol,
    pub port: u16,
}

/// The probes to run: those asked for, else every distinct container port; SCTP left out (the
/// lab serves TCP and UDP only). Returns the probes and whether SCTP ones were dropped.
pub(crate) fn plan_probes(
    state: &LabState,
    asked: Vec<(Protocol, u16)>,
) -> (Vec<(Protocol, u16)>, bool) {
    let mut probes = if asked.is_empty() {
        let s: BTreeSet<(Protocol, u16)> = state
            .workloads
            .iter()
            .flat_map(|w| w.ports.iter().map(|p| (p.protocol, p.port)))
            .collect();
        s.into_iter().collect()
    } else {
        asked
    };
    let sctp = probes.iter().any(|p| p.0 == Protocol::Sctp);
    probes.retain(|p| p.0 != Protocol::Sctp);
    (probes, sctp)
}

/// The lab's pods in workload order, with their keys as text.
fn pods(state: &LabState) -> Result<Vec<(String, &LabPod)>> {
    state
        .workloads
        .iter()
        .map(|w| Ok((w.key().to_string(), state.pod(&w.key())?)))
        .collect()
}

/// Every cell of one probe: from each pod to each pod that has an address.
pub(crate) fn jobs(pods: &[(String, &LabPod)], proto: Protocol, port: u16) -> Vec<Job> {
    let mut jobs = Vec::new();
    for (i, (_, from)) in pods.iter().enumerate() {
        for (j, (_, to)) in pods.iter().enumerate() {
            if let Some(dst) = to.ips.first() {
                jobs.push(Job {
                    from: i,
                    to: j,
                    netns: from.netns.clone(),
                    dst: *dst,
                    proto,
                    port,
                });
            }
        }
    }
    jobs
}

/// The truth table from results; cells without a result (no address) are `false`.
pub(crate) fn matrix(
    pods: &[(String, &LabPod)],
    proto: Protocol,
    port: u16,
    results: &[(usize, usize, bool)],
) -> Matrix {
    let mut matrix: BTreeMap<String, BTreeMap<String, bool>> = BTreeMap::new();
    for (from, _) in pods {
        matrix.insert(
            from.clone(),
            pods.iter().map(|(to, _)| (to.clone(), false)).collect(),
        );
    }
    for &(i, j, ok) in results {
        matrix
            .get_mut(&pods[i].0)
            .expect("row")
            .insert(pods[j].0.clone(), ok);
    }
    Matrix {
        protocol: proto,
        port,
        matrix,
    }
}

/// Connects from every pod to every pod for each probe (default: every container port) and
/// returns the measured truth tables.
pub fn probe(name: &str, probes: Vec<(Protocol, u16)>, timeout: Duration) -> Result<Vec<Matrix>> {
    let state = LabState::load(name)?;
    let (probes, sctp) = plan_probes(&state, probes);
    if sctp {
        tracing::warn!(
            "skipping SCTP probes: the lab serves TCP and UDP only (and this kernel {} SCTP)",
            if netns::sctp_available() {
                "has"
            } else {
                "has no"
            }
        );
    }
    let pods = pods(&state)?;
    Ok(probes
        .iter()
        .map(|&(proto, port)| {
            let results = run_jobs(jobs(&pods, proto, port), timeout);
            matrix(&pods, proto, port, &results)
        })
        .collect())
}

/// One real connection from a lab pod to another pod's first address.
pub fn connect_from(
    name: &str,
    from: &WorkloadKey,
    to: &WorkloadKey,
    proto: Protocol,
    port: u16,
    timeout: Duration,
) -> Result<bool> {
    let state = LabState::load(name)?;
    let ns = state.pod(from)?.netns.clone();
    let dst = *state
        .pod(to)?
        .ips
        .first()
        .ok_or_else(|| LabError::NoAddress {
            pod: to.to_string(),
        })?;
    Ok(netns::run_in(&ns, move || {
        connect(proto, dst, port, timeout)
    })?)
}

/// Whether a connection (TCP) or an answered datagram (UDP) gets through within `timeout`.
pub fn connect(proto: Protocol, dst: IpAddr, port: u16, timeout: Duration) -> bool {
    let addr = SocketAddr::new(dst, port);
    match proto {
        Protocol::Tcp => TcpStream::connect_timeout(&addr, timeout).is_ok(),
        Protocol::Udp => {
            let bind: SocketAddr = if dst.is_ipv4() {
                "0.0.0.0:0".parse().expect("valid")
            } else {
                "[::]:0".parse().expect("valid")
            };
            let Ok(u) = UdpSocket::bind(bind) else {
                return false;
            };
            if u.connect(addr).is_err() || u.set_read_timeout(Some(timeout)).is_err() {
                return false;
            }
            let mut buf = [0u8; 256];
            // Two tries inside the timeout: a first datagram can be lost to neighbour resolution.
            for _ in 0..2 {
                if u.send(b"probe").is_err() {
                    return false;
                }
                let _ = u.set_read_timeout(Some(timeout / 2));
                if u.recv(&mut buf).is_ok() {
                    return true;
                }
            }
            false
        }
        Protocol::Sctp => false,
    }
}

/// Runs probe jobs on a pool of threads; each thread enters the source pod's namespace.
fn run_jobs(jobs: Vec<Job>, timeout: Duration) -> Vec<(usize, usize, bool)> {
    let workers = jobs.len().clamp(1, WORKERS);
    let queue = std::sync::Arc::new(std::sync::Mutex::new(jobs));
    let (tx, rx) = std::sync::mpsc::channel();
    let mut handles = Vec::new();
    for _ in 0..workers {
        let (queue, tx) = (queue.clone(), tx.clone());
        handles.push(std::thread::spawn(move || {
            let mut current_ns = String::new();
            loop {
                let job = queue.lock().expect("queue").pop();
                let Some(job) = job else { break };
                if job.netns != current_ns {
                    if netns::enter(&job.netns).is_err() {
                        let _ = tx.send((job.from, job.to, false));
                        continue;
                    }
                    current_ns = job.netns.clone();
                }
                let ok = connect(job.proto, job.dst, job.port, timeout);
                let _ = tx.send((job.from, job.to, ok));
            }
        }));
    }
    drop(tx);
    let results: Vec<_> = rx.iter().collect();
    for h in handles {
        let _ = h.join();
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    #[test]
    fn default_probes_are_every_tcp_and_udp_container_port() {
        let s = sample();
        let (p, sctp) = plan_probes(&s, vec![]);
        assert_eq!(p, [(Protocol::Tcp, 80), (Protocol::Udp, 53)]);
        assert!(sctp);
        let (p, sctp) = plan_probes(&s, vec![(Protocol::Udp, 7), (Protocol::Tcp, 1)]);
        assert_eq!(p, [(Protocol::Udp, 7), (Protocol::Tcp, 1)]);
        assert!(!sctp);
    }

    #[test]
    fn every_pair_is_a_cell_and_missing_results_are_blocked() {
        let mut s = sample();
        s.pods[1].ips.clear();
        let pods = pods(&s).unwrap();
        let j = jobs(&pods, Protocol::Tcp, 80);
        // Nobody can reach t/b: it has no address.
        assert_eq!(j.len(), 2);
        assert!(j.iter().all(|j| j.to == 0));
        assert_eq!(j[1].netns, "cw-t1-p1");
        assert_eq!(j[1].dst, "10.0.0.1".parse::<IpAddr>().unwrap());
        let m = matrix(&pods, Protocol::Tcp, 80, &[(0, 0, true), (1, 0, false)]);
        assert_eq!(m.port, 80);
        assert!(m.matrix["t/a"]["t/a"]);
        assert!(!m.matrix["t/b"]["t/a"]);
        assert!(!m.matrix["t/a"]["t/b"]);
        assert_eq!(m.matrix.len(), 2);
    }

    #[test]
    fn sctp_never_connects() {
        let ip = "127.0.0.1".parse().unwrap();
        assert!(!connect(Protocol::Sctp, ip, 1, Duration::from_millis(10)));
    }
}

//! The lab's server process (what `cellwall lab serve` runs): a real listener on every
//! container port of every pod, each on a thread that entered the pod's namespace. TCP servers
//! say who they are (`NS/NAME`) and then echo until the peer closes (probes close at once,
//! long-lived sessions in revocation tests stay); UDP servers answer every datagram with the
//! pod's name. Writes `ready` in the state directory once every listener is bound.

use crate::error::{io, LabError, Result};
use crate::netns;
use crate::state::{state_dir, LabState};
use cellwall_policy::Protocol;
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::mpsc::Sender;

/// One listener to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    pub netns: String,
    /// `NS/NAME` of the pod.
    pub who: String,
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// Every listener of a lab, and a note for each port that is not served (SCTP).
pub(crate) fn listeners(state: &LabState, sctp: bool) -> Result<(Vec<Listener>, Vec<String>)> {
    let (mut out, mut notes) = (Vec::new(), Vec::new());
    for w in &state.workloads {
        let pod = state.pod(&w.key())?;
        for port in &w.ports {
            if port.protocol == Protocol::Sctp {
                notes.push(format!(
                    "{}: SCTP {} not served: {}",
                    w.key(),
                    port.port,
                    if sctp {
                        "the lab serves TCP and UDP"
                    } else {
                        "this kernel has no SCTP"
                    }
                ));
                continue;
            }
            for ip in &pod.ips {
                out.push(Listener {
                    netns: pod.netns.clone(),
                    who: w.key().to_string(),
                    protocol: port.protocol,
                    addr: SocketAddr::new(*ip, port.port),
                });
            }
        }
    }
    Ok((out, notes))
}

/// Runs the servers of lab `name` until the process ends.
pub fn serve(name: &str) -> Result<()> {
    let state = LabState::load(name)?;
    let (listeners, notes) = listeners(&state, netns::sctp_available())?;
    for n in notes {
        tracing::info!("{n}");
    }
    let expected = listeners.len();
    let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
    let handles: Vec<_> = listeners
        .into_iter()
        .map(|l| {
            let tx = tx.clone();
            std::thread::spawn(move || listen(l, tx))
        })
        .collect();
    drop(tx);
    let mut failed = Vec::new();
    for _ in 0..expected {
        match rx.recv() {
            Ok(Ok(m)) => tracing::info!("listening: {m}"),
            Ok(Err(e)) => failed.push(e),
            Err(_) => break,
        }
    }
    if !failed.is_empty() {
        return Err(LabError::ServersFailed {
            failures: failed.join("; "),
        });
    }
    let ready = state_dir(name).join("ready");
    std::fs::write(&ready, format!("{expected}\n"))
        .map_err(io(format!("writing {}", ready.display())))?;
    tracing::info!("ready: {expected} listeners");
    for h in handles {
        let _ = h.join();
    }
    Ok(())
}

/// One listener's thread: enter the namespace, bind, report, serve forever.
fn listen(l: Listener, tx: Sender<Result<String, String>>) {
    let Listener {
        netns: ns,
        who,
        protocol,
        addr,
    } = l;
    if let Err(e) = netns::enter(&ns) {
        let _ = tx.send(Err(format!("{who}: {e}")));
        return;
    }
    match protocol {
        Protocol::Tcp => match TcpListener::bind(addr) {
            Ok(l) => {
                let _ = tx.send(Ok(format!("{who} TCP {addr}")));
                for s in l.incoming().flatten() {
                    let who = who.clone();
                    let _ = std::thread::Builder::new()
                        .stack_size(64 * 1024)
                        .spawn(move || greet_and_echo(s, &who));
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("{who}: bind TCP {addr}: {e}")));
            }
        },
        _ => match UdpSocket::bind(addr) {
            Ok(u) => {
                let _ = tx.send(Ok(format!("{who} UDP {addr}")));
                let mut buf = [0u8; 1500];
                while let Ok((_, from)) = u.recv_from(&mut buf) {
                    let _ = u.send_to(who.as_bytes(), from);
                }
            }
            Err(e) => {
                let _ = tx.send(Err(format!("{who}: bind UDP {addr}: {e}")));
            }
        },
    }
}

/// Says who we are, then echoes until the peer closes.
fn greet_and_echo(mut s: TcpStream, who: &str) {
    if writeln!(s, "{who}").is_err() {
        return;
    }
    let Ok(mut r) = s.try_clone() else { return };
    let _ = std::io::copy(&mut r, &mut s);
}

/// Whether `ip` is one of the lab's listening addresses (for tests of the plan).
#[cfg(test)]
fn serves(l: &[Listener], ip: std::net::IpAddr, port: u16, protocol: Protocol) -> bool {
    l.iter()
        .any(|x| x.addr == SocketAddr::new(ip, port) && x.protocol == protocol)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::sample;

    #[test]
    fn every_tcp_and_udp_port_of_every_address_is_served_sctp_is_noted() {
        let s = sample();
        let (l, notes) = listeners(&s, false).unwrap();
        let a = "10.0.0.1".parse().unwrap();
        let b = "10.0.0.2".parse().unwrap();
        assert!(serves(&l, a, 80, Protocol::Tcp));
        assert!(serves(&l, a, 53, Protocol::Udp));
        assert!(serves(&l, b, 80, Protocol::Tcp));
        assert_eq!(l.len(), 3);
        assert_eq!(l[0].netns, "cw-t1-p0");
        assert_eq!(l[0].who, "t/a");
        assert_eq!(notes, ["t/b: SCTP 9 not served: this kernel has no SCTP"]);
        let (_, notes) = listeners(&s, true).unwrap();
        assert_eq!(
            notes,
            ["t/b: SCTP 9 not served: the lab serves TCP and UDP"]
        );
    }
}

//! What the root lab benchmarks share: running `cellwall`, a listener that does not overflow,
//! and taking down labs an interrupted run left behind.
#![allow(dead_code)] // each bench uses its part

use std::net::{SocketAddr, TcpListener};
use std::process::Command;

/// Runs `cellwall` with `args`; panics with its stderr if it fails; returns its stdout.
pub fn cw(args: &[&str]) -> String {
    cw_env(args, &[])
}

/// `cw` with extra environment variables for the CLI (and what it starts, e.g. a lab's agent).
pub fn cw_env(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_cellwall"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run cellwall");
    assert!(
        out.status.success(),
        "cellwall {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A TCP listener on `port` with a backlog of 4096: std's 128 overflows when the server thread
/// is not scheduled for a few milliseconds, and each dropped handshake costs a connect timeout.
pub fn listen(port: u16) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SocketAddr::from(([0, 0, 0, 0], port)).into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Takes down labs whose name says they belong to a run (`owner(name)` = its pid) of the
/// program `comm` that is no longer alive (killed runs skip their cleanup).
pub fn down_stale_labs(comm: &str, owner: impl Fn(&str) -> Option<u32>) {
    let Ok(rd) = std::fs::read_dir("/run/cellwall/labs") else {
        return;
    };
    // Names first: taking a lab down removes its directory, which would disturb the listing.
    let names: Vec<String> = rd
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    for name in names {
        let Some(pid) = owner(&name) else {
            continue;
        };
        // A killed run can linger as a zombie (comm readable, state Z) until it is reaped.
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.split_once(") ").is_some_and(|(head, tail)| {
                head.contains(&format!("({comm}"))
                    && !tail.starts_with('Z')
                    && !tail.starts_with('X')
            })
        });
        if !alive {
            eprintln!("taking down {name}, left by an interrupted run (pid {pid})");
            let _ = Command::new(env!("CARGO_BIN_EXE_cellwall"))
                .args(["lab", "down", "--name", &name])
                .output();
        }
    }
}

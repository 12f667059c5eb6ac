//! Labs in tests and benchmarks: unique names, taken down however the test ends (panics
//! included), labs left behind by killed runs, and what lab benchmarks share.

use crate::bin::Bin;
use cellwall_api::client::{lab_dir, labs_root};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

#[cfg(feature = "lab")]
pub use cellwall_lab::{netns, LabPod, LabState};

/// A lab name unique to this test process: `TAG` and the pid (mod 100,000, so names stay
/// short enough for interface names).
pub fn unique_name(tag: &str) -> String {
    format!("{tag}{}", std::process::id() % 100000)
}

/// A lab's file (state, pid files, logs, the manager's data) under its state directory.
pub fn lab_file(name: &str, file: &str) -> PathBuf {
    lab_dir(name).join(file)
}

/// The pid in one of a lab's pid files (`agent.pid`, `manager.pid`, ...).
pub fn pid_of(name: &str, file: &str) -> u32 {
    std::fs::read_to_string(lab_file(name, file))
        .unwrap_or_else(|e| panic!("{file}: {e}"))
        .trim()
        .parse()
        .expect("pid")
}

/// Takes labs down when dropped (however the test or bench ends).
pub struct Guard {
    bin: Bin,
    names: Vec<String>,
}

impl Guard {
    /// `bin` is the `cellwall` binary.
    pub fn new(bin: Bin) -> Self {
        Self {
            bin,
            names: Vec::new(),
        }
    }

    /// Registers a lab (before `lab up`: a lab that fails half-way is taken down too).
    pub fn add(&mut self, name: &str) {
        self.names.push(name.to_string());
    }

    /// Takes a lab down now and forgets it.
    pub fn down(&mut self, name: &str) {
        self.bin.quietly(&["lab", "down", "--name", name]);
        self.names.retain(|n| n != name);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for n in &self.names {
            self.bin.quietly(&["lab", "down", "--name", n]);
        }
    }
}

/// One lab of a test, with a scratch directory for its manifests (`$TMP/cellwall-NAME`); on
/// drop the lab goes down and the directory goes away.
pub struct Lab {
    pub name: String,
    pub dir: PathBuf,
    pub bin: Bin,
}

impl Lab {
    /// A lab named `name` (not up yet).
    pub fn new(bin: Bin, name: &str) -> Lab {
        let dir = std::env::temp_dir().join(format!("cellwall-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        Lab {
            name: name.to_string(),
            dir,
            bin,
        }
    }

    /// `lab up` of `manifests` as [`unique_name`]`(tag)`.
    pub fn up(bin: Bin, tag: &str, manifests: &str) -> Lab {
        Lab::up_with(bin, tag, manifests, &[])
    }

    /// [`Lab::up`] with more `lab up` arguments (e.g. `--source kubernetes`).
    pub fn up_with(bin: Bin, tag: &str, manifests: &str, extra: &[&str]) -> Lab {
        let lab = Lab::new(bin, &unique_name(tag));
        let f = lab.file("up.yaml", manifests);
        let mut args = vec!["lab", "up", "-f", &f, "--name", &lab.name];
        args.extend(extra);
        lab.cw(&args);
        lab
    }

    /// Writes a file in the lab's scratch directory; returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().to_string()
    }

    /// Runs `cellwall ARGS`; fails with its stderr if it fails; returns stdout.
    pub fn cw(&self, args: &[&str]) -> String {
        self.bin.stdout(args)
    }

    /// `cellwall ARGS --lab NAME`: (success, stdout, stderr).
    pub fn cw_lab(&self, args: &[&str]) -> (bool, String, String) {
        let mut a = args.to_vec();
        a.extend(["--lab", &self.name]);
        self.bin.result(&a)
    }

    /// `lab apply -f FILE`.
    pub fn apply(&self, file: &str) {
        self.cw(&["lab", "apply", "-f", file, "--name", &self.name]);
    }

    /// A file of the running lab (under its state directory).
    pub fn lab_file(&self, file: &str) -> PathBuf {
        lab_file(&self.name, file)
    }

    /// The lab's state as `lab up` saved it.
    #[cfg(feature = "lab")]
    pub fn state(&self) -> LabState {
        state(&self.name)
    }

    /// The pod named `name` (in any namespace).
    #[cfg(feature = "lab")]
    pub fn pod(&self, name: &str) -> LabPod {
        pod(&self.name, name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.bin.quietly(&["lab", "down", "--name", &self.name]);
        let _ = std::fs::remove_dir_all(&self.dir);
        let n = leftover_namespaces(&self.name);
        if n > 0 {
            eprintln!("WARNING: {n} namespaces of lab {} are left", self.name);
        }
    }
}

/// Network namespaces of lab `name` that still exist.
pub fn leftover_namespaces(name: &str) -> usize {
    let left = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    let prefix = format!("cw-{name}-");
    left.lines().filter(|l| l.starts_with(&prefix)).count()
}

/// The state of running lab `name`.
#[cfg(feature = "lab")]
pub fn state(name: &str) -> LabState {
    LabState::load(name).unwrap_or_else(|e| panic!("lab {name}: {e}"))
}

/// Pod `pod` (by name, any namespace) of running lab `name`.
#[cfg(feature = "lab")]
pub fn pod(name: &str, pod: &str) -> LabPod {
    state(name)
        .pods
        .into_iter()
        .find(|p| p.key.name == pod)
        .unwrap_or_else(|| panic!("no pod {pod} in lab {name}"))
}

/// Takes down labs whose name says they belong to a run (`owner(name)` = its pid) of the
/// program `comm` that is no longer alive (killed runs skip their cleanup).
pub fn down_stale_labs(bin: &Bin, comm: &str, owner: impl Fn(&str) -> Option<u32>) {
    let Ok(rd) = std::fs::read_dir(labs_root()) else {
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
        if !alive(pid, comm) {
            eprintln!("taking down {name}, left by an interrupted run (pid {pid})");
            bin.quietly(&["lab", "down", "--name", &name]);
        }
    }
}

/// Whether process `pid` runs and is `comm` (a killed run can linger as a zombie, comm
/// readable, state Z, until it is reaped).
fn alive(pid: u32, comm: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.split_once(") ").is_some_and(|(head, tail)| {
            head.contains(&format!("({comm}")) && !tail.starts_with('Z') && !tail.starts_with('X')
        })
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_per_process_and_short() {
        let n = unique_name("conf");
        assert!(n.starts_with("conf") && n.len() <= 9, "{n}");
        assert_eq!(n, unique_name("conf"));
    }

    #[test]
    fn only_live_processes_of_the_program_count() {
        let me = std::process::id();
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert!(alive(me, comm.trim()));
        assert!(!alive(me, "surely-not-this"));
        assert!(!alive(u32::MAX, comm.trim()));
    }

    #[test]
    fn listeners_take_a_deep_backlog() {
        let l = listen(0).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
    }
}

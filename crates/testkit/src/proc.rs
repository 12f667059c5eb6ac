//! A process's CPU time and memory from /proc.

use std::process::Command;

/// CPU time (utime + stime, clock ticks) and memory (VmRSS, VmHWM, KiB) of a process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Proc {
    pub ticks: u64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

/// Reads process `pid`; panics if it is gone.
pub fn read(pid: u32) -> Proc {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("process {pid} is gone: {e}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    parse(&stat, &status)
}

fn parse(stat: &str, status: &str) -> Proc {
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let rest: Vec<&str> = stat
        .rsplit_once(") ")
        .expect("stat format")
        .1
        .split_whitespace()
        .collect();
    let field = |i: usize| rest[i - 3].parse::<u64>().expect("stat number");
    let kib = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Proc {
        ticks: field(14) + field(15),
        rss_kib: kib("VmRSS:"),
        hwm_kib: kib("VmHWM:"),
    }
}

/// CPU seconds (user + system, at 100 ticks per second) and resident memory now and at
/// peak, in MiB.
pub fn usage(pid: u32) -> (f64, f64, f64) {
    let p = read(pid);
    (
        p.ticks as f64 / 100.0,
        p.rss_kib as f64 / 1024.0,
        p.hwm_kib as f64 / 1024.0,
    )
}

/// Starts the peak (VmHWM) over from the current resident size (`clear_refs` 5, Linux 4.0+),
/// so a phase's peak is its own, not the model loading's before it.
pub fn reset_peak(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// Clock ticks per second (`getconf CLK_TCK`, 100 if unknown).
pub fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_after_the_command_name() {
        let stat = "42 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 120 30 0 0";
        let status = "Name:\tx\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n";
        assert_eq!(
            parse(stat, status),
            Proc {
                ticks: 150,
                rss_kib: 1024,
                hwm_kib: 2048
            }
        );
        let me = read(std::process::id());
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
        assert!(clock_ticks() > 0.0);
    }
}

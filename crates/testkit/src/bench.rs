//! What benchmarks share: arguments, percentiles, goals within a noise band.

/// The number after `name` in `args`, else `default`.
pub fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} {v}: expected a number"))
        })
        .unwrap_or(default)
}

/// The `p` quantile (0..=1) of `v`, nearest rank.
pub fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    s[((s.len() as f64 - 1.0) * p).round() as usize]
}

/// `CELLWALL_BENCH_NOISE_FACTOR`, else `default`: how far past a goal a run may land before
/// it fails (CI's band).
pub fn noise_factor(default: f64) -> f64 {
    std::env::var("CELLWALL_BENCH_NOISE_FACTOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Goal: p99 < 1 s. Past `CELLWALL_BENCH_NOISE_FACTOR` × the goal the run fails (CI's band).
pub fn goal(failures: &mut Vec<String>, name: &str, p99_ms: f64) {
    let factor = noise_factor(1.0);
    let limit = 1000.0;
    let verdict = if p99_ms <= limit {
        "OK"
    } else if p99_ms <= limit * factor {
        "MISSED (within the noise band)"
    } else {
        "MISSED"
    };
    println!("  goal {name} p99 < 1 s: {p99_ms:.0} ms {verdict}");
    if p99_ms > limit * factor {
        failures.push(name.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_and_percentiles() {
        let a: Vec<String> = ["x", "--n", "7"].map(String::from).to_vec();
        assert_eq!(arg(&a, "--n", 1), 7);
        assert_eq!(arg(&a, "--m", 1), 1);
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(pct(&v, 0.0), 1.0);
        assert_eq!(pct(&v, 0.5), 3.0);
        assert_eq!(pct(&v, 1.0), 5.0);
        let mut f = Vec::new();
        goal(&mut f, "fast", 10.0);
        assert!(f.is_empty());
    }
}

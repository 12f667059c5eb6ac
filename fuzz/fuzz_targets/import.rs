//! Label imports (`cellwall_policy::import`): CSV and JSON from a CMDB or a scanner.
//!
//! Input: the file's text (bytes read as UTF-8, invalid sequences replaced), parsed as
//! `import.json` when it looks like JSON and as `import.csv` always (text starting with `[` is
//! JSON whatever the name).
//!
//! Asserts:
//! - no panic;
//! - an error names the file and a position inside the input (line 1..=lines+1, column >= 1);
//! - every entry's line is a line of the input, every label key carries the source's prefix
//!   and is a valid label key, every value a valid label value;
//! - entries re-serialize and read back equal (they are stored as JSON);
//! - `apply` on a small inventory matches entries as documented: by IP, hostname (name in any
//!   namespace) or namespace/name, later entries winning, and counts each entry's matches.

#![no_main]

use cellwall_policy::import::{self, Entry, ImportError, Target};
use cellwall_policy::labels::{validate_label_key, validate_label_value};
use cellwall_policy::{Inventory, Labels, Workload};
use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;

const SOURCE: &str = "cmdb";

fn inventory() -> Inventory {
    let mut inv = Inventory::default();
    for (ns, name, ip) in [
        ("shop", "web", "10.0.0.1"),
        ("shop", "db", "10.0.0.2"),
        ("vms", "web", "2001:db8::1"),
        ("vms", "vm1", "10.0.0.3"),
    ] {
        let w = Workload {
            namespace: ns.into(),
            name: name.into(),
            labels: Labels::from([("app".to_string(), name.to_string())]).into(),
            ips: vec![ip.parse().unwrap()],
            ports: vec![],
            node: None,
            host_network: false,
            owner: None,
        };
        inv.workloads.insert(w.key(), w.into());
    }
    inv
}

fn check_error(e: &ImportError, origin: &str, text: &str) {
    let lines = text.lines().count().max(1) + 1;
    assert_eq!(e.file, origin);
    assert!(
        e.line >= 1 && e.line <= lines,
        "line {} outside 1..={lines}: {e}",
        e.line
    );
    assert!(e.column >= 1, "column 0: {e}");
    assert!(e.to_string().starts_with(origin), "{e}");
}

fn check_entries(entries: &[Entry], text: &str) {
    let lines = text.lines().count().max(1);
    let pfx = import::prefix(SOURCE);
    for e in entries {
        assert!(
            e.line >= 1 && e.line <= lines,
            "entry line {} of {lines}",
            e.line
        );
        for (k, v) in &e.labels {
            assert!(k.starts_with(&pfx), "{k}");
            validate_label_key(k).unwrap_or_else(|m| panic!("{k}: {m}"));
            validate_label_value(v).unwrap_or_else(|m| panic!("{k}={v}: {m}"));
        }
    }
    let json = serde_json::to_vec(entries).expect("entries serialize");
    let back: Vec<Entry> = serde_json::from_slice(&json).expect("entries read back");
    assert_eq!(back, entries);

    // apply against the documented matching rules.
    let mut inv = inventory();
    let mut want: BTreeMap<_, Labels> = inv
        .workloads
        .iter()
        .map(|(k, w)| (k.clone(), Labels::clone(&w.labels)))
        .collect();
    let mut want_counts = Vec::new();
    for e in entries {
        let mut n = 0;
        for w in inv.workloads.values() {
            let hit = match &e.target {
                Target::Ip(ip) => w.ips.contains(ip),
                Target::Hostname(h) => w.name == *h,
                Target::Workload(k) => w.key() == *k,
            };
            if hit {
                n += 1;
                want.get_mut(&w.key())
                    .unwrap()
                    .extend(e.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        want_counts.push(n);
    }
    let counts = import::apply(&mut inv, entries);
    assert_eq!(counts, want_counts);
    for (k, w) in &inv.workloads {
        assert_eq!(w.labels, want[k], "{k}");
    }
}

fn run(origin: &str, text: &str) {
    match import::parse(origin, text, SOURCE) {
        Err(e) => check_error(&e, origin, text),
        Ok(entries) => check_entries(&entries, text),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    run("import.csv", &text);
    let t = text.trim_start();
    if t.starts_with('[') || t.starts_with('{') {
        run("import.json", &text);
    }
});

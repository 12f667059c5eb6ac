//! Labels from outside (a CMDB export, a vulnerability scanner's report): parsing and matching.
//! Pure: the manager reads files or URLs and passes the text in.
//!
//! CSV: a header row; exactly one column named `ip`, `hostname` or `workload` (`namespace/name`)
//! says which workloads a row is about; every other column is a label (an empty cell sets none).
//! JSON: an array of objects, each with exactly one of `ip`, `hostname`, `workload`, and either a
//! `labels` object or other string fields as labels.
//! Imported labels are kept apart from native ones: each key is prefixed with
//! `SOURCE.import.cellwall.io/`, and policies select them like any other label.

use crate::labels::{validate_label_key, validate_label_value, Labels};
use crate::model::{Inventory, WorkloadKey};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;

/// Which workloads an entry is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Ip(IpAddr),
    /// A workload's name in any namespace (a VM's or host's hostname).
    Hostname(String),
    Workload(WorkloadKey),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Entry {
    pub target: Target,
    /// Already prefixed.
    pub labels: Labels,
    pub line: usize,
}

/// An import file that cannot be read: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ImportError {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// The label-key prefix of a source: `SOURCE.import.cellwall.io/`.
pub fn prefix(source: &str) -> String {
    format!("{source}.import.cellwall.io/")
}

/// Checks a source name (it becomes part of label keys).
pub fn validate_source(source: &str) -> Result<(), String> {
    let ok = !source.is_empty()
        && source.len() <= 40
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !source.starts_with('-')
        && !source.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "source {source:?}: expected 1-40 lowercase letters, digits or '-' (it prefixes label keys)"
        ))
    }
}

const TARGETS: [&str; 3] = ["ip", "hostname", "workload"];

fn target(kind: &str, v: &str) -> Result<Target, String> {
    match kind {
        "ip" => v
            .parse()
            .map(Target::Ip)
            .map_err(|_| format!("ip {v:?}: expected an IPv4 or IPv6 address")),
        "hostname" if !v.is_empty() => Ok(Target::Hostname(v.to_string())),
        "hostname" => Err("hostname is empty".into()),
        _ => WorkloadKey::parse(v)
            .map(Target::Workload)
            .ok_or_else(|| format!("workload {v:?}: expected NAMESPACE/NAME")),
    }
}

fn label(source_prefix: &str, key: &str, value: &str) -> Result<(String, String), String> {
    let k = format!("{source_prefix}{}", key.trim());
    validate_label_key(&k)?;
    validate_label_value(value.trim())?;
    Ok((k, value.trim().to_string()))
}

/// Splits one CSV line (RFC 4180 quoting) into (column, field) pairs; columns are 1-based.
fn csv_fields(line: &str) -> Result<Vec<(usize, String)>, (usize, String)> {
    let mut out = Vec::new();
    let b: Vec<char> = line.chars().collect();
    let mut i = 0;
    loop {
        let col = i + 1;
        let mut f = String::new();
        if b.get(i) == Some(&'"') {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err((col, "unterminated quoted field".into())),
                    Some('"') if b.get(i + 1) == Some(&'"') => {
                        f.push('"');
                        i += 2;
                    }
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(c) => {
                        f.push(*c);
                        i += 1;
                    }
                }
            }
            if !matches!(b.get(i), None | Some(',')) {
                return Err((i + 1, "expected ',' after a quoted field".into()));
            }
        } else {
            while let Some(c) = b.get(i) {
                if *c == ',' {
                    break;
                }
                f.push(*c);
                i += 1;
            }
        }
        out.push((col, f));
        if b.get(i) == Some(&',') {
            i += 1;
        } else {
            return Ok(out);
        }
    }
}

fn parse_csv(file: &str, text: &str, pfx: &str) -> Result<Vec<Entry>, ImportError> {
    let err = |line, column, message: String| ImportError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let Some((hline, header)) = lines.next() else {
        return Err(err(1, 1, "empty file: expected a header row".into()));
    };
    let header = csv_fields(header).map_err(|(c, m)| err(hline, c, m))?;
    let targets: Vec<&(usize, String)> = header
        .iter()
        .filter(|(_, h)| TARGETS.contains(&h.trim()))
        .collect();
    let tcol = match targets[..] {
        [one] => one,
        [] => {
            return Err(err(
                hline,
                1,
                "no column says which workloads a row is about: expected one named ip, hostname or workload".into(),
            ))
        }
        [_, two, ..] => {
            return Err(err(
                hline,
                two.0,
                format!("a second target column {:?}: use one of ip, hostname, workload", two.1),
            ))
        }
    };
    let tidx = header.iter().position(|h| h == tcol).expect("found above");
    for (c, h) in &header {
        if h.trim() != tcol.1.trim() {
            label(pfx, h, "x").map_err(|m| err(hline, *c, m))?;
        }
    }
    let mut out = Vec::new();
    for (ln, l) in lines {
        let fields = csv_fields(l).map_err(|(c, m)| err(ln, c, m))?;
        if fields.len() != header.len() {
            return Err(err(
                ln,
                fields.last().map(|f| f.0).unwrap_or(1),
                format!("{} fields, the header has {}", fields.len(), header.len()),
            ));
        }
        let (tc, tv) = &fields[tidx];
        let t = target(tcol.1.trim(), tv.trim()).map_err(|m| err(ln, *tc, m))?;
        let mut labels = Labels::new();
        for (i, (c, v)) in fields.iter().enumerate() {
            if i == tidx || v.trim().is_empty() {
                continue;
            }
            let (k, v) = label(pfx, &header[i].1, v).map_err(|m| err(ln, *c, m))?;
            labels.insert(k, v);
        }
        out.push(Entry {
            target: t,
            labels,
            line: ln,
        });
    }
    Ok(out)
}

/// 1-based line and column of the start of the `n`-th element of the top-level JSON array.
fn json_item_position(text: &str, n: usize) -> (usize, usize) {
    let (mut depth, mut idx, mut in_str, mut esc) = (0i32, 0usize, false, false);
    let (mut line, mut col) = (1, 0);
    let mut expect_item = false;
    for ch in text.chars() {
        if ch == '\n' {
            line += 1;
            col = 0;
        } else {
            col += 1;
        }
        if in_str {
            match (esc, ch) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        if expect_item && !ch.is_whitespace() {
            if idx == n {
                return (line, col);
            }
            expect_item = false;
        }
        match ch {
            '"' => in_str = true,
            '[' | '{' => {
                depth += 1;
                if depth == 1 && ch == '[' {
                    expect_item = true;
                }
            }
            ']' | '}' => depth -= 1,
            ',' if depth == 1 => {
                idx += 1;
                expect_item = true;
            }
            _ => {}
        }
    }
    (line, 1)
}

fn parse_json(file: &str, text: &str, pfx: &str) -> Result<Vec<Entry>, ImportError> {
    // serde_json says column 0 (and line 0 for some errors) where it stopped before a line's
    // first character, e.g. at the end of the input; positions here are 1-based.
    let items: Vec<serde_json::Value> = serde_json::from_str(text).map_err(|e| ImportError {
        file: file.to_string(),
        line: e.line().max(1),
        column: e.column().max(1),
        message: format!("{e}: expected a JSON array of objects"),
    })?;
    let mut out = Vec::new();
    for (n, item) in items.iter().enumerate() {
        let (line, column) = json_item_position(text, n);
        let err = |m: String| ImportError {
            file: file.to_string(),
            line,
            column,
            message: format!("[{n}]: {m}"),
        };
        let obj = item
            .as_object()
            .ok_or_else(|| err("expected an object".into()))?;
        let ts: Vec<&str> = TARGETS
            .iter()
            .copied()
            .filter(|t| obj.contains_key(*t))
            .collect();
        let [tk] = ts[..] else {
            return Err(err(format!(
                "expected exactly one of ip, hostname, workload; found {}",
                if ts.is_empty() {
                    "none".to_string()
                } else {
                    ts.join(", ")
                }
            )));
        };
        let tv = obj[tk]
            .as_str()
            .ok_or_else(|| err(format!("{tk}: expected a string")))?;
        let t = target(tk, tv).map_err(err)?;
        let mut labels = Labels::new();
        let mut add = |k: &str, v: &serde_json::Value| -> Result<(), ImportError> {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Bool(b) => b.to_string(),
                serde_json::Value::Number(x) => x.to_string(),
                _ => return Err(err(format!("{k}: expected a string, number or boolean"))),
            };
            let (k, v) = label(pfx, k, &v).map_err(|m| err(format!("{k}: {m}")))?;
            labels.insert(k, v);
            Ok(())
        };
        for (k, v) in obj {
            match k.as_str() {
                k if TARGETS.contains(&k) => {}
                "labels" => {
                    let m = v
                        .as_object()
                        .ok_or_else(|| err("labels: expected an object".into()))?;
                    for (k, v) in m {
                        add(k, v)?;
                    }
                }
                k => add(k, v)?,
            }
        }
        out.push(Entry {
            target: t,
            labels,
            line,
        });
    }
    Ok(out)
}

/// Parses an import file (`.json` as JSON, anything else as CSV) for `source`.
pub fn parse(file: &str, text: &str, source: &str) -> Result<Vec<Entry>, ImportError> {
    validate_source(source).map_err(|m| ImportError {
        file: file.to_string(),
        line: 1,
        column: 1,
        message: m,
    })?;
    let pfx = prefix(source);
    if file.ends_with(".json") || text.trim_start().starts_with('[') {
        parse_json(file, text, &pfx)
    } else {
        parse_csv(file, text, &pfx)
    }
}

/// Adds the imported labels of `entries` to the workloads they match (later entries win).
/// Returns how many workloads each entry matched.
pub fn apply(inv: &mut Inventory, entries: &[Entry]) -> Vec<usize> {
    entries
        .iter()
        .map(|e| {
            let mut n = 0;
            for w in inv.workloads.values_mut() {
                let hit = match &e.target {
                    Target::Ip(ip) => w.ips.contains(ip),
                    Target::Hostname(h) => &w.name == h,
                    Target::Workload(k) => w.namespace == k.namespace && w.name == k.name,
                };
                if hit {
                    n += 1;
                    let w = std::sync::Arc::make_mut(w);
                    for (k, v) in &e.labels {
                        w.labels.insert(k.clone(), v.clone());
                    }
                }
            }
            n
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_json_with_precise_errors() {
        let csv = "# scanner export\nip,cve-2017-0144,severity\n10.0.0.1,vulnerable,critical\n\"10.0.0.2\",,low\n";
        let e = parse("r.csv", csv, "scanner").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[0].labels
                .get("scanner.import.cellwall.io/cve-2017-0144")
                .map(String::as_str),
            Some("vulnerable")
        );
        assert_eq!(e[1].labels.len(), 1);
        assert_eq!(e[1].line, 4);
        let bad = parse("r.csv", "ip,owner\n10.0.0.1,team a\n", "cmdb").unwrap_err();
        assert_eq!((bad.line, bad.column), (2, 10), "{bad}");
        assert!(
            bad.to_string().starts_with("r.csv:2:10: label value"),
            "{bad}"
        );
        let bad = parse("r.csv", "ip,owner\n10.0.0.x,a\n", "cmdb").unwrap_err();
        assert_eq!((bad.line, bad.column), (2, 1), "{bad}");
        let bad = parse("r.csv", "ip,hostname\n", "cmdb").unwrap_err();
        assert_eq!((bad.line, bad.column), (1, 4), "{bad}");
        let bad = parse("r.csv", "ip,a\n1.2.3.4\n", "cmdb").unwrap_err();
        assert!(bad.message.contains("1 fields, the header has 2"), "{bad}");
        let bad = parse("r.csv", "ip,a\n1.2.3.4,x\n", "Bad_Source").unwrap_err();
        assert!(bad.message.contains("source"), "{bad}");

        let json = "[\n  {\"workload\": \"a/web\", \"labels\": {\"owner\": \"shop\"}},\n  {\"hostname\": \"vm1\", \"tier\": 1}\n]";
        let e = parse("c.json", json, "cmdb").unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            e[1].labels
                .get("cmdb.import.cellwall.io/tier")
                .map(String::as_str),
            Some("1")
        );
        let bad = parse(
            "c.json",
            "[\n  {\"ip\": \"1.2.3.4\"},\n  {\"ip\": \"1.2.3.4\", \"hostname\": \"x\"}\n]",
            "cmdb",
        )
        .unwrap_err();
        assert_eq!((bad.line, bad.column), (3, 3), "{bad}");
        let bad = parse("c.json", "[{\"ip\": \"1.2.3.4\",}]", "cmdb").unwrap_err();
        assert_eq!(bad.line, 1);
        assert!(bad.column > 1);
        // Found by fuzzing (fuzz/ import target): errors where serde_json stops before a line's
        // first character (an object instead of an array, input ending after a newline) said
        // column 0.
        for text in [
            "{",
            "[\n",
            "{\"ip\": \"1.2.3.4\"}",
            "[{\"ip\": \"1.2.3.4\"},\n",
        ] {
            let bad = parse("c.json", text, "cmdb").unwrap_err();
            assert!(bad.line >= 1 && bad.column >= 1, "{text:?}: {bad}");
        }
    }

    #[test]
    fn matching_by_ip_hostname_and_workload() {
        use crate::model::Workload;
        let mut inv = Inventory::default();
        for (ns, name, ip) in [("a", "web", "10.0.0.1"), ("b", "vm1", "10.0.0.2")] {
            let w = Workload {
                namespace: ns.into(),
                name: name.into(),
                labels: Labels::new().into(),
                ips: vec![ip.parse().unwrap()],
                ports: vec![],
                node: None,
                host_network: false,
                owner: None,
            };
            inv.workloads.insert(w.key(), w.into());
        }
        let e = parse("r.csv", "ip,x\n10.0.0.1,1\n10.9.9.9,2\n", "s").unwrap();
        assert_eq!(apply(&mut inv, &e), vec![1, 0]);
        let e = parse(
            "r.json",
            "[{\"hostname\": \"vm1\", \"y\": \"2\"}, {\"workload\": \"a/web\", \"y\": \"3\"}]",
            "s",
        )
        .unwrap();
        assert_eq!(apply(&mut inv, &e), vec![1, 1]);
        let web = &inv.workloads[&WorkloadKey::new("a", "web")];
        assert_eq!(
            web.labels.get("s.import.cellwall.io/x").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            web.labels.get("s.import.cellwall.io/y").map(String::as_str),
            Some("3")
        );
    }
}

//! Talking to the manager's REST API, and the kubectl-style commands that do: `apply`,
//! `delete`, `get`, `flows`, `explain`.
//!
//! Where the manager is and which token to use, first match wins: `--server`/`--token`;
//! `CELLWALL_SERVER`/`CELLWALL_TOKEN`; the config file in `--config` or `CELLWALL_CONFIG`;
//! `--lab NAME` (that lab's manager); the manager's default `client.json`
//! (/var/lib/cellwall or ~/.local/share/cellwall); the only lab that is up.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug, Clone, Default)]
pub struct Target {
    /// Manager API URL, e.g. http://127.0.0.1:7480 [env: CELLWALL_SERVER]
    #[arg(long, global = true)]
    pub server: Option<String>,
    /// Bearer token [env: CELLWALL_TOKEN]
    #[arg(long, global = true)]
    pub token: Option<String>,
    /// Client config file ({"server": ..., "token": ...}) [env: CELLWALL_CONFIG]
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Target the manager of this lab.
    #[arg(long = "lab", global = true)]
    pub lab: Option<String>,
}

/// The manager's REST client ([`cellwall_api::client::Client`]) with untyped calls, while the
/// commands move to the typed ones.
pub struct Client {
    pub api: cellwall_api::client::Client,
}

impl std::ops::Deref for Client {
    type Target = cellwall_api::client::Client;
    fn deref(&self) -> &Self::Target {
        &self.api
    }
}

impl Client {
    pub fn from_target(t: &Target) -> Result<Self> {
        Ok(Self {
            api: cellwall_api::client::Client::from_target(&cellwall_api::client::Target {
                server: t.server.clone(),
                token: t.token.clone(),
                config: t.config.clone(),
                lab: t.lab.clone(),
            })?,
        })
    }

    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value> {
        let q: serde_json::Map<String, Value> = query
            .iter()
            .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
            .collect();
        Ok(self.api.get_json(path, &q)?)
    }

    pub fn post_stream(&self, path: &str, body: Value) -> Result<Box<dyn std::io::Read + Send>> {
        Ok(self.api.post_stream(path, &body)?)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        Ok(self.api.post_json(path, &body)?)
    }

    /// Sends manifest files for apply or delete; returns the manager's answer.
    pub fn write_files(
        &self,
        files: &[PathBuf],
        delete: bool,
        ignore_unknown: bool,
    ) -> Result<Value> {
        let req = documents(files, ignore_unknown)?;
        Ok(serde_json::to_value(self.api.apply(&req, delete)?)?)
    }

    pub fn wait_applied(&self, revision: u64, timeout: Duration) -> Result<()> {
        Ok(self.api.wait_applied(revision, timeout)?)
    }
}

/// Reads manifest files into an apply request, parsing them here first: the same errors as the
/// manager's, without a round trip.
pub fn documents(files: &[PathBuf], ignore_unknown: bool) -> Result<cellwall_api::ApplyRequest> {
    if files.iter().any(|f| f.as_os_str() == "-") {
        bail!("- (standard input) is not supported with the manager yet; pass files");
    }
    let read = cellwall_manifests::read_files(files)?;
    crate::manifests::report_skipped(cellwall_manifests::parse_files(&read, ignore_unknown)?);
    Ok(cellwall_api::ApplyRequest {
        documents: read
            .into_iter()
            .map(|f| cellwall_api::Document {
                file: f.name,
                text: f.text,
            })
            .collect(),
        ignore_unknown_kinds: ignore_unknown,
    })
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

#[derive(clap::Args, Debug)]
pub struct ApplyArgs {
    /// Manifest files or directories (same kinds as `cellwall analyze`).
    #[arg(short = 'f', long = "filename", required = true, num_args = 1..)]
    pub files: Vec<PathBuf>,
    /// Wait until every node enforces the change.
    #[arg(long)]
    pub wait: bool,
    /// With --wait: how long, in seconds.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
    #[arg(long)]
    pub ignore_unknown_kinds: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

pub fn apply(a: ApplyArgs, delete: bool) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let r = c.write_files(&a.files, delete, a.ignore_unknown_kinds)?;
    let rev = r["revision"].as_u64().unwrap_or(0);
    if a.output == Format::Table {
        let mut out = std::io::stdout().lock();
        for ch in r["changes"].as_array().into_iter().flatten() {
            writeln!(
                out,
                "{} {} {}",
                ch["kind"].as_str().unwrap_or("?").to_lowercase(),
                ch["key"].as_str().unwrap_or("?"),
                ch["action"].as_str().unwrap_or("?")
            )?;
        }
        writeln!(out, "revision {rev}")?;
    }
    if a.wait {
        let t0 = Instant::now();
        c.wait_applied(rev, Duration::from_secs(a.timeout))?;
        if a.output == Format::Table {
            println!("enforced on every node in {:?}", t0.elapsed());
        }
    }
    match a.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&r)?),
        Format::Table => {}
    }
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resource {
    #[value(alias = "policy")]
    Policies,
    #[value(alias = "workload", alias = "pods")]
    Workloads,
    #[value(alias = "node")]
    Nodes,
    #[value(alias = "ns", alias = "namespace")]
    Namespaces,
    /// Who changed what and when.
    Audit,
    /// Workloads in quarantine.
    #[value(alias = "quarantine")]
    Quarantines,
    /// Label imports (sources, schedules).
    Imports,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    #[arg(value_enum)]
    pub resource: Resource,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

fn age(ms: i64) -> String {
    let s = ((crate::analyze::now_unix() * 1000 - ms) / 1000).max(0);
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn left(s: Option<i64>) -> String {
    match s {
        None => "-".into(),
        Some(0) => "expired".into(),
        Some(s) if s < 120 => format!("{s}s"),
        Some(s) if s < 7200 => format!("{}m", s / 60),
        Some(s) => format!("{}h", s / 3600),
    }
}

/// Prints rows as aligned columns.
pub fn table(rows: &[Vec<String>]) -> String {
    let n = rows.iter().map(Vec::len).max().unwrap_or(0);
    let w: Vec<usize> = (0..n)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        s.push_str(line.join("  ").trim_end());
        s.push('\n');
    }
    s
}

pub fn get(a: GetArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let (path, key) = match a.resource {
        Resource::Policies => ("/v1/policies", "items"),
        Resource::Workloads => ("/v1/workloads", "items"),
        Resource::Nodes => ("/v1/nodes", "items"),
        Resource::Namespaces => ("/v1/namespaces", "items"),
        Resource::Audit => ("/v1/audit", "changes"),
        Resource::Quarantines => ("/v1/quarantine", "items"),
        Resource::Imports => ("/v1/imports", "items"),
    };
    let v = c.get(path, &[])?;
    match a.output {
        Format::Json => {
            println!("{}", serde_json::to_string_pretty(&v)?);
            return Ok(());
        }
        Format::Yaml => {
            print!("{}", serde_yaml::to_string(&v)?);
            return Ok(());
        }
        Format::Table => {}
    }
    let items = v[key].as_array().cloned().unwrap_or_default();
    let s = |x: &Value| match x {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        o => o.to_string(),
    };
    let labels = |x: &Value| {
        x.as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, _)| *k != "kubernetes.io/metadata.name")
                    .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    match a.resource {
        Resource::Policies => {
            rows.push(
                [
                    "POLICY",
                    "TIER",
                    "MODE",
                    "RULES",
                    "VERSION",
                    "CHANGED BY",
                    "AGE",
                    "EXPIRES IN",
                ]
                .map(String::from)
                .to_vec(),
            );
            for p in &items {
                rows.push(vec![
                    s(&p["id"]),
                    s(&p["tier"]),
                    s(&p["mode"]),
                    s(&p["rules"]),
                    s(&p["version"]),
                    s(&p["changed_by"]),
                    age(p["changed_at_ms"].as_i64().unwrap_or(0)),
                    left(p["seconds_left"].as_i64()),
                ]);
            }
        }
        Resource::Workloads => {
            rows.push(
                ["WORKLOAD", "NODE", "IPS", "LABELS"]
                    .map(String::from)
                    .to_vec(),
            );
            for w in &items {
                rows.push(vec![
                    format!("{}/{}", s(&w["namespace"]), s(&w["name"])),
                    s(&w["node"]),
                    w["ips"]
                        .as_array()
                        .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
                        .unwrap_or_default(),
                    labels(&w["labels"]),
                ]);
            }
        }
        Resource::Namespaces => {
            rows.push(["NAMESPACE", "LABELS"].map(String::from).to_vec());
            for n in &items {
                rows.push(vec![s(&n["name"]), labels(&n["labels"])]);
            }
        }
        Resource::Nodes => {
            rows.push(
                [
                    "NODE",
                    "APPLIED",
                    "LAG",
                    "LAST APPLY",
                    "SEEN",
                    "WORKLOADS",
                    "FLOW LOSS",
                    "ERROR",
                ]
                .map(String::from)
                .to_vec(),
            );
            let rev = v["revision"].as_u64().unwrap_or(0);
            for n in &items {
                let loss = n["kernel_events_lost"].as_u64().unwrap_or(0)
                    + n["agent_records_dropped"].as_u64().unwrap_or(0);
                rows.push(vec![
                    s(&n["name"]),
                    format!("{}/{rev}", s(&n["applied_version"])),
                    s(&n["lag"]),
                    format!("{}µs", s(&n["apply_micros"])),
                    format!("{}s ago", s(&n["seconds_since_seen"])),
                    n["workloads"]
                        .as_array()
                        .map(|a| a.len())
                        .unwrap_or(0)
                        .to_string(),
                    format!("{loss} ({} batches missed)", s(&n["flow_batches_missed"])),
                    n["last_error"]
                        .as_str()
                        .filter(|e| !e.is_empty())
                        .unwrap_or("-")
                        .to_string(),
                ]);
            }
        }
        Resource::Quarantines => {
            rows.push(
                ["WORKLOAD", "SINCE", "BY", "EXCEPTION", "REASON"]
                    .map(String::from)
                    .to_vec(),
            );
            for q in &items {
                rows.push(vec![
                    s(&q["workload"]),
                    age(q["since_ms"].as_i64().unwrap_or(0)) + " ago",
                    s(&q["by"]),
                    s(&q["allow_from"]),
                    s(&q["reason"]),
                ]);
            }
        }
        Resource::Imports => {
            rows.push(
                ["SOURCE", "ENTRIES", "FROM", "EVERY", "VERSION", "BY", "AGE"]
                    .map(String::from)
                    .to_vec(),
            );
            for i in &items {
                rows.push(vec![
                    s(&i["source"]),
                    s(&i["entries"]),
                    s(&i["origin"]),
                    i["every_ms"]
                        .as_u64()
                        .map(|ms| format!("{}s", ms / 1000))
                        .unwrap_or("-".into()),
                    s(&i["version"]),
                    s(&i["by"]),
                    age(i["changed_at_ms"].as_i64().unwrap_or(0)),
                ]);
            }
        }
        Resource::Audit => {
            rows.push(
                [
                    "REVISION", "WHEN", "WHO", "KIND", "OBJECT", "VERSION", "CHANGE",
                ]
                .map(String::from)
                .to_vec(),
            );
            for e in &items {
                rows.push(vec![
                    s(&e["revision"]),
                    age(e["at_ms"].as_i64().unwrap_or(0)) + " ago",
                    s(&e["actor"]),
                    s(&e["kind"]),
                    s(&e["key"]),
                    s(&e["version"]),
                    if e["deleted"].as_bool() == Some(true) {
                        "deleted"
                    } else if e["version"].as_i64() == Some(1) {
                        "created"
                    } else {
                        "configured"
                    }
                    .into(),
                ]);
            }
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Denied,
    Audit,
    Revoked,
}

#[derive(clap::Args, Debug)]
pub struct FlowsArgs {
    /// Keep printing new flows as they arrive (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    /// Only flows newer than this: 30s, 10m, 2h, 1d.
    #[arg(long)]
    pub since: Option<String>,
    #[arg(long, value_enum)]
    pub verdict: Option<Verdict>,
    /// Flows with this workload at either end.
    #[arg(long, value_parser = crate::analyze::parse_key)]
    pub workload: Option<cellwall_policy::WorkloadKey>,
    /// At most this many (newest).
    #[arg(long, default_value_t = 1000)]
    pub limit: usize,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

pub fn flow_line(f: &Value) -> String {
    let ns = f["time_unix_ns"].as_u64().unwrap_or(0);
    let secs = ns / 1_000_000_000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!(
        "{h:02}:{m:02}:{s:02}.{:03}  {:<8} {} -> {} {}/{}  x{}  {}",
        (ns / 1_000_000) % 1000,
        f["verdict"].as_str().unwrap_or("?"),
        f["src"].as_str().unwrap_or("?"),
        f["dst"].as_str().unwrap_or("?"),
        f["protocol"].as_str().unwrap_or("?"),
        f["port"],
        f["count"],
        f["rule"].as_str().unwrap_or("(no rule: default allow)")
    )
}

pub fn flows(a: FlowsArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let mut q: Vec<(&str, String)> = vec![("limit", a.limit.to_string())];
    if let Some(s) = &a.since {
        q.push(("since", s.clone()));
    }
    if let Some(v) = a.verdict {
        q.push(("verdict", format!("{v:?}").to_lowercase()));
    }
    if let Some(w) = &a.workload {
        q.push(("workload", w.to_string()));
    }
    let mut out = std::io::stdout().lock();
    let mut after = 0i64;
    let mut first = true;
    loop {
        let mut qq = q.clone();
        if after > 0 {
            qq.push(("after", after.to_string()));
        }
        let v = c.get("/v1/flows", &qq)?;
        let rows = v["flows"].as_array().cloned().unwrap_or_default();
        if let Some(last) = rows.last() {
            after = last["id"].as_i64().unwrap_or(after);
        }
        match (a.output, a.follow) {
            (Format::Json, false) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            (Format::Yaml, false) => write!(out, "{}", serde_yaml::to_string(&v)?)?,
            (Format::Json | Format::Yaml, true) => {
                for r in &rows {
                    writeln!(out, "{}", serde_json::to_string(r)?)?;
                }
            }
            (Format::Table, _) => {
                for r in &rows {
                    writeln!(out, "{}", flow_line(r))?;
                }
                if !a.follow || first {
                    let loss = v["loss"].as_object().cloned().unwrap_or_default();
                    let total: u64 = loss
                        .values()
                        .map(|l| {
                            l["kernel_events_lost"].as_u64().unwrap_or(0)
                                + l["agent_records_dropped"].as_u64().unwrap_or(0)
                        })
                        .sum();
                    let missed: u64 = loss
                        .values()
                        .map(|l| l["batches_missed"].as_u64().unwrap_or(0))
                        .sum();
                    if !a.follow {
                        writeln!(
                            out,
                            "{} flow records; lost on the way: {total} events, {missed} batches",
                            rows.len()
                        )?;
                    }
                }
            }
        }
        out.flush()?;
        first = false;
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

#[derive(clap::Args, Debug)]
pub struct ExplainArgs {
    #[arg(value_parser = crate::analyze::parse_key)]
    pub from: cellwall_policy::WorkloadKey,
    #[arg(value_parser = crate::analyze::parse_key)]
    pub to: cellwall_policy::WorkloadKey,
    /// PROTO/PORT, e.g. TCP/5432.
    #[arg(value_parser = crate::analyze::parse_probe)]
    pub probe: (cellwall_policy::Protocol, u16),
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

pub fn explain(a: ExplainArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let v = c.get(
        "/v1/explain",
        &[
            ("from", a.from.to_string()),
            ("to", a.to.to_string()),
            ("probe", format!("{}/{}", a.probe.0, a.probe.1)),
        ],
    )?;
    match a.output {
        Format::Json => println!("{}", serde_json::to_string_pretty(&v["explanation"])?),
        Format::Yaml => print!("{}", serde_yaml::to_string(&v["explanation"])?),
        Format::Table => print!("{}", v["text"].as_str().unwrap_or("")),
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct QuarantineArgs {
    /// The workload to cut off, NAMESPACE/NAME.
    #[arg(value_parser = crate::analyze::parse_key)]
    pub workload: cellwall_policy::WorkloadKey,
    /// Management exception: pods with these labels (k=v[,k=v]) in any namespace, or
    /// cidr:ADDR/LEN, may still connect to it (e.g. a forensics host).
    #[arg(long)]
    pub allow_from: Option<String>,
    /// Why (kept in the audit trail).
    #[arg(long)]
    pub reason: Option<String>,
    /// Wait until every node enforces it.
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

/// Cuts a workload off in both directions, established connections included, ahead of every
/// allow rule.
pub fn quarantine(a: QuarantineArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let r = c.post(
        "/v1/quarantine",
        json!({"workload": a.workload.to_string(), "allow_from": a.allow_from, "reason": a.reason}),
    )?;
    let rev = r["revision"].as_u64().unwrap_or(0);
    if a.wait {
        c.wait_applied(rev, Duration::from_secs(15))?;
    }
    println!("{} quarantined (revision {rev})", a.workload);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReleaseArgs {
    #[arg(value_parser = crate::analyze::parse_key)]
    pub workload: cellwall_policy::WorkloadKey,
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn release(a: ReleaseArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let r = c.post("/v1/release", json!({"workload": a.workload.to_string()}))?;
    let rev = r["revision"].as_u64().unwrap_or(0);
    if a.wait {
        c.wait_applied(rev, Duration::from_secs(15))?;
    }
    println!("{} released (revision {rev})", a.workload);
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ImportArgs {
    /// Name of the source (e.g. cmdb, scanner): labels get the key prefix
    /// SOURCE.import.cellwall.io/ and a new import from the same source replaces the last.
    #[arg(long)]
    pub source: String,
    /// A CSV (header with one of ip, hostname, workload; other columns are labels) or JSON
    /// (array of objects) file, imported now.
    #[arg(short = 'f', long = "filename", conflicts_with = "location")]
    pub file: Option<PathBuf>,
    /// Instead: a path on the manager's host or an http:// URL the manager reads itself.
    #[arg(long, required_unless_present = "file")]
    pub location: Option<String>,
    /// With --location: re-import this often (e.g. 1h); a failed run changes nothing.
    #[arg(long, requires = "location")]
    pub every: Option<String>,
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub target: Target,
}

pub fn import(a: ImportArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let mut body = json!({"source": a.source});
    if let Some(f) = &a.file {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))?;
        body["file"] = json!(f.display().to_string());
        body["text"] = json!(text);
    }
    if let Some(l) = &a.location {
        body["location"] = json!(l);
    }
    if let Some(e) = &a.every {
        body["every"] = json!(e);
    }
    let r = c.post("/v1/imports", body)?;
    let rev = r["revision"].as_u64().unwrap_or(0);
    if a.wait {
        c.wait_applied(rev, Duration::from_secs(15))?;
    }
    println!(
        "{}: {} entries, {} workloads labelled, {} entries matched nothing ({}, revision {rev})",
        a.source,
        r["entries"],
        r["matched_workloads"],
        r["unmatched_entries"],
        r["changes"][0]["action"].as_str().unwrap_or("?")
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct AlertsArgs {
    /// Keep printing new alerts as they are raised (Ctrl-C stops).
    #[arg(long)]
    pub follow: bool,
    #[arg(short = 'o', long = "output", value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub target: Target,
}

/// Compliance alerts: flows that escaped policy, audit-only and expiring allowances, new edges.
pub fn alerts(a: AlertsArgs) -> Result<()> {
    let c = Client::from_target(&a.target)?;
    let mut after = 0i64;
    let mut out = std::io::stdout().lock();
    loop {
        let v = c.get("/v1/alerts", &[("after", after.to_string())])?;
        let items = v["alerts"].as_array().cloned().unwrap_or_default();
        if let Some(l) = items.last() {
            after = l["id"].as_i64().unwrap_or(after);
        }
        match (a.output, a.follow) {
            (Format::Json, false) => writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?,
            (Format::Yaml, false) => write!(out, "{}", serde_yaml::to_string(&v)?)?,
            (Format::Json | Format::Yaml, true) => {
                for i in &items {
                    writeln!(out, "{}", serde_json::to_string(i)?)?;
                }
            }
            (Format::Table, _) => {
                for i in &items {
                    writeln!(
                        out,
                        "#{} {} {:<8} {:<15} {} -> {} {}/{} x{}: {}{}",
                        i["id"],
                        age(i["at_ms"].as_i64().unwrap_or(0)) + " ago",
                        i["severity"].as_str().unwrap_or("?"),
                        i["kind"].as_str().unwrap_or("?"),
                        i["src"].as_str().unwrap_or("?"),
                        i["dst"].as_str().unwrap_or("?"),
                        i["protocol"].as_str().unwrap_or("?"),
                        i["port"],
                        i["connections"],
                        i["message"].as_str().unwrap_or(""),
                        i["rule"]
                            .as_str()
                            .map(|r| format!(" [{r}]"))
                            .unwrap_or_default()
                    )?;
                }
                if !a.follow {
                    writeln!(
                        out,
                        "{} alerts ({} suppressed by the rate limit, {} not delivered to webhooks)",
                        items.len(),
                        v["suppressed"],
                        v["webhook_dropped"]
                    )?;
                }
            }
        }
        out.flush()?;
        if !a.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

//! Reading manifest files and directories (the I/O half of loading; parsing is in the pure
//! policy crate) and assembling them into an inventory and a policy set.

use anyhow::{bail, Context, Result};
use cellwall_policy::load::{parse_file, Located, Object, Source};
use cellwall_policy::{Cidr, Inventory, Policy, PolicyId, WorkloadKey};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where pods without `status.podIP` get their address from (deterministic, in name order).
pub const DEFAULT_POD_POOL: &str = "10.244.0.0/16";

/// Expands `-f` arguments: files as given, directories recursively (`.yaml`, `.yml`, `.json`, in
/// sorted order so results never depend on directory listing order).
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list directory {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()
        .with_context(|| format!("cannot list directory {}", dir.display()))?;
    entries.sort();
    for e in entries {
        if e.is_dir() {
            walk(&e, out)?;
        } else if matches!(
            e.extension().and_then(|x| x.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(e);
        }
    }
    Ok(())
}

/// Reads and parses every file. Stops at the first broken file with its precise error; unknown
/// kinds are errors unless `ignore_unknown` (then they are reported on stderr and skipped).
pub fn load_objects(paths: &[PathBuf], ignore_unknown: bool) -> Result<Vec<Located>> {
    let files = expand_paths(paths)?;
    if files.is_empty() {
        bail!(
            "no manifests found in {} (looked for .yaml, .yml and .json files)",
            display_paths(paths)
        );
    }
    let mut objects = Vec::new();
    for f in files {
        let (name, text) = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
                .context("cannot read standard input")?;
            ("<stdin>".to_string(), s)
        } else {
            let text = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            let text = String::from_utf8(text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: not UTF-8 text (invalid byte at offset {})",
                    f.display(),
                    e.utf8_error().valid_up_to()
                )
            })?;
            (f.display().to_string(), text)
        };
        let parsed = parse_file(&name, &text)?;
        if let Some(u) = parsed.unknown.first() {
            if !ignore_unknown {
                bail!("{u}\n(use --ignore-unknown-kinds to skip objects of other kinds)");
            }
            for u in &parsed.unknown {
                eprintln!("warning: skipped: {u}");
            }
        }
        objects.extend(parsed.objects);
    }
    Ok(objects)
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An inventory and policies assembled from manifests, with where each came from.
#[derive(Debug, Default)]
pub struct Assembled {
    pub inventory: Inventory,
    pub policies: Vec<Policy>,
}

/// Builds the inventory and policy set. Two objects with the same kind and name are an error that
/// names both places; so are two pods with the same address.
pub fn assemble(objects: Vec<Located>, pool: Cidr) -> Result<Assembled> {
    let mut seen: BTreeMap<String, Source> = BTreeMap::new();
    let mut out = Assembled::default();
    let mut policies: BTreeMap<PolicyId, Policy> = BTreeMap::new();
    for Located { object, source } in objects {
        let what = object.describe();
        if let Some(first) = seen.get(&what) {
            bail!("{source}: {what} is defined twice (first at {first})");
        }
        seen.insert(what, source);
        match object {
            Object::Namespace(n) => {
                out.inventory.namespaces.insert(n.name.clone(), n);
            }
            Object::Pod(w) => {
                out.inventory.workloads.insert(w.key(), w);
            }
            Object::Node(n) => {
                out.inventory.nodes.insert(n.name.clone(), n);
            }
            Object::Policy(p) => {
                policies.insert(p.id.clone(), *p);
            }
        }
    }
    let failed = out.inventory.assign_missing_ips(pool);
    if !failed.is_empty() {
        bail!(
            "the address pool {pool} is too small for {} pods without status.podIP",
            failed.len()
        );
    }
    let mut owners: BTreeMap<IpAddr, WorkloadKey> = BTreeMap::new();
    for w in out.inventory.workloads.values().filter(|w| !w.host_network) {
        for ip in &w.ips {
            if let Some(other) = owners.insert(*ip, w.key()) {
                bail!("pods {other} and {} both have address {ip}", w.key());
            }
        }
    }
    out.policies = policies.into_values().collect();
    Ok(out)
}

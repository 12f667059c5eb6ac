//! Reading manifest files and directories (the I/O half of loading; parsing is in the pure
//! policy crate) and assembling them into an inventory and a policy set. Shared by
//! `cellwall analyze`, the lab and the CLI's writes to the manager, so all three read the same
//! files the same way and report the same errors.

// A library reports through return values and `tracing`, never by printing.
#![deny(clippy::print_stdout, clippy::print_stderr)]

use cellwall_policy::load::{parse_file, LoadError, Located, Object, Source};
use cellwall_policy::{Cidr, Inventory, Policy, PolicyId, WorkloadKey};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Where pods without `status.podIP` get their address from (deterministic, in name order).
pub const DEFAULT_POD_POOL: &str = "10.244.0.0/16";

/// Why manifests could not be read or assembled; every variant names the place.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { path: String, offset: usize },
    #[error("no manifests found in {paths} (looked for .yaml, .yml and .json files)")]
    Empty { paths: String },
    #[error(transparent)]
    Parse(#[from] LoadError),
    #[error("{first}\n(use --ignore-unknown-kinds to skip objects of other kinds)")]
    UnknownKind { first: String },
    #[error("{source_at}: {what} is defined twice (first at {first})")]
    Duplicate {
        source_at: Source,
        what: String,
        first: Source,
    },
    #[error("the address pool {pool} is too small for {pods} pods without status.podIP")]
    PoolTooSmall { pool: Cidr, pods: usize },
    #[error("pods {first} and {second} both have address {ip}")]
    SameAddress {
        first: WorkloadKey,
        second: WorkloadKey,
        ip: IpAddr,
    },
}

pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// Expands `-f` arguments: files as given, directories recursively (`.yaml`, `.yml`, `.json`, in
/// sorted order so results never depend on directory listing order). `-` (stdin) passes through.
pub fn expand_paths(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            out.push(p.clone());
            continue;
        }
        let meta = std::fs::metadata(p).map_err(read_err(p))?;
        if meta.is_dir() {
            walk(p, &mut out)?;
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn read_err(p: &Path) -> impl FnOnce(std::io::Error) -> ManifestError + '_ {
    move |source| ManifestError::Read {
        path: p.display().to_string(),
        source,
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .and_then(|rd| rd.map(|e| e.map(|e| e.path())).collect())
        .map_err(read_err(dir))?;
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

/// One manifest file's name (as errors print it) and text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// Reads every file `paths` expands to (`-` is standard input, read once).
pub fn read_files(paths: &[PathBuf]) -> Result<Vec<File>> {
    let files = expand_paths(paths)?;
    if files.is_empty() {
        return Err(ManifestError::Empty {
            paths: display_paths(paths),
        });
    }
    files.iter().map(|f| read_file(f)).collect()
}

fn read_file(f: &Path) -> Result<File> {
    if f.as_os_str() == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map_err(|source| {
            ManifestError::Read {
                path: "standard input".into(),
                source,
            }
        })?;
        return Ok(File {
            name: "<stdin>".into(),
            text: s,
        });
    }
    let bytes = std::fs::read(f).map_err(read_err(f))?;
    let text = String::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 {
        path: f.display().to_string(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    Ok(File {
        name: f.display().to_string(),
        text,
    })
}

/// Parsed objects, and what was skipped because of its kind (only with `ignore_unknown`).
#[derive(Debug, Default)]
pub struct Loaded {
    pub objects: Vec<Located>,
    /// Objects of kinds Cellwall does not read, described with their place.
    pub skipped: Vec<String>,
}

/// Parses files. Stops at the first broken file with its precise error; unknown kinds are
/// errors unless `ignore_unknown` (then they are listed in [`Loaded::skipped`]).
pub fn parse_files(files: &[File], ignore_unknown: bool) -> Result<Loaded> {
    let mut out = Loaded::default();
    for f in files {
        let parsed = parse_file(&f.name, &f.text)?;
        if let Some(u) = parsed.unknown.first() {
            if !ignore_unknown {
                return Err(ManifestError::UnknownKind {
                    first: u.to_string(),
                });
            }
        }
        out.skipped
            .extend(parsed.unknown.iter().map(ToString::to_string));
        out.objects.extend(parsed.objects);
    }
    Ok(out)
}

/// [`read_files`] then [`parse_files`].
pub fn load_objects(paths: &[PathBuf], ignore_unknown: bool) -> Result<Loaded> {
    parse_files(&read_files(paths)?, ignore_unknown)
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An inventory and policies assembled from manifests.
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
            return Err(ManifestError::Duplicate {
                source_at: source,
                what,
                first: first.clone(),
            });
        }
        seen.insert(what, source);
        match object {
            Object::Namespace(n) => {
                out.inventory.namespaces.insert(n.name.clone(), n);
            }
            Object::Pod(w) => {
                out.inventory.workloads.insert(w.key(), w.into());
            }
            Object::Node(n) => {
                out.inventory.nodes.insert(n.name.clone(), n);
            }
            Object::Policy(p) => {
                policies.insert(p.id.clone(), *p);
            }
            // A declared host is a workload on its node, with its single addresses.
            Object::Host(h) => {
                let w = h.workload();
                out.inventory.workloads.insert(w.key(), w.into());
            }
        }
    }
    let failed = out.inventory.assign_missing_ips(pool);
    if !failed.is_empty() {
        return Err(ManifestError::PoolTooSmall {
            pool,
            pods: failed.len(),
        });
    }
    let mut owners: BTreeMap<IpAddr, WorkloadKey> = BTreeMap::new();
    for w in out.inventory.workloads.values().filter(|w| !w.host_network) {
        for ip in &w.ips {
            if let Some(first) = owners.insert(*ip, w.key()) {
                return Err(ManifestError::SameAddress {
                    first,
                    second: w.key(),
                    ip: *ip,
                });
            }
        }
    }
    out.policies = policies.into_values().collect();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Vec<Located> {
        parse_files(
            &[File {
                name: name.into(),
                text: text.into(),
            }],
            false,
        )
        .unwrap()
        .objects
    }

    #[test]
    fn duplicates_name_both_places() {
        let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\n";
        let mut objs = parse("one.yaml", pod);
        objs.extend(parse("two.yaml", pod));
        let e = assemble(objs, DEFAULT_POD_POOL.parse().unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("two.yaml:1 "), "{msg}");
        assert!(msg.contains("first at one.yaml:1 "), "{msg}");
    }

    #[test]
    fn same_address_is_refused() {
        let pods = "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: x}\nstatus: {podIP: 10.0.0.1}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: x}\nstatus: {podIP: 10.0.0.1}\n";
        let e = assemble(parse("p.yaml", pods), DEFAULT_POD_POOL.parse().unwrap()).unwrap_err();
        assert!(matches!(e, ManifestError::SameAddress { .. }), "{e}");
    }

    #[test]
    fn unknown_kinds_are_errors_unless_skipped() {
        let f = File {
            name: "k.yaml".into(),
            text: "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n".into(),
        };
        assert!(matches!(
            parse_files(std::slice::from_ref(&f), false),
            Err(ManifestError::UnknownKind { .. })
        ));
        let l = parse_files(&[f], true).unwrap();
        assert_eq!(l.skipped.len(), 1);
        assert!(l.objects.is_empty());
    }
}

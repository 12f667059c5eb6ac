//! Labels from outside sources (a CMDB export, a vulnerability scanner's report): imported all
//! or nothing, kept per source under its own key prefix, re-read on a schedule when the manager
//! reads them from a location.

use crate::config::{now_ms, parse_duration_ms};
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::{Body, ChangeAction, ImportRecord, Kind, Write};
use cellwall_api::{ImportItem, ImportList, ImportRequest, ImportResult};
use std::collections::HashMap;

pub use crate::config::ImportSources;

/// What a caller is told when a location cannot be used: nothing about which files exist,
/// which ports are open or what a file holds (the manager's log has the detail).
const UNREADABLE: &str = "the location could not be read as an import (the manager's log says why)";

impl ImportSources {
    /// Reads an import location: a file under an allowed directory or an http:// URL under an
    /// allowed prefix, size-capped.
    pub fn read(&self, location: &str) -> Result<String, ManagerError> {
        if self.dirs.is_empty() && self.url_prefixes.is_empty() {
            return Err(ManagerError::Forbidden(
                "this manager reads no import locations: its operator allows them with \
                 cellwall-manager --import-dir DIR or --import-url PREFIX"
                    .into(),
            ));
        }
        let r = if location.starts_with("http://") || location.starts_with("https://") {
            self.read_url(location)
        } else {
            self.read_file(location)
        };
        r.map_err(|e| match e {
            Denied::NotAllowed => ManagerError::Forbidden(
                "the location is not under a directory or URL prefix this manager allows".into(),
            ),
            Denied::Unreadable(detail) => {
                tracing::warn!("import location {location:?}: {detail}");
                ManagerError::Invalid(UNREADABLE.into())
            }
        })
    }

    fn read_url(&self, url: &str) -> Result<String, Denied> {
        if !self
            .url_prefixes
            .iter()
            .any(|p| url.starts_with(p.as_str()))
        {
            return Err(Denied::NotAllowed);
        }
        if url.starts_with("https://") {
            return Err(Denied::Unreadable("https is not supported yet".into()));
        }
        let resp = ureq::get(url)
            .timeout(std::time::Duration::from_secs(30))
            .call()
            .map_err(|e| Denied::Unreadable(e.to_string()))?;
        let mut body = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(resp.into_reader(), self.max_bytes + 1),
            &mut body,
        )
        .map_err(|e| Denied::Unreadable(e.to_string()))?;
        self.text(body)
    }

    fn read_file(&self, path: &str) -> Result<String, Denied> {
        // Resolved first (symbolic links, `..`), then checked against the allowed directories.
        let real = std::fs::canonicalize(path).map_err(|_| Denied::NotAllowed)?;
        let allowed = self
            .dirs
            .iter()
            .filter_map(|d| std::fs::canonicalize(d).ok())
            .any(|d| real.starts_with(&d));
        if !allowed {
            return Err(Denied::NotAllowed);
        }
        let f = std::fs::File::open(&real).map_err(|e| Denied::Unreadable(e.to_string()))?;
        let meta = f
            .metadata()
            .map_err(|e| Denied::Unreadable(e.to_string()))?;
        if !meta.is_file() {
            return Err(Denied::Unreadable("not a regular file".into()));
        }
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(f, self.max_bytes + 1), &mut body)
            .map_err(|e| Denied::Unreadable(e.to_string()))?;
        self.text(body)
    }

    fn text(&self, body: Vec<u8>) -> Result<String, Denied> {
        if body.len() as u64 > self.max_bytes {
            return Err(Denied::Unreadable(format!(
                "larger than {} bytes",
                self.max_bytes
            )));
        }
        String::from_utf8(body).map_err(|_| Denied::Unreadable("not UTF-8 text".into()))
    }
}

enum Denied {
    /// Outside what the operator allows (said to the caller without detail).
    NotAllowed,
    /// Allowed, but unusable (the detail goes to the manager's log only).
    Unreadable(String),
}

/// Scheduled imports: when each source was last read (by this process).
#[derive(Default)]
pub struct Schedule {
    last: HashMap<String, i64>,
}

impl Manager {
    /// Imports labels for `source` from `text` (all or nothing: a bad file changes nothing).
    /// Returns the commit and, per entry, how many workloads it matched.
    pub fn import_labels(
        &self,
        actor: &str,
        rec: ImportSource<'_>,
        text: &str,
    ) -> Result<ImportResult, ManagerError> {
        let entries = cellwall_policy::import::parse(rec.origin, text, rec.source)
            .map_err(|e| ManagerError::Invalid(e.to_string()))?;
        let mut inv = self.published().doc.inventory();
        let matched = cellwall_policy::import::apply(&mut inv, &entries);
        let rec = ImportRecord {
            source: rec.source.to_string(),
            origin: rec.origin.to_string(),
            entries,
            every_ms: rec.every_ms,
            location: rec.location.map(str::to_string),
        };
        let n = rec.entries.len();
        let detail = format!("{}: {n} entries from {}", rec.source, rec.origin);
        let c = self.store.write(
            actor,
            &[Write {
                kind: Kind::Import,
                key: rec.source.clone(),
                body: Some(Body::Import(rec)),
            }],
        )?;
        if c.changes[0].action != ChangeAction::Unchanged {
            self.store.log_event(actor, "import", &detail)?;
        }
        self.publish()?;
        Ok(ImportResult {
            revision: c.revision,
            changes: c.changes,
            entries: n,
            matched_workloads: matched.iter().sum(),
            unmatched_entries: matched.iter().filter(|n| **n == 0).count(),
        })
    }

    /// `POST /v1/imports`: text sent now, or a location the manager reads (and, with `every`,
    /// reads again on a schedule).
    pub fn import_request(
        &self,
        actor: &str,
        req: &ImportRequest,
    ) -> Result<ImportResult, ManagerError> {
        let every_ms =
            match &req.every {
                Some(e) => Some(parse_duration_ms(e).filter(|ms| *ms >= 10_000).ok_or_else(
                    || {
                        ManagerError::Invalid(format!(
                            "every={e}: expected a duration of at least 10s, like 1h"
                        ))
                    },
                )?),
                None => None,
            };
        let (origin, text) = match (&req.text, &req.location) {
            (Some(t), None) => (
                req.file.clone().unwrap_or_else(|| "import".into()),
                t.clone(),
            ),
            (None, Some(loc)) => (loc.clone(), self.import_sources.read(loc)?),
            _ => {
                return Err(ManagerError::Invalid(
                    "give either text (with file) or location".into(),
                ))
            }
        };
        if every_ms.is_some() && req.location.is_none() {
            return Err(ManagerError::Invalid(
                "every needs a location the manager can read again".into(),
            ));
        }
        let src = ImportSource {
            source: &req.source,
            origin: &origin,
            location: req.location.as_deref(),
            every_ms,
        };
        self.import_labels(actor, src, &text)
    }

    /// Every label import as last run.
    pub fn import_list(&self) -> Result<ImportList, ManagerError> {
        let items = self
            .store
            .current(Kind::Import)?
            .into_iter()
            .filter_map(|c| {
                let Body::Import(i) = c.body else {
                    return None;
                };
                Some(ImportItem {
                    source: i.source,
                    origin: i.origin,
                    entries: i.entries.len(),
                    location: i.location,
                    every_ms: i.every_ms,
                    by: c.changed_by,
                    changed_at_ms: c.changed_at_ms,
                    version: c.version,
                })
            })
            .collect();
        Ok(ImportList { items })
    }

    /// Runs the scheduled imports that are due; failures are recorded as events and change
    /// nothing.
    pub fn run_scheduled_imports(&self, schedule: &mut Schedule) {
        let cur = match self.store.current(Kind::Import) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!("reading the scheduled imports: {e}");
                return;
            }
        };
        for c in cur {
            let Body::Import(i) = c.body else {
                continue;
            };
            let (Some(loc), Some(every)) = (&i.location, i.every_ms) else {
                continue;
            };
            let now = now_ms();
            let due = schedule
                .last
                .get(&i.source)
                .is_none_or(|t| now - t >= every as i64);
            if !due {
                continue;
            }
            schedule.last.insert(i.source.clone(), now);
            let src = ImportSource {
                source: &i.source,
                origin: loc,
                location: Some(loc),
                every_ms: Some(every),
            };
            let r = self
                .import_sources
                .read(loc)
                .and_then(|text| self.import_labels("scheduler", src, &text));
            if let Err(e) = r {
                let _ = self.store.log_event(
                    "scheduler",
                    "import-failed",
                    &format!("{}: {e}", i.source),
                );
            }
        }
    }
}

/// Where imported entries come from.
#[derive(Debug, Clone, Copy)]
pub struct ImportSource<'a> {
    pub source: &'a str,
    /// File name or URL (errors cite it).
    pub origin: &'a str,
    pub location: Option<&'a str>,
    pub every_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allowed_places_are_read_and_errors_reveal_nothing() {
        let dir = std::env::temp_dir().join(format!("cw-import-{}", std::process::id()));
        let inside = dir.join("allowed");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::write(inside.join("ok.csv"), "ip,role\n10.0.0.1,db\n").unwrap();
        std::fs::write(dir.join("secret.csv"), "password,hunter2\n").unwrap();
        std::fs::write(inside.join("big.csv"), "x".repeat(100)).unwrap();
        let none = ImportSources::default();
        assert!(matches!(
            none.read("/etc/passwd"),
            Err(ManagerError::Forbidden(_))
        ));
        let s = ImportSources {
            dirs: vec![inside.clone()],
            url_prefixes: vec!["http://127.0.0.1:1/imports/".into()],
            max_bytes: 50,
        };
        assert!(s.read(inside.join("ok.csv").to_str().unwrap()).is_ok());
        for outside in [
            "/etc/passwd".to_string(),
            dir.join("secret.csv").display().to_string(),
            format!("{}/../secret.csv", inside.display()),
            "/nonexistent/file".into(),
            "http://127.0.0.1:22/".into(),
        ] {
            let e = s.read(&outside).unwrap_err();
            assert!(matches!(e, ManagerError::Forbidden(_)), "{outside}: {e}");
            // The same answer whether or not the file exists: nothing is revealed.
            assert!(!e.to_string().contains("No such file"), "{e}");
        }
        // Allowed but too large: refused without its content.
        let e = s
            .read(inside.join("big.csv").to_str().unwrap())
            .unwrap_err();
        assert_eq!(e.to_string(), UNREADABLE);
        // An allowed URL prefix whose port is closed: no word about the port.
        let e = s.read("http://127.0.0.1:1/imports/x.csv").unwrap_err();
        assert_eq!(e.to_string(), UNREADABLE);
        let _ = std::fs::remove_dir_all(&dir);
    }
}

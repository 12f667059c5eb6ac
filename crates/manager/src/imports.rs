//! Labels from outside sources (a CMDB export, a vulnerability scanner's report): imported all
//! or nothing, kept per source under its own key prefix, re-read on a schedule when the manager
//! reads them from a location.

use crate::config::{now_ms, parse_duration_ms};
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::{Body, ChangeAction, ImportRecord, Kind, Write};
use cellwall_api::{ImportItem, ImportList, ImportRequest, ImportResult};
use std::collections::HashMap;

/// Reads an import location: a file on the manager's host or an http:// URL.
pub fn read_location(location: &str) -> Result<String, ManagerError> {
    if location.starts_with("https://") {
        return Err(ManagerError::Invalid(format!(
            "{location}: https is not supported yet; use http:// on a trusted network or a file"
        )));
    }
    if location.starts_with("http://") {
        let resp = ureq::get(location)
            .timeout(std::time::Duration::from_secs(30))
            .call()
            .map_err(|e| ManagerError::Invalid(format!("{location}: {e}")))?;
        return resp
            .into_string()
            .map_err(|e| ManagerError::Invalid(format!("{location}: {e}")));
    }
    // The location is the caller's input: a missing file is their error, not the manager's.
    std::fs::read_to_string(location).map_err(|e| {
        ManagerError::Invalid(format!("reading {location:?} on the manager's host: {e}"))
    })
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
            (None, Some(loc)) => (loc.clone(), read_location(loc)?),
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
            let r = read_location(loc).and_then(|text| self.import_labels("scheduler", src, &text));
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

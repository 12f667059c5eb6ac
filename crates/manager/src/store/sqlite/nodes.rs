//! Nodes: joins (by certificate hash), what their agents reported, acks and "last seen".

use super::objects::bump;
use super::*;

fn ack_in(db: &Connection, a: &AckRow) -> Result<()> {
    let n = if a.error.is_empty() {
        db.prepare_cached(
            "UPDATE nodes SET applied_version = ?2, apply_micros = ?3, applied_us = ?4,
               last_error = '', last_seen_ms = ?5 WHERE name = ?1",
        )?
        .execute(params![
            a.node,
            a.version,
            a.apply_micros,
            a.applied_us,
            now_ms()
        ])?
    } else {
        db.prepare_cached("UPDATE nodes SET last_error = ?2, last_seen_ms = ?3 WHERE name = ?1")?
            .execute(params![
                a.node,
                format!("version {}: {}", a.version, a.error),
                now_ms()
            ])?
    };
    if n == 0 {
        return Err(StoreError::Conflict(format!(
            "node {} has not joined",
            a.node
        )));
    }
    Ok(())
}

fn workloads_text(w: &[ReportedWorkload]) -> String {
    serde_json::to_string(w).expect("reported workloads serialize")
}

impl SqliteStore {
    pub(super) fn join(&self, name: &str, c: &NodeCertRecord) -> Result<()> {
        // A re-join (new certificate) replaces the old certificate: the old one stops working.
        self.conn().execute(
            "INSERT INTO nodes(name, joined_ms, cert_sha256, cert_expires_ms, cert_ca)
               VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT(name) DO UPDATE SET cert_sha256 = excluded.cert_sha256,
               joined_ms = excluded.joined_ms, cert_expires_ms = excluded.cert_expires_ms,
               cert_ca = excluded.cert_ca, prev_cert_sha256 = ''",
            params![name, now_ms(), c.sha256, c.expires_ms, c.ca],
        )?;
        Ok(())
    }

    pub(super) fn set_trust(&self, name: &str, bundle_sha256: &str) -> Result<()> {
        self.conn().execute(
            "UPDATE nodes SET trust_sha256 = ?2 WHERE name = ?1",
            params![name, bundle_sha256],
        )?;
        Ok(())
    }

    /// The caller's certificate (current, or previous when a renewal's answer was lost)
    /// stays valid as the previous one.
    pub(super) fn renew(&self, name: &str, caller: &str, c: &NodeCertRecord) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET prev_cert_sha256 = ?2, cert_sha256 = ?3, cert_expires_ms = ?4,
               cert_ca = ?5
             WHERE name = ?1 AND ?2 != '' AND (cert_sha256 = ?2 OR prev_cert_sha256 = ?2)",
            params![name, caller, c.sha256, c.expires_ms, c.ca],
        )?;
        Ok(n == 1)
    }

    pub(super) fn retire_previous(&self, name: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET prev_cert_sha256 = '' WHERE name = ?1 AND prev_cert_sha256 != ''",
            params![name],
        )?;
        Ok(n == 1)
    }

    pub(super) fn node_of_cert(&self, cert_sha256: &str) -> Result<Option<CertOwner>> {
        if cert_sha256.is_empty() {
            return Ok(None);
        }
        Ok(self
            .conn()
            .query_row(
                "SELECT name, cert_sha256 != ?1 FROM nodes
                 WHERE cert_sha256 = ?1 OR prev_cert_sha256 = ?1",
                params![cert_sha256],
                |r| {
                    Ok(CertOwner {
                        node: r.get(0)?,
                        previous: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// The hash of the node's certificate: none when the node never joined, empty when its
    /// certificate was withdrawn.
    fn cert_of(&self, name: &str) -> Result<Option<String>> {
        Ok(self
            .conn()
            .query_row(
                "SELECT cert_sha256 FROM nodes WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()?)
    }

    pub(super) fn has_cert(&self, name: &str) -> Result<bool> {
        Ok(self.cert_of(name)?.is_some_and(|c| !c.is_empty()))
    }

    pub(super) fn withdrawn(&self, name: &str) -> Result<bool> {
        Ok(self.cert_of(name)?.is_some_and(|c| c.is_empty()))
    }

    pub(super) fn withdraw_cert(&self, name: &str) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE nodes SET cert_sha256 = '', prev_cert_sha256 = '' WHERE name = ?1",
            params![name],
        )?;
        Ok(n == 1)
    }

    pub(super) fn refusal(&self, node: &str, what: Refusal, n: u64, detail: &str) -> Result<()> {
        let column = match what {
            Refusal::Report => "refused_reports",
            Refusal::Flows => "refused_flows",
        };
        // Bounded: a refusal's detail names what was refused, never all of it.
        let detail: String = detail.chars().take(300).collect();
        self.conn().execute(
            &format!(
                "UPDATE nodes SET {column} = {column} + ?3, last_refusal = ?2 WHERE name = ?1"
            ),
            params![node, detail, i64::try_from(n).unwrap_or(i64::MAX)],
        )?;
        Ok(())
    }

    pub(super) fn set_reported(
        &self,
        node: &str,
        workloads: &[ReportedWorkload],
    ) -> Result<Option<u64>> {
        let text = workloads_text(workloads);
        let mut db = self.conn();
        let tx = db.transaction()?;
        let old: String = tx.query_row(
            "SELECT workloads FROM nodes WHERE name = ?1",
            params![node],
            |r| r.get(0),
        )?;
        let rev = if old != text {
            tx.execute(
                "UPDATE nodes SET workloads = ?2, last_seen_ms = ?3 WHERE name = ?1",
                params![node, text, now_ms()],
            )?;
            Some(bump(&tx)?)
        } else {
            tx.execute(
                "UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1",
                params![node, now_ms()],
            )?;
            None
        };
        tx.commit()?;
        Ok(rev)
    }

    pub(super) fn record_batch(
        &self,
        acks: &[AckRow],
        events: &[Event],
        seen: &[String],
    ) -> Result<Vec<Result<()>>> {
        let mut db = self.conn();
        let tx = db.transaction()?;
        let mut out = Vec::with_capacity(acks.len());
        for a in acks {
            out.push(ack_in(&tx, a));
        }
        let at = now_ms();
        for e in events {
            tx.prepare_cached(
                "INSERT INTO events(at_ms, actor, action, detail) VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![at, e.actor, e.action, e.detail])?;
        }
        for n in seen {
            tx.prepare_cached("UPDATE nodes SET last_seen_ms = ?2 WHERE name = ?1")?
                .execute(params![n, at])?;
        }
        tx.commit()?;
        Ok(out)
    }

    pub(super) fn applied_rows(&self) -> Result<Vec<NodeApplied>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT name, applied_version, last_error FROM nodes
             WHERE cert_sha256 != '' ORDER BY name",
        )?;
        let rows = st.query_map([], |r| {
            Ok(NodeApplied {
                name: r.get(0)?,
                applied_version: r.get(1)?,
                last_error: r.get(2)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    pub(super) fn node_rows(&self) -> Result<Vec<NodeRow>> {
        let db = self.conn();
        let mut st = db.prepare_cached(
            "SELECT name, joined_ms, applied_version, applied_us, apply_micros, last_error,
                    last_seen_ms, workloads, kernel_lost, agent_dropped, batches_missed, last_seq,
                    refused_reports, refused_flows, last_refusal, cert_sha256 != '',
                    cert_expires_ms, cert_ca, trust_sha256
             FROM nodes ORDER BY name",
        )?;
        let mut rows = st.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            let name: String = r.get(0)?;
            let text: String = r.get(7)?;
            let workloads = serde_json::from_str(&text).map_err(|source| StoreError::Corrupt {
                kind: "node".into(),
                key: name.clone(),
                source,
            })?;
            out.push(NodeRow {
                name,
                joined_ms: r.get(1)?,
                applied_version: r.get(2)?,
                applied_unix_micros: r.get(3)?,
                apply_micros: r.get(4)?,
                last_error: r.get(5)?,
                last_seen_ms: r.get(6)?,
                workloads,
                kernel_events_lost: r.get(8)?,
                agent_records_dropped: r.get(9)?,
                flow_batches_missed: r.get(10)?,
                last_seq: r.get(11)?,
                refused_reports: r.get(12)?,
                refused_flows: r.get(13)?,
                last_refusal: r.get(14)?,
                has_cert: r.get(15)?,
                cert_expires_ms: r.get(16)?,
                cert_ca: r.get(17)?,
                trust_sha256: r.get(18)?,
            });
        }
        Ok(out)
    }
}

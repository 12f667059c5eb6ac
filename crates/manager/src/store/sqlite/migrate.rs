//! Schema versions. Version 1 is the first release's; each later version adds what it needs with
//! `ALTER TABLE`, so a data directory from any earlier release opens and keeps everything.

use super::*;

/// The version this build writes.
pub const SCHEMA_VERSION: i64 = 5;

pub fn run(db: &Connection) -> Result<()> {
    let v: i64 = db.query_row("SELECT v FROM meta WHERE k = 'schema'", [], |r| r.get(0))?;
    if v > SCHEMA_VERSION {
        return Err(StoreError::Unsupported(format!(
            "the database has schema version {v}, newer than this manager's {SCHEMA_VERSION}: \
             run the manager that wrote it (or a newer one)"
        )));
    }
    if v < 2 {
        // Tokens bound to nodes, expiring, single-use, revocable; refusals counted per node.
        db.execute_batch(
            "BEGIN;
             ALTER TABLE tokens ADD COLUMN node TEXT;
             ALTER TABLE tokens ADD COLUMN expires_ms INTEGER;
             ALTER TABLE tokens ADD COLUMN single_use INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE tokens ADD COLUMN replace_ok INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE tokens ADD COLUMN used_ms INTEGER;
             ALTER TABLE tokens ADD COLUMN revoked INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE nodes ADD COLUMN refused_reports INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE nodes ADD COLUMN refused_flows INTEGER NOT NULL DEFAULT 0;
             ALTER TABLE nodes ADD COLUMN last_refusal TEXT NOT NULL DEFAULT '';
             UPDATE meta SET v = 2 WHERE k = 'schema';
             COMMIT;",
        )?;
    }
    if v < 3 {
        // Certificates expire and are renewed: the previous one stays valid until the new one
        // is first used (a renewal whose answer was lost does not lock the node out). Which CA
        // signed each node's certificate, and which trust bundle it fetched (CA rotation).
        db.execute_batch(
            "BEGIN;
             ALTER TABLE nodes ADD COLUMN prev_cert_sha256 TEXT NOT NULL DEFAULT '';
             ALTER TABLE nodes ADD COLUMN cert_expires_ms INTEGER;
             ALTER TABLE nodes ADD COLUMN cert_ca TEXT NOT NULL DEFAULT '';
             ALTER TABLE nodes ADD COLUMN trust_sha256 TEXT NOT NULL DEFAULT '';
             CREATE INDEX nodes_prev_cert ON nodes(prev_cert_sha256);
             UPDATE meta SET v = 3 WHERE k = 'schema';
             COMMIT;",
        )?;
    }
    if v < 4 {
        // FQDN policy: the DNS names of a flow's destination, comma-separated.
        db.execute_batch(
            "BEGIN;
             ALTER TABLE flows ADD COLUMN dst_names TEXT NOT NULL DEFAULT '';
             UPDATE meta SET v = 4 WHERE k = 'schema';
             COMMIT;",
        )?;
    }
    if v < 5 {
        // Bodies serialized in field order (`direct = 1`), where earlier versions went through
        // a sorted-key value tree: the text of a 10,000-rule policy took most of a one-rule
        // change's store time. An older row is compared by value, and rewritten in field
        // order when equal (objects.rs).
        db.execute_batch(
            "BEGIN;
             ALTER TABLE objects ADD COLUMN direct INTEGER NOT NULL DEFAULT 0;
             UPDATE meta SET v = 5 WHERE k = 'schema';
             COMMIT;",
        )?;
    }
    Ok(())
}

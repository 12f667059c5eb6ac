//! Tokens, stored by the SHA-256 of their secret only.

use super::*;

fn role_text(r: Role) -> &'static str {
    match r {
        Role::Admin => "admin",
        Role::Read => "read",
        Role::Bootstrap => "bootstrap",
    }
}

fn role_of(s: &str) -> Option<Role> {
    [Role::Admin, Role::Read, Role::Bootstrap]
        .into_iter()
        .find(|r| role_text(*r) == s)
}

const COLUMNS: &str = "rowid, role, name, node, expires_ms, single_use, replace_ok, created_ms,
                       used_ms, revoked";

/// A token row; rows with a role this build does not know are left out.
fn token_row(r: &rusqlite::Row) -> rusqlite::Result<Option<TokenRow>> {
    let role: String = r.get(1)?;
    let Some(role) = role_of(&role) else {
        return Ok(None);
    };
    Ok(Some(TokenRow {
        id: r.get(0)?,
        token: NewToken {
            role,
            name: r.get(2)?,
            node: r.get(3)?,
            expires_ms: r.get(4)?,
            single_use: r.get(5)?,
            replace: r.get(6)?,
        },
        created_ms: r.get(7)?,
        used_ms: r.get(8)?,
        revoked: r.get(9)?,
    }))
}

impl SqliteStore {
    pub(super) fn insert_token(&self, hash: &str, t: &NewToken) -> Result<i64> {
        let db = self.conn();
        db.execute(
            "INSERT INTO tokens(hash, role, name, created_ms, node, expires_ms, single_use,
               replace_ok) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                hash,
                role_text(t.role),
                t.name,
                now_ms(),
                t.node,
                t.expires_ms,
                t.single_use,
                t.replace
            ],
        )?;
        Ok(db.last_insert_rowid())
    }

    pub(super) fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        let db = self.conn();
        let r = db
            .query_row(
                &format!("SELECT {COLUMNS} FROM tokens WHERE hash = ?1"),
                params![hash],
                token_row,
            )
            .optional()?;
        Ok(r.flatten())
    }

    pub(super) fn token_rows(&self) -> Result<Vec<TokenRow>> {
        let db = self.conn();
        let mut st = db.prepare(&format!("SELECT {COLUMNS} FROM tokens ORDER BY rowid"))?;
        let rows = st.query_map([], token_row)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    pub(super) fn revoke_token_row(&self, id: i64) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE tokens SET revoked = 1 WHERE rowid = ?1",
            params![id],
        )?;
        Ok(n == 1)
    }

    pub(super) fn use_token_row(&self, id: i64) -> Result<bool> {
        let n = self.conn().execute(
            "UPDATE tokens SET used_ms = ?2 WHERE rowid = ?1 AND used_ms IS NULL",
            params![id, now_ms()],
        )?;
        Ok(n == 1)
    }
}

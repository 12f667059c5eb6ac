//! Tokens: bearer tokens for people and scripts (admin, read) and bootstrap tokens for agents,
//! bound to a node name or pattern, expiring, optionally single-use, listed and revoked. Stored
//! by hash only; the secret is shown once.

use crate::config::{now_ms, parse_duration_ms};
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::pki::{new_token, sha256_hex};
use crate::store::{NewToken, Role, TokenRow};
use cellwall_api::{TokenCreated, TokenItem, TokenList, TokenRequest};

/// Whether a bootstrap token bound to `pattern` (none: unbound) may join `node`: a watched
/// cluster's node (`CLUSTER:NODE`) only with a pattern that names that very cluster, so a
/// token meant for hosts (`*`, or unbound) cannot pose as a cluster's node.
pub fn token_joins(pattern: Option<&str>, node: &str) -> bool {
    use cellwall_policy::clusters::cluster_of;
    match pattern {
        Some(p) => cluster_of(p) == cluster_of(node) && glob_match(p, node),
        None => cluster_of(node).is_none(),
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == name;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || !name[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

/// Why a token cannot be used now, if it cannot.
pub fn unusable(t: &TokenRow, now_ms: i64) -> Option<&'static str> {
    if t.revoked {
        Some("revoked")
    } else if t.token.expires_ms.is_some_and(|e| e <= now_ms) {
        Some("expired")
    } else if t.token.single_use && t.used_ms.is_some() {
        Some("already used")
    } else {
        None
    }
}

/// A node name pattern: what node names may contain, and `*`, after an optional `CLUSTER:`
/// (a pattern joins a watched cluster's nodes only when it names that cluster: `east:*`).
fn valid_pattern(p: &str) -> bool {
    cellwall_policy::clusters::without_valid_prefix(p).is_some_and(valid_bare_pattern)
}

fn valid_bare_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 63
        && p.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b'*'
        })
}

fn prefix(role: Role) -> &'static str {
    match role {
        Role::Admin => "cwa_",
        Role::Read => "cwr_",
        Role::Bootstrap => "cwb_",
    }
}

impl Manager {
    /// Stores a new token and returns its secret (the only time it is shown).
    pub fn issue_token(&self, t: &NewToken) -> Result<(i64, String), ManagerError> {
        let secret = new_token(prefix(t.role))?;
        let id = self.store.add_token(&sha256_hex(secret.as_bytes()), t)?;
        Ok((id, secret))
    }

    /// `POST /v1/tokens`.
    pub fn create_token(
        &self,
        actor: &str,
        req: &TokenRequest,
    ) -> Result<TokenCreated, ManagerError> {
        if req.name.is_empty() || req.name.len() > 253 || req.name.chars().any(char::is_control) {
            return Err(ManagerError::Invalid(
                "name: expected 1-253 printable characters".into(),
            ));
        }
        if let Some(n) = &req.node {
            if req.role != Role::Bootstrap {
                return Err(ManagerError::Invalid(
                    "node: only bootstrap tokens are bound to nodes".into(),
                ));
            }
            if !valid_pattern(n) {
                return Err(ManagerError::Invalid(format!(
                    "node {n:?}: expected a node name (a-z, 0-9, '-', '.') where '*' matches any characters, after an optional CLUSTER: (east:*)"
                )));
            }
        }
        if req.replace && (req.role != Role::Bootstrap || req.node.is_none()) {
            return Err(ManagerError::Invalid(
                "replace: only a bootstrap token bound to a node (--node) may replace its certificate".into(),
            ));
        }
        let expires_ms = match &req.ttl {
            Some(t) => Some(
                parse_duration_ms(t)
                    .filter(|ms| *ms > 0)
                    .and_then(|ms| now_ms().checked_add(i64::try_from(ms).ok()?))
                    .ok_or_else(|| {
                        ManagerError::Invalid(format!(
                            "ttl={t}: expected a duration like 30m, 24h, 7d"
                        ))
                    })?,
            ),
            None => None,
        };
        let t = NewToken {
            role: req.role,
            name: req.name.clone(),
            node: req.node.clone(),
            expires_ms,
            single_use: req.single_use,
            replace: req.replace,
        };
        let (id, token) = self.issue_token(&t)?;
        self.store.log_event(
            actor,
            "token-created",
            &format!(
                "#{id} {} token {:?}{}{}",
                prefix(t.role).trim_end_matches('_'),
                t.name,
                t.node
                    .as_deref()
                    .map(|n| format!(" for node {n}"))
                    .unwrap_or_default(),
                if t.replace { " (may replace)" } else { "" }
            ),
        )?;
        Ok(TokenCreated { id, token })
    }

    pub fn token_list(&self) -> Result<TokenList, ManagerError> {
        let now = now_ms();
        let items = self
            .store
            .tokens()?
            .into_iter()
            .map(|r| TokenItem {
                valid: unusable(&r, now).is_none(),
                id: r.id,
                role: r.token.role,
                name: r.token.name,
                node: r.token.node,
                created_ms: r.created_ms,
                expires_ms: r.token.expires_ms,
                single_use: r.token.single_use,
                replace: r.token.replace,
                used_ms: r.used_ms,
                revoked: r.revoked,
            })
            .collect();
        Ok(TokenList { items })
    }

    pub fn revoke_token(&self, actor: &str, id: i64) -> Result<bool, ManagerError> {
        let done = self.store.revoke_token(id)?;
        if !done {
            return Err(ManagerError::NotFound(format!("no token #{id}")));
        }
        self.store
            .log_event(actor, "token-revoked", &format!("#{id}"))?;
        Ok(true)
    }

    /// Role and name behind a bearer token that may be used now, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<(Role, String)>, ManagerError> {
        let Some(t) = self.store.token(&sha256_hex(token.as_bytes()))? else {
            return Ok(None);
        };
        if unusable(&t, now_ms()).is_some() {
            return Ok(None);
        }
        Ok(Some((t.token.role, t.token.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("n1", "n1"));
        assert!(!glob_match("n1", "n10"));
        assert!(glob_match("web-*", "web-3"));
        assert!(!glob_match("web-*", "db-3"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxcyyb"));
        assert!(glob_match("*.zone-a", "n1.zone-a"));
    }

    /// The attack: a token meant for hosts (`*`, unbound, or a pattern that happens to match
    /// the text) joining as a watched cluster's node, which only that cluster may vouch for.
    #[test]
    fn only_a_pattern_naming_the_cluster_joins_its_nodes() {
        assert!(!token_joins(Some("*"), "east:n1"));
        assert!(!token_joins(None, "east:n1"));
        assert!(!token_joins(Some("*:n1"), "east:n1"));
        assert!(!token_joins(Some("eas*"), "east:n1"));
        assert!(!token_joins(Some("west:*"), "east:n1"));
        assert!(token_joins(Some("east:*"), "east:n1"));
        assert!(token_joins(Some("east:n1"), "east:n1"));
        assert!(token_joins(None, "vm-1") && token_joins(Some("*"), "vm-1"));
        assert!(!token_joins(Some("east:*"), "vm-1"));
        assert!(valid_pattern("east:web-*") && valid_pattern("web-*"));
        assert!(!valid_pattern("East:*") && !valid_pattern("a:b:c") && !valid_pattern(":x"));
    }
}

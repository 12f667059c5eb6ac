//! Nodes: joining with a bootstrap token, the certificate that identifies every later call,
//! what agents report of their workloads, acks, and the node list people read.

use crate::config::now_ms;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::pki::{sha256_hex, Issued};
use crate::state::Conflict;
use crate::store::{AckRow, Alert, NodeCertRecord, Refusal, ReportedWorkload, Role};
use crate::tokens::{token_joins, unusable};
use cellwall_api::AlertKind;
use cellwall_api::{NodeItem, NodeList, Refused};

/// A node name as Kubernetes has them: a DNS subdomain of at most 63 characters here (it is
/// also a certificate's common name and a label value).
pub fn valid_node_name(s: &str) -> bool {
    // A node of one of several watched clusters is CLUSTER:NODE (cellwall_policy::clusters).
    cellwall_policy::clusters::without_valid_prefix(s).is_some_and(valid_bare_node_name)
}

fn valid_bare_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A bootstrap token's secret is `cwb_` and 64 hex digits; anything much longer is not one.
const MAX_TOKEN_LEN: usize = 256;

fn record(i: &Issued) -> NodeCertRecord {
    NodeCertRecord {
        sha256: i.sha256.clone(),
        expires_ms: i.validity.not_after_ms,
        ca: i.signer.clone(),
    }
}

impl Manager {
    /// Signs a node certificate for a bootstrap token that may join `node`, called from `peer`.
    ///
    /// In order, so that nothing a caller sends is stored or logged before it is known to be
    /// well-formed: the per-address rate limit, the name's form, the token (bootstrap, not
    /// revoked, expired or used up, bound to a pattern the name matches), and whether the node
    /// already holds a certificate (replacing one needs a token made to replace).
    pub fn join(
        &self,
        token: &str,
        node: &str,
        peer: Option<std::net::IpAddr>,
    ) -> Result<Issued, ManagerError> {
        let from = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        self.join_rate_limit(peer)?;
        if !valid_node_name(node) {
            self.metrics.join_refused("name");
            self.log_event_later(
                "join",
                "join-refused",
                &format!("from {from}: an invalid node name"),
            );
            return Err(ManagerError::Invalid(
                "node name: expected 1-63 characters of a-z, 0-9, '-', '.', starting and ending with a letter or digit, after an optional CLUSTER: prefix".into(),
            ));
        }
        let refuse = |why: &str| {
            self.metrics
                .join_refused(if why.starts_with("already joined") {
                    "node-taken"
                } else {
                    "token"
                });
            self.log_event_later(
                &format!("node:{node}"),
                "join-refused",
                &format!("from {from}: {why}"),
            );
        };
        let found = if token.len() <= MAX_TOKEN_LEN {
            self.store.token(&sha256_hex(token.as_bytes()))?
        } else {
            None
        };
        let t = match found {
            Some(t) if t.token.role == Role::Bootstrap => t,
            _ => {
                refuse("not a bootstrap token");
                return Err(ManagerError::Unauthenticated(
                    "invalid bootstrap token".into(),
                ));
            }
        };
        if let Some(why) = unusable(&t, now_ms()) {
            refuse(&format!("token #{} {why}", t.id));
            return Err(ManagerError::Unauthenticated(format!(
                "this bootstrap token is {why}"
            )));
        }
        if !token_joins(t.token.node.as_deref(), node) {
            let p = t
                .token
                .node
                .as_deref()
                .unwrap_or("(any node outside the watched clusters)");
            refuse(&format!("token #{} is for node {p}", t.id));
            return Err(ManagerError::Forbidden(format!(
                "this bootstrap token joins node {p}, not {node}: a watched cluster's node joins \
                 with its ServiceAccount token, or a bootstrap token bound to CLUSTER:..."
            )));
        }
        let replacing = self.store.node_has_cert(node)?;
        if replacing && !t.token.replace {
            refuse(&format!("already joined; token #{} may not replace", t.id));
            return Err(ManagerError::Forbidden(format!(
                "node {node} already joined: replacing its certificate takes an admin \
                 (cellwall tokens create --node {node} --replace)"
            )));
        }
        if t.token.single_use && !self.store.use_token(t.id)? {
            refuse(&format!("token #{} already used", t.id));
            return Err(ManagerError::Unauthenticated(
                "this bootstrap token is already used".into(),
            ));
        }
        self.issue_node_cert(
            node,
            &format!("with token #{} from {from}", t.id),
            replacing,
        )
    }

    /// Joins per source address, whatever the credential (a flood of joins costs the store or,
    /// for ServiceAccount tokens, the API server).
    pub(crate) fn join_rate_limit(
        &self,
        peer: Option<std::net::IpAddr>,
    ) -> Result<(), ManagerError> {
        if let Some(ip) = peer {
            if !self.join_limit.take(&ip, 1.0) {
                self.metrics.limited("join");
                return Err(ManagerError::RateLimited(
                    "too many joins from this address; retry later".into(),
                ));
            }
        }
        Ok(())
    }

    /// Issues `node` its certificate (`how` it proved itself, for the audit trail); the
    /// node's previous certificate stops working now, and its open streams end.
    pub(crate) fn issue_node_cert(
        &self,
        node: &str,
        how: &str,
        replacing: bool,
    ) -> Result<Issued, ManagerError> {
        let issued = self.ca.node_cert(node, self.lifetimes.node)?;
        self.store.join_node(node, &record(&issued))?;
        self.forget_certs(node);
        self.store.log_event(
            &format!("node:{node}"),
            "join",
            &format!(
                "node certificate issued {how}{}",
                if replacing {
                    " (replacing the previous one)"
                } else {
                    ""
                }
            ),
        )?;
        Ok(issued)
    }

    /// A fresh certificate for a node that holds a valid one (mTLS proved it): the agent
    /// renews before expiry without a restart or a token. The current certificate keeps
    /// working until the new one is first used, so an answer lost on the way costs nothing.
    pub fn renew(&self, node: &str, caller: &str) -> Result<Issued, ManagerError> {
        if !self.renew_limit.take(&node.to_string(), 1.0) {
            self.metrics.limited("renew");
            return Err(ManagerError::RateLimited(
                "too many certificate renewals from this node; retry later".into(),
            ));
        }
        let issued = self.ca.node_cert(node, self.lifetimes.node)?;
        if !self.store.renew_node_cert(node, caller, &record(&issued))? {
            return Err(ManagerError::Unauthenticated(format!(
                "node {node} holds no certificate"
            )));
        }
        self.store.log_event(
            &format!("node:{node}"),
            "cert-renewed",
            &format!(
                "a new certificate valid until {} (unix ms)",
                issued.validity.not_after_ms
            ),
        )?;
        Ok(issued)
    }

    /// The CA bundle the node's agent must trust and the signing CA's name; records that the
    /// node has it (a CA rotation moves on once every node does).
    pub fn trust(&self, node: &str) -> Result<(String, String), ManagerError> {
        let bundle = self.ca.bundle_pem.clone();
        self.store
            .set_node_trust(node, &sha256_hex(bundle.as_bytes()))?;
        Ok((bundle, self.ca.signer.clone()))
    }

    /// Drops cached certificates of `node` and closes its open streams.
    fn forget_certs(&self, node: &str) {
        self.certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, n| n != node);
        self.sessions.close(node);
    }

    /// Withdraws a node's certificate: its calls are refused and its streams closed at once; it
    /// joins again only with a token.
    pub fn revoke_node(&self, actor: &str, node: &str) -> Result<bool, ManagerError> {
        if !self.store.revoke_node(node)? {
            return Err(ManagerError::NotFound(format!("no node {node}")));
        }
        self.forget_certs(node);
        self.store.log_event(
            actor,
            "node-revoked",
            &format!("{node}: certificate withdrawn"),
        )?;
        Ok(true)
    }

    /// The node a certificate (by hash) belongs to; cached, since every agent call asks.
    ///
    /// The first use of a renewed certificate retires the one it replaced: from then on the
    /// previous certificate is refused and its open streams end.
    pub fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<String>, ManagerError> {
        let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = certs.get(cert_sha256) {
            return Ok(Some(n.clone()));
        }
        let Some(owner) = self.store.node_by_cert(cert_sha256)? else {
            return Ok(None);
        };
        if !owner.previous && self.store.retire_previous_cert(&owner.node)? {
            certs.retain(|_, n| *n != owner.node);
            self.sessions.close(&owner.node);
        }
        certs.insert(cert_sha256.to_string(), owner.node.clone());
        Ok(Some(owner.node))
    }

    /// Records what an agent reported of its node's workloads, keeping only what the node may
    /// report (workloads the store binds to it, with addresses no other workload owns); what is
    /// refused is counted on the node, and an address taken from another workload raises an
    /// alert. Republishes when that changes the state.
    pub fn report_workloads(
        &self,
        node: &str,
        workloads: Vec<ReportedWorkload>,
    ) -> Result<(), ManagerError> {
        let max = self.limits.reports_per_node;
        if workloads.len() > max {
            self.store.count_refusal(
                node,
                Refusal::Report,
                workloads.len() as u64,
                &format!("a report of {} workloads (at most {max})", workloads.len()),
            )?;
            return Err(ManagerError::Invalid(format!(
                "a node reports at most {max} workloads"
            )));
        }
        let checked = self.state.check_reports(node, workloads);
        if let Some(first) = checked.refused.first() {
            tracing::warn!(
                node,
                refused = checked.refused.len(),
                "refused part of a report: {first}"
            );
            self.store
                .count_refusal(node, Refusal::Report, checked.refused.len() as u64, first)?;
        }
        if !checked.conflicts.is_empty() {
            self.address_conflicts(node, &checked.conflicts)?;
        }
        let mut workloads = checked.accepted;
        workloads.sort_by(|a, b| a.key.cmp(&b.key));
        if self.state.reported(node).as_ref() == Some(&workloads) {
            // Nothing new (a reconnect): only "seen", committed with others.
            self.writer.seen_later(node);
            return Ok(());
        }
        if self.store.report_workloads(node, &workloads)?.is_some() {
            self.state.set_reported(node, workloads);
            self.publish()?;
        }
        Ok(())
    }

    /// Alerts for addresses a node claimed that another workload owns.
    fn address_conflicts(&self, node: &str, conflicts: &[Conflict]) -> Result<(), ManagerError> {
        let now = now_ms();
        let alerts = conflicts
            .iter()
            .map(|c| {
                Alert::critical(
                    AlertKind::AddressConflict,
                    now,
                    format!("node:{node}"),
                    c.owner.clone(),
                    format!(
                        "node {node} reported {} for {}, but {} owns it: refused",
                        c.ip, c.claimed_by, c.owner
                    ),
                )
            })
            .collect();
        self.raise_alerts(alerts, now)
    }

    /// Records an agent's ack. Acks are committed in groups (one transaction and one sync for
    /// every ack waiting), so 1,000 agents acking at once cost a few commits, not 1,000.
    /// A failed apply also raises an alert: the node keeps enforcing what it held before
    /// (fail-static), and someone must find out why (full maps, a kernel write).
    pub async fn ack(&self, row: AckRow) -> Result<(), ManagerError> {
        // Stored as SQL integers (i64): a larger one is no real version or time.
        for (what, v) in [
            ("version", row.version),
            ("apply_micros", row.apply_micros),
            ("applied_unix_micros", row.applied_us),
        ] {
            if i64::try_from(v).is_err() {
                return Err(ManagerError::Invalid(format!(
                    "{what} {v} is out of range (at most {})",
                    i64::MAX
                )));
            }
        }
        let failed = (!row.error.is_empty()).then(|| {
            let (node, version, error) = (row.node.clone(), row.version, row.error.clone());
            Alert::critical(
                AlertKind::EnforcementFailed,
                now_ms(),
                format!("node:{node}"),
                "-".into(),
                format!(
                    "node {node} could not enforce revision {version}: {error}; it keeps enforcing the tables it held before"
                ),
            )
        });
        self.writer.ack(row).await?;
        if let Some(a) = failed {
            let at = a.at_ms;
            self.raise_alerts(vec![a], at)?;
        }
        Ok(())
    }

    /// Every node with how far behind the published revision it is.
    pub fn node_list(&self) -> Result<NodeList, ManagerError> {
        let published = self.published();
        let revision = published.revision;
        let now = now_ms();
        let items = self
            .store
            .nodes()?
            .into_iter()
            .map(|n| NodeItem {
                lag: revision.saturating_sub(n.applied_version),
                pending_ms: (n.applied_version < revision)
                    .then(|| (now - published.issued_unix_ms).max(0)),
                seconds_since_seen: (now - n.last_seen_ms).max(0) / 1000,
                name: n.name,
                joined_ms: n.joined_ms,
                applied_version: n.applied_version,
                applied_unix_micros: n.applied_unix_micros,
                apply_micros: n.apply_micros,
                last_error: n.last_error,
                last_seen_ms: n.last_seen_ms,
                kernel_events_lost: n.kernel_events_lost,
                agent_records_dropped: n.agent_records_dropped,
                flow_batches_missed: n.flow_batches_missed,
                workloads: n.workloads,
                refused: Refused {
                    reports: n.refused_reports,
                    flows: n.refused_flows,
                    last: n.last_refusal,
                },
                has_cert: n.has_cert,
                cert_expires_ms: n.cert_expires_ms,
            })
            .collect();
        Ok(NodeList { revision, items })
    }
}

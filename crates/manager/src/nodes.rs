//! Nodes: joining with a bootstrap token, the certificate that identifies every later call,
//! what agents report of their workloads, acks, and the node list people read.

use crate::config::now_ms;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::store::{AckRow, ReportedWorkload, Role};
use cellwall_api::{NodeItem, NodeList};

fn valid_node_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

impl Manager {
    /// Signs a node certificate for a valid bootstrap token.
    pub fn join(&self, token: &str, node: &str) -> Result<(String, String), ManagerError> {
        if !matches!(self.authenticate(token)?, Some((Role::Bootstrap, _))) {
            self.store.log_event(
                &format!("node:{node}"),
                "join-refused",
                "bad bootstrap token",
            )?;
            return Err(ManagerError::Unauthenticated(
                "invalid bootstrap token".into(),
            ));
        }
        if !valid_node_name(node) {
            return Err(ManagerError::Invalid(format!(
                "node name {node:?}: expected 1-63 characters of a-z, 0-9, '-', '.'"
            )));
        }
        let (cert, key, hash) = self.ca.node_cert(node)?;
        self.store.join_node(node, &hash)?;
        // The node's previous certificate stops working now.
        self.certs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, n| n != node);
        self.store
            .log_event(&format!("node:{node}"), "join", "node certificate issued")?;
        Ok((cert, key))
    }

    /// The node a certificate (by hash) belongs to; cached, since every agent call asks.
    pub fn node_by_cert(&self, cert_sha256: &str) -> Result<Option<String>, ManagerError> {
        let mut certs = self.certs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = certs.get(cert_sha256) {
            return Ok(Some(n.clone()));
        }
        let n = self.store.node_by_cert(cert_sha256)?;
        if let Some(n) = &n {
            certs.insert(cert_sha256.to_string(), n.clone());
        }
        Ok(n)
    }

    /// Records an agent's local workloads; republishes when that changes the state.
    pub fn report_workloads(
        &self,
        node: &str,
        mut workloads: Vec<ReportedWorkload>,
    ) -> Result<(), ManagerError> {
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

    /// Records an agent's ack. Acks are committed in groups (one transaction and one sync for
    /// every ack waiting), so 1,000 agents acking at once cost a few commits, not 1,000.
    pub async fn ack(&self, row: AckRow) -> Result<(), ManagerError> {
        self.writer.ack(row).await
    }

    /// Every node with how far behind the published revision it is.
    pub fn node_list(&self) -> Result<NodeList, ManagerError> {
        let revision = self.published().revision;
        let now = now_ms();
        let items = self
            .store
            .nodes()?
            .into_iter()
            .map(|n| NodeItem {
                lag: revision.saturating_sub(n.applied_version),
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
            })
            .collect();
        Ok(NodeList { revision, items })
    }
}

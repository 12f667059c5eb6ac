//! Joining with a ServiceAccount token instead of a shared bootstrap secret (`--join-service-
//! account`). The agent DaemonSet's pods carry a projected token minted for Cellwall's own
//! audience and bound to their pod and node; the agent sends it as its join token, and the
//! manager asks the API server (a TokenReview) who holds it. The certificate is issued only
//! when the API server says: valid now, for our audience, the agents' ServiceAccount, and a
//! pod on the very node the agent names. So there is no long-lived secret to steal, and a
//! token taken from one node's agent joins that node only.
//!
//! Chosen over node-bound bootstrap tokens because Kubernetes already issues, rotates
//! (kubelet, hourly) and revokes (with the pod) these tokens per node; the manager needs only
//! `create` on `tokenreviews`. A node whose certificate an admin withdrew does not come back
//! this way (that takes a bootstrap token made to replace); a joined node whose agent lost its
//! state does (its own pod's token proves the same node again).

pub use crate::config::JoinReviewer;
use crate::error::ManagerError;
use crate::manager::Manager;
use crate::nodes::valid_node_name;
use crate::pki::Issued;
use cellwall_kube::review::{review_token, Reviewed};
use std::net::IpAddr;

/// Tokens longer than this are no ServiceAccount tokens (they run to about 1-2 KiB).
const MAX_SA_TOKEN: usize = 16 * 1024;

/// Whether a join token is for the TokenReview path: anything but a bootstrap token.
pub fn is_service_account_token(token: &str) -> bool {
    !token.starts_with("cwb_")
}

impl Manager {
    /// Whether joins may use ServiceAccount tokens here.
    pub fn reviews_joins(&self) -> bool {
        self.reviewer.get().is_some()
    }

    /// Checks a ServiceAccount token for joining `node`, in the order that spends nothing on
    /// a caller before it is known to be well-formed: the per-address rate limit (a TokenReview
    /// costs the API server), the name, the token's size, then the review and its answer.
    pub async fn review_join(
        &self,
        token: &str,
        node: &str,
        peer: Option<IpAddr>,
    ) -> Result<Reviewed, ManagerError> {
        let Some(r) = self.reviewer.get() else {
            return Err(ManagerError::Unauthenticated(
                "invalid bootstrap token".into(),
            ));
        };
        let from = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        self.join_rate_limit(peer)?;
        if !valid_node_name(node) || token.len() > MAX_SA_TOKEN {
            self.metrics.join_refused("name");
            return Err(ManagerError::Invalid(
                "node name: expected 1-63 characters of a-z, 0-9, '-', '.' (after an optional \
                 CLUSTER: prefix); token: at most 16 KiB"
                    .into(),
            ));
        }
        let refuse = |why: String, e: ManagerError| {
            self.metrics.join_refused("service-account");
            self.log_event_later(
                &format!("node:{node}"),
                "join-refused",
                &format!("from {from}: ServiceAccount token: {why}"),
            );
            Err(e)
        };
        let Some((client, bare)) = r.for_node(node) else {
            return refuse(
                "no watched cluster of that name".into(),
                ManagerError::Forbidden(format!(
                    "node {node}: no watched cluster reviews its token{}",
                    if r.clients.iter().any(|(c, _)| c.is_some()) {
                        "; agents join as CLUSTER:NODE (cellwall-agent --cluster)"
                    } else {
                        ""
                    }
                )),
            );
        };
        let who = match review_token(client, token, &r.audience).await {
            Ok(Ok(who)) => who,
            Ok(Err(why)) => {
                return refuse(
                    why.clone(),
                    ManagerError::Unauthenticated(format!(
                        "the API server does not accept this token for audience {}: {why}",
                        r.audience
                    )),
                )
            }
            Err(e) => {
                tracing::warn!("TokenReview for node {node}: {e}");
                return Err(ManagerError::Unavailable(format!(
                    "cannot review the token with the Kubernetes API server now: {e}"
                )));
            }
        };
        if who.username != r.username {
            return refuse(
                format!("held by {}", who.username),
                ManagerError::Forbidden(format!(
                    "the token belongs to {}, not to the agents' ServiceAccount {}",
                    who.username, r.username
                )),
            );
        }
        if !who.audiences.iter().any(|a| a == &r.audience) {
            return refuse(
                "another audience".into(),
                ManagerError::Unauthenticated(format!(
                    "the token is not valid for audience {}",
                    r.audience
                )),
            );
        }
        match &who.node {
            Some(n) if n == bare => Ok(who),
            Some(n) => refuse(
                format!("bound to a pod on node {n}"),
                ManagerError::Forbidden(format!(
                    "the token's pod runs on node {n}, not {node}: a node joins only as itself"
                )),
            ),
            None => refuse(
                "not bound to a node".into(),
                ManagerError::Forbidden(
                    "the token is not bound to a pod's node: use the pod's projected token \
                     (Kubernetes 1.30+ records the node in it)"
                        .into(),
                ),
            ),
        }
    }

    /// Issues `node`'s certificate for a token [`Manager::review_join`] accepted, unless an
    /// admin withdrew the node's certificate.
    pub fn join_reviewed(
        &self,
        who: &Reviewed,
        node: &str,
        peer: Option<IpAddr>,
    ) -> Result<Issued, ManagerError> {
        if self.store.node_withdrawn(node)? {
            self.metrics.join_refused("service-account");
            self.log_event_later(
                &format!("node:{node}"),
                "join-refused",
                "ServiceAccount token: the node's certificate was withdrawn by an admin",
            );
            return Err(ManagerError::Forbidden(format!(
                "node {node}'s certificate was withdrawn by an admin: it joins again only with a \
                 bootstrap token made to replace (cellwall tokens create --node {node} --replace)"
            )));
        }
        let replacing = self.store.node_has_cert(node)?;
        let from = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
        self.issue_node_cert(
            node,
            &format!(
                "for the ServiceAccount token of pod {} (TokenReview) from {from}",
                who.pod.as_deref().unwrap_or("?")
            ),
            replacing,
        )
    }
}

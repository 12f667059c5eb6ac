//! The narrow interfaces the REST API and the agent service are written against: each handler
//! needs only its trait, so it can be tested against a fake and cannot reach the rest of the
//! manager. [`Manager`] implements them all by delegating to its modules.

use crate::error::ManagerError;
use crate::manager::Manager;
use crate::pki::Issued;
use crate::state::{Change, Published};
use crate::store::{AckRow, Committed, FlowRow, ReportedWorkload, Role};
use cellwall_api::*;
use cellwall_policy::Policy;
use std::future::Future;
use std::sync::Arc;

type R<T> = Result<T, ManagerError>;

/// Who is behind a bearer token.
pub trait Authenticate: Send + Sync + 'static {
    fn authenticate(&self, token: &str) -> R<Option<(Role, String)>>;
}

/// Writing manifests and reading stored objects.
pub trait Objects: Authenticate {
    fn apply(&self, actor: &str, req: &ApplyRequest, delete: bool) -> R<Committed>;
    fn policies(&self) -> R<PolicyList>;
    fn policy_history(&self, id: &str) -> R<PolicyHistory>;
    fn workloads(&self) -> R<WorkloadList>;
    fn namespaces(&self) -> R<NamespaceList>;
    fn audit(&self, limit: usize) -> R<AuditLog>;
    fn create_token(&self, actor: &str, req: &TokenRequest) -> R<TokenCreated>;
    fn tokens(&self) -> R<TokenList>;
    fn revoke_token(&self, actor: &str, id: i64) -> R<Revoked>;
    fn revoke_node(&self, actor: &str, node: &str) -> R<Revoked>;
}

/// What nodes and flows report.
pub trait Observe: Authenticate {
    fn nodes(&self) -> R<NodeList>;
    fn flows(&self, q: &FlowQuery) -> R<FlowList>;
    fn alerts(&self, q: &AlertQuery) -> R<AlertList>;
    /// Prometheus text exposition.
    fn metrics(&self) -> R<String>;
}

/// Explain, map, propose, simulate.
pub trait Discover: Authenticate {
    fn explain(&self, q: &ExplainQuery) -> R<ExplainResponse>;
    fn dependency_map(&self, q: &MapQuery) -> R<MapResponse>;
    fn propose(&self, q: &ProposeQuery) -> R<ProposeResponse>;
    fn simulate(
        &self,
        candidate: Vec<Policy>,
        since_ms: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> R<SimulateResult>;
    fn rules(&self, q: &RulesQuery) -> R<RuleList>;
    fn save_draft(&self, actor: &str, req: &DraftRequest) -> R<Draft>;
    fn drafts(&self) -> R<DraftList>;
    fn draft(&self, name: &str) -> R<Draft>;
    fn review(&self, actor: &str, req: &ReviewRequest) -> R<Draft>;
    /// The draft's approved rules as documents (to simulate).
    fn draft_documents(&self, name: &str) -> R<Vec<Document>>;
    fn apply_draft(&self, actor: &str, name: &str) -> R<DraftApplyResult>;
    fn delete_draft(&self, actor: &str, name: &str) -> R<Committed>;
}

/// Quarantines and label imports.
pub trait Respond: Authenticate {
    fn quarantine(&self, actor: &str, req: &QuarantineRequest) -> R<Committed>;
    fn release(&self, actor: &str, workload: &str) -> R<Committed>;
    fn quarantines(&self) -> R<QuarantineList>;
    fn import(&self, actor: &str, req: &ImportRequest) -> R<ImportResult>;
    fn imports(&self) -> R<ImportList>;
}

/// What the agent service needs: joins, node identity, the published state, acks and flows.
pub trait AgentControl: Send + Sync + 'static {
    fn join(&self, token: &str, node: &str, peer: Option<std::net::IpAddr>) -> R<Issued>;
    /// Reviews a ServiceAccount join token with the API server; `None` when `token` is a
    /// bootstrap token or joins take only those here (then [`AgentControl::join`] decides).
    fn review_join(
        &self,
        token: String,
        node: String,
        peer: Option<std::net::IpAddr>,
    ) -> impl Future<Output = R<Option<cellwall_kube::review::Reviewed>>> + Send;
    /// Issues the certificate for a token [`AgentControl::review_join`] accepted.
    fn join_reviewed(
        &self,
        who: &cellwall_kube::review::Reviewed,
        node: &str,
        peer: Option<std::net::IpAddr>,
    ) -> R<Issued>;
    /// A fresh certificate for `node`, asked with the certificate whose hash is `caller`.
    fn renew(&self, node: &str, caller: &str) -> R<Issued>;
    /// The CA bundle to trust and the signing CA's name (recorded as fetched by `node`).
    fn trust(&self, node: &str) -> R<(String, String)>;
    /// What a stream of `node` watches: it must end when the value changes (the node's
    /// certificate was replaced or withdrawn).
    fn session(&self, node: &str) -> tokio::sync::watch::Receiver<u64>;
    fn ca_pem(&self) -> &str;
    fn node_by_cert(&self, cert_sha256: &str) -> R<Option<String>>;
    fn report_workloads(&self, node: &str, workloads: Vec<ReportedWorkload>) -> R<()>;
    fn ack(&self, row: AckRow) -> impl Future<Output = R<()>> + Send;
    fn record_flows(
        &self,
        node: &str,
        rows: Vec<FlowRow>,
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> R<usize>;
    fn log_event_later(&self, actor: &str, action: &str, detail: &str);
    fn published(&self) -> Arc<Published>;
    fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Change>;
}

impl Authenticate for Manager {
    fn authenticate(&self, token: &str) -> R<Option<(Role, String)>> {
        Manager::authenticate(self, token)
    }
}

impl Objects for Manager {
    fn apply(&self, actor: &str, req: &ApplyRequest, delete: bool) -> R<Committed> {
        Manager::apply(
            self,
            actor,
            &req.documents,
            delete,
            req.ignore_unknown_kinds,
        )
    }
    fn policies(&self) -> R<PolicyList> {
        self.policy_list()
    }
    fn policy_history(&self, id: &str) -> R<PolicyHistory> {
        Manager::policy_history(self, id)
    }
    fn workloads(&self) -> R<WorkloadList> {
        Ok(self.workload_list())
    }
    fn namespaces(&self) -> R<NamespaceList> {
        Ok(self.namespace_list())
    }
    fn audit(&self, limit: usize) -> R<AuditLog> {
        self.audit_log(limit)
    }
    fn create_token(&self, actor: &str, req: &TokenRequest) -> R<TokenCreated> {
        Manager::create_token(self, actor, req)
    }
    fn tokens(&self) -> R<TokenList> {
        self.token_list()
    }
    fn revoke_token(&self, actor: &str, id: i64) -> R<Revoked> {
        Ok(Revoked {
            revoked: Manager::revoke_token(self, actor, id)?,
        })
    }
    fn revoke_node(&self, actor: &str, node: &str) -> R<Revoked> {
        Ok(Revoked {
            revoked: Manager::revoke_node(self, actor, node)?,
        })
    }
}

impl Observe for Manager {
    fn nodes(&self) -> R<NodeList> {
        self.node_list()
    }
    fn flows(&self, q: &FlowQuery) -> R<FlowList> {
        self.flow_list(q)
    }
    fn alerts(&self, q: &AlertQuery) -> R<AlertList> {
        self.alert_list(q)
    }
    fn metrics(&self) -> R<String> {
        Ok(self
            .metrics
            .render(self.published().revision, &self.store.nodes()?))
    }
}

impl Discover for Manager {
    fn explain(&self, q: &ExplainQuery) -> R<ExplainResponse> {
        Manager::explain(self, q)
    }
    fn dependency_map(&self, q: &MapQuery) -> R<MapResponse> {
        Manager::dependency_map(self, q)
    }
    fn propose(&self, q: &ProposeQuery) -> R<ProposeResponse> {
        Manager::propose(self, q)
    }
    fn simulate(
        &self,
        candidate: Vec<Policy>,
        since_ms: u64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> R<SimulateResult> {
        Manager::simulate(self, candidate, since_ms, progress)
    }
    fn rules(&self, q: &RulesQuery) -> R<RuleList> {
        self.rule_list(q)
    }
    fn save_draft(&self, actor: &str, req: &DraftRequest) -> R<Draft> {
        Manager::save_draft(self, actor, req)
    }
    fn drafts(&self) -> R<DraftList> {
        Manager::drafts(self)
    }
    fn draft(&self, name: &str) -> R<Draft> {
        Manager::draft(self, name)
    }
    fn review(&self, actor: &str, req: &ReviewRequest) -> R<Draft> {
        Manager::review(self, actor, req)
    }
    fn draft_documents(&self, name: &str) -> R<Vec<Document>> {
        Ok(Manager::draft_documents(self, name)?.0)
    }
    fn apply_draft(&self, actor: &str, name: &str) -> R<DraftApplyResult> {
        Manager::apply_draft(self, actor, name)
    }
    fn delete_draft(&self, actor: &str, name: &str) -> R<Committed> {
        Manager::delete_draft(self, actor, name)
    }
}

impl Respond for Manager {
    fn quarantine(&self, actor: &str, req: &QuarantineRequest) -> R<Committed> {
        Manager::quarantine(self, actor, req)
    }
    fn release(&self, actor: &str, workload: &str) -> R<Committed> {
        Manager::release(self, actor, workload)
    }
    fn quarantines(&self) -> R<QuarantineList> {
        self.quarantine_list()
    }
    fn import(&self, actor: &str, req: &ImportRequest) -> R<ImportResult> {
        self.import_request(actor, req)
    }
    fn imports(&self) -> R<ImportList> {
        self.import_list()
    }
}

impl AgentControl for Manager {
    fn join(&self, token: &str, node: &str, peer: Option<std::net::IpAddr>) -> R<Issued> {
        Manager::join(self, token, node, peer)
    }
    async fn review_join(
        &self,
        token: String,
        node: String,
        peer: Option<std::net::IpAddr>,
    ) -> R<Option<cellwall_kube::review::Reviewed>> {
        if !self.reviews_joins() || !crate::join_review::is_service_account_token(&token) {
            return Ok(None);
        }
        Manager::review_join(self, &token, &node, peer)
            .await
            .map(Some)
    }
    fn join_reviewed(
        &self,
        who: &cellwall_kube::review::Reviewed,
        node: &str,
        peer: Option<std::net::IpAddr>,
    ) -> R<Issued> {
        Manager::join_reviewed(self, who, node, peer)
    }
    fn renew(&self, node: &str, caller: &str) -> R<Issued> {
        Manager::renew(self, node, caller)
    }
    fn trust(&self, node: &str) -> R<(String, String)> {
        Manager::trust(self, node)
    }
    fn session(&self, node: &str) -> tokio::sync::watch::Receiver<u64> {
        self.sessions.watch(node)
    }
    fn ca_pem(&self) -> &str {
        Manager::ca_pem(self)
    }
    fn node_by_cert(&self, cert_sha256: &str) -> R<Option<String>> {
        Manager::node_by_cert(self, cert_sha256)
    }
    fn report_workloads(&self, node: &str, workloads: Vec<ReportedWorkload>) -> R<()> {
        Manager::report_workloads(self, node, workloads)
    }
    fn ack(&self, row: AckRow) -> impl Future<Output = R<()>> + Send {
        Manager::ack(self, row)
    }
    fn record_flows(
        &self,
        node: &str,
        rows: Vec<FlowRow>,
        seq: u64,
        kernel_lost: u64,
        agent_dropped: u64,
    ) -> R<usize> {
        Manager::record_flows(self, node, rows, seq, kernel_lost, agent_dropped)
    }
    fn log_event_later(&self, actor: &str, action: &str, detail: &str) {
        Manager::log_event_later(self, actor, action, detail)
    }
    fn published(&self) -> Arc<Published> {
        Manager::published(self)
    }
    fn subscribe_changes(&self) -> tokio::sync::broadcast::Receiver<Change> {
        self.state.subscribe_changes()
    }
}

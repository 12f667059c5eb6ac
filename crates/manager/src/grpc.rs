//! The agent service over mTLS: join with a bootstrap token, then every call is identified by
//! the client certificate the manager issued (by its hash, so a re-join revokes the old one).

// tonic's `Status` is large by design; boxing it would fight the generated service trait.
#![allow(clippy::result_large_err)]

use crate::store::FlowRow;
use crate::{Manager, ManagerError};
use cellwall_proto::tonic::{self, Request, Response, Status};
use cellwall_proto::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt};

pub struct AgentService {
    m: Arc<Manager>,
}

pub fn service(m: Arc<Manager>) -> AgentServer<AgentService> {
    AgentServer::new(AgentService { m })
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(256 << 20)
}

fn status(e: ManagerError) -> Status {
    match e {
        ManagerError::Invalid(m) => Status::invalid_argument(m),
        ManagerError::Unauthorized(m) => Status::unauthenticated(m),
        e => Status::internal(e.to_string()),
    }
}

impl AgentService {
    /// The node a request comes from, by its client certificate; and the node it claims must be
    /// that one.
    fn node<T>(&self, req: &Request<T>, claimed: &str) -> Result<String, Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("a node certificate is required (join first)")
        })?;
        let der = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let node = self
            .m
            .store
            .node_by_cert(&crate::pki::sha256_hex(der))
            .map_err(|e| status(e.into()))?
            .ok_or_else(|| Status::unauthenticated("unknown or replaced node certificate"))?;
        if node != claimed {
            return Err(Status::permission_denied(format!(
                "this certificate belongs to node {node}, not {claimed}"
            )));
        }
        Ok(node)
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<DesiredState, Status>> + Send>>;

#[tonic::async_trait]
impl Agent for AgentService {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let r = req.into_inner();
        let m = self.m.clone();
        let (cert_pem, key_pem) = tokio::task::spawn_blocking(move || m.join(&r.token, &r.node))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(JoinReply {
            cert_pem,
            key_pem,
            ca_pem: self.m.ca_pem().to_string(),
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let m = self.m.clone();
        let n2 = node.clone();
        tokio::task::spawn_blocking(move || m.report_workloads(&n2, &r.workloads))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        let _ = self.m.store.log_event(
            &format!("node:{node}"),
            "watch",
            &format!(
                "agent {} connected, applied {}",
                r.agent_version, r.applied_version
            ),
        );
        let stream = tokio_stream::wrappers::WatchStream::new(self.m.subscribe()).map(|p| {
            Ok(DesiredState {
                version: p.revision,
                state_json: p.json.as_ref().clone(),
                issued_unix_ms: p.issued_unix_ms,
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let m = self.m.clone();
        tokio::task::spawn_blocking(move || {
            m.store.ack(
                &node,
                r.version,
                r.apply_micros,
                r.applied_unix_micros,
                &r.error,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| status(e.into()))?;
        Ok(Response::new(AckReply {}))
    }

    async fn report_flows(&self, req: Request<FlowBatch>) -> Result<Response<FlowAck>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let b = req.into_inner();
        let rows: Vec<FlowRow> = b
            .records
            .into_iter()
            .map(|f| FlowRow {
                id: 0,
                time_unix_ns: f.time_unix_ns,
                node: node.clone(),
                src: f.src,
                dst: f.dst,
                src_ip: f.src_ip,
                dst_ip: f.dst_ip,
                protocol: protocol_name(f.protocol),
                port: f.port as u16,
                verdict: f.verdict,
                direction: f.direction,
                rule: (!f.rule.is_empty()).then_some(f.rule),
                count: f.count.max(1),
            })
            .collect();
        let m = self.m.clone();
        let n = tokio::task::spawn_blocking(move || {
            m.record_flows(
                &node,
                &rows,
                b.seq,
                b.kernel_events_lost,
                b.agent_records_dropped,
            )
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(status)?;
        Ok(Response::new(FlowAck { accepted: n as u64 }))
    }
}

pub fn protocol_name(p: u32) -> String {
    match p {
        6 => "TCP".into(),
        17 => "UDP".into(),
        132 => "SCTP".into(),
        1 => "ICMP".into(),
        58 => "ICMPv6".into(),
        n => n.to_string(),
    }
}

//! The agent service over mTLS: join with a bootstrap token, then every call is identified by
//! the client certificate the manager issued (by its hash, so a re-join revokes the old one).

// tonic's `Status` is large by design; boxing it would fight the generated service trait.
#![allow(clippy::result_large_err)]

use crate::store::{AckRow, FlowRow};
use crate::{Change, Manager, ManagerError};
use cellwall_proto::tonic::{self, Request, Response, Status};
use cellwall_proto::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;

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
            .node_by_cert(&crate::pki::sha256_hex(der))
            .map_err(status)?
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
        self.m.log_event_later(
            &format!("node:{node}"),
            "watch",
            &format!(
                "agent {} connected, applied {}",
                r.agent_version, r.applied_version
            ),
        );
        let (out, rx) = tokio::sync::mpsc::channel(2);
        tokio::spawn(feed(self.m.clone(), r.applied_version, out));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        self.m
            .ack(AckRow {
                node,
                version: r.version,
                apply_micros: r.apply_micros,
                applied_us: r.applied_unix_micros,
                error: r.error,
            })
            .await
            .map_err(status)?;
        Ok(Response::new(AckReply {}))
    }

    async fn report_flows(&self, req: Request<FlowBatch>) -> Result<Response<FlowAck>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let b = req.into_inner();
        let mut rows: Vec<FlowRow> = Vec::with_capacity(b.records.len());
        for f in b.records {
            let verdict = match f.verdict() {
                Verdict::Allowed => "allowed",
                Verdict::Denied => "denied",
                Verdict::Audit => "audit",
                Verdict::Revoked => "revoked",
                Verdict::Unspecified => {
                    return Err(Status::invalid_argument("a flow record has no verdict"))
                }
            };
            let direction = match f.direction() {
                Direction::Ingress => "ingress",
                Direction::Egress => "egress",
                Direction::Unspecified => {
                    return Err(Status::invalid_argument("a flow record has no direction"))
                }
            };
            rows.push(FlowRow {
                id: 0,
                time_unix_ns: f.time_unix_ns,
                node: node.clone(),
                src: f.src,
                dst: f.dst,
                src_ip: f.src_ip,
                dst_ip: f.dst_ip,
                protocol: protocol_name(f.protocol),
                port: f.port as u16,
                verdict: verdict.into(),
                direction: direction.into(),
                rule: (!f.rule.is_empty()).then_some(f.rule),
                count: f.count.max(1),
            });
        }
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

/// One agent's stream: first what it needs to reach the latest revision (nothing but a marker if
/// it already holds it, the snapshot otherwise), then each revision's delta in order. An agent
/// that missed a revision (its stream fell 256 revisions behind) gets the snapshot again.
async fn feed(m: Arc<Manager>, applied: u64, out: mpsc::Sender<Result<DesiredState, Status>>) {
    // Subscribe before reading the latest, so no revision falls in between.
    let mut sub = m.subscribe_changes();
    let cur = m.published();
    let first = if applied != 0 && applied == cur.revision {
        DesiredState::delta(
            cur.revision,
            cur.revision,
            &StateDelta::default(),
            cur.issued_unix_ms,
        )
    } else {
        (*cur.snapshot().await).clone()
    };
    let mut sent = cur.revision;
    // Holding the model of this revision for the stream's life would pin it in memory.
    drop(cur);
    if out.send(Ok(first)).await.is_err() {
        return;
    }
    loop {
        let c = tokio::select! {
            r = sub.recv() => match r {
                Ok(c) => Some(c),
                Err(RecvError::Lagged(_)) => None,
                Err(RecvError::Closed) => return,
            },
            // The agent went away: stop now, not at the next revision.
            _ = out.closed() => return,
        };
        if c.as_ref().is_some_and(|c| c.revision <= sent) {
            continue;
        }
        let msg = match c {
            Some(Change {
                delta: Some(d),
                prev_revision,
                ..
            }) if prev_revision == sent => (*d).clone(),
            _ => (*m.published().snapshot().await).clone(),
        };
        sent = msg.version;
        if out.send(Ok(msg)).await.is_err() {
            return;
        }
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

//! The agent service over mTLS: join with a bootstrap token (or a ServiceAccount token the
//! API server vouches for, `join_review`), then every call is identified by
//! the client certificate the manager issued (by its hash, so a re-join revokes the old one).
//! Written against [`AgentControl`], not the whole manager.

// tonic's `Status` is large by design; boxing it would fight the generated service trait.
#![allow(clippy::result_large_err)]

use crate::error::ManagerError;
use crate::services::AgentControl;
use crate::state::Change;
use crate::store::{AckRow, FlowDirection, FlowRow, ReportedWorkload, Verdict as StoredVerdict};
use cellwall_proto::tonic::{self, Request, Response, Status};
use cellwall_proto::*;
use std::pin::Pin;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::Stream;

pub struct AgentService<S> {
    s: Arc<S>,
}

/// Messages agents send after joining: a node's workload report or a batch of 5,000 flow
/// records is well under a megabyte; 16 MiB leaves room and bounds what one call can cost.
pub const AGENT_MESSAGE_MAX: usize = 16 << 20;

/// Joins come from callers not yet authenticated: a token and a node name fit in a kilobyte.
pub const JOIN_MESSAGE_MAX: usize = 4 << 10;

pub fn service<S: AgentControl>(s: Arc<S>) -> AgentServer<AgentService<S>> {
    AgentServer::new(AgentService { s })
        .max_decoding_message_size(AGENT_MESSAGE_MAX)
        .max_encoding_message_size(256 << 20)
}

/// The join service, on the same listener, with its own small message limit.
pub fn bootstrap<S: AgentControl>(s: Arc<S>) -> BootstrapServer<JoinService<S>> {
    BootstrapServer::new(JoinService { s }).max_decoding_message_size(JOIN_MESSAGE_MAX)
}

pub struct JoinService<S> {
    s: Arc<S>,
}

#[tonic::async_trait]
impl<S: AgentControl> Bootstrap for JoinService<S> {
    async fn join(&self, req: Request<JoinRequest>) -> Result<Response<JoinReply>, Status> {
        let peer = req.remote_addr().map(|a| a.ip());
        let r = req.into_inner();
        let s = self.s.clone();
        let reviewed = s
            .review_join(r.token.clone(), r.node.clone(), peer)
            .await
            .map_err(status)?;
        let issued = tokio::task::spawn_blocking(move || match reviewed {
            Some(who) => s.join_reviewed(&who, &r.node, peer),
            None => s.join(&r.token, &r.node, peer),
        })
        .await
        .map_err(join_error)?
        .map_err(status)?;
        Ok(Response::new(reply(issued, self.s.ca_pem())))
    }
}

/// A certificate as the agent receives it, with the CA it chains to.
fn reply(i: crate::pki::Issued, ca_pem: &str) -> JoinReply {
    JoinReply {
        cert_pem: i.cert_pem,
        key_pem: i.key_pem,
        ca_pem: ca_pem.to_string(),
        issued_unix_ms: i.validity.issued_ms,
        not_after_unix_ms: i.validity.not_after_ms,
        signer: i.signer,
    }
}

fn status(e: ManagerError) -> Status {
    e.to_status()
}

fn join_error(e: tokio::task::JoinError) -> Status {
    Status::internal(e.to_string())
}

impl<S: AgentControl> AgentService<S> {
    /// The node a request comes from, by its client certificate; and the node it claims must be
    /// that one.
    fn node<T>(&self, req: &Request<T>, claimed: &str) -> Result<String, Status> {
        self.caller(req, claimed).map(|(node, _)| node)
    }

    /// The node a request comes from and the hash of the certificate it used.
    fn caller<T>(&self, req: &Request<T>, claimed: &str) -> Result<(String, String), Status> {
        let certs = req.peer_certs().ok_or_else(|| {
            Status::unauthenticated("a node certificate is required (join first)")
        })?;
        let der = certs
            .first()
            .ok_or_else(|| Status::unauthenticated("a node certificate is required"))?;
        let hash = crate::pki::sha256_hex(der);
        let node = self
            .s
            .node_by_cert(&hash)
            .map_err(status)?
            .ok_or_else(|| Status::unauthenticated("unknown or replaced node certificate"))?;
        if node != claimed {
            return Err(Status::permission_denied(format!(
                "this certificate belongs to node {node}, not {claimed}"
            )));
        }
        Ok((node, hash))
    }
}

/// A workload as its agent reported it (public for the fuzz targets, which feed decoded
/// messages through the same conversions as this service).
pub fn reported(w: LocalWorkload) -> ReportedWorkload {
    ReportedWorkload {
        key: w.key,
        ips: w.ips,
        interface: w.interface,
        labels: w.labels,
        host: w.host,
    }
}

/// A flow record as stored; records the manager cannot read are refused, never guessed at.
pub fn flow_row(node: &str, f: FlowRecord) -> Result<FlowRow, Status> {
    let verdict = match f.verdict() {
        Verdict::Allowed => StoredVerdict::Allowed,
        Verdict::Denied => StoredVerdict::Denied,
        Verdict::Audit => StoredVerdict::Audit,
        Verdict::Revoked => StoredVerdict::Revoked,
        Verdict::Unspecified => {
            return Err(Status::invalid_argument("a flow record has no verdict"))
        }
    };
    let direction = match f.direction() {
        Direction::Ingress => FlowDirection::Ingress,
        Direction::Egress => FlowDirection::Egress,
        Direction::Unspecified => {
            return Err(Status::invalid_argument("a flow record has no direction"))
        }
    };
    let ip = |s: &str| {
        s.parse()
            .map_err(|_| Status::invalid_argument(format!("flow record address {s:?}")))
    };
    let port = u16::try_from(f.port)
        .map_err(|_| Status::invalid_argument(format!("flow record port {}", f.port)))?;
    Ok(FlowRow {
        id: 0,
        time_unix_ns: f.time_unix_ns,
        node: node.to_string(),
        src_ip: ip(&f.src_ip)?,
        dst_ip: ip(&f.dst_ip)?,
        src: f.src,
        dst: f.dst,
        protocol: protocol_name(f.protocol),
        port,
        verdict,
        direction,
        rule: (!f.rule.is_empty()).then_some(f.rule),
        count: f.count.max(1),
        dst_names: dns_names(f.dst_names),
    })
}

/// Most DNS names kept per flow record (a CNAME chain is rarely longer).
const MAX_DST_NAMES: usize = 8;
/// The longest apply error kept from an ack (an agent's errors are a line or two).
const MAX_ACK_ERROR: usize = 1024;

/// The names an agent reported for a flow's destination, as far as they are DNS names: a node
/// reports what its workloads were told, which is visibility, never policy; anything else
/// (wildcards, junk, a flood) is dropped rather than stored.
fn dns_names(names: Vec<String>) -> Vec<String> {
    names
        .into_iter()
        .filter_map(|n| n.parse::<cellwall_policy::net::DomainPattern>().ok())
        .filter(|d| !d.wildcard)
        .map(|d| d.name)
        .take(MAX_DST_NAMES)
        .collect()
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<DesiredState, Status>> + Send>>;

#[tonic::async_trait]
impl<S: AgentControl> Agent for AgentService<S> {
    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<WatchRequest>) -> Result<Response<WatchStream>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        let s = self.s.clone();
        let n2 = node.clone();
        let workloads = r.workloads.into_iter().map(reported).collect();
        tokio::task::spawn_blocking(move || s.report_workloads(&n2, workloads))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        self.s.log_event_later(
            &format!("node:{node}"),
            "watch",
            &format!(
                "agent {} connected, applied {}",
                r.agent_version, r.applied_version
            ),
        );
        let (out, rx) = tokio::sync::mpsc::channel(2);
        let session = self.s.session(&node);
        tokio::spawn(feed(
            self.s.clone(),
            r.applied_version,
            r.accepts_parts,
            out,
            session,
        ));
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<JoinReply>, Status> {
        let (node, caller) = self.caller(&req, &req.get_ref().node)?;
        let s = self.s.clone();
        let issued = tokio::task::spawn_blocking(move || s.renew(&node, &caller))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        Ok(Response::new(reply(issued, self.s.ca_pem())))
    }

    async fn trust(&self, req: Request<TrustRequest>) -> Result<Response<TrustReply>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let s = self.s.clone();
        let (ca_pem, signer) = tokio::task::spawn_blocking(move || s.trust(&node))
            .await
            .map_err(join_error)?
            .map_err(status)?;
        Ok(Response::new(TrustReply { ca_pem, signer }))
    }

    async fn ack(&self, req: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let r = req.into_inner();
        self.s
            .ack(AckRow {
                node,
                version: r.version,
                apply_micros: r.apply_micros,
                applied_us: r.applied_unix_micros,
                // Stored, shown and raised as an alert: bounded and printable.
                error: crate::validate::node_text(&r.error, MAX_ACK_ERROR),
            })
            .await
            .map_err(status)?;
        Ok(Response::new(AckReply {}))
    }

    async fn report_flows(&self, req: Request<FlowBatch>) -> Result<Response<FlowAck>, Status> {
        let node = self.node(&req, &req.get_ref().node)?;
        let b = req.into_inner();
        let rows = b
            .records
            .into_iter()
            .map(|f| flow_row(&node, f))
            .collect::<Result<Vec<_>, _>>()?;
        let s = self.s.clone();
        let n = tokio::task::spawn_blocking(move || {
            s.record_flows(
                &node,
                rows,
                b.seq,
                b.kernel_events_lost,
                b.agent_records_dropped,
            )
        })
        .await
        .map_err(join_error)?
        .map_err(status)?;
        Ok(Response::new(FlowAck { accepted: n as u64 }))
    }
}

/// One agent's stream: first what it needs to reach the latest revision (nothing but a marker if
/// it already holds it, the snapshot otherwise), then each revision's delta in order. An agent
/// that missed a revision (its stream fell 256 revisions behind) gets the snapshot again.
/// Ends the stream when `session` changes (the node's certificate was replaced or withdrawn).
/// To an agent that accepts parts, each message goes in parts of [`PART_BYTES`], slices of the
/// one encoded copy all streams share: the channel holds two and tonic encodes one at a time,
/// so a connection holds ~64-200 KiB of it, not the whole snapshot.
async fn feed<S: AgentControl>(
    s: Arc<S>,
    applied: u64,
    parts: bool,
    out: mpsc::Sender<Result<DesiredState, Status>>,
    mut session: tokio::sync::watch::Receiver<u64>,
) {
    // Subscribe before reading the latest, so no revision falls in between.
    let mut sub = s.subscribe_changes();
    let cur = s.published();
    let first = if applied != 0 && applied == cur.revision {
        Arc::new(DesiredState::delta(
            cur.revision,
            cur.revision,
            &StateDelta::default(),
            cur.issued_unix_ms,
        ))
    } else {
        cur.snapshot().await
    };
    let mut sent = cur.revision;
    // Holding the model of this revision for the stream's life would pin it in memory.
    drop(cur);
    if !send(&out, &first, parts).await {
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
            _ = session.changed() => {
                let _ = out
                    .send(Err(Status::unauthenticated(
                        "this node's certificate was replaced or withdrawn",
                    )))
                    .await;
                return;
            }
        };
        if c.as_ref().is_some_and(|c| c.revision <= sent) {
            continue;
        }
        let msg = match c {
            Some(Change {
                delta: Some(d),
                prev_revision,
                ..
            }) if prev_revision == sent => d,
            _ => s.published().snapshot().await,
        };
        sent = msg.version;
        if !send(&out, &msg, parts).await {
            return;
        }
    }
}

/// Sends `msg` whole or in parts; false when the agent went away.
async fn send(
    out: &mpsc::Sender<Result<DesiredState, Status>>,
    msg: &DesiredState,
    parts: bool,
) -> bool {
    if !parts {
        return out.send(Ok(msg.clone())).await.is_ok();
    }
    for p in msg.parts(PART_BYTES) {
        if out.send(Ok(p)).await.is_err() {
            return false;
        }
    }
    true
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

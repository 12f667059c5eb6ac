//! One gRPC connection to the manager: opens the watch (reporting the version held and the
//! local workloads), forwards each desired state to the enforcement thread, sends its acks, and
//! ships flow batches every interval, and renews the node certificate at two thirds of its
//! life, until the connection breaks or the agent stops.

use crate::config::Config;
use crate::enforce::Ack;
use crate::flows::FlowQueue;
use crate::identity::{channel, CertInfo, NodeCert};
use crate::metrics::Metrics;
use crate::state::StateDir;
use crate::AgentError;
use cellwall_proto::{
    AckRequest, AgentClient, FlowBatch, LocalWorkload, Reassembly, RenewRequest, TrustRequest,
    WatchRequest,
};
use std::sync::mpsc;
use tracing::{info, warn};

/// Records per flow batch.
const BATCH: usize = 5000;

/// What a session works with, borrowed from the agent for its lifetime.
pub struct Session<'a> {
    pub cfg: &'a Config,
    pub state: &'a StateDir,
    pub local: &'a [LocalWorkload],
    pub work: &'a mpsc::Sender<crate::enforce::Work>,
    pub acks: &'a mut tokio::sync::mpsc::UnboundedReceiver<Ack>,
    pub flows: &'a FlowQueue,
    pub metrics: &'a Metrics,
}

/// The largest desired state the agent takes, whole or reassembled from parts.
const MAX_MESSAGE: usize = 256 << 20;

impl Session<'_> {
    /// Runs until the connection fails (an error) or `stop` resolves (Ok).
    pub async fn run(
        self,
        id: NodeCert,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let Session {
            cfg,
            state,
            local,
            work,
            acks,
            flows,
            metrics: m,
        } = self;
        tokio::pin!(stop);
        let mut renew_at = id.info.as_ref().map_or(0, |v| v.renew_at_ms());
        let mut c = AgentClient::new(channel(cfg, state, Some(id.identity)).await?)
            .max_decoding_message_size(MAX_MESSAGE);
        if follow_trust(&mut c, cfg, state, &id.info).await? {
            renew_at = 0;
        }
        let mut stream = c
            .watch(WatchRequest {
                node: cfg.node.clone(),
                applied_version: m.applied_version.get(),
                workloads: local.to_vec(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                accepts_parts: true,
            })
            .await
            .map_err(AgentError::refused("watch"))?
            .into_inner();
        m.connected.set(1);
        info!(manager = %cfg.manager, "connected to the manager at {}", cfg.manager);
        let mut tick = tokio::time::interval(cfg.flow_tick());
        let mut parts = Reassembly::new(MAX_MESSAGE);
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                msg = stream.message() => {
                    match msg.map_err(AgentError::refused("watch stream"))? {
                        Some(s) => {
                            // A broken sequence of parts: reconnect (a fresh snapshot).
                            let whole = parts.push(s)?;
                            if let Some(s) = whole {
                                if work.send(crate::enforce::Work::State(s)).is_err() {
                                    return Err(AgentError::EnforcementStopped);
                                }
                            }
                        }
                        None => return Err(AgentError::StreamClosed),
                    }
                }
                Some(ack) = acks.recv() => {
                    let resync = ack.resync.then(|| ack.clone());
                    c.ack(AckRequest {
                        node: cfg.node.clone(),
                        version: ack.version,
                        apply_micros: ack.micros,
                        error: ack.error,
                        applied_unix_micros: ack.applied_unix_us,
                    })
                    .await
                    .map_err(AgentError::refused("ack"))?;
                    if let Some(a) = resync {
                        return Err(AgentError::Resync(a.error));
                    }
                }
                () = renewal_due(renew_at) => {
                    renew(&mut c, cfg, state).await?;
                    // Refused: the current certificate still works; keep the session.
                    renew_at = now_ms().saturating_add(60_000);
                }
                _ = tick.tick() => {
                    loop {
                        let recs = flows.take(BATCH);
                        if recs.is_empty() {
                            break;
                        }
                        let seq = flows.next_seq();
                        let batch = FlowBatch {
                            node: cfg.node.clone(),
                            records: recs.clone(),
                            kernel_events_lost: m.kernel_events_lost.get(),
                            agent_records_dropped: flows.dropped(),
                            seq,
                        };
                        match c.report_flows(batch).await {
                            Ok(r) => {
                                m.records_delivered.inc_by(r.into_inner().accepted);
                            }
                            Err(s) => {
                                flows.unsend_seq();
                                flows.put_back(recs);
                                return Err(AgentError::refused("report flows")(s));
                            }
                        }
                    }
                }
            }
        }
    }
}

type Client = AgentClient<cellwall_proto::tonic::transport::Channel>;

/// Asks what to trust from now on (a CA rotation adds a CA, later drops one) and keeps it.
/// True when the certificate held was signed by another CA than the one signing now (it is
/// renewed at once).
async fn follow_trust(
    c: &mut Client,
    cfg: &Config,
    state: &StateDir,
    held: &Option<CertInfo>,
) -> Result<bool, AgentError> {
    match c
        .trust(TrustRequest {
            node: cfg.node.clone(),
        })
        .await
    {
        Ok(t) => {
            let t = t.into_inner();
            if crate::identity::save_trust(state, &t.ca_pem)? {
                info!("the manager's CA bundle changed (signing CA: {})", t.signer);
            }
            let held = held.as_ref().map(|i| i.signer.as_str());
            Ok(!t.signer.is_empty() && held != Some(t.signer.as_str()))
        }
        // A manager from before CA rotation: nothing to follow.
        Err(s) if s.code() == cellwall_proto::tonic::Code::Unimplemented => Ok(false),
        Err(s) => Err(AgentError::refused("trust")(s)),
    }
}

/// Renews the node certificate: saved, it ends the session (`Renewed`) so the next one uses
/// it; refused, it is logged and the session goes on with the current one.
async fn renew(c: &mut Client, cfg: &Config, state: &StateDir) -> Result<(), AgentError> {
    match c
        .renew(RenewRequest {
            node: cfg.node.clone(),
        })
        .await
    {
        Ok(r) => {
            let r = r.into_inner();
            crate::identity::save(state, &r)?;
            Err(AgentError::Renewed {
                not_after_ms: r.not_after_unix_ms,
            })
        }
        Err(s) => {
            warn!(
                "renewing the node certificate: {}; retrying in a minute",
                s.message()
            );
            Ok(())
        }
    }
}

/// Resolves once the wall clock reaches `at_ms` (Unix ms). It looks at the wall clock at
/// least every minute, so a clock stepped forward (or a suspended host) renews promptly.
async fn renewal_due(at_ms: i64) {
    loop {
        let now = now_ms();
        if now >= at_ms {
            return;
        }
        let wait = u64::try_from(at_ms - now).unwrap_or(u64::MAX).min(60_000);
        tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

//! One gRPC connection to the manager: opens the watch (reporting the version held and the
//! local workloads), forwards each desired state to the enforcement thread, sends its acks, and
//! ships flow batches every interval, until the connection breaks or the agent stops.

use crate::config::Config;
use crate::enforce::Ack;
use crate::flows::FlowQueue;
use crate::identity::channel;
use crate::metrics::Metrics;
use crate::AgentError;
use cellwall_proto::tonic::transport::Identity;
use cellwall_proto::{
    AckRequest, AgentClient, DesiredState, FlowBatch, LocalWorkload, WatchRequest,
};
use std::sync::mpsc;
use tracing::info;

/// Records per flow batch.
const BATCH: usize = 5000;

/// What a session works with, borrowed from the agent for its lifetime.
pub struct Session<'a> {
    pub cfg: &'a Config,
    pub local: &'a [LocalWorkload],
    pub work: &'a mpsc::Sender<DesiredState>,
    pub acks: &'a mut tokio::sync::mpsc::UnboundedReceiver<Ack>,
    pub flows: &'a FlowQueue,
    pub metrics: &'a Metrics,
}

impl Session<'_> {
    /// Runs until the connection fails (an error) or `stop` resolves (Ok).
    pub async fn run(
        self,
        id: Identity,
        stop: impl std::future::Future<Output = ()>,
    ) -> Result<(), AgentError> {
        let Session {
            cfg,
            local,
            work,
            acks,
            flows,
            metrics: m,
        } = self;
        tokio::pin!(stop);
        let mut c =
            AgentClient::new(channel(cfg, Some(id)).await?).max_decoding_message_size(256 << 20);
        let mut stream = c
            .watch(WatchRequest {
                node: cfg.node.clone(),
                applied_version: m.applied_version.get(),
                workloads: local.to_vec(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
            })
            .await
            .map_err(AgentError::refused("watch"))?
            .into_inner();
        m.connected.set(1);
        info!(manager = %cfg.manager, "connected to the manager at {}", cfg.manager);
        let mut tick = tokio::time::interval(cfg.flow_tick());
        loop {
            tokio::select! {
                _ = &mut stop => return Ok(()),
                msg = stream.message() => {
                    match msg.map_err(AgentError::refused("watch stream"))? {
                        Some(s) => {
                            if work.send(s).is_err() {
                                return Err(AgentError::EnforcementStopped);
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

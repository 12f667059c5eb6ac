//! What the manager exports for Prometheus on `/metrics` (a read token is required, like every
//! route that reveals state): refusals of what outside parties sent — joins, reports, flow
//! records, rate limits — and each node's state. Counted here as they happen; per-node numbers
//! are read from the store at scrape time (they survive restarts there).

use crate::store::NodeRow;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

type GaugeU64 = Gauge<u64, AtomicU64>;
type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
pub struct Metrics {
    /// Joins refused, by reason (`token`, `name`, `node-taken`; joins over the rate
    /// count in `rate_limited`).
    pub joins_refused: Family<Labels, Counter>,
    /// Requests refused for their rate, by what (`join`, `flows`, `renew`).
    pub rate_limited: Family<Labels, Counter>,
}

impl Metrics {
    pub fn join_refused(&self, reason: &str) {
        self.joins_refused
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc();
    }

    pub fn limited(&self, what: &str) {
        self.rate_limited
            .get_or_create(&vec![("what", what.to_string())])
            .inc();
    }

    /// The text exposition, with the nodes' numbers as of `nodes`.
    pub fn render(&self, revision: u64, nodes: &[NodeRow]) -> String {
        let mut r = Registry::default();
        r.register(
            "cellwall_manager_joins_refused",
            "Joins refused, by reason",
            self.joins_refused.clone(),
        );
        r.register(
            "cellwall_manager_rate_limited",
            "Requests refused for their rate, by what",
            self.rate_limited.clone(),
        );
        let rev = GaugeU64::default();
        rev.set(revision);
        r.register(
            "cellwall_manager_revision",
            "The revision the manager publishes",
            rev,
        );
        let per_node = |name: &str, help: &str, value: &dyn Fn(&NodeRow) -> u64| {
            let f: Family<Labels, GaugeU64> = Family::default();
            for n in nodes {
                f.get_or_create(&vec![("node", n.name.clone())])
                    .set(value(n));
            }
            (name.to_string(), help.to_string(), f)
        };
        for (name, help, f) in [
            per_node(
                "cellwall_manager_node_refused_reports",
                "Workload reports refused from the node since it joined",
                &|n| n.refused_reports,
            ),
            per_node(
                "cellwall_manager_node_refused_flow_records",
                "Flow records refused from the node since it joined",
                &|n| n.refused_flows,
            ),
            per_node(
                "cellwall_manager_node_cert_expiry_timestamp_seconds",
                "When the node's certificate expires (0: unknown); its agent renews it at two thirds of its life",
                &|n| n.cert_expires_ms.map_or(0, |ms| u64::try_from(ms / 1000).unwrap_or(0)),
            ),
            per_node(
                "cellwall_manager_node_lag",
                "Revisions the node is behind",
                &|n| revision.saturating_sub(n.applied_version),
            ),
        ] {
            r.register(name, help, f);
        }
        let mut out = String::new();
        encode(&mut out, &r).expect("writing to a string");
        out
    }
}

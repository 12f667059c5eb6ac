//! What the agent exports for Prometheus (`prometheus-client`), served on `/metrics` by axum.
//! Names are part of the agent's interface (benchmarks and lab tests scrape them).

use crate::AgentError;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

type GaugeU64 = Gauge<u64, AtomicU64>;

/// The datapath maps whose occupancy is exported.
pub type MapLabel = [(&'static str, &'static str); 1];

pub struct Metrics {
    registry: Registry,
    /// Desired-state version in the datapath maps.
    pub applied_version: GaugeU64,
    /// Desired states applied.
    pub applies: Counter,
    /// Apply durations in microseconds (`_sum` is the total time spent applying).
    pub apply_micros: Histogram,
    pub apply_micros_last: GaugeU64,
    /// Applies that failed (the previous state stays).
    pub apply_errors: Counter,
    pub records_delivered: Counter,
    pub records_dropped: Counter,
    /// The kernel's count of events it could not queue (the ring buffer was full).
    pub kernel_events_lost: Counter,
    pub map_entries: Family<MapLabel, GaugeU64>,
    pub connected: GaugeU64,
    pub reconnects: Counter,
    /// FQDN policy: addresses whose learned names changed (each a recompile), and how many
    /// addresses hold learned names now.
    pub dns_updates: Counter,
    pub dns_addresses: GaugeU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Self {
            applied_version: GaugeU64::default(),
            applies: Counter::default(),
            // 100 µs .. ~26 s.
            apply_micros: Histogram::new(exponential_buckets(100.0, 4.0, 10)),
            apply_micros_last: GaugeU64::default(),
            apply_errors: Counter::default(),
            records_delivered: Counter::default(),
            records_dropped: Counter::default(),
            kernel_events_lost: Counter::default(),
            map_entries: Family::default(),
            connected: GaugeU64::default(),
            reconnects: Counter::default(),
            dns_updates: Counter::default(),
            dns_addresses: GaugeU64::default(),
            registry: Registry::default(),
        };
        r.register(
            "cellwall_agent_applied_version",
            "Desired-state version in the kernel maps.",
            m.applied_version.clone(),
        );
        r.register(
            "cellwall_agent_applies",
            "Desired states applied.",
            m.applies.clone(),
        );
        r.register(
            "cellwall_agent_apply_micros",
            "Time spent applying, microseconds.",
            m.apply_micros.clone(),
        );
        r.register(
            "cellwall_agent_apply_micros_last",
            "Duration of the last apply, microseconds.",
            m.apply_micros_last.clone(),
        );
        r.register(
            "cellwall_agent_apply_errors",
            "Applies that failed (the previous state stays).",
            m.apply_errors.clone(),
        );
        r.register(
            "cellwall_agent_flow_records_delivered",
            "Flow records the manager accepted.",
            m.records_delivered.clone(),
        );
        r.register(
            "cellwall_agent_flow_records_dropped",
            "Flow records dropped because the queue to the manager was full.",
            m.records_dropped.clone(),
        );
        r.register(
            "cellwall_agent_kernel_events_lost",
            "Flow events the kernel could not queue (ring buffer full).",
            m.kernel_events_lost.clone(),
        );
        r.register(
            "cellwall_agent_map_entries",
            "Entries in the datapath maps.",
            m.map_entries.clone(),
        );
        r.register(
            "cellwall_agent_connected",
            "1 while the watch stream to the manager is up.",
            m.connected.clone(),
        );
        r.register(
            "cellwall_agent_reconnects",
            "Connections to the manager lost and retried.",
            m.reconnects.clone(),
        );
        r.register(
            "cellwall_agent_dns_updates",
            "Addresses whose names learned from DNS answers changed (FQDN policy).",
            m.dns_updates.clone(),
        );
        r.register(
            "cellwall_agent_dns_addresses",
            "Addresses holding names learned from DNS answers.",
            m.dns_addresses.clone(),
        );
        Self { registry: r, ..m }
    }

    /// Records learned names programmed: `n` addresses changed, `total` hold names.
    pub fn dns_programmed(&self, n: usize, total: usize) {
        self.dns_updates.inc_by(n as u64);
        self.dns_addresses.set(total as u64);
    }

    /// Records one apply that switched the datapath.
    pub fn applied(&self, version: u64, micros: u64) {
        self.applied_version.set(version);
        self.applies.inc();
        self.apply_micros.observe(micros as f64);
        self.apply_micros_last.set(micros);
    }

    /// Map occupancy after an apply.
    pub fn map_sizes(&self, ipcache: usize, policy: usize, endpoints: usize) {
        for (m, v) in [
            ("ipcache", ipcache),
            ("policy", policy),
            ("endpoints", endpoints),
        ] {
            self.map_entries.get_or_create(&[("map", m)]).set(v as u64);
        }
    }

    /// The kernel's own cumulative count (kept across agent restarts in a pinned map).
    pub fn set_kernel_events_lost(&self, v: u64) {
        self.kernel_events_lost
            .inner()
            .store(v, std::sync::atomic::Ordering::Relaxed);
    }

    /// The exposition, OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        encode(&mut s, &self.registry).expect("writing to a String");
        s
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), AgentError> {
    use axum::http::header::CONTENT_TYPE;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = metrics.clone();
            async move {
                (
                    [(
                        CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    m.render(),
                )
            }
        }),
    );
    let addr = listener.local_addr().ok();
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| AgentError::Io {
            what: "serving metrics on",
            path: addr.map(|a| a.to_string()).unwrap_or_default().into(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn names_and_values_scrapers_rely_on() {
        let m = Arc::new(Metrics::new());
        m.applied(12, 300);
        m.applied(13, 500);
        m.map_sizes(4, 9, 2);
        m.records_delivered.inc_by(5);
        m.set_kernel_events_lost(3);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let l = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = l.local_addr().unwrap();
        let server = rt.spawn(serve(l, m.clone(), async {
            let _ = stopped.await;
        }));
        // As the lab test scrapes: HTTP/1.0, no Host header, read to the end.
        let body = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            let mut body = String::new();
            s.read_to_string(&mut body).unwrap();
            body
        });
        let body = rt.block_on(async {
            tokio::task::spawn_blocking(move || body.join().unwrap())
                .await
                .unwrap()
        });
        assert!(body.starts_with("HTTP/1.0 200"), "{body}");
        let value = |name: &str| -> u64 {
            body.lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in {body}"))
        };
        assert_eq!(value("cellwall_agent_applied_version "), 13);
        assert_eq!(value("cellwall_agent_applies_total "), 2);
        assert_eq!(value("cellwall_agent_apply_micros_last "), 500);
        assert_eq!(value("cellwall_agent_flow_records_delivered_total "), 5);
        assert_eq!(value("cellwall_agent_flow_records_dropped_total "), 0);
        assert_eq!(value("cellwall_agent_kernel_events_lost_total "), 3);
        assert_eq!(value("cellwall_agent_map_entries{map=\"policy\"} "), 9);
        assert_eq!(value("cellwall_agent_connected "), 0);
        assert_eq!(value("cellwall_agent_reconnects_total "), 0);
        let sum = body
            .lines()
            .find(|l| l.starts_with("cellwall_agent_apply_micros_sum "))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok());
        assert_eq!(sum, Some(800.0), "{body}");
        let _ = stop.send(());
        rt.block_on(server).unwrap().unwrap();
    }
}

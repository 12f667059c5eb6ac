//! Running the manager: bind the REST and gRPC listeners, write the files the CLI and agents
//! read, and run the background work (scheduled imports, history flushes, retention) until
//! stopped.

use crate::alerts;
use crate::config::{now_ms, ApiTransport, Config};
use crate::error::{io_err, ManagerError};
use crate::flows::HISTORY_FLUSH;
use crate::manager::{FirstStart, Manager};
use crate::pki;
use cellwall_proto::tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// The running servers.
pub struct Running {
    pub api: SocketAddr,
    /// The REST API's URL as `client.json` names it (`https://` when served over TLS).
    pub api_url: String,
    pub grpc: SocketAddr,
    pub manager: Arc<Manager>,
    pub first_start: FirstStart,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<Result<(), ManagerError>>,
}

fn task_failed(e: tokio::task::JoinError) -> ManagerError {
    ManagerError::Internal(format!("server task: {e}"))
}

impl Running {
    /// Stops the servers: new connections are refused at once, open ones (agents' watch
    /// streams never end by themselves) get two seconds, then are cut.
    pub async fn stop(mut self) -> Result<(), ManagerError> {
        let _ = self.shutdown.send(true);
        let grace = tokio::time::sleep(Duration::from_secs(2));
        tokio::pin!(grace);
        loop {
            tokio::select! {
                r = self.tasks.join_next() => match r {
                    None => return Ok(()),
                    Some(r) => r.map_err(task_failed)??,
                },
                _ = &mut grace => {
                    self.tasks.abort_all();
                    return Ok(());
                }
            }
        }
    }

    /// Waits until a server fails (they never end on their own).
    pub async fn wait(&mut self) -> Result<(), ManagerError> {
        match self.tasks.join_next().await {
            Some(r) => r.map_err(task_failed)?,
            None => Ok(()),
        }
    }
}

/// The URL a client on this host reaches the API at: an unspecified listen address (0.0.0.0,
/// ::) is reached through loopback, which the server certificate names.
pub fn api_url(api: SocketAddr, tls: bool) -> String {
    let ip = match api.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{}", SocketAddr::new(ip, api.port()))
}

/// Writes `client.json` (what the CLI reads: the API's URL, the admin token and, when the API
/// is served over TLS, the CA file that verifies it) and `endpoints.json`.
pub fn write_client_config(
    m: &Manager,
    api_url: &str,
    api: SocketAddr,
    grpc: SocketAddr,
) -> Result<(), ManagerError> {
    let token = std::fs::read_to_string(m.data_dir.join("admin.token"))
        .map_err(io_err("reading admin.token"))?;
    let mut cfg = serde_json::json!({
        "server": api_url,
        "token": token.trim(),
    });
    if api_url.starts_with("https://") {
        // Absolute, so the file works from any directory (the CLI also resolves a relative
        // path against the file's own directory, for a copied client.json + ca.pem pair).
        let ca = m.data_dir.join("ca.pem");
        let ca = std::fs::canonicalize(&ca).map_err(io_err("locating ca.pem"))?;
        cfg["ca"] = ca.display().to_string().into();
    }
    pki::write_private(
        &m.data_dir.join("client.json"),
        serde_json::to_string_pretty(&cfg).expect("json").as_bytes(),
    )?;
    let ep = serde_json::json!({
        "api": api.to_string(),
        "grpc": grpc.to_string(),
        "pid": std::process::id(),
    });
    // Replaced atomically: labs and tests poll for it and must never read it half written.
    let p = m.data_dir.join("endpoints.json");
    Ok(pki::replace_file(&p, ep.to_string().as_bytes(), 0o644)?)
}

/// Runs `every` on a blocking thread each `period` until shutdown.
fn periodic(
    tasks: &mut JoinSet<Result<(), ManagerError>>,
    mut stop: watch::Receiver<bool>,
    period: Duration,
    mut every: impl FnMut() + Send + 'static,
) {
    tasks.spawn(async move {
        loop {
            // One run at a time; the closure moves to the blocking thread and back.
            every = tokio::task::spawn_blocking(move || {
                every();
                every
            })
            .await
            .map_err(task_failed)?;
            tokio::select! {
                _ = tokio::time::sleep(period) => {}
                _ = stop.wait_for(|s| *s) => return Ok(()),
            }
        }
    });
}

/// Opens the manager and starts the REST and gRPC servers.
pub async fn start(cfg: Config) -> Result<Running, ManagerError> {
    let (m, first_start) = Manager::open(&cfg)?;
    let api_l = tokio::net::TcpListener::bind(cfg.api_listen)
        .await
        .map_err(io_err(format!("binding the API to {}", cfg.api_listen)))?;
    let grpc_l = tokio::net::TcpListener::bind(cfg.grpc_listen)
        .await
        .map_err(io_err(format!("binding gRPC to {}", cfg.grpc_listen)))?;
    let api = api_l.local_addr().map_err(io_err("API address"))?;
    let grpc = grpc_l.local_addr().map_err(io_err("gRPC address"))?;
    // One server certificate for both listeners: loopback (what client.json names for an
    // unspecified address), the addresses they are bound to, and the operator's names.
    let mut sans = vec!["localhost".to_string(), "127.0.0.1".into(), "::1".into()];
    sans.extend(cfg.sans.iter().cloned());
    for ip in [grpc.ip(), api.ip()] {
        let ip = ip.to_canonical();
        if !ip.is_unspecified() && !sans.contains(&ip.to_string()) {
            sans.push(ip.to_string());
        }
    }
    let server = m.ca.server_cert(&sans, cfg.lifetimes.server)?;
    let (cert, key) = (server.cert_pem, server.key_pem);
    let transport = cfg.api_transport();
    let api_tls = match transport {
        ApiTransport::Https => Some(crate::https::acceptor(&cert, &key)?),
        ApiTransport::Http => None,
        ApiTransport::InsecureHttp => {
            tracing::warn!(
                "INSECURE: the REST API listens on {api}, beyond loopback, over plain HTTP \
                 (--api-insecure-http): bearer tokens and every answer cross the network in \
                 clear text; drop the flag to serve it over TLS"
            );
            None
        }
    };
    let api_url = api_url(api, api_tls.is_some());
    write_client_config(&m, &api_url, api, grpc)?;
    // Compliance: edges already in history are not new; webhooks get their own thread.
    let day_ago = (now_ms() as u64).saturating_sub(86_400_000) * 1_000_000;
    m.alerter.learn(&m.store.history_since(day_ago)?);
    if !cfg.webhooks.is_empty() {
        let (wtx, wrx) = std::sync::mpsc::sync_channel(1000);
        m.flows.set_webhooks(wtx);
        let urls = cfg.webhooks.clone();
        std::thread::Builder::new()
            .name("webhooks".into())
            .spawn(move || alerts::deliver(urls, wrx))
            .map_err(io_err("starting the webhook thread"))?;
    }
    let (shutdown, rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    // Scheduled label imports.
    let (m4, mut schedule) = (m.clone(), crate::imports::Schedule::default());
    periodic(&mut tasks, rx.clone(), Duration::from_secs(5), move || {
        m4.run_scheduled_imports(&mut schedule)
    });
    // Retention: hourly, delete flows and history past the window.
    let (m3, retention) = (m.clone(), cfg.retention_ms);
    periodic(
        &mut tasks,
        rx.clone(),
        Duration::from_secs(3600),
        move || {
            let before = (now_ms() as u64).saturating_sub(retention) * 1_000_000;
            if let Err(e) = m3.store.prune(before) {
                tracing::warn!("pruning old flows: {e}");
            }
        },
    );
    spawn_history_flush(&mut tasks, m.clone(), rx.clone());
    let mut rx1 = rx.clone();
    let router = crate::rest::router(m.clone(), cfg.limits.api_body_bytes);
    match api_tls {
        Some(tls) => {
            tasks.spawn(crate::https::serve(api_l, tls, router, rx1));
        }
        None => {
            tasks.spawn(async move {
                axum::serve(api_l, router)
                    .with_graceful_shutdown(async move {
                        let _ = rx1.wait_for(|s| *s).await;
                    })
                    .await
                    .map_err(io_err("API server"))
            });
        }
    }
    m.retire_unwatched(&crate::cluster::check_sources(&cfg.kube)?)?;
    for source in cfg.kube.iter().cloned() {
        tasks.spawn(crate::cluster::run(m.clone(), source, rx.clone()));
    }
    if let Some(j) = &cfg.join_review {
        if cfg.kube.is_empty() {
            return Err(ManagerError::Invalid(
                "joining with ServiceAccount tokens needs --kubeconfig".into(),
            ));
        }
        let mut clients = Vec::new();
        for source in &cfg.kube {
            let client =
                cellwall_kube::review::client(&source.kubeconfig, source.context.as_deref())
                    .await
                    .map_err(|e| ManagerError::Invalid(e.to_string()))?;
            clients.push((source.cluster.clone(), client));
        }
        let _ = m.reviewer.set(crate::config::JoinReviewer::new(clients, j));
        tracing::info!(
            service_account = %j.service_account,
            audience = %j.audience,
            "agents may join with their ServiceAccount token (TokenReview)"
        );
    }
    spawn_grpc(&mut tasks, m.clone(), grpc_l, (cert, key), rx)?;
    Ok(Running {
        api,
        api_url,
        grpc,
        manager: m,
        first_start,
        shutdown,
        tasks,
    })
}

/// History: buffered connections written every few seconds, and once more at shutdown.
fn spawn_history_flush(
    tasks: &mut JoinSet<Result<(), ManagerError>>,
    m: Arc<Manager>,
    mut stop: watch::Receiver<bool>,
) {
    tasks.spawn(async move {
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(HISTORY_FLUSH) => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            let m = m.clone();
            match tokio::task::spawn_blocking(move || m.flush_history()).await {
                Ok(Err(e)) => tracing::error!("writing flow history: {e}"),
                Err(e) => tracing::error!("writing flow history: {e}"),
                Ok(Ok(_)) => {}
            }
            if stopping {
                return Ok(());
            }
        }
    });
}

/// The agent service: TLS with optional client certificates (Join has none yet; every other
/// call checks for one itself).
fn spawn_grpc(
    tasks: &mut JoinSet<Result<(), ManagerError>>,
    m: Arc<Manager>,
    l: tokio::net::TcpListener,
    (cert, key): (String, String),
    mut stop: watch::Receiver<bool>,
) -> Result<(), ManagerError> {
    let tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .client_ca_root(Certificate::from_pem(m.ca_pem()))
        .client_auth_optional(true);
    let server = Server::builder()
        .tls_config(tls)?
        .http2_keepalive_interval(Some(Duration::from_secs(10)))
        .add_service(crate::grpc::bootstrap(m.clone()))
        .add_service(crate::grpc::service(m));
    tasks.spawn(async move {
        // Pushes are small writes that must leave at once (Nagle + delayed ACK would add 40 ms
        // to every push).
        let incoming =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::TcpListenerStream::new(l), |s| {
                if let Ok(s) = &s {
                    let _ = s.set_nodelay(true);
                }
                s
            });
        server
            .serve_with_incoming_shutdown(incoming, async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
            .map_err(ManagerError::from)
    });
    Ok(())
}

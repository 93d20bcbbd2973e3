//! A low-latency Open Inference Protocol (KServe v2) gateway serving ONNX models in-process.
//!
//! # Layers
//! The crate is layered: a module imports only from the layers below it, so the import graph has no cycle and
//! each layer can be read, tested and changed knowing only what lies beneath it (`tests/architecture.rs` fails
//! on an upward import). Bottom to top:
//!
//! 1. [`error`] (the domain error and whose fault it is), [`tensor`] (protocol-neutral tensors), [`clock`].
//! 2. [`manifest`] (a version's signature, baseline, golden examples, remote section), [`routing`] (the pure
//!    routing table: stable, canary and weight, shadow; sticky keys), then [`protocol`] (the Open Inference
//!    Protocol on the wire: REST and gRPC messages and tensor codecs, shared by front ends and remote backend).
//! 3. [`skew`] (drift and invariants against the training baseline), [`rollout`] (pure canary analysis: policy,
//!    state machine, checks, cumulative stats).
//! 4. [`telemetry`] (logging, traces), [`state`] (routing and journal on disk), [`metrics`] (metric families;
//!    plain values in), [`tls`] (rustls: listener certificates reloaded when their files change, the client side
//!    of links out), then [`config`] (the typed configuration, checked as a whole before any port is bound).
//! 5. [`model`]: backends (ONNX Runtime in-process, remote servers) behind one `ModelVersion::infer`, the
//!    inference pool, the batcher, the registry of models and versions, operator actions, repository watching.
//! 6. [`mirror`]: after the answer, off the hot path: shadow copies and their divergence, the capture log,
//!    delayed-label feedback.
//! 7. [`core`]: the request path shared by every front end (resolve, validate, infer, record).
//! 8. [`cluster`] (cluster mode on etcd: the shared desired state, membership, the election, every replica's
//!    evidence), then [`controller`] (the rollout controller task: samples, analyses, acts, journals).
//! 9. [`api`]: the HTTP and gRPC front ends, the admin API, the metrics endpoint, admission, and the one
//!    error-to-status table.
//! 10. this file (wiring: [`Gateway::start`], [`run`]), `main.rs`, and [`cli`] (the `gateway admin ...` client).

pub mod api;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod controller;
pub mod core;
pub mod error;
pub mod manifest;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod protocol;
pub mod rollout;
pub mod routing;
pub mod skew;
pub mod state;
pub mod telemetry;
pub mod tensor;
pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admin::AdminToken;
use crate::api::admission::Admission;
use crate::api::serve::{ConnLimits, ConnMetrics, Phase, fit_connections, open_files_limit, serve};
use crate::cluster::Cluster;
use crate::config::{Checked, Config, Resolved};
use crate::controller::Controller;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::mirror::Mirror;
use crate::mirror::capture::{CaptureLog, CaptureSettings};
use crate::mirror::feedback::FeedbackBook;
use crate::model::Registry;
use crate::model::onnx::{SessionOptions, init_runtime, locate_library};
use crate::model::pool::InferencePool;
use crate::model::registry::RegistryParts;
use crate::model::repository::Repository;
use crate::routing::Weight;
use crate::state::StateStore;

/// A gateway whose listeners are bound and serving.
#[derive(Debug)]
pub struct Gateway {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub core: Arc<Core>,
    /// The rollout controller (the admin API and the ticker share it; tests step it by hand).
    pub controller: Arc<Controller>,
    phase: Arc<watch::Sender<Phase>>,
    task: JoinHandle<()>,
}

/// The four listeners, bound before anything is served so a taken port fails the start at once.
struct Listeners {
    http: TcpListener,
    grpc: TcpListener,
    metrics: TcpListener,
    admin: TcpListener,
}

impl Listeners {
    async fn bind(r: &Resolved) -> anyhow::Result<Self> {
        async fn one(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
            TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({field}): {e}"))
        }
        Ok(Self {
            http: one(r.http_addr, "server.http_addr").await?,
            grpc: one(r.grpc_addr, "server.grpc_addr").await?,
            metrics: one(r.metrics_addr, "server.metrics_addr").await?,
            admin: one(r.admin_addr, "admin.addr").await?,
        })
    }
}

/// Each listener's TLS (None: plain text), loaded before any port is bound so a bad certificate fails the start.
struct ListenerTlsSet {
    http: api::serve::Tls,
    grpc: api::serve::Tls,
    metrics: api::serve::Tls,
    admin: api::serve::Tls,
}

impl ListenerTlsSet {
    fn load(config: &Config, metrics: &crate::metrics::Metrics) -> anyhow::Result<Self> {
        let one = |section: &str, listener: &str, cfg: &Option<config::ListenerTls>, alpn: &[&[u8]]| {
            cfg.as_ref()
                .map(|cfg| {
                    let tls = tls::ServerTls::load(cfg, alpn).map_err(|e| anyhow::anyhow!("{section}: {e}"))?;
                    Ok::<_, anyhow::Error>((Arc::new(tls), metrics.tls(listener)))
                })
                .transpose()
        };
        // The HTTP ports speak HTTP/1.1 only; gRPC is HTTP/2.
        Ok(Self {
            http: one("server.tls", "http", &config.server.tls, &[b"http/1.1"])?,
            grpc: one("server.grpc_tls", "grpc", &config.server.grpc_tls, &[b"h2"])?,
            metrics: one("server.metrics_tls", "metrics", &config.server.metrics_tls, &[b"http/1.1"])?,
            admin: one("admin.tls", "admin", &config.admin.tls, &[b"http/1.1"])?,
        })
    }

    /// A task per TLS listener that reloads its files when they change.
    fn watchers(&self, rx: &watch::Receiver<Phase>) -> Vec<JoinHandle<()>> {
        [("http", &self.http), ("grpc", &self.grpc), ("metrics", &self.metrics), ("admin", &self.admin)]
            .into_iter()
            .filter_map(|(name, tls)| {
                let (tls, metrics) = tls.clone()?;
                Some(tokio::spawn(api::serve::watch_certificates(name, tls, metrics, rx.clone())))
            })
            .collect()
    }
}

/// Resolves when the gateway reaches `phase` (servers and background tasks watch for `Closing`).
async fn reached(mut rx: watch::Receiver<Phase>, phase: Phase) {
    let _ = rx.wait_for(|p| *p >= phase).await;
}

impl Gateway {
    /// Checks the config, then starts as [`Gateway::serve`] does.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let checked = config
            .clone()
            .check()
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n  - {}", errors.join("\n  - ")))?;
        Self::serve(checked).await
    }

    /// Loads ONNX Runtime, binds the ports and starts loading the model repository. Returns once the listeners
    /// accept connections; readiness follows when the models are loaded.
    pub async fn serve(checked: Checked) -> anyhow::Result<Self> {
        let Checked { config, resolved } = checked;
        let token = AdminToken::from_config(&config.admin).map_err(anyhow::Error::msg)?;
        let clients = Arc::new(api::consumers::Clients::from_config(&config.clients).map_err(anyhow::Error::msg)?);
        if !token.is_set() {
            tracing::warn!(?token, "no admin token configured: the admin API will refuse every call");
        }
        let core = build_core(&config, &resolved)?;
        let tls = ListenerTlsSet::load(&config, &core.metrics)?;
        let listeners = Listeners::bind(&resolved).await?;
        // In cluster mode the fleet's routing is read before the repository loads, so versions load into it.
        let cluster = match config.cluster.enabled() {
            true => Some(Cluster::start(&config.cluster, config.server.tls.is_some(), core.clone()).await?),
            false => None,
        };
        let controller =
            Arc::new(Controller::new(core.clone(), config.rollout.clone(), config.rollout_features(), cluster.clone()));
        let (http_addr, grpc_addr, metrics_addr, admin_addr) = (
            listeners.http.local_addr()?,
            listeners.grpc.local_addr()?,
            listeners.metrics.local_addr()?,
            listeners.admin.local_addr()?,
        );
        tracing::info!(%http_addr, %grpc_addr, %metrics_addr, %admin_addr, "gateway listening");
        load_repository(core.clone());
        let (phase, rx) = watch::channel(Phase::Serving);
        let phase = Arc::new(phase);
        if let Some(c) = &cluster {
            let addrs = cluster::Addrs {
                http_addr: http_addr.to_string(),
                grpc_addr: grpc_addr.to_string(),
                admin_addr: admin_addr.to_string(),
            };
            c.spawn(addrs, reached(rx.clone(), Phase::Closing));
        }
        let traffic = Arc::new(api::admin::traffic::TrafficHistory::default());
        let mut background = spawn_background(&config, &core, &controller, &rx);
        background.extend(tls.watchers(&rx));
        let (sampled, history) = (core.clone(), traffic.clone());
        background.push(every(api::admin::traffic::STEP, rx.clone(), move || {
            history.sample(&sampled, api::admin::traffic::STEP);
        }));
        let admission = Admission::new(
            config.server.max_body_bytes,
            config.server.max_concurrent_requests,
            resolved.request_timeout,
        );
        let (http_connections, side_connections) = fit_connections(config.server.max_connections, open_files_limit());
        let limits = ConnLimits {
            max_connections: http_connections,
            header_read_timeout: Duration::from_millis(config.server.header_read_timeout_ms),
        };
        let apps = Apps {
            core: &core,
            controller: &controller,
            cluster: cluster.clone(),
            token,
            admission: &admission,
            traffic,
            clients,
        };
        let servers = spawn_servers(listeners, tls, apps, limits, side_connections, &rx);
        let task = tokio::spawn(drain(servers, background, phase.clone(), resolved.drain, resolved.shutdown_grace));
        Ok(Self { http_addr, grpc_addr, metrics_addr, admin_addr, core, controller, phase, task })
    }

    /// Shuts down gracefully: readiness fails first, then during the drain period requests are still served (each
    /// answer closing its connection); then the listeners stop accepting and in-flight requests finish, bounded
    /// by the grace period. Returns when done.
    pub async fn shutdown(self) {
        self.core.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        self.phase.send_replace(Phase::Draining);
        let _ = self.task.await;
    }

    /// Waits until the initial model load is done, or the timeout passes. For tests and tools.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.core.registry.initial_load_done() {
            if tokio::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        true
    }
}

/// The shared state of the request path: ONNX Runtime, the registry (with the state restored from disk), the
/// inference pool, the mirror, the capture log and the feedback book.
fn build_core(config: &Config, resolved: &Resolved) -> anyhow::Result<Arc<Core>> {
    let library = locate_library(config.onnxruntime.library.as_deref());
    let env = init_runtime(&library).map_err(anyhow::Error::msg)?;
    tracing::info!(library = %library.display(), "ONNX Runtime loaded");
    let repository = Repository::open(&config.models.repository).map_err(anyhow::Error::msg)?;
    let store = StateStore::open(&config.state.dir)
        .map_err(|e| anyhow::anyhow!("cannot use state.dir {}: {e}", config.state.dir.display()))?;
    let metrics = Metrics::new();
    let session_options = SessionOptions {
        sessions: resolved.inference_threads,
        intra_op_threads: config.inference.intra_op_threads,
        inline_max: Duration::from_micros(config.inference.inline_max_us),
    };
    let pool = InferencePool::new(resolved.inference_threads, config.inference.queue_capacity)?;
    let capture = match &config.capture.dir {
        Some(dir) => {
            let settings = CaptureSettings {
                dir: dir.clone(),
                max_file_bytes: config.capture.max_file_mb * 1024 * 1024,
                max_total_bytes: config.capture.max_total_mb * 1024 * 1024,
                queue_capacity: config.capture.queue_capacity,
            };
            let log = CaptureLog::start(settings, metrics.capture_written.clone(), metrics.capture_dropped.clone())
                .map_err(|e| anyhow::anyhow!("cannot use capture.dir {}: {e}", dir.display()))?;
            Some((log, Weight::from_percent(config.capture.percent).unwrap_or_default()))
        }
        None => None,
    };
    let registry = Arc::new(Registry::new(RegistryParts {
        repository,
        env,
        session_options,
        pool: pool.handle(),
        batching: config.batching.clone(),
        skew: config.skew.clone(),
        metrics: metrics.clone(),
        store,
        upstream_tls: crate::tls::ClientTlsMaterial::load(&config.upstreams.tls)
            .map_err(|e| anyhow::anyhow!("upstreams.tls: {e}"))?,
    }));
    let mirror = Mirror::start(config.mirror.queue_capacity, config.mirror.workers, pool.handle(), metrics.clone());
    Ok(Arc::new(Core {
        registry,
        pool,
        metrics,
        max_batch_rows: config.models.max_batch_rows,
        max_body_bytes: config.server.max_body_bytes,
        decode_offload_bytes: Some(config.inference.decode_offload_bytes).filter(|&n| n > 0),
        body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms).min(resolved.request_timeout),
        strict_readiness: config.server.strict_readiness,
        routing: config.routing.headers().map_err(anyhow::Error::msg)?,
        max_model_age: (config.skew.max_model_age_days > 0.0)
            .then(|| Duration::from_secs_f64(config.skew.max_model_age_days * 86_400.0)),
        mirror,
        capture,
        feedback: (config.feedback.capacity > 0)
            .then(|| FeedbackBook::new(config.feedback.capacity, config.feedback.max_mb * 1024 * 1024)),
        draining: Default::default(),
        ready_note: Default::default(),
    }))
}

/// Loads every version in the repository off the async workers (ONNX session creation blocks).
fn load_repository(core: Arc<Core>) {
    tokio::task::spawn_blocking(move || {
        if let Err(e) = core.registry.load_repository() {
            tracing::error!(error = %e, "cannot load the model repository");
        }
    });
}

/// The background tasks: repository watching, drift window rotation, and the rollout controller's tick.
fn spawn_background(
    config: &Config,
    core: &Arc<Core>,
    controller: &Arc<Controller>,
    rx: &watch::Receiver<Phase>,
) -> Vec<JoinHandle<()>> {
    let mut tasks = Vec::new();
    if config.models.watch_interval_ms > 0 {
        let every = Duration::from_millis(config.models.watch_interval_ms);
        tasks.push(model::watch::spawn(
            core.registry.clone(),
            every,
            config.models.serve_new_versions,
            reached(rx.clone(), Phase::Closing),
        ));
    }
    if config.skew.enabled {
        let core = core.clone();
        tasks.push(every(config.skew.slot_len(), rx.clone(), move || {
            for v in core.ready_versions() {
                if let Some(s) = &v.skew {
                    s.drift.rotate();
                }
            }
        }));
    }
    // Rollouts are analysed on their own intervals; this only checks a few times a second which are due. The
    // tick runs on a blocking thread: its decisions write the state file (fsync).
    let (core, controller) = (core.clone(), controller.clone());
    tasks.push(every(Duration::from_millis(250), rx.clone(), move || {
        if core.registry.initial_load_done() {
            controller.tick();
        }
    }));
    tasks
}

/// Runs `f` on a blocking thread every `period` until shutdown, one run at a time.
fn every(period: Duration, stop: watch::Receiver<Phase>, f: impl Fn() + Send + Sync + 'static) -> JoinHandle<()> {
    let f = Arc::new(f);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stopped = tokio::select! {
                _ = tick.tick() => false,
                _ = reached(stop.clone(), Phase::Closing) => true,
            };
            if stopped {
                return;
            }
            let f = f.clone();
            let _ = tokio::task::spawn_blocking(move || f()).await;
        }
    })
}

/// What the four servers' applications are built from.
struct Apps<'a> {
    core: &'a Arc<Core>,
    controller: &'a Arc<Controller>,
    cluster: Option<Arc<Cluster>>,
    token: AdminToken,
    admission: &'a Admission,
    traffic: Arc<api::admin::traffic::TrafficHistory>,
    clients: Arc<api::consumers::Clients>,
}

/// The four servers, each stopping when the phase reaches `Closing`.
fn spawn_servers(
    l: Listeners,
    tls: ListenerTlsSet,
    apps: Apps<'_>,
    limits: ConnLimits,
    side_connections: usize,
    rx: &watch::Receiver<Phase>,
) -> Vec<JoinHandle<std::io::Result<()>>> {
    let Apps { core, controller, cluster, token, admission, traffic, clients } = apps;
    // The inference port takes `limits` as fitted; the admin and metrics ports the side listeners' share.
    let side = ConnLimits { max_connections: side_connections, ..limits };
    let serve = |listener: TcpListener, name: &str, tls: api::serve::Tls, limits: ConnLimits| Port {
        listener,
        limits,
        metrics: {
            let (open, refused) = core.metrics.connections(name);
            ConnMetrics { open, refused }
        },
        tls,
        phase: rx.clone(),
        draining: core.draining.clone(),
    };
    let server = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(api::grpc::decode_errors_are_invalid_argument));
    let app = api::grpc::service(core.clone(), admission, token.clone(), clients.clone());
    let closing = reached(rx.clone(), Phase::Closing);
    let grpc = match tls.grpc {
        // Without TCP_NODELAY, multi-packet messages wait out the peer's delayed ACK (40 ms per request).
        None => tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(l.grpc).with_nodelay(Some(true));
            server.serve_with_incoming_shutdown(app, incoming, closing).await.map_err(std::io::Error::other)
        }),
        Some((server_tls, metrics)) => {
            let incoming =
                api::serve::tls_incoming(l.grpc, server_tls, metrics, limits.header_read_timeout, rx.clone());
            tokio::spawn(async move {
                server.serve_with_incoming_shutdown(app, incoming, closing).await.map_err(std::io::Error::other)
            })
        }
    };
    vec![
        grpc,
        serve(l.http, "http", tls.http, limits).spawn(api::http::service(
            core.clone(),
            admission,
            cluster.clone(),
            token.clone(),
            clients.clone(),
        )),
        serve(l.metrics, "metrics", tls.metrics, side).spawn(api::metrics::router(core.clone())),
        serve(l.admin, "admin", tls.admin, side).spawn(api::admin::router(
            core.clone(),
            controller.clone(),
            cluster,
            token,
            traffic,
            clients,
        )),
    ]
}

/// A listener with what serving it needs besides its service.
struct Port {
    listener: TcpListener,
    limits: ConnLimits,
    metrics: ConnMetrics,
    tls: api::serve::Tls,
    phase: watch::Receiver<Phase>,
    draining: Arc<std::sync::atomic::AtomicBool>,
}

impl Port {
    fn spawn<A>(self, app: A) -> JoinHandle<std::io::Result<()>>
    where
        A: tower::Service<
                http::Request<hyper::body::Incoming>,
                Response = axum::response::Response,
                Error = Infallible,
            > + Clone
            + Send
            + 'static,
        A::Future: Send + 'static,
    {
        let Port { listener, limits, metrics, tls, phase, draining } = self;
        tokio::spawn(serve(listener, app, limits, phase, draining, metrics, tls))
    }
}

/// The shutdown sequence, once asked for: the drain period (readiness already fails), then `Closing`: the servers
/// finish what is in flight within the grace period (the rest is cut off), and the background tasks stop.
async fn drain(
    mut servers: Vec<JoinHandle<std::io::Result<()>>>,
    background: Vec<JoinHandle<()>>,
    phase: Arc<watch::Sender<Phase>>,
    drain: Duration,
    grace: Duration,
) {
    reached(phase.subscribe(), Phase::Draining).await;
    tracing::info!(drain_ms = drain.as_millis() as u64, "draining: readiness fails, answers close their connections");
    tokio::time::sleep(drain).await;
    phase.send_replace(Phase::Closing);
    tracing::info!(grace_ms = grace.as_millis() as u64, "closing: finishing in-flight requests");
    let drained = tokio::time::timeout(grace, async {
        for s in servers.iter_mut() {
            let _ = s.await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!("grace period over; closing the remaining connections");
        servers.iter().for_each(JoinHandle::abort);
    }
    for t in background {
        let _ = t.await;
    }
}

/// Runs a gateway until `shutdown` resolves, then drains.
pub async fn run(config: Checked, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let gateway = Gateway::serve(config).await?;
    shutdown.await;
    tracing::info!("shutdown requested");
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

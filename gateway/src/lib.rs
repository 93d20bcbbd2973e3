//! A low-latency Open Inference Protocol (KServe v2) gateway serving ONNX models in-process.
//!
//! # Layout
//! - [`config`]: the typed configuration, validated as a whole before any port is bound.
//! - [`tensor`]: protocol-neutral tensors and typed JSON decoding of tensor data.
//! - [`model`]: manifests, the model repository, the backends (ONNX Runtime in-process, or a remote inference
//!   server with a circuit breaker), the inference thread pool, and the registry of loaded versions.
//! - [`routing`]: the per-model routing table (stable, canary and weight) that picks the version answering a
//!   request: URL version, pin header, sticky routing key, or a random draw.
//! - [`rollout`]: automatic canary analysis: weight steps, checks against stable, promotion and rollback.
//! - [`skew`]: train/serve skew on live inputs: drift (PSI) against the training baseline, invariants.
//! - [`state`]: routing and the event journal, written atomically and restored at start.
//! - [`core`]: the request path shared by every front end (resolve, validate, infer, select outputs).
//! - [`api`]: the HTTP and gRPC front ends, the admin API, the metrics endpoint, and the error-to-status table.
//! - [`cli`]: the `gateway admin ...` client.
//! - [`mirror`]: after the answer, off the hot path: shadow copies and their divergence, the capture log,
//!   delayed-label feedback.
//! - [`metrics`]: Prometheus metric families.
//! - [`telemetry`]: logging setup.
//!
//! [`Gateway::start`] binds the listeners and loads the repository in the background; [`run`] adds signal
//! handling and a bounded drain on shutdown.

pub mod api;
pub mod cli;
pub mod config;
pub mod core;
pub mod error;
pub mod metrics;
pub mod mirror;
pub mod model;
pub mod rollout;
pub mod routing;
pub mod skew;
pub mod state;
pub mod telemetry;
pub mod tensor;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::api::admin::AdminToken;
use crate::config::Config;
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
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

async fn bind(addr: SocketAddr, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({field}): {e}"))
}

impl Gateway {
    /// Validates the config, loads ONNX Runtime, binds the ports and starts loading the model repository.
    /// Returns once the listeners accept connections; readiness follows when the models are loaded.
    pub async fn start(config: &Config) -> anyhow::Result<Self> {
        let resolved = config
            .validate()
            .map_err(|errors| anyhow::anyhow!("invalid configuration:\n  - {}", errors.join("\n  - ")))?;
        let library = locate_library(config.onnxruntime.library.as_deref());
        let env = init_runtime(&library).map_err(anyhow::Error::msg)?;
        let repository = Repository::open(&config.models.repository).map_err(anyhow::Error::msg)?;
        let store = StateStore::open(&config.state.dir)
            .map_err(|e| anyhow::anyhow!("cannot use state.dir {}: {e}", config.state.dir.display()))?;
        let token = AdminToken::from_config(&config.admin).map_err(anyhow::Error::msg)?;
        if !token.is_set() {
            tracing::warn!(?token, "no admin token configured: the admin API will refuse every call");
        }
        let metrics = Metrics::new();
        let session_options = SessionOptions {
            sessions: resolved.inference_threads,
            intra_op_threads: config.inference.intra_op_threads,
        };
        let pool = InferencePool::new(resolved.inference_threads, config.inference.queue_capacity)?;
        let pool_handle = pool.handle();
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
        }));
        let core = Arc::new(Core {
            registry,
            pool,
            metrics: metrics.clone(),
            max_batch_rows: config.models.max_batch_rows,
            max_body_bytes: config.server.max_body_bytes,
            strict_readiness: config.server.strict_readiness,
            routing: config.routing.clone(),
            max_model_age: (config.skew.max_model_age_days > 0.0)
                .then(|| Duration::from_secs_f64(config.skew.max_model_age_days * 86_400.0)),
            mirror: Mirror::start(config.mirror.queue_capacity, config.mirror.workers, pool_handle, metrics.clone()),
            capture,
            feedback: (config.feedback.capacity > 0).then(|| FeedbackBook::new(config.feedback.capacity)),
            rollouts: rollout::Controller::new(config.rollout.clone(), config.rollout_features()),
        });

        let http = bind(resolved.http_addr, "server.http_addr").await?;
        let grpc = bind(resolved.grpc_addr, "server.grpc_addr").await?;
        let metrics_listener = bind(resolved.metrics_addr, "server.metrics_addr").await?;
        let admin = bind(resolved.admin_addr, "admin.addr").await?;
        let (http_addr, grpc_addr, metrics_addr, admin_addr) =
            (http.local_addr()?, grpc.local_addr()?, metrics_listener.local_addr()?, admin.local_addr()?);
        tracing::info!(%http_addr, %grpc_addr, %metrics_addr, %admin_addr, library = %library.display(), "gateway listening");

        let loader = core.registry.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = loader.load_repository() {
                tracing::error!(error = %e, "cannot load the model repository");
            }
        });

        let limits = api::http::Limits {
            max_body_bytes: config.server.max_body_bytes,
            max_concurrent: config.server.max_concurrent_requests,
            timeout: resolved.request_timeout,
        };
        let (shutdown, rx) = watch::channel(false);
        let signal = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let watcher = (config.models.watch_interval_ms > 0).then(|| {
            let every = Duration::from_millis(config.models.watch_interval_ms);
            model::watch::spawn(core.registry.clone(), every, config.models.serve_new_versions, rx.clone())
        });
        let drift_ticker = config.skew.enabled.then(|| {
            let (core, every, mut stop) = (core.clone(), config.skew.slot_len(), rx.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {
                            for v in core.ready_versions() {
                                if let Some(s) = &v.skew {
                                    s.drift.rotate();
                                }
                            }
                        }
                        _ = stop.wait_for(|s| *s) => return,
                    }
                }
            })
        });
        // Rollouts are analysed on their own intervals; this task only checks a few times a second which are due.
        let controller = {
            let (core, mut stop) = (core.clone(), rx.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let stopped = tokio::select! {
                        _ = tick.tick() => false,
                        _ = stop.wait_for(|s| *s) => true,
                    };
                    if stopped {
                        return;
                    }
                    if core.registry.initial_load_done() {
                        // Decisions write the state file (fsync): off the async workers.
                        let c = core.clone();
                        let _ = tokio::task::spawn_blocking(move || c.rollouts.tick(&c)).await;
                    }
                }
            })
        };
        let serve = |listener: TcpListener, app: axum::Router| {
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(signal(rx.clone())).into_future())
        };
        let grpc_serve = tonic::transport::Server::builder()
            .add_service(api::grpc::service(core.clone(), &limits))
            // Without TCP_NODELAY, multi-packet messages wait out the peer's delayed ACK (40 ms per request).
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true)),
                signal(rx.clone()),
            );
        let grpc_server = tokio::spawn(async move { grpc_serve.await.map_err(std::io::Error::other) });
        let mut servers = [
            grpc_server,
            serve(http, api::http::router(core.clone(), &limits)),
            serve(metrics_listener, api::metrics::router(core.clone())),
            serve(admin, api::admin::router(core.clone(), token)),
        ];
        let grace = resolved.shutdown_grace;
        let task = tokio::spawn(async move {
            signal(rx).await;
            tracing::info!(grace_ms = grace.as_millis() as u64, "draining in-flight requests");
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
            for t in [watcher, drift_ticker, Some(controller)].into_iter().flatten() {
                let _ = t.await;
            }
        });
        Ok(Self { http_addr, grpc_addr, metrics_addr, admin_addr, core, shutdown, task })
    }

    /// Stops accepting, lets in-flight requests finish (bounded by the grace period) and returns when done.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
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

/// Runs a gateway until `shutdown` resolves, then drains.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let gateway = Gateway::start(&config).await?;
    shutdown.await;
    tracing::info!("shutdown requested");
    gateway.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

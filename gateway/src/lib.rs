//! A low-latency Open Inference Protocol (KServe v2) gateway serving ONNX models in-process.
//!
//! # Layout
//! - [`config`]: the typed configuration, validated as a whole before any port is bound.
//! - [`tensor`]: protocol-neutral tensors and typed JSON decoding of tensor data.
//! - [`model`]: manifests, the model repository, the ONNX Runtime backend, the inference thread pool, and the
//!   registry of loaded versions.
//! - [`routing`]: the per-model routing table that picks the version answering a request.
//! - [`core`]: the request path shared by every front end (resolve, validate, infer, select outputs).
//! - [`api`]: the HTTP front end, the metrics endpoint, and the error-to-status table.
//! - [`metrics`]: Prometheus metric families.
//! - [`telemetry`]: logging setup.
//!
//! [`Gateway::start`] binds the listeners and loads the repository in the background; [`run`] adds signal
//! handling and a bounded drain on shutdown.

pub mod api;
pub mod config;
pub mod core;
pub mod error;
pub mod metrics;
pub mod model;
pub mod routing;
pub mod telemetry;
pub mod tensor;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::core::Core;
use crate::metrics::Metrics;
use crate::model::Registry;
use crate::model::onnx::{SessionOptions, init_runtime, locate_library};
use crate::model::pool::InferencePool;
use crate::model::repository::Repository;

/// A gateway whose listeners are bound and serving.
#[derive(Debug)]
pub struct Gateway {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub core: Arc<Core>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
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
        let metrics = Metrics::new();
        let session_options = SessionOptions {
            sessions: resolved.inference_threads,
            intra_op_threads: config.inference.intra_op_threads,
        };
        let pool = InferencePool::new(resolved.inference_threads, config.inference.queue_capacity)?;
        let core = Arc::new(Core {
            registry: Registry::new(
                repository,
                env,
                session_options,
                pool.handle(),
                config.batching.clone(),
                metrics.clone(),
            ),
            pool,
            metrics,
            max_batch_rows: config.models.max_batch_rows,
            max_body_bytes: config.server.max_body_bytes,
            strict_readiness: config.server.strict_readiness,
        });

        let http = TcpListener::bind(resolved.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (server.http_addr): {e}", resolved.http_addr))?;
        let metrics_listener = TcpListener::bind(resolved.metrics_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {} (server.metrics_addr): {e}", resolved.metrics_addr))?;
        let http_addr = http.local_addr()?;
        let metrics_addr = metrics_listener.local_addr()?;
        tracing::info!(%http_addr, %metrics_addr, library = %library.display(), "gateway listening");

        let loader = core.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = loader.registry.load_repository() {
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
        let mut http_task = tokio::spawn(
            axum::serve(http, api::http::router(core.clone(), &limits))
                .with_graceful_shutdown(signal(rx.clone()))
                .into_future(),
        );
        let mut metrics_task = tokio::spawn(
            axum::serve(metrics_listener, api::metrics::router(core.clone()))
                .with_graceful_shutdown(signal(rx.clone()))
                .into_future(),
        );
        let grace = resolved.shutdown_grace;
        let task = tokio::spawn(async move {
            signal(rx).await;
            tracing::info!(grace_ms = grace.as_millis() as u64, "draining in-flight requests");
            let drained = tokio::time::timeout(grace, async {
                let _ = (&mut http_task).await;
                let _ = (&mut metrics_task).await;
            })
            .await;
            if drained.is_err() {
                tracing::warn!("grace period over; closing the remaining connections");
                http_task.abort();
                metrics_task.abort();
            }
        });
        Ok(Self { http_addr, metrics_addr, core, shutdown, task })
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

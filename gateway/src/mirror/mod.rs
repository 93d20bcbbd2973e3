//! Everything that happens to a request after its answer is ready, off the hot path: copies to a shadow
//! version (compared by [`divergence`]), records to the capture log ([`capture`]), and the memory of recent
//! answers that delayed labels join against ([`feedback`]). Each hand-off is a `try_send` into a bounded queue: a
//! full queue drops and counts, and never delays, fails or changes a live response.

pub mod capture;
pub mod divergence;
pub mod feedback;

use std::sync::Arc;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::ModelVersion;
use crate::model::call::Priority;
use crate::model::pool::PoolHandle;
use crate::tensor::Tensor;
use divergence::DivergenceBook;

/// A live request and answer, copied for the shadow.
pub struct ShadowJob {
    pub live: Arc<ModelVersion>,
    pub shadow: Arc<ModelVersion>,
    pub inputs: Vec<Tensor>,
    pub outputs: Vec<Tensor>,
}

pub struct Mirror {
    tx: async_channel::Sender<ShadowJob>,
    pub divergence: Arc<DivergenceBook>,
    metrics: Metrics,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Mirror")
    }
}

impl Mirror {
    /// Starts `workers` shadow workers on the current runtime. They stop when the `Mirror` is dropped.
    pub fn start(queue: usize, workers: usize, pool: PoolHandle, metrics: Metrics) -> Self {
        let (tx, rx) = async_channel::bounded::<ShadowJob>(queue.max(1));
        let divergence = Arc::new(DivergenceBook::default());
        for _ in 0..workers {
            let (rx, pool, book, metrics) = (rx.clone(), pool.clone(), divergence.clone(), metrics.clone());
            tokio::spawn(async move {
                while let Ok(job) = rx.recv().await {
                    if !job.shadow.runs_locally() {
                        // A remote shadow waits on the network, not on this process: run it concurrently (the
                        // remote's own concurrency bound refuses what it cannot take).
                        let (pool, book, metrics) = (pool.clone(), book.clone(), metrics.clone());
                        tokio::spawn(async move { run_shadow(job, &pool, &book, &metrics).await });
                    } else {
                        run_shadow(job, &pool, &book, &metrics).await;
                    }
                }
            });
        }
        Self { tx, divergence, metrics }
    }

    /// Hands a copy to the shadow workers; drops (and counts) when they are behind.
    pub fn offer(&self, job: ShadowJob) {
        if self.tx.try_send(job).is_err() {
            self.metrics.mirror_dropped("queue_full");
        }
    }

    pub fn queue_len(&self) -> usize {
        self.tx.len()
    }
}

async fn run_shadow(job: ShadowJob, pool: &PoolHandle, book: &DivergenceBook, metrics: &Metrics) {
    // Shadows use spare capacity only: when every inference thread is busy with live calls, the copy is dropped
    // rather than queued in front of live work.
    let rows = job.inputs.first().and_then(|t| t.shape.first()).map_or(0, |&r| r.max(0) as usize);
    let outputs = job.shadow.infer(job.inputs, rows, pool, Priority::Spare).await;
    match outputs {
        Ok(outputs) => {
            let key = (job.live.model.to_string(), job.live.number, job.shadow.number);
            book.record(key, &job.outputs, &outputs, metrics);
        }
        // Refused before the call (a full remote, an open circuit): the shadow was busy, not wrong.
        Err(GatewayError::Overloaded(_) | GatewayError::NotReady { .. }) => {
            metrics.mirror_dropped("busy");
        }
        Err(e) => {
            tracing::warn!(model = %job.shadow.model, version = %job.shadow.version, error = %e, "shadow call failed");
            metrics.mirror_dropped("shadow_error");
        }
    }
}

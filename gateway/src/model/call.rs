//! One way to run a call on a version, whatever its backend: ONNX Runtime on the inference threads (through the
//! version's batcher when batching is on) or a remote server. The request path and the shadow workers both call
//! [`ModelVersion::infer`]; nothing else matches on the backend.

use std::time::{Duration, Instant};

use tracing::Instrument;

use crate::error::GatewayError;
use crate::model::pool::{PoolHandle, Trace};
use crate::model::statistics::Phases;
use crate::model::version::{Backend, ModelVersion};
use crate::telemetry::REQUEST_TARGET;
use crate::tensor::Tensor;

/// Whose call it is, which decides how it may use the inference threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Priority {
    /// A live request: queued (bounded) behind other live calls, measured, and traced.
    Live,
    /// A shadow copy: runs only on spare capacity, refused (`Overloaded`) when every inference thread is busy,
    /// so it never waits in front of live work.
    Spare,
}

impl ModelVersion {
    /// The backend's platform name for model metadata (`platform` in the protocol's metadata answer).
    pub fn platform(&self) -> &'static str {
        match &self.backend {
            Backend::Onnx(_) => "onnxruntime_onnx",
            Backend::Remote(_) => "remote",
        }
    }

    /// True when calls run on this process's inference threads (and so can fill its queue).
    pub fn runs_locally(&self) -> bool {
        matches!(self.backend, Backend::Onnx(_))
    }

    /// Runs validated inputs (`rows` batch rows) and returns the outputs.
    pub async fn infer(
        &self,
        inputs: Vec<Tensor>,
        rows: usize,
        pool: &PoolHandle,
        priority: Priority,
    ) -> Result<Vec<Tensor>, GatewayError> {
        let live = priority == Priority::Live;
        match &self.backend {
            Backend::Onnx(model) => {
                let mut inputs = inputs;
                if live && self.batcher.is_none() {
                    match model.try_inline(inputs, rows) {
                        Ok((result, phases)) => {
                            self.metrics.batch_rows.observe(rows as f64);
                            if result.is_ok() {
                                self.metrics.inference_duration.observe(phases.total().as_secs_f64());
                                self.serving.executed(rows, phases);
                                self.serving.request_phases(Duration::ZERO, phases);
                            }
                            return result;
                        }
                        Err(back) => inputs = back,
                    }
                }
                let submitted = match (&self.batcher, priority) {
                    (Some(b), Priority::Live) => b.submit(inputs, rows),
                    (None, Priority::Live) => {
                        self.metrics.batch_rows.observe(rows as f64);
                        let trace = Trace {
                            queue: tracing::debug_span!(target: REQUEST_TARGET, "queue"),
                            parent: tracing::Span::current(),
                        };
                        pool.submit_traced(model.clone(), inputs, trace, Some(self.serving.clone()))
                    }
                    (_, Priority::Spare) if pool.saturated() => {
                        Err(GatewayError::Overloaded("every inference thread is busy with live calls".into()))
                    }
                    (_, Priority::Spare) => pool.submit(model.clone(), inputs),
                };
                let (result, timing) = submitted?
                    .await
                    .map_err(|_| GatewayError::Internal("the inference worker dropped the call".into()))?;
                if live && result.is_ok() {
                    self.metrics.inference_duration.observe(timing.phases.total().as_secs_f64());
                    self.serving.request_phases(timing.queue, timing.phases);
                    if self.batcher.is_none() {
                        model.observe(rows, timing.phases);
                    }
                }
                result
            }
            Backend::Remote(remote) => {
                if !live {
                    // A remote shadow costs this process no inference thread; its own bound refuses when full.
                    return remote.infer(inputs, &self.manifest).await;
                }
                self.metrics.batch_rows.observe(rows as f64);
                let started = Instant::now();
                let span = tracing::debug_span!(target: REQUEST_TARGET, "infer", backend = "remote");
                let result = remote.infer(inputs, &self.manifest).instrument(span).await;
                let took = started.elapsed();
                self.metrics.inference_duration.observe(took.as_secs_f64());
                if result.is_ok() {
                    // The upstream's own phases are its business: the whole call is this version's compute.
                    let phases = Phases { infer: took, ..Phases::default() };
                    self.serving.executed(rows, phases);
                    self.serving.request_phases(Duration::ZERO, phases);
                }
                result
            }
        }
    }
}

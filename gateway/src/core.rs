//! The request path shared by every front end: resolve the model version, validate the request against its
//! signature, run it on the inference pool, select the outputs. HTTP (and later gRPC) only decode and encode.

use std::sync::Arc;

use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::pool::InferencePool;
use crate::model::{ModelSlot, ModelVersion, Registry};
use crate::routing::RouteHint;
use crate::tensor::Tensor;

/// A decoded inference request, independent of the wire format.
#[derive(Debug, Default)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Output names the client asked for; `None` means all.
    pub outputs: Option<Vec<String>>,
}

#[derive(Debug)]
pub struct InferResponse {
    /// The version that answered.
    pub version: Arc<ModelVersion>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Core {
    pub registry: Arc<Registry>,
    pub pool: InferencePool,
    pub metrics: Metrics,
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    pub strict_readiness: bool,
    /// Names of the pin and routing-key headers.
    pub routing: crate::config::RoutingConfig,
    /// Versions older than this are stale (`skew.max_model_age_days`).
    pub max_model_age: Option<std::time::Duration>,
}

impl Core {
    pub fn model(&self, name: &str) -> Result<Arc<ModelSlot>, GatewayError> {
        self.registry.get(name).ok_or_else(|| GatewayError::ModelNotFound(name.to_string()))
    }

    /// Runs one request on the version `slot` routes it to.
    pub async fn infer(
        &self,
        slot: &ModelSlot,
        hint: RouteHint<'_>,
        req: InferRequest,
    ) -> Result<InferResponse, (Option<Arc<ModelVersion>>, GatewayError)> {
        let v = slot.resolve(hint).map_err(|e| (None, e))?;
        match self.run(&v, req).await {
            Ok((id, outputs)) => Ok(InferResponse { version: v, id, outputs }),
            Err(e) => Err((Some(v), e)),
        }
    }

    async fn run(
        &self,
        v: &Arc<ModelVersion>,
        req: InferRequest,
    ) -> Result<(Option<String>, Vec<Tensor>), GatewayError> {
        let (inputs, rows) = v.validate_inputs(req.inputs, self.max_batch_rows)?;
        if let Some(skew) = &v.skew {
            skew.observe(&inputs, &v.input_names)?;
        }
        if let Some(names) = &req.outputs {
            v.validate_outputs(names)?;
        }
        let submitted = match &v.batcher {
            Some(b) => b.submit(inputs, rows),
            None => {
                v.metrics.batch_rows.observe(rows as f64);
                self.pool.handle().submit(v.backend.clone(), inputs)
            }
        };
        let rx = submitted.inspect_err(|e| {
            if matches!(e, GatewayError::Overloaded(_)) {
                self.metrics.queue_rejections.inc();
            }
        })?;
        let (result, took) =
            rx.await.map_err(|_| GatewayError::Internal("the inference worker dropped the call".into()))?;
        v.metrics.inference_duration.observe(took.as_secs_f64());
        let mut outputs = result?;
        if let Some(names) = req.outputs {
            // Outputs come back in the order the client listed them.
            outputs = names
                .iter()
                .filter_map(|n| outputs.iter().position(|o| &o.name == n).map(|i| outputs.swap_remove(i)))
                .collect();
        }
        Ok((req.id, outputs))
    }

    /// Every ready version of every model.
    pub fn ready_versions(&self) -> Vec<Arc<ModelVersion>> {
        let mut out = Vec::new();
        for slot in self.registry.models() {
            for s in slot.versions().values() {
                if let crate::model::VersionState::Ready(v) = s {
                    out.push(v.clone());
                }
            }
        }
        out
    }

    pub fn is_stale(&self, v: &ModelVersion) -> bool {
        self.max_model_age.is_some_and(|max| v.age() > max)
    }

    /// Server readiness for `/v2/health/ready`.
    pub fn ready(&self) -> bool {
        if !self.registry.initial_load_done() {
            return false;
        }
        let models = self.registry.models();
        if self.strict_readiness {
            !models.is_empty() && models.iter().all(|m| m.is_ready())
        } else {
            models.iter().any(|m| m.is_ready())
        }
    }
}

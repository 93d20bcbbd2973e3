//! The request path shared by every front end: resolve the model version, validate the request against its
//! signature, run it on the version's backend, select the outputs, and hand copies to the mirror. The HTTP and
//! gRPC front ends only decode, encode and count.

use std::sync::Arc;
use std::time::Instant;

use crate::error::{Fault, GatewayError};
use crate::metrics::Metrics;
use crate::mirror::capture::{CaptureLog, Record};
use crate::mirror::feedback::FeedbackBook;
use crate::mirror::{Mirror, ShadowJob};
use crate::model::call::Priority;
use crate::model::pool::InferencePool;
use crate::model::{ModelSlot, ModelVersion, Registry};
use crate::protocol::{InferRequest, MAX_ID_BYTES};
use crate::rollout::analysis::{Drift, Sample};
use crate::rollout::stats::Outcome;
use crate::routing::{RouteHint, WEIGHT_SCALE, Weight};
use crate::telemetry::REQUEST_TARGET;
use crate::tensor::Tensor;

#[derive(Debug)]
pub struct InferResponse {
    /// The version that answered.
    pub version: Arc<ModelVersion>,
    pub id: Option<String>,
    pub outputs: Vec<Tensor>,
}

/// Which side of the version's success rate an error falls on.
fn outcome_of(e: &GatewayError) -> Outcome {
    match e.fault() {
        Fault::Shed => Outcome::Shed,
        Fault::Server => Outcome::ServerError,
        Fault::Client => Outcome::ClientError,
    }
}

/// Records a request in its version's stats when it ends; a request dropped before it ends (a timeout, a client
/// gone) counts as a server-side failure, since a version too slow to answer is failing.
struct Tally<'a> {
    version: &'a ModelVersion,
    started: Instant,
    done: bool,
}

impl Tally<'_> {
    /// `rows` answered, or the error that ended the request.
    fn finish(&mut self, result: Result<usize, &GatewayError>) {
        self.done = true;
        let took = self.started.elapsed();
        match result {
            Ok(rows) => {
                self.version.stats.record(Outcome::Ok, took);
                self.version.serving.succeeded(rows, took);
            }
            Err(e) => {
                self.version.stats.record(outcome_of(e), took);
                self.version.serving.failed(took);
            }
        }
    }
}

impl Drop for Tally<'_> {
    fn drop(&mut self) {
        if !self.done {
            let took = self.started.elapsed();
            self.version.stats.record(Outcome::ServerError, took);
            self.version.serving.failed(took);
        }
    }
}

/// Shared state of a running gateway.
#[derive(Debug)]
pub struct Core {
    pub registry: Arc<Registry>,
    pub pool: InferencePool,
    pub metrics: Metrics,
    pub max_batch_rows: usize,
    pub max_body_bytes: usize,
    /// JSON requests at least this long are decoded off the async workers (`inference.decode_offload_bytes`);
    /// `None`: never.
    pub decode_offload_bytes: Option<usize>,
    /// Time a client has to send a request body (the sooner of `server.body_read_timeout_ms` and the request
    /// timeout).
    pub body_read_timeout: std::time::Duration,
    pub strict_readiness: bool,
    /// Names of the pin and routing-key headers.
    pub routing: crate::config::RouteHeaders,
    /// Versions older than this are stale (`skew.max_model_age_days`).
    pub max_model_age: Option<std::time::Duration>,
    pub mirror: Mirror,
    /// The capture log and the share of requests it takes.
    pub capture: Option<(CaptureLog, Weight)>,
    pub feedback: Option<FeedbackBook>,
    /// Set when shutdown begins: readiness fails from then on, so load balancers stop sending first, and the
    /// listeners (which share it) close each connection after its answer.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Why readiness is degraded without failing (cluster store out of reach: serving the last known routing).
    pub ready_note: std::sync::Mutex<Option<String>>,
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
        let v = {
            let _route = tracing::debug_span!(target: REQUEST_TARGET, "route").entered();
            slot.resolve(hint).map_err(|e| (None, e))?
        };
        tracing::Span::current().record("version", &*v.version);
        let mut tally = Tally { version: &v, started: Instant::now(), done: false };
        let result = self.run(slot, &v, req).await;
        tally.finish(result.as_ref().map(|r| r.2));
        drop(tally);
        match result {
            Ok((id, outputs, _)) => Ok(InferResponse { version: v, id, outputs }),
            Err(e) => Err((Some(v), e)),
        }
    }

    async fn run(
        &self,
        slot: &ModelSlot,
        v: &Arc<ModelVersion>,
        req: InferRequest,
    ) -> Result<(Option<String>, Vec<Tensor>, usize), GatewayError> {
        if let Some(id) = req.id.as_deref().filter(|id| id.len() > MAX_ID_BYTES) {
            return Err(GatewayError::invalid(format!(
                "'id' is {} bytes long; at most {MAX_ID_BYTES} are accepted",
                id.len()
            )));
        }
        let (inputs, rows) = v.validate_inputs(req.inputs, self.max_batch_rows)?;
        v.stats.add_rows(rows);
        if let Some(skew) = &v.skew {
            skew.observe(&inputs, &v.input_names)?;
        }
        if let Some(names) = &req.outputs {
            v.validate_outputs(names)?;
        }
        // Decide before the inputs move into the call whether this request is copied anywhere afterwards; only
        // sampled requests pay for the copy.
        let shadow = slot.routing_guard().sample_shadow(v).cloned();
        let capture =
            self.capture.as_ref().filter(|(_, share)| share.0 > 0 && fastrand::u32(0..WEIGHT_SCALE) < share.0);
        let copy = (shadow.is_some() || capture.is_some()).then(|| inputs.clone());
        let mut outputs = v.infer(inputs, rows, self.pool.handle_ref(), Priority::Live).await.inspect_err(|e| {
            if matches!(e, GatewayError::Overloaded(_)) && v.runs_locally() {
                self.metrics.queue_rejections.inc();
            }
        })?;
        if let Some(copy) = copy {
            self.after_answer(v, shadow, capture.map(|c| &c.0), req.id.as_deref(), copy, &outputs);
        }
        if let (Some(book), Some(id)) = (&self.feedback, &req.id) {
            book.remember(id, &v.model, v.number, &outputs);
        }
        if let Some(names) = req.outputs {
            // Outputs come back in the order the client listed them.
            outputs = names
                .iter()
                .filter_map(|n| outputs.iter().position(|o| &o.name == n).map(|i| outputs.swap_remove(i)))
                .collect();
        }
        Ok((req.id, outputs, rows))
    }

    /// Hands copies of an answered request to the shadow and the capture log; both only enqueue.
    fn after_answer(
        &self,
        v: &Arc<ModelVersion>,
        shadow: Option<Arc<ModelVersion>>,
        capture: Option<&CaptureLog>,
        id: Option<&str>,
        inputs: Vec<Tensor>,
        outputs: &[Tensor],
    ) {
        let inputs = match (shadow, capture) {
            (Some(s), Some(_)) => {
                self.mirror.offer(ShadowJob {
                    live: v.clone(),
                    shadow: s,
                    inputs: inputs.clone(),
                    outputs: outputs.to_vec(),
                });
                inputs
            }
            (Some(s), None) => {
                self.mirror.offer(ShadowJob { live: v.clone(), shadow: s, inputs, outputs: outputs.to_vec() });
                return;
            }
            (None, _) => inputs,
        };
        if let Some(log) = capture {
            log.offer(Record {
                at: std::time::SystemTime::now(),
                request_id: id.map(str::to_owned),
                model: v.model.clone(),
                version: v.version.clone(),
                inputs,
                outputs: outputs.to_vec(),
            });
        }
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

    /// Cumulative measurements of `canary` against `stable` in this process, for canary analysis: both must hold
    /// those roles in the routing now.
    pub fn sample(&self, model: &str, canary: u64, stable: u64) -> Result<(Sample, Drift), String> {
        let slot = self.registry.get(model).ok_or_else(|| format!("model '{model}' is gone"))?;
        let routing = slot.routing();
        let canary_v = routing
            .canary
            .as_ref()
            .map(|c| c.version.clone())
            .filter(|v| v.number == canary)
            .ok_or_else(|| format!("version {canary} is no longer the canary"))?;
        let stable_v = routing
            .stable
            .clone()
            .filter(|v| v.number == stable)
            .ok_or_else(|| format!("version {stable} is no longer the stable version"))?;
        let quality = |n: u64| {
            self.feedback.as_ref().and_then(|b| b.quality(model).into_iter().find(|(v, _)| *v == n)).map(|(_, q)| q)
        };
        let sample = Sample {
            canary: canary_v.stats.snapshot(),
            stable: stable_v.stats.snapshot(),
            canary_invalid: canary_v
                .skew
                .as_ref()
                .map_or(0, |s| s.invalid_totals().iter().flat_map(|(_, c)| c.iter()).sum()),
            pairs: self.mirror.divergence.pair(model, stable, canary),
            canary_quality: quality(canary).unwrap_or_default(),
            stable_quality: quality(stable).unwrap_or_default(),
        };
        let drift = match &canary_v.skew {
            Some(s) => {
                let snap = s.drift.snapshot();
                Drift { rows: Some(snap.rows), max_psi: snap.max_psi, features: s.drift.features.len() }
            }
            None => Drift {
                rows: None,
                max_psi: None,
                features: canary_v.manifest.inputs.iter().map(|i| i.spec.row_len()).sum(),
            },
        };
        Ok((sample, drift))
    }

    pub fn is_stale(&self, v: &ModelVersion) -> bool {
        self.max_model_age.is_some_and(|max| v.age() > max)
    }

    /// Sets or clears the note readiness answers carry.
    pub fn set_ready_note(&self, note: Option<String>) {
        *self.ready_note.lock().unwrap_or_else(|p| p.into_inner()) = note;
    }

    pub fn ready_note(&self) -> Option<String> {
        self.ready_note.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Server readiness for `/v2/health/ready`.
    pub fn ready(&self) -> bool {
        if !self.registry.initial_load_done() || self.draining.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        // A model with no version at all was unloaded on purpose (or has none on disk): it is not expected to serve.
        let models: Vec<_> = self.registry.models().into_iter().filter(|m| !m.versions().is_empty()).collect();
        if self.strict_readiness {
            !models.is_empty() && models.iter().all(|m| m.is_ready())
        } else {
            models.iter().any(|m| m.is_ready())
        }
    }
}

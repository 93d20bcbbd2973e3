//! A loaded, servable model version: manifest, backend, metric handles, and the checks that turn a decoded request
//! into backend inputs (signature validation) and that gate readiness (golden examples).

use std::path::Path;
use std::sync::Arc;

use crate::error::GatewayError;
use crate::manifest::{Manifest, TensorSpec};
use crate::metrics::VersionMetrics;
use crate::model::batcher::{BatchPolicy, Batcher};
use crate::model::onnx::OnnxModel;
use crate::model::pool::PoolHandle;
use crate::skew::{InvalidPolicy, SkewMonitor};
use crate::tensor::{Tensor, TensorData};

pub struct ModelVersion {
    pub model: Arc<str>,
    pub version: Arc<str>,
    pub number: u64,
    pub manifest: Manifest,
    pub backend: Backend,
    /// Present when dynamic batching is on for this model.
    pub batcher: Option<Batcher>,
    /// Present when skew checks are on.
    pub skew: Option<SkewMonitor>,
    /// Input names in signature order, for messages.
    pub input_names: Vec<String>,
    pub metrics: VersionMetrics,
    /// Outcomes and latency for canary analysis.
    pub stats: crate::rollout::stats::VersionStats,
    /// The protocol's statistics extension (Triton's shape), shared with the batching thread.
    pub serving: Arc<crate::model::statistics::ServingStats>,
    /// The version's files as loaded, and whether they still are.
    pub disk: crate::model::disk::DiskWatch,
}

/// Where a version's calls run.
#[derive(Debug, Clone)]
pub enum Backend {
    /// ONNX Runtime in this process, on the inference threads.
    Onnx(Arc<OnnxModel>),
    /// Another Open Inference Protocol server.
    Remote(Arc<crate::model::remote::RemoteModel>),
}

impl std::fmt::Debug for ModelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelVersion({}/{})", self.model, self.version)
    }
}

impl crate::routing::Version for ModelVersion {
    fn number(&self) -> u64 {
        self.number
    }

    fn is_candidate(&self) -> bool {
        self.manifest.stage == crate::manifest::Stage::Candidate
    }
}

impl ModelVersion {
    /// Checks request inputs against the signature and returns them in signature order with the batch size.
    /// Every message names the input and what was expected, because the client has to act on it.
    pub fn validate_inputs(
        &self,
        mut inputs: Vec<Tensor>,
        max_batch: usize,
    ) -> Result<(Vec<Tensor>, usize), GatewayError> {
        let specs = &self.manifest.inputs;
        for (i, t) in inputs.iter().enumerate() {
            if self.manifest.input(&t.name).is_none() {
                return Err(GatewayError::invalid(format!(
                    "unknown input '{}'; model '{}' expects {}",
                    t.name,
                    self.model,
                    describe(specs.iter().map(|s| &s.spec))
                )));
            }
            if inputs[..i].iter().any(|o| o.name == t.name) {
                return Err(GatewayError::invalid(format!("input '{}' is given more than once", t.name)));
            }
        }
        let mut ordered = Vec::with_capacity(specs.len());
        let mut batch = None;
        for spec in specs.iter().map(|s| &s.spec) {
            let pos = inputs.iter().position(|t| t.name == spec.name).ok_or_else(|| {
                GatewayError::invalid(format!(
                    "missing input '{}'; model '{}' expects {}",
                    spec.name,
                    self.model,
                    describe(specs.iter().map(|s| &s.spec))
                ))
            })?;
            let t = inputs.swap_remove(pos);
            check_tensor(spec, &t)?;
            let rows = t.shape[0] as usize;
            match batch {
                None => batch = Some(rows),
                Some(b) if b != rows => {
                    return Err(GatewayError::invalid(format!(
                        "input '{}' has {rows} rows but other inputs have {b}; all inputs share the batch dimension",
                        spec.name
                    )));
                }
                Some(_) => {}
            }
            ordered.push(t);
        }
        let batch = batch.unwrap_or(0);
        if batch > max_batch {
            return Err(GatewayError::invalid(format!(
                "batch of {batch} rows exceeds the limit of {max_batch} rows per request"
            )));
        }
        Ok((ordered, batch))
    }

    /// Whether the version can take calls now: a remote one not while its upstream is down or not ready.
    pub fn availability(&self) -> Result<(), GatewayError> {
        match &self.backend {
            Backend::Remote(r) if !r.is_up() => Err(GatewayError::NotReady {
                model: self.model.to_string(),
                version: self.version.to_string(),
                reason: format!("the upstream {} is down or not ready", r.spec.url),
            }),
            _ => Ok(()),
        }
    }

    /// Time since the version was trained.
    pub fn age(&self) -> std::time::Duration {
        self.manifest
            .trained_at_time
            .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
            .unwrap_or_default()
    }

    /// Fails unless every output name is one the model has.
    pub fn validate_outputs(&self, requested: &[String]) -> Result<(), GatewayError> {
        for name in requested {
            if self.manifest.output(name).is_none() {
                return Err(GatewayError::invalid(format!(
                    "unknown output '{name}' in 'outputs'; model '{}' has {}",
                    self.model,
                    describe(self.manifest.outputs.iter())
                )));
            }
        }
        Ok(())
    }
}

fn describe<'a>(specs: impl Iterator<Item = &'a TensorSpec>) -> String {
    specs.map(|s| format!("'{}' {} {:?}", s.name, s.datatype, s.shape)).collect::<Vec<_>>().join(", ")
}

fn check_tensor(spec: &TensorSpec, t: &Tensor) -> Result<(), GatewayError> {
    if t.datatype() != spec.datatype {
        return Err(GatewayError::invalid(format!(
            "input '{}': datatype {} does not match the model's {}",
            spec.name,
            t.datatype(),
            spec.datatype
        )));
    }
    let fits = t.shape.len() == spec.shape.len()
        && t.shape.iter().zip(&spec.shape).all(|(&got, &want)| want < 0 || got == want);
    if !fits {
        return Err(GatewayError::invalid(format!(
            "input '{}': shape {:?} does not match the model's {:?} (-1 is the batch dimension)",
            spec.name, t.shape, spec.shape
        )));
    }
    if t.shape[0] < 1 {
        return Err(GatewayError::invalid(format!("input '{}': the batch dimension must be at least 1", spec.name)));
    }
    Ok(())
}

/// Runs every golden example through the backend and compares with the expected outputs. A version that fails
/// never takes traffic: this is QA before serving.
pub fn check_golden(
    manifest: &Manifest,
    run: impl Fn(Vec<Tensor>) -> Result<Vec<Tensor>, GatewayError>,
) -> Result<(), String> {
    for (i, ex) in manifest.golden.iter().enumerate() {
        let mut inputs = Vec::new();
        for spec in manifest.inputs.iter().map(|i| &i.spec) {
            let g = ex
                .inputs
                .iter()
                .find(|g| g.name == spec.name)
                .ok_or_else(|| format!("golden example {i} lacks input '{}'", spec.name))?;
            inputs.push(g.to_tensor(spec.datatype)?);
        }
        let outputs = run(inputs).map_err(|e| format!("golden example {i}: {e}"))?;
        for want in &ex.outputs {
            let spec = manifest
                .output(&want.name)
                .ok_or_else(|| format!("golden example {i} names unknown output '{}'", want.name))?;
            let want_t = want.to_tensor(spec.datatype)?;
            let got = outputs
                .iter()
                .find(|o| o.name == want.name)
                .ok_or_else(|| format!("golden example {i}: output '{}' missing", want.name))?;
            if got.shape != want_t.shape {
                return Err(format!(
                    "golden example {i}: output '{}' has shape {:?}, expected {:?}",
                    want.name, got.shape, want_t.shape
                ));
            }
            compare(&got.data, &want_t.data, ex.tolerance)
                .map_err(|e| format!("golden example {i}: output '{}' {e}", want.name))?;
        }
    }
    Ok(())
}

fn compare(got: &TensorData, want: &TensorData, tol: f64) -> Result<(), String> {
    if let (TensorData::Bytes(g), TensorData::Bytes(w)) = (got, want) {
        return match g.iter().zip(w).position(|(a, b)| a != b) {
            Some(j) => Err(format!(
                "element {j} is '{}', expected '{}'",
                String::from_utf8_lossy(&g[j]),
                String::from_utf8_lossy(&w[j])
            )),
            None => Ok(()),
        };
    }
    let exact = !matches!(want, TensorData::F16(_) | TensorData::F32(_) | TensorData::F64(_));
    for j in 0..want.len() {
        let (g, w) = (got.get_f64(j), want.get_f64(j));
        let ok = if exact { g == w } else { (g - w).abs() <= tol * (1.0 + w.abs()) };
        if !ok {
            return Err(format!("element {j} is {g}, expected {w} (tolerance {tol})"));
        }
    }
    Ok(())
}

/// What loading a version needs besides its directory.
pub struct LoadContext<'a> {
    pub env: &'a ort::environment::Environment,
    pub session_options: &'a crate::model::onnx::SessionOptions,
    pub pool: &'a PoolHandle,
    pub batching: Option<BatchPolicy>,
    /// Window slots and invalid-value policy, when skew checks are on.
    pub skew: Option<(usize, InvalidPolicy)>,
    pub metrics: VersionMetrics,
    /// Counter for invalid values of (feature, kind).
    pub invalid_counter: &'a dyn Fn(&str, &str) -> prometheus::IntCounter,
    /// The gauge that reads 1 while a remote version's upstream is up (made only for remote versions).
    pub upstream_up: &'a dyn Fn() -> prometheus::IntGauge,
    pub upstream_tls: &'a crate::tls::ClientTlsMaterial,
}

/// Loads one version from its directory: manifest, ONNX session(s) checked against it, golden examples, and its
/// batcher when batching is on.
pub fn load_version(ctx: LoadContext<'_>, dir: &Path, model: &str, number: u64) -> Result<ModelVersion, String> {
    let version = number.to_string();
    let disk = crate::model::disk::DiskWatch::new(crate::model::disk::fingerprint(dir));
    let manifest = Manifest::load(dir, model, &version)?;
    let serving = Arc::new(crate::model::statistics::ServingStats::default());
    let (backend, batcher) = match &manifest.remote {
        Some(spec) => {
            let remote = Arc::new(crate::model::remote::RemoteModel::new(
                spec.clone(),
                model,
                (ctx.upstream_up)(),
                ctx.upstream_tls,
            )?);
            // Golden examples go to the upstream too: a remote version is checked before it takes traffic.
            let rt = tokio::runtime::Handle::current();
            check_golden(&manifest, |inputs| rt.block_on(remote.check(inputs, &manifest)))
                .map_err(|e| format!("golden examples failed against {}: {e}", spec.url))?;
            remote.spawn_probe();
            // Batching gathers calls for the local inference threads; a remote server batches on its own.
            (Backend::Remote(remote), None)
        }
        None => {
            let onnx = dir.join(crate::model::repository::MODEL_FILE);
            let backend = Arc::new(OnnxModel::load(ctx.env, &onnx, &manifest, ctx.session_options)?);
            check_golden(&manifest, |inputs| backend.run(0, inputs))
                .map_err(|e| format!("golden examples failed: {e}"))?;
            let batcher = match ctx.batching {
                Some(policy) => {
                    let name = format!("{model}-{version}");
                    let rows = ctx.metrics.batch_rows.clone();
                    let b = Batcher::spawn(&name, backend.clone(), ctx.pool.clone(), policy, rows, serving.clone())
                        .map_err(|e| format!("cannot start the batching thread: {e}"))?;
                    Some(b)
                }
                None => None,
            };
            (Backend::Onnx(backend), batcher)
        }
    };
    let skew = ctx.skew.map(|(slots, policy)| SkewMonitor::new(&manifest, slots, policy, ctx.invalid_counter));
    let input_names = manifest.inputs.iter().map(|i| i.spec.name.clone()).collect();
    Ok(ModelVersion {
        model: model.into(),
        version: version.into(),
        number,
        manifest,
        backend,
        batcher,
        skew,
        input_names,
        metrics: ctx.metrics,
        stats: Default::default(),
        serving,
        disk,
    })
}

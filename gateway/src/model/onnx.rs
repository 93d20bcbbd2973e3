//! In-process ONNX Runtime backend. ONNX Runtime is loaded dynamically from the library the project's setup step
//! installs (from the `onnxruntime` wheel on PyPI), once per process. Each model version holds one session per
//! inference worker, because `Session::run` needs exclusive access: a worker locks only its own session, so the
//! locks are never contended and the sessions never block each other.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, TryLockError};
use std::time::Instant;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::{DynValue, TensorElementType, ValueType};

use crate::error::GatewayError;
use crate::manifest::{Manifest, TensorSpec};
use crate::model::statistics::Phases;
use crate::tensor::{DataType, Tensor, TensorData};

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Where to look for the ONNX Runtime shared library, in order: the configured path, `ORT_DYLIB_PATH`, then the
/// project-local place `make setup` installs it to.
pub fn locate_library(configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    PathBuf::from(DEFAULT_LIBRARY)
}

pub const DEFAULT_LIBRARY: &str = ".ort/lib/libonnxruntime.so";

/// Loads ONNX Runtime once for the process. A missing or incompatible library is an error with a hint, not a panic.
pub fn init_runtime(library: &Path) -> Result<&'static Environment, String> {
    RUNTIME
        .get_or_init(|| {
            if !library.exists() {
                return Err(format!(
                    "ONNX Runtime library not found at '{}': run `make setup`, set ORT_DYLIB_PATH, or set \
                     onnxruntime.library in the config",
                    library.display()
                ));
            }
            let builder = ort::init_from(library)
                .map_err(|e| format!("cannot load ONNX Runtime from '{}': {e}", library.display()))?;
            builder
                .with_name("gateway")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot create the ONNX Runtime environment: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Session options that matter for serving.
#[derive(Debug, Clone)]
pub struct SessionOptions {
    /// Sessions per version, one for each inference worker.
    pub sessions: usize,
    /// Threads ONNX Runtime may use inside one call. 1 keeps a call on its worker thread, which is what a
    /// small-model, many-requests server wants: parallelism comes from the workers.
    pub intra_op_threads: usize,
    /// Calls of at most [`INLINE_MAX_ROWS`] rows measured at most this long may run on the caller's thread (see
    /// [`OnnxModel::try_inline`]); zero turns that off.
    pub inline_max: std::time::Duration,
}

/// A call's outputs and how long its phases took.
pub type Timed = (Result<Vec<Tensor>, GatewayError>, Phases);

/// Most rows a call may have to run on the caller's thread: the cost estimate is of small calls, and a large
/// request to a cheap model can still take long.
pub const INLINE_MAX_ROWS: usize = 8;

/// One loaded model version: its sessions and the signature they were checked against.
pub struct OnnxModel {
    sessions: Vec<Mutex<Session>>,
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
    /// Threshold for running small calls on the caller's thread, in ns (0: never).
    inline_max_ns: u64,
    /// Moving average of the compute time of small calls, in ns (`u64::MAX` until one is measured).
    small_call_ns: AtomicU64,
}

impl std::fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnnxModel").field("sessions", &self.sessions.len()).finish()
    }
}

fn datatype_of(t: TensorElementType) -> Option<DataType> {
    Some(match t {
        TensorElementType::Bool => DataType::Bool,
        TensorElementType::Uint8 => DataType::U8,
        TensorElementType::Uint16 => DataType::U16,
        TensorElementType::Uint32 => DataType::U32,
        TensorElementType::Uint64 => DataType::U64,
        TensorElementType::Int8 => DataType::I8,
        TensorElementType::Int16 => DataType::I16,
        TensorElementType::Int32 => DataType::I32,
        TensorElementType::Int64 => DataType::I64,
        TensorElementType::Float16 => DataType::F16,
        TensorElementType::Float32 => DataType::F32,
        TensorElementType::Float64 => DataType::F64,
        TensorElementType::String => DataType::Bytes,
        _ => return None,
    })
}

/// Checks that a manifest tensor agrees with the ONNX graph's: same datatype, same rank, and every dimension the
/// graph fixes fixed to the same size in the manifest (the manifest may be stricter than the graph, never looser).
fn check_outlet(kind: &str, spec: &TensorSpec, dtype: &ValueType) -> Result<(), String> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        return Err(format!("{kind} '{}' is not a tensor in the ONNX graph (is ZipMap still on?)", spec.name));
    };
    match datatype_of(*ty) {
        Some(dt) if dt == spec.datatype => {}
        other => {
            return Err(format!(
                "{kind} '{}': manifest says {}, the ONNX graph has {}",
                spec.name,
                spec.datatype,
                other.map_or_else(|| format!("{ty:?}"), |d| d.to_string())
            ));
        }
    }
    let graph: &[i64] = shape;
    let compatible = graph.len() == spec.shape.len() && graph.iter().zip(&spec.shape).all(|(&g, &m)| g < 0 || g == m);
    if !compatible {
        return Err(format!(
            "{kind} '{}': manifest shape {:?} does not fit the ONNX graph's {:?}",
            spec.name, spec.shape, graph
        ));
    }
    Ok(())
}

impl OnnxModel {
    /// Loads `model.onnx` and checks it against the manifest. Failing here keeps the version out of service.
    pub fn load(env: &Environment, path: &Path, manifest: &Manifest, opts: &SessionOptions) -> Result<Self, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let mut sessions = Vec::with_capacity(opts.sessions.max(1));
        for _ in 0..opts.sessions.max(1) {
            let session = Session::builder(env)
                .map_err(|e| e.to_string())?
                .with_optimization_level(GraphOptimizationLevel::All)
                .map_err(|e| e.to_string())?
                .with_intra_threads(opts.intra_op_threads.max(1))
                .map_err(|e| e.to_string())?
                .with_inter_threads(1)
                .map_err(|e| e.to_string())?
                // Spinning threads would burn the cores the HTTP workers need.
                .with_intra_op_spinning(false)
                .map_err(|e| e.to_string())?
                .commit_from_memory(&bytes)
                .map_err(|e| format!("ONNX Runtime rejected {}: {e}", path.display()))?;
            sessions.push(session);
        }
        let first = &sessions[0];
        let inputs: Vec<TensorSpec> = manifest.inputs.iter().map(|i| i.spec.clone()).collect();
        let mut problems = Vec::new();
        check_names("input", inputs.iter().map(|s| s.name.as_str()), first.inputs().iter().map(|o| o.name()))
            .map_err(|e| problems.push(e))
            .ok();
        check_names(
            "output",
            manifest.outputs.iter().map(|s| s.name.as_str()),
            first.outputs().iter().map(|o| o.name()),
        )
        .map_err(|e| problems.push(e))
        .ok();
        for spec in &inputs {
            if let Some(o) = first.inputs().iter().find(|o| o.name() == spec.name) {
                check_outlet("input", spec, o.dtype()).map_err(|e| problems.push(e)).ok();
            }
        }
        for spec in &manifest.outputs {
            if let Some(o) = first.outputs().iter().find(|o| o.name() == spec.name) {
                check_outlet("output", spec, o.dtype()).map_err(|e| problems.push(e)).ok();
            }
        }
        if !problems.is_empty() {
            return Err(format!("manifest does not match {}: {}", path.display(), problems.join("; ")));
        }
        Ok(Self {
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            inputs,
            outputs: manifest.outputs.clone(),
            inline_max_ns: u64::try_from(opts.inline_max.as_nanos()).unwrap_or(u64::MAX),
            small_call_ns: AtomicU64::new(u64::MAX),
        })
    }

    /// Runs one call. `inputs` are in signature order and already validated. Called only on inference threads.
    pub fn run(&self, worker: usize, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, GatewayError> {
        self.run_timed(worker, inputs).0
    }

    /// Runs a small call on the caller's thread when that is known to be cheap: at most [`INLINE_MAX_ROWS`] rows,
    /// such calls measured at most the configured threshold, and a session free right now (never waited for, so
    /// the caller never blocks behind an inference thread). Otherwise gives the inputs back for the pool.
    pub fn try_inline(&self, inputs: Vec<Tensor>, rows: usize) -> Result<Timed, Vec<Tensor>> {
        if rows > INLINE_MAX_ROWS || self.small_call_ns.load(Ordering::Relaxed) > self.inline_max_ns {
            return Err(inputs);
        }
        for slot in &self.sessions {
            let session = match slot.try_lock() {
                Ok(s) => s,
                Err(TryLockError::Poisoned(p)) => p.into_inner(),
                Err(TryLockError::WouldBlock) => continue,
            };
            let out = self.run_with(session, inputs);
            self.observe(rows, out.1);
            return Ok(out);
        }
        Err(inputs)
    }

    /// Feeds a small call's compute time into the estimate that decides whether such calls may run inline.
    pub fn observe(&self, rows: usize, phases: Phases) {
        if rows > INLINE_MAX_ROWS || self.inline_max_ns == 0 {
            return;
        }
        // One call counts for at most three times the threshold. The time is wall time, so a call preempted for a
        // scheduler tick (4 ms on a 250 Hz kernel) would otherwise send a 5 µs model to the pool on its own, and
        // with the load generator on the same two cores that sent enough calls to the pool to double a 1-row gRPC
        // request's time in Triton's `success` statistic (10 to 12 µs, with this bound 5.5).
        let x = u64::try_from(phases.total().as_nanos()).unwrap_or(u64::MAX).min(self.inline_max_ns.saturating_mul(3));
        let old = self.small_call_ns.load(Ordering::Relaxed);
        // An average over about the last eight calls: for a model well under the threshold, one or two slow calls in
        // a row (a page fault, a preemption) do not flip the choice, and a model that really got slower moves within
        // three calls. Races only lose an update.
        let new = if old == u64::MAX { x } else { old - old / 8 + x / 8 };
        self.small_call_ns.store(new, Ordering::Relaxed);
    }

    /// [`OnnxModel::run`], also timing its phases (inputs to ONNX values, the run, outputs back to tensors).
    pub fn run_timed(&self, worker: usize, inputs: Vec<Tensor>) -> Timed {
        let slot = &self.sessions[worker % self.sessions.len()];
        // A poisoned lock only means another call panicked mid-run; the session itself holds no Rust invariants.
        let session = slot.lock().unwrap_or_else(|p| p.into_inner());
        self.run_with(session, inputs)
    }

    fn run_with(&self, mut session: std::sync::MutexGuard<'_, Session>, inputs: Vec<Tensor>) -> Timed {
        let mut phases = Phases::default();
        let t0 = Instant::now();
        let mut values: Vec<(String, DynValue)> = Vec::with_capacity(inputs.len());
        for t in inputs {
            match to_value(&t.name, t.shape, t.data) {
                Ok(value) => values.push((t.name, value)),
                Err(e) => return (Err(e), phases),
            }
        }
        let t1 = Instant::now();
        phases.input = t1 - t0;
        let outputs = match session.run(values) {
            Ok(o) => o,
            Err(e) => return (Err(GatewayError::Inference(e.to_string())), phases),
        };
        let t2 = Instant::now();
        phases.infer = t2 - t1;
        let result = self
            .outputs
            .iter()
            .map(|spec| {
                let v = outputs
                    .get(&spec.name)
                    .ok_or_else(|| GatewayError::Inference(format!("output '{}' missing from the run", spec.name)))?;
                from_value(&spec.name, spec.datatype, v)
            })
            .collect();
        phases.output = t2.elapsed();
        (result, phases)
    }

    pub fn inputs(&self) -> &[TensorSpec] {
        &self.inputs
    }
}

fn check_names<'a>(
    kind: &str,
    manifest: impl Iterator<Item = &'a str>,
    graph: impl Iterator<Item = &'a str>,
) -> Result<(), String> {
    let mut m: Vec<&str> = manifest.collect();
    let mut g: Vec<&str> = graph.collect();
    m.sort_unstable();
    g.sort_unstable();
    if m == g { Ok(()) } else { Err(format!("{kind} names {m:?} in the manifest, {g:?} in the ONNX graph")) }
}

fn to_value(name: &str, shape: Vec<i64>, data: TensorData) -> Result<DynValue, GatewayError> {
    macro_rules! arm {
        ($($v:ident),*) => {
            match data {
                $(TensorData::$v(d) => ort::value::Tensor::from_array((shape, d)).map(|t| t.into_dyn()),)*
                TensorData::Bytes(d) => return strings(name, shape, d),
            }
        };
    }
    arm!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64).map_err(|e| GatewayError::Inference(e.to_string()))
}

/// A string tensor. ONNX Runtime copies each element into a C string, so the elements must be UTF-8 text without
/// NUL bytes: anything else is the client's mistake, named.
fn strings(name: &str, shape: Vec<i64>, data: Vec<Vec<u8>>) -> Result<DynValue, GatewayError> {
    let mut text = Vec::with_capacity(data.len());
    for (i, b) in data.into_iter().enumerate() {
        match String::from_utf8(b) {
            Ok(s) if !s.contains('\0') => text.push(s),
            _ => {
                return Err(GatewayError::invalid(format!(
                    "input '{name}', element {i}: this model's string input takes UTF-8 text without NUL bytes"
                )));
            }
        }
    }
    ort::value::Tensor::from_string_array((shape, text.as_slice()))
        .map(|t| t.into_dyn())
        .map_err(|e| GatewayError::Inference(e.to_string()))
}

fn from_value(name: &str, datatype: DataType, v: &DynValue) -> Result<Tensor, GatewayError> {
    let failed = |e: ort::Error| GatewayError::Inference(e.to_string());
    macro_rules! arm {
        ($($v:ident => $t:ty),*) => {
            match datatype {
                $(DataType::$v => {
                    let (shape, data) = v.try_extract_tensor::<$t>().map_err(failed)?;
                    (shape.to_vec(), TensorData::$v(data.to_vec()))
                })*
                DataType::Bytes => {
                    let (shape, data) = v.try_extract_strings().map_err(failed)?;
                    (shape.to_vec(), TensorData::Bytes(data.into_iter().map(String::into_bytes).collect()))
                }
            }
        };
    }
    let (shape, data) = arm!(Bool => bool, U8 => u8, U16 => u16, U32 => u32, U64 => u64, I8 => i8, I16 => i16,
        I32 => i32, I64 => i64, F16 => half::f16, F32 => f32, F64 => f64);
    Ok(Tensor { name: name.to_string(), shape, data })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn bundled_v1(inline_max: Duration) -> OnnxModel {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let lib =
            std::env::var_os("ORT_DYLIB_PATH").map_or_else(|| root.join(".ort/lib/libonnxruntime.so"), PathBuf::from);
        let env = init_runtime(&lib).expect("ONNX Runtime (run `make setup`)");
        let dir = root.join("models/breast-cancer/1");
        let manifest = Manifest::load(&dir, "breast-cancer", "1").expect("manifest");
        let opts = SessionOptions { sessions: 2, intra_op_threads: 1, inline_max };
        OnnxModel::load(env, &dir.join("model.onnx"), &manifest, &opts).expect("loads")
    }

    fn rows(n: usize) -> Vec<Tensor> {
        vec![Tensor { name: "input".into(), shape: vec![n as i64, 30], data: TensorData::F32(vec![1.0; n * 30]) }]
    }

    /// Only small calls of a model measured cheap run on the caller's thread, and only when a session is free right
    /// then: the caller never waits for one, and a slow model or a large call always goes to the pool.
    #[test]
    fn only_small_cheap_calls_run_inline_and_never_wait() {
        let m = bundled_v1(Duration::from_secs(1));
        assert!(m.try_inline(rows(1), 1).is_err(), "unmeasured: the pool first");
        let (_, phases) = m.run_timed(0, rows(1));
        m.observe(1, phases);
        let (out, _) = m.try_inline(rows(1), 1).expect("measured cheap: inline");
        assert_eq!(out.expect("runs")[0].shape, vec![1]);
        assert!(m.try_inline(rows(64), 64).is_err(), "too many rows for the small-call estimate");
        // Small calls get slow (a contended machine, a heavier graph): within a few observed calls the model is back
        // on the pool, and cheap calls again bring it back inline.
        let slow_call = Phases { infer: Duration::from_secs(2), ..Phases::default() };
        for _ in 0..16 {
            m.observe(1, slow_call);
        }
        assert!(m.try_inline(rows(1), 1).is_err(), "a model whose small calls got slow runs on the pool");
        for _ in 0..64 {
            m.observe(1, phases);
        }
        assert!(m.try_inline(rows(1), 1).is_ok(), "cheap again: inline again");
        {
            let _held: Vec<_> = m.sessions.iter().map(|s| s.lock().expect("lock")).collect();
            assert!(m.try_inline(rows(1), 1).is_err(), "every session busy: back to the pool, no waiting");
        }
        // A model measured slower than the threshold (here: any real one against 1 ns) never runs inline.
        let slow = bundled_v1(Duration::from_nanos(1));
        let (_, phases) = slow.run_timed(0, rows(1));
        slow.observe(1, phases);
        assert!(slow.try_inline(rows(1), 1).is_err());
        // Off: never.
        let off = bundled_v1(Duration::ZERO);
        off.observe(1, phases);
        assert!(off.try_inline(rows(1), 1).is_err());
    }

    /// The estimate is of wall time, so a cheap model's call can take a whole scheduler tick when its thread is
    /// preempted; one or two such calls in a row leave the model inline, three in a row move it to the pool.
    #[test]
    fn a_preempted_call_does_not_send_a_cheap_model_to_the_pool() {
        let m = bundled_v1(Duration::from_micros(50));
        let inline = |m: &OnnxModel| m.small_call_ns.load(Ordering::Relaxed) <= m.inline_max_ns;
        let cheap = Phases { infer: Duration::from_micros(5), ..Phases::default() };
        let preempted = Phases { infer: Duration::from_millis(4), ..Phases::default() };
        for _ in 0..8 {
            m.observe(1, cheap);
        }
        m.observe(1, preempted);
        assert!(inline(&m), "one call preempted for a tick: still inline");
        m.observe(1, preempted);
        assert!(inline(&m), "two in a row: still inline");
        m.observe(1, preempted);
        assert!(!inline(&m), "slow three times running: the pool");
        assert!(m.try_inline(rows(1), 1).is_err());
        for _ in 0..16 {
            m.observe(1, cheap);
        }
        assert!(m.try_inline(rows(1), 1).is_ok(), "cheap again: inline again");
    }
}

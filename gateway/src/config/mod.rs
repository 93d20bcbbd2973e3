//! The gateway's configuration: one typed struct read from TOML (`config/gateway.toml`), with CLI overrides for
//! the common fields, validated as a whole before any port is bound so that every bad field is reported at once.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::telemetry::{LoggingConfig, TracingConfig};
pub use crate::tls::{ClientTls, ListenerTls};

mod cluster;
pub use cluster::ClusterConfig;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub models: ModelsConfig,
    pub inference: InferenceConfig,
    pub batching: BatchingConfig,
    pub routing: RoutingConfig,
    pub skew: SkewConfig,
    pub mirror: MirrorConfig,
    pub capture: CaptureConfig,
    pub feedback: FeedbackConfig,
    /// Automatic canary analysis: the default rollout policy and per-model overrides.
    pub rollout: crate::rollout::policy::RolloutConfig,
    pub admin: AdminConfig,
    /// Inference clients: optional API keys, and the declared consumers counted per model version.
    pub clients: ClientsConfig,
    pub state: StateConfig,
    pub onnxruntime: OnnxRuntimeConfig,
    pub logging: LoggingConfig,
    pub tracing: TracingConfig,
    /// Cluster mode: replicas share one routing table and one rollout analyser through etcd.
    pub cluster: ClusterConfig,
    /// Links to remote upstreams (`https://` and `grpcs://` URLs in a version's `remote` section).
    pub upstreams: UpstreamsConfig,
}

/// The client side of every TLS link to a remote upstream.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamsConfig {
    /// The CA bundle to trust (default: the system's) and the client certificate for mTLS upstreams.
    pub tls: ClientTls,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Open Inference Protocol over HTTP (Triton's port).
    pub http_addr: String,
    /// Open Inference Protocol over gRPC.
    pub grpc_addr: String,
    /// Prometheus `/metrics`.
    pub metrics_addr: String,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Inference requests in progress at once; beyond it requests are shed with 503 instead of queueing in memory.
    pub max_concurrent_requests: usize,
    /// Time a request may take end to end before it is answered 504.
    pub request_timeout_ms: u64,
    /// On SIGTERM/Ctrl-C, first a drain period: readiness fails (so load balancers stop sending), requests are
    /// still served, and every answer carries `Connection: close` (HTTP/1) so clients reconnect elsewhere.
    pub drain_ms: u64,
    /// After the drain period, how long in-flight requests get to finish before the process exits anyway.
    pub shutdown_grace_ms: u64,
    /// Open connections on the HTTP inference listener; the admin and metrics listeners take at most 256 each.
    /// Past it, new connections are refused early (counted in `gateway_connections_refused_total`). Lowered to fit
    /// the process's open-files limit.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, counted from when the connection waits for them: it also
    /// closes keep-alive connections idle that long, and half-sent headers (slowloris).
    pub header_read_timeout_ms: u64,
    /// Time a client has to send a request's body once its headers arrived; past it the answer is 408 (the
    /// client's fault, unlike a 504). At most `request_timeout_ms` takes effect.
    pub body_read_timeout_ms: u64,
    /// Ready only when every model in the repository has a ready version (Triton's strict readiness). When false,
    /// ready as soon as the initial load is done and one model is ready.
    pub strict_readiness: bool,
    /// TLS (and mTLS with `client_ca`) on the HTTP inference port; unset, plain text.
    pub tls: Option<ListenerTls>,
    /// TLS on the gRPC port (ALPN h2).
    pub grpc_tls: Option<ListenerTls>,
    /// TLS on the metrics port.
    pub metrics_tls: Option<ListenerTls>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            http_addr: "0.0.0.0:8000".into(),
            grpc_addr: "0.0.0.0:8001".into(),
            metrics_addr: "0.0.0.0:8002".into(),
            max_body_bytes: 4 * 1024 * 1024,
            max_concurrent_requests: 2048,
            request_timeout_ms: 10_000,
            drain_ms: 1_000,
            shutdown_grace_ms: 10_000,
            max_connections: 8_192,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 5_000,
            strict_readiness: true,
            tls: None,
            grpc_tls: None,
            metrics_tls: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelsConfig {
    /// Model repository: `<repository>/<model>/<version>/{model.onnx, manifest.json}`.
    pub repository: PathBuf,
    /// Most rows one request may carry.
    pub max_batch_rows: usize,
    /// How often to look for new version directories, in milliseconds; 0 turns watching off.
    pub watch_interval_ms: u64,
    /// Make a newly appeared version stable at once. Off: it loads and waits for an operator (or a rollout) to
    /// give it traffic as a canary.
    pub serve_new_versions: bool,
}

impl Default for ModelsConfig {
    fn default() -> Self {
        Self {
            repository: PathBuf::from("models"),
            max_batch_rows: 4096,
            watch_interval_ms: 2000,
            serve_new_versions: false,
        }
    }
}

/// Train/serve skew checks on live inputs.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkewConfig {
    /// Track feature drift and invariants at all.
    pub enabled: bool,
    /// Length of the sliding window that drift (PSI) is computed over, in seconds.
    pub window_secs: u64,
    /// Slots the window is divided into; it advances one slot at a time.
    pub slots: usize,
    /// NaN, infinities and values outside a feature's declared bounds: `reject` (400 naming the feature) or
    /// `count` (serve, and count in `gateway_invalid_values_total`).
    pub invalid_policy: crate::skew::InvalidPolicy,
    /// A version older than this (now minus its manifest's `trained_at`) is marked stale; 0 turns it off.
    pub max_model_age_days: f64,
    /// Per-model overrides of `invalid_policy`.
    pub models: std::collections::BTreeMap<String, SkewOverride>,
}

impl Default for SkewConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            window_secs: 300,
            slots: 10,
            invalid_policy: crate::skew::InvalidPolicy::Count,
            max_model_age_days: 0.0,
            models: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SkewOverride {
    pub invalid_policy: Option<crate::skew::InvalidPolicy>,
}

impl SkewConfig {
    pub fn policy(&self, model: &str) -> crate::skew::InvalidPolicy {
        self.models.get(model).and_then(|o| o.invalid_policy).unwrap_or(self.invalid_policy)
    }

    /// How often the drift window advances.
    pub fn slot_len(&self) -> Duration {
        Duration::from_secs_f64(self.window_secs as f64 / self.slots.max(1) as f64)
    }
}

/// Shadow traffic: copies of live requests run on a shadow version (set per model through the admin API).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// Copies that may wait for a shadow worker; beyond, copies are dropped and counted.
    pub queue_capacity: usize,
    /// Shadow calls in progress at once. They run only while an inference thread is idle.
    pub workers: usize,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self { queue_capacity: 1024, workers: 2 }
    }
}

/// The capture log: a sampled share of requests and answers as JSON Lines, for offline skew checks.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaptureConfig {
    /// Directory for `capture-*.jsonl`; unset turns capturing off.
    pub dir: Option<PathBuf>,
    /// Share of requests captured, percent.
    pub percent: f64,
    /// A file is closed and a new one started past this size.
    pub max_file_mb: u64,
    /// The oldest files are deleted past this total.
    pub max_total_mb: u64,
    /// Records that may wait for the writer; beyond, records are dropped and counted.
    pub queue_capacity: usize,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        Self { dir: None, percent: 1.0, max_file_mb: 64, max_total_mb: 1024, queue_capacity: 4096 }
    }
}

/// Delayed labels: answers to requests with an `id` are remembered so feedback can be joined to them.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FeedbackConfig {
    /// Answers remembered (oldest forgotten first); 0 turns feedback off.
    pub capacity: usize,
    /// Memory the remembered answers may take, in MiB (oldest forgotten first past it).
    pub max_mb: usize,
}

impl Default for FeedbackConfig {
    fn default() -> Self {
        Self { capacity: 100_000, max_mb: 64 }
    }
}

/// Request headers that steer version choice.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// Header naming the version that must answer (after a version in the URL).
    pub pin_header: String,
    /// Header whose value is hashed for sticky canary assignment (e.g. a user id).
    pub key_header: String,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self { pin_header: "x-model-version".into(), key_header: "x-routing-key".into() }
    }
}

/// The routing headers' names, parsed once: a name given as `&str` is parsed again on every lookup.
#[derive(Debug, Clone)]
pub struct RouteHeaders {
    pub pin: http::HeaderName,
    pub key: http::HeaderName,
}

impl RoutingConfig {
    /// The parsed names (validation has already refused a name that does not parse).
    pub fn headers(&self) -> Result<RouteHeaders, String> {
        let parse = |field: &str, h: &str| {
            http::HeaderName::from_bytes(h.as_bytes())
                .map_err(|_| format!("{field} = '{h}' is not a valid header name"))
        };
        Ok(RouteHeaders {
            pin: parse("routing.pin_header", &self.pin_header)?,
            key: parse("routing.key_header", &self.key_header)?,
        })
    }
}

/// The admin API: its own listener, loopback by default, every call authenticated with a bearer token.
#[derive(Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub addr: String,
    /// Environment variable holding the token (read when no token file is set).
    pub token_env: String,
    /// File holding the token (surrounding whitespace ignored); takes precedence over the environment. It is an
    /// operator token named `admin`.
    pub token_file: Option<PathBuf>,
    /// File of named tokens with roles (`viewer` reads, `operator` also changes), TOML:
    /// `[[tokens]]` tables with `name`, `role` and `token`. Used together with the single token above.
    pub tokens_file: Option<PathBuf>,
    /// TLS (and mTLS) on the admin port. Required when `addr` is not a loopback address, unless
    /// `allow_plaintext_remote` says the network is protected some other way (a mesh's mTLS, a private link).
    pub tls: Option<ListenerTls>,
    pub allow_plaintext_remote: bool,
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token never reaches Debug output: only where it comes from.
        f.debug_struct("AdminConfig")
            .field("addr", &self.addr)
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field("tokens_file", &self.tokens_file)
            .field("tls", &self.tls)
            .field("allow_plaintext_remote", &self.allow_plaintext_remote)
            .finish()
    }
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            addr: "127.0.0.1:8003".into(),
            token_env: "GATEWAY_ADMIN_TOKEN".into(),
            token_file: None,
            tokens_file: None,
            tls: None,
            allow_plaintext_remote: false,
        }
    }
}

/// Who calls the models. API keys are off unless `keys_file` is set; consumers are counted only under the names
/// declared here (a key's name, or the `consumer_header` value), everything else as `other`, so the metric's label
/// set stays bounded.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClientsConfig {
    /// TOML file of `[[keys]]` tables with `name` and `key`: every inference call must then carry one.
    pub keys_file: Option<PathBuf>,
    /// Where a key travels: `authorization` (as `Bearer <key>`) or another header / gRPC metadata key (the bare key).
    pub key_header: String,
    /// Header (gRPC metadata key) naming the caller when no API key names it.
    pub consumer_header: String,
    /// Consumer names counted by name; keys' names are declared by being in the keys file.
    pub consumers: Vec<String>,
}

impl Default for ClientsConfig {
    fn default() -> Self {
        Self {
            keys_file: None,
            key_header: "authorization".into(),
            consumer_header: "x-consumer".into(),
            consumers: Vec::new(),
        }
    }
}

/// Where routing and the event journal are kept across restarts.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    pub dir: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self { dir: PathBuf::from("state") }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct InferenceConfig {
    /// Dedicated inference threads; 0 means one per CPU.
    pub threads: usize,
    /// Calls that may wait for a thread; when full, requests get 503 at once.
    pub queue_capacity: usize,
    /// Threads ONNX Runtime may use inside one call (1 suits many small requests).
    pub intra_op_threads: usize,
    /// A call of a few rows to a model whose such calls have been measured at most this long (microseconds) runs on
    /// the request's own thread when a session is free, skipping two thread hand-offs that cost more than the model
    /// itself; anything slower or larger always goes to the inference threads. 0 turns it off.
    pub inline_max_us: u64,
    /// A JSON request at least this many bytes long (the JSON part, with binary tensors) is decoded on a blocking
    /// thread, at most one per CPU at a time, instead of on the async worker, which meanwhile goes on serving its
    /// other connections and refusing what admission sheds. JSON numbers parse at about 1 ns per byte, so the
    /// default (64 KiB) is about 50 µs of work, the same bound as `inline_max_us`. 0: every body on the worker.
    pub decode_offload_bytes: usize,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self { threads: 0, queue_capacity: 1024, intra_op_threads: 1, inline_max_us: 50, decode_offload_bytes: 65_536 }
    }
}

/// Dynamic batching: concurrent requests to one version gathered into one ONNX call. Off by default: for small
/// models it trades a little latency for throughput, which only pays under heavy load.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Batch every model unless overridden below.
    pub enabled: bool,
    /// Most rows in one batched call.
    pub max_batch_rows: usize,
    /// Longest a request is held back waiting for others, in microseconds (only while all workers are busy).
    pub max_queue_delay_us: u64,
    /// Requests that may wait in one version's batching queue; when full, 503.
    pub queue_capacity: usize,
    /// Per-model overrides, keyed by model name.
    pub models: std::collections::BTreeMap<String, BatchingOverride>,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            max_batch_rows: 64,
            max_queue_delay_us: 200,
            queue_capacity: 1024,
            models: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingOverride {
    pub enabled: Option<bool>,
    pub max_batch_rows: Option<usize>,
    pub max_queue_delay_us: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OnnxRuntimeConfig {
    /// Path of `libonnxruntime.so`. When unset: `ORT_DYLIB_PATH`, then `.ort/lib/libonnxruntime.so`.
    pub library: Option<PathBuf>,
}

/// A config that passed [`Config::check`], with the parts that needed parsing typed: what the gateway starts from.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    pub resolved: Resolved,
}

/// The parts of the config that need parsing, checked and typed.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub http_addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub request_timeout: Duration,
    pub drain: Duration,
    pub shutdown_grace: Duration,
    pub inference_threads: usize,
}

impl Config {
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("invalid config {}: {e}", path.display()))
    }

    /// What rollout checks can measure with this config.
    pub fn rollout_features(&self) -> crate::rollout::policy::Features {
        crate::rollout::policy::Features { skew: self.skew.enabled, feedback: self.feedback.capacity > 0 }
    }

    /// Checks every field once, before anything starts, and returns all problems together.
    pub fn check(self) -> Result<Checked, Vec<String>> {
        let resolved = self.validate()?;
        Ok(Checked { config: self, resolved })
    }

    /// Checks every field and returns all problems together.
    pub fn validate(&self) -> Result<Resolved, Vec<String>> {
        let mut errors = Vec::new();
        let mut addr = |field: &str, value: &str| -> SocketAddr {
            value.parse().unwrap_or_else(|_| {
                errors.push(format!("{field} = '{value}' is not an address like 127.0.0.1:8000"));
                SocketAddr::from(([0, 0, 0, 0], 0))
            })
        };
        let http_addr = addr("server.http_addr", &self.server.http_addr);
        let grpc_addr = addr("server.grpc_addr", &self.server.grpc_addr);
        let metrics_addr = addr("server.metrics_addr", &self.server.metrics_addr);
        let admin_addr = addr("admin.addr", &self.admin.addr);
        let mut bound: Vec<(&str, SocketAddr)> = Vec::new();
        for (field, a) in [
            ("server.http_addr", http_addr),
            ("server.grpc_addr", grpc_addr),
            ("server.metrics_addr", metrics_addr),
            ("admin.addr", admin_addr),
        ] {
            if let Some((other, _)) = bound.iter().find(|(_, b)| a.port() != 0 && *b == a) {
                errors.push(format!("{field} and {other} must differ"));
            }
            bound.push((field, a));
        }
        if let Err(e) = self.routing.headers() {
            errors.push(e);
        }
        if !admin_addr.ip().is_loopback() && self.admin.tls.is_none() && !self.admin.allow_plaintext_remote {
            errors.push(format!(
                "admin.addr = '{admin_addr}' is not a loopback address and admin.tls is not set: admin tokens would \
                 cross the network in plain text; set [admin.tls], or admin.allow_plaintext_remote = true if the \
                 network is protected otherwise (a mesh's mTLS)"
            ));
        }
        for (section, tls) in [
            ("server.tls", &self.server.tls),
            ("server.grpc_tls", &self.server.grpc_tls),
            ("server.metrics_tls", &self.server.metrics_tls),
            ("admin.tls", &self.admin.tls),
        ] {
            if let Some(tls) = tls {
                errors.extend(tls.check(section));
            }
        }
        errors.extend(self.upstreams.tls.check("upstreams.tls"));
        if let Some(f) = &self.admin.token_file
            && !f.is_file()
        {
            errors.push(format!("admin.token_file '{}' is not a readable file", f.display()));
        }
        let mut positive = |field: &str, v: u64| {
            if v == 0 {
                errors.push(format!("{field} must be greater than 0"));
            }
        };
        positive("server.max_body_bytes", self.server.max_body_bytes as u64);
        positive("server.max_concurrent_requests", self.server.max_concurrent_requests as u64);
        positive("server.request_timeout_ms", self.server.request_timeout_ms);
        positive("server.max_connections", self.server.max_connections as u64);
        positive("server.header_read_timeout_ms", self.server.header_read_timeout_ms);
        positive("server.body_read_timeout_ms", self.server.body_read_timeout_ms);
        positive("models.max_batch_rows", self.models.max_batch_rows as u64);
        positive("inference.queue_capacity", self.inference.queue_capacity as u64);
        positive("inference.intra_op_threads", self.inference.intra_op_threads as u64);
        if self.inference.threads > 256 {
            errors.push(format!("inference.threads = {} is more than 256", self.inference.threads));
        }
        if !self.models.repository.is_dir() {
            errors.push(format!("models.repository '{}' is not a directory", self.models.repository.display()));
        }
        errors.extend(self.rollout.problems(self.rollout_features()));
        errors.extend(self.cluster.problems());
        if !(0.0..=100.0).contains(&self.tracing.sample_percent) {
            errors.push(format!("tracing.sample_percent = {} must be from 0 to 100", self.tracing.sample_percent));
        }
        if let Some(e) = &self.tracing.otlp_endpoint
            && !(e.starts_with("http://") || e.starts_with("https://"))
        {
            errors.push(format!("tracing.otlp_endpoint = '{e}' must be a URL like http://127.0.0.1:4317"));
        }
        if !matches!(self.logging.format.as_str(), "plain" | "json") {
            errors.push(format!("logging.format = '{}' must be 'plain' or 'json'", self.logging.format));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let threads = match self.inference.threads {
            0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
            n => n,
        };
        Ok(Resolved {
            http_addr,
            grpc_addr,
            metrics_addr,
            admin_addr,
            request_timeout: Duration::from_millis(self.server.request_timeout_ms),
            drain: Duration::from_millis(self.server.drain_ms),
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
            inference_threads: threads,
        })
    }
}

#[cfg(test)]
mod tests;

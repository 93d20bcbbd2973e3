//! Remote versions: a model version served by another Open Inference Protocol server (Triton, MLServer, KServe, or
//! another gateway), over HTTP or gRPC. The version's manifest declares the signature as usual and says where the
//! upstream is (`"remote": {"url": "grpc://host:8001", ...}`; `https://` and `grpcs://` go over TLS with the
//! `[upstreams.tls]` CA bundle and client certificate, verifying the host name or `remote.server_name`); the version is validated, routed, canaried, mirrored
//! and measured like a local one, and only the call itself leaves the process.
//!
//! Each remote version has pooled connections (hyper's pool for HTTP/1.1, one multiplexed HTTP/2 channel for
//! gRPC), a deadline per call, a bound on calls in flight (beyond it, 503 at once), a circuit breaker that fails
//! fast while the upstream is down, and a health probe of the upstream's readiness endpoint that keeps the
//! breaker open while the upstream says it is not ready.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::sync::Semaphore;

use crate::error::GatewayError;
use crate::manifest::{Manifest, RemoteSpec};
use crate::protocol::grpc as codec;
use crate::protocol::{json, pb};
use crate::tensor::Tensor;

/// Largest answer accepted from an upstream (gRPC message or HTTP body).
const MAX_ANSWER_BYTES: usize = 256 * 1024 * 1024;

/// Deadline for the golden examples run against the upstream when a remote version loads.
const LOAD_DEADLINE: Duration = Duration::from_secs(10);

enum Transport {
    Http { client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>, base: String },
    Grpc { client: pb::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel> },
}

#[derive(Debug)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
        reason: String,
    },
    /// One probe call is out; the others still fail fast.
    HalfOpen,
}

/// Closed → (threshold consecutive failures) → Open → (after `open_for`) → HalfOpen: one call goes through; its
/// success closes the circuit, its failure opens it again.
#[derive(Debug)]
struct Breaker {
    state: Mutex<State>,
    threshold: u32,
    open_for: Duration,
}

impl Breaker {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a call may go out now; the reason it may not.
    fn admit(&self) -> Result<(), String> {
        let mut s = self.lock();
        match &*s {
            State::Closed { .. } => Ok(()),
            State::Open { until, .. } if Instant::now() >= *until => {
                *s = State::HalfOpen;
                Ok(())
            }
            State::Open { reason, until } => Err(format!(
                "the circuit to the upstream is open ({reason}); retrying in {} ms",
                until.saturating_duration_since(Instant::now()).as_millis()
            )),
            State::HalfOpen => Err("the circuit to the upstream is half-open: a probe call is in flight".into()),
        }
    }

    fn success(&self) {
        *self.lock() = State::Closed { failures: 0 };
    }

    fn failure(&self, reason: &str) {
        let mut s = self.lock();
        let failures = match &*s {
            State::Closed { failures } => failures + 1,
            State::HalfOpen => self.threshold,
            State::Open { .. } => return,
        };
        *s = if failures >= self.threshold {
            tracing::warn!(reason, failures, "upstream circuit opened");
            State::Open {
                until: Instant::now() + self.open_for,
                reason: format!("{failures} failures, last: {reason}"),
            }
        } else {
            State::Closed { failures }
        };
    }

    /// Opens the circuit now (the upstream says it is not ready).
    fn trip(&self, reason: &str) {
        let mut s = self.lock();
        if !matches!(&*s, State::Open { .. }) {
            tracing::warn!(reason, "upstream circuit opened by the health probe");
        }
        *s = State::Open { until: Instant::now() + self.open_for, reason: reason.to_string() };
    }

    /// The upstream says it is ready: an open circuit lets the next call through as its probe, without waiting
    /// out the rest of the period. (It does not close outright: the upstream may be ready yet fail its calls.)
    fn retry_now(&self) {
        let mut s = self.lock();
        if let State::Open { until, .. } = &mut *s {
            *until = Instant::now();
        }
    }

    /// Whether calls would be refused right now (an open circuit whose period is over is not).
    fn refuses(&self) -> bool {
        match &*self.lock() {
            State::Closed { .. } => false,
            State::Open { until, .. } => Instant::now() < *until,
            State::HalfOpen => true,
        }
    }

    /// A call ended without an outcome (its caller went away): a half-open circuit waits out another period.
    fn abandoned(&self) {
        let mut s = self.lock();
        if matches!(&*s, State::HalfOpen) {
            *s = State::Open { until: Instant::now() + self.open_for, reason: "the probe call was abandoned".into() };
        }
    }
}

/// Marks a call in flight; dropped unfinished, it tells the breaker.
struct Pending<'a> {
    breaker: &'a Breaker,
    done: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.breaker.abandoned();
        }
    }
}

pub struct RemoteModel {
    pub spec: RemoteSpec,
    model: String,
    transport: Transport,
    permits: Semaphore,
    breaker: Breaker,
    /// What the last health probe said.
    ready: AtomicBool,
    up: prometheus::IntGauge,
}

impl std::fmt::Debug for RemoteModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteModel").field("url", &self.spec.url).field("model", &self.model).finish()
    }
}

/// An error with its causes (`client error (Connect): invalid peer certificate: NotValidForName`): the outermost
/// message alone rarely says what went wrong with a connection.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let msg = s.to_string();
        if !out.contains(&msg) {
            out.push_str(": ");
            out.push_str(&msg);
        }
        source = s.source();
    }
    out
}

/// What a failed call was, for the breaker and the client.
fn upstream(msg: String) -> GatewayError {
    GatewayError::Upstream(msg)
}

impl RemoteModel {
    /// Builds the client; connections are made on first use. Must run inside the Tokio runtime.
    pub fn new(
        spec: RemoteSpec,
        model: &str,
        up: prometheus::IntGauge,
        tls: &crate::tls::ClientTlsMaterial,
    ) -> Result<Self, String> {
        let target_model = spec.model.clone().unwrap_or_else(|| model.to_string());
        let grpc = match (spec.url.strip_prefix("grpc://"), spec.url.strip_prefix("grpcs://")) {
            (Some(rest), _) => Some((format!("http://{rest}"), false)),
            (_, Some(rest)) => Some((format!("https://{rest}"), true)),
            _ => None,
        };
        let transport = if let Some((url, secure)) = grpc {
            let mut endpoint =
                tonic::transport::Endpoint::from_shared(url).map_err(|e| format!("remote.url '{}': {e}", spec.url))?;
            if secure {
                endpoint = endpoint
                    .tls_config(tls.tonic(spec.server_name.as_deref()))
                    .map_err(|e| format!("remote.url '{}': TLS: {e}", spec.url))?;
            }
            let endpoint = endpoint
                .tcp_nodelay(true)
                .connect_timeout(Duration::from_millis(spec.timeout_ms))
                // An upstream that dies without closing the connection is noticed in seconds, not when the
                // kernel gives up on the socket.
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5))
                .keep_alive_while_idle(true);
            let client = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(endpoint.connect_lazy())
                .max_decoding_message_size(MAX_ANSWER_BYTES);
            Transport::Grpc { client }
        } else if spec.url.starts_with("http://") || spec.url.starts_with("https://") {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(Duration::from_millis(spec.timeout_ms)));
            // The TLS layer above takes https:// URLs; this one only opens the TCP connection.
            connector.enforce_http(false);
            // https_or_http: the URL's scheme decides; an https:// URL is never downgraded.
            let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls.rustls()).https_or_http();
            let builder = match &spec.server_name {
                Some(name) => {
                    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(name.clone())
                        .map_err(|e| format!("remote.server_name '{name}': {e}"))?;
                    builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name))
                }
                None => builder,
            };
            let client = Client::builder(TokioExecutor::new()).build(builder.enable_http1().wrap_connector(connector));
            Transport::Http { client, base: spec.url.trim_end_matches('/').to_string() }
        } else {
            return Err(format!("remote.url '{}' must start with http://, https://, grpc:// or grpcs://", spec.url));
        };
        if spec.max_concurrency == 0 || spec.failure_threshold == 0 || spec.timeout_ms == 0 {
            return Err("remote.max_concurrency, remote.failure_threshold and remote.timeout_ms must be above 0".into());
        }
        Ok(Self {
            model: target_model,
            transport,
            permits: Semaphore::new(spec.max_concurrency),
            breaker: Breaker {
                state: Mutex::new(State::Closed { failures: 0 }),
                threshold: spec.failure_threshold,
                open_for: Duration::from_millis(spec.open_ms),
            },
            ready: AtomicBool::new(true),
            up,
            spec,
        })
    }

    /// Calls the upstream with the deadline, the concurrency bound and the breaker.
    pub async fn infer(&self, inputs: Vec<Tensor>, manifest: &Manifest) -> Result<Vec<Tensor>, GatewayError> {
        // Boxed: the call's state (the client call, its deadline and permit, about 3 KB) would otherwise be part of
        // every caller's future, and so of every request's future, local versions' included. The request future
        // is boxed once per request, and that box's memcpy is of its whole size, into cache lines that are cold.
        Box::pin(self.infer_within(inputs, manifest, Duration::from_millis(self.spec.timeout_ms))).await
    }

    /// The golden examples at load: correctness, not latency, so a cold connection gets a generous deadline.
    pub async fn check(&self, inputs: Vec<Tensor>, manifest: &Manifest) -> Result<Vec<Tensor>, GatewayError> {
        self.infer_within(inputs, manifest, Duration::from_millis(self.spec.timeout_ms).max(LOAD_DEADLINE)).await
    }

    async fn infer_within(
        &self,
        inputs: Vec<Tensor>,
        manifest: &Manifest,
        deadline: Duration,
    ) -> Result<Vec<Tensor>, GatewayError> {
        let Ok(_permit) = self.permits.try_acquire() else {
            return Err(GatewayError::Overloaded(format!(
                "{} calls to the upstream {} are in flight already; retry later",
                self.spec.max_concurrency, self.spec.url
            )));
        };
        self.breaker.admit().map_err(|reason| GatewayError::NotReady {
            model: manifest.name.clone(),
            version: manifest.version.clone(),
            reason,
        })?;
        // If the caller goes away mid-call (its own deadline, a disconnect), a half-open probe must not stay
        // "in flight" forever.
        let mut pending = Pending { breaker: &self.breaker, done: false };
        let result = match tokio::time::timeout(deadline, self.call(inputs, manifest)).await {
            Ok(r) => r,
            Err(_) => Err(GatewayError::Timeout(deadline.as_millis() as u64)),
        };
        pending.done = true;
        match &result {
            Ok(_) => self.breaker.success(),
            Err(e @ (GatewayError::Upstream(_) | GatewayError::Timeout(_))) => self.breaker.failure(&e.to_string()),
            // Shedding load is the upstream protecting itself: counting it would open the circuit and make the
            // overload worse. It is neither a success nor a failure.
            Err(GatewayError::Overloaded(_)) => {}
            // The upstream answered, refusing the input: it is up.
            Err(_) => self.breaker.success(),
        }
        self.up.set(i64::from(self.is_up()));
        result
    }

    async fn call(&self, inputs: Vec<Tensor>, manifest: &Manifest) -> Result<Vec<Tensor>, GatewayError> {
        match &self.transport {
            Transport::Http { client, base } => self.call_http(client, base, inputs, manifest).await,
            Transport::Grpc { client } => self.call_grpc(client.clone(), inputs).await,
        }
    }

    fn infer_path(&self) -> String {
        match &self.spec.version {
            Some(v) => format!("/v2/models/{}/versions/{v}/infer", self.model),
            None => format!("/v2/models/{}/infer", self.model),
        }
    }

    async fn call_http(
        &self,
        client: &Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
        base: &str,
        inputs: Vec<Tensor>,
        manifest: &Manifest,
    ) -> Result<Vec<Tensor>, GatewayError> {
        let body = json::encode_request(&inputs);
        let req = http::Request::post(format!("{base}{}", self.infer_path()))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| GatewayError::Internal(e.to_string()))?;
        let resp = client.request(req).await.map_err(|e| upstream(format!("{}: {}", self.spec.url, causes(&e))))?;
        let status = resp.status();
        let bytes = http_body_util::Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|e| upstream(format!("{}: reading the answer: {e}", self.spec.url)))?
            .to_bytes();
        if !status.is_success() {
            let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            let msg = format!("upstream {} answered {status}: {msg}", self.spec.url);
            return Err(match status.as_u16() {
                // The input itself was refused.
                400 | 413 | 422 => GatewayError::InvalidInput(msg),
                429 => GatewayError::Overloaded(msg),
                // 404 (a wrong remote.model), 5xx and the rest: the upstream cannot serve this version.
                _ => upstream(msg),
            });
        }
        decode_http_outputs(&bytes, manifest).map_err(|e| upstream(format!("{}: {e}", self.spec.url)))
    }

    async fn call_grpc(
        &self,
        mut client: pb::grpc_inference_service_client::GrpcInferenceServiceClient<tonic::transport::Channel>,
        inputs: Vec<Tensor>,
    ) -> Result<Vec<Tensor>, GatewayError> {
        let mut req = pb::ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.spec.version.clone().unwrap_or_default(),
            ..Default::default()
        };
        for t in inputs {
            req.raw_input_contents.push(codec::to_raw(&t.data));
            req.inputs.push(pb::model_infer_request::InferInputTensor {
                name: t.name,
                datatype: t.data.datatype().as_str().into(),
                shape: t.shape,
                parameters: Default::default(),
                contents: None,
            });
        }
        let resp = match client.model_infer(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => {
                let msg = format!("upstream {} answered {:?}: {}", self.spec.url, s.code(), s.message());
                return Err(match s.code() {
                    tonic::Code::InvalidArgument => GatewayError::InvalidInput(msg),
                    tonic::Code::ResourceExhausted => GatewayError::Overloaded(msg),
                    tonic::Code::DeadlineExceeded => GatewayError::Timeout(self.spec.timeout_ms),
                    // NOT_FOUND (a wrong remote.model), an answer too large, UNAVAILABLE and the rest.
                    _ => upstream(msg),
                });
            }
        };
        let outputs = resp
            .outputs
            .into_iter()
            .map(|o| pb::model_infer_request::InferInputTensor {
                name: o.name,
                datatype: o.datatype,
                shape: o.shape,
                parameters: o.parameters,
                contents: o.contents,
            })
            .collect();
        codec::decode_inputs(outputs, resp.raw_output_contents)
            .map(|(t, _)| t)
            .map_err(|e| upstream(format!("{}: cannot read the answer: {e}", self.spec.url)))
    }

    /// Asks the upstream whether the model is ready.
    async fn probe(&self) -> Result<(), String> {
        let timeout = Duration::from_millis(self.spec.timeout_ms);
        let check = async {
            match &self.transport {
                Transport::Http { client, base } => {
                    let path = match &self.spec.version {
                        Some(v) => format!("/v2/models/{}/versions/{v}/ready", self.model),
                        None => format!("/v2/models/{}/ready", self.model),
                    };
                    let req = http::Request::get(format!("{base}{path}"))
                        .body(Full::new(Bytes::new()))
                        .map_err(|e| e.to_string())?;
                    let resp = client.request(req).await.map_err(|e| format!("unreachable: {}", causes(&e)))?;
                    let status = resp.status();
                    let _ = resp.into_body().collect().await;
                    if status.is_success() { Ok(()) } else { Err(format!("ready endpoint answered {status}")) }
                }
                Transport::Grpc { client } => {
                    let req = pb::ModelReadyRequest {
                        name: self.model.clone(),
                        version: self.spec.version.clone().unwrap_or_default(),
                    };
                    match client.clone().model_ready(req).await {
                        Ok(r) if r.get_ref().ready => Ok(()),
                        Ok(_) => Err("ModelReady says not ready".into()),
                        Err(s) => Err(format!("ModelReady failed: {:?} {}", s.code(), s.message())),
                    }
                }
            }
        };
        tokio::time::timeout(timeout, check).await.unwrap_or_else(|_| Err("readiness probe timed out".into()))
    }

    /// Whether the upstream is believed up: its last probe passed and the circuit is closed.
    pub fn is_up(&self) -> bool {
        self.ready.load(Ordering::Relaxed) && !self.breaker.refuses()
    }

    /// Probes the upstream every `health_interval_ms` while the version exists (the task holds a weak reference
    /// and ends when the version is dropped).
    pub fn spawn_probe(self: &Arc<Self>) {
        if self.spec.health_interval_ms == 0 {
            return;
        }
        let weak: Weak<Self> = Arc::downgrade(self);
        let every = Duration::from_millis(self.spec.health_interval_ms);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                let Some(this) = weak.upgrade() else { return };
                match this.probe().await {
                    Ok(()) => {
                        this.ready.store(true, Ordering::Relaxed);
                        this.breaker.retry_now();
                    }
                    Err(reason) => {
                        this.ready.store(false, Ordering::Relaxed);
                        this.breaker.trip(&format!("upstream not ready: {reason}"));
                    }
                }
                this.up.set(i64::from(this.is_up()));
            }
        });
    }
}

/// Outputs of an HTTP answer, checked against the manifest's outputs.
fn decode_http_outputs(bytes: &[u8], manifest: &Manifest) -> Result<Vec<Tensor>, String> {
    let outputs = json::decode_response(bytes).map_err(|e| e.to_string())?;
    for o in &outputs {
        let spec = manifest.output(&o.name).ok_or_else(|| format!("unexpected output '{}'", o.name))?;
        if o.datatype() != spec.datatype {
            return Err(format!("output '{}' is {}, the manifest says {}", o.name, o.datatype(), spec.datatype));
        }
    }
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_breaker_opens_after_the_threshold_and_half_opens_after_the_wait() {
        let b = Breaker {
            state: Mutex::new(State::Closed { failures: 0 }),
            threshold: 3,
            open_for: Duration::from_millis(30),
        };
        b.failure("x");
        b.success();
        b.failure("x");
        b.failure("x");
        assert!(b.admit().is_ok(), "two consecutive failures after a success: still closed");
        b.failure("x");
        let e = b.admit().expect_err("open");
        assert!(e.contains("circuit to the upstream is open (3 failures, last: x)"), "{e}");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "one probe after the wait");
        assert!(b.admit().is_err(), "only one");
        b.failure("still down");
        assert!(b.admit().is_err(), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok());
        b.success();
        assert!(b.admit().is_ok() && !b.refuses(), "a good probe closes it");
        for _ in 0..3 {
            b.failure("x");
        }
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "probe");
        b.abandoned();
        assert!(b.admit().is_err(), "an abandoned probe does not leave the circuit half-open for ever");
        std::thread::sleep(Duration::from_millis(40));
        assert!(b.admit().is_ok(), "the next period lets another probe through");
    }
}

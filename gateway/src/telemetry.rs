//! Logs and traces. Logs are plain or JSON lines through `tracing`, filtered by config or `RUST_LOG`. Traces: the
//! request path runs in spans (`request`, then `decode`, `route`, `queue`, `infer`, `encode`), which go to an
//! OpenTelemetry collector over OTLP/gRPC when `tracing.otlp_endpoint` is set. A W3C `traceparent` on a request
//! (HTTP header or gRPC metadata) makes its spans part of the caller's trace, and the trace id is a field of the
//! request span, so it is in every log line written inside a request.
//!
//! The request-path spans are at DEBUG under the target [`REQUEST_TARGET`]: the OTLP layer always asks for them,
//! the log layer only when its filter says so (`logging.level = "info,gateway::request=debug"` puts the request
//! span, with its request id and trace id, on every log line inside a request). With neither, they cost a callsite
//! check per request and nothing else: an always-on span measured 19 % of closed-loop throughput.

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use serde::{Deserialize, Serialize};

/// Target of the request-path spans.
pub const REQUEST_TARGET: &str = "gateway::request";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// `plain` for people, `json` for log pipelines.
    pub format: String,
    /// A `tracing` filter such as `info` or `gateway=debug,info`; `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self { format: "plain".into(), level: "info".into() }
    }
}

/// Distributed tracing over OTLP.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingConfig {
    /// OpenTelemetry collector for spans, OTLP over gRPC (e.g. `http://127.0.0.1:4317`); unset turns exporting off.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Share of new traces exported, percent; requests that arrive with a sampled `traceparent` always are.
    pub sample_percent: f64,
}

impl Default for TracingConfig {
    fn default() -> Self {
        Self { otlp_endpoint: None, service_name: "gateway".into(), sample_percent: 100.0 }
    }
}

/// Keeps the trace exporter alive; dropping it flushes the spans still buffered.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take()
            && let Err(e) = p.shutdown()
        {
            eprintln!("cannot flush the trace exporter: {e}");
        }
    }
}

/// Installs the global subscriber: the log layer, and the OTLP layer when an endpoint is configured. Called once,
/// by the binary, inside the Tokio runtime (the OTLP exporter's gRPC channel lives on it).
pub fn init(logging: &LoggingConfig, tracing_cfg: &TracingConfig) -> Result<Telemetry, String> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&logging.level));
    let logs = if logging.format == "json" {
        tracing_subscriber::fmt::layer().with_target(false).json().boxed()
    } else {
        tracing_subscriber::fmt::layer().with_target(false).boxed()
    };
    let mut telemetry = Telemetry::default();
    let traces = match &tracing_cfg.otlp_endpoint {
        Some(endpoint) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .build()
                .map_err(|e| format!("tracing.otlp_endpoint {endpoint}: {e}"))?;
            let resource =
                opentelemetry_sdk::Resource::builder().with_service_name(tracing_cfg.service_name.clone()).build();
            let provider = SdkTracerProvider::builder()
                .with_batch_exporter(exporter)
                .with_resource(resource)
                // A sampled caller's trace is always kept; new traces are sampled at the configured share.
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    tracing_cfg.sample_percent / 100.0,
                ))))
                .build();
            let tracer = provider.tracer("gateway");
            telemetry.provider = Some(provider);
            let only_requests = Targets::new().with_target(REQUEST_TARGET, tracing::Level::DEBUG);
            Some(tracing_opentelemetry::layer().with_tracer(tracer).with_filter(only_requests))
        }
        None => None,
    };
    tracing_subscriber::registry()
        .with(logs.with_filter(filter))
        .with(traces)
        .try_init()
        .map_err(|e| format!("logging already initialised: {e}"))?;
    Ok(telemetry)
}

/// Reads W3C trace context from HTTP headers or gRPC metadata.
pub struct Carrier<'a>(pub &'a http::HeaderMap);

impl Extractor for Carrier<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Joins `span` to the caller's trace (when the request carries a `traceparent`) and records the trace id on it.
/// Nothing to do, and nothing spent, when no layer wants the span.
pub fn adopt(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Carrier(headers));
    let caller = parent.span().span_context().clone();
    if caller.is_valid() {
        let _ = span.set_parent(parent);
    }
    // With the OTLP layer the span has its own context (the caller's trace, or a new one); without it, the
    // caller's trace id is still worth logging.
    let own = span.context().span().span_context().clone();
    let trace_id = if own.is_valid() { own.trace_id() } else { caller.trace_id() };
    if trace_id != opentelemetry::trace::TraceId::INVALID {
        span.record("trace_id", tracing::field::display(trace_id));
    }
}

/// The request and answer header (HTTP) and metadata key (gRPC) carrying the request id.
pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The same, parsed once: a `&str` name is parsed on every lookup.
pub const REQUEST_ID: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);

/// The request id, recorded in `span` and returned with the answer: the caller's `x-request-id` if it sent a usable
/// one; else a new random one when the span is recorded (a log or a trace takes the request spans), else none. An
/// id made up where nothing records it would identify nothing, yet cost every answer a header that neither side can
/// index: without it, pinned gRPC rounds measured 0.4 us less of the load tester's 12.2 us per answer, and 0.3 us
/// less of the gateway's 18.2.
pub fn request_id(headers: &http::HeaderMap, span: &tracing::Span) -> Option<String> {
    let id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map(str::to_owned)
        .or_else(|| (!span.is_disabled()).then(random_id))?;
    span.record("request_id", id.as_str());
    Some(id)
}

/// The request id as an answer header, marked sensitive: over HTTP/2 that means "never indexed". Ids do not
/// repeat, so indexing them filled each connection's HPACK table with entries the encoder compared with every
/// later id (about 3,000 instructions per gRPC answer), and evicted the entries that do repeat.
pub fn request_id_header(id: &str) -> Option<http::HeaderValue> {
    let mut value = http::HeaderValue::from_str(id).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// 16 random hex digits, written directly: `format!` costs as much as the rest of the request's bookkeeping.
fn random_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = fastrand::u64(..);
    (0..16).rev().map(|k| char::from(HEX[((n >> (k * 4)) & 0xf) as usize])).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_the_callers_if_usable_else_16_random_hex_digits_where_recorded() {
        let subscriber = tracing_subscriber::registry().with(tracing_subscriber::filter::LevelFilter::DEBUG);
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::debug_span!("request", request_id = tracing::field::Empty);
            let mut h = http::HeaderMap::new();
            let id = request_id(&h, &span).expect("made up");
            assert!(id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()), "{id}");
            assert_ne!(Some(id), request_id(&h, &span), "random");
            h.insert("x-request-id", http::HeaderValue::from_static("abc-1"));
            assert_eq!(request_id(&h, &span).as_deref(), Some("abc-1"));
            h.insert("x-request-id", http::HeaderValue::from_str(&"x".repeat(129)).expect("header"));
            assert_eq!(request_id(&h, &span).map(|id| id.len()), Some(16), "too long: replaced");
        });
        // Where nothing records the span, the caller's id is still honoured, but none is made up.
        let span = tracing::debug_span!("request", request_id = tracing::field::Empty);
        assert!(span.is_disabled());
        let mut h = http::HeaderMap::new();
        assert_eq!(request_id(&h, &span), None);
        h.insert("x-request-id", http::HeaderValue::from_static("abc-1"));
        assert_eq!(request_id(&h, &span).as_deref(), Some("abc-1"));
    }

    #[test]
    fn the_request_id_header_is_never_indexed() {
        let h = request_id_header("abc-1").expect("valid");
        assert!(h.is_sensitive(), "HPACK must not index unique values");
        assert_eq!(h, "abc-1");
    }
}

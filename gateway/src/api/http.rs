//! Open Inference Protocol (KServe v2) over HTTP: the port's service (a dispatcher in front of the axum router, for
//! the inference routes' sake) and its handlers, which decode, call `Core` and encode; nothing else lives here.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::Service;
use tower_http::decompression::RequestDecompressionLayer;

use crate::api::admin::AdminToken;
use crate::api::admission::{self, Admission};
use crate::api::compress;
use crate::api::consumers::Clients;
use crate::api::dispatch::{HttpApp, INFER_ROUTE, INFER_VERSION_ROUTE};
use crate::api::error::{ApiError, http_status};
use crate::api::hints::route_hint;
use crate::api::metadata;
use crate::api::repository::{self, Control};
use crate::api::{model_config as config, statistics};
use crate::cluster::Cluster;
use crate::core::Core;
use crate::error::GatewayError;
use crate::metrics::{InFlight, UNKNOWN_MODEL};
use crate::protocol::json::{
    AnswerFormat, HEADER_LENGTH, ModelMetadata, ServerMetadata, decode_request_parts, encode_answer,
};
use crate::protocol::{InferRequest, VERSION_HEADER};
use crate::routing::RouteHint;
use crate::telemetry::{self, REQUEST_TARGET};
use tracing::Instrument;

/// The HTTP port's service. An inference request whose body is not compressed and whose names need no decoding
/// goes straight to its handler; everything else goes through the axum router, which answers it the same way
/// (its inference routes inflate compressed bodies first). [`crate::api::dispatch`] says why.
pub fn service(
    core: Arc<Core>,
    limits: &Admission,
    cluster: Option<Arc<Cluster>>,
    token: AdminToken,
    clients: Arc<Clients>,
) -> impl Service<hyper::Request<Incoming>, Response = Response, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let state =
        Arc::new(InferState { core: core.clone(), clients, admission: limits.clone(), decoders: Semaphore::new(cpus) });
    HttpApp { router: routes(core, state.clone(), cluster, token), state, handler: infer }
}

/// Every route of the port. tritonclient's request_compression_algorithm sends gzip or deflate bodies: the
/// inference routes inflate them as they are read, and the body limit applies to the inflated bytes, so a small
/// zip bomb gets a 413, not the memory. (Answers are compressed by the handler: [`compress`].)
fn routes(core: Arc<Core>, state: Arc<InferState>, cluster: Option<Arc<Cluster>>, token: AdminToken) -> Router {
    let infer = Router::new()
        .route(INFER_ROUTE, post(infer_default))
        .route(INFER_VERSION_ROUTE, post(infer_version))
        .layer(RequestDecompressionLayer::new().gzip(true).deflate(true))
        .with_state(state);

    Router::new()
        .route("/v2/health/live", get(|| async { Json(serde_json::json!({ "live": true })) }))
        .route("/v2/health/ready", get(server_ready))
        .route("/v2", get(server_metadata))
        .route("/v2/models/{model}", get(model_metadata))
        .route("/v2/models/{model}/versions/{version}", get(version_metadata))
        .route("/v2/models/{model}/ready", get(model_ready))
        .route("/v2/models/{model}/versions/{version}/ready", get(version_ready))
        .route("/v2/models/{model}/feedback", post(feedback).layer(Extension(cluster)))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/versions/{version}/config", get(version_config))
        .route("/v2/models/stats", get(all_stats))
        .route("/v2/models/{model}/stats", get(model_stats))
        .route("/v2/models/{model}/versions/{version}/stats", get(version_stats))
        .route("/v2/repository/index", post(repository_index))
        .route("/v2/repository/models/{model}/{action}", post(repository_control).layer(Extension(token)))
        .merge(infer)
        // axum's default 404 has no body; clients expect the protocol's error shape everywhere.
        .fallback(|| async {
            let msg = "no such endpoint; the Open Inference Protocol routes live under /v2";
            (StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": msg })))
        })
        .with_state(core)
}

async fn server_ready(State(core): State<Arc<Core>>) -> Response {
    let ready = core.ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let mut body = serde_json::json!({ "ready": ready });
    if let Some(note) = core.ready_note() {
        body["detail"] = note.into();
    }
    (status, Json(body)).into_response()
}

async fn server_metadata() -> Json<ServerMetadata> {
    Json(metadata::server())
}

async fn model_metadata(
    State(core): State<Arc<Core>>,
    Path(model): Path<String>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let slot = core.model(&model)?;
    let v = slot.resolve(RouteHint::default())?;
    Ok(Json(metadata::model(&core, &slot, &v)))
}

async fn version_metadata(
    State(core): State<Arc<Core>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelMetadata>, ApiError> {
    let slot = core.model(&model)?;
    let v = slot.version(&version)?;
    Ok(Json(metadata::model(&core, &slot, &v)))
}

async fn model_ready(State(core): State<Arc<Core>>, Path(model): Path<String>) -> Result<Response, ApiError> {
    let slot = core.model(&model)?;
    let v = slot.resolve(RouteHint::default())?;
    v.availability()?;
    Ok(Json(serde_json::json!({ "name": model, "version": &*v.version, "ready": true })).into_response())
}

async fn version_ready(
    State(core): State<Arc<Core>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let slot = core.model(&model)?;
    slot.version(&version)?.availability()?;
    Ok(Json(serde_json::json!({ "name": model, "version": version, "ready": true })).into_response())
}

async fn model_config(State(core): State<Arc<Core>>, Path(model): Path<String>) -> Result<Response, ApiError> {
    let v = core.model(&model)?.resolve(RouteHint::default())?;
    Ok(Json(config::to_json(&config::config(&core, &v))).into_response())
}

async fn version_config(
    State(core): State<Arc<Core>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let v = core.model(&model)?.version(&version)?;
    Ok(Json(config::to_json(&config::config(&core, &v))).into_response())
}

async fn all_stats(State(core): State<Arc<Core>>) -> Result<Response, ApiError> {
    Ok(Json(statistics::to_json(&statistics::versions(&core, None, None)?)).into_response())
}

async fn model_stats(State(core): State<Arc<Core>>, Path(model): Path<String>) -> Result<Response, ApiError> {
    Ok(Json(statistics::to_json(&statistics::versions(&core, Some(&model), None)?)).into_response())
}

async fn version_stats(
    State(core): State<Arc<Core>>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    Ok(Json(statistics::to_json(&statistics::versions(&core, Some(&model), Some(&version))?)).into_response())
}

/// The index request's optional body: `{"ready": true}` lists only ready versions.
#[derive(serde::Deserialize, Default)]
struct IndexBody {
    #[serde(default)]
    ready: bool,
}

async fn repository_index(State(core): State<Arc<Core>>, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let b: IndexBody = if body.iter().all(u8::is_ascii_whitespace) {
        IndexBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| GatewayError::invalid(format!("invalid repository index request: {e}")))?
    };
    Ok(Json(repository::index(&core, b.ready)).into_response())
}

/// `POST /v2/repository/models/{m}/load` and `.../unload`.
async fn repository_control(
    State(core): State<Arc<Core>>,
    Extension(token): Extension<AdminToken>,
    Path((model, action)): Path<(String, String)>,
    headers: axum::http::HeaderMap,
) -> Result<Response, ApiError> {
    let what = match action.as_str() {
        "load" => Control::Load,
        "unload" => Control::Unload,
        _ => return Err(GatewayError::NotFound(format!("no repository action '{action}'; use load or unload")).into()),
    };
    let auth = headers.get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    repository::control(&core, &token, auth, &model, what).await?;
    Ok(Json(serde_json::json!({})).into_response())
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FeedbackBody {
    /// The `id` of the inference request being labelled.
    id: String,
    /// The true value: one number per element of the answer's first output (a label, or a value).
    value: serde_json::Value,
}

/// Joins a delayed label with the answer the gateway gave, for live accuracy per version.
/// In cluster mode the answer being labelled may have come from another replica: a label for an id this replica
/// does not remember is handed to the others (once: a forwarded label is never forwarded again).
async fn feedback(
    State(core): State<Arc<Core>>,
    Extension(cluster): Extension<Option<Arc<Cluster>>>,
    Path(model): Path<String>,
    req: Request,
) -> Result<Response, ApiError> {
    let forwarded = req.headers().contains_key(FORWARDED_HEADER);
    let body = read_body(&core, req.into_body()).await?;
    match (join_feedback(&core, &model, &body), cluster) {
        (Err(GatewayError::NotFound(msg)), Some(cluster)) if !forwarded => {
            match cluster.forward_feedback(&model, body, FORWARDED_HEADER).await {
                Some((status, bytes)) => Ok((
                    StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
                    [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
                    bytes,
                )
                    .into_response()),
                None => Err(GatewayError::NotFound(format!("{msg}; no other replica remembers it either")).into()),
            }
        }
        (result, _) => Ok(Json(result?).into_response()),
    }
}

/// Marks a feedback call handed on by another replica.
const FORWARDED_HEADER: &str = "x-gateway-forwarded-by";

fn join_feedback(core: &Core, model: &str, body: &[u8]) -> Result<serde_json::Value, GatewayError> {
    core.model(model)?;
    let book = core
        .feedback
        .as_ref()
        .ok_or_else(|| GatewayError::Conflict("feedback is off (feedback.capacity = 0)".into()))?;
    // Any content type: curl -d sends form-encoded headers with a JSON body.
    let b: FeedbackBody =
        serde_json::from_slice(body).map_err(|e| GatewayError::invalid(format!("invalid feedback: {e}")))?;
    let nums = |v: &serde_json::Value| v.as_f64().or_else(|| v.as_bool().map(|b| f64::from(u8::from(b))));
    let truth: Vec<f64> = match &b.value {
        serde_json::Value::Array(a) => a.iter().map(nums).collect::<Option<_>>(),
        v => nums(v).map(|x| vec![x]),
    }
    .ok_or_else(|| GatewayError::invalid("'value' must be a number or an array of numbers"))?;
    let (version, joined) = book.join(model, &b.id, &truth)?;
    let v = version.to_string();
    core.metrics.feedback(model, &v, "correct", joined.correct);
    core.metrics.feedback(model, &v, "wrong", joined.labels - joined.correct);
    core.metrics.feedback(model, &v, "value", joined.values);
    Ok(serde_json::json!({ "id": b.id, "model_name": model, "model_version": version.to_string() }))
}

/// The inference routes' state: the consumers and the admission limits travel with the core rather than as a
/// request extension or tower layers, which would be boxed (and the layers cloned) on every request. Behind one
/// `Arc`: axum clones the state for every request, and one reference count is cheaper than three.
struct InferState {
    core: Arc<Core>,
    clients: Arc<Clients>,
    admission: Admission,
    /// One permit per CPU: the long JSON bodies being decoded off the async workers at once.
    decoders: Semaphore,
}

async fn infer_default(State(state): State<Arc<InferState>>, Path(model): Path<String>, req: Request) -> Response {
    infer(state, model, None, req).await
}

async fn infer_version(
    State(state): State<Arc<InferState>>,
    Path((model, version)): Path<(String, String)>,
    req: Request,
) -> Response {
    infer(state, model, Some(version), req).await
}

// Header names as parsed constants: a `&str` name is parsed (and a custom one allocated) on every use.
const VERSION_NAME: header::HeaderName = header::HeaderName::from_static(VERSION_HEADER);
const HEADER_LENGTH_NAME: header::HeaderName = header::HeaderName::from_static(HEADER_LENGTH);

/// Runs a request inside its `request` span (joined to the caller's trace) and tags the answer with its id.
async fn infer(state: Arc<InferState>, model: String, version: Option<String>, req: Request) -> Response {
    let span = tracing::debug_span!(
        target: REQUEST_TARGET,
        "request",
        otel.kind = "server",
        protocol = "http",
        model = %model,
        version = tracing::field::Empty,
        request_id = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        status = tracing::field::Empty,
    );
    let request_id = telemetry::request_id(req.headers(), &span);
    telemetry::adopt(&span, req.headers());
    // Boxed: the request's state across its awaits is a few KB, which tracing's wrapper and, on the router's path,
    // axum's box of the handler's future would otherwise copy. (On the direct path, without the box, pinned
    // rounds measured no faster: 0.997, 0.975, 0.996.)
    let mut resp = Box::pin(infer_in_span(state, model, version, req)).instrument(span.clone()).await;
    span.record("status", resp.status().as_u16());
    if let Some(h) = request_id.as_deref().and_then(telemetry::request_id_header) {
        resp.headers_mut().insert(telemetry::REQUEST_ID, h);
    }
    resp
}

async fn infer_in_span(state: Arc<InferState>, model: String, version: Option<String>, req: Request) -> Response {
    let InferState { core, clients, admission, decoders } = &*state;
    let start = Instant::now();
    // Counted from the headers on, so a slow upload is in flight too (and drained on shutdown).
    let _in_flight = InFlight::new(&core.metrics.in_flight);
    // Off by default: no key, no consumer, nothing to look at.
    let consumer = if clients.is_on() {
        match clients.identify(req.headers(), &core.metrics, "http") {
            Ok(c) => Some(c),
            Err(e) => return failed(core, UNKNOWN_MODEL, "", start, e),
        }
    } else {
        None
    };
    let slot = match core.model(&model) {
        Ok(s) => s,
        Err(e) => return failed(core, UNKNOWN_MODEL, "", start, e),
    };
    // Admission as over gRPC: a permit at once or a 503 (a fast refusal beats a queue no one sees), shared by both
    // protocols. The request timeout bounds the upload (`core.body_read_timeout` is never longer) and, with what
    // is left of it, the inference.
    let permit = match admission.admit() {
        Ok(p) => p,
        Err(e) => return failed(core, &slot.name, "", start, e),
    };
    let (parts, body) = req.into_parts();
    // The body is read here rather than by an extractor so the request counts as in flight while it uploads.
    let body = match read_body(core, body).await {
        Ok(b) => b,
        Err(e) => return failed(core, &slot.name, "", start, e),
    };
    let decoded = match header_length(&parts.headers) {
        Ok(n) => decode(core, decoders, body, n).await,
        Err(e) => Err(e),
    };
    let (req, format) = match decoded {
        Ok(r) => r,
        Err(e) => return failed(core, &slot.name, "", start, e),
    };
    let hint = match route_hint(&parts.headers, &core.routing, version.as_deref()) {
        Ok(h) => h,
        Err(e) => return failed(core, &slot.name, "", start, e),
    };
    match admission::within(admission.timeout, start, core.infer(&slot, hint, req)).await {
        Ok(resp) => {
            let v = &resp.version;
            let (bytes, header_len) = {
                let _encode = tracing::debug_span!(target: REQUEST_TARGET, "encode").entered();
                encode_answer(&v.model, &v.version, resp.id.as_deref(), &resp.outputs, &format)
            };
            v.metrics.http_ok.inc();
            v.metrics.http_duration.observe(start.elapsed().as_secs_f64());
            if let Some(c) = &consumer {
                clients.record(&core.metrics, &v.model, &v.version, c);
            }
            // The answer is made: compressing it (as the layer that did it before, after the handler) holds no
            // admission permit.
            drop(permit);
            let mut r = Response::new(Body::empty());
            let headers = r.headers_mut();
            let bytes = compress::answer(&parts.headers, bytes, headers);
            match header_len {
                None => headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json")),
                Some(n) => {
                    headers.insert(HEADER_LENGTH_NAME, HeaderValue::from(n));
                    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"))
                }
            };
            if let Ok(h) = HeaderValue::from_str(&v.version) {
                headers.insert(VERSION_NAME, h);
            }
            *r.body_mut() = Body::from(bytes);
            r
        }
        Err((v, e)) => {
            let version = v.as_ref().map_or("", |v| &*v.version);
            failed(core, &slot.name, version, start, e)
        }
    }
}

/// Decodes a request body: on the async worker when its JSON is short, else on a blocking thread (one per permit of
/// `decoders`), so that a long parse does not hold up the worker's other connections. Measured on one core shared
/// with the model, 64-row JSON requests (79 KB): at twice the sustainable rate, refusals came back at p50 0.24 to
/// 0.32 ms against 1.2 to 1.3 ms, for about 5 % less goodput (two more thread hand-offs per request on a saturated
/// core); closed loop, no difference (pinned pairs, medians 1.03 and 1.02).
async fn decode(
    core: &Core,
    decoders: &Semaphore,
    body: axum::body::Bytes,
    header_len: Option<usize>,
) -> Result<(InferRequest, AnswerFormat), GatewayError> {
    let span = tracing::debug_span!(target: REQUEST_TARGET, "decode", bytes = body.len());
    let json_len = header_len.unwrap_or(body.len());
    if core.decode_offload_bytes.is_none_or(|at| json_len < at) {
        return span.in_scope(|| decode_request_parts(&body, header_len));
    }
    // Admission bounds the requests that can wait here; the permit bounds the threads parsing at once.
    // `acquire` fails only on a closed semaphore, and nothing closes this one.
    let _permit = decoders.acquire().await.expect("the decoders' semaphore is never closed");
    tokio::task::spawn_blocking(move || span.in_scope(|| decode_request_parts(&body, header_len)))
        .await
        .unwrap_or_else(|e| Err(GatewayError::Inference(format!("decoding the request failed: {e}"))))
}

/// The JSON header's length of a request with binary tensors, from `Inference-Header-Content-Length`; `None`
/// when the header is absent (a plain JSON request).
fn header_length(headers: &axum::http::HeaderMap) -> Result<Option<usize>, GatewayError> {
    let Some(v) = headers.get(HEADER_LENGTH_NAME) else { return Ok(None) };
    v.to_str().ok().and_then(|s| s.trim().parse::<usize>().ok()).map(Some).ok_or_else(|| {
        GatewayError::invalid(format!(
            "Inference-Header-Content-Length must be the JSON header's length in bytes, got '{}'",
            String::from_utf8_lossy(v.as_bytes())
        ))
    })
}

/// Reads a request body within the body limit and the body-read timeout: 413 past the limit, 408 when the client
/// is too slow (its fault, so it must not count as a server error).
async fn read_body(core: &Core, body: axum::body::Body) -> Result<axum::body::Bytes, GatewayError> {
    let limit = core.max_body_bytes;
    let read = async move {
        axum::body::to_bytes(body, limit).await.map_err(|e| {
            if is_length_limit(&e) {
                GatewayError::PayloadTooLarge { limit }
            } else {
                GatewayError::invalid(format!("cannot read the request body: {e}"))
            }
        })
    };
    let timeout = core.body_read_timeout;
    admission::bounded(read, || timeout, || Err(GatewayError::BodyTimeout(timeout.as_millis() as u64))).await
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = c.source();
    }
    false
}

fn failed(core: &Core, model: &str, version: &str, start: Instant, e: GatewayError) -> Response {
    let code = http_status(&e).as_u16();
    core.metrics.request_failed(model, version, "http", code);
    core.metrics.observe_failed_duration(model, version, "http", start.elapsed().as_secs_f64());
    ApiError(e).into_response()
}

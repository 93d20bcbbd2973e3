//! Open Inference Protocol over gRPC (package `inference`, service `GRPCInferenceService`), with tonic. Like the
//! HTTP front end it only decodes, calls [`Core`], and encodes: routing, batching, canaries, mirroring, skew
//! statistics and metrics are the core's, and errors map through the one table in `api::error`.
//!
//! Routing hints travel as metadata: the `model_version` field plays the URL's part, and the pin and routing-key
//! headers of the config are read as metadata keys of the same names. Admission is the same as HTTP's: a bounded
//! number of requests in progress (beyond it, RESOURCE_EXHAUSTED at once), and a deadline that is the sooner of the
//! configured request timeout and the client's `grpc-timeout`.

use std::convert::Infallible;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use tonic::codec::{CompressionEncoding, EnabledCompressionEncodings};
use tonic::{Request, Response, Status};
use tower::Service;

use crate::api::admin::AdminToken;
use crate::api::admission::{self, Admission};
use crate::api::consumers::Clients;
use crate::api::dispatch::GrpcApp;
use crate::api::error::{codes, grpc_status};
use crate::api::hints::route_hint;
use crate::api::metadata;
use crate::api::repository::{self, Control};
use crate::api::{model_config, statistics};
use crate::core::Core;
use crate::error::GatewayError;
use crate::metrics::{InFlight, UNKNOWN_MODEL};
use crate::model::{ModelSlot, ModelVersion};
use crate::protocol::grpc as codec;
use crate::protocol::{InferRequest, VERSION_HEADER, pb};
use crate::routing::RouteHint;
use crate::telemetry::{self, REQUEST_TARGET};
use tracing::Instrument;

use pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use tonic::codegen::BoxStream;
use tonic::metadata::{Ascii, MetadataKey};

// Names parsed once: a `&str` name is parsed and checked again on every request.
const GRPC_TIMEOUT: http::HeaderName = http::HeaderName::from_static("grpc-timeout");
static VERSION_KEY: LazyLock<MetadataKey<Ascii>> = LazyLock::new(|| MetadataKey::from_static(VERSION_HEADER));
static REQUEST_ID_KEY: LazyLock<MetadataKey<Ascii>> =
    LazyLock::new(|| MetadataKey::from_static(telemetry::REQUEST_ID_HEADER));

pub struct GrpcApi {
    core: Arc<Core>,
    admission: Admission,
    /// The operator's token, for the repository extension's load and unload.
    token: AdminToken,
    clients: Arc<Clients>,
}

/// The gRPC service, with the shared admission limits (the message size limit is `server.max_body_bytes`).
/// Compressed messages (tritonclient's `compression_algorithm`, gzip or deflate) are accepted, and answers are
/// compressed the same way when the client asks for it.
///
/// `ModelInfer` calls go straight to the handler; every other call goes through tonic's router
/// ([`crate::api::dispatch`] says why).
pub fn service(
    core: Arc<Core>,
    admission: &Admission,
    token: AdminToken,
    clients: Arc<Clients>,
) -> impl Service<
    http::Request<tonic::body::Body>,
    Response = http::Response<tonic::body::Body>,
    Error = Infallible,
    Future: Send + 'static,
> + Clone
+ Send
+ 'static {
    // One configuration for both paths (the generated server's and the dispatched `ModelInfer`): message limits
    // (decoding bounded by `server.max_body_bytes`, encoding not) and the encodings accepted and sent.
    let (max_decoding, max_encoding) = (admission.max_body_bytes, usize::MAX);
    let mut encodings = EnabledCompressionEncodings::default();
    let api = Arc::new(GrpcApi { core, admission: admission.clone(), token, clients });
    let mut server = GrpcInferenceServiceServer::from_arc(api.clone())
        .max_decoding_message_size(max_decoding)
        .max_encoding_message_size(max_encoding);
    for e in [CompressionEncoding::Gzip, CompressionEncoding::Deflate] {
        server = server.accept_compressed(e).send_compressed(e);
        encodings.enable(e);
    }
    let routes = tonic::service::Routes::new(server);
    // What the generated server does for ModelInfer, with the same limits and encodings, minus its boxes.
    let infer = move |req: http::Request<tonic::body::Body>| {
        let api = api.clone();
        async move {
            let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::default())
                .apply_compression_config(encodings, encodings)
                .apply_max_message_size_config(Some(max_decoding), Some(max_encoding));
            grpc.unary(Unary(|r| api.model_infer(r)), req).await
        }
    };
    GrpcApp::new(routes, infer)
}

/// A unary handler as tonic's `UnaryService`, keeping the handler's future type rather than a box of it.
struct Unary<H>(H);

impl<H, F> tonic::server::UnaryService<pb::ModelInferRequest> for Unary<H>
where
    H: FnMut(Request<pb::ModelInferRequest>) -> F,
    F: Future<Output = Result<Response<pb::ModelInferResponse>, Status>>,
{
    type Response = pb::ModelInferResponse;
    type Future = F;

    fn call(&mut self, request: Request<pb::ModelInferRequest>) -> F {
        (self.0)(request)
    }
}

/// The answer to a call this gateway does not implement, naming it.
fn unimplemented<T>(call: &str) -> Result<Response<T>, Status> {
    Err(Status::unimplemented(format!("{call} is not implemented by this gateway")))
}

/// tonic answers a request message it cannot decode (garbage protobuf, a truncated frame) with INTERNAL, as if the
/// server had failed; it is the client's message that is wrong, so such answers become INVALID_ARGUMENT. Applied
/// as a layer around the whole gRPC server (`tower::util::MapResponseLayer`), because tonic decodes before any
/// handler of ours runs.
///
/// An answer's status sits in its headers only when the call failed before any message (a trailers-only answer), so
/// a successful answer costs one lookup of a parsed name here.
pub fn decode_errors_are_invalid_argument<B>(mut r: http::Response<B>) -> http::Response<B> {
    const STATUS: http::HeaderName = http::HeaderName::from_static("grpc-status");
    const MESSAGE: http::HeaderName = http::HeaderName::from_static("grpc-message");
    let h = r.headers_mut();
    if h.get(&STATUS).is_none_or(|v| v != "13") {
        return r;
    }
    let message = h.get(&MESSAGE).and_then(|m| m.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    if ["decode", "unexpected eof", "protobuf", "frame"].iter().any(|w| message.contains(w)) {
        h.insert(STATUS, http::HeaderValue::from_static("3"));
    }
    r
}

/// Parses `grpc-timeout` (at most 8 digits and a unit: H, M, S, m, u, n); a malformed one is refused by name
/// rather than ignored, since the client meant to bound its call.
fn client_deadline(meta: &http::HeaderMap) -> Result<Option<Duration>, GatewayError> {
    let Some(v) = meta.get(GRPC_TIMEOUT) else { return Ok(None) };
    let bad = || GatewayError::invalid(format!("metadata 'grpc-timeout' = {v:?} is not a timeout like 250m or 5S"));
    let v = v.to_str().map_err(|_| bad())?;
    let (n, unit) = v.split_at(v.len().checked_sub(1).ok_or_else(bad)?);
    if n.is_empty() || n.len() > 8 || !n.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = n.parse().map_err(|_| bad())?;
    Ok(Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return Err(bad()),
    }))
}

/// Whether outputs go back raw: as the inputs came, unless the request says otherwise with the bool parameter
/// `binary_data_output` or the outputs with `binary_data` (Triton's names).
fn raw_outputs(req: &pb::ModelInferRequest, inputs_raw: bool) -> bool {
    let flag = |p: &std::collections::HashMap<String, pb::InferParameter>, key: &str| match p.get(key)?.parameter_choice
    {
        Some(pb::infer_parameter::ParameterChoice::BoolParam(b)) => Some(b),
        _ => None,
    };
    flag(&req.parameters, "binary_data_output")
        .or_else(|| req.outputs.iter().find_map(|o| flag(&o.parameters, "binary_data")))
        .unwrap_or(inputs_raw)
}

impl GrpcApi {
    /// A ready version: the one named, or the one routing would choose.
    fn version(&self, model: &str, version: &str) -> Result<(Arc<ModelSlot>, Arc<ModelVersion>), GatewayError> {
        let slot = self.core.model(model)?;
        let v = if version.is_empty() { slot.resolve(RouteHint::default())? } else { slot.version(version)? };
        Ok((slot, v))
    }

    fn failed(&self, model: &str, version: &str, start: Instant, e: GatewayError) -> Status {
        let code = codes(&e).0.as_u16();
        self.core.metrics.request_failed(model, version, "grpc", code);
        self.core.metrics.observe_failed_duration(model, version, "grpc", start.elapsed().as_secs_f64());
        grpc_status(&e)
    }
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcApi {
    async fn server_live(&self, _: Request<pb::ServerLiveRequest>) -> Result<Response<pb::ServerLiveResponse>, Status> {
        Ok(Response::new(pb::ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<pb::ServerReadyRequest>,
    ) -> Result<Response<pb::ServerReadyResponse>, Status> {
        Ok(Response::new(pb::ServerReadyResponse { ready: self.core.ready() }))
    }

    async fn model_ready(
        &self,
        req: Request<pb::ModelReadyRequest>,
    ) -> Result<Response<pb::ModelReadyResponse>, Status> {
        let r = req.into_inner();
        match self.version(&r.name, &r.version) {
            Ok((_, v)) => Ok(Response::new(pb::ModelReadyResponse { ready: v.availability().is_ok() })),
            // Known but not ready is an answer, not an error.
            Err(GatewayError::NotReady { .. }) => Ok(Response::new(pb::ModelReadyResponse { ready: false })),
            Err(e) => Err(grpc_status(&e)),
        }
    }

    async fn server_metadata(
        &self,
        _: Request<pb::ServerMetadataRequest>,
    ) -> Result<Response<pb::ServerMetadataResponse>, Status> {
        Ok(Response::new(metadata::server().into()))
    }

    async fn model_metadata(
        &self,
        req: Request<pb::ModelMetadataRequest>,
    ) -> Result<Response<pb::ModelMetadataResponse>, Status> {
        let r = req.into_inner();
        let (slot, v) = self.version(&r.name, &r.version).map_err(|e| grpc_status(&e))?;
        Ok(Response::new(metadata::model(&self.core, &slot, &v).into()))
    }

    async fn model_stream_infer(
        &self,
        _: Request<tonic::Streaming<pb::ModelInferRequest>>,
    ) -> Result<Response<BoxStream<pb::ModelStreamInferResponse>>, Status> {
        unimplemented("ModelStreamInfer (streaming inference)")
    }

    async fn model_config(
        &self,
        req: Request<pb::ModelConfigRequest>,
    ) -> Result<Response<pb::ModelConfigResponse>, Status> {
        let r = req.into_inner();
        let (_, v) = self.version(&r.name, &r.version).map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::ModelConfigResponse { config: Some(model_config::config(&self.core, &v)) }))
    }

    async fn model_statistics(
        &self,
        req: Request<pb::ModelStatisticsRequest>,
    ) -> Result<Response<pb::ModelStatisticsResponse>, Status> {
        let r = req.into_inner();
        let model = (!r.name.is_empty()).then_some(r.name.as_str());
        let version = (!r.version.is_empty()).then_some(r.version.as_str());
        let versions = statistics::versions(&self.core, model, version).map_err(|e| grpc_status(&e))?;
        Ok(Response::new(statistics::to_pb(&versions)))
    }

    async fn repository_index(
        &self,
        req: Request<pb::RepositoryIndexRequest>,
    ) -> Result<Response<pb::RepositoryIndexResponse>, Status> {
        let r = req.into_inner();
        Ok(Response::new(repository::to_pb(repository::index(&self.core, r.ready))))
    }

    async fn repository_model_load(
        &self,
        req: Request<pb::RepositoryModelLoadRequest>,
    ) -> Result<Response<pb::RepositoryModelLoadResponse>, Status> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let r = req.into_inner();
        repository::control(&self.core, &self.token, auth.as_deref(), &r.model_name, Control::Load)
            .await
            .map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        req: Request<pb::RepositoryModelUnloadRequest>,
    ) -> Result<Response<pb::RepositoryModelUnloadResponse>, Status> {
        let auth = req.metadata().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let r = req.into_inner();
        repository::control(&self.core, &self.token, auth.as_deref(), &r.model_name, Control::Unload)
            .await
            .map_err(|e| grpc_status(&e))?;
        Ok(Response::new(pb::RepositoryModelUnloadResponse {}))
    }

    async fn system_shared_memory_status(
        &self,
        _: Request<pb::SystemSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryStatusResponse>, Status> {
        unimplemented("SystemSharedMemoryStatus (shared memory)")
    }

    async fn system_shared_memory_register(
        &self,
        _: Request<pb::SystemSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryRegisterResponse>, Status> {
        unimplemented("SystemSharedMemoryRegister (shared memory)")
    }

    async fn system_shared_memory_unregister(
        &self,
        _: Request<pb::SystemSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::SystemSharedMemoryUnregisterResponse>, Status> {
        unimplemented("SystemSharedMemoryUnregister (shared memory)")
    }

    async fn cuda_shared_memory_status(
        &self,
        _: Request<pb::CudaSharedMemoryStatusRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryStatusResponse>, Status> {
        unimplemented("CudaSharedMemoryStatus (CUDA shared memory)")
    }

    async fn cuda_shared_memory_register(
        &self,
        _: Request<pb::CudaSharedMemoryRegisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryRegisterResponse>, Status> {
        unimplemented("CudaSharedMemoryRegister (CUDA shared memory)")
    }

    async fn cuda_shared_memory_unregister(
        &self,
        _: Request<pb::CudaSharedMemoryUnregisterRequest>,
    ) -> Result<Response<pb::CudaSharedMemoryUnregisterResponse>, Status> {
        unimplemented("CudaSharedMemoryUnregister (CUDA shared memory)")
    }

    async fn trace_setting(
        &self,
        _: Request<pb::TraceSettingRequest>,
    ) -> Result<Response<pb::TraceSettingResponse>, Status> {
        unimplemented("TraceSetting (trace settings; tracing is configured in [tracing])")
    }

    async fn log_settings(
        &self,
        _: Request<pb::LogSettingsRequest>,
    ) -> Result<Response<pb::LogSettingsResponse>, Status> {
        unimplemented("LogSettings (log settings; logging is configured in [logging])")
    }

    async fn model_infer(
        &self,
        req: Request<pb::ModelInferRequest>,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let (meta, _, r) = req.into_parts();
        let headers = meta.into_headers();
        let span = tracing::debug_span!(
            target: REQUEST_TARGET,
            "request",
            otel.kind = "server",
            protocol = "grpc",
            model = %r.model_name,
            version = tracing::field::Empty,
            request_id = tracing::field::Empty,
            trace_id = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        let request_id = telemetry::request_id(&headers, &span);
        telemetry::adopt(&span, &headers);
        // Boxed: tracing's wrapper moves this future, and the call's own box (`Dispatch`) copies it; with the
        // request's state inline both would copy all of it (callgrind, when the generated server still boxed the
        // call: 2,032 -> 1,967 L1 data misses per request).
        let result = Box::pin(self.infer_in_span(headers, r)).instrument(span.clone()).await;
        span.record("status", result.as_ref().map_or_else(|s| s.code() as i32, |_| 0));
        // Never indexed, like the HTTP header (telemetry::request_id_header says why).
        let id = request_id.and_then(|id| tonic::metadata::MetadataValue::try_from(id).ok()).map(|mut v| {
            v.set_sensitive(true);
            v
        });
        match result {
            Ok(mut resp) => {
                if let Some(id) = id {
                    resp.metadata_mut().insert(&*REQUEST_ID_KEY, id);
                }
                Ok(resp)
            }
            Err(mut status) => {
                if let Some(id) = id {
                    status.metadata_mut().insert(&*REQUEST_ID_KEY, id);
                }
                Err(status)
            }
        }
    }
}

impl GrpcApi {
    async fn infer_in_span(
        &self,
        meta: http::HeaderMap,
        mut r: pb::ModelInferRequest,
    ) -> Result<Response<pb::ModelInferResponse>, Status> {
        let start = Instant::now();
        let _in_flight = InFlight::new(&self.core.metrics.in_flight);
        let consumer = if self.clients.is_on() {
            match self.clients.identify(&meta, &self.core.metrics, "grpc") {
                Ok(c) => Some(c),
                Err(e) => return Err(self.failed(UNKNOWN_MODEL, "", start, e)),
            }
        } else {
            None
        };
        let slot = match self.core.model(&r.model_name) {
            Ok(s) => s,
            Err(e) => return Err(self.failed(UNKNOWN_MODEL, "", start, e)),
        };
        let _permit = match self.admission.admit() {
            Ok(p) => p,
            Err(e) => return Err(self.failed(&slot.name, "", start, e)),
        };
        let raw_out = {
            let (inputs, raw) = (std::mem::take(&mut r.inputs), std::mem::take(&mut r.raw_input_contents));
            let decoded = {
                let _decode = tracing::debug_span!(target: REQUEST_TARGET, "decode").entered();
                codec::decode_inputs(inputs, raw)
            };
            match decoded {
                Ok((inputs, raw_in)) => {
                    let outputs = (!r.outputs.is_empty()).then(|| r.outputs.iter().map(|o| o.name.clone()).collect());
                    let raw_out = raw_outputs(&r, raw_in);
                    let id = (!r.id.is_empty()).then(|| std::mem::take(&mut r.id));
                    (InferRequest { id, inputs, outputs }, raw_out)
                }
                Err(e) => return Err(self.failed(&slot.name, "", start, e)),
            }
        };
        let (infer, raw_out) = raw_out;
        let url_version = (!r.model_version.is_empty()).then_some(r.model_version.as_str());
        let (hint, client) = match (route_hint(&meta, &self.core.routing, url_version), client_deadline(&meta)) {
            (Ok(h), Ok(d)) => (h, d),
            (Err(e), _) | (_, Err(e)) => return Err(self.failed(&slot.name, "", start, e)),
        };
        let timeout = self.admission.timeout;
        let deadline = client.map_or(timeout, |d| d.min(timeout));
        match admission::within(deadline, start, self.core.infer(&slot, hint, infer)).await {
            Ok(resp) => {
                let _encode = tracing::debug_span!(target: REQUEST_TARGET, "encode").entered();
                let v = &resp.version;
                // Half floats have no typed contents field: an answer holding one goes back raw.
                let raw_out = raw_out || resp.outputs.iter().any(|t| t.datatype() == crate::tensor::DataType::F16);
                let mut out = pb::ModelInferResponse {
                    model_name: slot.name.to_string(),
                    model_version: v.version.to_string(),
                    id: resp.id.clone().unwrap_or_default(),
                    ..Default::default()
                };
                for t in &resp.outputs {
                    out.outputs.push(pb::model_infer_response::InferOutputTensor {
                        name: t.name.clone(),
                        datatype: t.datatype().as_str().into(),
                        shape: t.shape.clone(),
                        parameters: Default::default(),
                        contents: (!raw_out).then(|| codec::to_contents(&t.data)),
                    });
                    if raw_out {
                        out.raw_output_contents.push(codec::to_raw(&t.data));
                    }
                }
                v.metrics.grpc_ok.inc();
                v.metrics.grpc_duration.observe(start.elapsed().as_secs_f64());
                if let Some(c) = &consumer {
                    self.clients.record(&self.core.metrics, &v.model, &v.version, c);
                }
                let mut response = Response::new(out);
                if let Ok(h) = v.version.parse() {
                    response.metadata_mut().insert(&*VERSION_KEY, h);
                }
                Ok(response)
            }
            Err((v, e)) => {
                let version = v.as_ref().map_or("", |v| &*v.version);
                Err(self.failed(&slot.name, version, start, e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_header_units() {
        let mut m = http::HeaderMap::new();
        for (v, d) in
            [("5S", Duration::from_secs(5)), ("250m", Duration::from_millis(250)), ("1H", Duration::from_secs(3600))]
        {
            m.insert("grpc-timeout", v.parse().expect("ascii"));
            assert_eq!(client_deadline(&m).expect("valid"), Some(d), "{v}");
        }
        for bad in ["5x", "S", "", "-5S", "123456789S", "1.5S"] {
            m.insert("grpc-timeout", bad.parse().expect("ascii"));
            let e = client_deadline(&m).expect_err(bad).to_string();
            assert!(e.contains("grpc-timeout"), "{e}");
        }
        assert_eq!(client_deadline(&http::HeaderMap::new()).expect("absent"), None);
    }
}

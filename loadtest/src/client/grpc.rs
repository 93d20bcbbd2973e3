//! Open Inference Protocol over gRPC with tonic: one HTTP/2 connection per worker. Request messages are encoded
//! once before the run (inputs as little-endian `raw_input_contents`, as tritonclient sends them) and sent as
//! bytes through a pass-through codec, so the generator spends nothing per request on encoding.

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::{Outcome, Request, Target};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// Sends pre-encoded request bytes; decodes the response.
#[derive(Debug, Clone, Copy, Default)]
struct Passthrough;

struct BytesEncoder;
struct ResponseDecoder;

impl Encoder for BytesEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = pb::ModelInferResponse;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<pb::ModelInferResponse>, tonic::Status> {
        let bytes = src.copy_to_bytes(src.remaining());
        pb::ModelInferResponse::decode(bytes).map(Some).map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

impl Codec for Passthrough {
    type Encode = Bytes;
    type Decode = pb::ModelInferResponse;
    type Encoder = BytesEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> BytesEncoder {
        BytesEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

pub struct GrpcConn {
    grpc: tonic::client::Grpc<Channel>,
}

pub async fn channel(target: &Target) -> Result<Channel, &'static str> {
    let scheme = if target.tls.is_some() { "https" } else { "http" };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", target.addr)).map_err(|_| "address")?;
    if let Some(tls) = &target.tls {
        endpoint = endpoint.tls_config(tls.tonic.clone()).map_err(|_| "tls config")?;
    }
    endpoint.tcp_nodelay(true).connect().await.map_err(|_| "connect")
}

impl GrpcConn {
    pub async fn connect(target: &Target) -> Result<Self, &'static str> {
        Ok(Self { grpc: tonic::client::Grpc::new(channel(target).await?) })
    }

    pub fn is_closed(&self) -> bool {
        false
    }

    pub async fn infer(&mut self, target: &Target, req: Request) -> Outcome {
        if self.grpc.ready().await.is_err() {
            return Outcome::Failed("connection closed");
        }
        let mut request = tonic::Request::new(req.body);
        if let Some((name, value)) = &target.pin
            && let (Ok(k), Ok(v)) = (name.parse::<tonic::metadata::MetadataKey<_>>(), value.parse())
        {
            request.metadata_mut().insert(k, v);
        }
        if let (Some((name, _)), Some(key)) = (&target.routing_key, req.routing_key)
            && let (Ok(k), Ok(v)) = (name.parse::<tonic::metadata::MetadataKey<_>>(), format!("key-{key}").parse())
        {
            request.metadata_mut().insert(k, v);
        }
        let path = http::uri::PathAndQuery::from_static(INFER);
        match self.grpc.unary(request, path, Passthrough).await {
            Ok(resp) => Outcome::Ok { version: Some(resp.into_inner().model_version) },
            // gRPC codes go in the status slot (14 is UNAVAILABLE, 8 RESOURCE_EXHAUSTED, ...).
            Err(s) if s.code() == tonic::Code::Unknown && s.message().contains("transport") => Outcome::Failed("io"),
            Err(s) => Outcome::Status(s.code() as u16),
        }
    }
}

/// Model metadata over gRPC, shaped like the HTTP endpoint's JSON (for the workload builder).
pub async fn metadata(target: &Target) -> anyhow::Result<serde_json::Value> {
    let ch = channel(target).await.map_err(anyhow::Error::msg)?;
    let mut c = pb::grpc_inference_service_client::GrpcInferenceServiceClient::new(ch);
    let m = c
        .model_metadata(pb::ModelMetadataRequest {
            name: target.model.clone(),
            version: target.version.clone().unwrap_or_default(),
        })
        .await?
        .into_inner();
    let inputs: Vec<serde_json::Value> = m
        .inputs
        .iter()
        .map(|i| serde_json::json!({"name": i.name, "datatype": i.datatype, "shape": i.shape}))
        .collect();
    Ok(serde_json::json!({ "name": m.name, "inputs": inputs }))
}

/// Re-encodes a JSON request body as a `ModelInferRequest` with raw little-endian inputs.
pub fn encode(json: &[u8], target: &Target) -> anyhow::Result<Bytes> {
    let v: serde_json::Value = serde_json::from_slice(json)?;
    let mut req = pb::ModelInferRequest {
        model_name: target.model.clone(),
        model_version: target.version.clone().unwrap_or_default(),
        ..Default::default()
    };
    for t in v["inputs"].as_array().map(Vec::as_slice).unwrap_or_default() {
        let datatype = t["datatype"].as_str().unwrap_or_default().to_string();
        let shape: Vec<i64> =
            t["shape"].as_array().map(|s| s.iter().filter_map(|d| d.as_i64()).collect()).unwrap_or_default();
        let data = t["data"].as_array().map(Vec::as_slice).unwrap_or_default();
        let raw = super::raw_data(&datatype, data)?;
        req.inputs.push(pb::model_infer_request::InferInputTensor {
            name: t["name"].as_str().unwrap_or_default().to_string(),
            datatype,
            shape,
            parameters: Default::default(),
            contents: None,
        });
        req.raw_input_contents.push(raw);
    }
    Ok(Bytes::from(req.encode_to_vec()))
}

//! Open Inference Protocol over gRPC: one HTTP/2 connection per worker, driven with the `h2` crate directly.
//! Request messages are encoded and framed once before the run (inputs as little-endian `raw_input_contents`, as
//! tritonclient sends them), so a request is its headers and one DATA frame of ready bytes, sent from the worker's
//! own task: no codec, no channel to a connection task and no task per request body (tonic's `Channel`, and
//! hyper's client under it, have both, which cost the generator about a quarter of its throughput against h2load
//! on the same server). The answer is checked the gRPC way: `grpc-status` in the trailers (or a trailers-only
//! answer's headers), and the message decoded for the version that answered.

use bytes::{Buf, Bytes, BytesMut};
use h2::client::SendRequest;
use http::header::{CONTENT_TYPE, HeaderValue, TE};
use prost::Message;
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::{Outcome, Request, Target};

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

const INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

pub struct GrpcConn {
    sender: SendRequest<Bytes>,
    uri: http::Uri,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The HTTP/2 handshake on `io`; the connection runs in its own task and sets `closed` when it ends.
async fn start<S>(
    io: S,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Result<SendRequest<Bytes>, &'static str>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = h2::client::handshake(io).await.map_err(|_| "handshake")?;
    tokio::spawn(async move {
        let _ = conn.await;
        closed.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Ok(sender)
}

/// A tonic channel, for the one metadata call before the run.
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
        let stream = TcpStream::connect(target.addr).await.map_err(|_| "connect")?;
        let _ = stream.set_nodelay(true);
        let closed = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sender = match &target.tls {
            None => start(stream, closed.clone()).await?,
            Some(tls) => start(tls.connect(stream).await.map_err(|_| "tls handshake")?, closed.clone()).await?,
        };
        let scheme = if target.tls.is_some() { "https" } else { "http" };
        let uri = format!("{scheme}://{}{INFER}", target.authority).parse().map_err(|_| "address")?;
        Ok(Self { sender, uri, closed })
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub async fn infer(&mut self, target: &Target, req: Request) -> Outcome {
        let mut b = http::Request::post(self.uri.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/grpc"))
            .header(TE, HeaderValue::from_static("trailers"));
        if let Some((name, value)) = &target.pin {
            b = b.header(name.as_str(), value.as_str());
        }
        if let (Some((name, _)), Some(key)) = (&target.routing_key, req.routing_key) {
            b = b.header(name.as_str(), format!("key-{key}"));
        }
        let Ok(request) = b.body(()) else {
            return Outcome::Failed("bad request");
        };
        if std::future::poll_fn(|cx| self.sender.poll_ready(cx)).await.is_err() {
            return Outcome::Failed("connection closed");
        }
        let Ok((answer, mut stream)) = self.sender.send_request(request, false) else {
            return Outcome::Failed("io");
        };
        if stream.send_data(req.body, true).is_err() {
            return Outcome::Failed("io");
        }
        let Ok(answer) = answer.await else {
            return Outcome::Failed("io");
        };
        let (parts, mut body) = answer.into_parts();
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let Ok(chunk) = chunk else { return Outcome::Failed("io") };
            let _ = body.flow_control().release_capacity(chunk.len());
            data.extend_from_slice(&chunk);
        }
        let Ok(trailers) = body.trailers().await else {
            return Outcome::Failed("io");
        };
        let status = trailers
            .as_ref()
            .and_then(|t| t.get("grpc-status"))
            .or_else(|| parts.headers.get("grpc-status"))
            .and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
        match status {
            // gRPC codes go in the status slot (14 is UNAVAILABLE, 8 RESOURCE_EXHAUSTED, ...).
            Some(0) => {}
            Some(code) => return Outcome::Status(code),
            None => return Outcome::Failed("no grpc-status"),
        }
        // One uncompressed message: a flag byte, a 4-byte length, the message.
        if data.len() < 5 || data[0] != 0 {
            return Outcome::Failed("bad answer frame");
        }
        data.advance(5);
        match pb::ModelInferResponse::decode(data.freeze()) {
            Ok(m) => Outcome::Ok { version: Some(m.model_version) },
            Err(_) => Outcome::Failed("bad answer message"),
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

/// Re-encodes a JSON request body as a `ModelInferRequest` with raw little-endian inputs, framed as one gRPC
/// message (uncompressed flag, 4-byte big-endian length, the message).
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
    let message = req.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(message.len())?.to_be_bytes());
    framed.extend_from_slice(&message);
    Ok(Bytes::from(framed))
}

//! Open Inference Protocol over HTTP/1.1 with hyper: one keep-alive connection per worker, no pool in between,
//! so the connection count is exactly what was asked for.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::{Outcome, Request, Target};

/// The binary tensor extension's header: where the JSON part of a body ends.
const HEADER_LENGTH: &str = "inference-header-content-length";

/// Re-encodes a JSON request body with the binary tensor data extension, as tritonclient sends at its defaults:
/// the JSON header (each input with `parameters.binary_data_size`, every output asked for binary), then the raw
/// little-endian tensors in input order. Returns the body and the header's length.
pub fn encode_binary(json: &[u8]) -> anyhow::Result<(Bytes, usize)> {
    let mut v: serde_json::Value = serde_json::from_slice(json)?;
    let mut tail = Vec::new();
    for t in v["inputs"].as_array_mut().map(Vec::as_mut_slice).unwrap_or_default() {
        let datatype = t["datatype"].as_str().unwrap_or_default().to_string();
        let data = t.as_object_mut().and_then(|o| o.remove("data")).unwrap_or_default();
        let raw = super::raw_data(&datatype, data.as_array().map(Vec::as_slice).unwrap_or_default())?;
        t["parameters"] = serde_json::json!({ "binary_data_size": raw.len() });
        tail.extend_from_slice(&raw);
    }
    v["parameters"] = serde_json::json!({ "binary_data_output": true });
    let mut body = serde_json::to_vec(&v)?;
    let header = body.len();
    body.extend_from_slice(&tail);
    Ok((Bytes::from(body), header))
}

pub struct HttpConn {
    sender: SendRequest<Full<Bytes>>,
    path: String,
}

impl HttpConn {
    pub async fn connect(target: &Target) -> Result<Self, &'static str> {
        let stream = TcpStream::connect(target.addr).await.map_err(|_| "connect")?;
        let _ = stream.set_nodelay(true);
        Ok(Self { sender: handshake(target, stream).await.map_err(|_| "handshake")?, path: target.infer_path() })
    }

    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    pub async fn infer(&mut self, target: &Target, req: Request) -> Outcome {
        if self.sender.ready().await.is_err() {
            return Outcome::Failed("connection closed");
        }
        let mut b = http::Request::post(self.path.as_str()).header(HOST, target.authority.as_str());
        b = match req.header_len {
            Some(n) => b.header(CONTENT_TYPE, "application/octet-stream").header(HEADER_LENGTH, n),
            None => b.header(CONTENT_TYPE, "application/json"),
        };
        if let Some((name, value)) = &target.pin {
            b = b.header(name.as_str(), value.as_str());
        }
        if let (Some((name, _)), Some(key)) = (&target.routing_key, req.routing_key) {
            b = b.header(name.as_str(), format!("key-{key}"));
        }
        let Ok(request) = b.body(Full::new(req.body)) else {
            return Outcome::Failed("bad request");
        };
        let resp = match self.sender.send_request(request).await {
            Ok(r) => r,
            Err(_) => return Outcome::Failed("io"),
        };
        let status = resp.status().as_u16();
        let version = resp.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
        // Read the whole body: the response is not complete, and the connection not reusable, until it is.
        if resp.into_body().collect().await.is_err() {
            return Outcome::Failed("io");
        }
        if status == 200 { Outcome::Ok { version } } else { Outcome::Status(status) }
    }
}

/// The HTTP/1.1 handshake, after the TLS one when the target has TLS; the connection runs in its own task.
async fn handshake(target: &Target, stream: TcpStream) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    Ok(match &target.tls {
        None => {
            let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            sender
        }
        Some(tls) => {
            let (sender, conn) = http1::handshake(TokioIo::new(tls.connect(stream).await?)).await?;
            tokio::spawn(conn);
            sender
        }
    })
}

/// One GET returning JSON, for model metadata before the run.
pub async fn get_json(target: &Target, path: &str) -> anyhow::Result<serde_json::Value> {
    Ok(serde_json::from_str(&get_text(target, path).await?)?)
}

/// One GET returning the body as text.
pub async fn get_text(target: &Target, path: &str) -> anyhow::Result<String> {
    let mut sender = handshake(target, TcpStream::connect(target.addr).await?).await?;
    let req = http::Request::get(path).header(HOST, target.authority.as_str()).body(Full::new(Bytes::new()))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        anyhow::bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

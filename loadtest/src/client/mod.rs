//! Connections to the target. Each worker owns one connection; each protocol is one module (`http`, `grpc`) and
//! one variant of [`Conn`].

pub mod grpc;
pub mod http;
pub mod tls;

use std::net::SocketAddr;

use bytes::Bytes;

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// 200, with the version that answered if the server said.
    Ok { version: Option<String> },
    /// The server answered with another status.
    Status(u16),
    /// No answer: the kind of failure (connect, timeout, io, ...).
    Failed(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// JSON over HTTP/1.1 (`http://` URLs).
    Http,
    /// Protobuf over HTTP/2 (`grpc://` URLs).
    Grpc,
}

/// Where and what to send.
#[derive(Debug, Clone)]
pub struct Target {
    pub protocol: Protocol,
    pub addr: SocketAddr,
    pub authority: String,
    pub model: String,
    pub version: Option<String>,
    /// Version pin header, sent on every request.
    pub pin: Option<(String, String)>,
    /// Routing-key header name and the number of distinct keys to draw from.
    pub routing_key: Option<(String, u64)>,
    /// TLS (`https://`, `grpcs://` URLs); `None` is plain text.
    pub tls: Option<tls::Tls>,
}

impl Target {
    pub fn infer_path(&self) -> String {
        match &self.version {
            Some(v) => format!("/v2/models/{}/versions/{v}/infer", self.model),
            None => format!("/v2/models/{}/infer", self.model),
        }
    }
}

/// Per-request variation: the body (JSON for HTTP, an encoded `ModelInferRequest` for gRPC) and, when
/// configured, a routing key.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Bytes,
    pub routing_key: Option<u64>,
    /// For a binary tensor request (HTTP): the length of the JSON header before the raw tensors.
    pub header_len: Option<usize>,
}

/// The raw little-endian bytes of a JSON tensor's `data`, as gRPC raw contents and the HTTP binary tensor
/// extension carry them.
pub fn raw_data(datatype: &str, data: &[serde_json::Value]) -> anyhow::Result<Vec<u8>> {
    use bytes::BufMut;
    let mut raw = Vec::new();
    for x in data {
        let f = x.as_f64().or_else(|| x.as_bool().map(|b| f64::from(u8::from(b)))).unwrap_or_default();
        match datatype {
            "FP32" => raw.put_f32_le(f as f32),
            "FP64" => raw.put_f64_le(f),
            "INT64" => raw.put_i64_le(f as i64),
            "INT32" => raw.put_i32_le(f as i32),
            "INT16" => raw.put_i16_le(f as i16),
            "INT8" => raw.put_i8(f as i8),
            "UINT64" => raw.put_u64_le(f as u64),
            "UINT32" => raw.put_u32_le(f as u32),
            "UINT16" => raw.put_u16_le(f as u16),
            "UINT8" | "BOOL" => raw.put_u8(f as u8),
            other => anyhow::bail!("datatype {other} cannot be sent raw"),
        }
    }
    Ok(raw)
}

pub enum Conn {
    Http(http::HttpConn),
    Grpc(grpc::GrpcConn),
}

impl Conn {
    pub async fn connect(target: &Target) -> Result<Self, &'static str> {
        match target.protocol {
            Protocol::Http => http::HttpConn::connect(target).await.map(Conn::Http),
            Protocol::Grpc => grpc::GrpcConn::connect(target).await.map(Conn::Grpc),
        }
    }

    pub async fn infer(&mut self, target: &Target, req: Request) -> Outcome {
        match self {
            Conn::Http(c) => c.infer(target, req).await,
            Conn::Grpc(c) => c.infer(target, req).await,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Conn::Http(c) => c.is_closed(),
            Conn::Grpc(c) => c.is_closed(),
        }
    }
}

//! Connections to the target. Each worker owns one connection; each protocol is one module (`http`, `grpc`) and
//! one variant of [`Conn`].

pub mod grpc;
pub mod http;

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

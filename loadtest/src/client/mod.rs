//! Connections to the target. Each worker owns one connection; each protocol is one module and one variant of
//! [`Conn`], so adding gRPC means adding `grpc.rs` and a variant, nothing else.

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

/// Where and what to send.
#[derive(Debug, Clone)]
pub struct Target {
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

/// Per-request variation: the body and, when configured, a routing key.
#[derive(Debug, Clone)]
pub struct Request {
    pub body: Bytes,
    pub routing_key: Option<u64>,
}

pub enum Conn {
    Http(http::HttpConn),
}

impl Conn {
    pub async fn connect(target: &Target) -> Result<Self, &'static str> {
        http::HttpConn::connect(target).await.map(Conn::Http)
    }

    pub async fn infer(&mut self, target: &Target, req: Request) -> Outcome {
        match self {
            Conn::Http(c) => c.infer(target, req).await,
        }
    }

    pub fn is_closed(&self) -> bool {
        match self {
            Conn::Http(c) => c.is_closed(),
        }
    }
}

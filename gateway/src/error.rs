//! The domain error type. Every failure a request can meet is one variant here; `api::error` maps each variant to
//! an HTTP status (and later a gRPC code) in one table, so front ends never invent their own mapping.

use thiserror::Error;

/// Errors that reach a client. Messages name the field and what was expected, because the client has to fix it.
#[derive(Debug, Clone, Error)]
pub enum GatewayError {
    /// The request body or a tensor in it is malformed or does not match the model's signature.
    #[error("{0}")]
    InvalidInput(String),
    /// The model is not in the repository.
    #[error("unknown model '{0}'")]
    ModelNotFound(String),
    /// The model exists but the version does not.
    #[error("unknown version '{version}' of model '{model}'")]
    VersionNotFound { model: String, version: String },
    /// The version exists but cannot serve right now (loading, or failed its load / golden-example gate).
    #[error("version '{version}' of model '{model}' is not ready: {reason}")]
    NotReady { model: String, version: String, reason: String },
    /// The request conflicts with the model's current state (promote without a canary, unload the stable, ...).
    #[error("{0}")]
    Conflict(String),
    /// A version failed to load or failed its golden examples.
    #[error("version failed to load: {0}")]
    LoadFailed(String),
    /// Missing or wrong credentials for the admin API.
    #[error("{0}")]
    Unauthorized(String),
    /// The body exceeds the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The inference queue or the admission limit is full; the client should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The request did not finish within the configured time.
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The server is draining for shutdown.
    #[error("server is shutting down")]
    ShuttingDown,
    /// A remote version's upstream failed: unreachable, a 5xx, or an answer that cannot be read.
    #[error("{0}")]
    Upstream(String),
    /// ONNX Runtime failed on input that passed validation: a server-side fault, logged with its chain.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Anything else that is the server's fault.
    #[error("internal error: {0}")]
    Internal(String),
}

impl GatewayError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

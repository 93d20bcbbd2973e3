//! The domain error type. Every failure a request can meet is one variant here; `api::error` maps each variant to
//! an HTTP status and a gRPC code in one table, so front ends never invent their own mapping. Whose fault an
//! error is (the client's, the server's, or load being shed) is a property of the error itself, decided here, so
//! the request path can count outcomes without knowing any protocol.

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
    /// Something else the request names does not exist (a feedback id, say); the message says what.
    #[error("{0}")]
    NotFound(String),
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
    /// A call only operators may make, made without the operator's credentials.
    #[error("{0}")]
    Forbidden(String),
    /// The body exceeds the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// The inference queue or the admission limit is full; the client should retry later.
    #[error("{0}")]
    Overloaded(String),
    /// The request did not finish within the configured time.
    #[error("request timed out after {0} ms")]
    Timeout(u64),
    /// The client did not send the request body within the configured time: the client's fault.
    #[error("the request body did not arrive within {0} ms")]
    BodyTimeout(u64),
    /// A store the change needs (the state file, the cluster store) cannot take it; nothing was changed.
    #[error("{0}")]
    StoreUnavailable(String),
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

/// Whose fault an error is, for success rates and alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request was wrong, or asked for something that does not exist or is not allowed.
    Client,
    /// The server failed to answer a valid request (including a version not ready, an upstream down, a timeout).
    Server,
    /// Admission control or a full queue refused the request before any work; neither side failed.
    Shed,
}

impl GatewayError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidInput(msg.into())
    }

    /// Whose fault this error is. `api::error`'s status table agrees: every `Server` error is a 5xx, every
    /// `Client` error a 4xx (a test there checks each variant).
    pub fn fault(&self) -> Fault {
        match self {
            Self::Overloaded(_) | Self::ShuttingDown => Fault::Shed,
            Self::InvalidInput(_)
            | Self::ModelNotFound(_)
            | Self::NotFound(_)
            | Self::BodyTimeout(_)
            | Self::VersionNotFound { .. }
            | Self::Conflict(_)
            | Self::LoadFailed(_)
            | Self::Unauthorized(_)
            | Self::Forbidden(_)
            | Self::PayloadTooLarge { .. } => Fault::Client,
            Self::NotReady { .. }
            | Self::Timeout(_)
            | Self::StoreUnavailable(_)
            | Self::Upstream(_)
            | Self::Inference(_)
            | Self::Internal(_) => Fault::Server,
        }
    }

    /// Whether the server failed a request it should have answered.
    pub fn is_server_fault(&self) -> bool {
        self.fault() == Fault::Server
    }

    /// One example of every variant, for tests that must cover them all.
    #[cfg(test)]
    pub fn examples() -> Vec<Self> {
        let s = || "x".to_string();
        vec![
            Self::InvalidInput(s()),
            Self::ModelNotFound(s()),
            Self::NotFound(s()),
            Self::BodyTimeout(1),
            Self::StoreUnavailable(s()),
            Self::VersionNotFound { model: s(), version: s() },
            Self::NotReady { model: s(), version: s(), reason: s() },
            Self::Conflict(s()),
            Self::LoadFailed(s()),
            Self::Unauthorized(s()),
            Self::PayloadTooLarge { limit: 1 },
            Self::Overloaded(s()),
            Self::Timeout(1),
            Self::ShuttingDown,
            Self::Upstream(s()),
            Self::Inference(s()),
            Self::Internal(s()),
        ]
    }
}

pub type Result<T, E = GatewayError> = std::result::Result<T, E>;

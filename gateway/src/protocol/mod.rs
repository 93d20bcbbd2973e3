//! The Open Inference Protocol (KServe v2) on the wire, shared by whoever speaks it: the HTTP and gRPC front
//! ends decode requests and encode answers with it, and the remote backend uses the same codecs the other way
//! round to call an upstream server.
//!
//! - [`json`]: the REST messages (inference request and response, metadata) and their typed tensor codec.
//! - [`grpc`]: tensors to and from the gRPC messages (typed `contents` and little-endian raw buffers).
//! - [`pb`]: the gRPC messages and service, generated at build time from `proto/grpc_service.proto`.

pub mod grpc;
pub mod json;

use crate::tensor::Tensor;

#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("inference");
}

/// Response header (HTTP) and metadata key (gRPC) naming the version that answered.
pub const VERSION_HEADER: &str = "x-model-version";

/// Longest request `id` accepted, in bytes. The id is echoed, logged and remembered for feedback, so it is bounded
/// like every other per-request record the gateway keeps.
pub const MAX_ID_BYTES: usize = 256;

/// A decoded inference request, independent of the wire format.
#[derive(Debug, Default, PartialEq)]
pub struct InferRequest {
    pub id: Option<String>,
    pub inputs: Vec<Tensor>,
    /// Output names the client asked for; `None` means all.
    pub outputs: Option<Vec<String>>,
}

//! Front ends: the Open Inference Protocol over HTTP and gRPC, the admin API, the metrics endpoint, and the one
//! table that maps domain errors to protocol statuses.

pub mod admin;
pub mod admission;
pub mod error;
pub mod grpc;
pub mod http;
pub mod metadata;
pub mod metrics;

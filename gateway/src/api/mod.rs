//! Front ends: the Open Inference Protocol over HTTP and gRPC, the admin API, the metrics endpoint, the one
//! table that maps domain errors to protocol statuses, admission control shared by both protocols, and the
//! connection limits and shutdown phases of every HTTP listener.

pub mod admin;
pub mod admission;
pub mod compress;
pub mod consumers;
pub mod dispatch;
pub mod error;
pub mod grpc;
pub mod head_timer;
pub mod hints;
pub mod http;
pub mod metadata;
pub mod metrics;
pub mod model_config;
pub mod repository;
pub mod secrets;
pub mod serve;
pub mod statistics;

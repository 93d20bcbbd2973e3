//! Admission control for the inference routes, built once and shared by both front ends: one bound on requests in
//! progress across HTTP and gRPC (so a flood on one protocol cannot push the other past the limit), one body or
//! message limit, one request deadline. HTTP applies it as tower layers (load shed, concurrency limit, timeout);
//! gRPC takes a permit in the handler, where it also knows the model to count a refusal against.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::GatewayError;

#[derive(Debug, Clone)]
pub struct Admission {
    /// Largest request body (HTTP) or message (gRPC), in bytes.
    pub max_body_bytes: usize,
    /// Deadline for a whole request, queue wait included; gRPC clients may ask for less with `grpc-timeout`.
    pub timeout: Duration,
    /// One permit per request in progress, on either protocol.
    pub permits: Arc<Semaphore>,
}

impl Admission {
    pub fn new(max_body_bytes: usize, max_concurrent: usize, timeout: Duration) -> Self {
        Self { max_body_bytes, timeout, permits: Arc::new(Semaphore::new(max_concurrent)) }
    }

    /// A permit for one request, or at once the overload error (a fast refusal beats a queue no one sees).
    pub fn admit(&self) -> Result<SemaphorePermit<'_>, GatewayError> {
        self.permits.try_acquire().map_err(|_| overloaded())
    }
}

/// The error for a request refused by the concurrency limit.
pub fn overloaded() -> GatewayError {
    GatewayError::Overloaded("too many requests in progress; retry later".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_are_shared_and_refused_past_the_limit() {
        let a = Admission::new(1, 2, Duration::from_secs(1));
        let b = a.clone();
        let _p1 = a.admit().expect("first");
        let _p2 = b.admit().expect("second, through the clone");
        assert!(matches!(a.admit(), Err(GatewayError::Overloaded(_))));
    }
}

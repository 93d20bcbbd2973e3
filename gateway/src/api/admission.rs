//! Admission control for the inference routes, built once and shared by both front ends: one bound on requests in
//! progress across HTTP and gRPC (so a flood on one protocol cannot push the other past the limit), one body or
//! message limit, one request deadline. Both handlers take a permit once they know the model (to count a refusal
//! against it) and bound the inference with [`within`].

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

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

/// Runs a request's inference within what is left of `deadline` since the request's `start`; past it, the timeout
/// error naming the deadline.
pub async fn within<T, V>(
    deadline: Duration,
    start: Instant,
    inference: impl Future<Output = Result<T, (Option<V>, GatewayError)>>,
) -> Result<T, (Option<V>, GatewayError)> {
    match tokio::time::timeout(deadline.saturating_sub(start.elapsed()), inference).await {
        Ok(r) => r,
        Err(_) => Err((None, GatewayError::Timeout(deadline.as_millis() as u64))),
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

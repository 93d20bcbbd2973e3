//! Admission control for the inference routes, built once and shared by both front ends: one bound on requests in
//! progress across HTTP and gRPC (so a flood on one protocol cannot push the other past the limit), one body or
//! message limit, one request deadline. Both handlers take a permit once they know the model (to count a refusal
//! against it) and bound the inference with [`within`].

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
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
    match bounded(inference, || deadline.saturating_sub(start.elapsed())).await {
        Some(r) => r,
        None => Err((None, GatewayError::Timeout(deadline.as_millis() as u64))),
    }
}

/// Runs `work` and gives up (`None`) once it has waited `limit()`, measured from when it first has to wait. A timer
/// is armed only then: most requests' work (a body that arrived with the headers, a call run inline) is done at its
/// first poll, and a tokio timer costs each of them a runtime handle lookup, a clock read, and a timer entry to
/// drop. Work that finishes at once is never thrown away, however long its first poll took: a deadline is there
/// so that nothing waits forever, and that poll did not wait.
pub async fn bounded<F: Future>(work: F, limit: impl FnOnce() -> Duration) -> Option<F::Output> {
    let mut work = std::pin::pin!(work);
    if let Poll::Ready(out) = std::future::poll_fn(|cx| Poll::Ready(work.as_mut().poll(cx))).await {
        return Some(out);
    }
    tokio::time::timeout(limit(), work).await.ok()
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

    #[tokio::test(start_paused = true)]
    async fn bounded_work_is_timed_only_once_it_waits() {
        // Done at the first poll: kept, even with no time left.
        assert_eq!(bounded(async { 7 }, || Duration::ZERO).await, Some(7));
        // Waits past the limit: given up on.
        let slow = tokio::time::sleep(Duration::from_secs(5));
        assert_eq!(bounded(slow, || Duration::from_secs(1)).await, None);
        // Waits, but less than the limit: its output.
        let quick = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            8
        };
        assert_eq!(bounded(quick, || Duration::from_secs(1)).await, Some(8));
    }

    #[tokio::test(start_paused = true)]
    async fn within_names_the_deadline_once_it_has_passed() {
        let start = Instant::now();
        let never = std::future::pending::<Result<(), (Option<()>, GatewayError)>>();
        let e = within(Duration::from_millis(250), start, never).await.expect_err("past the deadline");
        assert!(matches!(e.1, GatewayError::Timeout(250)), "{:?}", e.1);
    }
}

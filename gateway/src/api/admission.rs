//! Admission control for the inference routes, built once and shared by both front ends: one bound on requests in
//! progress across HTTP and gRPC (so a flood on one protocol cannot push the other past the limit), one body or
//! message limit, one request deadline. Both handlers take a permit once they know the model (to count a refusal
//! against it) and bound the inference with [`within`]; [`bounded`] also bounds the HTTP body read.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
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
pub fn within<T, V, F>(
    deadline: Duration,
    start: Instant,
    inference: F,
) -> Bounded<F, impl FnOnce() -> Duration, impl FnOnce() -> F::Output>
where
    F: Future<Output = Result<T, (Option<V>, GatewayError)>>,
{
    bounded(
        inference,
        move || deadline.saturating_sub(start.elapsed()),
        move || Err((None, GatewayError::Timeout(deadline.as_millis() as u64))),
    )
}

/// Runs `work`, and once it has waited `limit()` (counted from when it first has to wait) gives up with `elapsed()`.
/// A timer is armed only then: most requests' work (a body that arrived with the headers, a call run inline) is
/// done at its first poll, and a tokio timer would cost each of them a runtime handle lookup, a clock read and a
/// timer entry. The deadline comes first at every poll: work found done after it passed is an answer past the
/// limit, so it is the timeout, not a late success. That holds at the first poll too (`limit()` is then read once,
/// one clock read): a call handed to the inference pool finishes within that poll when the thread is preempted
/// between handing it over and looking for the answer, which on a loaded machine takes a whole scheduler tick.
pub fn bounded<F, L, E>(work: F, limit: L, elapsed: E) -> Bounded<F, L, E>
where
    F: Future,
    L: FnOnce() -> Duration,
    E: FnOnce() -> F::Output,
{
    Bounded { work, limit: Some(limit), elapsed: Some(elapsed), timer: None }
}

pin_project_lite::pin_project! {
    /// The future of [`bounded`]: a struct rather than an `async fn`, whose state would hold the work twice (the
    /// argument and the pinned local) inside every request's future, copied whenever that future moves.
    pub struct Bounded<F, L, E> {
        #[pin]
        work: F,
        limit: Option<L>,
        elapsed: Option<E>,
        // Boxed: allocated only for work that waits, and it keeps the common case's future small.
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<F, L, E> Future for Bounded<F, L, E>
where
    F: Future,
    L: FnOnce() -> Duration,
    E: FnOnce() -> F::Output,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let mut this = self.project();
        let waited = this.timer.is_some();
        if !waited {
            let ready = this.work.as_mut().poll(cx);
            let limit = this.limit.take().map_or(Duration::ZERO, |l| l());
            match ready {
                // Past due at the first poll, done or not: the timeout below, with no timer.
                _ if limit.is_zero() => {}
                Poll::Ready(out) => return Poll::Ready(out),
                Poll::Pending => *this.timer = Some(Box::pin(tokio::time::sleep(limit))),
            }
        }
        // The deadline first. By the clock too, not only the timer: the runtime fires timers when it turns its
        // driver, and a busy runtime can poll a task woken by another thread (an inference thread's answer) before
        // it does, its timer past due but not fired.
        let in_time = this
            .timer
            .as_mut()
            .is_some_and(|t| t.as_mut().poll(cx).is_pending() && t.deadline() > tokio::time::Instant::now());
        if !in_time {
            let elapsed = this.elapsed.take().expect("Bounded polled after it completed");
            return Poll::Ready(elapsed());
        }
        if waited { this.work.poll(cx) } else { Poll::Pending }
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

    #[tokio::test(start_paused = true)]
    async fn bounded_work_is_timed_only_once_it_waits() {
        let gave_up = || -1;
        // Done at the first poll, within the limit: its output.
        assert_eq!(bounded(async { 7 }, || Duration::from_millis(1), gave_up).await, 7);
        // Done at the first poll, but past the deadline by then (a preempted poll): the timeout.
        assert_eq!(bounded(async { 7 }, || Duration::ZERO, gave_up).await, -1);
        // Waits past the limit: given up on.
        let slow = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            9
        };
        assert_eq!(bounded(slow, || Duration::from_secs(1), gave_up).await, -1);
        // Waits, but less than the limit: its output.
        let quick = async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            8
        };
        assert_eq!(bounded(quick, || Duration::from_secs(1), gave_up).await, 8);
    }

    /// Work pending at its first poll and done (5) at the next.
    fn pending_once() -> impl Future<Output = i32> {
        let mut polls = 0;
        std::future::poll_fn(move |_| {
            polls += 1;
            if polls == 1 { Poll::Pending } else { Poll::Ready(5) }
        })
    }

    #[tokio::test(start_paused = true)]
    async fn work_found_done_after_the_deadline_is_the_timeout() {
        // Work that is pending at its first poll and done at the next, which comes only after the deadline (a late
        // wake-up on a busy machine): an answer past the limit is the timeout.
        let work = pending_once();
        let mut b = std::pin::pin!(bounded(work, || Duration::from_secs(1), || -1));
        let waker = std::task::Waker::noop();
        assert!(b.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(b.as_mut().poll(&mut Context::from_waker(waker)), Poll::Ready(-1));
        // Before the deadline the same work is its output.
        let work = pending_once();
        let mut b = std::pin::pin!(bounded(work, || Duration::from_secs(1), || -1));
        assert!(b.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(b.as_mut().poll(&mut Context::from_waker(waker)), Poll::Ready(5));
    }

    #[tokio::test]
    async fn a_deadline_past_due_is_the_timeout_before_the_runtime_fires_its_timer() {
        // The runtime fires timers when it turns its driver; this task never yields, so the driver does not turn
        // between its two polls, as on a busy runtime that polls a task another thread woke before it turns it.
        let work = pending_once();
        let mut b = std::pin::pin!(bounded(work, || Duration::from_millis(1), || -1));
        let waker = std::task::Waker::noop();
        assert!(b.as_mut().poll(&mut Context::from_waker(waker)).is_pending());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(b.as_mut().poll(&mut Context::from_waker(waker)), Poll::Ready(-1), "a late success");
    }

    #[tokio::test(start_paused = true)]
    async fn within_names_the_deadline_once_it_has_passed() {
        let start = Instant::now();
        let never = std::future::pending::<Result<(), (Option<()>, GatewayError)>>();
        let e = within(Duration::from_millis(250), start, never).await.expect_err("past the deadline");
        assert!(matches!(e.1, GatewayError::Timeout(250)), "{:?}", e.1);
    }
}

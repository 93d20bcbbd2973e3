//! hyper's timer for the header-read timeout of one HTTP/1 connection, with one tokio timer entry for the
//! connection's whole life instead of one per request.
//!
//! hyper asks its timer for a new sleep each time it starts waiting for a request head, and drops it when the head
//! arrives. With `hyper_util`'s `TokioTimer` every request therefore created a timer entry, registered it in the
//! timer wheel and removed it again (a lock on the wheel both times): about 3 % of a small request's cost. Here the
//! connection's one entry stays registered at the deadline of an earlier wait, and moves to the current wait's
//! deadline only when it fires: on a busy connection once per timeout period, not once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

type Entry = Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>;

/// One per connection (hyper's builder is per connection): the sleeps it hands out share its entry.
#[derive(Clone, Default)]
pub struct HeadTimer {
    entry: Entry,
}

impl Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(HeadSleep { deadline, entry: self.entry.clone() })
    }
}

/// One wait for a request head: ready at `deadline`.
struct HeadSleep {
    deadline: Instant,
    entry: Entry,
}

impl Sleep for HeadSleep {}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let deadline = tokio::time::Instant::from_std(self.deadline);
        let mut entry = self.entry.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = entry.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        // Deadlines only grow from one wait to the next; an entry set later than this one (a clock step) moves back.
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Fired at this wait's deadline: the head is late.
                Poll::Ready(()) if sleep.deadline() >= deadline => return Poll::Ready(()),
                // Fired at an earlier wait's deadline: this wait still has time.
                Poll::Ready(()) => sleep.as_mut().reset(deadline),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::timeout;

    fn at(d: Duration) -> Instant {
        // The paused test clock's now, as hyper would compute a deadline.
        tokio::time::Instant::now().into_std() + d
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_at_its_deadline_and_not_before() {
        let timer = HeadTimer::default();
        let mut s = timer.sleep_until(at(Duration::from_secs(10)));
        assert!(timeout(Duration::from_millis(9_990), &mut s).await.is_err(), "ready before its deadline");
        assert!(timeout(Duration::from_millis(20), &mut s).await.is_ok(), "not ready at its deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_wait_reuses_the_entry_and_keeps_its_own_deadline() {
        let timer = HeadTimer::default();
        // A head that arrived after 1 s: its wait is dropped with the entry still registered for 10 s.
        let mut first = timer.sleep_until(at(Duration::from_secs(10)));
        assert!(timeout(Duration::from_secs(1), &mut first).await.is_err());
        drop(first);
        // The next wait starts at 1 s: the entry fires at 10 s, which must not end this wait.
        let mut second = timer.sleep_until(at(Duration::from_secs(10)));
        assert!(timeout(Duration::from_millis(9_990), &mut second).await.is_err(), "ended at the earlier deadline");
        assert!(timeout(Duration::from_millis(20), &mut second).await.is_ok(), "not ready at its own deadline");
        // And an entry that fired and was moved still serves the wait after.
        let mut third = timer.sleep_until(at(Duration::from_secs(5)));
        assert!(timeout(Duration::from_millis(4_990), &mut third).await.is_err());
        assert!(timeout(Duration::from_millis(20), &mut third).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_than_the_entrys_is_kept() {
        let timer = HeadTimer::default();
        let mut first = timer.sleep_until(at(Duration::from_secs(60)));
        assert!(timeout(Duration::from_millis(1), &mut first).await.is_err());
        drop(first);
        let mut second = timer.sleep_until(at(Duration::from_secs(5)));
        assert!(timeout(Duration::from_millis(5_020), &mut second).await.is_ok(), "waited for the entry's 60 s");
    }
}

//! Per-version serving statistics in the shape of Triton's statistics extension: request outcomes with their
//! cumulative time, the time requests waited for an inference thread, the three compute phases (preparing inputs,
//! running the model, reading outputs), and per executed batch size the same phases. Requests count with relaxed
//! atomic adds; a call's batch-size entry is updated under a lock on the inference thread, off the async path.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// How long the phases of one model call took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Phases {
    /// Turning the request's tensors into the runtime's (ONNX values, or the upstream request).
    pub input: Duration,
    pub infer: Duration,
    /// Turning the runtime's outputs back into tensors.
    pub output: Duration,
}

impl Phases {
    pub fn total(&self) -> Duration {
        self.input + self.infer + self.output
    }
}

/// A count and the time it accumulated.
#[derive(Debug, Default)]
struct Tally {
    count: AtomicU64,
    ns: AtomicU64,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Tally {
    fn add(&self, d: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        self.ns.fetch_add(nanos(d), Ordering::Relaxed);
    }

    fn read(&self) -> Duration2 {
        Duration2 { count: self.count.load(Ordering::Relaxed), ns: self.ns.load(Ordering::Relaxed) }
    }
}

/// Triton's `StatisticDuration`: how many, and their total time in nanoseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Duration2 {
    pub count: u64,
    pub ns: u64,
}

impl Duration2 {
    fn add(&mut self, d: Duration) {
        self.count += 1;
        self.ns = self.ns.saturating_add(nanos(d));
    }
}

#[derive(Debug, Default)]
pub struct ServingStats {
    success: Tally,
    fail: Tally,
    queue: Tally,
    compute_input: Tally,
    compute_infer: Tally,
    compute_output: Tally,
    /// Rows answered (Triton's inference count: a request of 8 rows is 8 inferences).
    inferences: AtomicU64,
    /// Model calls (a batched call of several requests is one).
    executions: AtomicU64,
    /// Milliseconds since the epoch of the last answered request.
    last_ms: AtomicU64,
    /// Per executed batch size: the three compute phases. Bounded by the largest batch a call can carry.
    batches: Mutex<BTreeMap<u64, [Duration2; 3]>>,
}

/// One version's statistics, as the protocol reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub last_inference: u64,
    pub inference_count: u64,
    pub execution_count: u64,
    pub success: Duration2,
    pub fail: Duration2,
    pub queue: Duration2,
    pub compute_input: Duration2,
    pub compute_infer: Duration2,
    pub compute_output: Duration2,
    /// (batch size, [input, infer, output]) in increasing batch size.
    pub batches: Vec<(u64, [Duration2; 3])>,
}

impl ServingStats {
    /// A request answered: `rows` inferences, `took` end to end.
    pub fn succeeded(&self, rows: usize, took: Duration) {
        self.success.add(took);
        self.inferences.fetch_add(rows as u64, Ordering::Relaxed);
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        self.last_ms.store(u64::try_from(now.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub fn failed(&self, took: Duration) {
        self.fail.add(took);
    }

    /// One request's share of a call: how long it waited for a thread, and the call's phases.
    pub fn request_phases(&self, queue: Duration, phases: Phases) {
        self.queue.add(queue);
        self.compute_input.add(phases.input);
        self.compute_infer.add(phases.infer);
        self.compute_output.add(phases.output);
    }

    /// One model call of `batch` rows.
    pub fn executed(&self, batch: usize, phases: Phases) {
        self.executions.fetch_add(1, Ordering::Relaxed);
        let mut map = self.batches.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map.entry(batch as u64).or_default();
        entry[0].add(phases.input);
        entry[1].add(phases.infer);
        entry[2].add(phases.output);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let batches = self.batches.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(k, v)| (*k, *v)).collect();
        StatsSnapshot {
            last_inference: self.last_ms.load(Ordering::Relaxed),
            inference_count: self.inferences.load(Ordering::Relaxed),
            execution_count: self.executions.load(Ordering::Relaxed),
            success: self.success.read(),
            fail: self.fail.read(),
            queue: self.queue.read(),
            compute_input: self.compute_input.read(),
            compute_infer: self.compute_infer.read(),
            compute_output: self.compute_output.read(),
            batches,
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Counts and totals add up exactly whatever the mix of calls, and batch sizes are listed in order.
        #[test]
        fn totals_add_up(calls in proptest::collection::vec((1usize..9, 0u64..1_000_000, any::<bool>()), 0..50)) {
            let s = ServingStats::default();
            let phase = |ns: u64| Phases {
                input: Duration::from_nanos(ns),
                infer: Duration::from_nanos(2 * ns),
                output: Duration::from_nanos(3 * ns),
            };
            for &(rows, ns, ok) in &calls {
                if ok {
                    s.request_phases(Duration::from_nanos(ns), phase(ns));
                    s.executed(rows, phase(ns));
                    s.succeeded(rows, Duration::from_nanos(7 * ns));
                } else {
                    s.failed(Duration::from_nanos(ns));
                }
            }
            let snap = s.snapshot();
            let ok: Vec<_> = calls.iter().filter(|c| c.2).collect();
            prop_assert_eq!(snap.success.count, ok.len() as u64);
            prop_assert_eq!(snap.success.ns, ok.iter().map(|c| 7 * c.1).sum::<u64>());
            prop_assert_eq!(snap.fail.count, (calls.len() - ok.len()) as u64);
            prop_assert_eq!(snap.inference_count, ok.iter().map(|c| c.0 as u64).sum::<u64>());
            prop_assert_eq!(snap.execution_count, ok.len() as u64);
            prop_assert_eq!(snap.compute_infer.ns, 2 * ok.iter().map(|c| c.1).sum::<u64>());
            prop_assert_eq!(snap.batches.iter().map(|b| b.1[1].count).sum::<u64>(), ok.len() as u64);
            prop_assert!(snap.batches.windows(2).all(|w| w[0].0 < w[1].0));
        }
    }
}

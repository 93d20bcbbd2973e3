//! Per-version request outcomes and latency, kept for canary analysis: cumulative atomic counters that the request
//! path bumps (relaxed adds, no lock) and the controller snapshots once per interval. A window is the difference of
//! two snapshots, so nothing on the request path knows about windows or intervals.
//!
//! Latency goes into log-linear buckets (four per power of two, so a bucket spans at most 19 %), from which a
//! quantile is interpolated. That is coarser than an HDR histogram but needs no lock and no allocation, and 19 % is
//! far finer than the ratios a latency check uses.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Sub-buckets per power of two.
const SUB: u32 = 4;
/// Durations below 2^MIN_EXP ns (about 1 µs) share the first bucket; from 2^MAX_EXP ns (about 69 s) the last.
const MIN_EXP: u32 = 10;
const MAX_EXP: u32 = 36;
/// Bucket 0 below 2^MIN_EXP, then SUB per power of two, then one for everything from 2^MAX_EXP.
pub const BUCKETS: usize = ((MAX_EXP - MIN_EXP) * SUB) as usize + 2;

/// The bucket of a duration in nanoseconds.
fn bucket(ns: u64) -> usize {
    if ns < 1 << MIN_EXP {
        return 0;
    }
    let exp = 63 - ns.leading_zeros();
    if exp >= MAX_EXP {
        return BUCKETS - 1;
    }
    // The two bits after the leading one pick the sub-bucket.
    let sub = (ns >> (exp - 2)) & u64::from(SUB - 1);
    1 + ((exp - MIN_EXP) * SUB) as usize + sub as usize
}

/// Lower and upper bound of a bucket, in nanoseconds.
fn bounds(i: usize) -> (f64, f64) {
    if i == 0 {
        return (0.0, (1u64 << MIN_EXP) as f64);
    }
    let j = i as u32 - 1;
    let exp = MIN_EXP + j / SUB;
    let sub = f64::from(j % SUB);
    let base = (1u64 << exp) as f64;
    let step = base / f64::from(SUB);
    (base + sub * step, base + (sub + 1.0) * step)
}

/// Outcome classes the analysis distinguishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The client's fault (4xx): bad input is not the version's failure.
    ClientError,
    /// The server's fault (5xx), including requests abandoned before the version answered (timeouts).
    ServerError,
    /// Refused by admission control (queue full, draining): the whole gateway was busy, not this version at fault,
    /// so it counts toward neither side of the success rate.
    Shed,
}

pub struct VersionStats {
    ok: AtomicU64,
    client_errors: AtomicU64,
    server_errors: AtomicU64,
    shed: AtomicU64,
    /// Input rows of requests that passed validation; the denominator of the invalid-value rate.
    rows: AtomicU64,
    latency: Box<[AtomicU64]>,
}

impl std::fmt::Debug for VersionStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VersionStats")
            .field("ok", &self.ok)
            .field("client_errors", &self.client_errors)
            .field("server_errors", &self.server_errors)
            .finish_non_exhaustive()
    }
}

impl Default for VersionStats {
    fn default() -> Self {
        Self {
            ok: AtomicU64::new(0),
            client_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            shed: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            latency: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl VersionStats {
    /// Records one answered request. Latency is recorded for every outcome: a slow failure is still slow.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        let counter = match outcome {
            Outcome::Ok => &self.ok,
            Outcome::ClientError => &self.client_errors,
            Outcome::ServerError => &self.server_errors,
            Outcome::Shed => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.latency[bucket(ns)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn add_rows(&self, rows: usize) {
        self.rows.fetch_add(rows as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            ok: self.ok.load(Ordering::Relaxed),
            client_errors: self.client_errors.load(Ordering::Relaxed),
            server_errors: self.server_errors.load(Ordering::Relaxed),
            shed: self.shed.load(Ordering::Relaxed),
            rows: self.rows.load(Ordering::Relaxed),
            latency: self.latency.iter().map(|b| b.load(Ordering::Relaxed)).collect(),
        }
    }
}

/// Cumulative counts at one moment; `later.since(&earlier)` gives what happened in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    pub ok: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub shed: u64,
    pub rows: u64,
    #[serde(skip)]
    pub latency: Vec<u64>,
}

impl Default for StatsSnapshot {
    fn default() -> Self {
        Self { ok: 0, client_errors: 0, server_errors: 0, shed: 0, rows: 0, latency: vec![0; BUCKETS] }
    }
}

impl StatsSnapshot {
    /// What was recorded after `earlier`. Saturating, so a version reloaded in between (counters restarted) reads
    /// as zero rather than wrapping.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            ok: self.ok.saturating_sub(earlier.ok),
            client_errors: self.client_errors.saturating_sub(earlier.client_errors),
            server_errors: self.server_errors.saturating_sub(earlier.server_errors),
            shed: self.shed.saturating_sub(earlier.shed),
            rows: self.rows.saturating_sub(earlier.rows),
            latency: self.latency.iter().zip(&earlier.latency).map(|(a, b)| a.saturating_sub(*b)).collect(),
        }
    }

    /// Adds another snapshot's counts (another replica's).
    pub fn add(&mut self, o: &Self) {
        self.ok += o.ok;
        self.client_errors += o.client_errors;
        self.server_errors += o.server_errors;
        self.shed += o.shed;
        self.rows += o.rows;
        if self.latency.len() < o.latency.len() {
            self.latency.resize(o.latency.len(), 0);
        }
        for (a, b) in self.latency.iter_mut().zip(&o.latency) {
            *a += b;
        }
    }

    /// Requests the version handled (shed ones excluded).
    pub fn requests(&self) -> u64 {
        self.ok + self.client_errors + self.server_errors
    }

    /// Share of requests that did not fail on the server side; `None` without requests.
    pub fn success_rate(&self) -> Option<f64> {
        let n = self.requests();
        (n > 0).then(|| 1.0 - self.server_errors as f64 / n as f64)
    }

    /// The `q` quantile of latency in seconds, interpolated within its bucket; `None` without requests.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: u64 = self.latency.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q.clamp(0.0, 1.0) * total as f64).max(1.0);
        let mut seen = 0.0;
        for (i, &n) in self.latency.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let next = seen + n as f64;
            if next >= rank {
                let (lo, hi) = bounds(i);
                let within = (rank - seen) / n as f64;
                return Some((lo + (hi - lo) * within) / 1e9);
            }
            seen = next;
        }
        Some(bounds(BUCKETS - 1).1 / 1e9)
    }
}

/// Running totals for one (model, live version, shadow version) pair. Cumulative, so a caller that wants an
/// interval diffs two snapshots.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct PairStats {
    pub pairs: u64,
    pub label_compared: u64,
    pub label_disagreed: u64,
    pub values_compared: u64,
    pub sum_abs_diff: f64,
    pub max_abs_diff: f64,
    pub sum_rel_diff: f64,
}

impl PairStats {
    pub fn disagreement_rate(&self) -> Option<f64> {
        (self.label_compared > 0).then(|| self.label_disagreed as f64 / self.label_compared as f64)
    }

    pub fn mean_abs_diff(&self) -> Option<f64> {
        (self.values_compared > 0).then(|| self.sum_abs_diff / self.values_compared as f64)
    }

    pub fn mean_rel_diff(&self) -> Option<f64> {
        (self.values_compared > 0).then(|| self.sum_rel_diff / self.values_compared as f64)
    }

    /// Adds another replica's pairs.
    pub fn add(&mut self, o: &Self) {
        self.pairs += o.pairs;
        self.label_compared += o.label_compared;
        self.label_disagreed += o.label_disagreed;
        self.values_compared += o.values_compared;
        self.sum_abs_diff += o.sum_abs_diff;
        self.max_abs_diff = self.max_abs_diff.max(o.max_abs_diff);
        self.sum_rel_diff += o.sum_rel_diff;
    }

    /// What was added after `earlier` (the maximum cannot be diffed: it stays the running one).
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            pairs: self.pairs.saturating_sub(earlier.pairs),
            label_compared: self.label_compared.saturating_sub(earlier.label_compared),
            label_disagreed: self.label_disagreed.saturating_sub(earlier.label_disagreed),
            values_compared: self.values_compared.saturating_sub(earlier.values_compared),
            sum_abs_diff: (self.sum_abs_diff - earlier.sum_abs_diff).max(0.0),
            max_abs_diff: self.max_abs_diff,
            sum_rel_diff: (self.sum_rel_diff - earlier.sum_rel_diff).max(0.0),
        }
    }
}

/// Delayed labels joined with the answers they label, per version. Cumulative, like the other stats here.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize, PartialEq)]
pub struct Quality {
    pub feedback: u64,
    /// Labels compared and labels right (classifiers).
    pub labels: u64,
    pub correct: u64,
    /// Values compared and the sum of absolute errors (regressors).
    pub values: u64,
    pub sum_abs_error: f64,
}

impl Quality {
    pub fn accuracy(&self) -> Option<f64> {
        (self.labels > 0).then(|| self.correct as f64 / self.labels as f64)
    }

    pub fn mean_abs_error(&self) -> Option<f64> {
        (self.values > 0).then(|| self.sum_abs_error / self.values as f64)
    }

    /// Adds another replica's joined labels.
    pub fn add(&mut self, o: &Self) {
        self.feedback += o.feedback;
        self.labels += o.labels;
        self.correct += o.correct;
        self.values += o.values;
        self.sum_abs_error += o.sum_abs_error;
    }

    /// What was joined after `earlier`.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            feedback: self.feedback.saturating_sub(earlier.feedback),
            labels: self.labels.saturating_sub(earlier.labels),
            correct: self.correct.saturating_sub(earlier.correct),
            values: self.values.saturating_sub(earlier.values),
            sum_abs_error: (self.sum_abs_error - earlier.sum_abs_error).max(0.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        for i in 1..BUCKETS {
            assert_eq!(bounds(i - 1).1, bounds(i).0, "bucket {i}");
        }
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(u64::MAX), BUCKETS - 1);
    }

    proptest! {
        #[test]
        fn a_duration_falls_inside_its_bucket(ns in (1u64 << MIN_EXP)..(1u64 << MAX_EXP)) {
            let (lo, hi) = bounds(bucket(ns));
            prop_assert!(lo <= ns as f64 && (ns as f64) < hi, "{ns} not in [{lo}, {hi})");
        }

        #[test]
        fn quantiles_are_within_a_bucket_of_the_exact_value(
            mut samples in proptest::collection::vec(2_000u64..5_000_000_000, 1..400),
            q in 0.5f64..1.0,
        ) {
            let stats = VersionStats::default();
            for &ns in &samples {
                stats.record(Outcome::Ok, Duration::from_nanos(ns));
            }
            samples.sort_unstable();
            let rank = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len());
            let exact = samples[rank - 1] as f64 / 1e9;
            let got = stats.snapshot().quantile(q).expect("samples");
            // One bucket spans at most a quarter of its lower bound.
            prop_assert!(got <= exact * 1.25 + 1e-9 && got >= exact / 1.25 - 1e-9, "q{q}: {got} vs exact {exact}");
        }

        #[test]
        fn a_window_is_the_difference_of_snapshots(before in 0usize..50, after in 0usize..50, failures in 0usize..50) {
            let stats = VersionStats::default();
            for _ in 0..before {
                stats.record(Outcome::Ok, Duration::from_micros(100));
            }
            let start = stats.snapshot();
            for _ in 0..after {
                stats.record(Outcome::Ok, Duration::from_millis(5));
            }
            for _ in 0..failures {
                stats.record(Outcome::ServerError, Duration::from_millis(5));
            }
            let w = stats.snapshot().since(&start);
            prop_assert_eq!(w.requests(), (after + failures) as u64);
            prop_assert_eq!(w.latency.iter().sum::<u64>(), (after + failures) as u64);
            if after + failures > 0 {
                let rate = w.success_rate().expect("requests");
                prop_assert!((rate - after as f64 / (after + failures) as f64).abs() < 1e-12);
                // Only the 5 ms requests are in the window, so the median is near 5 ms, not 100 µs.
                let p50 = w.quantile(0.5).expect("requests");
                prop_assert!((0.004..0.0063).contains(&p50), "{p50}");
            } else {
                prop_assert_eq!(w.success_rate(), None);
            }
        }
    }
}

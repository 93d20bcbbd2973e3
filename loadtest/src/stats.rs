//! Measurements: per-worker HDR histograms (merged at the end, so workers never share a lock on the hot path),
//! outcome counts, and a per-second timeline for the picture.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Outcome;

/// Latencies are recorded in microseconds, up to a minute, at 3 significant digits (0.1 % precision).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("static histogram bounds: {e}"))
}

#[derive(Debug, Clone)]
pub struct WorkerStats {
    /// Latency of every answered request (any status), in µs.
    pub hist: Histogram<u64>,
    /// Latency of requests answered with anything but success (a shed 503 or 429, say), in µs: under overload,
    /// how fast refusals come back is a figure of its own.
    pub refused: Histogram<u64>,
    pub ok: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<&'static str, u64>,
    pub versions: BTreeMap<String, u64>,
    /// Requests scheduled but never sent because the run ended while they waited for a connection.
    pub not_sent: u64,
}

impl Default for WorkerStats {
    fn default() -> Self {
        Self {
            hist: histogram(),
            refused: histogram(),
            ok: 0,
            statuses: BTreeMap::new(),
            errors: BTreeMap::new(),
            versions: BTreeMap::new(),
            not_sent: 0,
        }
    }
}

impl WorkerStats {
    pub fn record(&mut self, latency: Duration, outcome: &Outcome) {
        match outcome {
            Outcome::Ok { version } => {
                self.hist.saturating_record(latency.as_micros() as u64);
                self.ok += 1;
                *self.statuses.entry(200).or_default() += 1;
                if let Some(v) = version {
                    // Versions are few; look up before allocating the key.
                    match self.versions.get_mut(v) {
                        Some(n) => *n += 1,
                        None => {
                            self.versions.insert(v.clone(), 1);
                        }
                    }
                }
            }
            Outcome::Status(s) => {
                self.hist.saturating_record(latency.as_micros() as u64);
                self.refused.saturating_record(latency.as_micros() as u64);
                *self.statuses.entry(*s).or_default() += 1;
            }
            Outcome::Failed(kind) => *self.errors.entry(kind).or_default() += 1,
        }
    }

    pub fn merge(&mut self, o: &WorkerStats) {
        // Both histograms share bounds, so adding cannot fail.
        let _ = self.hist.add(&o.hist);
        let _ = self.refused.add(&o.refused);
        self.ok += o.ok;
        self.not_sent += o.not_sent;
        for (k, v) in &o.statuses {
            *self.statuses.entry(*k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in &o.versions {
            *self.versions.entry(k.clone()).or_default() += v;
        }
    }

    /// Requests that got an answer or failed (scheduled-but-unsent ones excluded).
    pub fn completed(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }

    pub fn failed(&self) -> u64 {
        self.completed() - self.ok
    }
}

/// One second of the run, keyed by when requests were due to be sent.
#[derive(Debug, Clone)]
pub struct Second {
    pub hist: Histogram<u64>,
    pub errors: u64,
}

/// Per-second latency, shared by the workers behind one short lock per second of run time.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    secs: Vec<Mutex<Second>>,
}

impl Timeline {
    pub fn new(start: Instant, duration: Duration) -> Self {
        let n = duration.as_secs() as usize + 2;
        let sec = Second {
            hist: Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|e| panic!("static bounds: {e}")),
            errors: 0,
        };
        Self { start, secs: (0..n).map(|_| Mutex::new(sec.clone())).collect() }
    }

    pub fn record(&self, intended: Instant, latency: Duration, ok: bool) {
        let i = intended.saturating_duration_since(self.start).as_secs() as usize;
        if let Some(m) = self.secs.get(i) {
            let mut s = m.lock().unwrap_or_else(|p| p.into_inner());
            if ok {
                s.hist.saturating_record(latency.as_micros() as u64);
            } else {
                s.errors += 1;
            }
        }
    }

    pub fn into_seconds(self) -> Vec<Second> {
        self.secs.into_iter().map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_latencies() {
        let mut s = WorkerStats::default();
        // 1..=1000 µs, once each: p50 is 500 µs, p99 990 µs, max 1000 µs.
        for us in 1..=1000u64 {
            s.record(Duration::from_micros(us), &Outcome::Ok { version: Some("1".into()) });
        }
        let p = |q: f64| s.hist.value_at_quantile(q);
        assert!((499..=501).contains(&p(0.5)), "{}", p(0.5));
        assert!((989..=991).contains(&p(0.99)), "{}", p(0.99));
        assert_eq!(s.hist.max(), 1000);
        assert_eq!(s.versions["1"], 1000);
    }

    #[test]
    fn merge_adds_counts_and_errors_are_not_latencies() {
        let mut a = WorkerStats::default();
        let mut b = WorkerStats::default();
        a.record(Duration::from_millis(1), &Outcome::Ok { version: Some("1".into()) });
        b.record(Duration::from_millis(2), &Outcome::Ok { version: Some("2".into()) });
        b.record(Duration::from_millis(3), &Outcome::Status(503));
        b.record(Duration::from_millis(4), &Outcome::Failed("io"));
        a.merge(&b);
        assert_eq!((a.ok, a.completed(), a.failed()), (2, 4, 2));
        assert_eq!(a.hist.len(), 3);
        assert_eq!(a.refused.len(), 1, "only the 503");
        assert_eq!(a.statuses[&503], 1);
        assert_eq!(a.errors["io"], 1);
        assert_eq!((a.versions["1"], a.versions["2"]), (1, 1));
    }

    #[test]
    fn timeline_buckets_by_intended_second() {
        let start = Instant::now();
        let t = Timeline::new(start, Duration::from_secs(3));
        t.record(start + Duration::from_millis(100), Duration::from_micros(50), true);
        t.record(start + Duration::from_millis(2500), Duration::from_micros(70), true);
        t.record(start + Duration::from_millis(2600), Duration::from_micros(70), false);
        let s = t.into_seconds();
        assert_eq!((s[0].hist.len(), s[1].hist.len(), s[2].hist.len(), s[2].errors), (1, 0, 1, 1));
    }
}

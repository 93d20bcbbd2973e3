//! Measurements: HDR histograms, outcome counts and a per-second timeline for the picture, kept per generator
//! thread (a [`Recorder`]'s shards, merged at the end), so no two threads write the same memory per request.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use crate::client::Outcome;

/// Latencies are recorded in microseconds, up to a minute, at 3 significant digits (0.1 % precision).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).unwrap_or_else(|e| panic!("static histogram bounds: {e}"))
}

/// The measurements of one generator thread, or merged, of the run.
#[derive(Debug, Clone)]
pub struct Stats {
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

impl Default for Stats {
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

impl Stats {
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

    pub fn merge(&mut self, o: &Stats) {
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

/// Per-second latency of one shard, keyed by when requests were due to be sent.
#[derive(Debug)]
pub struct Timeline {
    start: Instant,
    secs: Vec<Second>,
}

impl Timeline {
    pub fn new(start: Instant, duration: Duration) -> Self {
        let n = duration.as_secs() as usize + 2;
        let sec = Second {
            hist: Histogram::new_with_bounds(1, 60_000_000, 2).unwrap_or_else(|e| panic!("static bounds: {e}")),
            errors: 0,
        };
        Self { start, secs: vec![sec; n] }
    }

    fn start_at(&mut self, start: Instant) {
        self.start = start;
    }

    pub fn record(&mut self, intended: Instant, latency: Duration, ok: bool) {
        let i = intended.saturating_duration_since(self.start).as_secs() as usize;
        if let Some(s) = self.secs.get_mut(i) {
            if ok {
                s.hist.saturating_record(latency.as_micros() as u64);
            } else {
                s.errors += 1;
            }
        }
    }

    fn merge(&mut self, o: &Timeline) {
        for (a, b) in self.secs.iter_mut().zip(&o.secs) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = a.hist.add(&b.hist);
            a.errors += b.errors;
        }
    }

    pub fn into_seconds(self) -> Vec<Second> {
        self.secs
    }
}

/// One thread's share of a run's measurements, on cache lines of its own (two shards side by side would otherwise
/// bounce the line holding both locks between the cores on every request).
#[repr(align(128))]
struct Shard(Mutex<(Stats, Timeline)>);

/// A run's measurements, one shard per generator thread. A request is recorded in its thread's shard, under a lock
/// no other worker thread takes while the run lasts (the progress bar reads each shard a few times a second), so the
/// histograms stay in that core's cache however many connections there are. (They were per connection before: two
/// 140 KB histograms each, 2.8 GB written at 10,000 connections, and every answer touched a cold one; with all
/// threads sharing one lock per second of the timeline besides.)
pub struct Recorder {
    /// Tells this recorder's thread numbers from those a thread kept from an earlier one (a process may run many).
    id: u64,
    /// The next thread's shard.
    next: AtomicUsize,
    shards: Box<[Shard]>,
}

thread_local! {
    /// The recorder this thread last recorded in, and its shard there.
    static SLOT: Cell<(u64, usize)> = const { Cell::new((u64::MAX, 0)) };
}

impl Recorder {
    /// `threads` shards (the runtime's worker threads; more threads than shards share them in turn, still correct).
    /// The timeline counts seconds from now until [`Recorder::starting`] says when the run starts: the memory is
    /// taken before the clock starts, not in its first second.
    pub fn new(duration: Duration, threads: usize) -> Self {
        static IDS: AtomicU64 = AtomicU64::new(0);
        let now = Instant::now();
        let shards = (0..threads.max(1)).map(|_| Shard(Mutex::new((Stats::default(), Timeline::new(now, duration)))));
        Self { id: IDS.fetch_add(1, Ordering::Relaxed), next: AtomicUsize::new(0), shards: shards.collect() }
    }

    /// The same recorder, its timeline's seconds counted from `start`.
    pub fn starting(mut self, start: Instant) -> Self {
        for shard in self.shards.iter_mut() {
            shard.0.get_mut().unwrap_or_else(|p| p.into_inner()).1.start_at(start);
        }
        self
    }

    /// The calling thread's shard: threads take the next one the first time they record here.
    fn slot(&self) -> usize {
        SLOT.with(|c| {
            let (id, slot) = c.get();
            if id == self.id {
                return slot;
            }
            let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            c.set((self.id, slot));
            slot
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut Stats, &mut Timeline) -> R) -> R {
        let shard = &self.shards[self.slot()];
        let mut g = shard.0.lock().unwrap_or_else(|p| p.into_inner());
        let (stats, timeline) = &mut *g;
        f(stats, timeline)
    }

    pub fn record(&self, intended: Instant, latency: Duration, outcome: &Outcome) {
        self.with(|s, t| {
            s.record(latency, outcome);
            t.record(intended, latency, matches!(outcome, Outcome::Ok { .. }));
        });
    }

    /// A request scheduled but never sent (the run ended while it waited for a connection).
    pub fn not_sent(&self) {
        self.with(|s, _| s.not_sent += 1);
    }

    /// Requests completed and failed so far, for the progress bar (takes each shard's lock in turn).
    pub fn counts(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(d, f), shard| {
            let g = shard.0.lock().unwrap_or_else(|p| p.into_inner());
            (d + g.0.completed(), f + g.0.failed())
        })
    }

    /// The merged statistics and timeline.
    pub fn finish(self) -> (Stats, Vec<Second>) {
        let mut shards = self.shards.into_iter().map(|s| s.0.into_inner().unwrap_or_else(|p| p.into_inner()));
        let (mut stats, mut timeline) = shards.next().unwrap_or_else(|| unreachable!("at least one shard"));
        for (s, t) in shards {
            stats.merge(&s);
            timeline.merge(&t);
        }
        (stats, timeline.into_seconds())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_known_latencies() {
        let mut s = Stats::default();
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
        let mut a = Stats::default();
        let mut b = Stats::default();
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
    fn a_recorder_merges_every_threads_shard() {
        let start = Instant::now();
        // Three threads on two shards: two of them share one, which must not lose anything either.
        let r = std::sync::Arc::new(Recorder::new(Duration::from_secs(2), 2).starting(start));
        let threads: Vec<_> = (0..3u64)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for i in 0..100u64 {
                        let outcome = if i == 0 { Outcome::Status(503) } else { Outcome::Ok { version: None } };
                        r.record(start + Duration::from_millis(1500 * t / 2), Duration::from_micros(10 + i), &outcome);
                    }
                    r.not_sent();
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap_or_else(|_| panic!("recording thread"));
        }
        assert_eq!(r.counts(), (300, 3));
        let r = std::sync::Arc::try_unwrap(r).unwrap_or_else(|_| panic!("still shared"));
        let (stats, secs) = r.finish();
        assert_eq!((stats.ok, stats.completed(), stats.not_sent, stats.statuses[&503]), (297, 300, 3, 3));
        assert_eq!((stats.hist.len(), stats.refused.len(), stats.hist.max()), (300, 3, 109));
        // Due at 0, 0.75 and 1.5 s: two threads' requests in second 0, one's in second 1; refusals are errors there.
        assert_eq!((secs[0].hist.len(), secs[0].errors, secs[1].hist.len(), secs[1].errors), (198, 2, 99, 1));
    }

    #[test]
    fn timeline_buckets_by_intended_second() {
        let start = Instant::now();
        let mut t = Timeline::new(start, Duration::from_secs(3));
        t.record(start + Duration::from_millis(100), Duration::from_micros(50), true);
        t.record(start + Duration::from_millis(2500), Duration::from_micros(70), true);
        t.record(start + Duration::from_millis(2600), Duration::from_micros(70), false);
        let s = t.into_seconds();
        assert_eq!((s[0].hist.len(), s[1].hist.len(), s[2].hist.len(), s[2].errors), (1, 0, 1, 1));
    }
}

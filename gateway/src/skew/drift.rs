//! Streaming feature statistics of one model version against its training baseline, over a sliding window.
//!
//! Every feature of every input row is binned on the baseline's bin edges with relaxed atomic adds (no lock on
//! the request path). The window is a ring of time slots: requests add to the current slot, a ticker advances the
//! ring and clears the slot it moves into, and a snapshot sums all slots. From the window come the population
//! stability index (PSI) per feature and the share of values outside the training range.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::manifest::Manifest;

/// Counters per feature after the bins: below the training minimum, above the training maximum.
const EXTRA: usize = 2;
/// Rows below which a window says "not enough data" instead of a PSI: no data is not good data.
pub const MIN_ROWS: u64 = 100;
/// Floor for empty bins, so PSI stays finite (the usual 1e-4 smoothing).
const EPSILON: f64 = 1e-4;

/// Where one feature lives in the request and what it looked like in training.
#[derive(Debug, Clone)]
pub struct Feature {
    pub name: String,
    /// Index of the input tensor (in signature order) and offset of the feature within a row.
    pub input: usize,
    pub offset: usize,
    pub row_len: usize,
    pub edges: Vec<f64>,
    /// Training share of each bin.
    pub expected: Vec<f64>,
    pub min: f64,
    pub max: f64,
    /// Declared valid domain; values outside are invalid (policy decides reject or count).
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    /// First counter of this feature in a slot.
    base: usize,
}

/// Counters are sharded by thread so that cores do not fight over the same cache lines; a snapshot sums them.
const SHARDS: usize = 4;

fn shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
    }
    SHARD.with(|s| *s)
}

/// Most counters one feature may have (bins plus the two range counters): per-request counts are gathered on the
/// stack in an array of this size before touching the shared atomics.
pub const MAX_WIDTH: usize = 64;

struct Slot {
    /// `SHARDS` runs of `per_shard` counters.
    counts: Box<[AtomicU64]>,
}

pub struct DriftStats {
    pub features: Vec<Feature>,
    slots: Box<[Slot]>,
    per_shard: usize,
    current: AtomicUsize,
}

/// One request's counts for one feature, gathered before they are added to the shared counters.
pub struct Local {
    counts: [u32; MAX_WIDTH],
}

impl Default for Local {
    fn default() -> Self {
        Self { counts: [0; MAX_WIDTH] }
    }
}

impl std::fmt::Debug for DriftStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftStats").field("features", &self.features.len()).finish()
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct FeatureDrift {
    pub name: String,
    pub rows: u64,
    /// `None` below [`MIN_ROWS`] rows in the window.
    pub psi: Option<f64>,
    pub out_of_range_share: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftSnapshot {
    pub rows: u64,
    pub max_psi: Option<f64>,
    /// The feature with the highest PSI.
    pub max_psi_feature: Option<String>,
    pub features: Vec<FeatureDrift>,
}

impl DriftStats {
    /// Builds the features from the manifest's baselines; inputs without baselines are not tracked.
    pub fn new(manifest: &Manifest, slots: usize) -> Self {
        let mut features = Vec::new();
        let mut base = 0;
        for (input, spec) in manifest.inputs.iter().enumerate() {
            let row_len = spec.spec.row_len();
            for (offset, b) in spec.features.iter().enumerate() {
                let total: u64 = b.bin_counts.iter().sum::<u64>().max(1);
                let expected = b.bin_counts.iter().map(|&c| c as f64 / total as f64).collect();
                // Wider baselines are cut down to the first bins (MAX_WIDTH - 3 edges); manifests use ten.
                let edges: Vec<f64> = b.bin_edges.iter().copied().take(MAX_WIDTH - 3).collect();
                features.push(Feature {
                    name: b.name.clone(),
                    input,
                    offset,
                    row_len,
                    expected: fold_expected(expected, edges.len() + 1),
                    edges,
                    min: b.min,
                    max: b.max,
                    lower: b.lower,
                    upper: b.upper,
                    base,
                });
                base += edges_len(b.bin_edges.len()) + 1 + EXTRA;
            }
        }
        let slots = (0..slots.max(1))
            .map(|_| Slot { counts: (0..base * SHARDS).map(|_| AtomicU64::new(0)).collect() })
            .collect();
        Self { features, slots, per_shard: base, current: AtomicUsize::new(0) }
    }

    /// Counts one value of feature `f` into `local`. NaN and infinities are not binned (the invariant checks
    /// count them).
    #[inline]
    pub fn count(f: &Feature, local: &mut Local, v: f64) {
        if !v.is_finite() {
            return;
        }
        let nbins = f.edges.len() + 1;
        // Bin i holds v with edges[i-1] < v <= edges[i], as the training script bins: the number of edges below v.
        // Counted without branches: a binary search over ten random-looking values mispredicts most of its
        // branches, and this runs for every value of every row.
        let bin = f.edges.iter().map(|e| usize::from(*e < v)).sum::<usize>();
        local.counts[bin] += 1;
        if v < f.min {
            local.counts[nbins] += 1;
        } else if v > f.max {
            local.counts[nbins + 1] += 1;
        }
    }

    /// Adds a request's counts for `f` to the current slot: one atomic add per bin touched, on this thread's shard.
    pub fn add(&self, f: &Feature, local: &Local) {
        let slot = &self.slots[self.current.load(Ordering::Relaxed)];
        let off = shard() * self.per_shard + f.base;
        for (i, &c) in local.counts[..f.edges.len() + 1 + EXTRA].iter().enumerate() {
            if c > 0 {
                slot.counts[off + i].fetch_add(u64::from(c), Ordering::Relaxed);
            }
        }
    }

    /// Counts a whole column at once (tests and tools).
    pub fn record(&self, f: &Feature, values: &[f64]) {
        let mut local = Local::default();
        for &v in values {
            Self::count(f, &mut local, v);
        }
        self.add(f, &local);
    }

    /// Advances the window by one slot, clearing the slot it moves into.
    pub fn rotate(&self) {
        let next = (self.current.load(Ordering::Relaxed) + 1) % self.slots.len();
        for c in self.slots[next].counts.iter() {
            c.store(0, Ordering::Relaxed);
        }
        self.current.store(next, Ordering::Relaxed);
    }

    fn window(&self, i: usize) -> u64 {
        self.slots
            .iter()
            .flat_map(|s| (0..SHARDS).map(move |sh| s.counts[sh * self.per_shard + i].load(Ordering::Relaxed)))
            .sum()
    }

    pub fn snapshot(&self) -> DriftSnapshot {
        let mut features = Vec::with_capacity(self.features.len());
        let mut rows = 0;
        for f in &self.features {
            let nbins = f.edges.len() + 1;
            let counts: Vec<u64> = (0..nbins).map(|b| self.window(f.base + b)).collect();
            let n: u64 = counts.iter().sum();
            rows = rows.max(n);
            let outside = self.window(f.base + nbins) + self.window(f.base + nbins + 1);
            let enough = n >= MIN_ROWS;
            features.push(FeatureDrift {
                name: f.name.clone(),
                rows: n,
                psi: enough.then(|| psi(&f.expected, &counts)),
                out_of_range_share: (n > 0).then(|| outside as f64 / n as f64),
            });
        }
        let top = features.iter().filter_map(|f| f.psi.map(|p| (p, &f.name))).max_by(|a, b| a.0.total_cmp(&b.0));
        DriftSnapshot { rows, max_psi: top.map(|(p, _)| p), max_psi_feature: top.map(|(_, n)| n.clone()), features }
    }
}

fn edges_len(n: usize) -> usize {
    n.min(MAX_WIDTH - 3)
}

/// Expected shares for a baseline cut to `bins` bins: the tail's share goes to the last kept bin.
fn fold_expected(mut expected: Vec<f64>, bins: usize) -> Vec<f64> {
    if expected.len() > bins {
        let tail: f64 = expected[bins - 1..].iter().sum();
        expected.truncate(bins);
        expected[bins - 1] = tail;
    }
    expected
}

/// Population stability index of observed bin counts against expected shares: sum of (q - p) * ln(q / p).
pub fn psi(expected: &[f64], observed: &[u64]) -> f64 {
    let n: u64 = observed.iter().sum();
    if n == 0 {
        return 0.0;
    }
    expected
        .iter()
        .zip(observed)
        .map(|(&p, &o)| {
            let (p, q) = (p.max(EPSILON), (o as f64 / n as f64).max(EPSILON));
            (q - p) * (q / p).ln()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// PSI is never negative, and is zero when the observed shares equal the expected ones.
        #[test]
        fn psi_is_non_negative_and_zero_on_identical(counts in proptest::collection::vec(1u64..1000, 2..12)) {
            let total: u64 = counts.iter().sum();
            let expected: Vec<f64> = counts.iter().map(|&c| c as f64 / total as f64).collect();
            prop_assert!(psi(&expected, &counts).abs() < 1e-12);
            let mut shifted = counts.clone();
            shifted.rotate_left(1);
            prop_assert!(psi(&expected, &shifted) >= -1e-12);
        }
    }

    #[test]
    fn psi_grows_with_the_shift() {
        let expected = [0.25, 0.25, 0.25, 0.25];
        let small = psi(&expected, &[30, 25, 25, 20]);
        let large = psi(&expected, &[70, 10, 10, 10]);
        // The usual reading: below 0.1 stable, 0.1 to 0.25 moderate shift, above 0.25 a major shift.
        assert!(small < 0.05 && large > 0.25, "{small} {large}");
    }
}

//! Streaming feature statistics of one model version against its training baseline, over a sliding window.
//!
//! Every feature of an input row is binned on the baseline's bin edges with relaxed atomic adds (no lock on the
//! request path). Once a time slot has binned enough rows one by one, a sample is binned, each row standing for
//! those it was picked from: one request in [`REQUEST_SAMPLE`], or an evenly spaced sample of a request's rows
//! (`RowSample` in the parent module). The window is a ring of time slots: requests add to the current
//! slot, a ticker advances the ring and clears the slot it moves into, and a snapshot sums all slots. From the
//! window come the population stability index (PSI) per feature and the share of values outside the training
//! range. A categorical feature (a BYTES input) has one bin per training category plus one for categories never
//! seen in training: its PSI is over category shares, and its unseen share takes the place of the out-of-range
//! share.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use serde::Serialize;

use crate::manifest::Manifest;
use crate::tensor::DataType;

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
    /// The training categories of a categorical feature (empty for a numeric one).
    pub categories: Vec<Vec<u8>>,
    /// First counter of this feature in a slot.
    base: usize,
}

impl Feature {
    pub fn is_categorical(&self) -> bool {
        !self.categories.is_empty()
    }

    /// Drift bins: the numeric bins, or one per category plus the unseen-category bin.
    fn bins(&self) -> usize {
        if self.is_categorical() { self.categories.len() + 1 } else { self.edges.len() + 1 }
    }
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
    /// `SHARDS` runs of `per_shard` counters; each run's first counter holds the rows binned one by one
    /// ([`Shard::sample`]), the features' counters follow.
    counts: Box<[AtomicU64]>,
}

/// Rows a shard of a time slot bins one by one (every row of every request) before it samples. PSI's noise falls
/// with the number of distinct rows binned, not with their weights: a quiet model needs every row it gets, while
/// a busy one gets this many real rows per shard and slot, plus a sample of the rest, at a bounded cost.
pub const FULL_ROWS_PER_SHARD: u64 = 1024;

/// Once a shard has its full rows, one request in this many (of up to [`DRIFT_ROWS`](super::DRIFT_ROWS) rows) is
/// binned, each row counted this many times; larger requests are sampled by rows instead.
pub const REQUEST_SAMPLE: u32 = 8;

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

/// The counters of one value of a numeric feature: its bin, and the range counter (below the training minimum,
/// above the maximum) if it is outside; `None` for NaN and infinities, which are not binned.
#[inline]
fn numeric_bins(f: &Feature, v: f64) -> Option<(usize, Option<usize>)> {
    if !v.is_finite() {
        return None;
    }
    let nbins = f.edges.len() + 1;
    // Bin i holds v with edges[i-1] < v <= edges[i], as the training script bins: the number of edges below v.
    // Counted without branches: a binary search over ten random-looking values mispredicts most of its branches,
    // and this runs for every value of every row.
    let bin = f.edges.iter().map(|e| usize::from(*e < v)).sum::<usize>();
    let range = if v < f.min {
        Some(nbins)
    } else if v > f.max {
        Some(nbins + 1)
    } else {
        None
    };
    Some((bin, range))
}

/// The counters of one category: its training category's bin or the unseen bin, and for an unseen one the range
/// counter too (which the snapshot reads as the unseen share).
#[inline]
fn category_bins(f: &Feature, v: &[u8]) -> (usize, Option<usize>) {
    let k = f.categories.len();
    let bin = f.categories.iter().position(|c| c == v).unwrap_or(k);
    (bin, (bin == k).then_some(k + 2))
}

/// One thread's counters in the current slot ([`DriftStats::shard`]).
pub struct Shard<'a> {
    counts: &'a [AtomicU64],
}

impl Shard<'_> {
    /// Whether this shard of the current slot still bins every row: yes until it has binned
    /// [`FULL_ROWS_PER_SHARD`] rows that way, and then it counts them. The counter is this thread's own; a
    /// warm shard only reads it.
    pub fn bins_every_row(&self, rows: usize) -> bool {
        let full = &self.counts[0];
        if full.load(Ordering::Relaxed) >= FULL_ROWS_PER_SHARD {
            return false;
        }
        full.fetch_add(rows as u64, Ordering::Relaxed);
        true
    }

    /// Adds a request's gathered counts for `f`: one atomic add per bin touched.
    pub fn add(&self, f: &Feature, local: &Local) {
        let counts = &self.counts[f.base..f.base + f.bins() + EXTRA];
        for (c, &n) in counts.iter().zip(&local.counts) {
            if n > 0 {
                c.fetch_add(u64::from(n), Ordering::Relaxed);
            }
        }
    }

    /// Counts one value of `f` straight into the shared counters, `weight` times: for a request of a row or two,
    /// one or two atomic adds cost less than gathering (and zeroing) a [`Local`] first.
    #[inline]
    pub fn count(&self, f: &Feature, v: f64, weight: u32) {
        if let Some((bin, range)) = numeric_bins(f, v) {
            self.counts[f.base + bin].fetch_add(u64::from(weight), Ordering::Relaxed);
            if let Some(r) = range {
                self.counts[f.base + r].fetch_add(u64::from(weight), Ordering::Relaxed);
            }
        }
    }

    /// [`Shard::count`] for a category of a categorical feature.
    #[inline]
    pub fn count_category(&self, f: &Feature, v: &[u8], weight: u32) {
        let (bin, unseen) = category_bins(f, v);
        self.counts[f.base + bin].fetch_add(u64::from(weight), Ordering::Relaxed);
        if let Some(u) = unseen {
            self.counts[f.base + u].fetch_add(u64::from(weight), Ordering::Relaxed);
        }
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
    /// Numeric features: the share of values outside the training range.
    pub out_of_range_share: Option<f64>,
    /// Categorical features: the share of values that are no training category.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unseen_share: Option<f64>,
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
        let mut base = 1; // counter 0 of each shard's run: the rows it binned one by one
        for (input, spec) in manifest.inputs.iter().enumerate() {
            let row_len = spec.spec.row_len();
            let categorical = spec.spec.datatype == DataType::Bytes;
            for (offset, b) in spec.features.iter().enumerate() {
                let (edges, categories, expected) = if categorical {
                    // The manifest caps categories (MAX_CATEGORIES) so that the bins fit the counter array.
                    let categories: Vec<Vec<u8>> =
                        b.categories.iter().take(MAX_WIDTH - 3).map(|c| c.as_bytes().to_vec()).collect();
                    let total: u64 = b.category_counts.iter().sum::<u64>().max(1);
                    let mut expected: Vec<f64> =
                        b.category_counts.iter().take(categories.len()).map(|&c| c as f64 / total as f64).collect();
                    expected.push(0.0); // no training row had an unseen category
                    (Vec::new(), categories, expected)
                } else {
                    let total: u64 = b.bin_counts.iter().sum::<u64>().max(1);
                    let expected = b.bin_counts.iter().map(|&c| c as f64 / total as f64).collect();
                    // Wider baselines are cut down to the first bins (MAX_WIDTH - 3 edges); manifests use ten.
                    let edges: Vec<f64> = b.bin_edges.iter().copied().take(MAX_WIDTH - 3).collect();
                    let bins = edges.len() + 1;
                    (edges, Vec::new(), fold_expected(expected, bins))
                };
                let feature = Feature {
                    name: b.name.clone(),
                    input,
                    offset,
                    row_len,
                    expected,
                    edges,
                    min: b.min,
                    max: b.max,
                    lower: b.lower,
                    upper: b.upper,
                    categories,
                    base,
                };
                base += feature.bins() + EXTRA;
                features.push(feature);
            }
        }
        let slots = (0..slots.max(1))
            .map(|_| Slot { counts: (0..base * SHARDS).map(|_| AtomicU64::new(0)).collect() })
            .collect();
        Self { features, slots, per_shard: base, current: AtomicUsize::new(0) }
    }

    /// Counts one category of the categorical feature `f` into `local`, `weight` times.
    #[inline]
    pub fn count_category(f: &Feature, local: &mut Local, v: &[u8], weight: u32) {
        let (bin, unseen) = category_bins(f, v);
        local.counts[bin] += weight;
        if let Some(u) = unseen {
            local.counts[u] += weight;
        }
    }

    /// Counts one value of feature `f` into `local`, `weight` times (a sampled row stands for several). NaN and
    /// infinities are not binned (the invariant checks count them).
    #[inline]
    pub fn count(f: &Feature, local: &mut Local, v: f64, weight: u32) {
        if let Some((bin, range)) = numeric_bins(f, v) {
            local.counts[bin] += weight;
            if let Some(r) = range {
                local.counts[r] += weight;
            }
        }
    }

    /// This thread's run of counters in the current slot: where a request's counts go.
    pub fn shard(&self) -> Shard<'_> {
        let slot = &self.slots[self.current.load(Ordering::Relaxed)];
        let off = shard() * self.per_shard;
        Shard { counts: &slot.counts[off..off + self.per_shard] }
    }

    /// Adds a request's counts for `f` to the current slot.
    pub fn add(&self, f: &Feature, local: &Local) {
        self.shard().add(f, local);
    }

    /// Counts a whole column at once (tests and tools).
    pub fn record(&self, f: &Feature, values: &[f64]) {
        let mut local = Local::default();
        for &v in values {
            Self::count(f, &mut local, v, 1);
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
            let nbins = f.bins();
            let counts: Vec<u64> = (0..nbins).map(|b| self.window(f.base + b)).collect();
            let n: u64 = counts.iter().sum();
            rows = rows.max(n);
            let outside = self.window(f.base + nbins) + self.window(f.base + nbins + 1);
            let enough = n >= MIN_ROWS;
            let share = (n > 0).then(|| outside as f64 / n as f64);
            let categorical = f.is_categorical();
            features.push(FeatureDrift {
                name: f.name.clone(),
                rows: n,
                psi: enough.then(|| psi(&f.expected, &counts)),
                out_of_range_share: share.filter(|_| !categorical),
                unseen_share: share.filter(|_| categorical),
            });
        }
        let top = features.iter().filter_map(|f| f.psi.map(|p| (p, &f.name))).max_by(|a, b| a.0.total_cmp(&b.0));
        DriftSnapshot { rows, max_psi: top.map(|(p, _)| p), max_psi_feature: top.map(|(_, n)| n.clone()), features }
    }
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

    /// The bundled wine model's `color` is categorical: traffic in training proportions drifts little; a flood of
    /// an unseen category drifts a lot and shows as the unseen share.
    #[test]
    fn categorical_features_drift_over_category_shares() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wine/1");
        let manifest = Manifest::load(&dir, "wine", "1").expect("bundled manifest");
        let stats = DriftStats::new(&manifest, 1);
        let color = stats.features.iter().find(|f| f.is_categorical()).expect("color is categorical").clone();
        let mut local = Local::default();
        let counts = manifest.inputs[1].features[0].category_counts.clone();
        for (c, &n) in color.categories.clone().iter().zip(&counts) {
            for _ in 0..n * 2 {
                DriftStats::count_category(&color, &mut local, c, 1);
            }
        }
        stats.add(&color, &local);
        let snap = stats.snapshot();
        let f = snap.features.iter().find(|f| f.name == color.name).expect("in the snapshot");
        assert!(f.psi.expect("enough rows") < 0.01, "{f:?}");
        assert_eq!((f.unseen_share, f.out_of_range_share), (Some(0.0), None));

        let mut local = Local::default();
        for _ in 0..300 {
            DriftStats::count_category(&color, &mut local, b"violet", 1);
        }
        stats.add(&color, &local);
        let snap = stats.snapshot();
        let f = snap.features.iter().find(|f| f.name == color.name).expect("in the snapshot");
        assert!(f.psi.expect("enough rows") > 0.25, "{f:?}");
        let total = counts.iter().sum::<u64>() * 2 + 300;
        assert!((f.unseen_share.expect("share") - 300.0 / total as f64).abs() < 1e-9, "{f:?}");
    }

    /// A shard of a slot bins every row until it holds FULL_ROWS_PER_SHARD of them; the slot the window moves
    /// into starts over.
    #[test]
    fn a_slot_bins_every_row_until_it_has_enough() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/wine/1");
        let manifest = Manifest::load(&dir, "wine", "1").expect("bundled manifest");
        let stats = DriftStats::new(&manifest, 2);
        let mut full = 0;
        while stats.shard().bins_every_row(100) {
            full += 1;
        }
        assert_eq!(full, FULL_ROWS_PER_SHARD.div_ceil(100), "whole requests until the shard has enough");
        assert!(!stats.shard().bins_every_row(1), "then sampled");
        stats.rotate();
        assert!(stats.shard().bins_every_row(1), "a fresh slot bins every row again");
        stats.rotate();
        assert!(stats.shard().bins_every_row(1), "the slot was cleared when the window moved into it");
        assert_eq!(stats.snapshot().rows, 0, "the counter is not a feature's");
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

//! Train/serve skew checks on live traffic: feature drift against the training baseline (see [`drift`]) and
//! invariants on every input value: NaN, infinities, and values outside the bounds the manifest declares. A
//! per-model policy either rejects such a request with a 400 naming the feature, or serves it and counts.

pub mod drift;

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::manifest::Manifest;
use crate::tensor::{Tensor, TensorData};
use drift::{DriftStats, Feature, Local};

/// What to do with a request carrying NaN, an infinity or a value outside the declared bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InvalidPolicy {
    /// Refuse it with a 400 naming the feature.
    Reject,
    /// Serve it and count the value.
    #[default]
    Count,
}

/// The kinds of invalid value, in counter order.
pub const INVALID_KINDS: [&str; 3] = ["nan", "inf", "out_of_bounds"];

fn invalid_kind(f: &Feature, v: f64) -> Option<usize> {
    if v.is_nan() {
        Some(0)
    } else if v.is_infinite() {
        Some(1)
    } else if f.lower.is_some_and(|lo| v < lo) || f.upper.is_some_and(|hi| v > hi) {
        Some(2)
    } else {
        None
    }
}

/// One pass over feature `f`'s column of `rows` rows: its first invalid value (row, kind, value), and how many
/// of each kind it holds. A column at a time reads the tensor with index arithmetic, one type dispatch per
/// feature rather than per value.
fn scan_invalid(f: &Feature, data: &TensorData, rows: usize) -> (Option<(usize, usize, f64)>, [u64; 3]) {
    let (mut first, mut counts, mut row) = (None, [0u64; 3], 0);
    data.for_each_strided(f.offset, f.row_len, rows, |v| {
        if let Some(kind) = invalid_kind(f, v) {
            counts[kind] += 1;
            first.get_or_insert((row, kind, v));
        }
        row += 1;
    });
    (first, counts)
}

/// Skew monitoring of one model version.
pub struct SkewMonitor {
    pub drift: DriftStats,
    policy: InvalidPolicy,
    /// Per feature, one counter per invalid kind.
    invalid: Vec<[IntCounter; 3]>,
    /// Per input (in signature order), the range each position of a row must lie in, for [`Self::all_valid`];
    /// `None` for inputs without numeric features.
    ranges: Vec<Option<Vec<(f64, f64)>>>,
}

impl std::fmt::Debug for SkewMonitor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SkewMonitor").field("policy", &self.policy).field("drift", &self.drift).finish()
    }
}

impl SkewMonitor {
    pub fn new(
        manifest: &Manifest,
        slots: usize,
        policy: InvalidPolicy,
        counter: impl Fn(&str, &str) -> IntCounter,
    ) -> Self {
        let drift = DriftStats::new(manifest, slots);
        let invalid = drift.features.iter().map(|f| INVALID_KINDS.map(|k| counter(&f.name, k))).collect();
        let mut ranges: Vec<Option<Vec<(f64, f64)>>> = vec![None; manifest.inputs.len()];
        for f in drift.features.iter().filter(|f| !f.is_categorical()) {
            // A position without a feature takes anything (a NaN there only sends the request to the slow
            // check, which finds nothing); a feature's bounds are finite, so that infinities fail the fast check.
            let row = ranges[f.input].get_or_insert_with(|| vec![(f64::NEG_INFINITY, f64::INFINITY); f.row_len]);
            row[f.offset] = (f.lower.unwrap_or(f64::MIN), f.upper.unwrap_or(f64::MAX));
        }
        Self { drift, policy, invalid, ranges }
    }

    /// Whether every monitored value is valid: one pass per input tensor, a few instructions per value, so the
    /// common case does not pay for the per-feature scans that say which value is invalid.
    fn all_valid(&self, inputs: &[Tensor]) -> bool {
        self.ranges.iter().zip(inputs).all(|(ranges, t)| {
            let Some(ranges) = ranges else { return true };
            // FP32 rows, nearly every model's input, compare position by position against the row's ranges,
            // without the generic walk's per-value conversion call and position bookkeeping.
            if let TensorData::F32(d) = &t.data
                && d.len() % ranges.len() == 0
            {
                return d.chunks_exact(ranges.len()).all(|row| {
                    row.iter()
                        .zip(ranges)
                        .fold(true, |ok, (&v, &(lo, hi))| ok & (f64::from(v) >= lo) & (f64::from(v) <= hi))
                });
            }
            let (mut ok, mut pos) = (true, 0);
            t.data.for_each_strided(0, 1, t.data.len(), |v| {
                let (lo, hi) = ranges[pos];
                ok &= v >= lo && v <= hi; // false for NaN
                pos += 1;
                if pos == ranges.len() {
                    pos = 0;
                }
            });
            ok
        })
    }

    pub fn policy(&self) -> InvalidPolicy {
        self.policy
    }

    /// Invalid values seen since load, per feature that had any: (feature, [nan, inf, out_of_bounds]).
    pub fn invalid_totals(&self) -> Vec<(String, [u64; 3])> {
        self.drift
            .features
            .iter()
            .zip(&self.invalid)
            .map(|(f, c)| (f.name.clone(), [c[0].get(), c[1].get(), c[2].get()]))
            .filter(|(_, c)| c.iter().any(|&n| n > 0))
            .collect()
    }

    /// Checks and records the inputs of one request (in signature order). Under the reject policy nothing is
    /// recorded for a refused request except the invalid value that refused it.
    pub fn observe(&self, inputs: &[Tensor], input_names: &[String]) -> Result<(), GatewayError> {
        let rows = inputs.first().map_or(0, |t| t.shape[0] as usize);
        let valid = self.all_valid(inputs);
        if self.policy == InvalidPolicy::Reject && !valid {
            for (i, f) in self.drift.features.iter().enumerate().filter(|(_, f)| !f.is_categorical()) {
                let t = &inputs[f.input];
                let Some((row, kind, v)) = scan_invalid(f, &t.data, rows).0 else { continue };
                self.invalid[i][kind].inc();
                let what = match kind {
                    0 => "NaN".to_string(),
                    1 => format!("{v}"),
                    _ => format!("{v}, outside the declared bounds [{}, {}]", bound(f.lower), bound(f.upper)),
                };
                return Err(GatewayError::invalid(format!(
                    "input '{}', feature '{}' (row {row}): {what} is not allowed for this model",
                    input_names[f.input], f.name
                )));
            }
        }
        let count_invalid = self.policy == InvalidPolicy::Count && !valid;
        let shard = self.drift.shard();
        let sample = if shard.bins_every_row(rows) { RowSample::all(rows) } else { RowSample::new(rows) };
        if sample.count == 0 && !count_invalid {
            return Ok(()); // not a sampled request, and no invalid value to count
        }
        // A row or two goes straight to the shared counters; more are gathered per feature first.
        let direct = sample.count <= DIRECT_ROWS;
        for (i, f) in self.drift.features.iter().enumerate() {
            let t = &inputs[f.input];
            if f.is_categorical() {
                if sample.count == 0 {
                    continue;
                }
                let values = sample.rows().filter_map(|row| t.data.bytes_at(row * f.row_len + f.offset));
                if direct {
                    values.for_each(|v| shard.count_category(f, v, sample.weight));
                } else {
                    let mut local = Local::default();
                    values.for_each(|v| DriftStats::count_category(f, &mut local, v, sample.weight));
                    shard.add(f, &local);
                }
                continue;
            }
            // Invalid values are counted on every row (a cheap comparison); only the binning is sampled.
            if count_invalid {
                let invalid = scan_invalid(f, &t.data, rows).1;
                for (k, n) in invalid.iter().enumerate().filter(|(_, n)| **n > 0) {
                    self.invalid[i][k].inc_by(*n);
                }
            }
            let (start, step) = (sample.first * f.row_len + f.offset, f.row_len * sample.stride);
            if sample.count == 0 {
                continue;
            }
            if direct {
                t.data.for_each_strided(start, step, sample.count, |v| shard.count(f, v, sample.weight));
            } else {
                let mut local = Local::default();
                t.data.for_each_strided(start, step, sample.count, |v| {
                    DriftStats::count(f, &mut local, v, sample.weight)
                });
                shard.add(f, &local);
            }
        }
        Ok(())
    }
}

/// Rows of one request binned for drift once the time slot has enough rows binned one by one
/// ([`drift::FULL_ROWS_PER_SHARD`]; before, all of them): up to [`DRIFT_ROWS`] rows, all of them in one request of
/// [`drift::REQUEST_SAMPLE`] (each counted that many times) and none in the others; more rows, every `stride`-th
/// row from a random first one, each counted `stride` times. PSI compares shares, and evenly spaced rows from a random
/// start keep the shares unbiased, while a 1,024-row request costs what a 16-row one does; the counted total
/// stays about the request's rows, so the window's row count (and its "enough data" floor) still means rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RowSample {
    first: usize,
    stride: usize,
    count: usize,
    weight: u32,
}

/// Most rows of one request that drift statistics bin.
pub const DRIFT_ROWS: usize = 16;

/// Binned rows up to which a request's values go straight to the shared counters.
const DIRECT_ROWS: usize = 2;

impl RowSample {
    fn new(rows: usize) -> Self {
        if rows <= DRIFT_ROWS {
            Self::one_request_in(rows, fastrand::u32(..drift::REQUEST_SAMPLE) == 0)
        } else {
            Self::with_start(rows, |stride| fastrand::usize(0..stride))
        }
    }

    fn all(rows: usize) -> Self {
        Self { first: 0, stride: 1, count: rows, weight: 1 }
    }

    /// A small request's rows: all of them if it is the one picked, each counted for the requests not picked.
    fn one_request_in(rows: usize, picked: bool) -> Self {
        Self { first: 0, stride: 1, count: if picked { rows } else { 0 }, weight: drift::REQUEST_SAMPLE }
    }

    /// Every `stride`-th row of a request of more than [`DRIFT_ROWS`], from the row `start` picks below the stride.
    fn with_start(rows: usize, start: impl FnOnce(usize) -> usize) -> Self {
        let stride = rows.div_ceil(DRIFT_ROWS);
        let first = start(stride);
        let count = (rows - first).div_ceil(stride);
        Self { first, stride, count, weight: u32::try_from(stride).unwrap_or(u32::MAX) }
    }

    fn rows(self) -> impl Iterator<Item = usize> {
        (0..self.count).map(move |k| self.first + k * self.stride)
    }
}

fn bound(b: Option<f64>) -> String {
    b.map_or_else(|| "-".to_string(), |x| x.to_string())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// A request's sample stays within its rows, bins at most DRIFT_ROWS of them, and its weighted total is
        /// the request's rows give or take one stride, whatever the random start.
        #[test]
        fn a_sample_covers_the_request(rows in DRIFT_ROWS + 1..5000, start in 0usize..1000) {
            let s = RowSample::with_start(rows, |stride| start % stride);
            let picked: Vec<usize> = s.rows().collect();
            prop_assert!(picked.len() <= DRIFT_ROWS);
            prop_assert!(picked.iter().all(|&r| r < rows));
            let total = picked.len() * s.weight as usize;
            prop_assert!(total.abs_diff(rows) < s.stride, "{rows} rows counted as {total} ({s:?})");
        }
    }

    fn value() -> impl Strategy<Value = f32> {
        prop_oneof![
            // Mostly valid, so whole requests pass too: the bundled model's features are at least 0.
            95 => 0.0f32..1.0e4,
            1 => -1.0e4f32..0.0,
            1 => Just(f32::NAN),
            1 => Just(f32::INFINITY),
            1 => Just(f32::NEG_INFINITY),
            1 => any::<f32>(),
        ]
    }

    proptest! {
        /// The FP32 fast path of the validity check agrees with the generic walk (the same values as FP64, which
        /// compare the same), and a request it passes has no invalid value in any feature's scan.
        #[test]
        fn the_fp32_check_agrees_with_the_generic_one(rows in 1usize..5, values in proptest::collection::vec(value(), 120)) {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/breast-cancer/1");
            let manifest = Manifest::load(&dir, "breast-cancer", "1").expect("bundled manifest");
            let m = SkewMonitor::new(&manifest, 1, InvalidPolicy::Count, |_, _| IntCounter::new("c", "c").expect("counter"));
            let values = &values[..rows * 30];
            let tensor = |data| Tensor { name: "input".into(), shape: vec![rows as i64, 30], data };
            let fp32 = tensor(TensorData::F32(values.to_vec()));
            let fp64 = tensor(TensorData::F64(values.iter().map(|&v| f64::from(v)).collect()));
            let valid = m.all_valid(std::slice::from_ref(&fp32));
            prop_assert_eq!(valid, m.all_valid(std::slice::from_ref(&fp64)));
            if valid {
                for f in m.drift.features.iter().filter(|f| !f.is_categorical()) {
                    prop_assert_eq!(scan_invalid(f, &fp32.data, rows).0, None);
                }
            }
        }
    }

    /// The column scan behind both policies: the first invalid value in row order, and every kind counted.
    #[test]
    fn a_column_scan_finds_the_first_invalid_value_and_counts_every_kind() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/breast-cancer/1");
        let manifest = Manifest::load(&dir, "breast-cancer", "1").expect("bundled manifest");
        let mut f = DriftStats::new(&manifest, 1).features[0].clone();
        (f.offset, f.row_len, f.lower, f.upper) = (1, 2, Some(0.0), Some(10.0));
        let data = TensorData::F32(vec![0.0, 1.0, 0.0, -5.0, 0.0, f32::NAN, 0.0, f32::INFINITY, f32::NAN, 20.0]);
        let (first, counts) = scan_invalid(&f, &data, 5);
        assert_eq!(first, Some((1, 2, -5.0)));
        assert_eq!(counts, [1, 1, 2], "NaN, infinite, out of bounds; the other column's NaN is not this feature's");
        assert_eq!(scan_invalid(&f, &data, 1), (None, [0; 3]), "only the rows asked for");
    }

    /// Small requests are sampled whole: about one in REQUEST_SAMPLE is binned, and the weighted total stays
    /// about the rows sent.
    #[test]
    fn small_requests_are_sampled_whole_and_weighted() {
        fastrand::seed(7);
        let (requests, rows) = (80_000, 5);
        let mut total = 0;
        for _ in 0..requests {
            let s = RowSample::new(rows);
            assert!(s.count == 0 || s.rows().eq(0..rows), "all rows or none: {s:?}");
            total += s.count * s.weight as usize;
        }
        let sent = requests * rows;
        assert!(total.abs_diff(sent) < sent / 20, "{sent} rows counted as {total}");
    }
}

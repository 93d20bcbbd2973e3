//! Train/serve skew checks on live traffic: feature drift against the training baseline (see [`drift`]) and
//! invariants on every input value: NaN, infinities, and values outside the bounds the manifest declares. A
//! per-model policy either rejects such a request with a 400 naming the feature, or serves it and counts.

pub mod drift;

use prometheus::IntCounter;
use serde::{Deserialize, Serialize};

use crate::error::GatewayError;
use crate::manifest::Manifest;
use crate::tensor::Tensor;
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

/// Skew monitoring of one model version.
pub struct SkewMonitor {
    pub drift: DriftStats,
    policy: InvalidPolicy,
    /// Per feature, one counter per invalid kind.
    invalid: Vec<[IntCounter; 3]>,
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
        Self { drift, policy, invalid }
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
        if self.policy == InvalidPolicy::Reject {
            for (i, f) in self.drift.features.iter().enumerate().filter(|(_, f)| !f.is_categorical()) {
                let t = &inputs[f.input];
                for row in 0..t.shape[0] as usize {
                    let v = t.data.get_f64(row * f.row_len + f.offset);
                    if let Some(kind) = invalid_kind(f, v) {
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
            }
        }
        let count_invalid = self.policy == InvalidPolicy::Count;
        for (i, f) in self.drift.features.iter().enumerate() {
            let t = &inputs[f.input];
            let mut local = Local::default();
            if f.is_categorical() {
                for row in 0..t.shape[0] as usize {
                    if let Some(v) = t.data.bytes_at(row * f.row_len + f.offset) {
                        DriftStats::count_category(f, &mut local, v);
                    }
                }
                self.drift.add(f, &local);
                continue;
            }
            let mut invalid = [0u64; 3];
            t.data.for_each_strided(f.offset, f.row_len, t.shape[0] as usize, |v| {
                if count_invalid && let Some(kind) = invalid_kind(f, v) {
                    invalid[kind] += 1;
                }
                DriftStats::count(f, &mut local, v);
            });
            self.drift.add(f, &local);
            for (k, n) in invalid.iter().enumerate().filter(|(_, n)| **n > 0) {
                self.invalid[i][k].inc_by(*n);
            }
        }
        Ok(())
    }
}

fn bound(b: Option<f64>) -> String {
    b.map_or_else(|| "-".to_string(), |x| x.to_string())
}

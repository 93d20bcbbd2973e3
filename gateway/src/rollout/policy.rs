//! A rollout policy: how often to analyse, over what window, the weight steps, how many failed intervals roll
//! back, and the checks with their thresholds. One default in `[rollout.policy]`, per-model overrides in
//! `[rollout.models.<name>]`, and per-rollout overrides in the admin call that starts it; each layer names only the
//! fields it changes.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutPolicy {
    /// Seconds between two analyses.
    pub interval_secs: f64,
    /// How far back each analysis looks, in seconds (at least one interval). Longer windows smooth noise but
    /// react later.
    pub window_secs: f64,
    /// Canary requests needed in the last interval for a verdict; with fewer, the rollout holds and says so,
    /// because no data is not good data.
    pub min_requests: u64,
    /// Weight added per passing interval, and the last weight before promotion (percent); ignored when `weights`
    /// is set.
    pub step_weight: f64,
    pub max_weight: f64,
    /// Explicit weight steps in percent, increasing (e.g. [1, 5, 25, 50]).
    pub weights: Vec<f64>,
    /// Failed intervals (over the whole rollout) that roll the canary back.
    pub threshold: u32,
    /// After the last step, wait for an operator's `approve` instead of promoting.
    pub require_approval: bool,
    /// Share of requests (percent) the controller copies to the canary as a shadow while a divergence check is
    /// on, so stable and canary answer the same inputs.
    pub mirror_percent: f64,
    pub checks: Checks,
}

impl Default for RolloutPolicy {
    fn default() -> Self {
        Self {
            interval_secs: 30.0,
            window_secs: 60.0,
            min_requests: 100,
            step_weight: 10.0,
            max_weight: 50.0,
            weights: Vec::new(),
            threshold: 2,
            require_approval: false,
            mirror_percent: 10.0,
            checks: Checks::default(),
        }
    }
}

/// The checks; an unset threshold turns its check off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Checks {
    /// Lowest share of canary requests not failing on the server side (5xx), percent.
    pub min_success_rate: Option<f64>,
    /// Highest canary p99 latency, milliseconds.
    pub max_p99_ms: Option<f64>,
    /// Highest canary p99 as a multiple of stable's p99 over the same window.
    pub max_p99_ratio: Option<f64>,
    /// Below this canary p99 (ms) the ratio check passes: sub-millisecond differences are noise, not regressions.
    pub p99_floor_ms: f64,
    /// Highest share (percent) of class labels on which canary and stable disagree on the same inputs.
    pub max_label_disagreement: Option<f64>,
    /// Highest mean absolute difference of numeric outputs between canary and stable on the same inputs.
    pub max_mean_abs_diff: Option<f64>,
    /// Mirrored pairs needed in the window before a divergence check gives a verdict.
    pub min_pairs: u64,
    /// Highest population stability index of any canary input feature against its training baseline.
    pub max_psi: Option<f64>,
    /// Highest share (percent) of canary input values that are NaN, infinite or out of bounds.
    pub max_invalid_rate: Option<f64>,
    /// Largest drop (percentage points) of canary accuracy below stable's, from delayed labels. Labels arrive
    /// late, so until both sides have `min_feedback` of them in the window this check waits without blocking.
    pub max_accuracy_drop: Option<f64>,
    pub min_feedback: u64,
}

impl Default for Checks {
    fn default() -> Self {
        Self {
            min_success_rate: Some(99.0),
            max_p99_ms: None,
            max_p99_ratio: Some(2.0),
            p99_floor_ms: 1.0,
            max_label_disagreement: None,
            max_mean_abs_diff: None,
            min_pairs: 50,
            max_psi: None,
            max_invalid_rate: None,
            max_accuracy_drop: None,
            min_feedback: 30,
        }
    }
}

impl Checks {
    /// True when a check needs the canary mirrored against stable.
    pub fn needs_mirror(&self) -> bool {
        self.max_label_disagreement.is_some() || self.max_mean_abs_diff.is_some()
    }
}

pub const MIN_INTERVAL_SECS: f64 = 0.1;
pub const MAX_INTERVAL_SECS: f64 = 86_400.0;
/// Most intervals in one window.
pub const MAX_WINDOW_INTERVALS: usize = 1000;
/// Finest weight step (the routing resolution is 0.01 %).
pub const MIN_STEP_PERCENT: f64 = 0.01;
pub const MAX_STEPS: usize = 100;

/// What a policy may use on this gateway, for validation.
#[derive(Debug, Clone, Copy)]
pub struct Features {
    pub skew: bool,
    pub feedback: bool,
}

impl RolloutPolicy {
    /// The weight steps in basis points.
    pub fn steps(&self) -> Vec<crate::routing::Weight> {
        let percents: Vec<f64> = if self.weights.is_empty() {
            let mut v = Vec::new();
            let mut w = self.step_weight;
            while w < self.max_weight - 1e-9 {
                v.push(w);
                w += self.step_weight;
            }
            v.push(self.max_weight);
            v
        } else {
            self.weights.clone()
        };
        percents.into_iter().filter_map(crate::routing::Weight::from_percent).collect()
    }

    /// Analyses in one window.
    pub fn window_intervals(&self) -> usize {
        (self.window_secs / self.interval_secs).ceil().max(1.0) as usize
    }

    pub fn interval(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.interval_secs)
    }

    /// This policy with the fields of `patch` (a JSON object naming only what changes) laid over it.
    pub fn with_overrides(&self, patch: &serde_json::Value) -> Result<Self, String> {
        let mut base = serde_json::to_value(self).map_err(|e| e.to_string())?;
        merge(&mut base, patch);
        serde_json::from_value(base).map_err(|e| format!("invalid rollout policy: {e}"))
    }

    /// Every problem, each naming its field under `prefix`.
    pub fn problems(&self, prefix: &str, features: Features) -> Vec<String> {
        let mut errors = Vec::new();
        let mut err = |field: &str, msg: String| errors.push(format!("{prefix}.{field} {msg}"));
        let finite_positive = |v: f64| v.is_finite() && v > 0.0;
        if !(self.interval_secs.is_finite() && (MIN_INTERVAL_SECS..=MAX_INTERVAL_SECS).contains(&self.interval_secs)) {
            err(
                "interval_secs",
                format!("= {} must be from {MIN_INTERVAL_SECS} to {MAX_INTERVAL_SECS}", self.interval_secs),
            );
        } else if !(self.window_secs.is_finite()
            && self.window_secs >= self.interval_secs
            && self.window_secs <= self.interval_secs * MAX_WINDOW_INTERVALS as f64)
        {
            err(
                "window_secs",
                format!(
                    "= {} must be from interval_secs ({}) to {MAX_WINDOW_INTERVALS} intervals",
                    self.window_secs, self.interval_secs
                ),
            );
        }
        if self.threshold == 0 {
            err("threshold", "must be at least 1".into());
        }
        if self.min_requests == 0 {
            err("min_requests", "must be at least 1: a verdict on no traffic is no verdict".into());
        }
        // A step is a share below 100 %: the step to 100 % is the promotion, and at 100 % stable would get no
        // traffic to be compared with.
        let step = |v: f64| v.is_finite() && (MIN_STEP_PERCENT..100.0).contains(&v);
        let percent = |v: f64| v.is_finite() && v > 0.0 && v <= 100.0;
        if self.weights.is_empty() {
            if !step(self.step_weight) {
                err("step_weight", format!("= {} must be from {MIN_STEP_PERCENT} to below 100", self.step_weight));
            } else if !(step(self.max_weight) && self.max_weight >= self.step_weight) {
                err("max_weight", format!("= {} must be from step_weight to below 100", self.max_weight));
            } else if self.max_weight / self.step_weight > MAX_STEPS as f64 {
                err("step_weight", format!("makes more than {MAX_STEPS} steps up to max_weight"));
            }
        } else if !self.weights.iter().all(|&w| step(w))
            || self.weights.windows(2).any(|p| p[0] + MIN_STEP_PERCENT > p[1])
            || self.weights.len() > MAX_STEPS
        {
            err(
                "weights",
                format!(
                    "= {:?} must increase strictly (by {MIN_STEP_PERCENT} or more), each from {MIN_STEP_PERCENT} to \
                     below 100, at most {MAX_STEPS} steps",
                    self.weights
                ),
            );
        }
        if !(self.mirror_percent.is_finite() && (0.0..=100.0).contains(&self.mirror_percent)) {
            err("mirror_percent", format!("= {} must be in [0, 100]", self.mirror_percent));
        }
        let c = &self.checks;
        if c.needs_mirror() && self.mirror_percent <= 0.0 {
            err("mirror_percent", "must be above 0 while a divergence check is on".into());
        }
        for (field, v, ok) in [
            ("checks.min_success_rate", c.min_success_rate, c.min_success_rate.is_none_or(percent)),
            ("checks.max_p99_ms", c.max_p99_ms, c.max_p99_ms.is_none_or(finite_positive)),
            ("checks.max_p99_ratio", c.max_p99_ratio, c.max_p99_ratio.is_none_or(|r| r.is_finite() && r >= 1.0)),
            ("checks.max_label_disagreement", c.max_label_disagreement, c.max_label_disagreement.is_none_or(percent)),
            ("checks.max_mean_abs_diff", c.max_mean_abs_diff, c.max_mean_abs_diff.is_none_or(finite_positive)),
            ("checks.max_psi", c.max_psi, c.max_psi.is_none_or(finite_positive)),
            ("checks.max_invalid_rate", c.max_invalid_rate, c.max_invalid_rate.is_none_or(percent)),
            ("checks.max_accuracy_drop", c.max_accuracy_drop, c.max_accuracy_drop.is_none_or(percent)),
        ] {
            if !ok {
                err(field, format!("= {} is out of range", v.unwrap_or_default()));
            }
        }
        if !(c.p99_floor_ms.is_finite() && c.p99_floor_ms >= 0.0) {
            err("checks.p99_floor_ms", format!("= {} must be 0 or more", c.p99_floor_ms));
        }
        if (c.max_psi.is_some() || c.max_invalid_rate.is_some()) && !features.skew {
            err("checks", "uses max_psi or max_invalid_rate, which need skew.enabled = true".into());
        }
        let blocking = c.min_success_rate.is_some()
            || c.max_p99_ms.is_some()
            || c.max_p99_ratio.is_some()
            || c.needs_mirror()
            || c.max_psi.is_some()
            || c.max_invalid_rate.is_some();
        if !blocking {
            err("checks", "must turn on at least one check besides accuracy (which waits for delayed labels)".into());
        }
        if c.max_accuracy_drop.is_some() && !features.feedback {
            err("checks.max_accuracy_drop", "needs feedback.capacity above 0".into());
        }
        errors
    }
}

/// Reads a policy stored in the state file by an older or newer build: fields this build does not know are
/// dropped and missing ones take their defaults, so a version change never makes the state file unreadable.
pub fn lenient<'de, D: serde::Deserializer<'de>>(d: D) -> Result<RolloutPolicy, D::Error> {
    let stored = serde_json::Value::deserialize(d)?;
    let mut base = serde_json::to_value(RolloutPolicy::default()).map_err(serde::de::Error::custom)?;
    merge_known(&mut base, &stored);
    serde_json::from_value(base).map_err(serde::de::Error::custom)
}

/// Like [`merge`], but only for keys `base` already has.
fn merge_known(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                if let Some(slot) = b.get_mut(k) {
                    merge_known(slot, v);
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// Lays `patch` over `base`: objects merge key by key, anything else replaces.
fn merge(base: &mut serde_json::Value, patch: &serde_json::Value) {
    match (base, patch) {
        (serde_json::Value::Object(b), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (b, p) => *b = p.clone(),
    }
}

/// The default policy and per-model overrides (`[rollout]` in the config).
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolloutConfig {
    pub policy: RolloutPolicy,
    /// Per model: only the fields that differ from `policy` (same names, e.g. `checks.max_psi`).
    pub models: std::collections::BTreeMap<String, serde_json::Value>,
}

impl RolloutConfig {
    pub fn policy(&self, model: &str) -> Result<RolloutPolicy, String> {
        match self.models.get(model) {
            Some(patch) => self.policy.with_overrides(patch).map_err(|e| format!("rollout.models.{model}: {e}")),
            None => Ok(self.policy.clone()),
        }
    }

    /// Every problem in the default policy and the overrides.
    pub fn problems(&self, features: Features) -> Vec<String> {
        let mut errors = self.policy.problems("rollout.policy", features);
        for model in self.models.keys() {
            match self.policy(model) {
                Ok(p) => errors.extend(p.problems(&format!("rollout.models.{model}"), features)),
                Err(e) => errors.push(e),
            }
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::Weight;

    const ALL: Features = Features { skew: true, feedback: true };

    #[test]
    fn steps_come_from_step_and_max_or_the_explicit_list() {
        let p = RolloutPolicy { step_weight: 20.0, max_weight: 50.0, ..Default::default() };
        assert_eq!(p.steps(), vec![Weight(2000), Weight(4000), Weight(5000)]);
        let p = RolloutPolicy { weights: vec![1.0, 5.0, 50.0], ..Default::default() };
        assert_eq!(p.steps(), vec![Weight(100), Weight(500), Weight(5000)]);
        assert_eq!(RolloutPolicy::default().steps().len(), 5);
    }

    #[test]
    fn overrides_change_only_the_named_fields_and_refuse_unknown_ones() {
        let base = RolloutPolicy::default();
        let p =
            base.with_overrides(&serde_json::json!({"interval_secs": 2, "checks": {"max_psi": 0.2}})).expect("valid");
        assert_eq!(p.interval_secs, 2.0);
        assert_eq!(p.checks.max_psi, Some(0.2));
        assert_eq!(p.checks.min_success_rate, base.checks.min_success_rate);
        let e = base.with_overrides(&serde_json::json!({"checks": {"max_psii": 1}})).expect_err("typo");
        assert!(e.contains("max_psii"), "{e}");
    }

    #[test]
    fn a_stored_policy_from_another_build_still_reads() {
        #[derive(Deserialize)]
        struct Stored {
            #[serde(deserialize_with = "lenient")]
            policy: RolloutPolicy,
        }
        let s: Stored = serde_json::from_value(serde_json::json!({"policy": {
            "interval_secs": 7, "future_field": 1, "checks": {"max_psi": 0.3, "future_check": 2}
        }}))
        .expect("lenient");
        assert_eq!((s.policy.interval_secs, s.policy.checks.max_psi), (7.0, Some(0.3)));
        assert_eq!(s.policy.threshold, RolloutPolicy::default().threshold);
    }

    #[test]
    fn every_bad_field_is_named() {
        let p = RolloutPolicy {
            interval_secs: 0.0,
            threshold: 0,
            weights: vec![10.0, 5.0],
            checks: Checks { max_label_disagreement: Some(5.0), max_psi: Some(-1.0), ..Default::default() },
            mirror_percent: 0.0,
            ..Default::default()
        };
        let errors = p.problems("rollout.policy", ALL).join("\n");
        for field in ["interval_secs", "threshold", "weights", "mirror_percent", "checks.max_psi"] {
            assert!(errors.contains(&format!("rollout.policy.{field}")), "{field} missing from:\n{errors}");
        }
        assert!(RolloutPolicy::default().problems("p", ALL).is_empty());
        let huge = RolloutPolicy { interval_secs: 1e19, window_secs: 1e19, ..Default::default() };
        assert!(huge.problems("p", ALL).iter().any(|e| e.contains("p.interval_secs")));
        let wide = RolloutPolicy { interval_secs: 1.0, window_secs: 1e300, ..Default::default() };
        assert!(wide.problems("p", ALL).iter().any(|e| e.contains("p.window_secs")));
        let tiny = RolloutPolicy { step_weight: 1e-7, max_weight: 50.0, ..Default::default() };
        assert!(tiny.problems("p", ALL).iter().any(|e| e.contains("p.step_weight")));
        let full = RolloutPolicy { weights: vec![50.0, 100.0], ..Default::default() };
        assert!(full.problems("p", ALL).iter().any(|e| e.contains("p.weights")), "100 % is the promotion");
        let blind = RolloutPolicy {
            min_requests: 0,
            checks: Checks { min_success_rate: None, max_p99_ratio: None, ..Default::default() },
            ..Default::default()
        };
        let errors = blind.problems("p", ALL).join("\n");
        assert!(errors.contains("p.min_requests") && errors.contains("p.checks"), "{errors}");
        let drift = RolloutPolicy { checks: Checks { max_psi: Some(0.2), ..Default::default() }, ..Default::default() };
        let errors = drift.problems("p", Features { skew: false, feedback: true });
        assert!(errors.iter().any(|e| e.contains("skew.enabled")), "{errors:?}");
    }
}

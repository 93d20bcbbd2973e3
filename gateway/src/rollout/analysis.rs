//! One analysis of a canary against stable: the measurements over the window, each check's value against its
//! threshold, and the outcome. Pure functions of their inputs, so every rule is unit-tested without a server.
//!
//! The outcome is `Hold` when the last interval had too few canary requests or a blocking check had no data,
//! `Fail` when any check failed, and `Pass` only when every enabled check passed on real data.

use serde::{Deserialize, Serialize};

use crate::rollout::policy::RolloutPolicy;
use crate::rollout::stats::{PairStats, Quality, StatsSnapshot};

/// Cumulative measurements at one analysis; a window is the difference of two.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub canary: StatsSnapshot,
    pub stable: StatsSnapshot,
    /// Invalid input values the canary has seen.
    pub canary_invalid: u64,
    /// Mirrored pairs with stable live and the canary as shadow.
    pub pairs: PairStats,
    pub canary_quality: Quality,
    pub stable_quality: Quality,
}

impl Sample {
    /// Adds another replica's contribution (cluster mode sums every replica's evidence).
    pub fn add(&mut self, o: &Sample) {
        self.canary.add(&o.canary);
        self.stable.add(&o.stable);
        self.canary_invalid += o.canary_invalid;
        self.pairs.add(&o.pairs);
        self.canary_quality.add(&o.canary_quality);
        self.stable_quality.add(&o.stable_quality);
    }

    /// What was added after `earlier`; a counter that went down (the replica restarted) counts from zero.
    pub fn since_or_reset(&self, earlier: &Sample) -> Sample {
        let reset = self.canary.requests() < earlier.canary.requests()
            || self.stable.requests() < earlier.stable.requests()
            || self.pairs.pairs < earlier.pairs.pairs
            || self.canary_quality.feedback < earlier.canary_quality.feedback;
        if reset {
            return self.clone();
        }
        Sample {
            canary: self.canary.since(&earlier.canary),
            stable: self.stable.since(&earlier.stable),
            canary_invalid: self.canary_invalid.saturating_sub(earlier.canary_invalid),
            pairs: self.pairs.since(&earlier.pairs),
            canary_quality: self.canary_quality.since(&earlier.canary_quality),
            stable_quality: self.stable_quality.since(&earlier.stable_quality),
        }
    }
}

impl Drift {
    /// Combines replicas' drift: rows add up; PSI is not additive, so the worst replica's counts.
    pub fn combine(&mut self, o: &Drift) {
        self.rows = match (self.rows, o.rows) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        self.max_psi = match (self.max_psi, o.max_psi) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.features = self.features.max(o.features);
    }
}

/// What a rollout's measurements are now.
#[derive(Debug)]
pub enum Evidence {
    /// Cumulative measurements to add to the window.
    Ready(Box<Sample>, Drift),
    /// Not yet: some replica has not applied the current spec or not reported since, or the store is out of
    /// reach. The analysis neither passes nor fails; it waits.
    Wait(String),
}

/// The canary's drift, which is already windowed (the skew monitor's own sliding window).
#[derive(Debug, Clone, Default)]
pub struct Drift {
    /// `None` when skew checks are off.
    pub rows: Option<u64>,
    pub max_psi: Option<f64>,
    /// Features per input row, the denominator of the invalid-value rate.
    pub features: usize,
}

/// What one analysis looks at.
#[derive(Debug, Clone)]
pub struct Measured {
    pub canary: StatsSnapshot,
    pub stable: StatsSnapshot,
    /// Canary requests in the last interval alone.
    pub interval_requests: u64,
    pub canary_invalid: u64,
    pub pairs: PairStats,
    pub canary_quality: Quality,
    pub stable_quality: Quality,
    pub drift: Drift,
}

impl Measured {
    /// From the oldest sample of the window, the one before the newest, and the newest.
    pub fn between(first: &Sample, previous: &Sample, last: &Sample, drift: Drift) -> Self {
        Self {
            canary: last.canary.since(&first.canary),
            stable: last.stable.since(&first.stable),
            interval_requests: last.canary.since(&previous.canary).requests(),
            canary_invalid: last.canary_invalid.saturating_sub(first.canary_invalid),
            pairs: last.pairs.since(&first.pairs),
            canary_quality: last.canary_quality.since(&first.canary_quality),
            stable_quality: last.stable_quality.since(&first.stable_quality),
            drift,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Pass,
    Fail,
    /// Not enough data for a verdict; blocks the rollout (holds).
    NoData,
    /// Not enough data yet, and the check does not block (delayed labels).
    Waiting,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    /// Also the rollback reason label when it fails: a fixed, small set of names.
    pub check: String,
    pub status: Status,
    pub value: Option<f64>,
    pub threshold: f64,
    pub detail: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Pass,
    Fail,
    Hold,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub outcome: Outcome,
    /// Why, in a sentence.
    pub reason: String,
    pub interval_requests: u64,
    pub window_requests: u64,
    pub stable_window_requests: u64,
    pub checks: Vec<CheckResult>,
}

impl Analysis {
    pub fn failed(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks.iter().filter(|c| c.status == Status::Fail)
    }
}

/// Names of the checks, which are also the rollback reasons in metrics.
pub const CHECKS: [&str; 8] = [
    "success_rate",
    "latency_p99",
    "latency_ratio",
    "label_disagreement",
    "output_divergence",
    "drift",
    "invalid_inputs",
    "accuracy",
];

/// The `&'static` name of a check, for metric labels.
pub fn reason_label(check: &str) -> &'static str {
    CHECKS.iter().find(|c| **c == check).copied().unwrap_or("other")
}

fn ms(secs: f64) -> f64 {
    secs * 1000.0
}

/// At most `threshold`, or at least it, as a status.
fn at_most(value: f64, threshold: f64) -> Status {
    if value <= threshold { Status::Pass } else { Status::Fail }
}

pub fn analyse(policy: &RolloutPolicy, m: &Measured) -> Analysis {
    let c = &policy.checks;
    let mut checks = Vec::new();
    let mut push = |check: &str, status: Status, value: Option<f64>, threshold: f64, detail: String| {
        checks.push(CheckResult { check: check.into(), status, value, threshold, detail });
    };
    let n = m.canary.requests();
    let canary_p99 = m.canary.quantile(0.99).map(ms);
    if let Some(min) = c.min_success_rate {
        match m.canary.success_rate() {
            Some(rate) => {
                let pct = rate * 100.0;
                let status = if pct >= min { Status::Pass } else { Status::Fail };
                let detail = format!("{} of {n} canary requests failed on the server side", m.canary.server_errors);
                push("success_rate", status, Some(pct), min, detail);
            }
            None => push("success_rate", Status::NoData, None, min, "no canary requests in the window".into()),
        }
    }
    if let Some(max) = c.max_p99_ms {
        match canary_p99 {
            Some(p) => push("latency_p99", at_most(p, max), Some(p), max, format!("canary p99 {p:.2} ms")),
            None => push("latency_p99", Status::NoData, None, max, "no canary requests in the window".into()),
        }
    }
    if let Some(max) = c.max_p99_ratio {
        match (canary_p99, m.stable.quantile(0.99).map(ms)) {
            (Some(cp), Some(sp)) => {
                let ratio = cp / sp.max(1e-6);
                // Below the floor a high ratio is noise (0.4 ms against 0.2 ms is "2x" and harmless).
                let status = if cp <= c.p99_floor_ms { Status::Pass } else { at_most(ratio, max) };
                let detail = format!("canary p99 {cp:.2} ms, stable p99 {sp:.2} ms (floor {} ms)", c.p99_floor_ms);
                push("latency_ratio", status, Some(ratio), max, detail);
            }
            _ => push("latency_ratio", Status::NoData, None, max, "no stable or canary requests in the window".into()),
        }
    }
    let pairs = &m.pairs;
    let enough_pairs = pairs.pairs >= c.min_pairs;
    let few_pairs = || format!("{} mirrored pairs in the window, need {}", pairs.pairs, c.min_pairs);
    if let Some(max) = c.max_label_disagreement {
        match pairs.disagreement_rate().filter(|_| enough_pairs) {
            Some(rate) => {
                let pct = rate * 100.0;
                let detail = format!(
                    "{} of {} labels differ over {} mirrored pairs",
                    pairs.label_disagreed, pairs.label_compared, pairs.pairs
                );
                push("label_disagreement", at_most(pct, max), Some(pct), max, detail);
            }
            None if enough_pairs => push(
                "label_disagreement",
                Status::NoData,
                None,
                max,
                "the model has no integer (class label) outputs to compare".into(),
            ),
            None => push("label_disagreement", Status::NoData, None, max, few_pairs()),
        }
    }
    if let Some(max) = c.max_mean_abs_diff {
        match pairs.mean_abs_diff().filter(|_| enough_pairs) {
            Some(d) => {
                let detail = format!("over {} numeric values in {} mirrored pairs", pairs.values_compared, pairs.pairs);
                push("output_divergence", at_most(d, max), Some(d), max, detail);
            }
            None if enough_pairs => push(
                "output_divergence",
                Status::NoData,
                None,
                max,
                "the model has no numeric outputs to compare".into(),
            ),
            None => push("output_divergence", Status::NoData, None, max, few_pairs()),
        }
    }
    if let Some(max) = c.max_psi {
        let min_rows = crate::skew::drift::MIN_ROWS;
        match (m.drift.rows, m.drift.max_psi) {
            (None, _) => push("drift", Status::NoData, None, max, "skew checks are off".into()),
            (Some(rows), Some(psi)) if rows >= min_rows => {
                push("drift", at_most(psi, max), Some(psi), max, format!("highest feature PSI over {rows} rows"))
            }
            (Some(rows), _) => {
                push("drift", Status::NoData, None, max, format!("{rows} rows in the drift window, need {min_rows}"))
            }
        }
    }
    if let Some(max) = c.max_invalid_rate {
        let values = m.canary.rows * m.drift.features as u64;
        if values > 0 {
            let pct = m.canary_invalid as f64 / values as f64 * 100.0;
            let detail = format!("{} of {values} canary input values invalid", m.canary_invalid);
            push("invalid_inputs", at_most(pct, max), Some(pct), max, detail);
        } else {
            push("invalid_inputs", Status::NoData, None, max, "no canary input values in the window".into());
        }
    }
    if let Some(max) = c.max_accuracy_drop {
        let (cq, sq) = (&m.canary_quality, &m.stable_quality);
        match (cq.accuracy(), sq.accuracy()) {
            (Some(ca), Some(sa)) if cq.labels >= c.min_feedback && sq.labels >= c.min_feedback => {
                let drop = (sa - ca) * 100.0;
                let detail = format!(
                    "canary accuracy {:.1} % over {} labels, stable {:.1} % over {}",
                    ca * 100.0,
                    cq.labels,
                    sa * 100.0,
                    sq.labels
                );
                push("accuracy", at_most(drop, max), Some(drop), max, detail);
            }
            _ => push(
                "accuracy",
                Status::Waiting,
                None,
                max,
                format!(
                    "{} canary and {} stable labels in the window, need {} each",
                    cq.labels, sq.labels, c.min_feedback
                ),
            ),
        }
    }

    let (outcome, reason) = if m.interval_requests < policy.min_requests {
        (
            Outcome::Hold,
            format!(
                "too little traffic: {} canary requests in the last interval, need {}",
                m.interval_requests, policy.min_requests
            ),
        )
    } else if checks.iter().any(|c| c.status == Status::Fail) {
        let failed: Vec<String> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| format!("{} = {} (threshold {})", c.check, fmt(c.value), c.threshold))
            .collect();
        (Outcome::Fail, format!("failed: {}", failed.join(", ")))
    } else if let Some(missing) = checks.iter().find(|c| c.status == Status::NoData) {
        (Outcome::Hold, format!("no data for {}: {}", missing.check, missing.detail))
    } else {
        (Outcome::Pass, "every check passed".to_string())
    };
    Analysis {
        outcome,
        reason,
        interval_requests: m.interval_requests,
        window_requests: n,
        stable_window_requests: m.stable.requests(),
        checks,
    }
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::policy::Checks;
    use crate::rollout::stats::{Outcome as Req, VersionStats};
    use proptest::prelude::*;
    use std::time::Duration;

    fn traffic(ok: u64, failed: u64, latency: Duration) -> StatsSnapshot {
        let s = VersionStats::default();
        for _ in 0..ok {
            s.record(Req::Ok, latency);
        }
        for _ in 0..failed {
            s.record(Req::ServerError, latency);
        }
        s.add_rows((ok + failed) as usize);
        s.snapshot()
    }

    fn measured(canary: StatsSnapshot, stable: StatsSnapshot) -> Measured {
        Measured {
            interval_requests: canary.requests(),
            canary,
            stable,
            canary_invalid: 0,
            pairs: PairStats::default(),
            canary_quality: Quality::default(),
            stable_quality: Quality::default(),
            drift: Drift { rows: Some(0), max_psi: None, features: 30 },
        }
    }

    fn policy(checks: Checks) -> RolloutPolicy {
        RolloutPolicy { min_requests: 50, checks, ..Default::default() }
    }

    fn status(a: &Analysis, check: &str) -> Status {
        a.checks.iter().find(|c| c.check == check).unwrap_or_else(|| panic!("{check} in {a:?}")).status
    }

    const FAST: Duration = Duration::from_micros(300);

    #[test]
    fn a_healthy_canary_passes_the_default_checks() {
        let a = analyse(&policy(Checks::default()), &measured(traffic(100, 0, FAST), traffic(900, 0, FAST)));
        assert_eq!(a.outcome, Outcome::Pass, "{a:?}");
    }

    #[test]
    fn too_little_traffic_holds_even_when_checks_fail() {
        let a = analyse(&policy(Checks::default()), &measured(traffic(10, 10, FAST), traffic(900, 0, FAST)));
        assert_eq!(a.outcome, Outcome::Hold);
        assert!(a.reason.contains("too little traffic: 20 canary requests"), "{}", a.reason);
        assert_eq!(status(&a, "success_rate"), Status::Fail, "the check still reports what it saw");
    }

    #[test]
    fn errors_fail_the_success_rate() {
        let a = analyse(&policy(Checks::default()), &measured(traffic(95, 5, FAST), traffic(900, 0, FAST)));
        assert_eq!(a.outcome, Outcome::Fail);
        assert_eq!(status(&a, "success_rate"), Status::Fail);
        assert!(a.reason.contains("success_rate = 95.0000 (threshold 99)"), "{}", a.reason);
    }

    #[test]
    fn slowness_fails_the_ratio_but_sub_floor_noise_does_not() {
        let slow = analyse(
            &policy(Checks::default()),
            &measured(traffic(100, 0, Duration::from_millis(12)), traffic(900, 0, FAST)),
        );
        assert_eq!(status(&slow, "latency_ratio"), Status::Fail, "{slow:?}");
        let noise = analyse(
            &policy(Checks::default()),
            &measured(traffic(100, 0, Duration::from_micros(900)), traffic(900, 0, Duration::from_micros(200))),
        );
        assert_eq!(status(&noise, "latency_ratio"), Status::Pass, "{noise:?}");
        let absolute = policy(Checks { max_p99_ms: Some(5.0), ..Default::default() });
        let a = analyse(&absolute, &measured(traffic(100, 0, Duration::from_millis(6)), traffic(900, 0, FAST)));
        assert_eq!(status(&a, "latency_p99"), Status::Fail);
    }

    #[test]
    fn divergence_needs_enough_pairs_and_fails_above_its_threshold() {
        let p = policy(Checks { max_label_disagreement: Some(5.0), min_pairs: 20, ..Default::default() });
        let mut m = measured(traffic(100, 0, FAST), traffic(900, 0, FAST));
        m.pairs = PairStats { pairs: 10, label_compared: 10, label_disagreed: 5, ..Default::default() };
        let a = analyse(&p, &m);
        assert_eq!((a.outcome, status(&a, "label_disagreement")), (Outcome::Hold, Status::NoData));
        assert!(a.reason.contains("10 mirrored pairs in the window, need 20"), "{}", a.reason);
        m.pairs = PairStats { pairs: 40, label_compared: 40, label_disagreed: 8, ..Default::default() };
        let a = analyse(&p, &m);
        assert_eq!((a.outcome, status(&a, "label_disagreement")), (Outcome::Fail, Status::Fail));
        m.pairs.label_disagreed = 1;
        assert_eq!(analyse(&p, &m).outcome, Outcome::Pass);
    }

    #[test]
    fn drift_without_enough_rows_holds_and_above_threshold_fails() {
        let p = policy(Checks { max_psi: Some(0.25), ..Default::default() });
        let mut m = measured(traffic(100, 0, FAST), traffic(900, 0, FAST));
        m.drift = Drift { rows: Some(40), max_psi: None, features: 30 };
        assert_eq!(analyse(&p, &m).outcome, Outcome::Hold);
        m.drift = Drift { rows: Some(400), max_psi: Some(0.9), features: 30 };
        assert_eq!(status(&analyse(&p, &m), "drift"), Status::Fail);
        m.drift.rows = None;
        assert!(analyse(&p, &m).reason.contains("skew checks are off"));
    }

    #[test]
    fn invalid_rate_and_accuracy() {
        let p = policy(Checks { max_invalid_rate: Some(1.0), max_accuracy_drop: Some(5.0), ..Default::default() });
        let mut m = measured(traffic(100, 0, FAST), traffic(900, 0, FAST));
        m.canary_invalid = 100; // 100 of 3000 values: 3.3 %
        let a = analyse(&p, &m);
        assert_eq!(status(&a, "invalid_inputs"), Status::Fail);
        assert_eq!(status(&a, "accuracy"), Status::Waiting, "no labels yet");
        m.canary_invalid = 0;
        assert_eq!(analyse(&p, &m).outcome, Outcome::Pass, "waiting for labels does not block");
        m.canary_quality = Quality { feedback: 50, labels: 50, correct: 40, ..Default::default() };
        m.stable_quality = Quality { feedback: 50, labels: 50, correct: 48, ..Default::default() };
        assert_eq!(status(&analyse(&p, &m), "accuracy"), Status::Fail, "80 % against 96 %");
    }

    proptest! {
        /// No data is never good data: with fewer canary requests than the minimum the outcome is always Hold,
        /// and a Pass always means every enabled check saw data and passed.
        #[test]
        fn pass_only_on_enough_data(ok in 0u64..300, failed in 0u64..30, stable in 0u64..300, min in 1u64..200) {
            let p = RolloutPolicy { min_requests: min, ..Default::default() };
            let a = analyse(&p, &measured(traffic(ok, failed, FAST), traffic(stable, 0, FAST)));
            if ok + failed < min {
                prop_assert_eq!(a.outcome, Outcome::Hold);
            }
            if a.outcome == Outcome::Pass {
                prop_assert!(a.checks.iter().all(|c| c.status == Status::Pass));
                prop_assert!(ok + failed >= min && stable > 0);
            }
        }
    }
}

//! The rollout state machine: the durable state of one model's rollout (kept in the state file with the routing,
//! so a restart resumes it) and the rule that turns an analysis into a decision. Pure: the controller applies the
//! decision to the routing.
//!
//! ```text
//! Progressing --pass--> next step ... --pass at last step--> Promoted (or AwaitingApproval --approve--> Promoted)
//!      |  \--fail (threshold reached)--> RolledBack
//!      |   \-hold (too little traffic, no data): same weight, says why
//!      +--pause--> Paused --resume--> Progressing;  any active phase --abort--> Aborted
//! ```

use serde::{Deserialize, Serialize};

use crate::rollout::analysis::{Analysis, Outcome, reason_label};
use crate::rollout::policy::RolloutPolicy;
use crate::routing::Weight;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Progressing,
    Paused,
    /// Every step passed; waiting for an operator's approval to promote (analysis goes on meanwhile).
    AwaitingApproval,
    Promoted,
    RolledBack,
    Aborted,
}

impl Phase {
    pub const ALL: [Phase; 6] = [
        Phase::Progressing,
        Phase::Paused,
        Phase::AwaitingApproval,
        Phase::Promoted,
        Phase::RolledBack,
        Phase::Aborted,
    ];

    pub fn is_active(self) -> bool {
        matches!(self, Phase::Progressing | Phase::Paused | Phase::AwaitingApproval)
    }

    /// Phases in which the controller analyses.
    pub fn analyses(self) -> bool {
        matches!(self, Phase::Progressing | Phase::AwaitingApproval)
    }

    pub fn label(self) -> &'static str {
        match self {
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::AwaitingApproval => "awaiting_approval",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
            Phase::Aborted => "aborted",
        }
    }
}

/// One model's rollout, as the state file keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub canary: u64,
    /// The stable version when the rollout started; the canary is compared with it.
    pub stable: u64,
    #[serde(deserialize_with = "crate::rollout::policy::lenient")]
    pub policy: RolloutPolicy,
    /// Bumped by every change, so a decision computed before an operator's command is not applied after it.
    #[serde(default)]
    pub generation: u64,
    pub phase: Phase,
    /// Index of the current weight in `policy.steps()`.
    pub step: usize,
    /// Failed intervals so far; `policy.threshold` of them roll back.
    pub failed_intervals: u32,
    /// Analyses run so far.
    pub analyses: u64,
    pub started_at: String,
    pub updated_at: String,
    /// True while the controller mirrors stable's requests to the canary (for divergence checks); it stops the
    /// shadow when the rollout ends.
    #[serde(default)]
    pub mirroring: bool,
    /// What the last decision was and why.
    pub message: String,
    #[serde(default)]
    pub last_analysis: Option<Analysis>,
}

/// What to do after an analysis.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Keep the weight; the reason says why (too little traffic, missing data, waiting for approval).
    Hold(String),
    /// A failed interval below the threshold: keep the weight, count it.
    Failed {
        count: u32,
    },
    /// Move to the next step.
    Advance {
        from: Weight,
        to: Weight,
    },
    /// Last step passed, approval required.
    AwaitApproval,
    Promote,
    /// `reason` is the first failing check (a fixed label).
    RollBack {
        reason: &'static str,
        count: u32,
    },
}

impl Decision {
    /// A short fixed label for metrics and event kinds.
    pub fn label(&self) -> &'static str {
        match self {
            Decision::Hold(_) => "hold",
            Decision::Failed { .. } => "failed",
            Decision::Advance { .. } => "advance",
            Decision::AwaitApproval => "await_approval",
            Decision::Promote => "promote",
            Decision::RollBack { .. } => "rollback",
        }
    }
}

impl Rollout {
    pub fn weight(&self) -> Weight {
        let steps = self.policy.steps();
        steps.get(self.step).or(steps.last()).copied().unwrap_or_default()
    }

    /// The decision after `analysis`.
    pub fn decide(&self, analysis: &Analysis) -> Decision {
        match analysis.outcome {
            Outcome::Hold => Decision::Hold(analysis.reason.clone()),
            Outcome::Fail => {
                let count = self.failed_intervals + 1;
                if count >= self.policy.threshold {
                    let reason = analysis.failed().next().map_or("other", |c| reason_label(&c.check));
                    Decision::RollBack { reason, count }
                } else {
                    Decision::Failed { count }
                }
            }
            Outcome::Pass if self.phase == Phase::AwaitingApproval => {
                Decision::Hold("every step passed; waiting for approval to promote".into())
            }
            Outcome::Pass => self.next_step(),
        }
    }

    /// The step after this one: the next weight, or the end of the steps.
    pub fn next_step(&self) -> Decision {
        let steps = self.policy.steps();
        if self.step + 1 < steps.len() {
            Decision::Advance { from: self.weight(), to: steps[self.step + 1] }
        } else if self.policy.require_approval {
            Decision::AwaitApproval
        } else {
            Decision::Promote
        }
    }

    /// Applies a decision to this state (the controller applies it to the routing).
    pub fn apply(&mut self, d: &Decision, message: String) {
        match d {
            Decision::Hold(_) => {}
            Decision::Failed { count } => self.failed_intervals = *count,
            Decision::Advance { .. } => self.step += 1,
            Decision::AwaitApproval => self.phase = Phase::AwaitingApproval,
            Decision::Promote => self.phase = Phase::Promoted,
            Decision::RollBack { count, .. } => {
                self.failed_intervals = *count;
                self.phase = Phase::RolledBack;
            }
        }
        self.touch(message);
    }

    /// Records a change: new message, time and generation.
    pub fn touch(&mut self, message: String) {
        self.message = message;
        self.updated_at = crate::clock::now_rfc3339();
        self.generation += 1;
    }
}

impl Decision {
    /// The journal's event kind for this decision.
    pub fn journal_kind(&self) -> &'static str {
        match self {
            Decision::Promote => "promoted",
            Decision::RollBack { .. } => "rolled_back",
            Decision::Hold(_) => "rollout_held",
            Decision::Failed { .. } => "rollout_failed_interval",
            Decision::Advance { .. } => "rollout_advanced",
            Decision::AwaitApproval => "rollout_awaiting_approval",
        }
    }
}

impl Rollout {
    /// The journal message for decision `d` taken on `analysis` while the rollout stood as `self`.
    pub fn describe(&self, d: &Decision, analysis: &Analysis) -> String {
        let r = self;
        match d {
            Decision::Hold(why) => format!("holding at {}: {why}", pct(r.weight())),
            Decision::Failed { count } => format!(
                "analysis failed ({count} of {} before rollback); holding at {}: {}",
                r.policy.threshold,
                pct(r.weight()),
                analysis.reason
            ),
            Decision::Advance { from, to } => format!("analysis passed; canary weight {} -> {}", pct(*from), pct(*to)),
            Decision::AwaitApproval => format!("every step passed at {}; waiting for approval", pct(r.weight())),
            Decision::Promote => format!(
                "every step passed; version {} promoted to stable (was {}) after {} analyses",
                r.canary,
                r.stable,
                r.analyses + 1
            ),
            Decision::RollBack { reason, count } => format!(
                "canary version {} rolled back ({reason}) after {count} failed intervals: {}",
                r.canary, analysis.reason
            ),
        }
    }

    /// The measurements behind decision `d`, as its journal event carries them.
    pub fn decision_data(&self, d: &Decision, analysis: &Analysis) -> serde_json::Value {
        let r = self;
        let after = match d {
            Decision::Advance { to, .. } => to.percent(),
            Decision::Promote => 100.0,
            Decision::RollBack { .. } => 0.0,
            _ => r.weight().percent(),
        };
        let failed = match d {
            Decision::Failed { count } | Decision::RollBack { count, .. } => *count,
            _ => r.failed_intervals,
        };
        serde_json::json!({
            "decision": d.label(),
            "canary": r.canary,
            "stable": r.stable,
            "step": r.step,
            "weight_before": r.weight().percent(),
            "weight_after": after,
            "failed_intervals": failed,
            "threshold": r.policy.threshold,
            "analysis": analysis,
        })
    }
}

/// A weight as operators read it in messages: `5 %`.
pub fn pct(w: Weight) -> String {
    format!("{} %", w.percent())
}

/// The journal line for a rollout found in the state file at start: it resumes where it was, with a fresh window.
pub fn restored_message(r: &Rollout) -> String {
    format!(
        "rollout of version {} restored after a restart: {} at {}, step {} of {}, {} failed intervals; the analysis \
         window starts afresh",
        r.canary,
        r.phase.label(),
        pct(r.weight()),
        r.step + 1,
        r.policy.steps().len(),
        r.failed_intervals
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::analysis::{CheckResult, Status};

    fn rollout(threshold: u32, approval: bool) -> Rollout {
        Rollout {
            canary: 2,
            stable: 1,
            generation: 0,
            policy: RolloutPolicy {
                weights: vec![10.0, 50.0],
                threshold,
                require_approval: approval,
                ..Default::default()
            },
            phase: Phase::Progressing,
            step: 0,
            failed_intervals: 0,
            analyses: 0,
            started_at: String::new(),
            updated_at: String::new(),
            mirroring: false,
            message: String::new(),
            last_analysis: None,
        }
    }

    fn analysis(outcome: Outcome, failing: &str) -> Analysis {
        let checks = if failing.is_empty() {
            Vec::new()
        } else {
            vec![CheckResult {
                check: failing.into(),
                status: Status::Fail,
                value: Some(1.0),
                threshold: 0.5,
                detail: String::new(),
            }]
        };
        Analysis {
            outcome,
            reason: "r".into(),
            interval_requests: 0,
            window_requests: 0,
            stable_window_requests: 0,
            checks,
        }
    }

    fn run(r: &mut Rollout, outcomes: &[(Outcome, &str)]) -> Vec<&'static str> {
        outcomes
            .iter()
            .map(|(o, f)| {
                let d = r.decide(&analysis(*o, f));
                r.apply(&d, String::new());
                d.label()
            })
            .collect()
    }

    #[test]
    fn passing_walks_every_step_then_promotes() {
        let mut r = rollout(2, false);
        assert_eq!(r.weight(), Weight(1000));
        assert_eq!(run(&mut r, &[(Outcome::Pass, ""), (Outcome::Pass, "")]), ["advance", "promote"]);
        assert_eq!((r.phase, r.weight()), (Phase::Promoted, Weight(5000)));
    }

    #[test]
    fn holds_neither_advance_nor_count_as_failures() {
        let mut r = rollout(1, false);
        assert_eq!(run(&mut r, &[(Outcome::Hold, ""), (Outcome::Hold, "")]), ["hold", "hold"]);
        assert_eq!((r.phase, r.step, r.failed_intervals), (Phase::Progressing, 0, 0));
    }

    #[test]
    fn the_threshold_th_failure_rolls_back_with_the_failing_check_as_reason() {
        let mut r = rollout(2, false);
        let got = run(&mut r, &[(Outcome::Fail, "latency_ratio"), (Outcome::Pass, ""), (Outcome::Fail, "drift")]);
        assert_eq!(got, ["failed", "advance", "rollback"]);
        assert_eq!(r.phase, Phase::RolledBack);
        let r = rollout(1, false);
        assert_eq!(
            r.decide(&analysis(Outcome::Fail, "success_rate")),
            Decision::RollBack { reason: "success_rate", count: 1 }
        );
    }

    #[test]
    fn approval_gate_waits_after_the_last_step_and_still_rolls_back_on_failure() {
        let mut r = rollout(1, true);
        assert_eq!(
            run(&mut r, &[(Outcome::Pass, ""), (Outcome::Pass, ""), (Outcome::Pass, "")]),
            ["advance", "await_approval", "hold"]
        );
        assert_eq!(r.phase, Phase::AwaitingApproval);
        assert_eq!(run(&mut r, &[(Outcome::Fail, "accuracy")]), ["rollback"]);
    }
}

//! Automatic canary analysis inside the gateway. Per model, a rollout moves a canary through weight steps: every
//! interval the controller measures the canary against stable over a sliding window ([`analysis`]), decides
//! ([`machine`]) to advance, hold, promote or roll back, applies that to the routing, and journals the decision
//! with its measurements. The rollout lives in the model's control block, so it is persisted with the routing and
//! a restart resumes it; only the measurement window (in memory) starts afresh.
//!
//! Measurements come from what the gateway already keeps: per-version outcome and latency counters
//! ([`stats`]), the skew monitor's drift and invalid-value counts, the mirror's divergence book (stable's requests
//! copied to the canary while a divergence check is on) and the feedback book.

pub mod analysis;
pub mod machine;
pub mod policy;
pub mod stats;

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::core::Core;
use crate::error::GatewayError;
use crate::model::slot::Control;
use crate::routing::spec::{CanarySpec, ShadowSpec};
use crate::routing::{Canary, Weight};
use analysis::{Analysis, Drift, Measured, Sample, analyse};
use machine::{Decision, Phase, Rollout};
use policy::{Features, RolloutPolicy};

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

/// The in-memory side of one model's rollout: the samples of the current window.
struct Window {
    /// Which rollout the samples belong to (`started_at`), so a new rollout never reads an old one's window.
    rollout: String,
    samples: VecDeque<Sample>,
    next_due: Instant,
}

#[derive(Debug)]
pub struct Controller {
    config: RolloutConfig,
    features: Features,
    windows: Mutex<HashMap<String, Window>>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Window({}, {} samples)", self.rollout, self.samples.len())
    }
}

/// Operator commands on a running rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Pause,
    Resume,
    Abort,
    /// Advance one step now, without waiting for an analysis.
    Skip,
    /// Promote a rollout waiting for approval.
    Approve,
}

impl Command {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pause" => Self::Pause,
            "resume" => Self::Resume,
            "abort" => Self::Abort,
            "skip" => Self::Skip,
            "approve" => Self::Approve,
            _ => return None,
        })
    }
}

fn conflict(msg: String) -> GatewayError {
    GatewayError::Conflict(msg)
}

fn pct(w: Weight) -> String {
    format!("{} %", w.percent())
}

impl Controller {
    pub fn new(config: RolloutConfig, features: Features) -> Self {
        Self { config, features, windows: Mutex::default() }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a rollout of `version` as the canary at the first step. `overrides` names policy fields that differ
    /// from the model's configured policy.
    pub fn start(
        &self,
        core: &Core,
        model: &str,
        version: u64,
        overrides: Option<&serde_json::Value>,
    ) -> Result<Rollout, GatewayError> {
        let base = self.config.policy(model).map_err(GatewayError::InvalidInput)?;
        let policy = match overrides {
            Some(p) => base.with_overrides(p).map_err(GatewayError::InvalidInput)?,
            None => base,
        };
        let problems = policy.problems("policy", self.features);
        if !problems.is_empty() {
            return Err(GatewayError::invalid(problems.join("; ")));
        }
        let first = policy.steps()[0];
        core.registry.change(model, "rollout_started", |slot, c| {
            if let Some(r) = c.rollout.as_ref().filter(|r| r.phase.is_active()) {
                return Err(conflict(format!(
                    "a rollout of version {} is already {}; abort it first",
                    r.canary,
                    r.phase.label()
                )));
            }
            slot.version(&version.to_string())?;
            let routing = slot.routing();
            let stable = routing.stable.as_ref().map(|v| v.number).ok_or_else(|| {
                conflict(format!("model '{model}' has no stable version to compare a canary with"))
            })?;
            if stable == version {
                return Err(conflict(format!("version {version} is already the stable version")));
            }
            if let Some(k) = c.spec.canary.filter(|k| k.version != version) {
                return Err(conflict(format!(
                    "version {} is the canary; roll it back before starting a rollout of version {version}",
                    k.version
                )));
            }
            c.spec.canary = Some(CanarySpec { version, weight: first });
            let mirroring = policy.checks.needs_mirror();
            let mut note = String::new();
            if mirroring {
                if let Some(s) = c.spec.shadow.filter(|s| s.version != version) {
                    note = format!("; replaces shadow version {}", s.version);
                }
                let share = Weight::from_percent(policy.mirror_percent).unwrap_or_default();
                c.spec.shadow = Some(ShadowSpec { version, share });
                note = format!("; mirroring {} % of stable's requests to it{note}", policy.mirror_percent);
            }
            let now = crate::state::now_rfc3339();
            let steps: Vec<f64> = policy.steps().iter().map(|w| w.percent()).collect();
            let message = format!(
                "rollout of version {version} against stable {stable} started at {}; steps {steps:?} %, analysis every {} s over {} s{note}",
                pct(first),
                policy.interval_secs,
                policy.window_secs
            );
            let data = serde_json::json!({ "policy": policy });
            c.rollout = Some(Rollout {
                canary: version,
                stable,
                policy: policy.clone(),
                phase: Phase::Progressing,
                step: 0,
                failed_intervals: 0,
                analyses: 0,
                generation: 0,
                started_at: now.clone(),
                updated_at: now,
                mirroring,
                message: message.clone(),
                last_analysis: None,
            });
            Ok((message, data))
        })?;
        let slot = core.model(model)?;
        let rollout =
            slot.control().rollout.clone().ok_or_else(|| GatewayError::Internal("rollout vanished".into()))?;
        self.begin_window(core, model, &rollout);
        Ok(rollout)
    }

    /// Takes the first sample of a new window; the first analysis follows one interval later.
    fn begin_window(&self, core: &Core, model: &str, r: &Rollout) {
        let Ok(sample) = self.sample(core, model, r).map(|(s, _)| s) else { return };
        self.windows().insert(
            model.to_string(),
            Window {
                rollout: r.started_at.clone(),
                samples: VecDeque::from([sample]),
                next_due: Instant::now() + r.policy.interval(),
            },
        );
    }

    /// Applies an operator command.
    pub fn command(&self, core: &Core, model: &str, cmd: Command, note: &str) -> Result<(), GatewayError> {
        let note = if note.is_empty() { String::new() } else { format!(": {note}") };
        // A skip past the last step promotes, and is journaled as the promotion it is.
        let skip_promotes = cmd == Command::Skip
            && core.model(model)?.control().rollout.as_ref().is_some_and(|r| r.next_step() == Decision::Promote);
        let kind = match cmd {
            Command::Pause => "rollout_paused",
            Command::Resume => "rollout_resumed",
            Command::Abort => "rollout_aborted",
            Command::Skip if skip_promotes => "promoted",
            Command::Skip => "rollout_skipped",
            Command::Approve => "promoted",
        };
        core.registry.change(model, kind, |_, c| {
            let r = c
                .rollout
                .as_mut()
                .filter(|r| r.phase.is_active())
                .ok_or_else(|| conflict(format!("model '{model}' has no active rollout")))?;
            let before = r.weight();
            let message = match (cmd, r.phase) {
                (Command::Pause, Phase::Progressing | Phase::AwaitingApproval) => {
                    r.phase = Phase::Paused;
                    format!("rollout paused at {}{note}", pct(before))
                }
                (Command::Resume, Phase::Paused) => {
                    r.phase = Phase::Progressing;
                    // An operator may have moved the weight while paused; the rollout goes on from its own step.
                    let mut msg =
                        format!("rollout resumed at {}; the analysis window starts afresh{note}", pct(before));
                    if let Some(k) = c.spec.canary.as_mut().filter(|k| k.weight != before) {
                        msg = format!("{msg} (weight {} set back to the step's)", pct(k.weight));
                        k.weight = before;
                    }
                    msg
                }
                (Command::Abort, _) => {
                    let v = r.canary;
                    r.phase = Phase::Aborted;
                    end_canary(c, v);
                    core.metrics.rolled_back(model, "aborted");
                    format!("rollout aborted; canary version {v} removed, stable takes all traffic{note}")
                }
                (Command::Skip, Phase::Progressing | Phase::Paused) => {
                    let d = r.next_step();
                    let msg = match &d {
                        Decision::Advance { from, to } => {
                            format!("step skipped by an operator: {} -> {}{note}", pct(*from), pct(*to))
                        }
                        Decision::Promote => format!(
                            "last step skipped by an operator: version {} promoted to stable (was {}){note}",
                            r.canary, r.stable
                        ),
                        _ => format!("last step skipped by an operator; waiting for approval{note}"),
                    };
                    apply(core, model, c, &d, msg.clone());
                    msg
                }
                (Command::Approve, Phase::AwaitingApproval) => {
                    let msg = format!(
                        "promotion approved by an operator: version {} promoted to stable (was {}){note}",
                        r.canary, r.stable
                    );
                    apply(core, model, c, &Decision::Promote, msg.clone());
                    msg
                }
                (cmd, phase) => {
                    return Err(conflict(format!("cannot {cmd:?} a rollout that is {}", phase.label()).to_lowercase()));
                }
            };
            let r = c.rollout.as_mut().expect("checked above");
            r.touch(message.clone());
            // Whatever the command, the next analysis starts from a fresh sample (data from before a pause, a
            // skip or a manual weight change says nothing about the new situation), taken here under the lock
            // so that no tick can analyse the old window against the new state.
            if r.phase.is_active() {
                self.begin_window(core, model, r);
            } else {
                self.windows().remove(model);
            }
            let data = serde_json::json!({
                "canary": r.canary, "stable": r.stable, "phase": r.phase.label(), "step": r.step,
                "weight_before": before.percent(), "weight_after": r.weight().percent(),
            });
            Ok((message, data))
        })?;
        Ok(())
    }

    /// Analyses every rollout that is due. Called by the controller task a few times a second.
    pub fn tick(&self, core: &Core) {
        for slot in core.registry.models() {
            let due = {
                let c = slot.control();
                c.rollout.as_ref().filter(|r| r.phase.analyses()).map(|r| r.started_at.clone())
            };
            let Some(started) = due else { continue };
            let waiting =
                self.windows().get(&*slot.name).is_some_and(|w| w.rollout == started && Instant::now() < w.next_due);
            if !waiting {
                self.analyse_now(core, &slot.name);
            }
        }
    }

    /// Takes a sample and, when the window has two, analyses and acts. Returns the decision taken, if any. The
    /// controller task calls it when an interval is due; tests call it to step a rollout deterministically.
    pub fn analyse_now(&self, core: &Core, model: &str) -> Option<Decision> {
        let slot = core.registry.get(model)?;
        let rollout = slot.control().rollout.clone().filter(|r| r.phase.analyses())?;
        // A rollout restored from the state file was validated by the build and config that started it; this
        // one may lack what it needs (skew turned off, say), and would then hold or pass on nothing.
        let problems = rollout.policy.problems("policy", self.features);
        if !problems.is_empty() {
            let why = format!("its policy is not valid on this gateway: {}", problems.join("; "));
            self.abandon(core, model, &rollout, why);
            return None;
        }
        let (sample, drift) = match self.sample(core, model, &rollout) {
            Ok(s) => s,
            Err(why) => {
                self.abandon(core, model, &rollout, why);
                return None;
            }
        };
        let measured = {
            let mut windows = self.windows();
            let fresh = windows.get(model).is_none_or(|w| w.rollout != rollout.started_at);
            let next_due = Instant::now() + rollout.policy.interval();
            if fresh {
                // First sample of this rollout in this process (just started, or resumed after a restart).
                windows.insert(
                    model.to_string(),
                    Window { rollout: rollout.started_at.clone(), samples: VecDeque::from([sample]), next_due },
                );
                return None;
            }
            let w = windows.get_mut(model)?;
            w.next_due = next_due;
            w.samples.push_back(sample);
            while w.samples.len() > rollout.policy.window_intervals() + 1 {
                w.samples.pop_front();
            }
            let n = w.samples.len();
            Measured::between(&w.samples[0], &w.samples[n - 2], &w.samples[n - 1], drift)
        };
        let analysis = analyse(&rollout.policy, &measured);
        let decision = rollout.decide(&analysis);
        self.act(core, model, &rollout, analysis, &decision);
        Some(decision)
    }

    /// Applies a decision under the model's control lock, unless the rollout changed meanwhile (an operator acted).
    fn act(&self, core: &Core, model: &str, seen: &Rollout, analysis: Analysis, d: &Decision) {
        let kind = match d {
            Decision::Promote => "promoted",
            Decision::RollBack { .. } => "rolled_back",
            Decision::Hold(_) => "rollout_held",
            Decision::Failed { .. } => "rollout_failed_interval",
            Decision::Advance { .. } => "rollout_advanced",
            Decision::AwaitApproval => "rollout_awaiting_approval",
        };
        let r = seen;
        let message = match d {
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
        };
        let checks = analysis.checks.clone();
        let after = match d {
            Decision::Advance { to, .. } => to.percent(),
            Decision::Promote => 100.0,
            Decision::RollBack { .. } => 0.0,
            _ => r.weight().percent(),
        };
        let mut data = serde_json::json!({
            "decision": d.label(),
            "canary": r.canary,
            "stable": r.stable,
            "step": r.step,
            "weight_before": r.weight().percent(),
            "weight_after": after,
            "failed_intervals": match d { Decision::Failed { count } | Decision::RollBack { count, .. } => *count, _ => r.failed_intervals },
            "threshold": r.policy.threshold,
            "analysis": &analysis,
        });
        let result = core.registry.change(model, kind, |_, c| {
            let current = c.rollout.as_ref().filter(|now| now.generation == r.generation && now.phase.analyses());
            if current.is_none() {
                return Err(conflict("the rollout changed during the analysis (an operator acted)".into()));
            }
            // Consecutive holds replace each other with a count, so a quiet night does not push the rollout's
            // real decisions out of the bounded journal.
            if matches!(d, Decision::Hold(_)) && c.events.back().is_some_and(|e| e.kind == "rollout_held") {
                let previous = c.events.pop_back().expect("checked");
                let repeats = previous.data["holds"].as_u64().unwrap_or(1) + 1;
                data["holds"] = repeats.into();
                data["first_hold_at"] = previous.data.get("first_hold_at").cloned().unwrap_or(previous.at.into());
            }
            apply(core, model, c, d, message.clone());
            if let Some(now) = c.rollout.as_mut() {
                now.analyses += 1;
                now.last_analysis = Some(analysis);
            }
            Ok((message, data))
        });
        match result {
            Ok(()) => {
                core.metrics.rollout_decision(model, d.label());
                core.metrics.rollout_checks(model, &checks);
            }
            Err(e) => tracing::info!(model, error = %e, "rollout decision not applied"),
        }
        let mut windows = self.windows();
        match d {
            Decision::Promote | Decision::RollBack { .. } => {
                windows.remove(model);
            }
            // A failed interval is judged on its own evidence: the next analysis must not fail again on the same
            // samples, so the window restarts from the newest one.
            Decision::Failed { .. } => {
                if let Some(w) = windows.get_mut(model) {
                    let last = w.samples.pop_back();
                    w.samples.clear();
                    w.samples.extend(last);
                }
            }
            _ => {}
        }
    }

    /// Ends a rollout whose canary or stable left the routing (unloaded, failed to restore after a restart).
    fn abandon(&self, core: &Core, model: &str, seen: &Rollout, why: String) {
        let message = format!("rollout aborted: {why}");
        let _ = core.registry.change(model, "rollout_aborted", |_, c| {
            let r = c
                .rollout
                .as_mut()
                .filter(|r| r.started_at == seen.started_at && r.phase.is_active())
                .ok_or_else(|| conflict("already ended".into()))?;
            let v = r.canary;
            r.phase = Phase::Aborted;
            r.touch(message.clone());
            end_canary(c, v);
            core.metrics.rolled_back(model, "aborted");
            Ok((message, serde_json::json!({"canary": v})))
        });
        self.windows().remove(model);
    }

    /// Cumulative measurements of the canary and stable named by the rollout.
    fn sample(&self, core: &Core, model: &str, r: &Rollout) -> Result<(Sample, Drift), String> {
        let slot = core.registry.get(model).ok_or_else(|| format!("model '{model}' is gone"))?;
        let routing = slot.routing();
        let canary = routing
            .canary
            .as_ref()
            .map(|c: &Canary| c.version.clone())
            .filter(|v| v.number == r.canary)
            .ok_or_else(|| format!("version {} is no longer the canary", r.canary))?;
        let stable = routing
            .stable
            .clone()
            .filter(|v| v.number == r.stable)
            .ok_or_else(|| format!("version {} is no longer the stable version", r.stable))?;
        let quality = |n: u64| {
            core.feedback.as_ref().and_then(|b| b.quality(model).into_iter().find(|(v, _)| *v == n)).map(|(_, q)| q)
        };
        let sample = Sample {
            canary: canary.stats.snapshot(),
            stable: stable.stats.snapshot(),
            canary_invalid: canary
                .skew
                .as_ref()
                .map_or(0, |s| s.invalid_totals().iter().flat_map(|(_, c)| c.iter()).sum()),
            pairs: core.mirror.divergence.pair(model, r.stable, r.canary),
            canary_quality: quality(r.canary).unwrap_or_default(),
            stable_quality: quality(r.stable).unwrap_or_default(),
        };
        let drift = match &canary.skew {
            Some(s) => {
                let snap = s.drift.snapshot();
                Drift { rows: Some(snap.rows), max_psi: snap.max_psi, features: s.drift.features.len() }
            }
            None => Drift {
                rows: None,
                max_psi: None,
                features: canary.manifest.inputs.iter().map(|i| i.spec.row_len()).sum(),
            },
        };
        Ok((sample, drift))
    }
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

/// Applies a decision to the routing and the rollout state (control lock held).
fn apply(core: &Core, model: &str, c: &mut Control, d: &Decision, message: String) {
    let Some(r) = c.rollout.as_mut() else { return };
    let canary = r.canary;
    r.apply(d, message);
    match d {
        Decision::Advance { to, .. } => {
            if let Some(k) = c.spec.canary.as_mut() {
                k.weight = *to;
            }
        }
        Decision::Promote => {
            c.spec.stable = Some(canary);
            end_canary(c, canary);
            core.metrics.promoted(model);
        }
        Decision::RollBack { reason, .. } => {
            end_canary(c, canary);
            core.metrics.rolled_back(model, reason);
        }
        Decision::Hold(_) | Decision::Failed { .. } | Decision::AwaitApproval => {}
    }
}

/// Removes the canary from the routing and stops the shadow the rollout put on it.
fn end_canary(c: &mut Control, version: u64) {
    if c.spec.canary.is_some_and(|k| k.version == version) {
        c.spec.canary = None;
    }
    let mirroring = c.rollout.as_ref().is_some_and(|r| r.mirroring);
    if mirroring && c.spec.shadow.is_some_and(|s| s.version == version) {
        c.spec.shadow = None;
    }
    if let Some(r) = c.rollout.as_mut() {
        r.mirroring = false;
    }
}

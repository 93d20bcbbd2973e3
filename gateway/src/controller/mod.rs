//! The rollout controller: the task side of automatic canary analysis. A tick a few times a second finds the
//! rollouts that are due, samples the canary's and stable's cumulative counters, keeps each rollout's window of
//! samples, runs the pure analysis and state machine from [`crate::rollout`], and applies the decision to the
//! model's routing under its control lock, journaling it with its measurements. Operators' commands (pause,
//! resume, abort, skip, approve) come through here too, so they and the analysis never interleave.
//!
//! A rollout lives in the model's control block, so it is persisted with the routing and a restart resumes it;
//! only the measurement window (in memory) starts afresh.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::core::Core;
use crate::error::GatewayError;
use crate::model::registry::Writer;
use crate::model::slot::{Control, ModelSlot};
use crate::rollout::analysis::{Analysis, Evidence, Measured, Sample, analyse, reason_label};
use crate::rollout::machine::{Decision, Phase, Rollout, pct};
use crate::rollout::policy::{Features, RolloutConfig, RolloutPolicy};
use crate::routing::Weight;
use crate::routing::spec::{CanarySpec, ShadowSpec};

/// The in-memory side of one model's rollout: the samples of the current window.
struct Window {
    /// Which rollout the samples belong to (`started_at`), so a new rollout never reads an old one's window.
    rollout: String,
    samples: VecDeque<Sample>,
    next_due: Instant,
}

#[derive(Debug)]
pub struct Controller {
    core: Arc<Core>,
    config: RolloutConfig,
    features: Features,
    windows: Mutex<HashMap<String, Window>>,
    /// In cluster mode: only the elected replica analyses, on every replica's evidence, and its decisions are
    /// fenced by its leadership.
    cluster: Option<Arc<Cluster>>,
    /// Whether this replica led the analysis at the last tick (a takeover is journaled once).
    leading: std::sync::atomic::AtomicBool,
    /// Models whose takeover by this replica is journaled (cleared when leadership is lost).
    announced: Mutex<std::collections::HashSet<String>>,
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

impl Controller {
    pub fn new(core: Arc<Core>, config: RolloutConfig, features: Features, cluster: Option<Arc<Cluster>>) -> Self {
        Self {
            core,
            config,
            features,
            windows: Mutex::default(),
            cluster,
            leading: Default::default(),
            announced: Mutex::default(),
        }
    }

    fn windows(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.windows.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a rollout of `version` as the canary at the first step. `overrides` names policy fields that differ
    /// from the model's configured policy.
    pub fn start(
        &self,
        model: &str,
        version: u64,
        overrides: Option<&serde_json::Value>,
    ) -> Result<Rollout, GatewayError> {
        let core = &*self.core;
        let base = self.config.policy(model).map_err(GatewayError::InvalidInput)?;
        let policy = match overrides {
            Some(p) => base.with_overrides(p).map_err(GatewayError::InvalidInput)?,
            None => base,
        };
        let problems = policy.problems("policy", self.features);
        if !problems.is_empty() {
            return Err(GatewayError::invalid(problems.join("; ")));
        }
        core.registry.change(model, "rollout_started", |slot, c| begin(slot, c, model, version, &policy))?;
        let slot = core.model(model)?;
        let rollout =
            slot.control().rollout.clone().ok_or_else(|| GatewayError::Internal("rollout vanished".into()))?;
        self.begin_window(model, &rollout);
        Ok(rollout)
    }

    /// Takes the first sample of a new window; the first analysis follows one interval later.
    fn begin_window(&self, model: &str, r: &Rollout) {
        if self.cluster.is_some() {
            // In cluster mode the leader opens a window at its next analysis: forgetting the old one is enough,
            // and reading the fleet's evidence here would wait on the store under the model's lock.
            self.windows().remove(model);
            return;
        }
        let Ok(Evidence::Ready(sample, _)) = self.sample(model, r) else { return };
        let sample = *sample;
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
    pub fn command(&self, model: &str, cmd: Command, note: &str) -> Result<(), GatewayError> {
        let core = &*self.core;
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
            let message = self.apply_command(c, model, cmd, &note)?;
            let r = c.rollout.as_mut().expect("checked above");
            r.touch(message.clone());
            // Whatever the command, the next analysis starts from a fresh sample (data from before a pause, a
            // skip or a manual weight change says nothing about the new situation), taken here under the lock
            // so that no tick can analyse the old window against the new state.
            if r.phase.is_active() {
                self.begin_window(model, r);
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

    /// Changes the rollout (and the routing) as `cmd` asks, under the control lock; returns the journal message.
    fn apply_command(&self, c: &mut Control, model: &str, cmd: Command, note: &str) -> Result<String, GatewayError> {
        let core = &*self.core;
        let r = c.rollout.as_mut().ok_or_else(|| conflict(format!("model '{model}' has no active rollout")))?;
        let before = r.weight();
        Ok(match (cmd, r.phase) {
            (Command::Pause, Phase::Progressing | Phase::AwaitingApproval) => {
                r.phase = Phase::Paused;
                format!("rollout paused at {}{note}", pct(before))
            }
            (Command::Resume, Phase::Paused) => {
                r.phase = Phase::Progressing;
                // An operator may have moved the weight while paused; the rollout goes on from its own step.
                let mut msg = format!("rollout resumed at {}; the analysis window starts afresh{note}", pct(before));
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
        })
    }

    /// Analyses every rollout that is due. Called by the controller task a few times a second.
    pub fn tick(&self) {
        if let Some(cluster) = &self.cluster {
            let leads = cluster.is_leader();
            let led = self.leading.swap(leads, std::sync::atomic::Ordering::Relaxed);
            if !leads {
                self.windows().clear();
                self.announced.lock().unwrap_or_else(|p| p.into_inner()).clear();
                return;
            }
            // Until the takeover is journaled (a write can lose a race with a change not yet applied here), it is
            // tried again at the next tick.
            if !led && !self.took_over(cluster) {
                self.leading.store(false, std::sync::atomic::Ordering::Relaxed);
                return; // no decision before the takeover is on record
            }
        }
        for slot in self.core.registry.models() {
            let due = {
                let c = slot.control();
                c.rollout.as_ref().filter(|r| r.phase.analyses()).map(|r| r.started_at.clone())
            };
            let Some(started) = due else { continue };
            let waiting =
                self.windows().get(&*slot.name).is_some_and(|w| w.rollout == started && Instant::now() < w.next_due);
            if !waiting {
                self.analyse_now(&slot.name);
            }
        }
    }

    /// Journals that this replica took over the analysis of every active rollout (cluster mode); each resumes
    /// from its stored state (step, failed intervals) with a fresh window.
    fn took_over(&self, cluster: &Cluster) -> bool {
        let mut journaled = true;
        for slot in self.core.registry.models() {
            let active = slot.control().rollout.as_ref().is_some_and(|r| r.phase.is_active());
            let announced = self.announced.lock().unwrap_or_else(|p| p.into_inner()).contains(&*slot.name);
            if !active || announced {
                continue;
            }
            let me = cluster.replica().to_string();
            let result = self.core.registry.change_as(Writer::Controller, &slot.name, "rollout_leader", |_, c| {
                let r = c.rollout.as_ref().ok_or_else(|| conflict("no rollout".into()))?;
                let message = format!(
                    "replica {me} leads the analysis now; the rollout resumes at step {} with {} failed intervals and \
                     a fresh window",
                    r.step + 1,
                    r.failed_intervals
                );
                Ok((message, serde_json::json!({ "leader": me })))
            });
            match result {
                Ok(()) => {
                    self.announced.lock().unwrap_or_else(|p| p.into_inner()).insert(slot.name.to_string());
                }
                Err(e) => {
                    tracing::warn!(model = %slot.name, error = %e, "cannot journal the takeover yet");
                    journaled = false;
                }
            }
        }
        journaled
    }

    /// Takes a sample and, when the window has two, analyses and acts. Returns the decision taken, if any. The
    /// controller task calls it when an interval is due; tests call it to step a rollout deterministically.
    pub fn analyse_now(&self, model: &str) -> Option<Decision> {
        let core = &*self.core;
        let slot = core.registry.get(model)?;
        let rollout = slot.control().rollout.clone().filter(|r| r.phase.analyses())?;
        // A rollout restored from the state file was validated by the build and config that started it; this
        // one may lack what it needs (skew turned off, say), and would then hold or pass on nothing.
        let problems = rollout.policy.problems("policy", self.features);
        if !problems.is_empty() {
            let why = format!("its policy is not valid on this gateway: {}", problems.join("; "));
            self.abandon(model, &rollout, why);
            return None;
        }
        let (sample, drift) = match self.sample(model, &rollout) {
            Ok(Evidence::Ready(s, d)) => (*s, d),
            Ok(Evidence::Wait(why)) => {
                tracing::debug!(model, %why, "rollout analysis waits");
                return None;
            }
            Err(why) => {
                self.abandon(model, &rollout, why);
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
        self.act(model, &rollout, analysis, &decision);
        Some(decision)
    }

    /// Applies a decision under the model's control lock, unless the rollout changed meanwhile (an operator acted).
    fn act(&self, model: &str, seen: &Rollout, analysis: Analysis, d: &Decision) {
        let core = &*self.core;
        let r = seen;
        let kind = d.journal_kind();
        let message = r.describe(d, &analysis);
        let checks = analysis.checks.clone();
        let mut data = r.decision_data(d, &analysis);
        let result = core.registry.change_as(Writer::Controller, model, kind, |_, c| {
            let current = c.rollout.as_ref().filter(|now| now.generation == r.generation && now.phase.analyses());
            if current.is_none() {
                return Err(conflict("the rollout changed during the analysis (an operator acted)".into()));
            }
            // Consecutive holds replace each other with a count, so a quiet night does not push the rollout's
            // real decisions out of the bounded journal.
            if matches!(d, Decision::Hold(_)) && c.events.back().is_some_and(|e| e.kind == "rollout_held") {
                let previous = c.events.pop_back().expect("checked");
                let before = previous.data.value();
                let repeats = before["holds"].as_u64().unwrap_or(1) + 1;
                data["holds"] = repeats.into();
                data["first_hold_at"] =
                    before.get("first_hold_at").cloned().unwrap_or_else(|| previous.at.clone().into());
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
                let values: Vec<_> = checks.iter().map(|c| (reason_label(&c.check), c.value)).collect();
                core.metrics.rollout_checks(model, &values);
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
    fn abandon(&self, model: &str, seen: &Rollout, why: String) {
        let core = &*self.core;
        let message = format!("rollout aborted: {why}");
        let _ = core.registry.change_as(Writer::Controller, model, "rollout_aborted", |_, c| {
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

    /// Cumulative measurements of the canary and stable named by the rollout: this process's own, or in
    /// cluster mode the sum over every replica (`Wait` until all of them have reported on the current spec).
    fn sample(&self, model: &str, r: &Rollout) -> Result<Evidence, String> {
        match &self.cluster {
            Some(cluster) => cluster.summed_sample(model, r),
            None => self.core.sample(model, r.canary, r.stable).map(|(s, d)| Evidence::Ready(Box::new(s), d)),
        }
    }
}

/// Puts a new rollout of `version` in the control block: canary at the first step, and the shadow its
/// divergence checks need. Refused while another rollout is active or another version is the canary.
fn begin(
    slot: &ModelSlot,
    c: &mut Control,
    model: &str,
    version: u64,
    policy: &RolloutPolicy,
) -> Result<(String, serde_json::Value), GatewayError> {
    let first = policy.steps()[0];
    if let Some(r) = c.rollout.as_ref().filter(|r| r.phase.is_active()) {
        return Err(conflict(format!(
            "a rollout of version {} is already {}; abort it first",
            r.canary,
            r.phase.label()
        )));
    }
    slot.version(&version.to_string())?;
    let routing = slot.routing();
    let stable = routing
        .stable
        .as_ref()
        .map(|v| v.number)
        .ok_or_else(|| conflict(format!("model '{model}' has no stable version to compare a canary with")))?;
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
    let now = crate::clock::now_rfc3339();
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
            c.spec.set_stable(canary);
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

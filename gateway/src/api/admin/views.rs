//! What the admin API shows: a model's routing, versions (state, role, files on disk) and recent journal, and its
//! train/serve skew report.

use std::sync::Arc;

use serde::Serialize;

use crate::core::Core;
use crate::model::{ModelSlot, VersionState};
use crate::state::Event;

#[derive(Debug, Serialize)]
pub struct CanaryView {
    pub version: String,
    pub weight_percent: f64,
}

#[derive(Debug, Serialize)]
pub struct ShadowView {
    pub version: String,
    pub percent: f64,
}

#[derive(Debug, Serialize)]
pub struct VersionView {
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub role: &'static str,
    /// For a serving version whose files changed or vanished since it loaded: `changed` or `missing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<&'static str>,
    /// From a loaded version's manifest: `release` or `candidate`, when it was trained, and its age.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trained_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_days: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ModelView {
    pub name: String,
    pub ready: bool,
    /// The version serving as stable.
    pub stable: Option<String>,
    /// The desired stable version, when another serves in its place because it cannot (see the journal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stable_desired: Option<String>,
    pub canary: Option<CanaryView>,
    pub shadow: Option<ShadowView>,
    pub versions: Vec<VersionView>,
    /// The most recent events, newest last.
    pub events: Vec<Arc<Event>>,
}

pub fn view(slot: &ModelSlot, recent: usize) -> ModelView {
    let routing = slot.routing();
    let stable = routing.stable.as_ref().map(|v| v.number);
    let canary = routing.canary.as_ref().map(|c| c.version.number);
    let (events, desired): (Vec<Arc<Event>>, Option<u64>) = {
        let c = slot.control();
        (c.events.iter().rev().take(recent).rev().cloned().collect(), c.spec.stable)
    };
    ModelView {
        name: slot.name.to_string(),
        ready: slot.is_ready(),
        stable: stable.map(|n| n.to_string()),
        stable_desired: desired.filter(|d| Some(*d) != stable).map(|n| n.to_string()),
        canary: routing
            .canary
            .as_ref()
            .map(|c| CanaryView { version: c.version.version.to_string(), weight_percent: c.weight.percent() }),
        shadow: routing
            .shadow
            .as_ref()
            .map(|s| ShadowView { version: s.version.version.to_string(), percent: s.share.percent() }),
        versions: slot
            .versions()
            .iter()
            .map(|(n, s)| VersionView {
                version: n.to_string(),
                state: s.label(),
                reason: match s {
                    VersionState::Failed(r) => Some(r.clone()),
                    _ => None,
                },
                disk: disk_state(s),
                stage: ready(s).map(|v| match v.manifest.stage {
                    crate::manifest::Stage::Release => "release",
                    crate::manifest::Stage::Candidate => "candidate",
                }),
                trained_at: ready(s).map(|v| v.manifest.trained_at.clone()),
                age_days: ready(s).map(|v| v.age().as_secs_f64() / 86_400.0),
                role: if Some(*n) == stable {
                    "stable"
                } else if Some(*n) == canary {
                    "canary"
                } else {
                    "none"
                },
            })
            .collect(),
        events,
    }
}

/// A ready version's files against what it loaded, when they differ.
pub fn disk_state(s: &VersionState) -> Option<&'static str> {
    match s {
        VersionState::Ready(v) => {
            let state = v.disk.state();
            (state != crate::model::disk::DiskState::Unchanged).then(|| state.label())
        }
        _ => None,
    }
}

#[derive(Debug, Serialize)]
struct InvalidView {
    feature: String,
    nan: u64,
    inf: u64,
    out_of_bounds: u64,
}

#[derive(Debug, Serialize)]
struct SkewView {
    version: String,
    role: &'static str,
    trained_at: String,
    age_days: f64,
    stale: bool,
    invalid_policy: Option<crate::skew::InvalidPolicy>,
    drift: Option<crate::skew::drift::DriftSnapshot>,
    invalid_values: Vec<InvalidView>,
}

/// Train/serve skew of every ready version: drift over the window, invalid values, age.
pub fn skew_report(core: &Core, slot: &ModelSlot) -> serde_json::Value {
    let model = &*slot.name;
    let roles: std::collections::BTreeMap<String, &'static str> =
        view(slot, 0).versions.into_iter().map(|v| (v.version, v.role)).collect();
    let mut out = Vec::new();
    for s in slot.versions().values() {
        let VersionState::Ready(v) = s else { continue };
        out.push(SkewView {
            version: v.version.to_string(),
            role: roles.get(&*v.version).copied().unwrap_or("none"),
            trained_at: v.manifest.trained_at.clone(),
            age_days: v.age().as_secs_f64() / 86_400.0,
            stale: core.is_stale(v),
            invalid_policy: v.skew.as_ref().map(|s| s.policy()),
            drift: v.skew.as_ref().map(|s| s.drift.snapshot()),
            invalid_values: v
                .skew
                .as_ref()
                .map(|s| s.invalid_totals())
                .unwrap_or_default()
                .into_iter()
                .map(|(feature, c)| InvalidView { feature, nan: c[0], inf: c[1], out_of_bounds: c[2] })
                .collect(),
        });
    }
    let divergence: Vec<serde_json::Value> = core
        .mirror
        .divergence
        .for_model(model)
        .into_iter()
        .map(|(live, shadow, s)| {
            serde_json::json!({
                "version": live.to_string(), "shadow_version": shadow.to_string(), "pairs": s.pairs,
                "label_disagreement_rate": s.disagreement_rate(), "mean_abs_diff": s.mean_abs_diff(),
                "mean_rel_diff": s.mean_rel_diff(), "max_abs_diff": s.max_abs_diff,
            })
        })
        .collect();
    let quality: Vec<serde_json::Value> = core
        .feedback
        .as_ref()
        .map(|f| f.quality(model))
        .unwrap_or_default()
        .into_iter()
        .map(|(v, q)| {
            serde_json::json!({
                "version": v.to_string(), "feedback": q.feedback, "accuracy": q.accuracy(),
                "mean_abs_error": q.mean_abs_error(),
            })
        })
        .collect();
    serde_json::json!({ "model": model, "versions": out, "divergence": divergence, "quality": quality })
}

fn ready(s: &VersionState) -> Option<&crate::model::ModelVersion> {
    match s {
        VersionState::Ready(v) => Some(v),
        _ => None,
    }
}

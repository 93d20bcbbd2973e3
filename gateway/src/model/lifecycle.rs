//! Operator actions on a model's routing: start a canary, change its weight, promote it, roll it back, unload a
//! version. Each one checks and changes the spec under the model's control lock, swaps in the new routing table
//! (requests in flight keep the version they started on), writes the journal and the state file.

use crate::error::GatewayError;
use crate::model::VersionState;
use crate::model::registry::{Registry, Writer};
use crate::model::repository::check_name;
use crate::model::slot::{Control, ModelSlot};
use crate::rollout::machine::Phase;
use crate::routing::spec::{CanarySpec, ShadowSpec, Weight};

impl Registry {
    fn existing(&self, model: &str) -> Result<std::sync::Arc<ModelSlot>, GatewayError> {
        self.get(model).ok_or_else(|| GatewayError::ModelNotFound(model.to_string()))
    }

    /// Applies an operator's change (see [`Registry::change_as`]).
    pub(crate) fn change(
        &self,
        model: &str,
        kind: &str,
        f: impl FnOnce(&ModelSlot, &mut Control) -> Result<(String, serde_json::Value), GatewayError>,
    ) -> Result<(), GatewayError> {
        self.change_as(Writer::Operator, model, kind, f)
    }

    /// Applies a change under the control lock: `f` changes a copy of the control block, the copy (with its
    /// journal event) is made durable, and only then does it replace the live one and the routing table. So an
    /// acknowledged change survives a crash, and a change that cannot be saved is not applied at all. Durable
    /// means the state file in single-node mode (503 naming it when it cannot be written), and the cluster store
    /// in cluster mode (a compare-and-set: 409 when another replica changed the model first, 503 when the store
    /// is out of reach), with the state file kept as a local cache.
    pub fn change_as(
        &self,
        writer: Writer,
        model: &str,
        kind: &str,
        f: impl FnOnce(&ModelSlot, &mut Control) -> Result<(String, serde_json::Value), GatewayError>,
    ) -> Result<(), GatewayError> {
        let slot = self.existing(model)?;
        match self.shared() {
            Some(shared) => {
                // No lock is held while the store answers: the watch applying another replica's change (on an
                // async worker) must never wait behind a network call.
                let (before, next) = {
                    let c = slot.control();
                    let mut next = c.clone();
                    let (message, data) = f(&slot, &mut next)?;
                    slot.record(&mut next, kind, message, data);
                    (c.to_state(), next)
                };
                shared.commit(model, &next.to_state(), writer == Writer::Controller)?;
                let mut c = slot.control();
                // The compare-and-set passed, so nothing came between what `f` saw and this change: anything
                // applied meanwhile is this change's own echo from the watch, or a newer one. Keep it then.
                if c.to_state() == before {
                    *c = next;
                    slot.publish(&c);
                    if let Err(e) = self.store.save_model(&slot.name, c.to_state()) {
                        tracing::warn!(model, error = %e, "cannot update the local state cache");
                    }
                    slot.log_last_event(&c);
                }
            }
            None => {
                let mut c = slot.control();
                let mut next = c.clone();
                let (message, data) = f(&slot, &mut next)?;
                slot.record(&mut next, kind, message, data);
                self.store.save_model(&slot.name, next.to_state()).map_err(|e| {
                    tracing::error!(model, kind, error = %e, path = %self.store.path().display(), "change not applied: cannot write the state file");
                    GatewayError::StoreUnavailable(format!(
                        "the change was not applied: cannot write the state file {}: {e}",
                        self.store.path().display()
                    ))
                })?;
                *c = next;
                slot.publish(&c);
                slot.log_last_event(&c);
            }
        }
        slot.report(&self.metrics);
        Ok(())
    }

    /// Sends `weight` of unpinned traffic to `version`, replacing any current canary.
    pub fn set_canary(&self, model: &str, version: u64, weight: Weight) -> Result<(), GatewayError> {
        self.change(model, "canary_started", |slot, c| {
            refuse_during_rollout(c, "start another canary")?;
            slot.version(&version.to_string())?;
            if c.spec.stable == Some(version) {
                return Err(GatewayError::Conflict(format!("version {version} is already the stable version")));
            }
            c.spec.canary = Some(CanarySpec { version, weight });
            Ok((format!("canary version {version} at {} %", weight.percent()), serde_json::Value::Null))
        })
    }

    pub fn set_canary_weight(&self, model: &str, weight: Weight) -> Result<(), GatewayError> {
        self.change(model, "weight_changed", |_, c| {
            if c.rollout.as_ref().is_some_and(|r| r.phase.is_active() && r.phase != Phase::Paused) {
                return Err(GatewayError::Conflict(format!(
                    "a rollout controls the canary weight of '{model}'; pause or abort it first"
                )));
            }
            let canary = c.spec.canary.as_mut().ok_or_else(|| no_canary(model))?;
            let before = canary.weight;
            canary.weight = weight;
            let msg =
                format!("canary version {} from {} % to {} %", canary.version, before.percent(), weight.percent());
            Ok((msg, serde_json::Value::Null))
        })
    }

    /// The canary becomes the stable version and takes all unpinned traffic.
    pub fn promote(&self, model: &str, note: &str) -> Result<(), GatewayError> {
        self.change(model, "promoted", |slot, c| {
            let canary = c.spec.canary.ok_or_else(|| no_canary(model))?;
            slot.version(&canary.version.to_string())?;
            let before = c.spec.stable;
            c.spec.set_stable(canary.version);
            c.spec.canary = None;
            let was = before.map_or_else(|| "none".to_string(), |v| v.to_string());
            let message = format!("version {} promoted to stable (was {was}){}", canary.version, suffix(note));
            end_rollout(c, canary.version, Phase::Promoted, &message);
            Ok((message, serde_json::Value::Null))
        })?;
        self.metrics.promoted(model);
        Ok(())
    }

    /// Makes `version` stable directly (no canary phase), for `models.serve_new_versions`.
    pub fn set_stable(&self, model: &str, version: u64, note: &str) -> Result<(), GatewayError> {
        self.change(model, "stable_changed", |slot, c| {
            refuse_during_rollout(c, "change the stable version")?;
            slot.version(&version.to_string())?;
            let before = c.spec.stable;
            c.spec.set_stable(version);
            if c.spec.canary.is_some_and(|k| k.version == version) {
                c.spec.canary = None;
            }
            let was = before.map_or_else(|| "none".to_string(), |v| v.to_string());
            Ok((format!("version {version} is stable (was {was}){}", suffix(note)), serde_json::Value::Null))
        })
    }

    /// Copies `share` of live requests to `version` as a shadow (any ready version; the canary compares it with
    /// stable on the same inputs). Its answers are compared and never returned.
    pub fn set_shadow(&self, model: &str, version: u64, share: Weight) -> Result<(), GatewayError> {
        self.change(model, "shadow_started", |slot, c| {
            refuse_while_mirroring(c)?;
            slot.version(&version.to_string())?;
            c.spec.shadow = Some(ShadowSpec { version, share });
            Ok((
                format!("shadow version {version} gets a copy of {} % of requests", share.percent()),
                serde_json::Value::Null,
            ))
        })
    }

    pub fn clear_shadow(&self, model: &str) -> Result<(), GatewayError> {
        self.change(model, "shadow_stopped", |_, c| {
            refuse_while_mirroring(c)?;
            let s =
                c.spec.shadow.take().ok_or_else(|| GatewayError::Conflict(format!("model '{model}' has no shadow")))?;
            Ok((format!("shadow version {} stopped", s.version), serde_json::Value::Null))
        })
    }

    /// Removes the canary; stable keeps all traffic. `reason` is a short fixed label for metrics (`manual`,
    /// `error_rate`, ...), `note` the human explanation, `data` the measurements behind it.
    pub fn rollback(
        &self,
        model: &str,
        reason: &'static str,
        note: &str,
        data: serde_json::Value,
    ) -> Result<(), GatewayError> {
        self.change(model, "rolled_back", |_, c| {
            let canary = c.spec.canary.take().ok_or_else(|| no_canary(model))?;
            let message = format!("canary version {} rolled back ({reason}){}", canary.version, suffix(note));
            end_rollout(c, canary.version, Phase::RolledBack, &message);
            Ok((message, data))
        })?;
        self.metrics.rolled_back(model, reason);
        Ok(())
    }

    /// Unloads a version; its in-flight requests finish first (they hold it). Refused while it takes traffic.
    pub fn unload(&self, model: &str, version: u64) -> Result<(), GatewayError> {
        self.change(model, "version_unloaded", |slot, c| {
            if !slot.versions().contains_key(&version) {
                return Err(GatewayError::VersionNotFound { model: model.to_string(), version: version.to_string() });
            }
            let routing = slot.routing();
            if c.spec.stable == Some(version) || routing.stable.as_ref().is_some_and(|v| v.number == version) {
                return Err(GatewayError::Conflict(format!(
                    "version {version} is the stable version; promote another version before unloading it"
                )));
            }
            if c.spec.canary.is_some_and(|k| k.version == version) {
                return Err(GatewayError::Conflict(format!(
                    "version {version} is the canary; roll it back before unloading it"
                )));
            }
            if c.spec.shadow.is_some_and(|k| k.version == version) {
                return Err(GatewayError::Conflict(format!(
                    "version {version} is the shadow; stop it before unloading it"
                )));
            }
            Ok((format!("version {version} unloaded"), serde_json::Value::Null))
        })?;
        // Only once the change is durable: in-flight calls keep their `Arc` to it.
        if let Some(slot) = self.get(model) {
            slot.set_state(version, None);
        }
        self.metrics.unloaded(model, &version.to_string());
        Ok(())
    }

    /// Loads a version on an operator's request. It gets no traffic until it is made canary or stable. Only
    /// models and versions that exist in the repository are accepted (an invalid name is 400, a missing one 404),
    /// and nothing is created for the others: no model slot, no metric label, no state file entry.
    pub fn load_on_request(&self, model: &str, version: u64) -> Result<(), GatewayError> {
        check_name("model", model).map_err(GatewayError::InvalidInput)?;
        self.repository.model_dir(model).map_err(|_| GatewayError::ModelNotFound(model.to_string()))?;
        self.repository
            .version_dir(model, &version.to_string())
            .map_err(|_| GatewayError::VersionNotFound { model: model.to_string(), version: version.to_string() })?;
        let slot = self.slot(model);
        if matches!(slot.versions().get(&version), Some(VersionState::Ready(_) | VersionState::Loading)) {
            return Err(GatewayError::Conflict(format!("version {version} of '{model}' is already loaded or loading")));
        }
        slot.set_state(version, Some(VersionState::Loading));
        self.load(model, version).map_err(GatewayError::LoadFailed)
    }
}

impl Registry {
    /// The repository extension's model-level unload (Triton's `unload_model`): every version of the model stops
    /// serving, the stable one included, and the model takes no traffic until it is loaded again. Refused during a
    /// rollout. The canary and shadow end; the desired stable version stays in the spec, so loading the model
    /// again serves what served before.
    pub fn unload_model(&self, model: &str) -> Result<(), GatewayError> {
        let mut versions = Vec::new();
        self.change(model, "model_unloaded", |slot, c| {
            refuse_during_rollout(c, "unload the model")?;
            versions = slot.versions().keys().copied().collect();
            if versions.is_empty() {
                return Err(GatewayError::Conflict(format!("model '{model}' has no version loaded")));
            }
            c.spec.canary = None;
            c.spec.shadow = None;
            let listed = versions.iter().map(u64::to_string).collect::<Vec<_>>().join(", ");
            Ok((
                format!("model unloaded (versions {listed}); it takes no traffic until it is loaded again"),
                serde_json::json!({ "versions": versions }),
            ))
        })?;
        if let Some(slot) = self.get(model) {
            for &v in &versions {
                slot.set_state(v, None);
                self.metrics.unloaded(model, &v.to_string());
            }
        }
        Ok(())
    }

    /// The repository extension's model-level load (Triton's `load_model`): loads every version of the model in
    /// the repository that is not loaded or loading. Each goes through the golden-example gate; the first
    /// failure is reported (the others still load).
    pub fn load_model(&self, model: &str) -> Result<(), GatewayError> {
        check_name("model", model).map_err(GatewayError::InvalidInput)?;
        self.repository.model_dir(model).map_err(|_| GatewayError::ModelNotFound(model.to_string()))?;
        let mut failed = None;
        for n in self.repository.versions(model) {
            match self.load_on_request(model, n) {
                Ok(()) | Err(GatewayError::Conflict(_)) => {}
                Err(e) => failed = failed.or(Some(e)),
            }
        }
        failed.map_or(Ok(()), Err)
    }
}

fn refuse_during_rollout(c: &Control, what: &str) -> Result<(), GatewayError> {
    match c.rollout.as_ref().filter(|r| r.phase.is_active()) {
        Some(r) => Err(GatewayError::Conflict(format!(
            "cannot {what}: a rollout of version {} is {}; abort it first",
            r.canary,
            r.phase.label()
        ))),
        None => Ok(()),
    }
}

fn refuse_while_mirroring(c: &Control) -> Result<(), GatewayError> {
    match c.rollout.as_ref().filter(|r| r.phase.is_active() && r.mirroring) {
        Some(r) => Err(GatewayError::Conflict(format!(
            "the rollout of version {} mirrors requests to it as the shadow for its divergence check; abort the \
             rollout first",
            r.canary
        ))),
        None => Ok(()),
    }
}

/// An operator promoting or rolling back by hand ends the rollout of that canary, and the shadow it started.
fn end_rollout(c: &mut Control, canary: u64, phase: Phase, message: &str) {
    let Some(r) = c.rollout.as_mut().filter(|r| r.phase.is_active() && r.canary == canary) else { return };
    r.phase = phase;
    r.message = format!("ended by an operator: {message}");
    r.updated_at = crate::clock::now_rfc3339();
    if std::mem::take(&mut r.mirroring) && c.spec.shadow.is_some_and(|s| s.version == canary) {
        c.spec.shadow = None;
    }
}

fn no_canary(model: &str) -> GatewayError {
    GatewayError::Conflict(format!("model '{model}' has no canary"))
}

fn suffix(note: &str) -> String {
    if note.is_empty() { String::new() } else { format!(": {note}") }
}

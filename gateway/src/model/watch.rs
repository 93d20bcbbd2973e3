//! Repository watching: a new version directory that appears is loaded (golden examples included) and made
//! available for a canary. It takes no traffic on its own unless `models.serve_new_versions` says so. A version
//! that failed is retried when its files change, so fixing a bad upload needs no restart. A serving version whose
//! files change or vanish under it keeps serving what it loaded, and is marked (`changed`, `missing`) in the admin
//! API, the metadata, the journal and `gateway_model_files_changed`. Polling, because it works the same on every
//! filesystem (network mounts and Kubernetes volumes included) and the interval is seconds.
//!
//! A change is seen in a file's size, modification time, change time or mode: the change time moves on a
//! `chmod` too, so a file made readable again is retried.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::model::VersionState;
use crate::model::disk::{Fingerprint, fingerprint};
use crate::model::registry::Registry;

pub fn spawn(
    registry: Arc<Registry>,
    interval: Duration,
    serve_new: bool,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        tokio::pin!(stop);
        let mut attempted: HashMap<(String, u64), Fingerprint> = HashMap::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stop => return,
            }
            if !registry.initial_load_done() {
                continue;
            }
            let reg = registry.clone();
            let found = tokio::task::spawn_blocking(move || {
                let scan = reg.repository.scan().ok()?;
                let mut todo = Vec::new();
                let mut moved = Vec::new();
                for (model, versions) in scan.models.clone() {
                    let known = reg.get(&model).map(|s| s.versions()).unwrap_or_default();
                    for n in versions {
                        let dir = reg.repository.version_dir(&model, &n.to_string()).ok();
                        let stamp = dir.as_deref().and_then(fingerprint);
                        match known.get(&n) {
                            None => todo.push((model.clone(), n, stamp, true)),
                            Some(VersionState::Failed(_)) => todo.push((model.clone(), n, stamp, false)),
                            Some(VersionState::Ready(v)) => {
                                let mut required = vec![crate::manifest::MANIFEST_FILE];
                                if v.runs_locally() {
                                    required.push(crate::model::repository::MODEL_FILE);
                                }
                                if let Some(state) = v.disk.check(&stamp, &required) {
                                    moved.push((model.clone(), n, state));
                                }
                            }
                            Some(VersionState::Loading) => {}
                        }
                    }
                }
                // Versions whose whole model directory is gone.
                for slot in reg.models() {
                    if scan.models.iter().any(|(m, _)| *m == *slot.name) {
                        continue;
                    }
                    for (n, s) in slot.versions().iter() {
                        if let VersionState::Ready(v) = s
                            && let Some(state) = v.disk.check(&None, &[])
                        {
                            moved.push((slot.name.to_string(), *n, state));
                        }
                    }
                }
                for (model, n, state) in &moved {
                    reg.files_moved(model, *n, *state);
                }
                Some(todo)
            })
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
            for (model, n, stamp, new) in found {
                let key = (model.clone(), n);
                if !new && attempted.get(&key) == Some(&stamp) {
                    continue; // failed before and unchanged since: wait for a fix
                }
                attempted.insert(key, stamp);
                tracing::info!(model = %model, version = n, new, "repository change: loading version");
                let reg = registry.clone();
                let m = model.clone();
                let loaded =
                    tokio::task::spawn_blocking(move || reg.load(&m, n)).await.map(|r| r.is_ok()).unwrap_or(false);
                // A candidate (manifest `stage`) waits for a canary even when new versions are served at once.
                let candidate = registry
                    .get(&model)
                    .and_then(|s| s.version(&n.to_string()).ok())
                    .is_some_and(|v| v.manifest.stage == crate::manifest::Stage::Candidate);
                if loaded && new && serve_new && !candidate {
                    // A change writes the state file or the cluster store: off the async workers.
                    let (reg, m) = (registry.clone(), model.clone());
                    let made =
                        tokio::task::spawn_blocking(move || reg.set_stable(&m, n, "models.serve_new_versions is on"))
                            .await;
                    if let Ok(Err(e)) = made {
                        tracing::warn!(model = %model, version = n, error = %e, "cannot make the new version stable");
                    }
                }
            }
        }
    })
}

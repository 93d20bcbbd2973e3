//! Repository watching: a new version directory that appears is loaded (golden examples included) and made
//! available for a canary. It takes no traffic on its own unless `models.serve_new_versions` says so. A version
//! that failed is retried when its files change, so fixing a bad upload needs no restart. Polling, because it works
//! the same on every filesystem (network mounts and Kubernetes volumes included) and the interval is seconds.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::model::VersionState;
use crate::model::registry::Registry;

/// Newest modification time among a version directory and its files.
fn mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = std::fs::metadata(dir).and_then(|m| m.modified()).ok()?;
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        if let Ok(t) = e.metadata().and_then(|m| m.modified()) {
            newest = newest.max(t);
        }
    }
    Some(newest)
}

pub fn spawn(
    registry: Arc<Registry>,
    interval: Duration,
    serve_new: bool,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut attempted: HashMap<(String, u64), Option<SystemTime>> = HashMap::new();
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            if !registry.initial_load_done() {
                continue;
            }
            let reg = registry.clone();
            let found = tokio::task::spawn_blocking(move || {
                let scan = reg.repository.scan().ok()?;
                let mut todo = Vec::new();
                for (model, versions) in scan.models {
                    let known = reg.get(&model).map(|s| s.versions()).unwrap_or_default();
                    for n in versions {
                        let dir = reg.repository.version_dir(&model, &n.to_string()).ok();
                        let stamp = dir.as_deref().and_then(mtime);
                        match known.get(&n) {
                            None => todo.push((model.clone(), n, stamp, true)),
                            Some(VersionState::Failed(_)) => todo.push((model.clone(), n, stamp, false)),
                            _ => {}
                        }
                    }
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
                if loaded
                    && new
                    && serve_new
                    && !candidate
                    && let Err(e) = registry.set_stable(&model, n, "models.serve_new_versions is on")
                {
                    tracing::warn!(model = %model, version = n, error = %e, "cannot make the new version stable");
                }
            }
        }
    })
}

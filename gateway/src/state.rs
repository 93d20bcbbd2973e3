//! State that must survive a restart: each model's routing (stable, canary and weight), its rollout, and its
//! event journal.
//! Written atomically (temp file, fsync, rename, fsync of the directory), so after a crash at any moment the file
//! holds either the previous or the new state, never a mix. A missing file means a first start; a corrupt one is
//! moved aside with a clear log line and the gateway starts from the repository defaults rather than crash-looping.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

#[cfg(test)]
use crate::clock::now_rfc3339;
use crate::routing::RoutingSpec;

pub const STATE_FILE: &str = "routing.json";
const SCHEMA: u32 = 1;
/// Events kept per model; older ones are dropped first.
pub const MAX_EVENTS: usize = 500;

/// One entry of a model's journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// RFC 3339, UTC.
    pub at: String,
    /// What happened: `canary_started`, `weight_changed`, `promoted`, `rolled_back`, `version_loaded`, ...
    pub kind: String,
    pub message: String,
    /// The routing right after the event.
    pub stable: Option<u64>,
    pub canary: Option<u64>,
    pub weight_percent: Option<f64>,
    /// Measurements behind the decision, when there are any.
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub data: serde_json::Value,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    pub routing: RoutingSpec,
    #[serde(default)]
    pub events: Vec<Event>,
    /// The current or last rollout; an active one resumes after a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::machine::Rollout>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    pub schema: u32,
    pub models: BTreeMap<String, ModelState>,
}

/// What was found at start.
#[derive(Debug)]
pub enum Restored {
    Fresh,
    Loaded(StateFile),
    /// Unreadable; the reason, and where the bad file was moved.
    Corrupt {
        reason: String,
        moved_to: Option<PathBuf>,
    },
}

#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// Serializes writers, so the last snapshot taken is the last one written.
    write: Mutex<()>,
}

impl StateStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), write: Mutex::new(()) })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn load(&self) -> Restored {
        let path = self.path();
        let text = match fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Restored::Fresh,
            Err(e) => {
                return Restored::Corrupt { reason: format!("cannot read {}: {e}", path.display()), moved_to: None };
            }
        };
        let parsed = serde_json::from_slice::<StateFile>(&text)
            .map_err(|e| e.to_string())
            .and_then(|f| if f.schema == SCHEMA { Ok(f) } else { Err(format!("unknown schema {}", f.schema)) });
        match parsed {
            Ok(f) => Restored::Loaded(f),
            Err(reason) => {
                // Keep the bad file for a post-mortem, out of the way of the next write.
                let aside = self.dir.join(format!("{STATE_FILE}.corrupt-{}", std::process::id()));
                let moved_to = fs::rename(&path, &aside).ok().map(|_| aside);
                Restored::Corrupt {
                    reason: format!("{} is not a valid state file: {reason}", path.display()),
                    moved_to,
                }
            }
        }
    }

    /// Writes `snapshot()` atomically. The snapshot is taken under the writer lock, so concurrent saves cannot
    /// reorder: whichever saves last writes the newest state.
    pub fn save(&self, snapshot: impl FnOnce() -> StateFile) -> std::io::Result<()> {
        let _guard = self.write.lock().unwrap_or_else(|p| p.into_inner());
        let mut file = snapshot();
        file.schema = SCHEMA;
        let bytes = serde_json::to_vec_pretty(&file).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.path())?;
        // The rename is durable only once the directory entry is.
        File::open(&self.dir)?.sync_all()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routing::spec::{CanarySpec, Weight};

    fn sample() -> StateFile {
        let mut models = BTreeMap::new();
        models.insert(
            "m".to_string(),
            ModelState {
                routing: RoutingSpec {
                    stable: Some(1),
                    canary: Some(CanarySpec { version: 2, weight: Weight(125) }),
                    shadow: None,
                },
                events: vec![Event {
                    at: now_rfc3339(),
                    kind: "canary_started".into(),
                    message: "v2 at 1.25 %".into(),
                    stable: Some(1),
                    canary: Some(2),
                    weight_percent: Some(1.25),
                    data: serde_json::Value::Null,
                }],
                rollout: None,
            },
        );
        StateFile { schema: SCHEMA, models }
    }

    #[test]
    fn save_then_load_round_trips() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        assert!(matches!(store.load(), Restored::Fresh));
        store.save(sample).expect("save");
        match store.load() {
            Restored::Loaded(f) => assert_eq!(f, sample_with_time(&f)),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("routing.json.tmp").exists(), "no temp file left behind");
    }

    fn sample_with_time(loaded: &StateFile) -> StateFile {
        let mut s = sample();
        s.models.get_mut("m").expect("m").events[0].at = loaded.models["m"].events[0].at.clone();
        s
    }

    #[test]
    fn a_truncated_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        store.save(sample).expect("save");
        let text = fs::read(store.path()).expect("read");
        fs::write(store.path(), &text[..text.len() / 2]).expect("truncate");
        match store.load() {
            Restored::Corrupt { reason, moved_to } => {
                assert!(reason.contains("not a valid state file"), "{reason}");
                assert!(moved_to.expect("moved").exists());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(store.load(), Restored::Fresh), "the bad file no longer blocks a fresh start");
    }
}

//! State that must survive a restart: each model's routing (stable, canary and weight), its rollout, and its
//! event journal.
//! Written atomically (temp file, fsync, rename, fsync of the directory), so after a crash at any moment the file
//! holds either the previous or the new state, never a mix. A missing file means a first start; a corrupt one is
//! moved aside with a clear log line and the gateway starts from the repository defaults rather than crash-looping.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

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
    #[serde(default, skip_serializing_if = "EventData::is_null")]
    pub data: EventData,
    /// The name of the admin token behind the change (who promoted, who rolled back); absent for the gateway's own
    /// decisions (loads, the rollout controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// An event's measurements, kept as their JSON text. As `serde_json::Value`s the same data costs tens of KB (every
/// object is a B-tree node with room for eleven entries), against a few hundred bytes of text, and a journal holds
/// 500 events per model: as values a full journal was the largest thing a long-running gateway grew into.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct EventData(Box<RawValue>);

impl EventData {
    pub fn is_null(&self) -> bool {
        self.0.get() == "null"
    }

    /// The measurements as a value, for the rare reader that looks inside.
    pub fn value(&self) -> serde_json::Value {
        serde_json::from_str(self.0.get()).unwrap_or_default()
    }
}

impl From<serde_json::Value> for EventData {
    fn from(v: serde_json::Value) -> Self {
        // A Value always serializes (its map keys are strings); null is the fallback that cannot happen.
        Self(serde_json::value::to_raw_value(&v).unwrap_or_else(|_| null_raw()))
    }
}

impl Default for EventData {
    fn default() -> Self {
        Self(null_raw())
    }
}

impl PartialEq for EventData {
    fn eq(&self, other: &Self) -> bool {
        self.0.get() == other.0.get()
    }
}

fn null_raw() -> Box<RawValue> {
    RawValue::from_string("null".to_string()).unwrap_or_else(|_| unreachable!("null is JSON"))
}

thread_local! {
    /// Who the changes made on this thread are made for (see [`as_actor`]).
    static ACTOR: std::cell::RefCell<Option<String>> = const { std::cell::RefCell::new(None) };
}

/// Runs `f` with `name` as the author of the journal events it records. The admin API runs each change on a
/// blocking thread inside this, so the journal names the token without every change function carrying it.
pub fn as_actor<T>(name: Option<String>, f: impl FnOnce() -> T) -> T {
    let previous = ACTOR.with(|a| a.replace(name));
    let out = f();
    ACTOR.with(|a| *a.borrow_mut() = previous);
    out
}

/// The author set by [`as_actor`] on this thread.
pub fn actor() -> Option<String> {
    ACTOR.with(|a| a.borrow().clone())
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ModelState {
    pub routing: RoutingSpec,
    /// Shared, not copied: every change copies the model's control block, journal included, and a change that
    /// cannot be made durable is dropped, so the copy must cost reference counts, not 500 deep clones.
    #[serde(default)]
    pub events: Vec<Arc<Event>>,
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

/// Parses and checks the bytes of a state file (untrusted after a crash or a hand edit: fuzzed by `fuzz/`).
/// Values are checked exactly as the admin API checks them, so a tampered file cannot restore what no operator
/// could have set (a weight of 200 %, version 0, a model name that is a path).
pub fn parse(bytes: &[u8]) -> Result<StateFile, String> {
    let f = serde_json::from_slice::<StateFile>(bytes).map_err(|e| e.to_string())?;
    if f.schema != SCHEMA {
        return Err(format!("unknown schema {}", f.schema));
    }
    let problems: Vec<String> = f.models.iter().flat_map(|(name, m)| m.problems(name)).collect();
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(f)
}

impl ModelState {
    /// What is wrong with this model's restored state, each problem naming the model and the field.
    pub fn problems(&self, model: &str) -> Vec<String> {
        let mut out = Vec::new();
        let valid_name =
            !model.is_empty() && model.len() <= 255 && !model.starts_with('.') && !model.contains(['/', '\\', '\0']);
        if !valid_name {
            out.push(format!("model name {model:?} is not a single directory name"));
        }
        out.extend(self.routing.problems().into_iter().map(|p| format!("{model}: routing.{p}")));
        if self.events.len() > MAX_EVENTS {
            out.push(format!("{model}: {} events, more than the {MAX_EVENTS} kept", self.events.len()));
        }
        if let Some(r) = &self.rollout
            && (r.canary == 0 || r.stable == 0 || r.step >= r.policy.steps().len())
        {
            out.push(format!("{model}: rollout names version 0 or a step past its policy's last"));
        }
        out
    }
}

/// What the file holds now: each model's state as the JSON text written for it. Text, not values: the registry
/// keeps the live state, and this second copy only ever becomes the file again, so as text it costs a fraction of
/// the memory (a full journal is a few hundred KB of text, several times that as values) and a change rewrites
/// the file without cloning every model.
type Written = BTreeMap<String, Box<RawValue>>;

#[derive(Debug)]
pub struct StateStore {
    dir: PathBuf,
    /// Writers take it in turn, so the file always holds the newest state, and a write that fails leaves both the
    /// file and this copy as they were.
    written: Mutex<Written>,
}

/// The file's shape when written from [`Written`]; it reads back as a [`StateFile`].
#[derive(Serialize)]
struct FileOut<'a> {
    schema: u32,
    models: &'a Written,
}

impl StateStore {
    pub fn open(dir: &Path) -> std::io::Result<Self> {
        fs::create_dir_all(dir)?;
        Ok(Self { dir: dir.to_path_buf(), written: Mutex::default() })
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
        match parse(&text) {
            Ok(f) => {
                let mut written = Written::new();
                for (model, state) in &f.models {
                    match serde_json::value::to_raw_value(state) {
                        Ok(raw) => written.insert(model.clone(), raw),
                        Err(e) => return Restored::Corrupt { reason: e.to_string(), moved_to: None },
                    };
                }
                *self.lock() = written;
                Restored::Loaded(f)
            }
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces one model's state and writes the file atomically; returns once it is durable. On an error nothing
    /// changed, on disk or here, and the caller must not apply the change it was saving.
    pub fn save_model(&self, model: &str, state: ModelState) -> std::io::Result<()> {
        let raw = serde_json::value::to_raw_value(&state).map_err(std::io::Error::other)?;
        let mut written = self.lock();
        let previous = written.insert(model.to_string(), raw);
        let result = self.write(&written);
        if result.is_err() {
            match previous {
                Some(p) => written.insert(model.to_string(), p),
                None => written.remove(model),
            };
        }
        result
    }

    /// Writes every model's state atomically (temp file, fsync, rename, fsync of the directory).
    fn write(&self, models: &Written) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(&FileOut { schema: SCHEMA, models }).map_err(std::io::Error::other)?;
        let tmp = self.dir.join(format!("{STATE_FILE}.tmp"));
        let result = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, self.path())?;
            // The rename is durable only once the directory entry is.
            File::open(&self.dir)?.sync_all()
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
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
                    previous: vec![],
                },
                events: vec![Arc::new(Event {
                    at: now_rfc3339(),
                    kind: "canary_started".into(),
                    message: "v2 at 1.25 %".into(),
                    stable: Some(1),
                    canary: Some(2),
                    weight_percent: Some(1.25),
                    data: EventData::default(),
                    by: Some("oncall".into()),
                })],
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
        for (m, state) in sample().models {
            store.save_model(&m, state).expect("save");
        }
        match store.load() {
            Restored::Loaded(f) => assert_eq!(f, sample_with_time(&f)),
            other => panic!("{other:?}"),
        }
        assert!(!dir.path().join("routing.json.tmp").exists(), "no temp file left behind");
    }

    fn sample_with_time(loaded: &StateFile) -> StateFile {
        let mut s = sample();
        Arc::make_mut(&mut s.models.get_mut("m").expect("m").events[0]).at = loaded.models["m"].events[0].at.clone();
        s
    }

    #[test]
    fn a_truncated_file_is_moved_aside_and_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        for (m, state) in sample().models {
            store.save_model(&m, state).expect("save");
        }
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

    /// Restored values are checked like admin input: a tampered weight or share is refused, file moved aside.
    #[test]
    fn out_of_range_values_are_refused_like_api_input() {
        let good = serde_json::to_value(sample()).expect("json");
        let cases: Vec<(&str, serde_json::Value, &str)> = vec![
            ("/models/m/routing/canary/weight", 20_000.into(), "weight"),
            ("/models/m/routing/stable", 0.into(), "stable"),
            ("/models/m/routing/canary/version", 0.into(), "canary"),
        ];
        for (pointer, value, needle) in cases {
            let mut v = good.clone();
            *v.pointer_mut(pointer).expect(pointer) = value;
            let e = parse(&serde_json::to_vec(&v).expect("bytes")).expect_err(pointer);
            assert!(e.contains(needle), "{pointer}: {e}");
        }
        let mut v = good.clone();
        v["models"]["m"]["routing"]["shadow"] = serde_json::json!({"version": 1, "share": 100_000});
        assert!(parse(&serde_json::to_vec(&v).expect("bytes")).expect_err("share").contains("shadow"));
        let mut v = good;
        let m = v["models"]["m"].clone();
        v["models"]["../../etc"] = m;
        assert!(parse(&serde_json::to_vec(&v).expect("bytes")).expect_err("name").contains("directory name"));
    }

    #[test]
    fn a_failed_write_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = StateStore::open(dir.path()).expect("open");
        let (m, state) = sample().models.into_iter().next().expect("one");
        store.save_model(&m, state.clone()).expect("save");
        let before = fs::read(store.path()).expect("read");
        let gone = dir.path().join("gone");
        let broken = StateStore { dir: gone, written: Mutex::new(store.lock().clone()) };
        let kept = broken.lock()["m"].get().to_string();
        assert!(broken.save_model("other", state.clone()).is_err());
        assert_eq!(broken.lock().len(), 1, "a new model is not kept");
        let mut changed = state;
        changed.routing.stable = Some(7);
        assert!(broken.save_model("m", changed).is_err());
        assert_eq!(broken.lock()["m"].get(), kept, "a changed model keeps its old state");
        assert_eq!(fs::read(store.path()).expect("read"), before);
    }
}

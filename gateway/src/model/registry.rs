//! The registry of models: loads versions from the repository, restores each model's routing from the state
//! file, and persists every change. Reads are lock-free: the model map and each model's version map and routing
//! table are `ArcSwap`s, so the request path does atomic loads only. (The design sketched a `DashMap`; its shard
//! locks would put a lock on every request for a map that changes only when an operator acts.)

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::config::{BatchingConfig, SkewConfig};
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::VersionState;
use crate::model::batcher::BatchPolicy;
use crate::model::disk::DiskState;
use crate::model::onnx::SessionOptions;
use crate::model::pool::PoolHandle;
use crate::model::repository::Repository;
use crate::model::slot::ModelSlot;
use crate::model::version::{LoadContext, load_version};
use crate::state::{ModelState, Restored, StateStore};

/// Who makes a change: an operator (any replica may), or the rollout controller (whose writes are fenced by its
/// leadership in cluster mode, so a deposed leader cannot write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Operator,
    Controller,
}

/// The shared copy of every model's desired state in cluster mode (implemented by `crate::cluster`); the state
/// file is then a local cache.
pub trait SharedStore: Send + Sync {
    /// Writes `state` for `model` if the shared copy is still the one this replica last applied. `fenced` writes
    /// (rollout decisions) succeed only while this replica leads the analysis. Fails with `Conflict` when another
    /// replica changed the model first and `StoreUnavailable` when the store is out of reach; then nothing changed.
    fn commit(&self, model: &str, state: &ModelState, fenced: bool) -> Result<(), GatewayError>;
}

pub struct Registry {
    models: ArcSwap<HashMap<Arc<str>, Arc<ModelSlot>>>,
    pub(crate) repository: Repository,
    env: &'static Environment,
    session_options: SessionOptions,
    pool: PoolHandle,
    batching: BatchingConfig,
    skew: SkewConfig,
    pub(crate) metrics: Metrics,
    pub(crate) store: StateStore,
    upstream_tls: crate::tls::ClientTlsMaterial,
    /// Model states read at start, handed to each model's slot when it is created.
    restored: Mutex<BTreeMap<String, ModelState>>,
    loaded: AtomicBool,
    /// The cluster store, in cluster mode.
    shared: std::sync::OnceLock<Arc<dyn SharedStore>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("repository", &self.repository).finish()
    }
}

/// Everything a registry is built from.
pub struct RegistryParts {
    pub repository: Repository,
    pub env: &'static Environment,
    pub session_options: SessionOptions,
    pub pool: PoolHandle,
    pub batching: BatchingConfig,
    pub skew: SkewConfig,
    pub metrics: Metrics,
    pub store: StateStore,
    /// The client side of TLS links to remote upstreams (`https://`, `grpcs://`).
    pub upstream_tls: crate::tls::ClientTlsMaterial,
}

impl Registry {
    /// Builds the registry and reads the state file; a corrupt file is reported and the defaults used.
    pub fn new(p: RegistryParts) -> Self {
        let restored = match p.store.load() {
            Restored::Fresh => {
                tracing::info!(path = %p.store.path().display(), "no state file yet: starting from the repository");
                BTreeMap::new()
            }
            Restored::Loaded(f) => {
                tracing::info!(path = %p.store.path().display(), models = f.models.len(), "routing state restored");
                f.models
            }
            Restored::Corrupt { reason, moved_to } => {
                tracing::error!(%reason, moved_to = ?moved_to, "state file unusable: starting from the repository defaults");
                BTreeMap::new()
            }
        };
        Self {
            models: Default::default(),
            repository: p.repository,
            env: p.env,
            session_options: p.session_options,
            pool: p.pool,
            batching: p.batching,
            skew: p.skew,
            metrics: p.metrics,
            store: p.store,
            upstream_tls: p.upstream_tls,
            restored: Mutex::new(restored),
            loaded: AtomicBool::new(false),
            shared: std::sync::OnceLock::new(),
        }
    }

    /// Makes `store` the durable home of every model's desired state (cluster mode), and takes the states it
    /// holds as the ones to restore, over the local state file's.
    pub fn share(&self, store: Arc<dyn SharedStore>, states: BTreeMap<String, ModelState>) {
        let mut restored = self.restored.lock().unwrap_or_else(|p| p.into_inner());
        for (model, state) in states {
            match self.get(&model) {
                Some(_) => self.apply_shared(&model, state),
                None => {
                    restored.insert(model, state);
                }
            }
        }
        let _ = self.shared.set(store);
    }

    pub(crate) fn shared(&self) -> Option<&Arc<dyn SharedStore>> {
        self.shared.get()
    }

    /// Applies a model's desired state from the cluster store (another replica's change, or this one's echoed
    /// back): the same swap as a local change, and the state file cache follows.
    pub fn apply_shared(&self, model: &str, state: ModelState) {
        let Some(slot) = self.get(model) else { return };
        {
            let mut c = slot.control();
            if c.to_state() == state {
                return;
            }
            c.spec = state.routing;
            c.events = state.events.into_iter().collect();
            c.rollout = state.rollout;
            slot.publish(&c);
            if let Err(e) = self.store.save_model(model, c.to_state()) {
                tracing::warn!(model, error = %e, "cannot update the local state cache");
            }
            slot.log_last_event(&c);
        }
        slot.report(&self.metrics);
    }

    /// Every model's desired state as this replica holds it.
    pub fn states(&self) -> BTreeMap<String, ModelState> {
        self.models().into_iter().map(|s| (s.name.to_string(), s.control().to_state())).collect()
    }

    /// The model repository on disk.
    pub fn repository(&self) -> &Repository {
        &self.repository
    }

    pub fn get(&self, model: &str) -> Option<Arc<ModelSlot>> {
        self.models.load().get(model).cloned()
    }

    /// All models, sorted by name.
    pub fn models(&self) -> Vec<Arc<ModelSlot>> {
        let mut v: Vec<_> = self.models.load().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    /// Where the state file is.
    pub fn state_path(&self) -> std::path::PathBuf {
        self.store.path()
    }

    /// True once the initial scan has been loaded.
    pub fn initial_load_done(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// The slot of a model, created (with its restored state) on first use.
    pub(crate) fn slot(&self, model: &str) -> Arc<ModelSlot> {
        if let Some(s) = self.get(model) {
            return s;
        }
        let restored = self.restored.lock().unwrap_or_else(|p| p.into_inner()).remove(model);
        let slot = Arc::new(ModelSlot::new(model, restored));
        self.models.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(model.into()).or_insert_with(|| slot.clone());
            m
        });
        self.get(model).unwrap_or(slot)
    }

    /// Loads every version in the repository, then settles each model's routing: the restored spec where there
    /// is one, else the highest ready version as stable. Blocking (ONNX session creation): run it off the async
    /// workers. A version that fails is recorded with its reason and the others carry on.
    pub fn load_repository(&self) -> Result<(), String> {
        let scan = self.repository.scan()?;
        for s in &scan.skipped {
            tracing::warn!(entry = %s, "skipped in the model repository");
        }
        for (model, versions) in &scan.models {
            let slot = self.slot(model);
            for &n in versions {
                slot.set_state(n, Some(VersionState::Loading));
            }
        }
        for (model, versions) in &scan.models {
            for &n in versions {
                // A failure is recorded in the version state and logged; the others carry on.
                let _ = self.load(model, n);
            }
        }
        let leftover: Vec<String> = self.restored.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for m in leftover {
            tracing::warn!(model = %m, "the state file names a model that is not in the repository; ignored");
        }
        for slot in self.models() {
            self.settle(&slot);
            let mut c = slot.control();
            if let Some(r) = c.rollout.as_ref().filter(|r| r.phase.is_active()) {
                // The controller picks it up at its next tick; say so in the journal.
                let message = crate::rollout::machine::restored_message(r);
                slot.record(&mut c, "rollout_restored", message, Default::default());
            }
            drop(c);
            slot.report(&self.metrics);
        }
        // Durable before ready: the state the gateway serves is on disk when readiness says so.
        self.persist();
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// After the initial load (and each later load): fix the stable version when none is set yet, so that
    /// versions appearing later get no traffic on their own; journal a fallback from a desired stable version
    /// that cannot serve, and its return, without ever saving the fallback as the desired state.
    fn settle(&self, slot: &ModelSlot) {
        let mut c = slot.control();
        let routing = slot.resolve_spec(&c.spec);
        let serving = routing.stable.as_ref().map(|v| v.number);
        match (c.spec.stable, serving) {
            (None, Some(n)) => {
                c.spec.set_stable(n);
                slot.record(
                    &mut c,
                    "stable_selected",
                    format!("version {n} is stable (highest ready)"),
                    Default::default(),
                );
            }
            (Some(want), Some(n)) if want != n && c.announced_stable != Some(n) => {
                let why = match slot.versions().get(&want) {
                    Some(VersionState::Failed(reason)) => reason.clone(),
                    Some(VersionState::Loading) => "it is still loading".into(),
                    _ => "it is not in the repository".into(),
                };
                let msg = format!(
                    "stable version {want} cannot serve ({why}); version {n} serves until it can, and version \
                     {want} stays the stable version"
                );
                let data = serde_json::json!({ "desired": want, "serving": n });
                slot.record(&mut c, "stable_fallback", msg, data);
            }
            (Some(want), Some(n)) if want == n && c.announced_stable.is_some_and(|a| a != n) => {
                let was = c.announced_stable.unwrap_or_default();
                let msg = format!("stable version {want} is ready again and takes its traffic back from version {was}");
                slot.record(&mut c, "stable_restored", msg, serde_json::json!({ "desired": want, "was": was }));
            }
            _ => {}
        }
        c.announced_stable = serving;
        if let Some(canary) = c.spec.canary
            && routing.canary.is_none()
        {
            c.spec.canary = None;
            let msg = format!("restored canary version {} is not ready; canary removed", canary.version);
            slot.record(&mut c, "canary_dropped", msg, Default::default());
        }
        slot.publish(&c);
        // The gauges read the control block: release it first.
        drop(c);
        slot.report(&self.metrics);
    }

    /// Loads one version and publishes its state. Returns the failure reason, if any.
    pub fn load(&self, model: &str, number: u64) -> Result<(), String> {
        let slot = self.slot(model);
        let version = number.to_string();
        let started = std::time::Instant::now();
        let result = self.repository.version_dir(model, &version).and_then(|dir| {
            self.repository.check_files(&dir)?;
            let ctx = LoadContext {
                env: self.env,
                session_options: &self.session_options,
                pool: &self.pool,
                batching: BatchPolicy::for_model(&self.batching, model),
                skew: self.skew.enabled.then(|| (self.skew.slots, self.skew.policy(model))),
                metrics: self.metrics.version(model, &version),
                invalid_counter: &|feature, kind| self.metrics.invalid_value(model, &version, feature, kind),
                upstream_up: &|| self.metrics.upstream_up(model, &version),
                upstream_tls: &self.upstream_tls,
            };
            load_version(ctx, &dir, model, number)
        });
        let (state, outcome) = match result {
            Ok(v) => {
                tracing::info!(model, version, ms = started.elapsed().as_millis() as u64, "version ready");
                (VersionState::Ready(Arc::new(v)), Ok(()))
            }
            Err(reason) => {
                tracing::error!(model, version, %reason, "version failed to load; it will not serve");
                self.metrics.forget_upstream(model, &version);
                (VersionState::Failed(reason.clone()), Err(reason))
            }
        };
        self.metrics.set_ready(model, &version, matches!(state, VersionState::Ready(_)));
        let accuracy = match &state {
            VersionState::Ready(v) => v.manifest.training["metrics"]["test_accuracy"].as_f64(),
            _ => None,
        };
        self.metrics.loaded(model, &version, outcome.is_err(), accuracy);
        slot.set_state(number, Some(state));
        if self.initial_load_done() {
            let mut c = slot.control();
            let (kind, msg) = match &outcome {
                Ok(()) => ("version_loaded", format!("version {number} loaded and passed its golden examples")),
                Err(r) => ("version_failed", format!("version {number} failed to load: {r}")),
            };
            slot.record(&mut c, kind, msg, Default::default());
            drop(c);
            // A model that appeared after start gets its first ready version as stable, pinned, so that its later
            // versions wait for an operator like everyone else's.
            self.settle(&slot);
            self.persist();
        }
        outcome
    }

    /// Journals and exports a serving version's files changing or vanishing under it (or coming back as loaded).
    pub fn files_moved(&self, model: &str, number: u64, state: DiskState) {
        let Some(slot) = self.get(model) else { return };
        let (kind, msg) = match state {
            DiskState::Changed => (
                "version_files_changed",
                format!("the files of version {number} changed on disk; it keeps serving what it loaded"),
            ),
            DiskState::Missing => (
                "version_files_missing",
                format!("the files of version {number} are gone from the repository; it keeps serving what it loaded"),
            ),
            DiskState::Unchanged => {
                ("version_files_restored", format!("the files of version {number} are as loaded again"))
            }
        };
        tracing::warn!(model, version = number, state = state.label(), "model files moved under a serving version");
        self.metrics.files_changed(model, &number.to_string(), state != DiskState::Unchanged);
        let mut c = slot.control();
        slot.record(&mut c, kind, msg, serde_json::json!({ "disk": state.label() }));
        if let Err(e) = self.store.save_model(&slot.name, c.to_state()) {
            tracing::error!(error = %e, path = %self.store.path().display(), "cannot write the state file");
        }
        slot.log_last_event(&c);
    }

    /// Writes every model's routing and journal to the state file (after loads, which acknowledge nothing to an
    /// operator: a failed write is logged, and the next change writes again).
    pub fn persist(&self) {
        for slot in self.models() {
            let c = slot.control();
            if let Err(e) = self.store.save_model(&slot.name, c.to_state()) {
                tracing::error!(error = %e, path = %self.store.path().display(), "cannot write the state file");
                return;
            }
        }
    }
}

//! The registry of models. Reads are lock-free: the model map and each model's version map and routing table are
//! `ArcSwap`s, so the request path does atomic loads only. (The design sketched a `DashMap`; its shard locks would
//! put a lock on every request for a map that changes only when an operator acts.)

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use ort::environment::Environment;

use crate::config::BatchingConfig;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::VersionState;
use crate::model::onnx::SessionOptions;
use crate::model::pool::PoolHandle;
use crate::model::repository::{Repository, parse_version};
use crate::model::version::{LoadContext, ModelVersion, load_version};
use crate::routing::Routing;

pub struct ModelSlot {
    pub name: Arc<str>,
    versions: ArcSwap<BTreeMap<u64, VersionState>>,
    routing: ArcSwap<Routing>,
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelSlot({})", self.name)
    }
}

impl ModelSlot {
    fn new(name: &str) -> Self {
        Self { name: name.into(), versions: ArcSwap::from_pointee(BTreeMap::new()), routing: Default::default() }
    }

    pub fn versions(&self) -> Arc<BTreeMap<u64, VersionState>> {
        self.versions.load_full()
    }

    pub fn routing(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.routing.load()
    }

    fn set_state(&self, number: u64, state: VersionState) {
        self.versions.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.insert(number, state.clone());
            m
        });
        self.routing.store(Arc::new(Routing::latest(&self.versions.load())));
    }

    /// The version that serves a request: the named one, or the routing table's choice.
    pub fn resolve(&self, version: Option<&str>) -> Result<Arc<ModelVersion>, GatewayError> {
        let Some(v) = version else {
            return self.routing.load().stable.clone().ok_or_else(|| GatewayError::NotReady {
                model: self.name.to_string(),
                version: "default".into(),
                reason: "no version of this model is ready".into(),
            });
        };
        let not_found = || GatewayError::VersionNotFound { model: self.name.to_string(), version: v.to_string() };
        let n = parse_version(v).ok_or_else(not_found)?;
        match self.versions.load().get(&n) {
            None => Err(not_found()),
            Some(VersionState::Ready(mv)) => Ok(mv.clone()),
            Some(VersionState::Loading) => Err(GatewayError::NotReady {
                model: self.name.to_string(),
                version: v.to_string(),
                reason: "still loading".into(),
            }),
            Some(VersionState::Failed(reason)) => Err(GatewayError::NotReady {
                model: self.name.to_string(),
                version: v.to_string(),
                reason: reason.clone(),
            }),
        }
    }

    pub fn is_ready(&self) -> bool {
        self.routing.load().stable.is_some()
    }
}

pub struct Registry {
    models: ArcSwap<HashMap<Arc<str>, Arc<ModelSlot>>>,
    repository: Repository,
    env: &'static Environment,
    session_options: SessionOptions,
    pool: PoolHandle,
    batching: BatchingConfig,
    metrics: Metrics,
    loaded: AtomicBool,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry").field("repository", &self.repository).finish()
    }
}

impl Registry {
    pub fn new(
        repository: Repository,
        env: &'static Environment,
        session_options: SessionOptions,
        pool: PoolHandle,
        batching: BatchingConfig,
        metrics: Metrics,
    ) -> Self {
        Self {
            models: Default::default(),
            repository,
            env,
            session_options,
            pool,
            batching,
            metrics,
            loaded: AtomicBool::new(false),
        }
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

    /// True once the initial scan has been loaded.
    pub fn initial_load_done(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    fn slot(&self, model: &str) -> Arc<ModelSlot> {
        if let Some(s) = self.get(model) {
            return s;
        }
        let slot = Arc::new(ModelSlot::new(model));
        self.models.rcu(|m| {
            let mut m = HashMap::clone(m);
            m.entry(model.into()).or_insert_with(|| slot.clone());
            m
        });
        self.get(model).unwrap_or(slot)
    }

    /// Loads every version in the repository. Blocking (ONNX session creation): run it off the async workers.
    /// A version that fails is recorded with its reason and the others carry on.
    pub fn load_repository(&self) -> Result<(), String> {
        let scan = self.repository.scan()?;
        for s in &scan.skipped {
            tracing::warn!(entry = %s, "skipped in the model repository");
        }
        for (model, versions) in &scan.models {
            let slot = self.slot(model);
            for &n in versions {
                slot.set_state(n, VersionState::Loading);
            }
        }
        for (model, versions) in &scan.models {
            for &n in versions {
                self.load(model, n);
            }
        }
        self.loaded.store(true, Ordering::Release);
        Ok(())
    }

    /// Loads one version and publishes its state.
    pub fn load(&self, model: &str, number: u64) {
        let slot = self.slot(model);
        let version = number.to_string();
        let started = std::time::Instant::now();
        let result = self.repository.version_dir(model, &version).and_then(|dir| {
            let ctx = LoadContext {
                env: self.env,
                session_options: &self.session_options,
                pool: &self.pool,
                batching: self.batching.policy(model),
                metrics: self.metrics.version(model, &version),
            };
            load_version(ctx, &dir, model, number)
        });
        let state = match result {
            Ok(v) => {
                tracing::info!(model, version, ms = started.elapsed().as_millis() as u64, "version ready");
                VersionState::Ready(Arc::new(v))
            }
            Err(reason) => {
                tracing::error!(model, version, %reason, "version failed to load; it will not serve");
                VersionState::Failed(reason)
            }
        };
        self.metrics.set_ready(model, &version, matches!(state, VersionState::Ready(_)));
        slot.set_state(number, state);
    }
}

//! One model: its versions, its live routing table, and the operator's intent behind it (the routing spec and the
//! event journal). Requests touch only the two `ArcSwap`s; the spec and journal sit behind a mutex that only
//! loaders and the admin path take.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use arc_swap::ArcSwap;

use crate::clock::now_rfc3339;
use crate::error::GatewayError;
use crate::metrics::Metrics;
use crate::model::repository::parse_version;
use crate::model::version::ModelVersion;
use crate::model::{Routing, VersionState};
use crate::rollout::machine::{Phase, Rollout};
use crate::routing::{RouteHint, RoutingSpec};
use crate::state::{Event, MAX_EVENTS, ModelState};

pub struct ModelSlot {
    pub name: Arc<str>,
    versions: ArcSwap<BTreeMap<u64, VersionState>>,
    routing: ArcSwap<Routing>,
    control: Mutex<Control>,
}

/// What operators asked for, and what happened.
#[derive(Debug, Default, Clone)]
pub struct Control {
    pub spec: RoutingSpec,
    pub events: VecDeque<Arc<Event>>,
    /// The current or last rollout of this model.
    pub rollout: Option<Rollout>,
    /// The stable version the journal last said serves (not persisted): a fallback, and the desired version
    /// taking its traffic back, are each journaled once.
    pub announced_stable: Option<u64>,
}

impl Control {
    /// What to persist for this model.
    pub fn to_state(&self) -> ModelState {
        ModelState {
            routing: self.spec.clone(),
            events: self.events.iter().cloned().collect(),
            rollout: self.rollout.clone(),
        }
    }
}

impl std::fmt::Debug for ModelSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ModelSlot({})", self.name)
    }
}

impl ModelSlot {
    pub fn new(name: &str, restored: Option<ModelState>) -> Self {
        let restored = restored.unwrap_or_default();
        let control = Control {
            spec: restored.routing,
            events: restored.events.into_iter().collect(),
            rollout: restored.rollout,
            announced_stable: None,
        };
        Self {
            name: name.into(),
            versions: ArcSwap::from_pointee(BTreeMap::new()),
            routing: Default::default(),
            control: Mutex::new(control),
        }
    }

    pub fn versions(&self) -> Arc<BTreeMap<u64, VersionState>> {
        self.versions.load_full()
    }

    pub fn routing(&self) -> Arc<Routing> {
        self.routing.load_full()
    }

    /// The routing table without touching its reference count: for the request path.
    pub fn routing_guard(&self) -> arc_swap::Guard<Arc<Routing>> {
        self.routing.load()
    }

    /// The control block; hold it across a check-and-change so concurrent admin calls cannot interleave.
    pub fn control(&self) -> MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a version's new state and rebuilds the routing table.
    pub fn set_state(&self, number: u64, state: Option<VersionState>) {
        let control = self.control();
        self.versions.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            match &state {
                Some(s) => m.insert(number, s.clone()),
                None => m.remove(&number),
            };
            m
        });
        self.publish(&control);
    }

    /// Drops a version from the map (the caller holds the control lock); in-flight calls keep their `Arc`.
    pub fn remove_version(&self, number: u64) {
        self.versions.rcu(|m| {
            let mut m = BTreeMap::clone(m);
            m.remove(&number);
            m
        });
    }

    /// Rebuilds the live table from the spec (call with the control lock held, after changing the spec).
    pub fn publish(&self, control: &Control) {
        self.routing.store(Arc::new(self.resolve_spec(&control.spec)));
    }

    /// The live table `spec` would give against the versions ready now.
    pub fn resolve_spec(&self, spec: &RoutingSpec) -> Routing {
        let ready: BTreeMap<u64, Arc<ModelVersion>> = self
            .versions
            .load()
            .iter()
            .filter_map(|(n, s)| match s {
                VersionState::Ready(v) => Some((*n, v.clone())),
                _ => None,
            })
            .collect();
        spec.resolve(&ready)
    }

    /// Appends to the journal, with the routing as it now stands.
    pub fn record(&self, control: &mut Control, kind: &str, message: String, data: serde_json::Value) {
        let spec = &control.spec;
        let event = Event {
            at: now_rfc3339(),
            kind: kind.to_string(),
            message,
            stable: spec.stable,
            canary: spec.canary.map(|c| c.version),
            weight_percent: spec.canary.map(|c| c.weight.percent()),
            data: data.into(),
            by: crate::state::actor(),
        };
        control.events.push_back(Arc::new(event));
        while control.events.len() > MAX_EVENTS {
            control.events.pop_front();
        }
    }

    /// Logs the newest journal event (once it is committed).
    pub fn log_last_event(&self, control: &Control) {
        if let Some(e) = control.events.back() {
            tracing::info!(model = %self.name, kind = %e.kind, message = %e.message, "model event");
        }
    }

    /// A ready version by its number as written in a URL or header.
    pub fn version(&self, v: &str) -> Result<Arc<ModelVersion>, GatewayError> {
        let not_found = || GatewayError::VersionNotFound { model: self.name.to_string(), version: v.to_string() };
        let n = parse_version(v).ok_or_else(not_found)?;
        let not_ready =
            |reason: String| GatewayError::NotReady { model: self.name.to_string(), version: v.to_string(), reason };
        match self.versions.load().get(&n) {
            None => Err(not_found()),
            Some(VersionState::Ready(mv)) => Ok(mv.clone()),
            Some(VersionState::Loading) => Err(not_ready("still loading".into())),
            Some(VersionState::Failed(reason)) => Err(not_ready(reason.clone())),
        }
    }

    /// The version that serves a request: an explicit one (URL, then pin header), else the routing table's choice.
    pub fn resolve(&self, hint: RouteHint<'_>) -> Result<Arc<ModelVersion>, GatewayError> {
        if let Some(v) = hint.explicit() {
            return self.version(v);
        }
        self.routing.load().choose(&self.name, hint.key).cloned().ok_or_else(|| GatewayError::NotReady {
            model: self.name.to_string(),
            version: "default".into(),
            reason: "no version of this model is ready".into(),
        })
    }

    /// Mirrors the routing table and the rollout into their gauges (after every change).
    pub fn report(&self, metrics: &Metrics) {
        let routing = self.routing();
        let versions: Vec<u64> = self.versions().keys().copied().collect();
        let stable = routing.stable.as_ref().map(|v| v.number);
        let canary = routing.canary.as_ref().map(|c| (c.version.number, c.weight.percent()));
        metrics.set_routing(&self.name, &versions, stable, canary);
        let c = self.control();
        if let Some(r) = c.rollout.as_ref() {
            let phases = Phase::ALL.map(Phase::label);
            metrics.set_rollout(&self.name, &phases, r.phase.label(), r.failed_intervals, r.step);
        }
    }

    pub fn is_ready(&self) -> bool {
        self.routing.load().stable.is_some()
    }
}

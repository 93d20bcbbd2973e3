//! Traffic per version over the last minutes, for the console's charts: every [`STEP`] a sampler diffs each ready
//! version's cumulative outcome counters (the same ones canary analysis reads) and keeps requests/s, the server
//! error rate and p50/p99 latency of that step. The history is a bounded ring in memory ([`POINTS`] steps): no new
//! storage, nothing on the request path.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;

use crate::core::Core;
use crate::rollout::stats::StatsSnapshot;

/// How often the history is sampled.
pub const STEP: Duration = Duration::from_secs(5);
/// Steps kept: 15 minutes.
pub const POINTS: usize = 180;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct VersionPoint {
    pub rps: f64,
    /// Share of handled requests that failed on the server side; `None` without requests.
    pub error_rate: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub at: String,
    /// By version number.
    pub versions: BTreeMap<String, VersionPoint>,
}

/// The history of every model, and the snapshots the next step is diffed against.
#[derive(Debug, Default)]
pub struct TrafficHistory {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    points: HashMap<String, VecDeque<Stored>>,
    last: HashMap<(String, String), StatsSnapshot>,
}

/// A [`Point`] as kept: boxed slices rather than a `String` and a `BTreeMap`, whose nodes reserve room for eleven
/// entries. A full history is 15 minutes of every model, so the compact form keeps it a small, fixed cost.
#[derive(Debug)]
struct Stored {
    at: Box<str>,
    versions: Box<[(Box<str>, VersionPoint)]>,
}

impl TrafficHistory {
    /// Takes one step: what each ready version did since the last step. Versions gone since are forgotten.
    pub fn sample(&self, core: &Core, step: Duration) {
        let at = crate::clock::now_rfc3339();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut seen = HashMap::new();
        let mut by_model: HashMap<String, Vec<(Box<str>, VersionPoint)>> = HashMap::new();
        for v in core.ready_versions() {
            let key = (v.model.to_string(), v.version.to_string());
            let now = v.stats.snapshot();
            // A version's first step has nothing to diff against: it starts the series.
            if let Some(prev) = inner.last.get(&key) {
                let d = now.since(prev);
                let point = VersionPoint {
                    rps: d.requests() as f64 / step.as_secs_f64().max(1e-3),
                    error_rate: d.success_rate().map(|s| 1.0 - s),
                    p50_ms: d.quantile(0.5).map(|s| s * 1e3),
                    p99_ms: d.quantile(0.99).map(|s| s * 1e3),
                };
                by_model.entry(key.0.clone()).or_default().push((key.1.as_str().into(), point));
            }
            seen.insert(key, now);
        }
        inner.last = seen;
        for (model, versions) in by_model {
            // The ring takes its full size at once: it fills within minutes of start anyway, and then it no
            // longer grows while a soak measures.
            let ring = inner.points.entry(model).or_insert_with(|| VecDeque::with_capacity(POINTS));
            if ring.len() == POINTS {
                ring.pop_front();
            }
            ring.push_back(Stored { at: at.as_str().into(), versions: versions.into_boxed_slice() });
        }
    }

    /// A model's points, oldest first.
    pub fn points(&self, model: &str) -> Vec<Point> {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let point = |p: &Stored| Point {
            at: p.at.to_string(),
            versions: p.versions.iter().map(|(v, x)| (v.to_string(), x.clone())).collect(),
        };
        inner.points.get(model).map(|r| r.iter().map(point).collect()).unwrap_or_default()
    }
}

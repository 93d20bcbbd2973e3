//! The Prometheus endpoint on its own port, so scrapes never compete with inference admission limits.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::core::Core;

pub fn router(core: Arc<Core>) -> Router {
    Router::new().route("/metrics", get(metrics)).with_state(core)
}

async fn metrics(State(core): State<Arc<Core>>) -> impl IntoResponse {
    // Gauges that mirror live state are read at scrape time, keeping the request path free of them.
    core.metrics.queue_depth.set(core.pool.depth() as i64);
    for v in core.ready_versions() {
        let drift = v.skew.as_ref().map(|s| s.drift.snapshot());
        core.metrics.set_skew(&v.model, &v.version, drift.as_ref(), v.age(), core.is_stale(&v));
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], core.metrics.render())
}

//! The admin API: model lifecycle and canary control for operators, on its own listener (loopback by default).
//! Every call carries `Authorization: Bearer <token>`, compared in constant time; the token is never logged and
//! never shown by `Debug`. With no token configured every call is refused, with the reason.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::http::header::AUTHORIZATION;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::cluster::Cluster;
use crate::controller::{Command, Controller};
use crate::core::Core;
use crate::error::GatewayError;
use crate::model::repository::parse_version;
use crate::routing::Weight;
use crate::state::Event;

pub mod console;
pub mod tokens;
pub mod traffic;
pub mod views;

pub use tokens::{AdminToken, Caller, Role};

use views::view;
pub use views::{ModelView, disk_state};

/// Largest admin request body: commands are small JSON objects.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
struct AdminState {
    core: Arc<Core>,
    controller: Arc<Controller>,
    cluster: Option<Arc<Cluster>>,
    token: AdminToken,
    traffic: Arc<traffic::TrafficHistory>,
    clients: Arc<crate::api::consumers::Clients>,
}

pub fn router(
    core: Arc<Core>,
    controller: Arc<Controller>,
    cluster: Option<Arc<Cluster>>,
    token: AdminToken,
    traffic: Arc<traffic::TrafficHistory>,
    clients: Arc<crate::api::consumers::Clients>,
) -> Router {
    let state = AdminState { core, controller, cluster, token, traffic, clients };
    let api = Router::new()
        .route("/admin/cluster", get(cluster_view))
        .route("/admin/models", get(list))
        .route("/admin/models/{model}", get(show))
        .route("/admin/models/{model}/events", get(events))
        .route("/admin/models/{model}/skew", get(skew))
        .route("/admin/models/{model}/traffic", get(traffic_view))
        .route("/admin/models/{model}/versions/{version}/load", post(load))
        .route("/admin/models/{model}/versions/{version}/unload", post(unload))
        .route("/admin/models/{model}/canary", post(canary))
        .route("/admin/models/{model}/canary/weight", put(weight))
        .route("/admin/models/{model}/promote", post(promote))
        .route("/admin/models/{model}/rollback", post(rollback))
        .route("/admin/models/{model}/shadow", post(shadow).delete(unshadow))
        .route("/admin/models/{model}/stable", put(stable))
        .route("/admin/models/{model}/rollout", post(rollout_start).get(rollout_show))
        .route("/admin/models/{model}/rollout/{command}", post(rollout_command))
        .fallback(|| async {
            let msg = "no such admin endpoint; see the README for the /admin routes";
            (axum::http::StatusCode::NOT_FOUND, Json(serde_json::json!({ "error": msg })))
        })
        .layer(middleware::from_fn_with_state(state.clone(), auth))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state);
    // The console's page and scripts hold no data, so they load without the token; every call they make needs it.
    console::router().merge(api)
}

tokio::task_local! {
    /// The caller of the admin request being handled, for the journal (see `blocking`).
    static CALLER: Caller;
}

/// Checks the token, refuses a viewer anything but reading, and runs the request as its caller.
async fn auth(State(st): State<AdminState>, req: Request, next: Next) -> Response {
    let header = req.headers().get(AUTHORIZATION).and_then(|h| h.to_str().ok());
    let reads = matches!(*req.method(), axum::http::Method::GET | axum::http::Method::HEAD);
    let caller = if reads { st.token.check(header) } else { st.token.check_operator(header) };
    match caller {
        Ok(c) => CALLER.scope(c, next.run(req)).await,
        Err(e) => {
            tracing::warn!(path = %req.uri().path(), reason = %e, "admin call refused");
            ApiError(e).into_response()
        }
    }
}

fn version_number(v: &str) -> Result<u64, GatewayError> {
    parse_version(v).ok_or_else(|| GatewayError::invalid(format!("version '{v}' must be a positive integer")))
}

/// Decodes and checks an admin body as the route named by `route` would (`canary`, `weight`, `shadow`, `stable`,
/// `rollout`, or a note for `promote`, `rollback` and the rollout commands); for fuzzing the admin bodies.
pub fn check_body(route: &str, bytes: &[u8]) -> Result<(), GatewayError> {
    match route {
        "canary" => {
            decode::<CanaryBody>(bytes).and_then(|b| version_field(&b.version).and(weight_of(b.weight)).map(drop))
        }
        "weight" => decode::<WeightBody>(bytes).and_then(|b| weight_of(b.weight).map(drop)),
        "shadow" => decode::<ShadowBody>(bytes).and_then(|b| version_field(&b.version).map(drop)),
        "stable" => decode::<StableBody>(bytes).and_then(|b| version_field(&b.version).map(drop)),
        "rollout" => decode::<RolloutBody>(bytes).and_then(|b| version_field(&b.version).map(drop)),
        _ => decode::<NoteBody>(bytes).map(drop),
    }
}

/// An admin body's JSON; blank is the empty object (the empty command where every field is optional).
fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, GatewayError> {
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { bytes };
    serde_json::from_slice(text).map_err(|e| GatewayError::invalid(format!("invalid request body: {e}")))
}

/// An admin command's JSON body, whatever the content type (curl's `-d` says form-encoded). An empty body is the
/// empty command `T::default()` where `T` allows one (promote, rollback, rollout commands), so clients that always
/// send `Content-Type: application/json` work; elsewhere the missing fields are named. Rejections are the API's
/// own error shape: 413 past the limit, 400 naming what is wrong.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                GatewayError::PayloadTooLarge { limit: MAX_BODY_BYTES }
            } else {
                GatewayError::invalid(format!("cannot read the request body: {}", e.body_text()))
            }
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        let value =
            serde_json::from_slice(text).map_err(|e| GatewayError::invalid(format!("invalid request body: {e}")))?;
        Ok(Self(value))
    }
}

/// The fleet as this replica sees it; in single-node mode, this process alone.
async fn cluster_view(State(st): State<AdminState>) -> Json<serde_json::Value> {
    match &st.cluster {
        Some(c) => Json(c.view().await),
        None => Json(serde_json::json!({
            "replica": "local",
            "mode": "single-node",
            "connected": true,
            "revision": 0,
            "replicas": [],
            "leaders": {},
        })),
    }
}

async fn list(State(st): State<AdminState>) -> Json<Vec<ModelView>> {
    Json(st.core.registry.models().iter().map(|s| view(s, 10)).collect())
}

/// One model, and who called it in the last day (so an operator knows whom a promotion affects).
async fn show(State(st): State<AdminState>, Path(model): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let mut v = serde_json::to_value(view(&*st.core.model(&model)?, 50)).unwrap_or_default();
    v["consumers"] = serde_json::to_value(st.clients.seen(&model)).unwrap_or_default();
    Ok(Json(v))
}

async fn traffic_view(
    State(st): State<AdminState>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    st.core.model(&model)?;
    Ok(Json(serde_json::json!({
        "model": model,
        "step_secs": traffic::STEP.as_secs(),
        "points": st.traffic.points(&model),
    })))
}

async fn events(State(st): State<AdminState>, Path(model): Path<String>) -> Result<Json<Vec<Arc<Event>>>, ApiError> {
    let slot = st.core.model(&model)?;
    let events = slot.control().events.iter().cloned().collect();
    Ok(Json(events))
}

/// Train/serve skew of every ready version: drift over the window, invalid values, age.
async fn skew(State(st): State<AdminState>, Path(model): Path<String>) -> Result<Json<serde_json::Value>, ApiError> {
    let slot = st.core.model(&model)?;
    Ok(Json(views::skew_report(&st.core, &slot)))
}

/// Runs a blocking registry action off the async workers and answers with the model's new view.
async fn act(
    st: AdminState,
    model: String,
    f: impl FnOnce(&crate::model::Registry, &str) -> Result<(), GatewayError> + Send + 'static,
) -> Result<Json<ModelView>, ApiError> {
    let m = model.clone();
    blocking(&st, move |core| f(&core.registry, &m)).await?;
    Ok(Json(view(&*st.core.model(&model)?, 50)))
}

/// Runs an admin action as this request's caller (see [`change_as`]).
async fn blocking<T: Send + 'static>(
    st: &AdminState,
    f: impl FnOnce(&Core) -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, GatewayError> {
    change_as(st.core.clone(), CALLER.try_with(|c| c.name.clone()).ok(), f).await
}

/// Runs a change that takes locks and writes the state file off the async workers, with `by` (an admin token's
/// name) as the author of the journal events it records. The admin API and the repository extension both change
/// models through it.
pub async fn change_as<T: Send + 'static>(
    core: Arc<Core>,
    by: Option<String>,
    f: impl FnOnce(&Core) -> Result<T, GatewayError> + Send + 'static,
) -> Result<T, GatewayError> {
    tokio::task::spawn_blocking(move || crate::state::as_actor(by, || f(&core)))
        .await
        .map_err(|e| GatewayError::Internal(format!("admin task failed: {e}")))?
}

async fn load(
    State(st): State<AdminState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelView>, ApiError> {
    let n = version_number(&version)?;
    act(st, model, move |r, m| r.load_on_request(m, n)).await
}

async fn unload(
    State(st): State<AdminState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Json<ModelView>, ApiError> {
    let n = version_number(&version)?;
    st.core.model(&model)?;
    act(st, model, move |r, m| r.unload(m, n)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CanaryBody {
    version: serde_json::Value,
    weight: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowBody {
    version: serde_json::Value,
    percent: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WeightBody {
    weight: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteBody {
    #[serde(default, alias = "note")]
    reason: String,
}

fn weight_of(w: f64) -> Result<Weight, GatewayError> {
    Weight::from_percent(w)
        .ok_or_else(|| GatewayError::invalid(format!("'weight' must be a percentage from 0 to 100, got {w}")))
}

/// Versions may come as "2" or 2, as in the protocol's own metadata.
fn version_field(v: &serde_json::Value) -> Result<u64, GatewayError> {
    match v {
        serde_json::Value::String(s) => version_number(s),
        serde_json::Value::Number(n) => version_number(&n.to_string()),
        other => Err(GatewayError::invalid(format!("'version' must be a version number, got {other}"))),
    }
}

async fn shadow(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<ShadowBody>,
) -> Result<Json<ModelView>, ApiError> {
    let n = version_field(&b.version)?;
    let share = Weight::from_percent(b.percent)
        .ok_or_else(|| GatewayError::invalid(format!("'percent' must be from 0 to 100, got {}", b.percent)))?;
    act(st, model, move |r, m| r.set_shadow(m, n, share)).await
}

async fn unshadow(State(st): State<AdminState>, Path(model): Path<String>) -> Result<Json<ModelView>, ApiError> {
    act(st, model, move |r, m| r.clear_shadow(m)).await
}

async fn canary(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<CanaryBody>,
) -> Result<Json<ModelView>, ApiError> {
    let (n, w) = (version_field(&b.version)?, weight_of(b.weight)?);
    act(st, model, move |r, m| r.set_canary(m, n, w)).await
}

async fn weight(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<WeightBody>,
) -> Result<Json<ModelView>, ApiError> {
    let w = weight_of(b.weight)?;
    act(st, model, move |r, m| r.set_canary_weight(m, w)).await
}

async fn promote(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<NoteBody>,
) -> Result<Json<ModelView>, ApiError> {
    let note = b.reason;
    act(st, model, move |r, m| r.promote(m, &note)).await
}

async fn rollback(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<NoteBody>,
) -> Result<Json<ModelView>, ApiError> {
    let note = b.reason;
    act(st, model, move |r, m| r.rollback(m, "manual", &note, serde_json::Value::Null)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StableBody {
    version: serde_json::Value,
    #[serde(default)]
    reason: String,
}

/// Makes a version stable directly, e.g. to go back to the previous version after a promotion.
async fn stable(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<StableBody>,
) -> Result<Json<ModelView>, ApiError> {
    let n = version_field(&b.version)?;
    let note = if b.reason.is_empty() { "set by an operator".to_string() } else { b.reason };
    act(st, model, move |r, m| r.set_stable(m, n, &note)).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    version: serde_json::Value,
    /// Policy fields that differ from the model's configured policy.
    #[serde(default)]
    policy: Option<serde_json::Value>,
}

/// A rollout as the API shows it: the stored state plus its weight steps and current weight.
fn rollout_view(r: &crate::rollout::machine::Rollout) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        let steps: Vec<f64> = r.policy.steps().iter().map(|w| w.percent()).collect();
        o.insert("weight_percent".into(), serde_json::json!(r.weight().percent()));
        o.insert("steps_percent".into(), serde_json::json!(steps));
    }
    v
}

async fn rollout_start(
    State(st): State<AdminState>,
    Path(model): Path<String>,
    Body(b): Body<RolloutBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let n = version_field(&b.version)?;
    if b.policy.as_ref().is_some_and(|p| !p.is_object()) {
        return Err(GatewayError::invalid("'policy' must be an object of policy fields").into());
    }
    st.core.model(&model)?;
    let controller = st.controller.clone();
    let r = blocking(&st, move |_| controller.start(&model, n, b.policy.as_ref())).await?;
    Ok(Json(rollout_view(&r)))
}

async fn rollout_show(
    State(st): State<AdminState>,
    Path(model): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let slot = st.core.model(&model)?;
    let r = slot.control().rollout.clone();
    Ok(Json(r.as_ref().map_or(serde_json::Value::Null, rollout_view)))
}

async fn rollout_command(
    State(st): State<AdminState>,
    Path((model, command)): Path<(String, String)>,
    Body(b): Body<NoteBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let cmd = Command::parse(&command).ok_or_else(|| {
        GatewayError::invalid(format!("unknown rollout command '{command}'; use pause, resume, abort, skip or approve"))
    })?;
    let note = b.reason;
    st.core.model(&model)?;
    let m = model.clone();
    let controller = st.controller.clone();
    blocking(&st, move |_| controller.command(&m, cmd, &note)).await?;
    rollout_show(State(st), Path(model)).await
}

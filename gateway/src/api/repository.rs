//! The model repository extension: `POST /v2/repository/index` and gRPC `RepositoryIndex` (public, read-only:
//! every version in the repository or loaded, with its state and reason), and `.../models/{m}/load` and `/unload`
//! (HTTP and gRPC), which do what the admin API does and only with the admin bearer token. Without it they are
//! refused with 403 naming what is missing, and nothing changes, so `tritonclient`'s `load_model(...,
//! headers=...)` works for operators and for no one else.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::api::admin::AdminToken;
use crate::core::Core;
use crate::error::GatewayError;
use crate::model::VersionState;
use crate::protocol::pb;

/// One row of the index: Triton's `{name, version, state, reason}`, states `READY`, `LOADING`, `UNAVAILABLE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IndexEntry {
    pub name: String,
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// Every version found in the repository or held in memory, by model and version; `ready` keeps only the ready
/// ones. A version on disk that is not loaded is `UNAVAILABLE` with reason `unloaded`.
pub fn index(core: &Core, ready: bool) -> Vec<IndexEntry> {
    let mut rows: BTreeMap<(String, u64), (&'static str, String)> = BTreeMap::new();
    if let Ok(scan) = core.registry.repository().scan() {
        for (name, versions) in scan.models {
            for v in versions {
                rows.insert((name.clone(), v), ("UNAVAILABLE", "unloaded".into()));
            }
        }
    }
    for slot in core.registry.models() {
        for (n, s) in slot.versions().iter() {
            let row = match s {
                VersionState::Ready(_) => ("READY", String::new()),
                VersionState::Loading => ("LOADING", String::new()),
                VersionState::Failed(reason) => ("UNAVAILABLE", reason.clone()),
            };
            rows.insert((slot.name.to_string(), *n), row);
        }
    }
    rows.into_iter()
        .filter(|(_, (state, _))| !ready || *state == "READY")
        .map(|((name, v), (state, reason))| IndexEntry { name, version: v.to_string(), state, reason })
        .collect()
}

pub fn to_pb(rows: Vec<IndexEntry>) -> pb::RepositoryIndexResponse {
    pb::RepositoryIndexResponse {
        models: rows
            .into_iter()
            .map(|r| pb::repository_index_response::ModelIndex {
                name: r.name,
                version: r.version,
                state: r.state.into(),
                reason: r.reason,
            })
            .collect(),
    }
}

/// Load or unload a whole model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Load,
    Unload,
}

/// Checks the operator's token (the `Authorization` header or gRPC metadata), then loads or unloads `model` off
/// the async workers (loading runs the golden examples; both write the state file).
pub async fn control(
    core: &Arc<Core>,
    token: &AdminToken,
    authorization: Option<&str>,
    model: &str,
    what: Control,
) -> Result<(), GatewayError> {
    let caller = token.check_operator(authorization).map_err(|e| {
        GatewayError::Forbidden(format!(
            "loading and unloading models is for operators: send an operator's admin token as 'Authorization: \
             Bearer <token>' ({e})"
        ))
    })?;
    let model = model.to_string();
    crate::api::admin::change_as(core.clone(), Some(caller.name), move |core| match what {
        Control::Load => core.registry.load_model(&model),
        Control::Unload => core.registry.unload_model(&model),
    })
    .await
}

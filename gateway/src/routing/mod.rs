//! Which version of a model answers a request. The table for each model lives in an `ArcSwap`: a request does one
//! atomic load and keeps its `Arc` to the version it chose, so a swap never disturbs a call in flight; the old
//! version is dropped when its last call finishes.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::model::VersionState;
use crate::model::version::ModelVersion;

/// The routing table of one model.
#[derive(Debug, Default)]
pub struct Routing {
    /// The version that answers requests that do not name one.
    pub stable: Option<Arc<ModelVersion>>,
}

impl Routing {
    /// The default table: the highest ready version is stable (Triton's and TF Serving's "latest" policy).
    pub fn latest(versions: &BTreeMap<u64, VersionState>) -> Self {
        let stable = versions.values().rev().find_map(|s| match s {
            VersionState::Ready(v) => Some(v.clone()),
            _ => None,
        });
        Self { stable }
    }
}

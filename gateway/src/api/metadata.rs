//! Model metadata, built once for both front ends: the HTTP answer is this struct as JSON, the gRPC answer is
//! converted from it, so the two can never disagree about versions, platform or signature.

use crate::core::Core;
use crate::manifest::TensorSpec;
use crate::model::{ModelSlot, ModelVersion, VersionState};
use crate::protocol::json::{ModelMetadata, ServerMetadata, VersionStateWire};
use crate::protocol::pb;

/// The protocol extensions this gateway implements, by Triton's names.
pub const EXTENSIONS: [&str; 6] = [
    "binary_tensor_data",
    "parameters",
    "model_configuration",
    "statistics",
    "model_repository",
    "model_repository(unload_dependents)",
];

/// `GET /v2` and `ServerMetadata`.
pub fn server() -> ServerMetadata {
    ServerMetadata { name: "gateway", version: env!("CARGO_PKG_VERSION"), extensions: EXTENSIONS.to_vec() }
}

/// `GET /v2/models/{m}[/versions/{v}]` and `ModelMetadata`: the model's ready versions, and the signature of `v`.
pub fn model(core: &Core, slot: &ModelSlot, v: &ModelVersion) -> ModelMetadata {
    let versions = slot.versions();
    ModelMetadata {
        name: slot.name.to_string(),
        versions: versions
            .iter()
            .filter(|(_, s)| matches!(s, VersionState::Ready(_)))
            .map(|(n, _)| n.to_string())
            .collect(),
        platform: v.platform(),
        inputs: v.manifest.inputs.iter().map(|i| i.spec.clone()).collect(),
        outputs: v.manifest.outputs.clone(),
        states: versions
            .iter()
            .map(|(n, s)| VersionStateWire {
                version: n.to_string(),
                state: s.label(),
                reason: match s {
                    VersionState::Failed(r) => Some(r.clone()),
                    _ => None,
                },
                disk: crate::api::admin::disk_state(s),
            })
            .collect(),
        trained_at: v.manifest.trained_at.clone(),
        stale: core.is_stale(v),
    }
}

fn tensors(specs: Vec<TensorSpec>) -> Vec<pb::model_metadata_response::TensorMetadata> {
    specs
        .into_iter()
        .map(|s| pb::model_metadata_response::TensorMetadata {
            name: s.name,
            datatype: s.datatype.as_str().into(),
            shape: s.shape,
        })
        .collect()
}

impl From<ModelMetadata> for pb::ModelMetadataResponse {
    fn from(m: ModelMetadata) -> Self {
        Self {
            name: m.name,
            versions: m.versions,
            platform: m.platform.into(),
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }
    }
}

impl From<ServerMetadata> for pb::ServerMetadataResponse {
    fn from(m: ServerMetadata) -> Self {
        Self {
            name: m.name.into(),
            version: m.version.into(),
            extensions: m.extensions.into_iter().map(String::from).collect(),
        }
    }
}

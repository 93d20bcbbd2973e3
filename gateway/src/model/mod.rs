//! Model versions and everything needed to serve them: the manifest, the repository on disk, the backends (ONNX
//! in-process, or a remote inference server), the inference thread pool, and the registry of loaded models.

pub mod batcher;
pub mod call;
pub mod disk;
pub mod lifecycle;
pub mod onnx;
pub mod pool;
pub mod registry;
pub mod remote;
pub mod repository;
pub mod slot;
pub mod statistics;
pub mod version;
pub mod watch;

use std::sync::Arc;

pub use registry::Registry;
pub use slot::ModelSlot;
pub use version::ModelVersion;

/// A model's live routing table, over the versions this layer serves.
pub type Routing = crate::routing::Routing<ModelVersion>;

/// Where a version is in its life.
#[derive(Debug, Clone)]
pub enum VersionState {
    Loading,
    Ready(Arc<ModelVersion>),
    /// Failed to load or failed its golden examples; the reason is shown in metadata and logged.
    Failed(String),
}

impl VersionState {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Loading => "loading",
            Self::Ready(_) => "ready",
            Self::Failed(_) => "failed",
        }
    }
}

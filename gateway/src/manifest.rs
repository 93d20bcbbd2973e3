//! The manifest that travels with every model version (`manifest.json` beside `model.onnx`): its signature, the
//! training baseline the skew checks compare live traffic against, and the golden examples that gate readiness.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::tensor::{DataType, Tensor, element_count, json::decode_data};

pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Manifest {
    pub schema_version: u32,
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: String,
    /// RFC 3339 time the model was trained; model age and staleness derive from it.
    pub trained_at: String,
    /// `trained_at`, parsed (checked at load).
    #[serde(skip)]
    pub trained_at_time: Option<std::time::SystemTime>,
    /// Free-form facts about the training run (algorithm, data, metrics, library versions).
    #[serde(default)]
    pub training: serde_json::Value,
    pub inputs: Vec<InputSpec>,
    pub outputs: Vec<TensorSpec>,
    #[serde(default, skip_serializing)]
    pub golden: Vec<GoldenExample>,
    /// `candidate` keeps a version out of the automatic "highest ready version is stable" choice: it takes traffic
    /// only when an operator or a rollout makes it canary or stable.
    #[serde(default)]
    pub stage: Stage,
    /// Present for a version served by another inference server instead of a local `model.onnx`.
    #[serde(default)]
    pub remote: Option<RemoteSpec>,
}

/// Where a remote version lives and how to call it (the manifest's `remote` section).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteSpec {
    /// `http://host:port` (JSON over HTTP) or `grpc://host:port`; `https://` and `grpcs://` over TLS.
    pub url: String,
    /// The model's name upstream; default: the same name.
    #[serde(default)]
    pub model: Option<String>,
    /// The version upstream; default: whatever the upstream routes to.
    #[serde(default)]
    pub version: Option<String>,
    /// Deadline per call.
    #[serde(default = "defaults::timeout_ms")]
    pub timeout_ms: u64,
    /// Calls in flight at once; beyond it requests are refused at once (503 / RESOURCE_EXHAUSTED).
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: usize,
    /// Consecutive failures (connection errors, 5xx, timeouts) that open the circuit.
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    /// How long an open circuit fails fast before one probe call is let through.
    #[serde(default = "defaults::open_ms")]
    pub open_ms: u64,
    /// How often the upstream's readiness endpoint is asked; 0 turns the probe off.
    #[serde(default = "defaults::health_interval_ms")]
    pub health_interval_ms: u64,
    /// With `https://` or `grpcs://`: the name the upstream's certificate must carry, when it is not the URL's
    /// host (an IP address, or a name the certificate was not issued for). Verification itself cannot be turned off.
    #[serde(default)]
    pub server_name: Option<String>,
}

mod defaults {
    pub fn timeout_ms() -> u64 {
        2000
    }
    pub fn max_concurrency() -> usize {
        256
    }
    pub fn failure_threshold() -> u32 {
        5
    }
    pub fn open_ms() -> u64 {
        5000
    }
    pub fn health_interval_ms() -> u64 {
        2000
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stage {
    #[default]
    Release,
    Candidate,
}

/// A tensor in the model's signature. The first dimension is the batch dimension and is always -1.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
}

impl TensorSpec {
    /// Elements per batch row (product of the non-batch dimensions).
    pub fn row_len(&self) -> usize {
        element_count(&self.shape[1..]).unwrap_or(0)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct InputSpec {
    #[serde(flatten)]
    pub spec: TensorSpec,
    /// Training baseline, one entry per element of a row, in row-major order.
    #[serde(default, skip_serializing)]
    pub features: Vec<FeatureBaseline>,
}

/// Most categories a categorical baseline may list: each is a drift bin, and the bins of a feature share a small
/// fixed-size counter array on the request path.
pub const MAX_CATEGORIES: usize = 60;

/// Training-time statistics of one input feature: numeric (moments, range and quantile bins) or, for a BYTES
/// input, categorical (the categories seen in training and how often).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct FeatureBaseline {
    pub name: String,
    #[serde(default)]
    pub mean: f64,
    #[serde(default)]
    pub std: f64,
    #[serde(default)]
    pub min: f64,
    #[serde(default)]
    pub max: f64,
    #[serde(default)]
    pub missing_share: f64,
    /// Interior cut points: k edges make k+1 bins; bin i holds v with edges[i-1] < v <= edges[i].
    #[serde(default)]
    pub bin_edges: Vec<f64>,
    #[serde(default)]
    pub bin_counts: Vec<u64>,
    /// Categorical features: the categories seen in training, and how many training rows had each.
    #[serde(default)]
    pub categories: Vec<String>,
    #[serde(default)]
    pub category_counts: Vec<u64>,
    /// Declared valid domain (not the training range): a value outside is invalid, like NaN.
    #[serde(default)]
    pub lower: Option<f64>,
    #[serde(default)]
    pub upper: Option<f64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GoldenExample {
    pub inputs: Vec<GoldenTensor>,
    pub outputs: Vec<GoldenTensor>,
    /// Allowed difference for floating outputs: |got - want| <= tolerance * (1 + |want|).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
}

fn default_tolerance() -> f64 {
    1e-5
}

#[derive(Debug, Clone, Deserialize)]
pub struct GoldenTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: Box<RawValue>,
}

impl GoldenTensor {
    /// Decodes the example with the datatype the signature declares for it.
    pub fn to_tensor(&self, datatype: DataType) -> Result<Tensor, String> {
        let n = element_count(&self.shape).ok_or_else(|| format!("golden tensor '{}' has a bad shape", self.name))?;
        let data = decode_data(&self.data, datatype, n).map_err(|e| format!("golden tensor '{}': {e}", self.name))?;
        if data.len() != n {
            return Err(format!("golden tensor '{}' has {} values for shape {:?}", self.name, data.len(), self.shape));
        }
        Ok(Tensor { name: self.name.clone(), shape: self.shape.clone(), data })
    }
}

impl Manifest {
    /// Reads and checks a manifest; every problem found is reported, not just the first.
    pub fn load(dir: &Path, model: &str, version: &str) -> Result<Self, String> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        Self::parse(&text, model, version).map_err(|e| format!("invalid {}: {e}", path.display()))
    }

    /// Parses and checks the bytes of a manifest for `model`/`version` (untrusted: fuzzed by `fuzz/`).
    pub fn parse(bytes: &[u8], model: &str, version: &str) -> Result<Self, String> {
        let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        manifest.trained_at_time = crate::clock::parse_rfc3339(&manifest.trained_at);
        let problems = manifest.problems(model, version);
        if problems.is_empty() { Ok(manifest) } else { Err(problems.join("; ")) }
    }

    fn problems(&self, model: &str, version: &str) -> Vec<String> {
        let mut p = Vec::new();
        if self.schema_version != 1 {
            p.push(format!("schema_version {} is not supported (expected 1)", self.schema_version));
        }
        if self.name != model {
            p.push(format!("name '{}' does not match the directory '{model}'", self.name));
        }
        if self.version != version {
            p.push(format!("version '{}' does not match the directory '{version}'", self.version));
        }
        if self.trained_at_time.is_none() {
            p.push(format!("trained_at '{}' is not an RFC 3339 time", self.trained_at));
        }
        if self.inputs.is_empty() {
            p.push("no inputs declared".into());
        }
        if self.outputs.is_empty() {
            p.push("no outputs declared".into());
        }
        let specs = self.inputs.iter().map(|i| ("input", &i.spec)).chain(self.outputs.iter().map(|o| ("output", o)));
        let mut seen = std::collections::HashSet::new();
        for (kind, s) in specs {
            if !seen.insert((kind, s.name.as_str())) {
                p.push(format!("{kind} '{}' declared twice", s.name));
            }
            if s.shape.first() != Some(&-1) {
                p.push(format!("{kind} '{}': the first dimension must be the batch dimension, -1", s.name));
            }
            if s.shape.iter().skip(1).any(|&d| d < 1) {
                p.push(format!("{kind} '{}': non-batch dimensions must be fixed and positive", s.name));
            }
        }
        for input in &self.inputs {
            let n = input.spec.row_len();
            if !input.features.is_empty() && input.features.len() != n {
                p.push(format!(
                    "input '{}': {} feature baselines for {n} values per row",
                    input.spec.name,
                    input.features.len()
                ));
            }
            for f in &input.features {
                if input.spec.datatype == DataType::Bytes {
                    if f.categories.is_empty() || f.categories.len() != f.category_counts.len() {
                        p.push(format!(
                            "feature '{}' of BYTES input '{}': a categorical baseline needs categories and as many \
                             category_counts",
                            f.name, input.spec.name
                        ));
                    }
                    if f.categories.len() > MAX_CATEGORIES {
                        p.push(format!("feature '{}': more than {MAX_CATEGORIES} categories", f.name));
                    }
                    if f.categories.windows(2).any(|w| w[0] >= w[1]) {
                        p.push(format!("feature '{}': categories must be sorted and distinct", f.name));
                    }
                    continue;
                }
                if !f.categories.is_empty() {
                    p.push(format!(
                        "feature '{}': categories are for BYTES inputs; input '{}' is {}",
                        f.name, input.spec.name, input.spec.datatype
                    ));
                }
                if f.bin_counts.len() != f.bin_edges.len() + 1 {
                    p.push(format!("feature '{}': bin_counts must have one more entry than bin_edges", f.name));
                }
                if f.bin_edges.windows(2).any(|w| w[0] >= w[1]) {
                    p.push(format!("feature '{}': bin_edges must be strictly increasing", f.name));
                }
            }
        }
        if self.golden.is_empty() {
            p.push("no golden examples: a version must prove its outputs before it takes traffic".into());
        }
        p
    }

    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().map(|i| &i.spec).find(|s| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bundled(model: &str, version: &str) -> Result<Manifest, String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models").join(model).join(version);
        Manifest::load(&dir, model, version)
    }

    #[test]
    fn bundled_manifests_are_valid() {
        for (m, v) in [
            ("breast-cancer", "1"),
            ("breast-cancer", "2"),
            ("diabetes", "1"),
            ("wine", "1"),
            ("breast-cancer-fp16", "1"),
        ] {
            let manifest = bundled(m, v).expect("bundled manifest loads");
            assert!(!manifest.golden.is_empty());
        }
    }

    #[test]
    fn directory_mismatch_and_bad_shapes_are_all_reported() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/breast-cancer/1");
        let mut m = Manifest::load(&dir, "breast-cancer", "1").expect("loads");
        m.inputs[0].spec.shape = vec![1, 30];
        m.outputs[0].shape = vec![-1, 0];
        let p = m.problems("other", "9");
        assert!(p.iter().any(|s| s.contains("directory 'other'")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("directory '9'")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("batch dimension")), "{p:?}");
        assert!(p.iter().any(|s| s.contains("fixed and positive")), "{p:?}");
    }
}

//! The model configuration extension: `GET /v2/models/{m}[/versions/{v}]/config` and gRPC `ModelConfig`, in
//! Triton's shape. The configuration is derived from what the gateway actually runs (the manifest's signature,
//! the request row limit, the batching policy, the backend), never written by hand, and built once as the
//! protobuf message: the HTTP answer is that message rendered as Triton renders it (snake_case keys, enum names,
//! defaults printed), so the two front ends cannot disagree.

use serde_json::{Value, json};

use crate::core::Core;
use crate::manifest::TensorSpec;
use crate::model::ModelVersion;
use crate::model::version::Backend;
use crate::protocol::pb;
use crate::tensor::DataType;

/// Triton's `TYPE_*` for a protocol datatype (BYTES is `TYPE_STRING`).
pub fn data_type(d: DataType) -> pb::DataType {
    match d {
        DataType::Bool => pb::DataType::TypeBool,
        DataType::U8 => pb::DataType::TypeUint8,
        DataType::U16 => pb::DataType::TypeUint16,
        DataType::U32 => pb::DataType::TypeUint32,
        DataType::U64 => pb::DataType::TypeUint64,
        DataType::I8 => pb::DataType::TypeInt8,
        DataType::I16 => pb::DataType::TypeInt16,
        DataType::I32 => pb::DataType::TypeInt32,
        DataType::I64 => pb::DataType::TypeInt64,
        DataType::F16 => pb::DataType::TypeFp16,
        DataType::F32 => pb::DataType::TypeFp32,
        DataType::F64 => pb::DataType::TypeFp64,
        DataType::Bytes => pb::DataType::TypeString,
    }
}

/// A tensor's dims without the batch dimension (every manifest shape starts with it). A tensor that is only the
/// batch dimension is `[1]` reshaped to `[]`, as Triton writes a batched scalar.
fn dims(spec: &TensorSpec) -> (Vec<i64>, Option<pb::ModelTensorReshape>) {
    match &spec.shape[1..] {
        [] => (vec![1], Some(pb::ModelTensorReshape { shape: vec![] })),
        rest => (rest.to_vec(), None),
    }
}

/// The configuration of version `v`.
pub fn config(core: &Core, v: &ModelVersion) -> pb::ModelConfig {
    let (platform, backend) = match &v.backend {
        Backend::Onnx(_) => ("onnxruntime_onnx", "onnxruntime"),
        Backend::Remote(_) => (v.platform(), "remote"),
    };
    let input = v
        .manifest
        .inputs
        .iter()
        .map(|i| {
            let (dims, reshape) = dims(&i.spec);
            pb::ModelInput {
                name: i.spec.name.clone(),
                data_type: data_type(i.spec.datatype) as i32,
                dims,
                reshape,
                ..Default::default()
            }
        })
        .collect();
    let output = v
        .manifest
        .outputs
        .iter()
        .map(|o| {
            let (dims, reshape) = dims(o);
            pb::ModelOutput {
                name: o.name.clone(),
                data_type: data_type(o.datatype) as i32,
                dims,
                reshape,
                ..Default::default()
            }
        })
        .collect();
    let scheduling_choice = v.batcher.as_ref().map(|b| {
        let p = b.policy();
        pb::model_config::SchedulingChoice::DynamicBatching(pb::ModelDynamicBatching {
            preferred_batch_size: vec![i32::try_from(p.max_rows).unwrap_or(i32::MAX)],
            max_queue_delay_microseconds: u64::try_from(p.max_delay.as_micros()).unwrap_or(u64::MAX),
            preserve_ordering: true,
        })
    });
    pb::ModelConfig {
        name: v.model.to_string(),
        platform: platform.into(),
        backend: backend.into(),
        // Every loaded version is addressable by number; routing decides which one unversioned calls reach.
        version_policy: Some(pb::ModelVersionPolicy {
            policy_choice: Some(pb::model_version_policy::PolicyChoice::All(pb::model_version_policy::All {})),
        }),
        max_batch_size: i32::try_from(core.max_batch_rows).unwrap_or(i32::MAX),
        input,
        output,
        scheduling_choice,
    }
}

fn reshape_json(r: &Option<pb::ModelTensorReshape>) -> Option<Value> {
    r.as_ref().map(|r| json!({ "shape": r.shape }))
}

fn type_name(t: i32) -> &'static str {
    pb::DataType::try_from(t).unwrap_or(pb::DataType::TypeInvalid).as_str_name()
}

/// The configuration as Triton's HTTP endpoint renders it.
pub fn to_json(c: &pb::ModelConfig) -> Value {
    let inputs: Vec<Value> = c
        .input
        .iter()
        .map(|i| {
            let mut v = json!({
                "name": i.name,
                "data_type": type_name(i.data_type),
                "format": "FORMAT_NONE",
                "dims": i.dims,
                "is_shape_tensor": false,
                "allow_ragged_batch": false,
                "optional": false,
            });
            if let Some(r) = reshape_json(&i.reshape) {
                v["reshape"] = r;
            }
            v
        })
        .collect();
    let outputs: Vec<Value> = c
        .output
        .iter()
        .map(|o| {
            let mut v = json!({
                "name": o.name,
                "data_type": type_name(o.data_type),
                "dims": o.dims,
                "label_filename": "",
                "is_shape_tensor": false,
            });
            if let Some(r) = reshape_json(&o.reshape) {
                v["reshape"] = r;
            }
            v
        })
        .collect();
    let mut v = json!({
        "name": c.name,
        "platform": c.platform,
        "backend": c.backend,
        "version_policy": { "all": {} },
        "max_batch_size": c.max_batch_size,
        "input": inputs,
        "output": outputs,
    });
    if let Some(pb::model_config::SchedulingChoice::DynamicBatching(d)) = &c.scheduling_choice {
        v["dynamic_batching"] = json!({
            "preferred_batch_size": d.preferred_batch_size,
            "max_queue_delay_microseconds": d.max_queue_delay_microseconds,
            "preserve_ordering": d.preserve_ordering,
        });
    }
    v
}

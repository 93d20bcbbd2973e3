//! The statistics extension: `GET /v2/models[/{m}[/versions/{v}]]/stats` and gRPC `ModelStatistics`, in Triton's
//! shape, from each ready version's counters (`model::statistics`). Every key is present even when zero, as
//! perf_analyzer and scripts written against Triton expect.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::core::Core;
use crate::error::GatewayError;
use crate::model::ModelVersion;
use crate::model::statistics::{Duration2, StatsSnapshot};
use crate::protocol::pb;

/// The ready versions a statistics call covers: every model's, one model's, or one version.
pub fn versions(
    core: &Core,
    model: Option<&str>,
    version: Option<&str>,
) -> Result<Vec<Arc<ModelVersion>>, GatewayError> {
    match (model, version) {
        (None, _) => Ok(core.ready_versions()),
        (Some(m), None) => {
            let slot = core.model(m)?;
            Ok(core.ready_versions().into_iter().filter(|v| *v.model == *slot.name).collect())
        }
        (Some(m), Some(v)) => Ok(vec![core.model(m)?.version(v)?]),
    }
}

fn duration(d: Duration2) -> Value {
    json!({ "count": d.count, "ns": d.ns })
}

/// `{"model_stats": [...]}` as Triton's HTTP endpoint writes it.
pub fn to_json(versions: &[Arc<ModelVersion>]) -> Value {
    let stats: Vec<Value> = versions
        .iter()
        .map(|v| {
            let s = v.serving.snapshot();
            json!({
                "name": &*v.model,
                "version": &*v.version,
                "last_inference": s.last_inference,
                "inference_count": s.inference_count,
                "execution_count": s.execution_count,
                "inference_stats": {
                    "success": duration(s.success),
                    "fail": duration(s.fail),
                    "queue": duration(s.queue),
                    "compute_input": duration(s.compute_input),
                    "compute_infer": duration(s.compute_infer),
                    "compute_output": duration(s.compute_output),
                    // No response cache: every request misses nothing and hits nothing.
                    "cache_hit": duration(Duration2::default()),
                    "cache_miss": duration(Duration2::default()),
                },
                "response_stats": {},
                "batch_stats": s.batches.iter().map(|(size, [i, n, o])| json!({
                    "batch_size": size,
                    "compute_input": duration(*i),
                    "compute_infer": duration(*n),
                    "compute_output": duration(*o),
                })).collect::<Vec<_>>(),
                "memory_usage": [],
            })
        })
        .collect();
    json!({ "model_stats": stats })
}

fn pb_duration(d: Duration2) -> Option<pb::StatisticDuration> {
    Some(pb::StatisticDuration { count: d.count, ns: d.ns })
}

fn pb_stats(v: &ModelVersion, s: StatsSnapshot) -> pb::ModelStatistics {
    pb::ModelStatistics {
        name: v.model.to_string(),
        version: v.version.to_string(),
        last_inference: s.last_inference,
        inference_count: s.inference_count,
        execution_count: s.execution_count,
        inference_stats: Some(pb::InferStatistics {
            success: pb_duration(s.success),
            fail: pb_duration(s.fail),
            queue: pb_duration(s.queue),
            compute_input: pb_duration(s.compute_input),
            compute_infer: pb_duration(s.compute_infer),
            compute_output: pb_duration(s.compute_output),
            cache_hit: pb_duration(Duration2::default()),
            cache_miss: pb_duration(Duration2::default()),
        }),
        batch_stats: s
            .batches
            .iter()
            .map(|(size, [i, n, o])| pb::InferBatchStatistics {
                batch_size: *size,
                compute_input: pb_duration(*i),
                compute_infer: pb_duration(*n),
                compute_output: pb_duration(*o),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn to_pb(versions: &[Arc<ModelVersion>]) -> pb::ModelStatisticsResponse {
    pb::ModelStatisticsResponse { model_stats: versions.iter().map(|v| pb_stats(v, v.serving.snapshot())).collect() }
}

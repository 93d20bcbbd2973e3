//! Dynamic batching per model version. Concurrent requests are gathered into one ONNX call (up to `max_rows` rows
//! or `max_delay`), and the outputs are split back per request by the worker that ran the call.
//!
//! Holding a request back only pays when it would wait anyway: the batcher dispatches at once while an inference
//! worker is idle, and gathers (up to `max_delay`) only while every worker is busy. So batching costs no latency
//! at low load and buys throughput at high load.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use prometheus::Histogram;
use tokio::sync::oneshot;

use crate::config::BatchingConfig;
use crate::error::GatewayError;
use crate::model::onnx::OnnxModel;
use crate::model::pool::{Caller, Job, JobResult, PoolHandle, Reply};
use crate::model::statistics::ServingStats;
use crate::tensor::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPolicy {
    pub max_rows: usize,
    pub max_delay: Duration,
    pub queue_capacity: usize,
}

impl BatchPolicy {
    /// The effective policy for one model from `[batching]` and its per-model overrides, or `None` when
    /// batching is off for it.
    pub fn for_model(cfg: &BatchingConfig, model: &str) -> Option<Self> {
        let o = cfg.models.get(model).cloned().unwrap_or_default();
        o.enabled.unwrap_or(cfg.enabled).then(|| Self {
            max_rows: o.max_batch_rows.unwrap_or(cfg.max_batch_rows),
            max_delay: Duration::from_micros(o.max_queue_delay_us.unwrap_or(cfg.max_queue_delay_us)),
            queue_capacity: cfg.queue_capacity,
        })
    }
}

struct Pending {
    inputs: Vec<Tensor>,
    rows: usize,
    reply: Caller,
}

/// The front of one version's batching thread. Dropping it stops the thread.
pub struct Batcher {
    tx: Sender<Pending>,
    policy: BatchPolicy,
}

impl std::fmt::Debug for Batcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Batcher")
    }
}

impl Batcher {
    pub fn spawn(
        name: &str,
        model: Arc<OnnxModel>,
        pool: PoolHandle,
        policy: BatchPolicy,
        rows_hist: Histogram,
        stats: Arc<ServingStats>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(policy.queue_capacity.max(1));
        let target = Target { model, pool, stats };
        std::thread::Builder::new()
            .name(format!("batch-{name}"))
            .spawn(move || gather(rx, target, policy, rows_hist))?;
        Ok(Self { tx, policy })
    }

    pub fn policy(&self) -> BatchPolicy {
        self.policy
    }

    pub fn submit(&self, inputs: Vec<Tensor>, rows: usize) -> Result<oneshot::Receiver<JobResult>, GatewayError> {
        let (tx, rx) = oneshot::channel();
        match self.tx.try_send(Pending { inputs, rows, reply: Caller { tx, since: Instant::now() } }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(GatewayError::Overloaded(format!(
                "batching queue is full ({} requests waiting); retry later",
                self.policy.queue_capacity
            ))),
            Err(TrySendError::Disconnected(_)) => Err(GatewayError::ShuttingDown),
        }
    }
}

/// Where a batching thread sends its calls.
struct Target {
    model: Arc<OnnxModel>,
    pool: PoolHandle,
    stats: Arc<ServingStats>,
}

fn gather(rx: Receiver<Pending>, target: Target, policy: BatchPolicy, rows_hist: Histogram) {
    let pool = &target.pool;
    let mut carry: Option<Pending> = None;
    loop {
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv() {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let mut rows = first.rows;
        let mut batch = vec![first];
        let deadline = Instant::now() + policy.max_delay;
        while rows < policy.max_rows {
            // Take what is already waiting; wait for more only while the workers are all busy.
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(_) if pool.saturated() => rx.recv_deadline(deadline).ok(),
                Err(_) => None,
            };
            let Some(p) = next else { break };
            if rows + p.rows > policy.max_rows {
                carry = Some(p);
                break;
            }
            rows += p.rows;
            batch.push(p);
        }
        rows_hist.observe(rows as f64);
        dispatch(&target, batch);
    }
}

fn dispatch(target: &Target, mut batch: Vec<Pending>) {
    let (model, stats) = (target.model.clone(), Some(target.stats.clone()));
    let job = if batch.len() == 1 {
        let p = batch.pop().unwrap_or_else(|| unreachable!("one element"));
        Job { model, inputs: p.inputs, reply: Reply::One(p.reply), trace: Default::default(), stats }
    } else {
        let mut iter = batch.into_iter();
        let Some(first) = iter.next() else { return };
        let mut inputs = first.inputs;
        let mut callers = vec![(first.rows, first.reply)];
        for p in iter {
            // Inputs were validated against the same signature, so names, order and datatypes line up.
            for (acc, t) in inputs.iter_mut().zip(&p.inputs) {
                acc.data.extend_from(&t.data);
                acc.shape[0] += t.shape[0];
            }
            callers.push((p.rows, p.reply));
        }
        Job { model, inputs, reply: Reply::Batch(callers), trace: Default::default(), stats }
    };
    // A refused job has already told its callers why.
    let _ = target.pool.try_submit(job);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_per_model_overrides_the_default() {
        let cfg: crate::config::Config = toml::from_str(
            "[batching]\nenabled = false\nmax_batch_rows = 32\n[batching.models.a]\nenabled = true\nmax_queue_delay_us = 50\n",
        )
        .expect("parses");
        assert!(BatchPolicy::for_model(&cfg.batching, "b").is_none());
        let p = BatchPolicy::for_model(&cfg.batching, "a").expect("on for a");
        assert_eq!((p.max_rows, p.max_delay), (32, Duration::from_micros(50)));
    }
}

//! The inference thread pool. ONNX calls are CPU-bound and would stall the async workers that parse requests, so
//! they run on dedicated OS threads fed by one bounded queue. The queue bound is the backpressure point: when it
//! is full, `submit` fails at once and the client gets a quick 503 instead of an unbounded wait.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::GatewayError;
use crate::model::onnx::OnnxModel;
use crate::tensor::Tensor;

/// What a worker sends back: the outputs, and how long the call itself took (queue wait excluded).
pub type JobResult = (Result<Vec<Tensor>, GatewayError>, Duration);

struct Job {
    model: Arc<OnnxModel>,
    inputs: Vec<Tensor>,
    reply: oneshot::Sender<JobResult>,
}

pub struct InferencePool {
    tx: Option<Sender<Job>>,
    capacity: usize,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool")
            .field("threads", &self.threads.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl InferencePool {
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let threads = (0..threads.max(1))
            .map(|i| {
                let rx: Receiver<Job> = rx.clone();
                std::thread::Builder::new()
                    .name(format!("infer-{i}"))
                    .spawn(move || worker(i, rx))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self {
            tx: Some(tx),
            capacity,
            threads,
        })
    }

    /// Queues one call; fails fast when the queue is full.
    pub fn submit(
        &self,
        model: Arc<OnnxModel>,
        inputs: Vec<Tensor>,
    ) -> Result<oneshot::Receiver<JobResult>, GatewayError> {
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.as_ref().ok_or(GatewayError::ShuttingDown)?;
        match tx.try_send(Job {
            model,
            inputs,
            reply,
        }) {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(GatewayError::Overloaded(format!(
                "inference queue is full ({} calls waiting); retry later",
                self.capacity
            ))),
            Err(TrySendError::Disconnected(_)) => Err(GatewayError::ShuttingDown),
        }
    }

    /// Calls waiting for a worker, for the queue-depth gauge.
    pub fn depth(&self) -> usize {
        self.tx.as_ref().map_or(0, |t| t.len())
    }

    pub fn threads(&self) -> usize {
        self.threads.len()
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        // Closing the queue lets workers finish what is queued and exit.
        self.tx.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(index: usize, rx: Receiver<Job>) {
    while let Ok(job) = rx.recv() {
        if job.reply.is_closed() {
            // The client went away (timeout, disconnect) while the call waited: skip the work.
            continue;
        }
        let start = Instant::now();
        let result =
            std::panic::catch_unwind(AssertUnwindSafe(|| job.model.run(index, job.inputs)))
                .unwrap_or_else(|_| {
                    Err(GatewayError::Internal("inference worker panicked".into()))
                });
        let _ = job.reply.send((result, start.elapsed()));
    }
}

//! The inference thread pool. ONNX calls are CPU-bound and would stall the async workers that parse requests, so
//! they run on dedicated OS threads fed by one bounded queue. The queue bound is the backpressure point: when it
//! is full, `submit` fails at once and the client gets a quick 503 instead of an unbounded wait.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::oneshot;

use crate::error::GatewayError;
use crate::model::onnx::OnnxModel;
use crate::model::statistics::{Phases, ServingStats};
use crate::tensor::Tensor;

/// How a call went for one caller: how long it waited for a thread (from when the caller handed it to the pool or
/// the batcher), and the call's phases.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallTiming {
    pub queue: Duration,
    pub phases: Phases,
}

/// What a caller gets back: the outputs, and how the call went.
pub type JobResult = (Result<Vec<Tensor>, GatewayError>, CallTiming);

/// One caller waiting for a call's outputs, and since when it has waited.
pub struct Caller {
    pub tx: oneshot::Sender<JobResult>,
    pub since: Instant,
}

/// Where a call's outputs go: one caller, or several whose rows were batched into one call (in order).
pub enum Reply {
    One(Caller),
    Batch(Vec<(usize, Caller)>),
}

impl Reply {
    fn abandoned(&self) -> bool {
        match self {
            Reply::One(c) => c.tx.is_closed(),
            Reply::Batch(v) => v.iter().all(|(_, c)| c.tx.is_closed()),
        }
    }

    /// Sends the result, splitting a batch's outputs back into each caller's rows. `started` is when a worker took
    /// the call: each caller's queue time ends there.
    pub fn send(self, result: Result<Vec<Tensor>, GatewayError>, phases: Phases, started: Instant) {
        let timing = |c: &Caller| CallTiming { queue: started.saturating_duration_since(c.since), phases };
        match self {
            Reply::One(c) => {
                let t = timing(&c);
                let _ = c.tx.send((result, t));
            }
            Reply::Batch(callers) => match result {
                Ok(outputs) => {
                    let total: usize = callers.iter().map(|(r, _)| r).sum();
                    if let Some(bad) = outputs.iter().find(|o| o.shape.first() != Some(&(total as i64))) {
                        let msg = format!(
                            "output '{}' of a batched call has shape {:?}, not {total} rows",
                            bad.name, bad.shape
                        );
                        for (_, c) in callers {
                            let t = timing(&c);
                            let _ = c.tx.send((Err(GatewayError::Inference(msg.clone())), t));
                        }
                        return;
                    }
                    let mut start = 0;
                    for (rows, c) in callers {
                        let part = outputs
                            .iter()
                            .map(|o| {
                                let row_len = o.shape[1..].iter().product::<i64>() as usize;
                                let mut shape = o.shape.clone();
                                shape[0] = rows as i64;
                                Tensor { name: o.name.clone(), shape, data: o.data.slice_rows(start, rows, row_len) }
                            })
                            .collect();
                        start += rows;
                        let t = timing(&c);
                        let _ = c.tx.send((Ok(part), t));
                    }
                }
                Err(e) => {
                    for (_, c) in callers {
                        let t = timing(&c);
                        let _ = c.tx.send((Err(e.clone()), t));
                    }
                }
            },
        }
    }
}

pub struct Job {
    pub model: Arc<OnnxModel>,
    pub inputs: Vec<Tensor>,
    pub reply: Reply,
    pub trace: Trace,
    /// Where a live call counts its execution (statistics extension); `None` for shadow calls.
    pub stats: Option<Arc<ServingStats>>,
}

/// Spans of a traced call: `queue` ends when a worker takes the call (the worker drops it), and the worker runs
/// the call in an `infer` span under `parent`. Both are `Span::none()` for untraced calls (batches, shadows).
pub struct Trace {
    pub queue: tracing::Span,
    pub parent: tracing::Span,
}

impl Default for Trace {
    fn default() -> Self {
        Self { queue: tracing::Span::none(), parent: tracing::Span::none() }
    }
}

/// What travels on the queue. `Stop` lets the pool shut its workers down while other handles (batchers, shadow
/// workers) still exist: waiting for every handle to go away could wait forever inside an async runtime.
enum Msg {
    Job(Job),
    Stop,
}

/// A cloneable way to queue calls; batchers hold one.
#[derive(Clone)]
pub struct PoolHandle {
    tx: Sender<Msg>,
    capacity: usize,
    threads: usize,
    busy: Arc<AtomicUsize>,
}

impl std::fmt::Debug for PoolHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolHandle").field("threads", &self.threads).finish()
    }
}

impl PoolHandle {
    /// Queues a call; fails fast when the queue is full, in which case the job's callers are told why too.
    pub fn try_submit(&self, job: Job) -> Result<(), GatewayError> {
        let (msg, e) = match self.tx.try_send(Msg::Job(job)) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) => {
                let msg = format!("inference queue is full ({} calls waiting); retry later", self.capacity);
                (m, GatewayError::Overloaded(msg))
            }
            Err(TrySendError::Disconnected(m)) => (m, GatewayError::ShuttingDown),
        };
        if let Msg::Job(job) = msg {
            job.reply.send(Err(e.clone()), Phases::default(), Instant::now());
        }
        Err(e)
    }

    /// Queues one unbatched call.
    pub fn submit(
        &self,
        model: Arc<OnnxModel>,
        inputs: Vec<Tensor>,
    ) -> Result<oneshot::Receiver<JobResult>, GatewayError> {
        self.submit_traced(model, inputs, Trace::default(), None)
    }

    /// Queues one unbatched call inside the request's spans, counting its execution in `stats`.
    pub fn submit_traced(
        &self,
        model: Arc<OnnxModel>,
        inputs: Vec<Tensor>,
        trace: Trace,
        stats: Option<Arc<ServingStats>>,
    ) -> Result<oneshot::Receiver<JobResult>, GatewayError> {
        let (tx, rx) = oneshot::channel();
        self.try_submit(Job { model, inputs, reply: Reply::One(Caller { tx, since: Instant::now() }), trace, stats })?;
        Ok(rx)
    }

    /// True when every worker is running a call or calls are waiting: the moment when holding a request back to
    /// batch it costs nothing, because it would wait for a worker anyway.
    pub fn saturated(&self) -> bool {
        !self.tx.is_empty() || self.busy.load(Ordering::Relaxed) >= self.threads
    }

    /// Calls waiting for a worker, for the queue-depth gauge.
    pub fn depth(&self) -> usize {
        self.tx.len()
    }
}

pub struct InferencePool {
    handle: Option<PoolHandle>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for InferencePool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InferencePool").field("threads", &self.threads.len()).finish()
    }
}

impl InferencePool {
    pub fn new(threads: usize, capacity: usize) -> std::io::Result<Self> {
        let (tx, rx) = crossbeam_channel::bounded(capacity);
        let busy = Arc::new(AtomicUsize::new(0));
        let n = threads.max(1);
        let threads = (0..n)
            .map(|i| {
                let (rx, busy): (Receiver<Msg>, _) = (rx.clone(), busy.clone());
                std::thread::Builder::new().name(format!("infer-{i}")).spawn(move || worker(i, rx, busy))
            })
            .collect::<std::io::Result<Vec<_>>>()?;
        Ok(Self { handle: Some(PoolHandle { tx, capacity, threads: n, busy }), threads })
    }

    pub fn handle(&self) -> PoolHandle {
        // Only `Drop` takes the handle out.
        self.handle.clone().unwrap_or_else(|| unreachable!("pool handle used after drop"))
    }

    pub fn depth(&self) -> usize {
        self.handle.as_ref().map_or(0, PoolHandle::depth)
    }

    /// The handle, borrowed: the request path submits through it without cloning.
    pub fn handle_ref(&self) -> &PoolHandle {
        self.handle.as_ref().unwrap_or_else(|| unreachable!("pool handle used after drop"))
    }
}

impl Drop for InferencePool {
    fn drop(&mut self) {
        // Workers finish what is queued ahead of the stop messages, then exit; calls queued after them (from
        // handles that outlive the pool) are answered "shutting down" when the last receiver goes.
        if let Some(h) = self.handle.take() {
            for _ in &self.threads {
                let _ = h.tx.send(Msg::Stop);
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn worker(index: usize, rx: Receiver<Msg>, busy: Arc<AtomicUsize>) {
    while let Ok(Msg::Job(job)) = rx.recv() {
        if job.reply.abandoned() {
            // Every caller went away (timeout, disconnect) while the call waited: skip the work.
            continue;
        }
        busy.fetch_add(1, Ordering::Relaxed);
        let Trace { queue, parent } = job.trace;
        drop(queue);
        let span = if parent.is_none() {
            tracing::Span::none()
        } else {
            tracing::debug_span!(target: crate::telemetry::REQUEST_TARGET, parent: &parent, "infer", worker = index)
        };
        let _entered = span.enter();
        let start = Instant::now();
        let model = job.model;
        let inputs = job.inputs;
        let rows = inputs.first().and_then(|t| t.shape.first()).map_or(0, |&r| r.max(0) as usize);
        let (result, phases) = std::panic::catch_unwind(AssertUnwindSafe(|| model.run_timed(index, inputs)))
            .unwrap_or_else(|_| (Err(GatewayError::Internal("inference worker panicked".into())), Phases::default()));
        busy.fetch_sub(1, Ordering::Relaxed);
        if let (Some(stats), Ok(_)) = (&job.stats, &result) {
            stats.executed(rows, phases);
        }
        job.reply.send(result, phases, start);
    }
}

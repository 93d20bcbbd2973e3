//! The load engines. Open loop: a dedicated thread releases requests at their intended send times (steady
//! spacing, 1/rate apart) into a queue that the connection workers drain; latency is measured from the intended
//! time, so a stalled server is charged for every request it delayed (no coordinated omission). Closed loop: each
//! worker sends its next request as soon as the previous one is answered.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::bail;
use indicatif::ProgressBar;

use crate::client::{Conn, Outcome, Request, Target};
use crate::cputime::{Spent, Window};
use crate::stats::{Recorder, Second, Stats};
use crate::steal::CpuTimes;
use crate::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// Fixed arrival rate, requests per second.
    Open { rate: f64 },
    /// As fast as `connections` concurrent requests allow.
    Closed,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub mode: Mode,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub timeout: Duration,
    /// Upper bound on requests in the measured phase.
    pub max_requests: Option<u64>,
    /// The server's process on this machine, whose CPU time over the measured phase is reported beside the load
    /// tester's own.
    pub server_pid: Option<u32>,
}

#[derive(Debug)]
pub struct RunResult {
    pub stats: Stats,
    pub seconds: Vec<Second>,
    /// Length of the measured window.
    pub elapsed: Duration,
    /// The share of the machine's CPU time the hypervisor gave elsewhere during the window (see [`crate::steal`]).
    pub steal: Option<f64>,
    /// CPU time the load tester and the server spent during the window.
    pub cpu: Spent,
}

/// Runs the warm-up (not recorded) and then the measured phase.
pub async fn run(
    plan: &Plan,
    target: Arc<Target>,
    workload: Arc<Workload>,
    progress: Option<ProgressBar>,
) -> anyhow::Result<RunResult> {
    // Connect everything before the clock starts, so connection setup is not charged to the first requests; the
    // warm-up's connections carry on into the measured phase, warm.
    let mut conns = Vec::with_capacity(plan.connections);
    for _ in 0..plan.connections.max(1) {
        match Conn::connect(&target).await {
            Ok(c) => conns.push(Some(c)),
            Err(e) => bail!("cannot connect to {}: {e}", target.addr),
        }
    }
    if !plan.warmup.is_zero() {
        let warm = Plan { duration: plan.warmup, warmup: Duration::ZERO, ..plan.clone() };
        if let Some(p) = &progress {
            p.set_message("warming up");
        }
        conns = phase(&warm, target.clone(), workload.clone(), None, conns).await?.1;
    }
    Ok(phase(plan, target, workload, progress, conns).await?.0)
}

async fn phase(
    plan: &Plan,
    target: Arc<Target>,
    workload: Arc<Workload>,
    progress: Option<ProgressBar>,
    conns: Vec<Option<Conn>>,
) -> anyhow::Result<(RunResult, Vec<Option<Conn>>)> {
    // The workers and the histograms exist before the clock starts: allocating histograms after the first requests
    // were due once charged those requests a 40 to 90 ms stall in every open-loop run's first second.
    let n = conns.len();
    let ready: Vec<Worker> = conns
        .into_iter()
        .enumerate()
        .map(|(id, conn)| Worker {
            id,
            n,
            conn,
            target: target.clone(),
            workload: workload.clone(),
            rng: fastrand::Rng::with_seed(id as u64),
            k: 0,
        })
        .collect();
    let threads = tokio::runtime::Handle::current().metrics().num_workers();
    let recorder = Recorder::new(plan.duration, threads);
    let cpu = CpuTimes::now();
    let window = Window::start(plan.server_pid);
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + plan.duration;
    let recorder = Arc::new(recorder.starting(start));
    let limit = plan.max_requests;

    let (tx, rx) = async_channel::unbounded::<Instant>();
    let dispatcher = match plan.mode {
        Mode::Open { rate } => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            Some(std::thread::spawn(move || {
                let mut i: u64 = 0;
                loop {
                    let due = start + interval.mul_f64(i as f64);
                    if due >= end || limit.is_some_and(|l| i >= l) {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if tx.send_blocking(due).is_err() {
                        break;
                    }
                    i += 1;
                }
            }))
        }
        Mode::Closed => {
            drop(tx);
            None
        }
    };

    let sent = Arc::new(AtomicU64::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for mut w in ready {
        let (recorder, rx, sent) = (recorder.clone(), rx.clone(), sent.clone());
        let (mode, timeout) = (plan.mode, plan.timeout);
        workers.spawn(async move {
            match mode {
                Mode::Open { .. } => {
                    while let Ok(intended) = rx.recv().await {
                        if Instant::now() > end + timeout {
                            // The run is over and this request never got a connection: count it, don't send it.
                            recorder.not_sent();
                            continue;
                        }
                        w.one(intended, timeout, &recorder).await;
                    }
                }
                Mode::Closed => {
                    // The shared count only when there is a limit: it is one more cache line both cores write.
                    while Instant::now() < end && limit.is_none_or(|l| sent.fetch_add(1, Ordering::Relaxed) < l) {
                        w.one(Instant::now(), timeout, &recorder).await;
                    }
                }
            }
            w.conn
        });
    }
    drop(rx);

    let ticker = progress.map(|p| {
        let recorder = recorder.clone();
        p.set_length(plan.duration.as_secs().max(1));
        p.set_message("running");
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let t = Instant::now().saturating_duration_since(start);
                p.set_position(t.as_secs().min(p.length().unwrap_or(0)));
                let (d, f) = recorder.counts();
                p.set_message(format!("{d} requests, {f} failed, {:.0} req/s", d as f64 / t.as_secs_f64().max(1e-3)));
            }
        })
    });

    let mut conns = Vec::with_capacity(n);
    while let Some(c) = workers.join_next().await {
        conns.push(c?);
    }
    if let Some(d) = dispatcher {
        let _ = d.join();
    }
    if let Some(t) = ticker {
        t.abort();
    }
    let recorder = Arc::try_unwrap(recorder).map_err(|_| anyhow::anyhow!("recorder still shared"))?;
    let (stats, seconds) = recorder.finish();
    let elapsed = match plan.mode {
        Mode::Open { .. } => plan.duration,
        Mode::Closed => {
            Instant::now().saturating_duration_since(start).min(plan.duration.max(Duration::from_millis(1)))
        }
    };
    let steal = cpu.zip(CpuTimes::now()).and_then(|(before, after)| before.steal_since(after));
    let cpu = window.end();
    Ok((RunResult { stats, seconds, elapsed, steal, cpu }, conns))
}

struct Worker {
    id: usize,
    n: usize,
    conn: Option<Conn>,
    target: Arc<Target>,
    workload: Arc<Workload>,
    rng: fastrand::Rng,
    k: usize,
}

impl Worker {
    async fn one(&mut self, intended: Instant, timeout: Duration, recorder: &Recorder) {
        let i = self.id + self.k * self.n;
        let req = Request {
            body: self.workload.body(i),
            routing_key: self.target.routing_key.as_ref().map(|(_, n)| self.rng.u64(0..(*n).max(1))),
            header_len: self.workload.header_len(i),
        };
        self.k += 1;
        let outcome = match self.conn.as_mut() {
            Some(c) => {
                tokio::time::timeout(timeout, c.infer(&self.target, req)).await.unwrap_or(Outcome::Failed("timeout"))
            }
            None => Outcome::Failed("connect"),
        };
        let latency = Instant::now().saturating_duration_since(intended);
        recorder.record(intended, latency, &outcome);
        // After a timeout or a broken connection the connection's state is unknown: start a fresh one.
        if matches!(outcome, Outcome::Failed(_)) || self.conn.as_ref().is_none_or(Conn::is_closed) {
            self.conn = Conn::connect(&self.target).await.ok();
        }
    }
}

//! Reports: a JSON document with everything measured, a human summary, an HTML page with the pictures, and a
//! Markdown table across several reports (what `make bench` prints and the README shows).

pub mod html;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cputime::Cpu;
use crate::runner::{Mode, Plan, RunResult};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Point {
    /// Seconds since the start of the measured phase.
    pub t: u64,
    pub ok: u64,
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub scenario: String,
    pub target: String,
    pub protocol: String,
    pub model: String,
    /// "open" or "closed".
    pub mode: String,
    pub asked_rate: Option<f64>,
    pub connections: usize,
    pub rows_per_request: usize,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub completed: u64,
    pub ok: u64,
    pub failed: u64,
    pub not_sent: u64,
    pub achieved_rps: f64,
    pub predictions_per_s: f64,
    /// Latency of answered requests, in milliseconds, from the intended send time.
    pub latency_ms: Percentiles,
    /// Latency of successful answers alone (the admitted requests under overload).
    #[serde(default)]
    pub ok_latency_ms: Option<Percentiles>,
    /// Latency of answers that were not a success (shed with 503 or 429, refused), when there were any.
    #[serde(default)]
    pub refused_latency_ms: Option<Percentiles>,
    pub statuses: BTreeMap<String, u64>,
    pub errors: BTreeMap<String, u64>,
    pub versions: BTreeMap<String, u64>,
    pub timeline: Vec<Point>,
    /// (percentile, milliseconds) pairs for the distribution plot.
    pub distribution: Vec<(f64, f64)>,
    /// Percent of the machine's CPU time the hypervisor gave elsewhere during the measured phase, where the system
    /// tells (`/proc/stat`): above a few percent, the run measured the neighbours as much as the server.
    #[serde(default)]
    pub steal_pct: Option<f64>,
    /// Whether that share reached `STEAL_WARN_PCT`: the scripts that read reports (bench_report.py) take the verdict
    /// from here rather than keeping a threshold of their own.
    #[serde(default)]
    pub steal_high: bool,
    /// CPU time the load tester spent per completed request in the measured phase, in microseconds.
    #[serde(default)]
    pub cpu_us_per_request: Option<f64>,
    /// CPU time the server (`--server-pid`) spent per completed request in the measured phase, in microseconds.
    #[serde(default)]
    pub server_cpu_us_per_request: Option<f64>,
    /// The system (kernel) part of `server_cpu_us_per_request`, in microseconds.
    #[serde(default)]
    pub server_system_cpu_us_per_request: Option<f64>,
}

/// Steal at or above this share of the CPU time is flagged in the summary.
pub const STEAL_WARN_PCT: f64 = 2.0;

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Percentiles of a histogram in milliseconds; `None` when it is empty.
fn percentiles(h: &hdrhistogram::Histogram<u64>) -> Option<Percentiles> {
    let q = |x: f64| ms(h.value_at_quantile(x));
    (!h.is_empty()).then(|| Percentiles {
        p50: q(0.5),
        p90: q(0.9),
        p99: q(0.99),
        p999: q(0.999),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    })
}

/// The successful answers' latencies: every answer's, less the refusals'.
fn ok_only(s: &crate::stats::Stats) -> hdrhistogram::Histogram<u64> {
    let mut h = s.hist.clone();
    // Both share bounds and the refusals are a subset, so the subtraction cannot fail.
    let _ = h.subtract(&s.refused);
    h
}

impl Report {
    pub fn build(scenario: &str, target: &str, model: &str, plan: &Plan, rows: usize, r: &RunResult) -> Self {
        let h = &r.stats.hist;
        let q = |x: f64| {
            if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(x)) }
        };
        let secs = r.elapsed.as_secs_f64().max(1e-9);
        let done = r.stats.completed();
        let per_request = |cpu: Option<f64>| cpu.filter(|_| done > 0).map(|c| c * 1e6 / done as f64);
        let n_secs = plan.duration.as_secs() as usize;
        let timeline = r
            .seconds
            .iter()
            .take(n_secs.max(1))
            .enumerate()
            .map(|(t, s)| Point {
                t: t as u64,
                ok: s.hist.len(),
                errors: s.errors,
                p50_ms: if s.hist.is_empty() { 0.0 } else { ms(s.hist.value_at_quantile(0.5)) },
                p99_ms: if s.hist.is_empty() { 0.0 } else { ms(s.hist.value_at_quantile(0.99)) },
                max_ms: ms(s.hist.max()),
            })
            .collect();
        let distribution = [0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 100.0]
            .iter()
            .map(|&p| (p, q(p / 100.0)))
            .collect();
        Self {
            scenario: scenario.to_string(),
            target: target.to_string(),
            protocol: "http".into(),
            model: model.to_string(),
            mode: match plan.mode {
                Mode::Open { .. } => "open".into(),
                Mode::Closed => "closed".into(),
            },
            asked_rate: match plan.mode {
                Mode::Open { rate } => Some(rate),
                Mode::Closed => None,
            },
            connections: plan.connections,
            rows_per_request: rows,
            duration_s: plan.duration.as_secs_f64(),
            warmup_s: plan.warmup.as_secs_f64(),
            completed: r.stats.completed(),
            ok: r.stats.ok,
            failed: r.stats.failed(),
            not_sent: r.stats.not_sent,
            achieved_rps: r.stats.completed() as f64 / secs,
            predictions_per_s: (r.stats.ok * rows as u64) as f64 / secs,
            latency_ms: percentiles(h).unwrap_or(Percentiles {
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p999: 0.0,
                max: 0.0,
                mean: 0.0,
            }),
            ok_latency_ms: percentiles(&ok_only(&r.stats)),
            refused_latency_ms: percentiles(&r.stats.refused),
            statuses: r.stats.statuses.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            errors: r.stats.errors.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            versions: r.stats.versions.clone(),
            timeline,
            distribution,
            steal_pct: r.steal.map(|f| f * 100.0),
            steal_high: r.steal.is_some_and(|f| f * 100.0 >= STEAL_WARN_PCT),
            cpu_us_per_request: per_request(r.cpu.load_tester.map(Cpu::total)),
            server_cpu_us_per_request: per_request(r.cpu.server.map(Cpu::total)),
            server_system_cpu_us_per_request: per_request(r.cpu.server.map(|c| c.system)),
        }
    }

    /// The summary a person reads at the end of a run.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        let asked =
            self.asked_rate.map_or_else(|| "as fast as possible".to_string(), |r| format!("{r:.0} req/s asked"));
        let _ = writeln!(
            s,
            "scenario   {}  ({} loop, {asked}, {} connections)",
            self.scenario, self.mode, self.connections
        );
        let _ = writeln!(s, "target     {} model {} ({} rows/request)", self.target, self.model, self.rows_per_request);
        let _ = writeln!(
            s,
            "requests   {} completed, {} ok, {} failed, {} not sent, in {:.1} s",
            self.completed, self.ok, self.failed, self.not_sent, self.duration_s
        );
        let _ = writeln!(s, "throughput {:.0} req/s, {:.0} predictions/s", self.achieved_rps, self.predictions_per_s);
        let l = &self.latency_ms;
        let _ = writeln!(
            s,
            "latency    p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  mean {:.3} ms",
            l.p50, l.p90, l.p99, l.p999, l.max, l.mean
        );
        if let (Some(ok), Some(r)) = (&self.ok_latency_ms, &self.refused_latency_ms) {
            let _ = writeln!(
                s,
                "  ok only  p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms;  refused: p50 {:.3} ms  p99 {:.3} ms  max {:.3} ms",
                ok.p50, ok.p99, ok.p999, r.p50, r.p99, r.max
            );
        }
        let _ = writeln!(s, "statuses   {}", join(&self.statuses));
        if let Some(p) = self.steal_pct {
            let warn = if self.steal_high { " (the hypervisor ran something else: compare with care)" } else { "" };
            let _ = writeln!(s, "steal      {p:.1} % of the machine's CPU time{warn}");
        }
        if let Some(lt) = self.cpu_us_per_request {
            // Scripts read the figures by position (the server's is the ninth word): new ones go at the end.
            let server = match (self.server_cpu_us_per_request, self.server_system_cpu_us_per_request) {
                (Some(c), Some(k)) => format!(", server {c:.2} us (system {k:.2} us)"),
                (Some(c), None) => format!(", server {c:.2} us"),
                _ => String::new(),
            };
            let _ = writeln!(s, "cpu        per request: load tester {lt:.2} us{server}");
        }
        if !self.errors.is_empty() {
            let _ = writeln!(s, "errors     {}", join(&self.errors));
        }
        if !self.versions.is_empty() {
            let total: u64 = self.versions.values().sum();
            let parts: Vec<String> = self
                .versions
                .iter()
                .map(|(k, v)| format!("v{k}: {v} ({:.1} %)", 100.0 * *v as f64 / total.max(1) as f64))
                .collect();
            let _ = writeln!(s, "versions   {}", parts.join(", "));
        }
        s
    }
}

fn join(m: &BTreeMap<String, u64>) -> String {
    m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

/// A Markdown table of several reports.
pub fn table(reports: &[Report]) -> String {
    let mut s = String::from(
        "| scenario | mode | rows/req | asked req/s | achieved req/s | predictions/s | p50 ms | p99 ms | p99.9 ms | max ms | errors \
         | steal % |\n|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in reports {
        let asked = r.asked_rate.map_or_else(|| format!("closed, {} conns", r.connections), |x| format!("{x:.0}"));
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.0} | {:.0} | {:.3} | {:.3} | {:.3} | {:.3} | {} | {} |",
            r.scenario,
            r.mode,
            r.rows_per_request,
            asked,
            r.achieved_rps,
            r.predictions_per_s,
            r.latency_ms.p50,
            r.latency_ms.p99,
            r.latency_ms.p999,
            r.latency_ms.max,
            r.failed + r.not_sent,
            r.steal_pct.map_or_else(|| "n/a".to_string(), |p| format!("{p:.1}"))
        );
    }
    s
}

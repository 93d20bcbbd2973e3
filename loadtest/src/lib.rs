//! A load generator for Open Inference Protocol servers, in the spirit of Triton's `perf_analyzer` and `ghz`.
//!
//! # Layout
//! - [`workload`]: request bodies built from the model's signature and training baseline (or a rows file).
//! - [`client`]: one connection to the target per worker; each protocol is one module (`http` now).
//! - [`runner`]: open loop at a fixed arrival rate, free of coordinated omission (latency counts from each
//!   request's intended send time), and closed loop with N concurrent connections.
//! - [`stats`]: HDR histograms, status/error/version counts, and a per-second timeline.
//! - [`steal`]: the CPU time a shared virtual machine's hypervisor took away during the run.
//! - [`cputime`]: the CPU time the load tester and, if named, the server spent per request.
//! - [`report`]: the human summary, the JSON report, the HTML picture, and the table of several reports.

pub mod client;
pub mod cputime;
pub mod report;
pub mod runner;
pub mod stats;
pub mod steal;
pub mod workload;

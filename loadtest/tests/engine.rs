//! The engines against a local server whose latency is known: percentiles come out right, the open loop keeps its
//! schedule, and a stall is charged to every request it delayed (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::post;
use bytes::Bytes;
use loadtest::client::Target;
use loadtest::report::Report;
use loadtest::runner::{Mode, Plan, RunResult, run};
use loadtest::workload::Workload;

/// A server that answers every request after `delay`, except request number `stall_at`, which takes `stall`.
async fn server(delay: Duration, stall_at: u64, stall: Duration) -> SocketAddr {
    let count = Arc::new(AtomicU64::new(0));
    let app = Router::new().route(
        "/v2/models/m/infer",
        post(move || {
            let n = count.fetch_add(1, Ordering::Relaxed);
            async move {
                tokio::time::sleep(if n == stall_at { stall } else { delay }).await;
                ([("x-model-version", "7")], "{}")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

fn target(addr: SocketAddr) -> Arc<Target> {
    Arc::new(Target {
        protocol: loadtest::client::Protocol::Http,
        addr,
        authority: addr.to_string(),
        model: "m".into(),
        version: None,
        pin: None,
        routing_key: None,
        tls: None,
    })
}

fn workload() -> Arc<Workload> {
    Arc::new(Workload { bodies: vec![Bytes::from_static(b"{}")], rows_per_request: 1, header_lens: Vec::new() })
}

fn plan(mode: Mode, connections: usize, secs: f64) -> Plan {
    Plan {
        mode,
        connections,
        duration: Duration::from_secs_f64(secs),
        warmup: Duration::ZERO,
        timeout: Duration::from_secs(5),
        max_requests: None,
        server_pid: None,
    }
}

async fn go(addr: SocketAddr, mode: Mode, connections: usize, secs: f64) -> RunResult {
    run(&plan(mode, connections, secs), target(addr), workload(), None).await.expect("run")
}

fn ms(r: &RunResult, q: f64) -> f64 {
    r.stats.hist.value_at_quantile(q) as f64 / 1000.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_latency_gives_expected_percentiles() {
    let addr = server(Duration::from_millis(5), u64::MAX, Duration::ZERO).await;
    let r = go(addr, Mode::Closed, 4, 1.0).await;
    assert_eq!(r.stats.failed(), 0);
    assert_eq!(r.stats.versions["7"], r.stats.ok);
    // Every request takes 5 ms plus loopback overhead; tokio's timer rounds sleeps up to the next millisecond.
    assert!((5.0..8.0).contains(&ms(&r, 0.5)), "p50 {}", ms(&r, 0.5));
    assert!(ms(&r, 0.99) < 15.0, "p99 {}", ms(&r, 0.99));
    // 4 connections at ~5-6 ms each: between 400 and 800 requests in one second.
    assert!((400..=800).contains(&r.stats.ok), "{}", r.stats.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_keeps_its_schedule() {
    let addr = server(Duration::from_millis(1), u64::MAX, Duration::ZERO).await;
    let r = go(addr, Mode::Open { rate: 400.0 }, 8, 2.0).await;
    // Exactly rate × duration requests are scheduled, and all of them complete.
    assert_eq!(r.stats.completed() + r.stats.not_sent, 800);
    assert_eq!(r.stats.ok, 800);
    // Each second of intended send time holds its share: the schedule does not drift.
    assert_eq!(r.seconds[0].hist.len(), 400);
    assert_eq!(r.seconds[1].hist.len(), 400);
    // The hypervisor's share of the window is read where the system tells it.
    if cfg!(target_os = "linux") {
        assert!(r.steal.is_some_and(|s| (0.0..=1.0).contains(&s)), "steal {:?}", r.steal);
    }
    // The report carries the verdict on it, so the scripts that read reports need no threshold of their own.
    let mut r = r;
    for (steal, high) in [(None, false), (Some(0.015), false), (Some(0.025), true)] {
        r.steal = steal;
        let report = Report::build("open", "t", "m", &plan(Mode::Open { rate: 400.0 }, 8, 2.0), 1, &r);
        assert_eq!(report.steal_high, high, "steal {steal:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_charged_to_every_request_behind_it() {
    // One connection, 100 req/s, and request 20 stalls for 500 ms: the ~50 requests due during the stall wait
    // behind it. Measured from their intended send times they are slow; a closed-loop-style measurement (from
    // the actual send) would show a single slow request and a clean p99.
    let addr = server(Duration::from_micros(200), 20, Duration::from_millis(500)).await;
    let r = go(addr, Mode::Open { rate: 100.0 }, 1, 2.0).await;
    assert_eq!(r.stats.ok, 200);
    let slow = (r.stats.hist.len() as f64 * (1.0 - r.stats.hist.quantile_below(100_000))) as u64;
    assert!(slow >= 30, "requests slower than 100 ms: {slow}");
    assert!(ms(&r, 0.9) >= 50.0, "p90 {}", ms(&r, 0.9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_per_request_of_the_load_tester_and_a_named_server() {
    // The server runs in this process, so naming this process as the server must give the same CPU time.
    let addr = server(Duration::ZERO, u64::MAX, Duration::ZERO).await;
    let p = Plan { server_pid: Some(std::process::id()), ..plan(Mode::Closed, 4, 1.0) };
    let r = run(&p, target(addr), workload(), None).await.expect("run");
    if !cfg!(target_os = "linux") {
        return;
    }
    let (lt, server) = (r.cpu.load_tester.expect("own cpu"), r.cpu.server.expect("server cpu"));
    let (lt, server, system) = (lt.total(), server.total(), server.system);
    // Some thousands of requests (the server's timer rounds each up to 1 ms) cost more than one 10 ms tick.
    assert!(lt >= 0.02, "{lt} s");
    assert!((lt - server).abs() <= 0.025, "{lt} against {server}: one process, read twice in a row");
    let report = Report::build("closed", "t", "m", &p, 1, &r);
    let per = report.cpu_us_per_request.expect("per request");
    assert!((per - lt * 1e6 / r.stats.completed() as f64).abs() < 1e-6, "{per}");
    assert!(report.summary().contains("cpu        per request: load tester"), "{}", report.summary());
    let (total, sys) = (report.server_cpu_us_per_request.expect("server"), report.server_system_cpu_us_per_request);
    assert!((sys.expect("system part") - system * 1e6 / r.stats.completed() as f64).abs() < 1e-6);
    assert!(sys.is_some_and(|k| (0.0..=total).contains(&k)), "{sys:?} of {total}");
    // Scripts read the server's figure as the ninth word of this line; the system part follows it.
    let line = report.summary().lines().find(|l| l.starts_with("cpu ")).expect("cpu line").to_owned();
    let words: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(words.get(8), Some(&format!("{total:.2}").as_str()), "{line}");
    assert!(line.ends_with(&format!("(system {:.2} us)", sys.unwrap_or_default())), "{line}");
}

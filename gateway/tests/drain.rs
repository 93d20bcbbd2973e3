//! SIGTERM under load, against the real binary, as a load balancer sees it: readiness fails first; clients that
//! follow readiness stop sending; every request sent (HTTP/1.1 with keep-alive, and gRPC over HTTP/2) is answered,
//! none cut off; then the process exits on its own. Ten runs, no failed request in any.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use gateway::protocol::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;

const RUNS: usize = 10;

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
}

async fn one_run(run: usize) -> (usize, usize) {
    let mut cfg = config(&bundled_models());
    cfg.server.drain_ms = 500;
    cfg.server.shutdown_grace_ms = 10_000;
    cfg.models.watch_interval_ms = 0;
    let path = config_file(cfg, 0, 0);
    let p = spawn_gateway(&path);
    let c = client();
    wait_ready(&c, &p).await;
    let ready = Arc::new(AtomicBool::new(true));
    let tally = Arc::new(Tally::default());
    // The load balancer: polls readiness every 20 ms on its own connections.
    let poller = {
        let (ready, url) = (ready.clone(), format!("http://{}/v2/health/ready", p.http));
        tokio::spawn(async move {
            let c = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("client");
            while ready.load(Ordering::Relaxed) {
                if !c.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                    ready.store(false, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    let mut clients = Vec::new();
    for _ in 0..6 {
        let (ready, tally, url) =
            (ready.clone(), tally.clone(), format!("http://{}/v2/models/breast-cancer/infer", p.http));
        let body = breast_cancer_rows(1).to_string();
        clients.push(tokio::spawn(async move {
            let c = client();
            while ready.load(Ordering::Relaxed) {
                let outcome = match c.post(&url).body(body.clone()).send().await {
                    Ok(r) if r.status() == 200 => r.bytes().await.map(drop).map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("status {}", r.status())),
                    Err(e) => Err(e.to_string()),
                };
                match outcome {
                    Ok(()) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("run {run}: HTTP request failed: {e}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for _ in 0..3 {
        let (ready, tally, addr) = (ready.clone(), tally.clone(), format!("http://{}", p.grpc));
        clients.push(tokio::spawn(async move {
            let mut c = GrpcInferenceServiceClient::connect(addr).await.expect("grpc connects");
            while ready.load(Ordering::Relaxed) {
                match c.model_infer(breast_cancer_grpc_request()).await {
                    Ok(_) => tally.ok.fetch_add(1, Ordering::Relaxed),
                    Err(e) => {
                        eprintln!("run {run}: gRPC request failed: {e:?}");
                        tally.failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = p.child.id().to_string();
    let killed = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
    assert!(killed.success());
    for t in clients {
        t.await.expect("client task");
    }
    poller.await.expect("poller");
    let status = tokio::task::spawn_blocking(move || {
        let mut p = p;
        p.child.wait()
    })
    .await
    .expect("join")
    .expect("wait");
    assert!(status.success(), "run {run}: the gateway exits cleanly after the drain: {status:?}");
    (tally.ok.load(Ordering::Relaxed), tally.failed.load(Ordering::Relaxed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_fails_no_request() {
    let mut total = 0;
    for run in 0..RUNS {
        let (ok, failed) = one_run(run).await;
        assert_eq!(failed, 0, "run {run}: {failed} of {} requests failed", ok + failed);
        assert!(ok > 50, "run {run}: the load ran ({ok} requests)");
        total += ok;
    }
    println!("{total} requests over {RUNS} runs, none failed");
}

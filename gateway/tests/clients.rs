//! Existing clients work unchanged: NVIDIA's `tritonclient` (gRPC and HTTP), installed into the project's .venv by
//! `make test`, calls a real gateway through `tests/clients/tritonclient_check.py`.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged_over_grpc_and_http() {
    let python = workspace().join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `make test` (it installs tritonclient from gateway/tests/clients/requirements.txt)",
        python.display()
    );
    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let script = workspace().join("gateway/tests/clients/tritonclient_check.py");
    let (grpc, http) = (gw.grpc_addr.to_string(), gw.http_addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--grpc", &grpc, "--http", &http])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python runs")
    });
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("in time").expect("joined");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "tritonclient check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("tritonclient over gRPC and HTTP: ok"), "{stdout}");
    gw.shutdown().await;
}

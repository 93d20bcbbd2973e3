//! Existing clients work unchanged against a real gateway serving the bundled models:
//!
//! - NVIDIA's `tritonclient` (HTTP and gRPC), from the project's .venv, through `tests/clients/tritonclient_check.py`:
//!   every bundled version's golden examples with binary, JSON and compressed tensors, and Triton's model
//!   configuration, statistics, repository index and load/unload (with the admin token) extensions;
//! - KServe's Python SDK (`kserve`: REST v2 and gRPC), from .venv-kserve, through `tests/clients/kserve_check.py`.
//!
//! `make test` installs both venvs. Each script prints a PASS or FAIL line per check and its final "ok" line only
//! when all passed; a failure here shows that whole report.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Starts a gateway on the bundled models, runs `script` (under gateway/tests/clients/) with the interpreter of
/// `venv` against it, and asserts it passed and printed `ok_line`.
async fn run_client_check(venv: &str, script: &str, ok_line: &str, timeout: Duration) {
    let python = workspace().join(venv).join("bin/python");
    assert!(python.exists(), "{} is missing: run `make test` (it installs {venv})", python.display());
    let mut cfg = config(&bundled_models());
    // The load/unload checks change what is loaded; a repository watcher must not change it back behind them.
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let path: PathBuf = workspace().join("gateway/tests/clients").join(script);
    let (grpc, http) = (gw.grpc_addr.to_string(), gw.http_addr.to_string());
    let models = bundled_models();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(path)
            .args(["--grpc", &grpc, "--http", &http, "--models"])
            .arg(models)
            // The admin token of `common::config`, for the load/unload checks (as "Authorization: Bearer ...").
            .env("GATEWAY_ADMIN_TOKEN", TOKEN)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python runs")
    });
    let out = tokio::time::timeout(timeout, out).await.expect("in time").expect("joined");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains(ok_line), "{script} did not print {ok_line:?}:\n{stdout}\n{stderr}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_works_unchanged_over_grpc_and_http() {
    run_client_check(".venv", "tritonclient_check.py", "tritonclient over gRPC and HTTP: ok", Duration::from_secs(120))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kserve_sdk_works_unchanged_over_rest_and_grpc() {
    // Importing kserve alone takes a few seconds (it brings its model server, pandas and the Kubernetes client).
    run_client_check(".venv-kserve", "kserve_check.py", "kserve over REST and gRPC: ok", Duration::from_secs(180))
        .await;
}

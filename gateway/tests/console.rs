//! The operator console in a real browser: Debian's headless Chromium, driven by Selenium through
//! `tests/console/console_check.py`, against a real gateway with the bundled models and config/demo.toml's short
//! rollout policy (version 3 of breast-cancer fails its label-disagreement check and is rolled back). The script
//! checks the token handling, the live rollout view under load from the load tester, actions from the page agreeing
//! with the admin API and the journal, a hostile rollback reason rendered as text, the CSP, and writes screenshots to
//! `target/console-shots/`. `make test` installs Chromium, ChromeDriver and Selenium.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// The load tester binary that `cargo test --workspace` builds next to this test's.
fn loadtest_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>");
    dir.join("loadtest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_and_drives_a_rollout_in_a_real_browser() {
    let python = workspace().join(".venv/bin/python");
    for needed in [python.clone(), "/usr/bin/chromium".into(), "/usr/bin/chromedriver".into(), loadtest_binary()] {
        assert!(
            needed.exists(),
            "{} is missing: run `make test` (it installs Chromium, ChromeDriver and Selenium, and builds the load \
             tester with the workspace)",
            needed.display()
        );
    }
    let demo: gateway::config::Config =
        toml::from_str(&std::fs::read_to_string(workspace().join("config/demo.toml")).expect("demo config"))
            .expect("demo config parses");
    let mut cfg = config(&bundled_models());
    cfg.rollout = demo.rollout;
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let shots = workspace().join("target/console-shots");
    std::fs::create_dir_all(&shots).expect("shots dir");
    let script = workspace().join("gateway/tests/console/console_check.py");
    let (admin, http) = (format!("http://{}", gw.admin_addr), format!("http://{}", gw.http_addr));
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--admin", &admin, "--http", &http, "--token", TOKEN, "--shots"])
            .arg(&shots)
            .arg("--loadtest")
            .arg(loadtest_binary())
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python runs")
    });
    let out = tokio::time::timeout(Duration::from_secs(300), out).await.expect("in time").expect("joined");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "console check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("console: ok"), "{stdout}\n{stderr}");
    gw.shutdown().await;
}

//! End to end with a real Prometheus (Debian's `prometheus` package, which `make test` installs): the server
//! scrapes a real gateway on loopback with the rules of `deploy/prometheus/alerts.yml`, and its HTTP API shows the
//! series, the process metrics, and every rule evaluating without error.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn api(c: &reqwest::Client, base: &str, path: &str, params: &[(&str, &str)]) -> Option<Value> {
    let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), params).ok()?;
    let v: Value = c.get(url).send().await.ok()?.json().await.ok()?;
    (v["status"] == "success").then(|| v["data"].clone())
}

/// Polls until `check` accepts what the API answers, or panics with the last answer after `secs`.
async fn eventually(
    c: &reqwest::Client,
    base: &str,
    path: &str,
    params: &[(&str, &str)],
    secs: u64,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < Duration::from_secs(secs) {
        if let Some(v) = api(c, base, path, params).await {
            if check(&v) {
                return v;
            }
            last = v;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{path} {params:?} never matched; last answer: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_gateway_and_evaluates_the_rules() {
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok_and(|o| o.status.success()),
        "the prometheus server is missing: run `make test` (it installs Debian's prometheus package)"
    );
    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let c = client();
    for _ in 0..20 {
        let (s, _) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(2).to_string()).await;
        assert_eq!(s, 200);
    }
    let (s, _) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), "{\"inputs\": 1}").await;
    assert_eq!(s, 400);

    let dir = scratch_dir();
    let rules = workspace().join("deploy/prometheus/alerts.yml");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - \
             job_name: gateway\n    static_configs:\n      - targets: [\"{}\"]\n",
            rules.display(),
            gw.metrics_addr
        ),
    )
    .expect("config");
    let port = free_port();
    let _prom = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus starts"),
    );
    let base = format!("http://127.0.0.1:{port}");

    // The target is up and the gateway's series are there, labelled as documented.
    let up = eventually(&c, &base, "/api/v1/query", &[("query", "up{job=\"gateway\"}")], 60, |d| {
        d["result"][0]["value"][1] == "1"
    })
    .await;
    assert_eq!(up["result"][0]["metric"]["instance"], json!(gw.metrics_addr.to_string()));
    let ok = eventually(
        &c,
        &base,
        "/api/v1/query",
        &[("query", "sum(gateway_requests_total{model=\"breast-cancer\",code=\"200\"})")],
        30,
        |d| d["result"][0]["value"][1] == "20",
    )
    .await;
    assert_eq!(ok["result"].as_array().map(Vec::len), Some(1));
    for series in [
        "gateway_requests_total{code=\"400\"}",
        "gateway_request_duration_seconds_bucket{protocol=\"http\"}",
        "gateway_model_ready{model=\"diabetes\",version=\"1\"}",
        "gateway_model_stable{model=\"breast-cancer\",version=\"2\"}",
        "gateway_feature_psi_max",
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        eventually(&c, &base, "/api/v1/query", &[("query", series)], 30, |d| {
            d["result"].as_array().is_some_and(|r| !r.is_empty())
        })
        .await;
    }

    // Every recording and alerting rule has been evaluated, without error.
    let rules = eventually(&c, &base, "/api/v1/rules", &[], 30, |d| {
        let all: Vec<&Value> = d["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        !all.is_empty() && all.iter().all(|r| r["health"] == "ok" && r["lastEvaluation"] != "0001-01-01T00:00:00Z")
    })
    .await;
    let count: usize =
        rules["groups"].as_array().expect("groups").iter().map(|g| g["rules"].as_array().map_or(0, Vec::len)).sum();
    assert_eq!(count, 13, "{rules}");
    // The error-ratio recording rule yields 0, not nothing, for a model serving without errors (a 400 is not an
    // error): traffic while Prometheus watches.
    for _ in 0..30 {
        post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(1).to_string()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ratio = eventually(
        &c,
        &base,
        "/api/v1/query",
        &[("query", "model:gateway_request_errors:ratio_rate5m{model=\"breast-cancer\"}")],
        30,
        |d| d["result"].as_array().is_some_and(|r| !r.is_empty()),
    )
    .await;
    assert_eq!(ratio["result"][0]["value"][1], "0");
    gw.shutdown().await;
}

//! End to end with a real Prometheus (Debian's `prometheus` package, which `make test` installs): the server
//! scrapes a real gateway on loopback with the rules of `deploy/prometheus/alerts.yml`, and its HTTP API shows the
//! series, the process metrics, and every rule evaluating without error. Then faults are injected (NaN inputs over
//! gRPC, wrong delayed labels, a version that fails to load) and the matching alerts go pending, while the ones
//! with nothing to report stay quiet.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use gateway::protocol::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::InferInputTensor;
use reqwest::Method;
use serde_json::{Value, json};

/// Whether alert `name` with these labels is pending or firing.
fn active(alerts: &Value, name: &str, labels: &[(&str, &str)]) -> bool {
    alerts["alerts"].as_array().into_iter().flatten().any(|a| {
        a["labels"]["alertname"] == name
            && labels.iter().all(|(k, v)| a["labels"][*k] == *v)
            && matches!(a["state"].as_str(), Some("pending" | "firing"))
    })
}

/// Asks for `rows` predictions with `id`, then labels each with the opposite class.
async fn label_wrongly(c: &reqwest::Client, gw: &gateway::Gateway, id: &str, rows: usize) {
    let mut body = breast_cancer_rows(rows);
    body["id"] = json!(id);
    let (s, v) = post(c, &url(gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
    assert_eq!(s, 200, "{v}");
    let wrong: Vec<i64> =
        v["outputs"][0]["data"].as_array().expect("labels").iter().map(|l| 1 - l.as_i64().expect("label")).collect();
    let (s, v) =
        post(c, &url(gw, "/v2/models/breast-cancer/feedback"), json!({"id": id, "value": wrong}).to_string()).await;
    assert_eq!(s, 200, "{v}");
}

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
    // A repository of its own, so a broken version can be added while the gateway runs.
    let repo = scratch_dir();
    for (m, v) in [("breast-cancer", "1"), ("breast-cancer", "2"), ("diabetes", "1")] {
        copy_version(m, v, &repo, v);
    }
    let mut cfg = config(&repo);
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
    assert_eq!(count, 26, "{rules}");
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

    // Faults. 1: NaN inputs over gRPC (served and counted under the default `count` policy).
    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.expect("grpc");
    let mut row: Vec<f32> = breast_cancer_means().into_iter().map(|x| x as f32).collect();
    row[0] = f32::NAN;
    for _ in 0..20 {
        let input = InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 30],
            parameters: Default::default(),
            contents: Some(pb::InferTensorContents { fp32_contents: row.clone(), ..Default::default() }),
        };
        let req =
            pb::ModelInferRequest { model_name: "breast-cancer".into(), inputs: vec![input], ..Default::default() };
        grpc.model_infer(req).await.expect("a NaN is counted, not refused");
    }
    // 2: wrong delayed labels. One creates the series; once scraped, 250 more (increase() counts only after the
    // first sample, and the alert wants at least 200 labels).
    label_wrongly(&c, &gw, "wrong-0", 1).await;
    let wrong = "gateway_feedback_total{model=\"breast-cancer\",version=\"2\",outcome=\"wrong\"}";
    eventually(&c, &base, "/api/v1/query", &[("query", wrong)], 30, |d| {
        d["result"].as_array().is_some_and(|r| !r.is_empty())
    })
    .await;
    for i in 1..=5 {
        label_wrongly(&c, &gw, &format!("wrong-{i}"), 50).await;
    }
    // 3: a version that fails to load.
    copy_version("breast-cancer", "1", &repo, "4");
    std::fs::write(repo.join("breast-cancer/4/model.onnx"), b"not an ONNX model").expect("write");
    let (s, v) = admin(&c, &gw, Method::POST, "/admin/models/breast-cancer/versions/4/load", None).await;
    assert_eq!(s, 422, "{v}");
    let alerts = eventually(&c, &base, "/api/v1/alerts", &[], 90, |d| {
        active(d, "GatewayInvalidValues", &[("model", "breast-cancer"), ("version", "2"), ("kind", "nan")])
            && active(d, "GatewayLiveAccuracyBelowTraining", &[("model", "breast-cancer"), ("version", "2")])
            && active(d, "GatewayVersionLoadFailed", &[("model", "breast-cancer"), ("version", "4")])
    })
    .await;
    for quiet in [
        "GatewayClusterDisconnected",
        "GatewayClusterNoAnalyser",
        "GatewayClusterRevisionSkew",
        "GatewayMemoryGrowing",
        "GatewayLoadShedding",
        "GatewayConnectionsRefused",
    ] {
        assert!(!active(&alerts, quiet, &[]), "{quiet}: {alerts}");
    }
    gw.shutdown().await;
}

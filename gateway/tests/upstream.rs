//! Remote versions against a real upstream: a second gateway process started by the test serves the bundled
//! models, and the gateway under test fronts it over HTTP and gRPC. Covered: answers identical to the upstream's,
//! a canary split between a local and a remote version, an upstream that goes down (errors first, then the
//! circuit opens and fails fast, readiness says so) and comes back (the gateway recovers on its own), and a slow
//! upstream cut off at the deadline.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use gateway::Gateway;
use reqwest::Method;
use serde_json::{Value, json};

/// Starts the gateway binary serving `repo` and waits until it is ready. Ports 0 let it pick its own (read back
/// from its log), so no port probed free beforehand can be taken by another test first.
async fn upstream(repo: &Path, http: u16, grpc: u16) -> (Proc, u16, u16) {
    let mut config = config(repo);
    config.models.watch_interval_ms = 0;
    config.inference.threads = 1;
    let up = spawn_gateway(&config_file(config, http, grpc));
    let (h, g) = (port_of(&up.http), port_of(&up.grpc));
    let c = client();
    for _ in 0..600 {
        if let Ok(r) = c.get(format!("http://127.0.0.1:{h}/v2/health/ready")).send().await
            && r.status() == 200
        {
            return (up, h, g);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the upstream did not become ready");
}

/// Adds version `as_version` of breast-cancer to `repo`, served by `url` as the upstream's version 2, with the
/// signature and golden examples (checked against the upstream at load) of bundled version `like`.
fn remote_version(repo: &Path, as_version: &str, url: &str, remote: Value, like: &str) {
    let dir = repo.join("breast-cancer").join(as_version);
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mut m = manifest("breast-cancer", like);
    m["version"] = json!(as_version);
    m["stage"] = json!("candidate");
    let mut r = json!({"url": url, "version": "2", "timeout_ms": 1000, "failure_threshold": 3, "open_ms": 300, "health_interval_ms": 100});
    for (k, v) in remote.as_object().expect("object") {
        r[k] = v.clone();
    }
    m["remote"] = r;
    std::fs::write(dir.join("manifest.json"), m.to_string()).expect("write");
}

async fn infer(gw: &Gateway, pin: Option<&str>, body: &Value) -> (u16, Value) {
    let mut r = client().post(url(gw, "/v2/models/breast-cancer/infer")).body(body.to_string());
    if let Some(v) = pin {
        r = r.header("x-model-version", v);
    }
    let r = r.send().await.expect("sent");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

fn rows() -> Value {
    breast_cancer_rows(3)
}

async fn start_front(repo: &Path) -> Gateway {
    let mut cfg = config(repo);
    cfg.models.watch_interval_ms = 0;
    start(cfg).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_versions_answer_like_the_upstream_and_share_a_canary_with_a_local_one() {
    let (_up, h, g) = upstream(&bundled_models(), 0, 0).await;
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    remote_version(&repo, "5", &format!("http://127.0.0.1:{h}"), json!({}), "2");
    remote_version(&repo, "6", &format!("grpc://127.0.0.1:{g}"), json!({}), "2");
    let gw = start_front(&repo).await;
    let versions = admin(&client(), &gw, Method::GET, "/admin/models/breast-cancer", None).await.1;
    assert_eq!(versions["versions"].as_array().map(|v| v.len()), Some(3), "{versions}");
    assert!(versions["versions"].as_array().expect("v").iter().all(|v| v["state"] == "ready"), "{versions}");
    assert_eq!(versions["stable"], "1", "remote candidates do not take over");

    // The upstream's own answer from its version 2, and the same through both remote versions.
    let c = client();
    let (s, direct) =
        post(&c, &format!("http://127.0.0.1:{h}/v2/models/breast-cancer/versions/2/infer"), rows().to_string()).await;
    assert_eq!(s, 200);
    for v in ["5", "6"] {
        let (s, via) = infer(&gw, Some(v), &rows()).await;
        assert_eq!((s, via["model_version"].as_str()), (200, Some(v)), "{via}");
        assert_eq!(via["outputs"], direct["outputs"], "version {v} answers what the upstream answers");
    }

    // A canary split between local version 1 and remote version 5.
    let (s, body) =
        admin(&c, &gw, Method::POST, "/admin/models/breast-cancer/canary", Some(json!({"version": 5, "weight": 50})))
            .await;
    assert_eq!(s, 200, "{body}");
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..60 {
        let (s, r) = infer(&gw, None, &rows()).await;
        assert_eq!(s, 200, "{r}");
        *seen.entry(r["model_version"].as_str().expect("version").to_string()).or_default() += 1;
    }
    assert!(seen.get("1").is_some_and(|n| *n > 5) && seen.get("5").is_some_and(|n| *n > 5), "{seen:?}");

    let metrics = scrape(&gw).await;
    assert!(metrics.contains(r#"gateway_upstream_up{model="breast-cancer",version="5"} 1"#), "{metrics}");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_opens_the_circuit_and_a_returning_one_closes_it() {
    // The upstream comes back on the same HTTP port later. A port from free_port is below the kernel's ephemeral
    // range, so no outgoing connection can take it while the upstream is down.
    let (up, h, _) = upstream(&bundled_models(), free_port(), 0).await;
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    remote_version(&repo, "5", &format!("http://127.0.0.1:{h}"), json!({}), "2");
    let gw = start_front(&repo).await;
    assert_eq!(infer(&gw, Some("5"), &rows()).await.0, 200);

    drop(up);
    // First the calls fail against the dead upstream (502), then the circuit opens and they fail fast (503),
    // saying why; stable keeps serving.
    let started = Instant::now();
    let mut statuses = Vec::new();
    let open = loop {
        assert!(started.elapsed() < Duration::from_secs(10), "the circuit never opened: {statuses:?}");
        let (s, body) = infer(&gw, Some("5"), &rows()).await;
        statuses.push(s);
        assert!(matches!(s, 502 | 503), "{s} {body}");
        if s == 503 {
            break body;
        }
    };
    let msg = open["error"].as_str().expect("error");
    assert!(msg.contains("upstream") && msg.contains("version '5'"), "{msg}");
    let t = Instant::now();
    assert_eq!(infer(&gw, Some("5"), &rows()).await.0, 503);
    assert!(t.elapsed() < Duration::from_millis(200), "an open circuit fails fast");
    let (s, _) = get(&client(), &url(&gw, "/v2/models/breast-cancer/versions/5/ready")).await;
    assert_eq!(s, 503, "readiness follows the upstream");
    assert_eq!(infer(&gw, None, &rows()).await.0, 200, "stable is unaffected");

    // The upstream comes back on the same address; the probe and the half-open circuit let traffic through again.
    let _up = upstream(&bundled_models(), h, 0).await;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(10), "no recovery within 10 s");
        if infer(&gw, Some("5"), &rows()).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(&client(), &url(&gw, "/v2/models/breast-cancer/versions/5/ready")).await.0, 200);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_cut_off_at_the_deadline() {
    // The upstream serves the slow fixture (milliseconds per call) as breast-cancer version 2.
    let slow_repo = scratch_dir();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breast-cancer/slow");
    copy_version("breast-cancer", "1", &slow_repo, "2");
    std::fs::copy(fixture.join("model.onnx"), slow_repo.join("breast-cancer/2/model.onnx")).expect("slow model");
    let (_up, _, g) = upstream(&slow_repo, 0, 0).await;
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    // The golden examples at load get a generous deadline of their own; live calls get 1 ms.
    let remote = json!({"timeout_ms": 1, "failure_threshold": 100, "health_interval_ms": 0});
    remote_version(&repo, "5", &format!("grpc://127.0.0.1:{g}"), remote, "1");
    let gw = start_front(&repo).await;
    let (s, body) = infer(&gw, Some("5"), &rows()).await;
    assert_eq!(s, 504, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("timed out after 1 ms")), "{body}");
    gw.shutdown().await;
}

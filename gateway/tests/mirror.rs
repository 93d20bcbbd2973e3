//! After the answer: shadow copies and their divergence, the capture log, delayed-label feedback. Each with its
//! fault injected where there is one.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn wait_for(mut ok: impl AsyncFnMut() -> bool) -> bool {
    for _ in 0..750 {
        if ok().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

fn pair(skew: &Value, live: &str, shadow: &str) -> Value {
    skew["divergence"]
        .as_array()
        .and_then(|d| d.iter().find(|p| p["version"] == json!(live) && p["shadow_version"] == json!(shadow)).cloned())
        .unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_different_shadow_diverges_and_an_identical_one_does_not() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    copy_version("breast-cancer", "2", &repo, "2");
    copy_version("breast-cancer", "1", &repo, "3"); // the same model as version 1
    let gw = start(config(&repo)).await;
    let c = client();
    let p = "/admin/models/breast-cancer";
    // Stable is 3 (the highest); shadow 1 is the identical copy.
    let (s, v) =
        admin(&c, &gw, Method::POST, &format!("{p}/shadow"), Some(json!({"version": 1, "percent": 100}))).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["shadow"], json!({"version": "1", "percent": 100.0}));
    let mut rng = fastrand::Rng::with_seed(5);
    let send = async |n: usize, rng: &mut fastrand::Rng| {
        for _ in 0..n {
            let mut body = breast_cancer_rows(1);
            for x in body["inputs"][0]["data"].as_array_mut().expect("data") {
                *x = json!(x.as_f64().expect("f") * (0.5 + rng.f64()));
            }
            let (s, v) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
            assert_eq!((s, v["model_version"].clone()), (200, json!("3")), "live answers are the stable's");
        }
    };
    send(100, &mut rng).await;
    let mut skew = Value::Null;
    assert!(
        wait_for(async || {
            skew = admin(&c, &gw, Method::GET, &format!("{p}/skew"), None).await.1;
            // Copies only run while an inference thread is idle; on a loaded machine some are dropped instead.
            pair(&skew, "3", "1")["pairs"].as_u64() >= Some(20)
        })
        .await,
        "copies compared: {skew}"
    );
    let same = pair(&skew, "3", "1");
    assert_eq!(
        (same["label_disagreement_rate"].clone(), same["max_abs_diff"].clone()),
        (json!(0.0), json!(0.0)),
        "{same}"
    );

    let (s, _) =
        admin(&c, &gw, Method::POST, &format!("{p}/shadow"), Some(json!({"version": "2", "percent": 100}))).await;
    assert_eq!(s, 200);
    send(100, &mut rng).await;
    assert!(
        wait_for(async || {
            skew = admin(&c, &gw, Method::GET, &format!("{p}/skew"), None).await.1;
            pair(&skew, "3", "2")["pairs"].as_u64() >= Some(20)
        })
        .await
    );
    let diff = pair(&skew, "3", "2");
    assert!(diff["mean_abs_diff"].as_f64().expect("diff") > 1e-3, "logistic regression vs trees differ: {diff}");
    let metrics = scrape(&gw).await;
    assert!(metrics.contains(r#"gateway_mirror_pairs_total{model="breast-cancer",shadow_version="2",version="3"}"#));
    assert_eq!(admin(&c, &gw, Method::DELETE, &format!("{p}/shadow"), None).await.0, 200);
    assert_eq!(admin(&c, &gw, Method::DELETE, &format!("{p}/shadow"), None).await.0, 409);
    gw.shutdown().await;
}

/// One inference thread kept busy by concurrent live traffic: the shadow never gets a worker, its copies are
/// dropped and counted, and every live request still succeeds on the live version.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starved_shadow_only_moves_the_drop_counters() {
    let mut cfg = config(&bundled_models());
    cfg.inference.threads = 1;
    cfg.mirror.queue_capacity = 2;
    cfg.mirror.workers = 1;
    let gw = start(cfg).await;
    let c = client();
    let (s, _) =
        admin(&c, &gw, Method::POST, "/admin/models/breast-cancer/shadow", Some(json!({"version": 1, "percent": 100})))
            .await;
    assert_eq!(s, 200);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (c, u) = (c.clone(), url(&gw, "/v2/models/breast-cancer/infer"));
        tasks.push(tokio::spawn(async move {
            let body = breast_cancer_rows(64).to_string();
            for _ in 0..40 {
                let (s, v) = post(&c, &u, body.clone()).await;
                assert_eq!((s, v["model_version"].clone()), (200, json!("2")));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let metrics = scrape(&gw).await;
    let dropped: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("gateway_mirror_dropped_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(dropped > 0.0, "copies were dropped:\n{metrics}");
    assert!(gw.core.mirror.queue_len() <= 2, "the mirror queue stays within its bound");
    assert!(
        metrics.contains(r#"gateway_requests_total{code="200",model="breast-cancer",protocol="http",version="2"} 640"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn sampled_requests_are_captured_as_json_lines() {
    let mut cfg = config(&bundled_models());
    let dir = scratch_dir().join("capture");
    cfg.capture.dir = Some(dir.clone());
    cfg.capture.percent = 100.0;
    let gw = start(cfg).await;
    let c = client();
    for i in 0..10 {
        let mut body = breast_cancer_rows(1);
        body["id"] = json!(format!("req-{i}"));
        assert_eq!(post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await.0, 200);
    }
    let mut lines = Vec::new();
    assert!(
        wait_for(async || {
            lines = gateway::mirror::capture::capture_files(&dir)
                .iter()
                .flat_map(|(p, _)| {
                    std::fs::read_to_string(p).unwrap_or_default().lines().map(str::to_owned).collect::<Vec<_>>()
                })
                .collect();
            lines.len() == 10
        })
        .await,
        "{} lines",
        lines.len()
    );
    let first: Value = serde_json::from_str(&lines[0]).expect("json line");
    assert_eq!(
        (first["model"].clone(), first["version"].clone(), first["request_id"].clone()),
        (json!("breast-cancer"), json!("2"), json!("req-0"))
    );
    assert_eq!(first["inputs"][0]["shape"], json!([1, 30]));
    assert_eq!(first["outputs"].as_array().expect("outputs").len(), 2);
    gw.shutdown().await;
}

#[tokio::test]
async fn delayed_labels_join_into_live_accuracy() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut labels = Vec::new();
    for i in 0..8 {
        let mut body = breast_cancer_rows(1);
        body["id"] = json!(format!("f{i}"));
        let (s, v) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
        assert_eq!(s, 200);
        labels.push(v["outputs"][0]["data"][0].as_i64().expect("label"));
    }
    // Six right, two wrong.
    for (i, l) in labels.iter().enumerate() {
        let truth = if i < 6 { *l } else { 1 - l };
        let (s, v) = post(
            &c,
            &url(&gw, "/v2/models/breast-cancer/feedback"),
            json!({"id": format!("f{i}"), "value": truth}).to_string(),
        )
        .await;
        assert_eq!((s, v["model_version"].clone()), (200, json!("2")), "{v}");
    }
    let (_, skew) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer/skew", None).await;
    let q = skew["quality"].as_array().expect("quality")[0].clone();
    assert_eq!(
        (q["version"].clone(), q["feedback"].clone(), q["accuracy"].clone()),
        (json!("2"), json!(8), json!(0.75))
    );
    let (s, v) =
        post(&c, &url(&gw, "/v2/models/breast-cancer/feedback"), json!({"id": "never-sent", "value": 1}).to_string())
            .await;
    assert_eq!(s, 404);
    assert!(v["error"].as_str().expect("error").contains("no answer with request id 'never-sent'"), "{v}");
    let (s, _) =
        post(&c, &url(&gw, "/v2/models/breast-cancer/feedback"), json!({"id": "f0", "value": "yes"}).to_string()).await;
    assert_eq!(s, 400);
    gw.shutdown().await;
}

//! Dynamic batching: concurrent single-row requests run as shared ONNX calls and each gets its own rows back.

mod common;

use common::*;
use serde_json::{Value, json};

/// (row, expected label, expected probabilities) from the golden examples of breast-cancer/1.
fn golden_rows() -> Vec<(Vec<Value>, Value, Vec<f64>)> {
    let m = manifest("breast-cancer", "1");
    let mut rows = Vec::new();
    for ex in m["golden"].as_array().expect("golden") {
        let data = ex["inputs"][0]["data"].as_array().expect("data");
        let labels = ex["outputs"].as_array().expect("o").iter().find(|o| o["name"] == "label").expect("label")["data"]
            .as_array()
            .expect("labels")
            .clone();
        let probs =
            ex["outputs"].as_array().expect("o").iter().find(|o| o["name"] == "probabilities").expect("p")["data"]
                .as_array()
                .expect("probs")
                .iter()
                .map(|v| v.as_f64().expect("f"))
                .collect::<Vec<_>>();
        for (i, label) in labels.iter().enumerate() {
            rows.push((data[i * 30..(i + 1) * 30].to_vec(), label.clone(), probs[i * 2..i * 2 + 2].to_vec()));
        }
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_requests_get_their_own_rows_back() {
    let mut cfg = config(&bundled_models());
    cfg.inference.threads = 1;
    cfg.batching.enabled = true;
    cfg.batching.max_batch_rows = 32;
    cfg.batching.max_queue_delay_us = 2000;
    let gw = start(cfg).await;
    let c = client();
    let rows = golden_rows();
    assert!(rows.len() >= 7);
    let u = url(&gw, "/v2/models/breast-cancer/versions/1/infer");
    let mut tasks = Vec::new();
    for i in 0..400 {
        let (row, label, probs) = rows[i % rows.len()].clone();
        let (c, u) = (c.clone(), u.clone());
        tasks.push(tokio::spawn(async move {
            let body = json!({"id": i.to_string(), "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": row}]});
            let (s, resp) = post(&c, &u, body.to_string()).await;
            assert_eq!(s, 200, "{resp}");
            assert_eq!(resp["id"], json!(i.to_string()));
            let out = |n: &str| resp["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == n).expect("out").clone();
            assert_eq!(out("label")["shape"], json!([1]));
            assert_eq!(out("label")["data"][0], label, "request {i} got another request's label");
            assert_eq!(out("probabilities")["shape"], json!([1, 2]));
            let got: Vec<f64> = out("probabilities")["data"].as_array().expect("p").iter().map(|v| v.as_f64().expect("f")).collect();
            for (g, w) in got.iter().zip(&probs) {
                assert!((g - w).abs() < 1e-4, "request {i}: {got:?} vs {probs:?}");
            }
        }));
    }
    for t in tasks {
        t.await.expect("request task");
    }
    // The calls really were shared: fewer ONNX calls than requests.
    let text = scrape(&gw).await;
    let metric = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l.contains(r#"model="breast-cancer",version="1""#))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    let (calls, rows_total) = (metric("gateway_batch_rows_count"), metric("gateway_batch_rows_sum"));
    assert_eq!(rows_total, 400.0);
    assert!(calls < 400.0, "{calls} calls for 400 requests: nothing was batched");
    gw.shutdown().await;
}

//! The Open Inference Protocol over real HTTP against a real gateway serving the bundled ONNX models.

mod common;

use common::*;
use serde_json::{Value, json};

#[tokio::test]
async fn health_metadata_and_readiness_endpoints() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    assert_eq!(get(&c, &url(&gw, "/v2/health/live")).await.0, 200);
    let (s, body) = get(&c, &url(&gw, "/v2/health/ready")).await;
    assert_eq!((s, &body["ready"]), (200, &json!(true)));
    let (s, body) = get(&c, &url(&gw, "/v2")).await;
    assert_eq!((s, body["name"].as_str()), (200, Some("gateway")));

    let (s, body) = get(&c, &url(&gw, "/v2/models/breast-cancer")).await;
    assert_eq!(s, 200);
    assert_eq!(body["versions"], json!(["1", "2", "3"]));
    assert_eq!(body["inputs"], json!([{"name": "input", "datatype": "FP32", "shape": [-1, 30]}]));
    assert_eq!(body["outputs"][0], json!({"name": "label", "datatype": "INT64", "shape": [-1]}));
    assert_eq!(body["outputs"][1], json!({"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}));

    let (s, body) = get(&c, &url(&gw, "/v2/models/diabetes/versions/1")).await;
    assert_eq!(s, 200);
    assert_eq!(body["inputs"][1], json!({"name": "sex", "datatype": "INT64", "shape": [-1, 1]}));

    assert_eq!(get(&c, &url(&gw, "/v2/models/breast-cancer/ready")).await.0, 200);
    assert_eq!(get(&c, &url(&gw, "/v2/models/breast-cancer/versions/1/ready")).await.0, 200);
    assert_eq!(get(&c, &url(&gw, "/v2/models/breast-cancer/versions/9/ready")).await.0, 404);
    let (s, body) = get(&c, &url(&gw, "/v2/models/nope")).await;
    assert_eq!(s, 404);
    assert_eq!(body["error"], json!("unknown model 'nope'"));
    let (s, body) = get(&c, &url(&gw, "/v2/nothing/here")).await;
    assert_eq!(s, 404);
    assert!(body["error"].as_str().is_some());
    gw.shutdown().await;
}

fn close(got: &Value, want: &Value, tol: f64) -> bool {
    let (g, w) = (got.as_array().expect("array"), want.as_array().expect("array"));
    g.len() == w.len()
        && g.iter().zip(w).all(|(a, b)| {
            let (a, b) = (a.as_f64().expect("num"), b.as_f64().expect("num"));
            (a - b).abs() <= tol * (1.0 + b.abs())
        })
}

/// The caller's `x-request-id` comes back over both protocols. Without one, an id is made up only where a log or a
/// trace records the request (tracing.rs checks that case): this gateway records nothing, so it answers with none.
#[tokio::test]
async fn a_request_id_comes_back_when_sent_and_none_is_made_up_where_nothing_records_it() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    for sent in [None, Some("req-7")] {
        let mut req = c.post(url(&gw, "/v2/models/breast-cancer/infer")).body(breast_cancer_rows(1).to_string());
        if let Some(id) = sent {
            req = req.header("x-request-id", id);
        }
        let r = req.send().await.expect("sent");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers().get("x-request-id").and_then(|v| v.to_str().ok()), sent, "HTTP");

        let mut grpc = gateway::protocol::pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(
            format!("http://{}", gw.grpc_addr),
        )
        .await
        .expect("grpc");
        let mut req = tonic::Request::new(breast_cancer_grpc_request());
        if let Some(id) = sent {
            req.metadata_mut().insert("x-request-id", id.parse().expect("ascii"));
        }
        let answer = grpc.model_infer(req).await.expect("grpc infer");
        assert_eq!(answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()), sent, "gRPC");
    }
    gw.shutdown().await;
}

/// Every golden example of every bundled version, sent over HTTP, single row and batch, pinned to its version.
#[tokio::test]
async fn predictions_match_the_golden_outputs() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut checked = 0;
    for (model, version) in [("breast-cancer", "1"), ("breast-cancer", "2"), ("diabetes", "1")] {
        let m = manifest(model, version);
        let specs = m["inputs"].as_array().expect("inputs");
        for ex in m["golden"].as_array().expect("golden") {
            let inputs: Vec<Value> = ex["inputs"]
                .as_array()
                .expect("inputs")
                .iter()
                .map(|t| {
                    let dt = specs.iter().find(|s| s["name"] == t["name"]).expect("spec")["datatype"].clone();
                    json!({"name": t["name"], "shape": t["shape"], "datatype": dt, "data": t["data"]})
                })
                .collect();
            let body = json!({"id": format!("g{checked}"), "inputs": inputs});
            let (s, resp) =
                post(&c, &url(&gw, &format!("/v2/models/{model}/versions/{version}/infer")), body.to_string()).await;
            assert_eq!(s, 200, "{resp}");
            assert_eq!(resp["model_name"], json!(model));
            assert_eq!(resp["model_version"], json!(version));
            assert_eq!(resp["id"], json!(format!("g{checked}")));
            for want in ex["outputs"].as_array().expect("outputs") {
                let got = resp["outputs"].as_array().expect("outputs").iter().find(|o| o["name"] == want["name"]);
                let got = got.unwrap_or_else(|| panic!("output {} missing", want["name"]));
                assert_eq!(got["shape"], want["shape"]);
                let tol = ex["tolerance"].as_f64().expect("tolerance");
                assert!(close(&got["data"], &want["data"], tol), "{model}/{version}: {got} vs {want}");
            }
            checked += 1;
        }
    }
    assert!(checked >= 7, "all golden examples ran: {checked}");
    gw.shutdown().await;
}

#[tokio::test]
async fn default_version_output_selection_and_nested_data() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut body = breast_cancer_rows(3);
    // Nested rows instead of flat data, and only one output requested.
    let flat = body["inputs"][0]["data"].as_array().expect("data").clone();
    body["inputs"][0]["data"] = Value::Array(flat.chunks(30).map(|r| Value::Array(r.to_vec())).collect());
    body["outputs"] = json!([{"name": "probabilities"}]);
    let r = c.post(url(&gw, "/v2/models/breast-cancer/infer")).body(body.to_string()).send().await.expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-model-version"], "2", "highest ready version serves by default");
    let resp: Value = r.json().await.expect("json");
    let outputs = resp["outputs"].as_array().expect("outputs");
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0]["name"], json!("probabilities"));
    assert_eq!(outputs[0]["shape"], json!([3, 2]));
    assert!(resp.get("id").is_none(), "no id in, no id out");
    gw.shutdown().await;
}

/// Every client mistake gets a 4xx whose message names what is wrong, and the server keeps serving.
#[tokio::test]
async fn bad_inputs_get_clear_4xx_errors() {
    let mut cfg = config(&bundled_models());
    cfg.server.max_body_bytes = 64 * 1024;
    cfg.models.max_batch_rows = 100;
    let gw = start(cfg).await;
    let c = client();
    let infer = url(&gw, "/v2/models/breast-cancer/infer");
    let good = breast_cancer_rows(1);
    let with = |f: &dyn Fn(&mut Value)| {
        let mut b = good.clone();
        f(&mut b);
        b.to_string()
    };
    let cases: Vec<(String, String, u16, &str)> = vec![
        (infer.clone(), "{not json".into(), 400, "invalid inference request"),
        (infer.clone(), "".into(), 400, "body is empty"),
        (
            infer.clone(),
            with(&|b| b["inputs"][0].as_object_mut().expect("obj").remove("datatype").map(drop).unwrap_or(())),
            400,
            "missing field `datatype`",
        ),
        (
            infer.clone(),
            with(&|b| b.as_object_mut().expect("obj").remove("inputs").map(drop).unwrap_or(())),
            400,
            "missing field `inputs`",
        ),
        (infer.clone(), with(&|b| b["inputs"][0]["datatype"] = json!("FLOAT32")), 400, "unknown datatype 'FLOAT32'"),
        (
            infer.clone(),
            with(&|b| b["inputs"][0]["datatype"] = json!("FP64")),
            400,
            "datatype FP64 does not match the model's FP32",
        ),
        (
            infer.clone(),
            with(&|b| {
                b["inputs"][0]["shape"] = json!([2, 15]);
            }),
            400,
            "shape [2, 15] does not match the model's [-1, 30]",
        ),
        (infer.clone(), with(&|b| b["inputs"][0]["shape"] = json!([2, 30])), 400, "needs 60 values, 'data' has 30"),
        (infer.clone(), with(&|b| b["inputs"][0]["data"][3] = json!("abc")), 400, "input 'input': 'data'"),
        (infer.clone(), with(&|b| b["inputs"][0]["data"][3] = json!(null)), 400, "input 'input': 'data'"),
        (infer.clone(), with(&|b| b["inputs"][0]["name"] = json!("x")), 400, "unknown input 'x'"),
        (infer.clone(), with(&|b| b["outputs"] = json!([{"name": "score"}])), 400, "unknown output 'score'"),
        (infer.clone(), breast_cancer_rows(101).to_string(), 400, "exceeds the limit of 100 rows"),
        (infer.clone(), "x".repeat(100 * 1024), 413, "exceeds the limit of 65536 bytes"),
        (url(&gw, "/v2/models/nope/infer"), good.to_string(), 404, "unknown model 'nope'"),
        (url(&gw, "/v2/models/breast-cancer/versions/7/infer"), good.to_string(), 404, "unknown version '7'"),
        (url(&gw, "/v2/models/breast-cancer/versions/abc/infer"), good.to_string(), 404, "unknown version 'abc'"),
        (
            url(&gw, "/v2/models/diabetes/infer"),
            json!({"inputs": [{"name": "features", "shape": [1, 9], "datatype": "FP64", "data": [1,2,3,4,5,6,7,8,9]}]})
                .to_string(),
            400,
            "missing input 'sex'",
        ),
        (
            url(&gw, "/v2/models/diabetes/infer"),
            json!({"inputs": [
                {"name": "features", "shape": [2, 9], "datatype": "FP64", "data": vec![1.0; 18]},
                {"name": "sex", "shape": [1, 1], "datatype": "INT64", "data": [1]}]})
            .to_string(),
            400,
            "all inputs share the batch dimension",
        ),
        (
            url(&gw, "/v2/models/diabetes/infer"),
            json!({"inputs": [
                {"name": "features", "shape": [1, 9], "datatype": "FP64", "data": vec![1.0; 9]},
                {"name": "sex", "shape": [1, 1], "datatype": "INT64", "data": [1.5]}]})
            .to_string(),
            400,
            "not a valid INT64",
        ),
    ];
    for (u, body, status, needle) in cases {
        let (s, resp) = post(&c, &u, body).await;
        let msg = resp["error"].as_str().unwrap_or_else(|| panic!("JSON error body for {needle}: {resp}"));
        assert_eq!(s, status, "{needle}: {msg}");
        assert!(msg.contains(needle), "expected '{needle}' in '{msg}'");
    }
    // Still serving after all of that.
    assert_eq!(post(&c, &infer, good.to_string()).await.0, 200);
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_model_version_and_code() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    for _ in 0..3 {
        let (s, _) =
            post(&c, &url(&gw, "/v2/models/breast-cancer/versions/1/infer"), breast_cancer_rows(1).to_string()).await;
        assert_eq!(s, 200);
    }
    post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), "{").await;
    post(&c, &url(&gw, "/v2/models/who/infer"), "{").await;
    let text = scrape(&gw).await;
    let has = |line: &str| text.lines().any(|l| l == line);
    assert!(has(r#"gateway_requests_total{code="200",model="breast-cancer",protocol="http",version="1"} 3"#), "{text}");
    assert!(has(r#"gateway_requests_total{code="400",model="breast-cancer",protocol="http",version=""} 1"#), "{text}");
    assert!(has(r#"gateway_requests_total{code="404",model="_unknown",protocol="http",version=""} 1"#), "{text}");
    assert!(has(r#"gateway_model_ready{model="diabetes",version="1"} 1"#), "{text}");
    assert!(text.contains(r#"gateway_inference_duration_seconds_count{model="breast-cancer",version="1"} 3"#));
    assert!(text.contains("gateway_request_duration_seconds_bucket"));
    assert!(text.contains("gateway_inference_queue_depth"));
    gw.shutdown().await;
}

/// A request cut off by the admission timeout is answered 504 and still counted, so the error-rate alerts see it.
#[tokio::test]
async fn a_timed_out_request_is_answered_504_and_counted() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    let slow = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breast-cancer/slow/model.onnx");
    std::fs::copy(slow, repo.join("breast-cancer/1/model.onnx")).expect("slow model");
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 0;
    cfg.server.request_timeout_ms = 1;
    let gw = start(cfg).await;
    let c = client();
    let (s, body) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 504, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("timed out after 1 ms")), "{body}");
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains(r#"gateway_requests_total{code="504",model="breast-cancer",protocol="http",version=""} 1"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn long_bodies_decoded_off_the_async_workers_answer_as_on_them() {
    // The same requests to a gateway that decodes every body on its async workers and to one that decodes any
    // body over 1 KiB on a blocking thread: the answers and the errors must not tell them apart.
    let mut on_worker = config(&bundled_models());
    on_worker.inference.decode_offload_bytes = 0;
    let mut offloaded = config(&bundled_models());
    offloaded.inference.decode_offload_bytes = 1024;
    let (a, b) = (start(on_worker).await, start(offloaded).await);
    let c = client();
    let infer = "/v2/models/breast-cancer/versions/1/infer";

    let long = breast_cancer_rows(64).to_string();
    assert!(long.len() > 1024, "the request must be past the threshold: {} bytes", long.len());
    let (sa, ra) = post(&c, &url(&a, infer), long.clone()).await;
    let (sb, rb) = post(&c, &url(&b, infer), long.clone()).await;
    assert_eq!((sa, sb), (200, 200), "{ra} / {rb}");
    assert_eq!(ra["outputs"], rb["outputs"]);
    assert_eq!(rb["outputs"][0]["shape"], json!([64]));

    // A decoding error from the blocking thread is the same 400, naming the same field.
    let mut bad = breast_cancer_rows(64);
    bad["inputs"][0]["datatype"] = json!("FP99");
    let (sa, ea) = post(&c, &url(&a, infer), bad.to_string()).await;
    let (sb, eb) = post(&c, &url(&b, infer), bad.to_string()).await;
    assert_eq!((sa, sb), (400, 400));
    assert_eq!(ea, eb);
    assert!(eb["error"].as_str().is_some_and(|e| e.contains("FP99")), "{eb}");

    // More long bodies at once than there are decoding permits (one per CPU): they wait, and all are answered.
    let mut many = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let (c, u, body) = (c.clone(), url(&b, infer), long.clone());
        many.spawn(async move { post(&c, &u, body).await });
    }
    while let Some(answer) = many.join_next().await {
        let (s, r) = answer.expect("task");
        assert_eq!((s, &r["outputs"]), (200, &ra["outputs"]));
    }
}

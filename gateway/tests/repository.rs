//! A repository with broken versions: each is refused with its reason visible, and everything else serves.

mod common;

use common::*;
use serde_json::{Value, json};

fn edit_manifest(dir: &std::path::Path, f: impl Fn(&mut Value)) {
    let p = dir.join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut m);
    std::fs::write(&p, m.to_string()).expect("write");
}

#[tokio::test]
async fn corrupt_and_inconsistent_versions_are_refused_while_others_serve() {
    let repo = tempfile::tempdir().expect("tempdir");
    let root = repo.path();
    copy_version("breast-cancer", "1", root, "1");
    // 2: the ONNX file is garbage.
    copy_version("breast-cancer", "1", root, "2");
    std::fs::write(root.join("breast-cancer/2/model.onnx"), b"definitely not protobuf").expect("write");
    // 3: the manifest is truncated JSON.
    copy_version("breast-cancer", "1", root, "3");
    let m = std::fs::read_to_string(root.join("breast-cancer/3/manifest.json")).expect("read");
    std::fs::write(root.join("breast-cancer/3/manifest.json"), &m[..m.len() / 2]).expect("write");
    // 4: the manifest's datatype disagrees with the ONNX graph.
    copy_version("breast-cancer", "1", root, "4");
    edit_manifest(&root.join("breast-cancer/4"), |m| m["inputs"][0]["datatype"] = json!("FP64"));
    // 5: the golden example's expected label is wrong.
    copy_version("breast-cancer", "1", root, "5");
    edit_manifest(&root.join("breast-cancer/5"), |m| {
        let d = &mut m["golden"][0]["outputs"][0]["data"][0];
        *d = json!(1 - d.as_i64().expect("label"));
    });
    // 6: no model.onnx at all.
    copy_version("breast-cancer", "1", root, "6");
    std::fs::remove_file(root.join("breast-cancer/6/model.onnx")).expect("rm");
    // A model whose only version is broken.
    copy_version("diabetes", "1", root, "1");
    edit_manifest(&root.join("diabetes/1"), |m| m["outputs"][0]["shape"] = json!([-1, 3]));

    let mut cfg = config(root);
    cfg.server.strict_readiness = false;
    let gw = start(cfg).await;
    let c = client();

    let (s, meta) = get(&c, &url(&gw, "/v2/models/breast-cancer")).await;
    assert_eq!(s, 200);
    assert_eq!(meta["versions"], json!(["1"]), "only the good version is ready");
    let reason = |v: &str| -> String {
        meta["states"].as_array().expect("states").iter().find(|s| s["version"] == json!(v)).expect("state")["reason"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert!(reason("2").contains("ONNX Runtime rejected"), "{}", reason("2"));
    assert!(reason("3").contains("invalid"), "{}", reason("3"));
    assert!(reason("4").contains("manifest says FP64, the ONNX graph has FP32"), "{}", reason("4"));
    assert!(reason("5").contains("golden examples failed"), "{}", reason("5"));
    assert!(reason("6").contains("cannot read"), "{}", reason("6"));

    // A failed version is unavailable with its reason; the good one and the default serve.
    let (s, body) =
        post(&c, &url(&gw, "/v2/models/breast-cancer/versions/5/infer"), breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 503);
    assert!(body["error"].as_str().expect("error").contains("golden examples failed"), "{body}");
    let (s, body) = get(&c, &url(&gw, "/v2/models/breast-cancer/versions/4/ready")).await;
    assert_eq!(s, 503);
    assert!(body["error"].as_str().expect("error").contains("FP64"));
    let (s, body) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(2).to_string()).await;
    assert_eq!((s, &body["model_version"]), (200, &json!("1")));

    let (s, body) = get(&c, &url(&gw, "/v2/models/diabetes")).await;
    assert_eq!(s, 503, "{body}");
    assert!(body["error"].as_str().expect("error").contains("no version of this model is ready"));
    // Lenient readiness: one model is ready, so the server is.
    assert_eq!(get(&c, &url(&gw, "/v2/health/ready")).await.0, 200);
    let metrics = scrape(&gw).await;
    assert!(metrics.contains(r#"gateway_model_ready{model="breast-cancer",version="5"} 0"#));
    gw.shutdown().await;

    // Strict readiness (the default): a model with no ready version keeps the server unready.
    let gw = start(config(root)).await;
    let (s, body) = get(&c, &url(&gw, "/v2/health/ready")).await;
    assert_eq!((s, &body["ready"]), (503, &json!(false)));
    gw.shutdown().await;
}

#[tokio::test]
async fn missing_library_and_bad_config_fail_start_with_clear_errors() {
    let mut cfg = config(&bundled_models());
    cfg.server.http_addr = "not-an-address".into();
    cfg.inference.queue_capacity = 0;
    let err = gateway::Gateway::start(&cfg).await.expect_err("invalid config").to_string();
    assert!(err.contains("server.http_addr") && err.contains("inference.queue_capacity"), "{err}");
}

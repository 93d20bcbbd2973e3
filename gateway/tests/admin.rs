//! The admin API's guard rails: authentication, path confinement, refusals that name the reason; and the CLI.

mod common;

use common::*;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn calls_without_the_right_token_are_refused() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let u = admin_url(&gw, "/admin/models");
    let r = c.get(&u).send().await.expect("sent");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("Authorization"));
    assert_eq!(c.get(&u).bearer_auth("wrong").send().await.expect("sent").status(), 401);
    assert_eq!(c.get(&u).bearer_auth(TOKEN).send().await.expect("sent").status(), 200);
    gw.shutdown().await;

    // No token configured at all: every call refused, saying why.
    let mut cfg = config(&bundled_models());
    cfg.admin.token_file = None;
    cfg.admin.token_env = "GATEWAY_TEST_TOKEN_THAT_IS_NEVER_SET".into();
    let gw = start(cfg).await;
    let r = c.get(admin_url(&gw, "/admin/models")).bearer_auth("anything").send().await.expect("sent");
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await.expect("json");
    assert!(body["error"].as_str().expect("error").contains("disabled"), "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_refused_with_their_reason() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    let cases: Vec<(Method, String, Option<serde_json::Value>, u16, &str)> = vec![
        (Method::POST, "/admin/models/..%2F..%2Fetc/versions/1/load".into(), None, 400, "single directory name"),
        (Method::POST, "/admin/models/breast-cancer/versions/..%2F1/load".into(), None, 400, "positive integer"),
        (Method::POST, format!("{m}/versions/9/load"), None, 404, "unknown version '9'"),
        (Method::POST, "/admin/models/nope/versions/1/load".into(), None, 404, "unknown model 'nope'"),
        (Method::POST, "/admin/models/x..%2fy/versions/1/load".into(), None, 400, "single directory name"),
        (Method::POST, format!("{m}/versions/1/load"), None, 409, "already loaded"),
        (Method::POST, format!("{m}/versions/2/unload"), None, 409, "stable version"),
        (Method::POST, format!("{m}/promote"), None, 409, "has no canary"),
        (Method::POST, format!("{m}/rollback"), None, 409, "has no canary"),
        (Method::PUT, format!("{m}/canary/weight"), Some(json!({"weight": 5})), 409, "has no canary"),
        (Method::POST, format!("{m}/canary"), Some(json!({"version": 2, "weight": 5})), 409, "already the stable"),
        (Method::POST, format!("{m}/canary"), Some(json!({"version": 7, "weight": 5})), 404, "unknown version '7'"),
        (Method::POST, format!("{m}/canary"), Some(json!({"version": 1, "weight": 150})), 400, "from 0 to 100"),
        (Method::POST, format!("{m}/canary"), Some(json!({"weight": 5})), 400, "missing field `version`"),
        (Method::GET, "/admin/models/nope".into(), None, 404, "unknown model 'nope'"),
    ];
    // None of those created anything: no phantom model, readiness intact, inference on the name still 404.
    for (method, path, body, status, needle) in cases {
        let (s, v) = admin(&c, &gw, method.clone(), &path, body).await;
        let msg = v["error"].as_str().unwrap_or_default();
        assert_eq!(s, status, "{method} {path}: {v}");
        assert!(msg.contains(needle), "{method} {path}: expected '{needle}' in '{msg}'");
    }
    let (_, list) = admin(&c, &gw, Method::GET, "/admin/models", None).await;
    let names: Vec<&str> = list.as_array().expect("models").iter().filter_map(|m| m["name"].as_str()).collect();
    assert_eq!(names, ["breast-cancer", "breast-cancer-fp16", "diabetes", "digits", "wine"], "no phantom model");
    assert_eq!(get(&c, &url(&gw, "/v2/health/ready")).await.0, 200);
    assert_eq!(post(&c, &url(&gw, "/v2/models/nope/infer"), breast_cancer_rows(1).to_string()).await.0, 404);
    assert!(!scrape(&gw).await.contains("model=\"nope\""), "no metric labels for it");
    // Canary, then unload it: refused while it takes traffic; after a rollback, fine.
    assert_eq!(
        admin(&c, &gw, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await.0,
        200
    );
    assert_eq!(admin(&c, &gw, Method::POST, &format!("{m}/versions/1/unload"), None).await.0, 409);
    let (s, v) = admin(&c, &gw, Method::POST, &format!("{m}/rollback"), Some(json!({"reason": "test"}))).await;
    assert_eq!((s, v["canary"].clone()), (200, serde_json::Value::Null));
    let (s, v) = admin(&c, &gw, Method::POST, &format!("{m}/versions/1/unload"), None).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        post(&c, &url(&gw, "/v2/models/breast-cancer/versions/1/infer"), breast_cancer_rows(1).to_string()).await.0,
        404
    );
    let (s, v) = admin(&c, &gw, Method::POST, &format!("{m}/versions/1/load"), None).await;
    assert_eq!(s, 200, "{v}");
    let (_, events) = admin(&c, &gw, Method::GET, &format!("{m}/events"), None).await;
    let kinds: Vec<&str> = events.as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    for k in ["canary_started", "rolled_back", "version_unloaded", "version_loaded"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let metrics = scrape(&gw).await;
    assert!(metrics.contains(r#"gateway_rollbacks_total{model="breast-cancer",reason="manual"} 1"#), "{metrics}");
    assert!(metrics.contains(r#"gateway_model_stable{model="breast-cancer",version="2"} 1"#));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_cli_calls_the_admin_api() {
    let gw = start(config(&bundled_models())).await;
    let bin = env!("CARGO_BIN_EXE_gateway");
    let base = format!("http://{}", gw.admin_addr);
    let run = move |args: &[&str]| {
        std::process::Command::new(bin)
            .args(["admin", "--url", &base])
            .args(args)
            .env("GATEWAY_ADMIN_TOKEN", TOKEN)
            .output()
            .expect("cli runs")
    };
    let out = tokio::task::spawn_blocking(move || {
        (
            run(&["canary", "breast-cancer", "1", "2.5"]),
            run(&["show", "breast-cancer"]),
            run(&["promote", "diabetes"]),
            run(&["watch", "--count", "2", "--interval", "0.2"]),
            run(&["watch", "nope", "--count", "1"]),
        )
    })
    .await
    .expect("join");
    assert!(out.0.status.success(), "{}", String::from_utf8_lossy(&out.0.stderr));
    let shown: serde_json::Value = serde_json::from_slice(&out.1.stdout).expect("json");
    assert_eq!(shown["canary"], json!({"version": "1", "weight_percent": 2.5}));
    assert!(!out.2.status.success());
    assert!(String::from_utf8_lossy(&out.2.stderr).contains("has no canary"));
    // Two frames of the terminal view (piped: one after the other), with the canary just set.
    let frames = String::from_utf8_lossy(&out.3.stdout);
    assert!(out.3.status.success(), "{}", String::from_utf8_lossy(&out.3.stderr));
    assert_eq!(frames.matches("gateway models at").count(), 2, "{frames}");
    assert!(frames.contains("breast-cancer  ready=true  stable=2  canary=1 at 2.5%"), "{frames}");
    assert!(!out.4.status.success() && String::from_utf8_lossy(&out.4.stderr).contains("unknown model 'nope'"));
    gw.shutdown().await;
}

/// Clients that always send `Content-Type: application/json` (many HTTP libraries do) may send no body where the
/// body is optional: it is the empty command. A body that is not JSON, or too large, is refused in the API's shape.
#[tokio::test]
async fn optional_bodies_may_be_empty_whatever_the_content_type() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    let send = |method: Method, path: String, body: &'static str| {
        let req = c
            .request(method, admin_url(&gw, &path))
            .bearer_auth(TOKEN)
            .header("content-type", "application/json")
            .body(body);
        async move {
            let r = req.send().await.expect("sent");
            let status = r.status().as_u16();
            (status, r.json::<serde_json::Value>().await.expect("json body"))
        }
    };
    let canary = json!({"version": 1, "weight": 5}).to_string().leak();
    assert_eq!(send(Method::POST, format!("{m}/canary"), canary).await.0, 200);
    let (s, v) = send(Method::POST, format!("{m}/rollback"), "").await;
    assert_eq!(s, 200, "empty rollback body: {v}");
    assert_eq!(send(Method::POST, format!("{m}/canary"), canary).await.0, 200);
    let (s, v) = send(Method::POST, format!("{m}/promote"), "").await;
    assert_eq!((s, v["stable"].as_str()), (200, Some("1")), "empty promote body: {v}");
    let rollout = json!({"version": 2, "policy": {"interval_secs": 3600, "window_secs": 3600}}).to_string().leak();
    let (s, v) = send(Method::POST, format!("{m}/rollout"), rollout).await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = send(Method::POST, format!("{m}/rollout/pause"), "").await;
    assert_eq!((s, v["phase"].as_str()), (200, Some("paused")), "empty command body: {v}");
    let (s, v) = send(Method::POST, format!("{m}/rollout/abort"), "  ").await;
    assert_eq!((s, v["phase"].as_str()), (200, Some("aborted")), "blank command body: {v}");
    let (s, v) = send(Method::POST, format!("{m}/rollback"), "{not json").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().expect("error").contains("invalid request body"), "{v}");
    let (s, v) = send(Method::POST, format!("{m}/canary"), "").await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().expect("error").contains("missing field `version`"), "{v}");
    let big = format!("{{\"reason\": \"{}\"}}", "x".repeat(100 * 1024)).leak();
    let (s, v) = send(Method::POST, format!("{m}/rollback"), big).await;
    assert_eq!(s, 413, "{v}");
    assert!(v["error"].as_str().expect("error").contains("exceeds the limit"), "{v}");
    gw.shutdown().await;
}

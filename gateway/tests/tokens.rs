//! Scoped admin tokens against a real gateway: a viewer token may read everything and change nothing, on every
//! mutating route of the admin API (the route table is read from the source, so a new route cannot be missed) and
//! on the repository extension's load/unload; an operator's changes are journaled under its token's name.

mod common;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

const VIEWER: &str = "viewer-secret-token";
const OPERATOR: &str = "operator-secret-token";

/// Every (method, path) the admin router declares, from `.route("path", get(..).post(..))` in its source.
fn admin_routes() -> Vec<(Method, String)> {
    let src = std::fs::read_to_string(workspace().join("gateway/src/api/admin/mod.rs")).expect("admin source");
    let mut routes = Vec::new();
    for line in src.lines().map(str::trim).filter(|l| l.starts_with(".route(\"")) {
        let path = line.trim_start_matches(".route(\"").split('"').next().expect("path").to_string();
        let rest = &line[line.find("\",").expect("handler") + 2..];
        for (name, method) in
            [("get(", Method::GET), ("post(", Method::POST), ("put(", Method::PUT), ("delete(", Method::DELETE)]
        {
            let found = rest.match_indices(name).any(|(i, _)| {
                i == 0 || !rest.as_bytes()[i - 1].is_ascii_alphanumeric() && rest.as_bytes()[i - 1] != b'_'
            });
            if found {
                routes.push((method, path.clone()));
            }
        }
    }
    routes
}

/// The models view without the versions' ages, which move by themselves.
fn without_age(mut v: Value) -> Value {
    for m in v.as_array_mut().into_iter().flatten() {
        for version in m["versions"].as_array_mut().into_iter().flatten() {
            version.as_object_mut().map(|o| o.remove("age_days"));
        }
    }
    v
}

async fn call(
    c: &reqwest::Client,
    gw: &gateway::Gateway,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, admin_url(gw, path)).bearer_auth(token);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("sent");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_reads_everything_and_changes_nothing() {
    let mut cfg = config(&bundled_models());
    let dir = scratch_dir();
    let file = dir.join("tokens.toml");
    std::fs::write(
        &file,
        format!(
            "[[tokens]]\nname = \"grafana\"\nrole = \"viewer\"\ntoken = \"{VIEWER}\"\n\n\
             [[tokens]]\nname = \"oncall\"\nrole = \"operator\"\ntoken = \"{OPERATOR}\"\n"
        ),
    )
    .expect("tokens file");
    cfg.admin.tokens_file = Some(file);
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg).await;
    let c = client();

    let routes = admin_routes();
    let mutating: Vec<_> = routes.iter().filter(|(m, _)| *m != Method::GET).collect();
    assert!(mutating.len() >= 11, "the route table was not read: {routes:?}");
    let (_, before) = call(&c, &gw, VIEWER, Method::GET, "/admin/models", None).await;
    let commands = ["pause", "resume", "abort", "skip", "approve"];
    let concrete = mutating.iter().flat_map(|(m, p)| {
        let p = p.replace("{model}", "breast-cancer").replace("{version}", "1");
        let paths: Vec<String> = if p.contains("{command}") {
            commands.iter().map(|c| p.replace("{command}", c)).collect()
        } else {
            vec![p]
        };
        paths.into_iter().map(move |p| (m.clone(), p))
    });
    for (method, path) in concrete {
        let body = json!({"version": 1, "weight": 5, "percent": 10, "reason": "viewer tries"});
        let (s, v) = call(&c, &gw, VIEWER, method.clone(), &path, Some(body)).await;
        assert_eq!(s, 403, "{method} {path}: {v}");
        assert!(
            v["error"].as_str().is_some_and(|e| e.contains("'grafana' has the viewer role")),
            "{method} {path}: {v}"
        );
    }
    let (_, after) = call(&c, &gw, VIEWER, Method::GET, "/admin/models", None).await;
    assert_eq!(without_age(before), without_age(after), "a viewer changed something");
    // Every read works for the viewer.
    for (_, path) in routes.iter().filter(|(m, _)| *m == Method::GET) {
        let path = path.replace("{model}", "breast-cancer");
        let (s, v) = call(&c, &gw, VIEWER, Method::GET, &path, None).await;
        assert_eq!(s, 200, "GET {path}: {v}");
    }
    // The repository extension on the inference port: viewers may not load or unload either.
    for action in ["load", "unload"] {
        let r = c
            .post(url(&gw, &format!("/v2/repository/models/diabetes/{action}")))
            .bearer_auth(VIEWER)
            .send()
            .await
            .expect("sent");
        assert_eq!(r.status().as_u16(), 403, "{action}");
    }
    assert_eq!(get(&c, &url(&gw, "/v2/models/diabetes/ready")).await.0, 200);

    // An operator's change is journaled under its token's name; the gateway's own events name no one.
    let (s, v) = call(
        &c,
        &gw,
        OPERATOR,
        Method::POST,
        "/admin/models/breast-cancer/canary",
        Some(json!({"version": 1, "weight": 5})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = call(
        &c,
        &gw,
        OPERATOR,
        Method::POST,
        "/admin/models/breast-cancer/rollback",
        Some(json!({"reason": "testing"})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (_, events) = call(&c, &gw, VIEWER, Method::GET, "/admin/models/breast-cancer/events", None).await;
    let events = events.as_array().expect("events");
    for kind in ["canary_started", "rolled_back"] {
        let e = events.iter().rev().find(|e| e["kind"] == kind).unwrap_or_else(|| panic!("{kind} in {events:?}"));
        assert_eq!(e["by"], "oncall", "{e}");
    }
    assert!(events.iter().filter(|e| e["kind"] == "version_loaded").all(|e| e.get("by").is_none()));
    gw.shutdown().await;
}

/// Optional inference API keys and declared consumers: without a key or with a wrong one a call gets 401 /
/// UNAUTHENTICATED and is counted; answered calls are counted per consumer (the key's name) and version, and the
/// admin view of the model lists who called it. Without keys, a declared consumer header names the caller and every
/// undeclared name is `other`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inference_keys_and_declared_consumers() {
    use gateway::protocol::pb;
    use pb::grpc_inference_service_client::GrpcInferenceServiceClient;

    let dir = scratch_dir();
    let keys = dir.join("keys.toml");
    std::fs::write(
        &keys,
        "[[keys]]\nname = \"checkout\"\nkey = \"ck-123\"\n[[keys]]\nname = \"fraud\"\nkey = \"fr-456\"\n",
    )
    .expect("keys file");
    let mut cfg = config(&bundled_models());
    cfg.clients.keys_file = Some(keys);
    let gw = start(cfg).await;
    let c = client();
    let infer = url(&gw, "/v2/models/breast-cancer/infer");
    let body = breast_cancer_rows(1).to_string();
    let r = c.post(&infer).body(body.clone()).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.expect("body").contains("missing API key"));
    let r = c.post(&infer).bearer_auth("nope").body(body.clone()).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 401);
    let r = c.post(&infer).bearer_auth("ck-123").body(body.clone()).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 200);

    let mut grpc = GrpcInferenceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.expect("grpc");
    let request = || tonic::Request::new(breast_cancer_grpc_request());
    let e = grpc.model_infer(request()).await.expect_err("no key");
    assert_eq!(e.code(), tonic::Code::Unauthenticated, "{e}");
    let mut with_key = request();
    with_key.metadata_mut().insert("authorization", "Bearer fr-456".parse().expect("ascii"));
    grpc.model_infer(with_key).await.expect("with the key");

    let page = scrape(&gw).await;
    for line in [
        "gateway_inference_unauthenticated_total{protocol=\"http\",reason=\"missing\"} 1",
        "gateway_inference_unauthenticated_total{protocol=\"http\",reason=\"wrong\"} 1",
        "gateway_inference_unauthenticated_total{protocol=\"grpc\",reason=\"missing\"} 1",
        "gateway_consumer_requests_total{consumer=\"checkout\",model=\"breast-cancer\",version=\"2\"} 1",
        "gateway_consumer_requests_total{consumer=\"fraud\",model=\"breast-cancer\",version=\"2\"} 1",
    ] {
        assert!(page.contains(line), "{line} not in the metrics");
    }
    let (_, shown) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer", None).await;
    let mut names: Vec<&str> =
        shown["consumers"].as_array().expect("consumers").iter().filter_map(|c| c["consumer"].as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["checkout", "fraud"], "{shown}");
    assert_eq!(shown["consumers"][0]["versions"]["2"], 1, "{shown}");
    gw.shutdown().await;

    // Keys off, consumers declared: the header names the caller; undeclared names count as `other`.
    let mut cfg = config(&bundled_models());
    cfg.clients.consumers = vec!["batch-job".into()];
    let gw = start(cfg).await;
    let infer = url(&gw, "/v2/models/breast-cancer/infer");
    for who in ["batch-job", "batch-job", "someone-new"] {
        let r = c.post(&infer).header("x-consumer", who).body(body.clone()).send().await.expect("sent");
        assert_eq!(r.status().as_u16(), 200);
    }
    let page = scrape(&gw).await;
    assert!(
        page.contains(
            "gateway_consumer_requests_total{consumer=\"batch-job\",model=\"breast-cancer\",version=\"2\"} 2"
        )
    );
    assert!(
        page.contains("gateway_consumer_requests_total{consumer=\"other\",model=\"breast-cancer\",version=\"2\"} 1")
    );
    assert!(!page.contains("someone-new"), "undeclared names never become labels");
    gw.shutdown().await;
}

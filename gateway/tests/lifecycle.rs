//! Model lifecycle over real HTTP: canary split, pins and sticky keys; swaps under load lose nothing; state
//! survives restarts; new versions are picked up without taking traffic.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn infer_version(c: &reqwest::Client, u: &str, headers: &[(&str, &str)]) -> String {
    let mut r = c.post(u).body(breast_cancer_rows(1).to_string());
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    let r = r.send().await.expect("sent");
    assert_eq!(r.status(), 200);
    let header = r.headers()["x-model-version"].to_str().expect("ascii").to_string();
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["model_version"], json!(header), "header and body name the same version");
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_split_pins_and_sticky_keys() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let (s, v) =
        admin(&c, &gw, Method::POST, "/admin/models/breast-cancer/canary", Some(json!({"version": "1", "weight": 30})))
            .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["stable"].clone(), v["canary"]["version"].clone(), v["canary"]["weight_percent"].clone()),
        (json!("2"), json!("1"), json!(30.0))
    );
    let u = url(&gw, "/v2/models/breast-cancer/infer");

    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..1000 {
        *counts.entry(infer_version(&c, &u, &[]).await).or_default() += 1;
    }
    let canary = f64::from(counts.get("1").copied().unwrap_or(0));
    // 30 % of 1000: standard deviation ~14.5; five of them either side.
    assert!((228.0..=372.0).contains(&canary), "{counts:?}");

    // Pins always win, URL before header.
    for _ in 0..50 {
        assert_eq!(infer_version(&c, &u, &[("x-model-version", "1")]).await, "1");
        assert_eq!(infer_version(&c, &u, &[("x-model-version", "2")]).await, "2");
    }
    let pinned_url = url(&gw, "/v2/models/breast-cancer/versions/2/infer");
    assert_eq!(infer_version(&c, &pinned_url, &[("x-model-version", "1")]).await, "2");

    // A routing key always lands on the same side, and raising the weight only moves keys to the canary.
    let keys: Vec<String> = (0..200).map(|i| format!("user-{i}")).collect();
    let mut side = BTreeMap::new();
    for k in &keys {
        let first = infer_version(&c, &u, &[("x-routing-key", k)]).await;
        assert_eq!(infer_version(&c, &u, &[("x-routing-key", k)]).await, first, "key {k} is sticky");
        side.insert(k.clone(), first);
    }
    let (s, _) =
        admin(&c, &gw, Method::PUT, "/admin/models/breast-cancer/canary/weight", Some(json!({"weight": 70}))).await;
    assert_eq!(s, 200);
    let mut moved = 0;
    for k in &keys {
        let now = infer_version(&c, &u, &[("x-routing-key", k)]).await;
        if side[k] == "1" {
            assert_eq!(now, "1", "key {k} went back from canary to stable as the weight rose");
        } else if now == "1" {
            moved += 1;
        }
    }
    assert!(moved > 40, "raising 30 % -> 70 % moves about 40 % of keys: {moved} of 200");
    gw.shutdown().await;
}

/// Thousands of requests while 100 mixed swaps, canary changes, promotions and rollbacks happen: none fails, and
/// every answer comes from a version that was routable (version 3 is loaded but never routed).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn swaps_under_load_lose_nothing() {
    let repo = scratch_dir();
    for v in ["1", "2"] {
        copy_version("breast-cancer", v, &repo, v);
    }
    copy_version("breast-cancer", "1", &repo, "3");
    let gw = start(config(&repo)).await;
    let c = client();
    // The highest version (3) starts as stable: hand stable to 2 before any load starts, so 3 is never routable.
    let p = "/admin/models/breast-cancer";
    assert_eq!(
        admin(&c, &gw, Method::POST, &format!("{p}/canary"), Some(json!({"version": 2, "weight": 0}))).await.0,
        200
    );
    assert_eq!(admin(&c, &gw, Method::POST, &format!("{p}/promote"), None).await.0, 200);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, bad) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for i in 0..8 {
        let (c, u, stop, ok, bad) =
            (c.clone(), url(&gw, "/v2/models/breast-cancer/infer"), stop.clone(), ok.clone(), bad.clone());
        clients.push(tokio::spawn(async move {
            let body = breast_cancer_rows(1).to_string();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = c.post(&u).header("x-routing-key", format!("k{i}-{n}")).body(body.clone()).send().await;
                n += 1;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v = r.headers()["x-model-version"].to_str().unwrap_or("?").to_string();
                        if v == "1" || v == "2" {
                            ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            bad.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let mut rng = fastrand::Rng::with_seed(7);
    let mut stable = 2u64;
    let mut ops = 0;
    while ops < 100 {
        let other = 3 - stable;
        let w = rng.u32(0..=100);
        let (s, v) =
            admin(&c, &gw, Method::POST, &format!("{p}/canary"), Some(json!({"version": other, "weight": w}))).await;
        assert_eq!(s, 200, "{v}");
        let (s, _) =
            admin(&c, &gw, Method::PUT, &format!("{p}/canary/weight"), Some(json!({"weight": rng.u32(0..=100)}))).await;
        assert_eq!(s, 200);
        let action = if rng.bool() { "promote" } else { "rollback" };
        let (s, v) = admin(&c, &gw, Method::POST, &format!("{p}/{action}"), None).await;
        assert_eq!(s, 200, "{v}");
        if action == "promote" {
            stable = other;
        }
        assert_eq!(v["stable"], json!(stable.to_string()));
        ops += 3;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.expect("client task");
    }
    let (ok, bad) = (ok.load(Ordering::Relaxed), bad.load(Ordering::Relaxed));
    assert_eq!(bad, 0, "{bad} requests failed or came from a version that was never routable ({ok} ok)");
    assert!(ok >= 1000, "only {ok} requests ran during the swaps");
    gw.shutdown().await;
}

#[tokio::test]
async fn routing_and_journal_survive_restarts_and_a_truncated_state_file() {
    let cfg = config(&bundled_models());
    let c = client();
    let gw = start(cfg.clone()).await;
    let (s, _) =
        admin(&c, &gw, Method::POST, "/admin/models/breast-cancer/canary", Some(json!({"version": 1, "weight": 12.5})))
            .await;
    assert_eq!(s, 200);
    gw.shutdown().await;

    let gw = start(cfg.clone()).await;
    let (s, v) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["stable"], json!("2"));
    assert_eq!(v["canary"], json!({"version": "1", "weight_percent": 12.5}));
    let kinds: Vec<&str> = v["events"].as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"canary_started"), "{kinds:?}");
    gw.shutdown().await;

    // A torn write cannot happen (rename is atomic), but a damaged disk can: start from defaults, don't crash.
    let path = cfg.state.dir.join("routing.json");
    let text = std::fs::read(&path).expect("state file");
    std::fs::write(&path, &text[..text.len() / 3]).expect("truncate");
    let gw = start(cfg.clone()).await;
    let (s, v) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer", None).await;
    assert_eq!(s, 200);
    assert_eq!((v["stable"].clone(), v["canary"].clone()), (json!("2"), Value::Null), "repository defaults");
    assert_eq!(get(&c, &url(&gw, "/v2/health/ready")).await.0, 200);
    gw.shutdown().await;
}

/// Polls the admin API until `model/version` is ready (the watcher loads it); returns the model's view.
async fn wait_ready(c: &reqwest::Client, gw: &gateway::Gateway, model: &str, version: &str) -> Value {
    for _ in 0..200 {
        let (_, m) = admin(c, gw, Method::GET, &format!("/admin/models/{model}"), None).await;
        let ready = m["versions"]
            .as_array()
            .is_some_and(|vs| vs.iter().any(|x| x["version"] == json!(version) && x["state"] == json!("ready")));
        if ready {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{model}/{version} never became ready");
}

#[tokio::test]
async fn a_new_version_directory_is_loaded_without_taking_traffic() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 50;
    let gw = start(cfg).await;
    let c = client();
    copy_version("breast-cancer", "2", &repo, "2");
    let m = wait_ready(&c, &gw, "breast-cancer", "2").await;
    let role = m["versions"].as_array().and_then(|vs| vs.iter().find(|x| x["version"] == json!("2")).cloned());
    assert_eq!(role.map(|v| v["role"].clone()), Some(json!("none")), "version 2 loaded and waits for an operator");
    for _ in 0..20 {
        assert_eq!(infer_version(&c, &url(&gw, "/v2/models/breast-cancer/infer"), &[]).await, "1");
    }
    // It can be pinned and made canary right away.
    assert_eq!(infer_version(&c, &url(&gw, "/v2/models/breast-cancer/infer"), &[("x-model-version", "2")]).await, "2");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_model_that_appears_later_serves_its_first_version_and_not_its_next() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 50;
    cfg.server.strict_readiness = false;
    let gw = start(cfg).await;
    let c = client();
    copy_version("diabetes", "1", &repo, "1");
    let m = wait_ready(&c, &gw, "diabetes", "1").await;
    assert_eq!(m["stable"], json!("1"), "a new model serves its first version");
    copy_version("diabetes", "1", &repo, "2");
    let m = wait_ready(&c, &gw, "diabetes", "2").await;
    assert_eq!(m["stable"], json!("1"), "its next version waits for an operator");
    let body = json!({"inputs": [
        {"name": "features", "shape": [1, 9], "datatype": "FP64", "data": [50, 25, 90, 180, 100, 50, 4, 4.5, 90]},
        {"name": "sex", "shape": [1, 1], "datatype": "INT64", "data": [1]}]});
    let (s, v) = post(&c, &url(&gw, "/v2/models/diabetes/infer"), body.to_string()).await;
    assert_eq!((s, v["model_version"].clone()), (200, json!("1")));
    gw.shutdown().await;
}

//! Automatic canary analysis against the real server: real ONNX versions (healthy, erroring, slow, divergent,
//! drifted), real HTTP traffic, and the controller's decisions read back through the admin API, the journal and
//! the metrics. Most tests step the controller with `analyse_now` (interval set to an hour, so its own timer never
//! fires) for determinism; one drives a rollback end to end on the controller's own timer, and one uses Tokio's
//! paused time to let many intervals pass without traffic.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use gateway::Gateway;
use gateway::rollout::machine::Decision;
use reqwest::Method;
use serde_json::{Value, json};

/// Copies test fixture `variant` (gateway/tests/fixtures/breast-cancer/<variant>) in as `version`.
fn copy_fixture(variant: &str, dst: &Path, version: &str) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breast-cancer").join(variant);
    let to = dst.join("breast-cancer").join(version);
    std::fs::create_dir_all(&to).expect("mkdir");
    std::fs::copy(from.join("model.onnx"), to.join("model.onnx")).expect("copy model");
    let mut m: Value =
        serde_json::from_str(&std::fs::read_to_string(from.join("manifest.json")).expect("read")).expect("json");
    m["version"] = json!(version);
    std::fs::write(to.join("manifest.json"), m.to_string()).expect("write");
}

/// Edits a copied version's manifest.
fn edit_manifest(repo: &Path, version: &str, f: impl FnOnce(&mut Value)) {
    let p = repo.join("breast-cancer").join(version).join("manifest.json");
    let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
    f(&mut m);
    std::fs::write(&p, m.to_string()).expect("write");
}

/// A repository with breast-cancer v1 as the only release version (so it is stable) plus `canary` as version 2.
fn repo_with_canary(canary: impl FnOnce(&Path)) -> PathBuf {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    canary(&repo);
    edit_manifest(&repo, "2", |m| m["stage"] = json!("candidate"));
    repo
}

async fn start_on(repo: &Path) -> Gateway {
    let mut cfg = config(repo);
    cfg.models.watch_interval_ms = 0;
    start(cfg).await
}

/// Rows scaled from the training means: small tumours to large ones, so the versions' answers differ where
/// they really differ and the inputs spread over the baseline's bins.
fn varied_rows(i: usize, rows: usize) -> Value {
    let means = breast_cancer_means();
    const SCALE: [f64; 6] = [0.7, 0.85, 1.0, 1.2, 1.4, 1.6];
    let data: Vec<f64> =
        (0..rows).flat_map(|r| means.iter().map(move |x| x * SCALE[(i + r) % SCALE.len()])).collect::<Vec<_>>();
    json!({"inputs": [{"name": "input", "shape": [rows, 30], "datatype": "FP32", "data": data}]})
}

/// Rows that the erroring fixture fails on (mean radius 26; valid input, and stable answers it).
fn radius_26() -> Value {
    let mut body = breast_cancer_rows(1);
    body["inputs"][0]["data"][0] = json!(26.0);
    body
}

/// Sends `n` requests one after another; returns how many got each status.
async fn traffic(gw: &Gateway, n: usize, body: impl Fn(usize) -> Value) -> std::collections::BTreeMap<u16, usize> {
    let c = client();
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..n {
        let (s, _) = post(&c, &url(gw, "/v2/models/breast-cancer/infer"), body(i).to_string()).await;
        *statuses.entry(s).or_default() += 1;
    }
    statuses
}

async fn admin_call(gw: &Gateway, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    admin(&client(), gw, method, path, body).await
}

async fn start_rollout(gw: &Gateway, version: u64, policy: Value) -> Value {
    let (s, body) = admin_call(
        gw,
        Method::POST,
        "/admin/models/breast-cancer/rollout",
        Some(json!({"version": version, "policy": policy})),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    body
}

async fn rollout(gw: &Gateway) -> Value {
    admin_call(gw, Method::GET, "/admin/models/breast-cancer/rollout", None).await.1
}

async fn events(gw: &Gateway) -> Vec<Value> {
    let (s, body) = admin_call(gw, Method::GET, "/admin/models/breast-cancer/events", None).await;
    assert_eq!(s, 200);
    body.as_array().expect("events").clone()
}

fn kinds(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .filter(|k| k.starts_with("rollout") || *k == "promoted" || *k == "rolled_back")
        .map(str::to_owned)
        .collect()
}

fn analyse(gw: &Gateway) -> Option<Decision> {
    gw.controller.analyse_now("breast-cancer")
}

/// Stepped by hand: the controller's own timer stays out of the way. The latency ratio check is off unless a test
/// is about latency: test binaries run many gateways at once on two cores, so p99 of a few dozen requests is noise.
fn manual(extra: Value) -> Value {
    let mut p =
        json!({"interval_secs": 3600, "window_secs": 3600, "min_requests": 10, "checks": {"max_p99_ratio": null}});
    for (k, v) in extra.as_object().expect("object") {
        p[k] = v.clone();
    }
    p
}

/// Waits until the mirror has compared at least `n` pairs (it runs after the answers, off the request path).
async fn mirrored(gw: &Gateway, n: u64) {
    for _ in 0..200 {
        let pairs = gw.core.mirror.divergence.pair("breast-cancer", 2, 3).pairs;
        if pairs >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the mirror compared fewer than {n} pairs");
}

#[tokio::test]
async fn a_good_canary_walks_every_step_and_is_promoted() {
    let gw = start_on(&bundled_models()).await;
    assert_eq!(
        gw.core.model("breast-cancer").expect("model").routing().stable.as_ref().map(|v| v.number),
        Some(2),
        "version 3 is a candidate: the highest release version is stable"
    );
    let r = start_rollout(&gw, 1, manual(json!({"weights": [10, 50]}))).await;
    assert_eq!((r["phase"].as_str(), r["weight_percent"].as_f64()), (Some("progressing"), Some(10.0)));

    let statuses = traffic(&gw, 300, |i| varied_rows(i, 1)).await;
    assert_eq!(statuses.get(&200), Some(&300), "{statuses:?}");
    let d = analyse(&gw);
    assert_eq!(d, Some(Decision::Advance { from: gateway::routing::Weight(1000), to: gateway::routing::Weight(5000) }));
    assert_eq!(rollout(&gw).await["weight_percent"], json!(50.0));

    traffic(&gw, 100, |i| varied_rows(i, 1)).await;
    assert_eq!(analyse(&gw), Some(Decision::Promote));
    let r = rollout(&gw).await;
    assert_eq!(r["phase"], "promoted", "{r}");
    let show = admin_call(&gw, Method::GET, "/admin/models/breast-cancer", None).await.1;
    assert_eq!((show["stable"].as_str(), &show["canary"]), (Some("1"), &Value::Null), "{show}");

    let ev = events(&gw).await;
    assert_eq!(kinds(&ev), ["rollout_started", "rollout_advanced", "promoted"]);
    let advanced = ev.iter().find(|e| e["kind"] == "rollout_advanced").expect("advance event");
    assert_eq!(advanced["data"]["analysis"]["outcome"], "pass");
    let checks = &advanced["data"]["analysis"]["checks"];
    assert_eq!((checks[0]["check"].as_str(), checks[0]["status"].as_str()), (Some("success_rate"), Some("pass")));
    assert!(advanced["weight_percent"].as_f64() == Some(50.0), "{advanced}");
    let m = scrape(&gw).await;
    assert!(m.contains(r#"gateway_rollout_phase{model="breast-cancer",phase="promoted"} 1"#), "{m}");
    assert!(m.contains(r#"gateway_rollout_decisions_total{decision="advance",model="breast-cancer"} 1"#));
    gw.shutdown().await;
}

/// End to end on the controller's own timer: a canary that fails inside ONNX Runtime on part of the input space
/// is rolled back while clients keep sending, and stable keeps answering them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erroring_canary_is_rolled_back_on_its_own_timer() {
    let repo = repo_with_canary(|r| copy_fixture("erroring", r, "2"));
    let gw = start_on(&repo).await;
    start_rollout(
        &gw,
        2,
        json!({
            "interval_secs": 0.5, "window_secs": 1, "min_requests": 5, "weights": [50], "threshold": 2,
            "checks": {"max_p99_ratio": null}
        }),
    )
    .await;
    let c = client();
    let started = std::time::Instant::now();
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let phase = loop {
        assert!(started.elapsed() < Duration::from_secs(30), "no rollback within 30 s: {}", rollout(&gw).await);
        for _ in 0..20 {
            let (s, _) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), radius_26().to_string()).await;
            *statuses.entry(s).or_default() += 1;
        }
        let r = rollout(&gw).await;
        if r["phase"] != "progressing" {
            break r;
        }
    };
    assert_eq!(phase["phase"], "rolled_back", "{phase}");
    assert_eq!(phase["failed_intervals"], 2, "rolled back at the threshold, not before or after");
    assert!(statuses.get(&500).is_some_and(|n| *n > 0), "the canary failed some requests: {statuses:?}");
    // After the rollback every request goes to stable and succeeds.
    let after = traffic(&gw, 50, |_| radius_26()).await;
    assert_eq!(after.get(&200), Some(&50), "{after:?}");

    let ev = events(&gw).await;
    let rolled = ev.iter().find(|e| e["kind"] == "rolled_back").expect("rollback event");
    assert!(rolled["message"].as_str().is_some_and(|m| m.contains("(success_rate)")), "{rolled}");
    assert_eq!(rolled["canary"], Value::Null, "weight 0: the canary is out of the routing");
    let check = &rolled["data"]["analysis"]["checks"][0];
    assert_eq!((check["check"].as_str(), check["status"].as_str()), (Some("success_rate"), Some("fail")), "{check}");
    assert!(check["value"].as_f64().is_some_and(|v| v < 99.0) && check["threshold"] == 99.0, "{check}");
    let k = kinds(&ev);
    assert_eq!(k.first().map(String::as_str), Some("rollout_started"));
    assert_eq!(k.last().map(String::as_str), Some("rolled_back"));
    let m = scrape(&gw).await;
    assert!(m.contains(r#"gateway_rollbacks_total{model="breast-cancer",reason="success_rate"} 1"#), "{m}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_slow_canary_is_rolled_back_on_latency() {
    let repo = repo_with_canary(|r| copy_fixture("slow", r, "2"));
    let gw = start_on(&repo).await;
    // The fixture takes several milliseconds per call; stable well under one.
    let checks = json!({"max_p99_ms": 3, "max_p99_ratio": 2});
    start_rollout(&gw, 2, manual(json!({"weights": [50], "threshold": 1, "checks": checks}))).await;
    traffic(&gw, 80, |i| varied_rows(i, 1)).await;
    let d = analyse(&gw);
    assert_eq!(d, Some(Decision::RollBack { reason: "latency_p99", count: 1 }), "{}", rollout(&gw).await);
    let r = rollout(&gw).await;
    let p99 = r["last_analysis"]["checks"].as_array().expect("checks").iter().find(|c| c["check"] == "latency_p99");
    assert!(p99.is_some_and(|c| c["value"].as_f64().is_some_and(|v| v > 3.0)), "{r}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_divergent_canary_is_rolled_back_from_mirrored_pairs() {
    let gw = start_on(&bundled_models()).await;
    let policy = manual(json!({
        "weights": [20], "threshold": 2, "mirror_percent": 100,
        "checks": {"max_label_disagreement": 10, "min_pairs": 30, "max_p99_ratio": null}
    }));
    start_rollout(&gw, 3, policy).await;
    let show = admin_call(&gw, Method::GET, "/admin/models/breast-cancer", None).await.1;
    assert_eq!(show["shadow"]["version"], "3", "the rollout mirrors stable's requests to the canary: {show}");

    traffic(&gw, 200, |i| varied_rows(i, 1)).await;
    mirrored(&gw, 30).await;
    assert_eq!(analyse(&gw), Some(Decision::Failed { count: 1 }), "{}", rollout(&gw).await);
    // The failed interval's samples are not judged twice: the next verdict needs pairs of its own.
    let seen = gw.core.mirror.divergence.pair("breast-cancer", 2, 3).pairs;
    traffic(&gw, 200, |i| varied_rows(i, 1)).await;
    mirrored(&gw, seen + 30).await;
    assert_eq!(analyse(&gw), Some(Decision::RollBack { reason: "label_disagreement", count: 2 }));
    let show = admin_call(&gw, Method::GET, "/admin/models/breast-cancer", None).await.1;
    assert_eq!((&show["canary"], &show["shadow"]), (&Value::Null, &Value::Null), "canary and its mirror end: {show}");
    let ev = events(&gw).await;
    assert_eq!(kinds(&ev), ["rollout_started", "rollout_failed_interval", "rolled_back"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_drifted_canary_is_rolled_back_on_feature_psi() {
    // Version 2 is version 1 with a training baseline three times the real scale, as if trained on data in other
    // units: live traffic lands in its lowest bins.
    let repo = repo_with_canary(|r| {
        copy_version("breast-cancer", "1", r, "2");
        edit_manifest(r, "2", |m| {
            for f in m["inputs"][0]["features"].as_array_mut().expect("features") {
                let edges: Vec<f64> =
                    f["bin_edges"].as_array().expect("edges").iter().map(|e| e.as_f64().expect("f64") * 3.0).collect();
                f["bin_edges"] = json!(edges);
                for k in ["mean", "min", "max"] {
                    f[k] = json!(f[k].as_f64().expect("f64") * 3.0);
                }
            }
        });
    });
    let gw = start_on(&repo).await;
    let checks = json!({"max_psi": 0.5, "max_p99_ratio": null});
    start_rollout(&gw, 2, manual(json!({"weights": [50], "threshold": 1, "checks": checks}))).await;
    traffic(&gw, 80, |i| varied_rows(i, 4)).await;
    assert_eq!(analyse(&gw), Some(Decision::RollBack { reason: "drift", count: 1 }), "{}", rollout(&gw).await);
    gw.shutdown().await;
}

/// Paused time: many intervals pass without traffic; each holds and says so, none passes or fails. Pause stops
/// the analyses, resume restarts them, abort ends the rollout.
#[tokio::test]
async fn too_little_traffic_holds_and_pause_resume_abort_work() {
    let gw = start_on(&bundled_models()).await;
    let policy = json!({"interval_secs": 10, "window_secs": 30, "min_requests": 50, "weights": [5, 50]});
    tokio::time::pause();
    gw.controller.start("breast-cancer", 1, Some(&policy)).expect("started");
    tokio::time::sleep(Duration::from_secs(35)).await;
    let ev = gw.core.model("breast-cancer").expect("model").control().to_state().events;
    let ev: Vec<Value> = ev.iter().map(|e| serde_json::to_value(e).expect("json")).collect();
    let held: Vec<&Value> = ev.iter().filter(|e| e["kind"] == "rollout_held").collect();
    assert_eq!(held.len(), 1, "consecutive holds share one journal entry: {ev:?}");
    assert_eq!(held[0]["data"]["holds"], 3, "one hold per interval: {}", held[0]);
    let last = ev.last().expect("event");
    assert!(last["message"].as_str().is_some_and(|m| m.contains("too little traffic: 0 canary requests")), "{last}");
    let snapshot = |gw: &Gateway| gw.core.model("breast-cancer").expect("model").control().rollout.clone().expect("r");
    let r = snapshot(&gw);
    assert_eq!((r.phase.label(), r.step, r.failed_intervals, r.analyses), ("progressing", 0, 0, 3));

    use gateway::controller::Command;
    gw.controller.command("breast-cancer", Command::Pause, "").expect("pause");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(snapshot(&gw).analyses, 3, "no analysis while paused");
    let e = gw.controller.command("breast-cancer", Command::Pause, "").expect_err("twice");
    assert!(e.to_string().contains("cannot pause a rollout that is paused"), "{e}");
    gw.controller.command("breast-cancer", Command::Resume, "").expect("resume");
    tokio::time::sleep(Duration::from_secs(25)).await;
    assert_eq!(snapshot(&gw).analyses, 5, "analysing again after resume");
    gw.controller.command("breast-cancer", Command::Abort, "enough").expect("abort");
    let slot = gw.core.model("breast-cancer").expect("model");
    assert_eq!(snapshot(&gw).phase.label(), "aborted");
    assert!(slot.routing().canary.is_none(), "abort removes the canary");
    tokio::time::resume();
    gw.shutdown().await;
}

#[tokio::test]
async fn skip_and_the_approval_gate() {
    let gw = start_on(&bundled_models()).await;
    start_rollout(&gw, 1, manual(json!({"weights": [10, 50], "require_approval": true}))).await;
    let (s, _) = admin_call(&gw, Method::POST, "/admin/models/breast-cancer/rollout/approve", None).await;
    assert_eq!(s, 409, "nothing to approve before the last step");
    let (s, r) = admin_call(&gw, Method::POST, "/admin/models/breast-cancer/rollout/skip", None).await;
    assert_eq!((s, &r["weight_percent"]), (200, &json!(50.0)), "{r}");
    traffic(&gw, 60, |i| varied_rows(i, 1)).await;
    assert_eq!(analyse(&gw), Some(Decision::AwaitApproval));
    traffic(&gw, 60, |i| varied_rows(i, 1)).await;
    assert!(matches!(analyse(&gw), Some(Decision::Hold(why)) if why.contains("waiting for approval")));
    let (s, r) = admin_call(&gw, Method::POST, "/admin/models/breast-cancer/rollout/approve", None).await;
    assert_eq!((s, &r["phase"]), (200, &json!("promoted")), "{r}");
    assert_eq!(
        kinds(&events(&gw).await),
        ["rollout_started", "rollout_skipped", "rollout_awaiting_approval", "rollout_held", "promoted"]
    );
    let (s, body) = admin_call(&gw, Method::POST, "/admin/models/breast-cancer/rollout/bogus", None).await;
    assert_eq!(s, 400, "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("unknown rollout command 'bogus'")), "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn bad_rollout_requests_are_refused_with_the_field_named() {
    let gw = start_on(&bundled_models()).await;
    let p = "/admin/models/breast-cancer/rollout";
    for (body, expect) in [
        (json!({"version": 2}), "already the stable version"),
        (json!({"version": 9}), "unknown version '9'"),
        (json!({"version": 1, "policy": {"weights": [50, 10]}}), "policy.weights"),
        (json!({"version": 1, "policy": {"checks": {"max_psii": 1}}}), "max_psii"),
        (json!({"version": 1, "policy": {"interval_secs": 0}}), "policy.interval_secs"),
    ] {
        let (s, r) = admin_call(&gw, Method::POST, p, Some(body.clone())).await;
        assert!((400..=409).contains(&s), "{body} -> {s} {r}");
        assert!(r["error"].as_str().is_some_and(|e| e.contains(expect)), "{body} -> {r}");
    }
    start_rollout(&gw, 1, manual(json!({}))).await;
    let (s, r) = admin_call(&gw, Method::POST, p, Some(json!({"version": 3}))).await;
    assert_eq!(s, 409, "{r}");
    let (s, r) =
        admin_call(&gw, Method::PUT, "/admin/models/breast-cancer/canary/weight", Some(json!({"weight": 90}))).await;
    assert_eq!(s, 409, "the rollout owns the weight: {r}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_restart_mid_rollout_resumes_it() {
    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    let gw = start(cfg.clone()).await;
    start_rollout(&gw, 1, manual(json!({"weights": [10, 50]}))).await;
    traffic(&gw, 300, |i| varied_rows(i, 1)).await;
    assert!(matches!(analyse(&gw), Some(Decision::Advance { .. })));
    gw.shutdown().await;

    let gw = start(cfg).await;
    let r = rollout(&gw).await;
    assert_eq!(
        (r["phase"].as_str(), r["step"].as_u64(), r["weight_percent"].as_f64()),
        (Some("progressing"), Some(1), Some(50.0)),
        "{r}"
    );
    let routing = gw.core.model("breast-cancer").expect("model").routing();
    assert_eq!(routing.canary.as_ref().map(|c| (c.version.number, c.weight.0)), Some((1, 5000)));
    let mut restored = false;
    for _ in 0..100 {
        restored = events(&gw).await.iter().any(|e| e["kind"] == "rollout_restored");
        if restored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(restored, "the restart is journaled");
    // The window starts afresh: the first sample after the restart is a baseline (taken here or by the
    // controller's first tick, in which case this analysis holds for lack of traffic).
    assert!(matches!(analyse(&gw), None | Some(Decision::Hold(_))));
    traffic(&gw, 60, |i| varied_rows(i, 1)).await;
    assert_eq!(analyse(&gw), Some(Decision::Promote));
    let k: Vec<String> = kinds(&events(&gw).await).into_iter().filter(|k| k != "rollout_held").collect();
    assert_eq!(k, ["rollout_started", "rollout_advanced", "rollout_restored", "promoted"]);
    gw.shutdown().await;
}

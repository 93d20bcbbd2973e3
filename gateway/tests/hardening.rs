//! Faults a hostile client, a broken disk or a bad restart can cause, each against a real gateway on loopback:
//! oversized request ids, slowloris and connection floods, bodies that never finish, an unwritable state file,
//! a broken stable version after a restart, and a tampered state file.

mod common;

use std::time::{Duration, Instant};

use common::*;
use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A request id is echoed, logged and remembered for feedback: a 1 MB one is refused, and nothing is kept.
#[tokio::test]
async fn oversized_request_ids_are_refused_and_nothing_is_kept() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut body = breast_cancer_rows(1);
    body["id"] = json!("x".repeat(1 << 20));
    for _ in 0..20 {
        let (s, v) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().expect("error").contains("'id' is 1048576 bytes long"), "{v}");
    }
    let book = gw.core.feedback.as_ref().expect("feedback on by default");
    assert_eq!(book.bytes(), 0, "no answer was remembered for a refused request");
    body["id"] = json!("a-normal-id");
    assert_eq!(post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await.0, 200);
    assert!(book.bytes() > 0);
    gw.shutdown().await;
}

async fn read_all(mut s: TcpStream, within: Duration) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(within, s.read_to_end(&mut buf)).await {
        Ok(_) => Some(String::from_utf8_lossy(&buf).into_owned()),
        Err(_) => None,
    }
}

/// Half-sent headers and idle keep-alive connections are closed after the header-read timeout; past the
/// connection limit new connections are refused early and counted, while the live probe still answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_connection_floods_cannot_take_the_port() {
    let mut cfg = config(&bundled_models());
    cfg.server.max_connections = 40;
    cfg.server.header_read_timeout_ms = 500;
    let gw = start(cfg).await;
    let addr = gw.http_addr;
    // Fill every slot: half of them send half a header, half say nothing at all.
    let mut held = Vec::new();
    for i in 0..40 {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        if i % 2 == 0 {
            s.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\nx-slow: ").await.expect("half a header");
        }
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Past the limit: the live probe is answered on the refused connection; anything else gets 503 at once.
    let mut probe = TcpStream::connect(addr).await.expect("connect");
    probe.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let answer = read_all(probe, Duration::from_secs(2)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let mut other = TcpStream::connect(addr).await.expect("connect");
    let started = Instant::now();
    other.write_all(b"GET /v2/models/breast-cancer HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
    let answer = read_all(other, Duration::from_secs(2)).await.expect("answered and closed");
    assert!(answer.starts_with("HTTP/1.1 503") && answer.contains("max_connections"), "{answer}");
    assert!(started.elapsed() < Duration::from_millis(500), "refused early: {:?}", started.elapsed());
    assert!(scrape(&gw).await.contains(r#"gateway_connections_refused_total{listener="http"} 2"#));
    // The header-read timeout closes every held connection, half a header or none.
    let deadline = Duration::from_secs(3);
    for s in held {
        assert!(read_all(s, deadline).await.is_some(), "a held connection was closed by the server");
    }
    let c = client();
    let (s, v) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 200, "served again once the flood is gone: {v}");
    gw.shutdown().await;
}

/// The header-read timeout counts from each wait for a head, not from the connection's first: a keep-alive
/// connection whose requests come faster than the timeout stays open past it, and is closed once it idles that long.
/// (The timer keeps one entry per connection and moves it between waits; this is what that must not break.)
#[tokio::test]
async fn the_header_read_timeout_restarts_with_every_request() {
    let mut cfg = config(&bundled_models());
    cfg.server.header_read_timeout_ms = 600;
    let gw = start(cfg).await;
    let mut s = TcpStream::connect(gw.http_addr).await.expect("connect");
    let opened = Instant::now();
    let mut buf = vec![0; 4096];
    // Four requests 250 ms apart: 1 s in all, each wait well under 600 ms.
    for i in 0..4 {
        s.write_all(b"GET /v2/health/live HTTP/1.1\r\nhost: x\r\n\r\n").await.expect("send");
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await.expect("answered").expect("read");
        let answer = String::from_utf8_lossy(&buf[..n]);
        assert!(answer.starts_with("HTTP/1.1 200"), "request {i} at {:?}: {answer}", opened.elapsed());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(opened.elapsed() > Duration::from_millis(900));
    // Now idle: closed after about 600 ms more (read returns 0 bytes), not at once and not never.
    let idle = Instant::now();
    let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await.expect("closed").expect("read");
    assert_eq!(n, 0, "{}", String::from_utf8_lossy(&buf[..n]));
    assert!(idle.elapsed() > Duration::from_millis(250), "closed too early: {:?}", idle.elapsed());
    gw.shutdown().await;
}

/// An inference request whose headers promise 1,000 bytes of body, of which only the first few are sent.
async fn half_sent_request(gw: &gateway::Gateway) -> TcpStream {
    let mut s = TcpStream::connect(gw.http_addr).await.expect("connect");
    s.write_all(
        b"POST /v2/models/breast-cancer/infer HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
          content-length: 1000\r\n\r\n{\"inputs\":",
    )
    .await
    .expect("send");
    s
}

/// A body that never finishes is the client's fault: 408, counted with code 408, never a 5xx.
#[tokio::test]
async fn a_body_that_never_finishes_is_a_408() {
    let mut cfg = config(&bundled_models());
    cfg.server.body_read_timeout_ms = 300;
    let gw = start(cfg).await;
    let mut s = half_sent_request(&gw).await;
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("answered").expect("read");
    let answer = String::from_utf8_lossy(&buf[..n]);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("did not arrive within 300 ms"), "{answer}");
    let metrics = scrape(&gw).await;
    assert!(metrics.contains(r#"{code="408",model="breast-cancer",protocol="http",version=""} 1"#), "{metrics}");
    assert!(!metrics.contains(r#"code="504""#), "{metrics}");
    gw.shutdown().await;
}

/// Past `server.max_concurrent_requests` an inference request is refused at once with 503 and the protocol's JSON
/// error, counted under its model; the permit of a request still uploading counts, and is handed back when it ends.
#[tokio::test]
async fn past_the_concurrency_limit_requests_are_refused_at_once_and_counted() {
    let mut cfg = config(&bundled_models());
    cfg.server.max_concurrent_requests = 1;
    let gw = start(cfg).await;
    // A request whose body is still on its way holds the only permit.
    let upload = half_sent_request(&gw).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !scrape(&gw).await.contains("gateway_requests_in_flight 1") {
        assert!(Instant::now() < deadline, "the upload never counted as in flight");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let c = client();
    let infer = url(&gw, "/v2/models/breast-cancer/infer");
    let (s, v) = post(&c, &infer, breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("too many requests in progress")), "{v}");
    let (s, v) = post(&c, &url(&gw, "/v2/models/no-such-model/infer"), breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 404, "an unknown model is named, not refused for load: {v}");
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains(r#"gateway_requests_total{code="503",model="breast-cancer",protocol="http",version=""} 1"#),
        "{metrics}"
    );
    // The upload ends (the client goes away): its permit comes back and the next request is served.
    drop(upload);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = post(&c, &infer, breast_cancer_rows(1).to_string()).await;
        if s == 200 {
            break;
        }
        assert!(s == 503 && Instant::now() < deadline, "{s} {v}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.shutdown().await;
}

/// An acknowledgement means durable: when the state file cannot be written, the change is refused with 503
/// naming the cause and is not applied, here or after a restart; once the disk is back, changes work again.
#[tokio::test]
async fn an_unwritable_state_file_refuses_changes_instead_of_losing_them() {
    let cfg = config(&bundled_models());
    let state = cfg.state.dir.clone();
    let gw = start(cfg.clone()).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    // A directory where the temporary file goes: every write fails, even for root (which ignores chmod).
    std::fs::create_dir(state.join("routing.json.tmp")).expect("block writes");
    let (s, v) = admin(&c, &gw, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await;
    assert_eq!(s, 503, "{v}");
    let msg = v["error"].as_str().expect("error");
    assert!(msg.contains("not applied") && msg.contains("routing.json"), "{msg}");
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(view["canary"], serde_json::Value::Null, "not applied");
    gw.shutdown().await;
    let gw = start(cfg.clone()).await;
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(view["canary"], serde_json::Value::Null, "nothing to lose after a restart either");
    std::fs::remove_dir(state.join("routing.json.tmp")).expect("unblock");
    let (s, v) = admin(&c, &gw, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await;
    assert_eq!(s, 200, "{v}");
    gw.shutdown().await;
    let gw = start(cfg).await;
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(view["canary"]["version"], "1", "acknowledged, so durable");
    gw.shutdown().await;
}

async fn served_version(c: &reqwest::Client, gw: &gateway::Gateway) -> String {
    let r = c
        .post(url(gw, "/v2/models/breast-cancer/infer"))
        .body(breast_cancer_rows(1).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    r.headers()["x-model-version"].to_str().expect("ascii").to_string()
}

/// After a restart with a broken stable version, the previous stable version serves (not the highest ready
/// one), the desired stable version stays desired, and it takes its traffic back once repaired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_stable_falls_back_to_the_previous_stable_and_comes_back() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    copy_version("breast-cancer", "2", &repo, "2");
    copy_version("breast-cancer", "2", &repo, "9");
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 100;
    let gw = start(cfg.clone()).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    for v in [1, 2] {
        let (s, body) = admin(&c, &gw, Method::PUT, &format!("{m}/stable"), Some(json!({"version": v}))).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(served_version(&c, &gw).await, "2");
    gw.shutdown().await;

    let good = std::fs::read(repo.join("breast-cancer/2/model.onnx")).expect("read");
    std::fs::write(repo.join("breast-cancer/2/model.onnx"), b"not a model").expect("break v2");
    let gw = start(cfg).await;
    assert_eq!(served_version(&c, &gw).await, "1", "the previous stable serves, not the highest (9)");
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(view["stable_desired"], "2", "{view}");
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(gw_state(&gw)).expect("state")).expect("json");
    assert_eq!(saved["models"]["breast-cancer"]["routing"]["stable"], 2, "the fallback is never saved");

    std::fs::write(repo.join("breast-cancer/2/model.onnx"), good).expect("repair v2");
    let mut back = false;
    for _ in 0..100 {
        if served_version(&c, &gw).await == "2" {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(back, "the repaired stable version takes its traffic back");
    let (_, events) = admin(&c, &gw, Method::GET, &format!("{m}/events"), None).await;
    let kinds: Vec<&str> = events.as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"stable_fallback") && kinds.contains(&"stable_restored"), "{kinds:?}");
    gw.shutdown().await;
}

fn gw_state(gw: &gateway::Gateway) -> std::path::PathBuf {
    gw.core.registry.state_path()
}

/// A tampered state file is refused like bad API input: moved aside, and the repository defaults serve.
#[tokio::test]
async fn a_tampered_state_file_is_moved_aside() {
    let cfg = config(&bundled_models());
    let gw = start(cfg.clone()).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    let (s, _) = admin(&c, &gw, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await;
    assert_eq!(s, 200);
    let path = gw_state(&gw);
    gw.shutdown().await;
    let mut saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).expect("state")).expect("json");
    saved["models"]["breast-cancer"]["routing"]["canary"]["weight"] = json!(20_000);
    saved["models"]["breast-cancer"]["routing"]["shadow"] = json!({"version": 1, "share": 100_000});
    std::fs::write(&path, saved.to_string()).expect("tamper");
    let gw = start(cfg).await;
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(view["canary"], serde_json::Value::Null, "nothing restored from a tampered file: {view}");
    assert_eq!(view["shadow"], serde_json::Value::Null);
    let aside = std::fs::read_dir(path.parent().expect("dir"))
        .expect("list")
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("routing.json.corrupt-"));
    assert!(aside, "the bad file was kept aside for a post-mortem");
    gw.shutdown().await;
}

async fn until(what: &str, mut f: impl AsyncFnMut() -> bool) {
    for _ in 0..100 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// The watcher sees a fix that leaves the modification time as it was (a `chmod`, a restore that keeps mtime),
/// and marks a serving version whose files change or vanish under it, without taking it out of service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_sees_every_change_on_disk() {
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    copy_version("breast-cancer", "2", &repo, "2");
    let good = std::fs::read(repo.join("breast-cancer/2/model.onnx")).expect("read");
    let v2 = repo.join("breast-cancer/2/model.onnx");
    // Version 2 is broken from the start; its stamp is kept so the fix can hide behind the same mtime.
    std::fs::write(&v2, vec![0u8; good.len()]).expect("break");
    let mtime = std::fs::metadata(&v2).expect("meta").modified().expect("mtime");
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 100;
    let gw = start(cfg).await;
    let c = client();
    let m = "/admin/models/breast-cancer";
    let state_of = |view: &serde_json::Value, v: &str| {
        view["versions"].as_array().expect("versions").iter().find(|x| x["version"] == v).cloned().expect("version")
    };
    let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
    assert_eq!(state_of(&view, "2")["state"], "failed");
    tokio::time::sleep(Duration::from_millis(300)).await; // the watcher has tried it once and remembers its stamp
    std::fs::write(&v2, &good).expect("repair");
    std::fs::File::options().write(true).open(&v2).expect("open").set_modified(mtime).expect("same mtime");
    until("the repaired version to load", async || {
        let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
        state_of(&view, "2")["state"] == "ready"
    })
    .await;

    // Version 1 serves; its file changes under it, then disappears.
    std::fs::write(repo.join("breast-cancer/1/model.onnx"), b"replaced").expect("change");
    until("version 1 marked changed", async || {
        let (_, view) = admin(&c, &gw, Method::GET, m, None).await;
        state_of(&view, "1")["disk"] == "changed"
    })
    .await;
    std::fs::remove_file(repo.join("breast-cancer/1/model.onnx")).expect("delete");
    until("version 1 marked missing", async || {
        let (_, meta) = get(&c, &url(&gw, "/v2/models/breast-cancer/versions/1")).await;
        meta["states"].as_array().is_some_and(|s| s.iter().any(|x| x["version"] == "1" && x["disk"] == "missing"))
    })
    .await;
    let (s, _) =
        post(&c, &url(&gw, "/v2/models/breast-cancer/versions/1/infer"), breast_cancer_rows(1).to_string()).await;
    assert_eq!(s, 200, "it keeps serving what it loaded");
    assert!(scrape(&gw).await.contains(r#"gateway_model_files_changed{model="breast-cancer",version="1"} 1"#));
    let (_, events) = admin(&c, &gw, Method::GET, &format!("{m}/events"), None).await;
    let kinds: Vec<&str> = events.as_array().expect("events").iter().filter_map(|e| e["kind"].as_str()).collect();
    assert!(kinds.contains(&"version_files_changed") && kinds.contains(&"version_files_missing"), "{kinds:?}");
    gw.shutdown().await;
}

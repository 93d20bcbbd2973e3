//! `kill -9` in the middle of a stream of routing changes: the restarted gateway comes back with the last change
//! it acknowledged (or the one in flight), never with a torn or older state.

mod common;

use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn call(c: &reqwest::Client, p: &Proc, method: Method, path: &str, body: Option<Value>) -> Option<(u16, Value)> {
    let mut r = c.request(method, format!("http://{}{path}", p.admin)).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.ok()?;
    let s = r.status().as_u16();
    Some((s, r.json().await.ok()?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_restarts_into_the_last_committed_state() {
    let path = config_file(config(&bundled_models()), 0, 0);
    let c = client();

    let mut rng = fastrand::Rng::with_seed(3);
    for round in 0..3 {
        let mut p = spawn_gateway(&path);
        wait_ready(&c, &p).await;
        let m = "/admin/models/breast-cancer";
        let (s, v) = call(&c, &p, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 1})))
            .await
            .expect("canary");
        assert_eq!(s, 200, "{v}");
        // Weight changes back to back; the process is killed at a random moment among them.
        let kill_after = Duration::from_millis(rng.u64(20..200));
        let started = std::time::Instant::now();
        let mut acked = 1.0;
        let mut w = 1.0;
        while started.elapsed() < kill_after {
            w += 1.0;
            match call(&c, &p, Method::PUT, &format!("{m}/canary/weight"), Some(json!({"weight": w}))).await {
                Some((200, _)) => acked = w,
                other => panic!("weight change failed before the kill: {other:?}"),
            }
        }
        let in_flight = tokio::spawn({
            let (c, admin) = (c.clone(), p.admin.clone());
            let w = w + 1.0;
            async move {
                let _ = c
                    .put(format!("http://{admin}{m}/canary/weight"))
                    .bearer_auth(TOKEN)
                    .json(&json!({"weight": w}))
                    .send()
                    .await;
            }
        });
        tokio::time::sleep(Duration::from_micros(rng.u64(0..2000))).await;
        p.child.kill().expect("kill -9");
        p.child.wait().expect("reaped");
        let _ = in_flight.await;

        let mut p = spawn_gateway(&path);
        wait_ready(&c, &p).await;
        let (_, v) = call(&c, &p, Method::GET, m, None).await.expect("show");
        let got = v["canary"]["weight_percent"].as_f64().expect("canary restored");
        // The last acknowledged change, or the one that was in flight when the process died.
        assert!(got == acked || got == acked + 1.0, "round {round}: restored weight {got}, last acked {acked}");
        assert_eq!(v["stable"], json!("2"));
        p.child.kill().expect("kill");
        p.child.wait().expect("reaped");
    }
}

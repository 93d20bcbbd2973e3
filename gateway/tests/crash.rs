//! `kill -9` in the middle of a stream of routing changes: the restarted gateway comes back with the last change
//! it acknowledged (or the one in flight), never with a torn or older state.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use reqwest::Method;
use serde_json::{Value, json};

struct Proc {
    child: Child,
    http: String,
    admin: String,
}

fn spawn(config: &std::path::Path) -> Proc {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().expect("utf8"), "--log-format", "json"])
        .env("GATEWAY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("gateway starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    for line in out.by_ref() {
        let line = line.expect("log line");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == json!("gateway listening") {
            let f = &v["fields"];
            let http = f["http_addr"].as_str().expect("http").to_string();
            let admin = f["admin_addr"].as_str().expect("admin").to_string();
            // Keep reading the logs so a full pipe never blocks the gateway.
            std::thread::spawn(move || out.for_each(drop));
            return Proc { child, http, admin };
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the gateway exited before listening");
}

async fn wait_ready(c: &reqwest::Client, p: &Proc) {
    for _ in 0..600 {
        if let Ok(r) = c.get(format!("http://{}/v2/health/ready", p.http)).send().await
            && r.status() == 200
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not ready");
}

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
    let dir = scratch_dir();
    let lib = ort_library();
    let cfg = format!(
        "[server]\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\nmetrics_addr = \"127.0.0.1:0\"\n[admin]\naddr = \"127.0.0.1:0\"\n\
         [models]\nrepository = {:?}\n[state]\ndir = {:?}\n[onnxruntime]\nlibrary = {:?}\n",
        bundled_models().display().to_string(),
        dir.join("state").display().to_string(),
        lib.display().to_string()
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, cfg).expect("config");
    let c = client();

    let mut rng = fastrand::Rng::with_seed(3);
    for round in 0..3 {
        let mut p = spawn(&path);
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

        let mut p = spawn(&path);
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

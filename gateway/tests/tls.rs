//! TLS on every link, against real gateways with certificates made by the test (`common/pki.rs`):
//!
//! - every listener (HTTP, gRPC, metrics, admin) over TLS, called with `curl --cacert` and with tritonclient's
//!   `ssl=True` options over HTTPS and gRPC; a wrong CA and plain text are refused;
//! - mTLS: a client certificate from the client CA is accepted; none, one from another CA, and an expired one are
//!   each refused (curl and tritonclient);
//! - remote versions behind TLS: a second gateway process with mTLS as the upstream over `https://` and
//!   `grpcs://`, host names verified; a version whose upstream does not carry the expected name fails to load,
//!   saying why;
//! - a rotated certificate reaches new connections while a bad rotation (expired) is refused and counted.
//!
//! Rotation under a load of the load tester, with 0 failed requests, is in `loadtest/tests/tls.rs`.

mod common;

#[path = "common/pki.rs"]
mod pki;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use gateway::config::{ClientTls, Config, ListenerTls};
use pki::{Ca, Usage, Volume, write_pair};
use reqwest::Method;
use serde_json::{Value, json};

fn listener(cert: &Path, key: &Path, client_ca: Option<&Path>) -> ListenerTls {
    ListenerTls {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        client_ca: client_ca.map(Path::to_path_buf),
        min_version: Default::default(),
        reload_interval_ms: 100,
    }
}

/// TLS with the same certificate on all four listeners.
fn tls_everywhere(cfg: &mut Config, tls: ListenerTls) {
    cfg.server.tls = Some(tls.clone());
    cfg.server.grpc_tls = Some(tls.clone());
    cfg.server.metrics_tls = Some(tls.clone());
    cfg.admin.tls = Some(tls);
}

/// `curl -s` with `args`; returns (exit code, HTTP status, body).
fn curl(args: &[&str]) -> (i32, u16, String) {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (out.status.code().unwrap_or(-1), code.trim().parse().unwrap_or(0), body.to_string())
}

fn rows_json() -> String {
    json!({"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 30], "data": breast_cancer_means()}]})
        .to_string()
}

/// Runs `tls_check.py` with tritonclient against `gw`; asserts it printed its ok line.
async fn tritonclient(gw: &gateway::Gateway, args: Vec<String>) {
    let python = workspace().join(".venv/bin/python");
    assert!(python.exists(), "{} is missing: run `make test` (it installs the .venv)", python.display());
    let script = workspace().join("gateway/tests/clients/tls_check.py");
    let (http, grpc) = (gw.http_addr.to_string(), gw.grpc_addr.to_string());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(script)
            .args(["--http", &http, "--grpc", &grpc, "--models"])
            .arg(bundled_models())
            .args(args)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .expect("python runs")
    });
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("in time").expect("joined");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && stdout.contains("tritonclient over TLS: ok"), "{stdout}\n{stderr}");
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf8").to_string()
}

/// A metric's value on a metrics page (0 when absent).
fn metric(page: &str, series: &str) -> f64 {
    page.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_serves_tls_to_curl_and_tritonclient_and_refuses_a_wrong_ca() {
    let dir = scratch_dir();
    let (ca, rogue) = (Ca::new(&dir, "ca"), Ca::new(&dir, "rogue"));
    let (cert, key) = write_pair(&dir, "server", &ca.server());
    let mut cfg = config(&bundled_models());
    tls_everywhere(&mut cfg, listener(&cert, &key, None));
    let gw = start(cfg).await;
    assert!(gw.wait_loaded(Duration::from_secs(60)).await);
    let cacert = s(ca.file());

    let ready = format!("https://127.0.0.1:{}/v2/health/ready", gw.http_addr.port());
    assert_eq!(curl(&["--cacert", &cacert, &ready]).1, 200);
    let infer = format!("https://localhost:{}/v2/models/breast-cancer/versions/1/infer", gw.http_addr.port());
    let (code, status, body) =
        curl(&["--cacert", &cacert, "-H", "content-type: application/json", "-d", &rows_json(), &infer]);
    assert_eq!((code, status), (0, 200), "{body}");
    assert!(body.contains("\"model_version\":\"1\""), "{body}");
    let metrics = format!("https://127.0.0.1:{}/metrics", gw.metrics_addr.port());
    let (_, status, page) = curl(&["--cacert", &cacert, &metrics]);
    assert_eq!(status, 200);
    let expiry = metric(&page, "gateway_tls_certificate_expiry_timestamp_seconds{listener=\"http\"}");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("now").as_secs_f64();
    assert!(expiry > now && expiry < now + 2.0 * 86_400.0, "expiry {expiry} is the certificate's, a day from now");
    let auth = format!("authorization: Bearer {TOKEN}");
    let admin = format!("https://127.0.0.1:{}/admin/models", gw.admin_addr.port());
    assert_eq!(curl(&["--cacert", &cacert, "-H", &auth, &admin]).1, 200);

    // A client that trusts another CA refuses the server (curl's exit 60: the peer's certificate is not trusted);
    // plain text on a TLS port gets no answer.
    assert_eq!(curl(&["--cacert", &s(rogue.file()), &ready]).0, 60);
    let plain = curl(&[&format!("http://127.0.0.1:{}/v2/health/ready", gw.http_addr.port())]);
    assert_ne!(plain.1, 200, "plain HTTP on the TLS port is not served");

    tritonclient(&gw, vec!["--ca".into(), cacert.clone()]).await;
    tritonclient(&gw, vec!["--ca".into(), s(rogue.file()), "--expect".into(), "refused".into()]).await;

    let page = scrape_tls(&gw, &cacert).await;
    assert!(metric(&page, "gateway_tls_handshake_failures_total{listener=\"http\"}") >= 2.0, "{page}");
    assert!(metric(&page, "gateway_tls_handshake_failures_total{listener=\"grpc\"}") >= 1.0, "{page}");
    gw.shutdown().await;
}

async fn scrape_tls(gw: &gateway::Gateway, cacert: &str) -> String {
    let metrics = format!("https://127.0.0.1:{}/metrics", gw.metrics_addr.port());
    let cacert = cacert.to_string();
    tokio::task::spawn_blocking(move || curl(&["--cacert", &cacert, &metrics]).2).await.expect("joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_missing_a_foreign_and_an_expired_client_certificate() {
    let dir = scratch_dir();
    let (ca, clients, rogue) = (Ca::new(&dir, "ca"), Ca::new(&dir, "clients"), Ca::new(&dir, "rogue"));
    let (cert, key) = write_pair(&dir, "server", &ca.server());
    let (good_c, good_k) = write_pair(&dir, "good", &clients.issue(&["svc-a"], Usage::Client, -1, 1));
    let (foreign_c, foreign_k) = write_pair(&dir, "foreign", &rogue.issue(&["svc-b"], Usage::Client, -1, 1));
    let (expired_c, expired_k) = write_pair(&dir, "expired", &clients.issue(&["svc-c"], Usage::Client, -3, -1));
    let mut cfg = config(&bundled_models());
    let tls = listener(&cert, &key, Some(clients.file()));
    cfg.server.tls = Some(tls.clone());
    cfg.server.grpc_tls = Some(tls);
    let gw = start(cfg).await;
    assert!(gw.wait_loaded(Duration::from_secs(60)).await);
    let cacert = s(ca.file());
    let url = format!("https://127.0.0.1:{}/v2/models/breast-cancer/infer", gw.http_addr.port());
    let call = |cert: Option<(&PathBuf, &PathBuf)>| {
        let mut args = vec!["--cacert".to_string(), cacert.clone(), "-d".into(), rows_json()];
        args.extend(["-H".into(), "content-type: application/json".into()]);
        if let Some((c, k)) = cert {
            args.extend(["--cert".into(), s(c), "--key".into(), s(k)]);
        }
        args.push(url.clone());
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (code, status, body) = call(Some((&good_c, &good_k)));
    assert_eq!((code, status), (0, 200), "{body}");
    for (what, cert) in
        [("no", None), ("a foreign", Some((&foreign_c, &foreign_k))), ("an expired", Some((&expired_c, &expired_k)))]
    {
        let (code, status, _) = call(cert);
        assert!(code != 0 && status == 0, "{what} client certificate must be refused at the handshake: curl {code}");
    }

    let base = vec!["--ca".to_string(), cacert.clone()];
    let with = |c: &Path, k: &Path| [base.clone(), vec!["--cert".into(), s(c), "--key".into(), s(k)]].concat();
    tritonclient(&gw, with(&good_c, &good_k)).await;
    tritonclient(&gw, [base.clone(), vec!["--expect".into(), "refused".into()]].concat()).await;
    tritonclient(&gw, [with(&expired_c, &expired_k), vec!["--expect".into(), "refused".into()]].concat()).await;
    gw.shutdown().await;
}

/// A reqwest client trusting `ca`, presenting `identity` (cert and key PEM) if given.
fn https_client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca).expect("ca")).expect("pem"));
    if let Some((c, k)) = identity {
        let pem = [std::fs::read(c).expect("cert"), std::fs::read(k).expect("key")].concat();
        b = b.identity(reqwest::Identity::from_pem(&pem).expect("identity"));
    }
    b.build().expect("client")
}

/// Whether `url` answers 200 within `tries` attempts 50 ms apart.
async fn answers_200(c: &reqwest::Client, url: &str, tries: usize) -> bool {
    for _ in 0..tries {
        if c.get(url).send().await.is_ok_and(|r| r.status() == 200) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_versions_reach_an_mtls_upstream_and_refuse_a_wrong_name() {
    let dir = scratch_dir();
    let (ca, clients) = (Ca::new(&dir, "ca"), Ca::new(&dir, "clients"));
    let (cert, key) = write_pair(&dir, "upstream", &ca.server());
    let (front_c, front_k) = write_pair(&dir, "front", &clients.issue(&["front"], Usage::Client, -1, 1));

    // The upstream: the gateway binary with mTLS on HTTP and gRPC.
    let mut up_cfg = config(&bundled_models());
    up_cfg.models.watch_interval_ms = 0;
    up_cfg.inference.threads = 1;
    let tls = listener(&cert, &key, Some(clients.file()));
    up_cfg.server.tls = Some(tls.clone());
    up_cfg.server.grpc_tls = Some(tls);
    // Ports the upstream picks itself and logs: a port probed free beforehand can be taken before it binds.
    let up = spawn_gateway(&config_file(up_cfg, 0, 0));
    let (h, g) = (port_of(&up.http), port_of(&up.grpc));
    let c = https_client(ca.file(), Some((&front_c, &front_k)));
    assert!(answers_200(&c, &format!("https://127.0.0.1:{h}/v2/health/ready"), 600).await, "the upstream is ready");

    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    let remote = |v: &str, url: String, extra: Value| {
        let d = repo.join("breast-cancer").join(v);
        std::fs::create_dir_all(&d).expect("mkdir");
        let mut m = manifest("breast-cancer", "2");
        m["version"] = json!(v);
        m["stage"] = json!("candidate");
        let mut r = json!({"url": url, "version": "2", "timeout_ms": 2000, "health_interval_ms": 0});
        for (k, x) in extra.as_object().expect("object") {
            r[k] = x.clone();
        }
        m["remote"] = r;
        std::fs::write(d.join("manifest.json"), m.to_string()).expect("write");
    };
    remote("5", format!("https://127.0.0.1:{h}"), json!({}));
    remote("6", format!("grpcs://localhost:{g}"), json!({}));
    remote("7", format!("https://127.0.0.1:{h}"), json!({"server_name": "upstream.invalid"}));
    remote("8", format!("grpcs://127.0.0.1:{g}"), json!({"server_name": "upstream.invalid"}));
    let mut cfg = config(&repo);
    cfg.models.watch_interval_ms = 0;
    cfg.upstreams.tls = ClientTls { ca_file: Some(ca.file().to_path_buf()), cert: Some(front_c), key: Some(front_k) };
    let gw = start(cfg).await;
    assert!(gw.wait_loaded(Duration::from_secs(60)).await);
    let (_, view) = admin(&client(), &gw, Method::GET, "/admin/models/breast-cancer", None).await;
    let state = |v: &str| {
        let all = view["versions"].as_array().expect("versions");
        all.iter().find(|x| x["version"] == v).cloned().unwrap_or(Value::Null)
    };
    for v in ["5", "6"] {
        assert_eq!(state(v)["state"], "ready", "{view}");
    }
    for v in ["7", "8"] {
        let reason = state(v)["reason"].as_str().unwrap_or_default().to_string();
        assert_eq!(state(v)["state"], "failed", "{view}");
        assert!(
            reason.contains("NotValidForName") || reason.contains("not valid for name"),
            "version {v}'s reason names the certificate's name mismatch: {reason}"
        );
    }
    let direct = c
        .post(format!("https://127.0.0.1:{h}/v2/models/breast-cancer/versions/2/infer"))
        .body(rows_json())
        .send()
        .await
        .expect("direct");
    let direct: Value = direct.json().await.expect("json");
    for v in ["5", "6"] {
        let (s, via) =
            post(&client(), &url(&gw, &format!("/v2/models/breast-cancer/versions/{v}/infer")), rows_json()).await;
        assert_eq!(s, 200, "{via}");
        assert_eq!(via["outputs"], direct["outputs"], "version {v} answers what the upstream answers");
    }
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_certificate_reaches_new_connections_and_a_bad_one_is_refused() {
    let dir = scratch_dir();
    let (old_ca, new_ca) = (Ca::new(&dir, "old"), Ca::new(&dir, "new"));
    let volume = Volume::new(&dir.join("secret"), &old_ca.server());
    let mut cfg = config(&bundled_models());
    cfg.server.tls = Some(listener(&volume.cert(), &volume.key(), None));
    cfg.server.metrics_tls = Some(listener(&volume.cert(), &volume.key(), None));
    let gw = start(cfg).await;
    let ready = format!("https://127.0.0.1:{}/v2/health/ready", gw.http_addr.port());
    let old = https_client(old_ca.file(), None);
    assert_eq!(old.get(&ready).send().await.expect("old CA").status(), 200);

    // A keep-alive connection opened before the rotation goes on with its certificate; new connections get the new
    // one, which only the new CA verifies.
    volume.install(&new_ca.server());
    let new = https_client(new_ca.file(), None);
    assert!(answers_200(&new, &ready, 100).await, "new connections get the rotated certificate");
    assert_eq!(old.get(&ready).send().await.expect("the open connection stays").status(), 200);
    assert!(https_client(old_ca.file(), None).get(&ready).send().await.is_err(), "a new connection is on the new CA");

    // An expired certificate is refused: the previous one stays, and the refusal is counted and exported.
    volume.install(&new_ca.issue(&["127.0.0.1"], Usage::Server, -3, -1));
    let metrics = format!("https://127.0.0.1:{}/metrics", gw.metrics_addr.port());
    let mut refused = 0.0;
    for _ in 0..100 {
        let page = new.get(&metrics).send().await.expect("metrics").text().await.expect("page");
        refused = metric(&page, "gateway_tls_reloads_total{listener=\"http\",result=\"error\"}");
        if refused >= 1.0 {
            assert_eq!(metric(&page, "gateway_tls_reloads_total{listener=\"http\",result=\"ok\"}"), 1.0, "{page}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(refused, 1.0, "the expired certificate is refused once");
    let fresh = https_client(new_ca.file(), None);
    assert_eq!(fresh.get(&ready).send().await.expect("still the good certificate").status(), 200);
    gw.shutdown().await;
}

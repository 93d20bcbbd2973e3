//! Test support: start a real gateway on loopback ephemeral ports with real ONNX models, and talk to it over HTTP.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use gateway::Gateway;
use gateway::config::Config;
use serde_json::Value;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

pub fn bundled_models() -> PathBuf {
    workspace().join("models")
}

pub const TOKEN: &str = "test-admin-token";

/// A fresh directory that outlives the test (small files under the system temp dir).
pub fn scratch_dir() -> PathBuf {
    tempfile::Builder::new().prefix("gateway-test-").tempdir().expect("tempdir").keep()
}

/// A config serving `repository` on 127.0.0.1:0, with the ONNX Runtime library `make setup` installs, a state
/// directory of its own, and the admin token [`TOKEN`].
pub fn config(repository: &Path) -> Config {
    let mut c = Config::default();
    c.server.http_addr = "127.0.0.1:0".into();
    c.server.grpc_addr = "127.0.0.1:0".into();
    c.server.metrics_addr = "127.0.0.1:0".into();
    c.admin.addr = "127.0.0.1:0".into();
    c.models.repository = repository.to_path_buf();
    c.inference.threads = 2;
    // Tests shut gateways down all the time; the drain period is tested on its own.
    c.server.drain_ms = 0;
    let dir = scratch_dir();
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).expect("token file");
    c.admin.token_file = Some(dir.join("token"));
    c.state.dir = dir.join("state");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        c.onnxruntime.library = Some(workspace().join(".ort/lib/libonnxruntime.so"));
    }
    c
}

/// The ONNX Runtime library for gateways the tests start as separate processes.
pub fn ort_library() -> PathBuf {
    std::env::var_os("ORT_DYLIB_PATH").map_or_else(|| workspace().join(".ort/lib/libonnxruntime.so"), PathBuf::from)
}

/// A free loopback port, for processes that must be told their port up front (etcd, Prometheus, a restart on the
/// same address). A port the kernel picked for `bind(0)` and then released can be handed out again at once, to
/// another test's listener or to an outgoing connection, before the process it was meant for binds it. So the
/// ports come from below the kernel's ephemeral range (`ip_local_port_range`, 32768 and up by default), which the
/// kernel never picks by itself, each at most once per test binary, checked free by binding.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Test binaries run one after another, but two checkouts may test at once: start at a place of the pid's.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port between {LOW} and {}", LOW + SPAN);
}

/// The gateway's metrics page.
pub async fn scrape(gw: &Gateway) -> String {
    client()
        .get(format!("http://{}/metrics", gw.metrics_addr))
        .send()
        .await
        .expect("scrape")
        .text()
        .await
        .expect("text")
}

pub async fn start(config: Config) -> Gateway {
    let gw = Gateway::start(&config).await.expect("gateway starts");
    assert!(gw.wait_loaded(Duration::from_secs(30)).await, "models load within 30 s");
    gw
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

pub fn url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{}", gw.http_addr, path)
}

/// POSTs a body, returns status and parsed JSON (or the raw text as a JSON string if it is not JSON).
pub async fn post(c: &reqwest::Client, url: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    let r = c.post(url).body(body).send().await.expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub async fn get(c: &reqwest::Client, url: &str) -> (u16, Value) {
    let r = c.get(url).send().await.expect("request sent");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

pub fn manifest(model: &str, version: &str) -> Value {
    let p = bundled_models().join(model).join(version).join("manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).expect("manifest")).expect("json")
}

/// Copies a bundled version into `dst/<model>/<version>`.
pub fn copy_version(model: &str, version: &str, dst: &Path, as_version: &str) {
    let to = dst.join(model).join(as_version);
    std::fs::create_dir_all(&to).expect("mkdir");
    for f in ["model.onnx", "manifest.json"] {
        std::fs::copy(bundled_models().join(model).join(version).join(f), to.join(f)).expect("copy");
    }
    if version != as_version {
        let p = to.join("manifest.json");
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(&p).expect("read")).expect("json");
        m["version"] = Value::String(as_version.into());
        std::fs::write(&p, m.to_string()).expect("write");
    }
}

/// The training means of breast-cancer's 30 features (version 1's baseline): a valid input row.
pub fn breast_cancer_means() -> Vec<f64> {
    manifest("breast-cancer", "1")["inputs"][0]["features"]
        .as_array()
        .expect("features")
        .iter()
        .map(|f| f["mean"].as_f64().expect("mean"))
        .collect()
}

/// A request of `rows` rows for breast-cancer, each the training means.
pub fn breast_cancer_rows(rows: usize) -> Value {
    let means = breast_cancer_means();
    let data: Vec<f64> = (0..rows).flat_map(|_| means.clone()).collect();
    serde_json::json!({"inputs": [{"name": "input", "shape": [rows, 30], "datatype": "FP32", "data": data}]})
}

/// The gRPC form of `breast_cancer_rows(1)`: one row of the training means, as typed FP32 contents.
pub fn breast_cancer_grpc_request() -> gateway::protocol::pb::ModelInferRequest {
    use gateway::protocol::pb;
    pb::ModelInferRequest {
        model_name: "breast-cancer".into(),
        inputs: vec![pb::model_infer_request::InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: vec![1, 30],
            parameters: Default::default(),
            contents: Some(pb::InferTensorContents {
                fp32_contents: breast_cancer_means().into_iter().map(|x| x as f32).collect(),
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

/// Writes `config` as TOML beside its state directory, for a gateway started as a separate process, with the
/// HTTP and gRPC listeners on the given ports.
pub fn config_file(mut config: Config, http: u16, grpc: u16) -> PathBuf {
    config.server.http_addr = format!("127.0.0.1:{http}");
    config.server.grpc_addr = format!("127.0.0.1:{grpc}");
    config.onnxruntime.library = Some(ort_library());
    let path = config.state.dir.with_file_name("gateway.toml");
    std::fs::write(&path, toml::to_string(&config).expect("config serialises")).expect("write config");
    path
}

pub fn admin_url(gw: &Gateway, path: &str) -> String {
    format!("http://{}{}", gw.admin_addr, path)
}

/// An admin call with the test token; returns status and JSON.
pub async fn admin(
    c: &reqwest::Client,
    gw: &Gateway,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = c.request(method, admin_url(gw, path)).bearer_auth(TOKEN);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let r = r.send().await.expect("admin call");
    let status = r.status().as_u16();
    let text = r.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

/// A gateway running as its own process (the real binary), with the addresses it logged.
pub struct Proc {
    pub child: std::process::Child,
    pub http: String,
    pub grpc: String,
    pub admin: String,
}

impl Drop for Proc {
    /// A test that fails halfway must not leave its gateway running.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the gateway binary on `config` and waits for its "gateway listening" log line. A gateway that exits
/// first fails the test with what it printed (its last log lines and its stderr), so the cause is in the report.
pub fn spawn_gateway(config: &Path) -> Proc {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    // A file rather than a pipe: nothing reads stderr while the gateway runs, and a full pipe would block it.
    let stderr_path = config.with_extension("stderr");
    let stderr = std::fs::File::create(&stderr_path).expect("stderr file");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["--config", config.to_str().expect("utf8"), "--log-format", "json"])
        .env("GATEWAY_ADMIN_TOKEN", TOKEN)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("gateway starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut last = std::collections::VecDeque::new();
    for line in out.by_ref() {
        let line = line.expect("log line");
        let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        if v["fields"]["message"] == serde_json::json!("gateway listening") {
            let f = &v["fields"];
            let addr = |k: &str| f[k].as_str().expect(k).to_string();
            let (http, grpc, admin) = (addr("http_addr"), addr("grpc_addr"), addr("admin_addr"));
            // Keep reading the logs so a full pipe never blocks the gateway.
            std::thread::spawn(move || out.for_each(drop));
            return Proc { child, http, grpc, admin };
        }
        if last.len() == 20 {
            last.pop_front();
        }
        last.push_back(line);
    }
    let _ = child.kill();
    let status = child.wait();
    let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
    let logs = Vec::from(last).join("\n");
    panic!("the gateway exited before listening ({status:?})\nits last log lines:\n{logs}\nits stderr:\n{stderr}");
}

/// The port of an address the gateway logged (`127.0.0.1:8000`).
pub fn port_of(addr: &str) -> u16 {
    addr.rsplit(':').next().and_then(|p| p.parse().ok()).expect("an address with a port")
}

/// Waits until a gateway process answers ready.
pub async fn wait_ready(c: &reqwest::Client, p: &Proc) {
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

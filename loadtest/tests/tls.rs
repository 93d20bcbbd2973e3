//! The load tester over TLS against a real gateway whose certificate is rotated during the load: HTTPS and gRPC
//! with SSL keep 0 failed requests, a client that opens a new connection for every request meanwhile never
//! fails either, new connections get the new certificate, and a bad rotation (an expired certificate) is refused
//! while the good one goes on serving.

#[path = "../../gateway/tests/common/pki.rs"]
mod pki;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::Gateway;
use gateway::config::{Config, ListenerTls};
use loadtest::client::http::get_text;
use loadtest::client::tls::Tls;
use loadtest::client::{Protocol, Target};
use loadtest::report::Report;
use loadtest::runner::{Mode, Plan, run};
use loadtest::workload;
use pki::{Ca, Usage, Volume};
use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;

fn gateway_config(root: &Path, dir: &Path, volume: &Volume) -> Config {
    let mut cfg = Config::default();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.server.metrics_addr = "127.0.0.1:0".into();
    cfg.admin.addr = "127.0.0.1:0".into();
    cfg.state.dir = dir.join("state");
    cfg.models.repository = root.join("models");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cfg.onnxruntime.library = Some(root.join(".ort/lib/libonnxruntime.so"));
    }
    let tls = ListenerTls {
        cert: volume.cert(),
        key: volume.key(),
        client_ca: None,
        min_version: Default::default(),
        reload_interval_ms: 100,
    };
    cfg.server.tls = Some(tls.clone());
    cfg.server.grpc_tls = Some(tls);
    cfg
}

fn target(protocol: Protocol, addr: std::net::SocketAddr, ca: &Path) -> Target {
    let alpn: &[u8] = if protocol == Protocol::Grpc { b"h2" } else { b"http/1.1" };
    Target {
        protocol,
        addr,
        authority: addr.to_string(),
        model: "breast-cancer".into(),
        version: None,
        pin: None,
        routing_key: None,
        tls: Some(Tls::new(Some(ca), None, "127.0.0.1", alpn).expect("tls")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_rotated_under_load_fails_no_request() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = Ca::new(dir.path(), "ca");
    let volume = Volume::new(&dir.path().join("secret"), &ca.server());
    let gw = Gateway::start(&gateway_config(&root, dir.path(), &volume)).await.expect("gateway starts");
    assert!(gw.wait_loaded(Duration::from_secs(30)).await);

    let http = Arc::new(target(Protocol::Http, gw.http_addr, ca.file()));
    let grpc = Arc::new(target(Protocol::Grpc, gw.grpc_addr, ca.file()));
    let meta = get_text(&http, "/v2/models/breast-cancer").await.expect("metadata over HTTPS");
    let meta: serde_json::Value = serde_json::from_str(&meta).expect("json");
    let inputs = workload::inputs_from_metadata(&meta, None).expect("inputs");
    let http_wl = Arc::new(workload::random(&inputs, 1, 16, 1));
    let mut grpc_wl = workload::random(&inputs, 1, 16, 1);
    grpc_wl.bodies = grpc_wl.bodies.iter().map(|b| loadtest::client::grpc::encode(b, &grpc).expect("encode")).collect();
    let plan = |connections| Plan {
        mode: Mode::Closed,
        connections,
        duration: Duration::from_secs(3),
        warmup: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        max_requests: None,
        server_pid: None,
    };
    let (http_plan, grpc_plan) = (plan(8), plan(4));

    // A client that opens a new connection (TCP and TLS handshake) for every request, all through the rotation.
    let churn = {
        let http = http.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u32, Vec::new());
            let end = Instant::now() + Duration::from_millis(3200);
            while Instant::now() < end {
                match get_text(&http, "/v2/health/ready").await {
                    Ok(_) => ok += 1,
                    Err(e) => failed.push(e.to_string()),
                }
            }
            (ok, failed)
        })
    };
    let next = ca.server();
    let rotate = async {
        tokio::time::sleep(Duration::from_millis(1200)).await;
        volume.install(&next);
        tokio::time::sleep(Duration::from_millis(1000)).await;
        volume.install(&ca.issue(&["127.0.0.1"], Usage::Server, -3, -1));
    };
    let (h, g, ()) = tokio::join!(
        run(&http_plan, http.clone(), http_wl, None),
        run(&grpc_plan, grpc, Arc::new(grpc_wl), None),
        rotate
    );
    let h = Report::build("https", "test", "breast-cancer", &http_plan, 1, &h.expect("https run"));
    let g = Report::build("grpcs", "test", "breast-cancer", &grpc_plan, 1, &g.expect("grpcs run"));
    for r in [&h, &g] {
        assert!(r.ok > 100 && r.failed == 0 && r.not_sent == 0, "{}", r.summary());
    }
    let (ok, failed) = churn.await.expect("churn");
    assert!(ok > 20 && failed.is_empty(), "{ok} new connections answered, failures: {failed:?}");

    // New connections get the rotated certificate, not the expired one tried after it.
    let tls = Tls::new(Some(ca.file()), None, "127.0.0.1", b"http/1.1").expect("tls");
    let stream = tls.connect(tokio::net::TcpStream::connect(gw.http_addr).await.expect("tcp")).await.expect("tls");
    let served = stream.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    assert_eq!(served, CertificateDer::from_pem_slice(next.cert.as_bytes()).expect("pem"));
    let plain = Target { protocol: Protocol::Http, tls: None, addr: gw.metrics_addr, ..(*http).clone() };
    let page = get_text(&plain, "/metrics").await.expect("metrics");
    for (series, want) in [
        (r#"gateway_tls_reloads_total{listener="http",result="ok"}"#, "1"),
        (r#"gateway_tls_reloads_total{listener="http",result="error"}"#, "1"),
        (r#"gateway_tls_reloads_total{listener="grpc",result="ok"}"#, "1"),
    ] {
        let line = page.lines().find(|l| l.starts_with(series)).unwrap_or_default();
        assert!(line.ends_with(&format!(" {want}")), "{series} should be {want}: {line:?}");
    }
    gw.shutdown().await;
}

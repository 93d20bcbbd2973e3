//! A short load against the real gateway serving the bundled models: the report's counts add up, and agree with
//! the gateway's own metrics.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gateway::Gateway;
use gateway::config::Config;
use loadtest::client::http::{encode_binary, get_json};
use loadtest::client::{Protocol, Target};
use loadtest::report::Report;
use loadtest::runner::{Mode, Plan, run};
use loadtest::workload;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_counts_add_up_against_the_real_gateway() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cfg = Config::default();
    cfg.server.http_addr = "127.0.0.1:0".into();
    cfg.server.grpc_addr = "127.0.0.1:0".into();
    cfg.server.metrics_addr = "127.0.0.1:0".into();
    cfg.admin.addr = "127.0.0.1:0".into();
    cfg.state.dir = std::env::temp_dir().join(format!("loadtest-state-{}", std::process::id()));
    cfg.models.repository = root.join("models");
    if std::env::var_os("ORT_DYLIB_PATH").is_none() {
        cfg.onnxruntime.library = Some(root.join(".ort/lib/libonnxruntime.so"));
    }
    let gw = Gateway::start(&cfg).await.expect("gateway starts");
    assert!(gw.wait_loaded(Duration::from_secs(30)).await);

    let target = Arc::new(Target {
        protocol: Protocol::Http,
        addr: gw.http_addr,
        authority: gw.http_addr.to_string(),
        model: "breast-cancer".into(),
        version: None,
        pin: None,
        routing_key: None,
        tls: None,
    });
    let meta = get_json(&target, "/v2/models/breast-cancer").await.expect("metadata");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("models/breast-cancer/1/manifest.json")).expect("manifest"),
    )
    .expect("json");
    let inputs = workload::inputs_from_metadata(&meta, Some(&manifest)).expect("inputs");
    let json_wl = Arc::new(workload::random(&inputs, 2, 16, 1));
    // The same bodies with the binary tensor data extension, as tritonclient sends them at its defaults.
    let mut binary = workload::random(&inputs, 2, 16, 1);
    let encoded: Vec<_> = binary.bodies.iter().map(|b| encode_binary(b).expect("encodes")).collect();
    (binary.bodies, binary.header_lens) = encoded.into_iter().unzip();
    let binary_wl = Arc::new(binary);

    let mut total_ok = 0;
    for (name, mode, wl) in [
        ("closed", Mode::Closed, &json_wl),
        ("open", Mode::Open { rate: 500.0 }, &json_wl),
        ("binary", Mode::Closed, &binary_wl),
    ] {
        let plan = Plan {
            mode,
            connections: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::from_millis(200),
            timeout: Duration::from_secs(5),
            max_requests: Some(5000),
            server_pid: None,
        };
        let r = run(&plan, target.clone(), wl.clone(), None).await.expect("run");
        let report = Report::build(name, "test", "breast-cancer", &plan, 2, &r);
        assert!(report.ok > 0);
        assert_eq!(report.failed, 0, "{}", report.summary());
        assert_eq!(report.completed, report.ok + report.failed);
        assert_eq!(report.statuses.values().sum::<u64>(), report.completed);
        assert_eq!(report.versions.values().sum::<u64>(), report.ok);
        assert_eq!(report.timeline.iter().map(|p| p.ok + p.errors).sum::<u64>(), report.completed);
        assert!(
            (report.predictions_per_s - report.achieved_rps * 2.0).abs() < 1e-6 * report.predictions_per_s.max(1.0)
        );
        if name == "open" {
            assert_eq!(report.completed, 500);
        }
        total_ok += report.ok;
    }
    // The gateway counted at least the requests the tool saw answered (its count includes the warm-ups).
    let text = reqwest_free_scrape(gw.metrics_addr).await;
    let served: u64 = text
        .lines()
        .filter(|l| {
            l.starts_with("gateway_requests_total{")
                && l.contains("model=\"breast-cancer\"")
                && l.contains("code=\"200\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(served >= total_ok, "gateway served {served}, load tester saw {total_ok} ok");

    // The same load over gRPC: messages encoded once, inputs raw; every request answered, counted as gRPC.
    let grpc = Arc::new(Target {
        protocol: Protocol::Grpc,
        addr: gw.grpc_addr,
        authority: gw.grpc_addr.to_string(),
        ..(*target).clone()
    });
    let meta = loadtest::client::grpc::metadata(&grpc).await.expect("metadata over gRPC");
    assert_eq!(meta["inputs"][0]["name"], "input");
    let mut wl = workload::random(&workload::inputs_from_metadata(&meta, Some(&manifest)).expect("inputs"), 2, 16, 1);
    wl.bodies = wl.bodies.iter().map(|b| loadtest::client::grpc::encode(b, &grpc).expect("encode")).collect();
    let plan = Plan {
        mode: Mode::Closed,
        connections: 4,
        duration: Duration::from_secs(1),
        warmup: Duration::from_millis(200),
        timeout: Duration::from_secs(5),
        max_requests: Some(2000),
        server_pid: None,
    };
    let r = run(&plan, grpc, Arc::new(wl), None).await.expect("run");
    let report = Report::build("grpc", "test", "breast-cancer", &plan, 2, &r);
    assert!(report.ok > 0 && report.failed == 0, "{}", report.summary());
    assert_eq!(report.versions.get("2"), Some(&report.ok), "{}", report.summary());
    let text = reqwest_free_scrape(gw.metrics_addr).await;
    assert!(text.contains(r#"protocol="grpc""#), "{text}");
    gw.shutdown().await;
}

async fn reqwest_free_scrape(addr: std::net::SocketAddr) -> String {
    let t = Target {
        protocol: Protocol::Http,
        addr,
        authority: addr.to_string(),
        model: String::new(),
        version: None,
        pin: None,
        routing_key: None,
        tls: None,
    };
    // /metrics is text, not JSON: fetch it through the same hyper client the tool uses.
    loadtest::client::http::get_text(&t, "/metrics").await.expect("scrape")
}

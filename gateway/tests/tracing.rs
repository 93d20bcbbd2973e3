//! Traces over OTLP: the real gateway binary exports to a small OTLP/gRPC receiver started by this test. A request
//! that carries a W3C `traceparent` (HTTP header or gRPC metadata) yields a `request` span in the caller's trace,
//! whose parent is the caller's span, with `decode`, `route`, `queue`, `infer` and `encode` spans under it.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gateway::protocol::pb;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Value, json};

#[derive(Clone, Default)]
struct Receiver(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().expect("lock");
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                spans.extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse { partial_success: None }))
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    let v = s.attributes.iter().find(|a| a.key == key)?.value.as_ref()?.value.as_ref()?;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    Some(match v {
        V::StringValue(s) => s.clone(),
        V::IntValue(i) => i.to_string(),
        other => format!("{other:?}"),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_receiver_in_the_callers_trace() {
    let receiver = Receiver::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let otlp = listener.local_addr().expect("addr");
    let svc = TraceServiceServer::new(receiver.clone());
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .expect("receiver");
    });

    let (http, grpc) = (free_port(), free_port());
    let mut config = config(&bundled_models());
    config.models.watch_interval_ms = 0;
    config.tracing.otlp_endpoint = Some(format!("http://{otlp}"));
    config.tracing.service_name = "gateway-under-test".into();
    config.logging.format = "json".into();
    let dir = config.state.dir.parent().expect("scratch dir").to_path_buf();
    let cfg = config_file(config, http, grpc);
    let log = dir.join("gateway.log");
    let _gw = Proc(
        Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["--config", cfg.to_str().expect("utf8")])
            // Export every 100 ms instead of every 5 s.
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            // Debug for the gateway, so a refused request writes a log line inside its span.
            .env("RUST_LOG", "info,gateway=debug")
            .stdout(std::fs::File::create(&log).expect("log file"))
            .stderr(Stdio::null())
            .spawn()
            .expect("gateway starts"),
    );
    let c = client();
    let base = format!("http://127.0.0.1:{http}");
    let started = Instant::now();
    while !c.get(format!("{base}/v2/health/ready")).send().await.is_ok_and(|r| r.status() == 200) {
        assert!(started.elapsed() < Duration::from_secs(30), "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // HTTP, with the caller's trace context and a request id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let caller = "00f067aa0ba902b7";
    let r = c
        .post(format!("{base}/v2/models/breast-cancer/infer"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .header("x-request-id", "req-42")
        .body(breast_cancer_rows(2).to_string())
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("x-request-id").and_then(|v| v.to_str().ok()), Some("req-42"));
    // gRPC, in another trace.
    let grpc_trace = "0af7651916cd43dd8448eb211c80319c";
    let mut client =
        pb::grpc_inference_service_client::GrpcInferenceServiceClient::connect(format!("http://127.0.0.1:{grpc}"))
            .await
            .expect("grpc");
    let mut req = tonic::Request::new(breast_cancer_grpc_request());
    req.metadata_mut().insert("traceparent", format!("00-{grpc_trace}-b7ad6b7169203331-01").parse().expect("ascii"));
    let answer = client.model_infer(req).await.expect("grpc infer");
    let made_up = answer.metadata().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    assert!(made_up.is_some(), "a request id is made up when none was sent and the span is recorded");

    // Wait for the exporter.
    let started = Instant::now();
    let spans = loop {
        let spans = receiver.0.lock().expect("lock").clone();
        let names =
            |t: &str| spans.iter().filter(|s| hex(&s.trace_id) == t).map(|s| s.name.clone()).collect::<Vec<_>>();
        let (h, g) = (names(trace), names(grpc_trace));
        if ["request", "decode", "route", "queue", "infer", "encode"]
            .iter()
            .all(|n| h.contains(&n.to_string()) && g.contains(&n.to_string()))
        {
            break spans;
        }
        assert!(started.elapsed() < Duration::from_secs(20), "spans so far: http {h:?}, grpc {g:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for (t, protocol, parent) in [(trace, "http", caller), (grpc_trace, "grpc", "b7ad6b7169203331")] {
        let in_trace: Vec<&Span> = spans.iter().filter(|s| hex(&s.trace_id) == t).collect();
        let root = in_trace.iter().find(|s| s.name == "request").expect("request span");
        assert_eq!(hex(&root.parent_span_id), parent, "the request span's parent is the caller's span");
        assert_eq!(attr(root, "protocol").as_deref(), Some(protocol));
        assert_eq!(attr(root, "model").as_deref(), Some("breast-cancer"));
        assert_eq!(attr(root, "version").as_deref(), Some("2"));
        for name in ["decode", "route", "queue", "infer", "encode"] {
            let child = in_trace.iter().find(|s| s.name == name).expect("child span");
            assert_eq!(child.parent_span_id, root.span_id, "{name} is a child of the request span ({protocol})");
            assert!(child.end_time_unix_nano >= child.start_time_unix_nano);
        }
        let queue = in_trace.iter().find(|s| s.name == "queue").expect("queue");
        let infer = in_trace.iter().find(|s| s.name == "infer").expect("infer");
        assert!(queue.end_time_unix_nano <= infer.start_time_unix_nano + 1_000_000, "the call waits, then runs");
    }
    let http_root = spans.iter().find(|s| hex(&s.trace_id) == trace && s.name == "request").expect("root");
    assert_eq!(attr(http_root, "request_id").as_deref(), Some("req-42"));
    let grpc_root = spans.iter().find(|s| hex(&s.trace_id) == grpc_trace && s.name == "request").expect("root");
    assert_eq!(attr(grpc_root, "request_id"), made_up, "the id made up is the one the trace holds");

    // The trace id is in the log lines written inside a request.
    let _ = c
        .post(format!("{base}/v2/models/breast-cancer/infer"))
        .header("traceparent", format!("00-{trace}-{caller}-01"))
        .body("{")
        .send()
        .await;
    let text = std::fs::read_to_string(&log).expect("log");
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(
        lines.iter().any(|l| l["span"]["trace_id"] == json!(trace)
            || l["spans"].as_array().is_some_and(|s| s.iter().any(|s| s["trace_id"] == json!(trace)))),
        "no log line carries the trace id:\n{text}"
    );
}

//! The Open Inference Protocol over gRPC against the real server: a tonic client (generated from the repository's
//! proto) calls every RPC with typed and raw tensors, and every bad input comes back with its code and a message
//! naming the problem.

mod common;

use common::*;
use gateway::Gateway;
use gateway::protocol::pb;
use pb::grpc_inference_service_client::GrpcInferenceServiceClient;
use pb::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use serde_json::json;
use tonic::Code;
use tonic::transport::Channel;

async fn client(gw: &Gateway) -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(format!("http://{}", gw.grpc_addr)).await.expect("connects")
}

fn means() -> Vec<f32> {
    breast_cancer_means().into_iter().map(|x| x as f32).collect()
}

fn fp32_input(name: &str, rows: usize, values: Vec<f32>) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: "FP32".into(),
        shape: vec![rows as i64, (values.len() / rows.max(1)) as i64],
        parameters: Default::default(),
        contents: Some(pb::InferTensorContents { fp32_contents: values, ..Default::default() }),
    }
}

fn request(model: &str, inputs: Vec<InferInputTensor>) -> pb::ModelInferRequest {
    pb::ModelInferRequest { model_name: model.into(), inputs, ..Default::default() }
}

/// Three rows: small, average and large tumours.
fn three_rows() -> Vec<f32> {
    let m = means();
    [0.7f32, 1.0, 1.5].iter().flat_map(|s| m.iter().map(move |x| x * s)).collect()
}

async fn start_default() -> Gateway {
    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    start(cfg).await
}

#[tokio::test]
async fn health_and_metadata_rpcs() {
    let gw = start_default().await;
    let mut c = client(&gw).await;
    assert!(c.server_live(pb::ServerLiveRequest {}).await.expect("live").into_inner().live);
    assert!(c.server_ready(pb::ServerReadyRequest {}).await.expect("ready").into_inner().ready);
    let meta = c.server_metadata(pb::ServerMetadataRequest {}).await.expect("metadata").into_inner();
    assert_eq!(meta.name, "gateway");

    let ready = |name: &str, version: &str| pb::ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("breast-cancer", "")).await.expect("ready").into_inner().ready);
    assert!(c.model_ready(ready("breast-cancer", "1")).await.expect("ready").into_inner().ready);
    assert_eq!(c.model_ready(ready("breast-cancer", "9")).await.expect_err("no v9").code(), Code::NotFound);
    let e = c.model_ready(ready("nope", "")).await.expect_err("unknown");
    assert_eq!((e.code(), e.message()), (Code::NotFound, "unknown model 'nope'"));

    let m = c
        .model_metadata(pb::ModelMetadataRequest { name: "diabetes".into(), version: String::new() })
        .await
        .expect("metadata")
        .into_inner();
    assert_eq!(
        (m.name.as_str(), m.versions.as_slice(), m.platform.as_str()),
        ("diabetes", &["1".to_string()][..], "onnxruntime_onnx")
    );
    assert_eq!(
        m.inputs.iter().map(|i| (i.name.as_str(), i.datatype.as_str())).collect::<Vec<_>>(),
        [("features", "FP64"), ("sex", "INT64")]
    );
    assert_eq!(m.inputs[1].shape, [-1, 1]);
    gw.shutdown().await;
}

#[tokio::test]
async fn typed_and_raw_inference_agree_with_http() {
    let gw = start_default().await;
    let mut c = client(&gw).await;
    let rows = three_rows();

    let typed =
        c.model_infer(request("breast-cancer", vec![fp32_input("input", 3, rows.clone())])).await.expect("infer");
    assert_eq!(typed.metadata().get("x-model-version").and_then(|v| v.to_str().ok()), Some("2"));
    let typed = typed.into_inner();
    assert_eq!((typed.model_name.as_str(), typed.model_version.as_str()), ("breast-cancer", "2"));
    assert!(typed.raw_output_contents.is_empty(), "typed in, typed out");
    let label = &typed.outputs[0];
    assert_eq!((label.name.as_str(), label.datatype.as_str(), label.shape.as_slice()), ("label", "INT64", &[3][..]));
    let labels = label.contents.as_ref().expect("contents").int64_contents.clone();
    let probs = typed.outputs[1].contents.as_ref().expect("contents").fp32_contents.clone();
    assert_eq!((typed.outputs[1].shape.as_slice(), probs.len()), (&[3, 2][..], 6));

    // The same rows over HTTP give the same answer.
    let http = client_http();
    let body = json!({"inputs": [{"name": "input", "shape": [3, 30], "datatype": "FP32", "data": rows}]});
    let (s, h) = post(&http, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
    assert_eq!(s, 200, "{h}");
    assert_eq!(h["outputs"][0]["data"], json!(labels));

    // Raw in, raw out, little-endian.
    let raw_bytes: Vec<u8> = rows.iter().flat_map(|x| x.to_le_bytes()).collect();
    let mut input = fp32_input("input", 3, vec![]);
    input.shape = vec![3, 30];
    input.contents = None;
    let mut req = request("breast-cancer", vec![input]);
    req.raw_input_contents = vec![raw_bytes];
    req.id = "raw-1".into();
    let raw = c.model_infer(req).await.expect("raw infer").into_inner();
    assert_eq!(raw.id, "raw-1");
    assert!(raw.outputs.iter().all(|o| o.contents.is_none()));
    let raw_labels: Vec<i64> =
        raw.raw_output_contents[0].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect();
    let raw_probs: Vec<f32> =
        raw.raw_output_contents[1].chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().expect("4"))).collect();
    assert_eq!((raw_labels, raw_probs), (labels.clone(), probs));

    // Typed in, raw out when asked; and only the requested output.
    let mut req = request("breast-cancer", vec![fp32_input("input", 3, rows.clone())]);
    req.outputs = vec![InferRequestedOutputTensor {
        name: "label".into(),
        parameters: [(
            "binary_data".to_string(),
            pb::InferParameter { parameter_choice: Some(pb::infer_parameter::ParameterChoice::BoolParam(true)) },
        )]
        .into(),
    }];
    let asked = c.model_infer(req).await.expect("infer").into_inner();
    assert_eq!((asked.outputs.len(), asked.raw_output_contents.len()), (1, 1));

    // Two inputs of other datatypes (FP64 and INT64).
    let diabetes = pb::ModelInferRequest {
        model_name: "diabetes".into(),
        inputs: vec![
            InferInputTensor {
                name: "features".into(),
                datatype: "FP64".into(),
                shape: vec![1, 9],
                parameters: Default::default(),
                contents: Some(pb::InferTensorContents { fp64_contents: vec![0.01; 9], ..Default::default() }),
            },
            InferInputTensor {
                name: "sex".into(),
                datatype: "INT64".into(),
                shape: vec![1, 1],
                parameters: Default::default(),
                contents: Some(pb::InferTensorContents { int64_contents: vec![1], ..Default::default() }),
            },
        ],
        ..Default::default()
    };
    let d = c.model_infer(diabetes).await.expect("diabetes").into_inner();
    assert_eq!(
        (d.outputs[0].datatype.as_str(), d.outputs[0].contents.as_ref().map(|c| c.fp64_contents.len())),
        ("FP64", Some(1))
    );
    gw.shutdown().await;
}

fn client_http() -> reqwest::Client {
    common::client()
}

#[tokio::test]
async fn routing_hints_travel_as_metadata_and_the_version_field() {
    let gw = start_default().await;
    let mut c = client(&gw).await;
    let mut req = request("breast-cancer", vec![fp32_input("input", 1, means())]);
    req.model_version = "1".into();
    assert_eq!(c.model_infer(req).await.expect("v1").into_inner().model_version, "1");
    let mut pinned = tonic::Request::new(request("breast-cancer", vec![fp32_input("input", 1, means())]));
    pinned.metadata_mut().insert("x-model-version", "1".parse().expect("ascii"));
    assert_eq!(c.model_infer(pinned).await.expect("pinned").into_inner().model_version, "1");
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains(r#"gateway_requests_total{code="200",model="breast-cancer",protocol="grpc",version="1"} 2"#),
        "{metrics}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn every_bad_input_maps_to_its_code_with_a_message() {
    let mut cfg = config(&bundled_models());
    cfg.models.watch_interval_ms = 0;
    cfg.skew.invalid_policy = gateway::skew::InvalidPolicy::Reject;
    cfg.server.max_body_bytes = 64 * 1024;
    let gw = start(cfg).await;
    let mut c = client(&gw).await;
    let m = means();
    let mut nan = m.clone();
    nan[3] = f32::NAN;
    let mut wrong_type = fp32_input("input", 1, vec![]);
    wrong_type.datatype = "FP64".into();
    wrong_type.shape = vec![1, 30];
    wrong_type.contents = Some(pb::InferTensorContents {
        fp64_contents: m.iter().map(|&x| f64::from(x)).collect(),
        ..Default::default()
    });
    let mut unknown_output = request("breast-cancer", vec![fp32_input("input", 1, m.clone())]);
    unknown_output.outputs = vec![InferRequestedOutputTensor { name: "nope".into(), parameters: Default::default() }];
    let mut unknown_version = request("breast-cancer", vec![fp32_input("input", 1, m.clone())]);
    unknown_version.model_version = "9".into();
    let cases: Vec<(pb::ModelInferRequest, Code, &str)> = vec![
        (request("nope", vec![]), Code::NotFound, "unknown model 'nope'"),
        (unknown_version, Code::NotFound, "unknown version '9'"),
        (request("breast-cancer", vec![]), Code::InvalidArgument, "missing input 'input'"),
        (
            request("breast-cancer", vec![fp32_input("input", 1, m[..29].to_vec())]),
            Code::InvalidArgument,
            "input 'input'",
        ),
        (request("breast-cancer", vec![wrong_type]), Code::InvalidArgument, "FP32"),
        (
            request("breast-cancer", vec![fp32_input("other", 1, m.clone())]),
            Code::InvalidArgument,
            "unknown input 'other'",
        ),
        (unknown_output, Code::InvalidArgument, "unknown output 'nope'"),
        // JSON cannot carry NaN; gRPC can, and the reject policy names the feature.
        (request("breast-cancer", vec![fp32_input("input", 1, nan)]), Code::InvalidArgument, "feature 'mean area'"),
        (
            request("breast-cancer", vec![fp32_input("input", 1000, m.iter().copied().cycle().take(30_000).collect())]),
            // tonic's own code for a message over the limit (grpc-go would say RESOURCE_EXHAUSTED).
            Code::OutOfRange,
            "message length too large",
        ),
    ];
    for (req, code, expect) in cases {
        let e = c.model_infer(req).await.expect_err(expect);
        assert_eq!(e.code(), code, "{expect}: {e:?}");
        assert!(e.message().contains(expect), "{expect} not in: {}", e.message());
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn deadlines_and_overload() {
    // A slow version as the only one: the fixture takes milliseconds per call.
    let repo = scratch_dir();
    copy_version("breast-cancer", "1", &repo, "1");
    let slow = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/breast-cancer/slow");
    std::fs::copy(slow.join("model.onnx"), repo.join("breast-cancer/1/model.onnx")).expect("slow model");
    let cfg = |timeout_ms: u64| {
        let mut cfg = config(&repo);
        cfg.models.watch_interval_ms = 0;
        cfg.server.max_concurrent_requests = 1;
        cfg.server.request_timeout_ms = timeout_ms;
        cfg.inference.threads = 1;
        cfg
    };
    // The server's own deadline (the client's grpc-timeout, when sooner, is honoured too, but tonic's client
    // enforces that one itself and cancels first).
    let hurried = start(cfg(1)).await;
    let e = client(&hurried)
        .await
        .model_infer(request("breast-cancer", vec![fp32_input("input", 1, means())]))
        .await
        .expect_err("deadline");
    assert_eq!(e.code(), Code::DeadlineExceeded, "{e:?}");
    assert!(e.message().contains("timed out after 1 ms"), "{e:?}");
    hurried.shutdown().await;

    let gw = start(cfg(10_000)).await;
    let c = client(&gw).await;
    // One request in progress at a time: of several sent at once, the extra ones are refused at once.
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut c = c.clone();
            let req = request("breast-cancer", vec![fp32_input("input", 1, means())]);
            tokio::spawn(async move { c.model_infer(req).await })
        })
        .collect();
    let mut codes = Vec::new();
    for call in calls {
        codes.push(call.await.expect("task").map(|_| Code::Ok).unwrap_or_else(|e| e.code()));
    }
    assert!(codes.contains(&Code::Ok), "{codes:?}");
    assert!(codes.contains(&Code::ResourceExhausted), "{codes:?}");
    assert!(codes.iter().all(|c| matches!(c, Code::Ok | Code::ResourceExhausted)), "{codes:?}");
    gw.shutdown().await;
}

/// Sends raw bytes as a ModelInfer message: what a broken or hostile client can put on the wire.
#[derive(Debug, Clone, Copy, Default)]
struct RawBytes;

struct RawEncoder;
struct AnyDecoder;

impl tonic::codec::Encoder for RawEncoder {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut tonic::codec::EncodeBuf<'_>) -> Result<(), tonic::Status> {
        bytes::BufMut::put_slice(dst, &item);
        Ok(())
    }
}

impl tonic::codec::Decoder for AnyDecoder {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut tonic::codec::DecodeBuf<'_>) -> Result<Option<()>, tonic::Status> {
        bytes::Buf::advance(src, bytes::Buf::remaining(src));
        Ok(Some(()))
    }
}

impl tonic::codec::Codec for RawBytes {
    type Encode = Vec<u8>;
    type Decode = ();
    type Encoder = RawEncoder;
    type Decoder = AnyDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> AnyDecoder {
        AnyDecoder
    }
}

/// Malformed messages and metadata are the client's fault, and each answer says which part is wrong.
#[tokio::test]
async fn malformed_messages_and_metadata_are_invalid_arguments() {
    let gw = start_default().await;
    let channel = Channel::from_shared(format!("http://{}", gw.grpc_addr)).expect("uri").connect().await.expect("c");
    let mut raw = tonic::client::Grpc::new(channel);
    let path = http::uri::PathAndQuery::from_static("/inference.GRPCInferenceService/ModelInfer");
    for garbage in [vec![0xff; 16], vec![0x0a, 0x05, b'a'], vec![0x12, 0xff, 0xff, 0xff, 0xff, 0x0f]] {
        raw.ready().await.expect("ready");
        let e = raw.unary(tonic::Request::new(garbage.clone()), path.clone(), RawBytes).await.expect_err("garbage");
        assert_eq!(e.code(), Code::InvalidArgument, "{garbage:?}: {e:?}");
    }
    let mut c = client(&gw).await;
    let ok = || request("breast-cancer", vec![fp32_input("input", 1, means())]);
    let mut req = tonic::Request::new(ok());
    req.metadata_mut().insert("grpc-timeout", "soon".parse().expect("ascii"));
    let e = c.model_infer(req).await.expect_err("bad timeout");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("grpc-timeout"), "{}", e.message());
    let mut req = tonic::Request::new(ok());
    req.metadata_mut().append("x-model-version", "1".parse().expect("ascii"));
    req.metadata_mut().append("x-model-version", "2".parse().expect("ascii"));
    let e = c.model_infer(req).await.expect_err("repeated pin");
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("x-model-version") && e.message().contains("more than once"), "{}", e.message());
    c.model_infer(ok()).await.expect("a good request still works");
    gw.shutdown().await;
}

/// Compressed messages both ways (tritonclient's `compression_algorithm`), on `ModelInfer`, which the gateway
/// dispatches itself, and on a call that goes through tonic's router: the same encodings are accepted and sent.
#[tokio::test]
async fn compressed_messages_both_ways_on_every_call() {
    use tonic::codec::CompressionEncoding;
    let gw = start_default().await;
    let plain = client(&gw)
        .await
        .model_infer(request("breast-cancer", vec![fp32_input("input", 3, three_rows())]))
        .await
        .expect("infer")
        .into_inner();
    for (encoding, name) in [(CompressionEncoding::Gzip, "gzip"), (CompressionEncoding::Deflate, "deflate")] {
        let mut c = client(&gw).await.send_compressed(encoding).accept_compressed(encoding);
        let r = c
            .model_infer(request("breast-cancer", vec![fp32_input("input", 3, three_rows())]))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(r.metadata().get("grpc-encoding").map(|v| v.to_str().expect("ascii")), Some(name));
        let r = r.into_inner();
        assert_eq!(
            (&r.model_name, &r.outputs, &r.raw_output_contents),
            (&plain.model_name, &plain.outputs, &plain.raw_output_contents)
        );
        let meta = c
            .model_metadata(pb::ModelMetadataRequest { name: "breast-cancer".into(), version: String::new() })
            .await
            .unwrap_or_else(|e| panic!("{name}: {e:?}"));
        assert_eq!(meta.metadata().get("grpc-encoding").map(|v| v.to_str().expect("ascii")), Some(name));
        assert_eq!(meta.into_inner().name, "breast-cancer");
    }
}

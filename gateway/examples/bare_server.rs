//! The baselines `make bench` compares the gateway against: the least a server can do to answer the Open Inference
//! Protocol with ONNX Runtime. Over HTTP, one axum route with serde into a fixed struct; over gRPC (when a second
//! address is given), one tonic `ModelInfer` reading and writing raw little-endian tensors. Either way the session
//! runs inline on the async worker (one session per worker thread), with no validation, routing, metrics, queue
//! or limits.
//!
//! `cargo run --release --example bare_server -- 127.0.0.1:18100 models/breast-cancer/2/model.onnx [127.0.0.1:18101]`

use std::cell::RefCell;
use std::path::PathBuf;

use axum::Json;
use axum::routing::post;
use gateway::protocol::pb;
use gateway::protocol::pb::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use ort::session::Session;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct Req {
    inputs: Vec<Input>,
}

#[derive(Deserialize)]
struct Input {
    shape: Vec<i64>,
    data: Vec<f32>,
}

#[derive(Serialize)]
struct Resp {
    model_name: &'static str,
    outputs: Vec<Out>,
}

#[derive(Serialize)]
struct Out {
    name: &'static str,
    datatype: &'static str,
    shape: Vec<i64>,
    data: serde_json::Value,
}

thread_local! {
    static SESSION: RefCell<Option<Session>> = const { RefCell::new(None) };
}

/// Runs the model on this worker thread's session (made on first use): labels and class probabilities.
fn run(
    env: &'static ort::environment::Environment,
    model: &PathBuf,
    shape: Vec<i64>,
    data: Vec<f32>,
) -> (Vec<i64>, Vec<f32>) {
    SESSION
        .with(|s| -> anyhow::Result<(Vec<i64>, Vec<f32>)> {
            let mut s = s.borrow_mut();
            if s.is_none() {
                let mut b = Session::builder(env)?.with_intra_threads(1).map_err(|e| anyhow::anyhow!("{e}"))?;
                *s = Some(b.commit_from_file(model).map_err(|e| anyhow::anyhow!("{e}"))?);
            }
            let session = s.as_mut().ok_or_else(|| anyhow::anyhow!("no session"))?;
            let t = ort::value::Tensor::from_array((shape, data))?;
            let out = session.run(ort::inputs!["input" => t])?;
            let label = out["label"].try_extract_tensor::<i64>()?.1.to_vec();
            let probs = out["probabilities"].try_extract_tensor::<f32>()?.1.to_vec();
            Ok((label, probs))
        })
        .unwrap_or_default()
}

/// The bare gRPC service: `ModelInfer` on raw tensors; every other call is tonic's default, UNIMPLEMENTED.
struct Bare {
    env: &'static ort::environment::Environment,
    model: PathBuf,
}

#[tonic::async_trait]
impl GrpcInferenceService for Bare {
    async fn model_infer(
        &self,
        request: tonic::Request<pb::ModelInferRequest>,
    ) -> Result<tonic::Response<pb::ModelInferResponse>, tonic::Status> {
        let r = request.into_inner();
        let (input, raw) = match (r.inputs.first(), r.raw_input_contents.first()) {
            (Some(i), Some(raw)) => (i, raw),
            _ => return Err(tonic::Status::invalid_argument("one input as raw_input_contents")),
        };
        let data = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let (label, probs) = run(self.env, &self.model, input.shape.clone(), data);
        let n = label.len() as i64;
        let out = |name: &str, datatype: &str, shape: Vec<i64>| pb::model_infer_response::InferOutputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            ..Default::default()
        };
        Ok(tonic::Response::new(pb::ModelInferResponse {
            model_name: r.model_name,
            outputs: vec![out("label", "INT64", vec![n]), out("probabilities", "FP32", vec![n, 2])],
            raw_output_contents: vec![
                label.iter().flat_map(|v| v.to_le_bytes()).collect(),
                probs.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ],
            ..Default::default()
        }))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18100".into());
    let model = PathBuf::from(args.next().unwrap_or_else(|| "models/breast-cancer/2/model.onnx".into()));
    let grpc_addr = args.next();
    let lib = gateway::model::onnx::locate_library(None);
    let env = gateway::model::onnx::init_runtime(&lib).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // SIGTERM exits through `exit`, so a build instrumented for profile-guided optimisation writes its counts
        // (`make build-pgo PGO_BUILD=bare`); a task of its own, off the request path.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            term.recv().await;
            std::process::exit(0);
        });
        if let Some(grpc_addr) = grpc_addr {
            let service = GrpcInferenceServiceServer::new(Bare { env, model: model.clone() });
            let grpc_addr: std::net::SocketAddr = grpc_addr.parse()?;
            println!("bare gRPC server on {grpc_addr}");
            tokio::spawn(tonic::transport::Server::builder().add_service(service).serve(grpc_addr));
        }
        let infer = post(move |Json(req): Json<Req>| {
            let model = model.clone();
            async move {
                let input = &req.inputs[0];
                let (label, probs) = run(env, &model, input.shape.clone(), input.data.clone());
                let n = label.len() as i64;
                Json(Resp {
                    model_name: "bare",
                    outputs: vec![
                        Out { name: "label", datatype: "INT64", shape: vec![n], data: serde_json::json!(label) },
                        Out {
                            name: "probabilities",
                            datatype: "FP32",
                            shape: vec![n, 2],
                            data: serde_json::json!(probs),
                        },
                    ],
                })
            }
        });
        let app = axum::Router::new()
            .route("/v2/models/{m}/infer", infer.clone())
            .route("/v2/models/{m}/versions/{v}/infer", infer);
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("bare server on {addr}");
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

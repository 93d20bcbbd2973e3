//! The baseline `make bench` compares the gateway against: the least a server can do to answer the Open Inference
//! Protocol with ONNX Runtime. One axum route, serde into a fixed struct, the session run inline on the async worker
//! (one session per worker thread), no validation, routing, metrics, queue or limits.
//!
//! `cargo run --release --example bare_server -- 127.0.0.1:18100 models/breast-cancer/2/model.onnx`

use std::cell::RefCell;
use std::path::PathBuf;

use axum::Json;
use axum::routing::post;
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

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18100".into());
    let model = PathBuf::from(args.next().unwrap_or_else(|| "models/breast-cancer/2/model.onnx".into()));
    let lib = gateway::model::onnx::locate_library(None);
    let env = gateway::model::onnx::init_runtime(&lib).map_err(anyhow::Error::msg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        let app = axum::Router::new().route(
            "/v2/models/{m}/infer",
            post(move |Json(req): Json<Req>| {
                let model = model.clone();
                async move {
                    let input = &req.inputs[0];
                    let (label, probs) = SESSION
                        .with(|s| -> anyhow::Result<(Vec<i64>, Vec<f32>)> {
                            let mut s = s.borrow_mut();
                            if s.is_none() {
                                let mut b =
                                    Session::builder(env)?.with_intra_threads(1).map_err(|e| anyhow::anyhow!("{e}"))?;
                                *s = Some(b.commit_from_file(&model).map_err(|e| anyhow::anyhow!("{e}"))?);
                            }
                            let session = s.as_mut().ok_or_else(|| anyhow::anyhow!("no session"))?;
                            let t = ort::value::Tensor::from_array((input.shape.clone(), input.data.clone()))?;
                            let out = session.run(ort::inputs!["input" => t])?;
                            let label = out["label"].try_extract_tensor::<i64>()?.1.to_vec();
                            let probs = out["probabilities"].try_extract_tensor::<f32>()?.1.to_vec();
                            Ok((label, probs))
                        })
                        .unwrap_or_default();
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
            }),
        );
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("bare server on {addr}");
        axum::serve(listener, app).await?;
        anyhow::Ok(())
    })
}

//! The binary tensor data extension, BYTES and FP16 over HTTP against a real gateway with the bundled models:
//! golden answers through binary requests and answers, compressed bodies, and every malformed binary request
//! answered with a 4xx that names what is wrong (never a 500, never a hang).

mod common;

use std::io::{Read, Write};

use common::*;
use serde_json::{Value, json};

/// A request body with binary tensors: the JSON header, then the raw tensors in input order.
fn binary_body(header: &Value, tail: &[u8]) -> (Vec<u8>, usize) {
    let mut body = serde_json::to_vec(header).expect("json");
    let n = body.len();
    body.extend_from_slice(tail);
    (body, n)
}

async fn send(
    c: &reqwest::Client,
    url: &str,
    body: Vec<u8>,
    header_len: Option<&str>,
) -> (u16, Vec<u8>, Option<usize>) {
    let mut req = c.post(url).body(body);
    if let Some(n) = header_len {
        req = req.header("Inference-Header-Content-Length", n);
    }
    let r = req.send().await.expect("sent");
    let status = r.status().as_u16();
    let json_len =
        r.headers().get("inference-header-content-length").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    (status, r.bytes().await.expect("body").to_vec(), json_len)
}

fn lp(strings: &[&str]) -> Vec<u8> {
    strings.iter().flat_map(|s| (s.len() as u32).to_le_bytes().into_iter().chain(s.bytes())).collect()
}

fn f16_bytes(xs: &[f32]) -> Vec<u8> {
    xs.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_bytes_and_half_floats_reproduce_the_golden_answers() {
    let gw = start(config(&bundled_models())).await;
    let c = client();

    // wine: FP32 features binary, the string category binary, one answer binary and one as JSON.
    let golden = &manifest("wine", "1")["golden"][1];
    let features: Vec<f32> =
        golden["inputs"][0]["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("num") as f32).collect();
    let colors: Vec<&str> =
        golden["inputs"][1]["data"].as_array().expect("data").iter().map(|v| v.as_str().expect("str")).collect();
    let rows = colors.len();
    let mut tail: Vec<u8> = features.iter().flat_map(|x| x.to_le_bytes()).collect();
    let color_bytes = lp(&colors);
    tail.extend_from_slice(&color_bytes);
    let header = json!({
        "inputs": [
            {"name": "features", "shape": [rows, 12], "datatype": "FP32", "parameters": {"binary_data_size": features.len() * 4}},
            {"name": "color", "shape": [rows, 1], "datatype": "BYTES", "parameters": {"binary_data_size": color_bytes.len()}},
        ],
        "outputs": [{"name": "label", "parameters": {"binary_data": true}}, {"name": "probabilities"}],
    });
    let (body, n) = binary_body(&header, &tail);
    let (status, answer, json_len) =
        send(&c, &url(&gw, "/v2/models/wine/versions/1/infer"), body, Some(&n.to_string())).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&answer));
    let json_len = json_len.expect("a binary answer says where its JSON ends");
    let head: Value = serde_json::from_slice(&answer[..json_len]).expect("json header");
    let labels: Vec<i64> =
        answer[json_len..].chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8"))).collect();
    assert_eq!(json!(labels), golden["outputs"][0]["data"], "{head}");
    assert_eq!(head["outputs"][0]["parameters"]["binary_data_size"], rows * 8);
    let probs = head["outputs"][1]["data"].as_array().expect("probabilities as JSON");
    for (got, want) in probs.iter().zip(golden["outputs"][1]["data"].as_array().expect("golden")) {
        assert!((got.as_f64().expect("num") - want.as_f64().expect("num")).abs() < 1e-4, "{got} vs {want}");
    }

    // breast-cancer-fp16: half floats in binary, gzip-compressed body, every answer binary.
    let golden = &manifest("breast-cancer-fp16", "1")["golden"][0];
    let xs: Vec<f32> =
        golden["inputs"][0]["data"].as_array().expect("data").iter().map(|v| v.as_f64().expect("num") as f32).collect();
    let header = json!({
        "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP16", "parameters": {"binary_data_size": 60}}],
        "parameters": {"binary_data_output": true},
    });
    let (body, n) = binary_body(&header, &f16_bytes(&xs));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&body).expect("gzip");
    let r = c
        .post(url(&gw, "/v2/models/breast-cancer-fp16/infer"))
        .header("Content-Encoding", "gzip")
        .header("Inference-Header-Content-Length", n.to_string())
        .body(gz.finish().expect("gzip"))
        .send()
        .await
        .expect("sent");
    assert_eq!(r.status().as_u16(), 200);
    let json_len: usize =
        r.headers()["inference-header-content-length"].to_str().expect("ascii").parse().expect("number");
    let answer = r.bytes().await.expect("body");
    let half: Vec<f32> =
        answer[json_len + 8..].chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect();
    let want: Vec<f64> =
        golden["outputs"][1]["data"].as_array().expect("golden").iter().map(|v| v.as_f64().expect("num")).collect();
    assert_eq!(half.len(), 2);
    for (g, w) in half.iter().zip(&want) {
        assert!((f64::from(*g) - w).abs() <= 1e-3 * (1.0 + w.abs()), "{g} vs {w}");
    }

    // BYTES and FP16 as JSON too.
    let (status, v) = post(
        &c,
        &url(&gw, "/v2/models/wine/infer"),
        json!({"inputs": [
            {"name": "features", "shape": [1, 12], "datatype": "FP32", "data": &features[..12]},
            {"name": "color", "shape": [1, 1], "datatype": "BYTES", "data": ["violet"]},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = post(
        &c,
        &url(&gw, "/v2/models/breast-cancer-fp16/infer"),
        json!({"inputs": [
            {"name": "input", "shape": [1, 30], "datatype": "FP16", "data": xs},
        ]})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["outputs"][1]["datatype"], "FP16");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_binary_requests_get_a_4xx_naming_the_input() {
    let mut cfg = config(&bundled_models());
    cfg.server.max_body_bytes = 64 * 1024;
    cfg.skew.invalid_policy = gateway::skew::InvalidPolicy::Reject;
    let gw = start(cfg).await;
    let c = client();
    let bc = url(&gw, "/v2/models/breast-cancer/infer");
    let fp32 = |size: usize| json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "parameters": {"binary_data_size": size}}]});
    let zeros = |n: usize| vec![0u8; n];

    let (body, n) = binary_body(&fp32(116), &zeros(116));
    let (s, b, _) = send(&c, &bc, body, Some(&n.to_string())).await;
    assert_eq!(s, 400);
    let msg = String::from_utf8_lossy(&b);
    assert!(msg.contains("input 'input': binary data holds 116 bytes") && msg.contains("= 120 bytes"), "{msg}");

    let (body, n) = binary_body(&fp32(124), &zeros(124));
    let (s, b, _) = send(&c, &bc, body, Some(&n.to_string())).await;
    assert!(s == 400 && String::from_utf8_lossy(&b).contains("input 'input': binary data holds 124 bytes"), "{s}");

    let (body, n) = binary_body(&fp32(120), &zeros(120));
    let (s, b, _) = send(&c, &bc, body.clone(), None).await;
    assert!(
        s == 400 && String::from_utf8_lossy(&b).contains("Inference-Header-Content-Length"),
        "{}",
        String::from_utf8_lossy(&b)
    );
    let (s, b, _) = send(&c, &bc, body.clone(), Some("twelve")).await;
    assert!(s == 400 && String::from_utf8_lossy(&b).contains("got 'twelve'"), "{}", String::from_utf8_lossy(&b));
    let (s, b, _) = send(&c, &bc, body.clone(), Some(&(body.len() + 1).to_string())).await;
    assert!(s == 400 && String::from_utf8_lossy(&b).contains("past the end"), "{}", String::from_utf8_lossy(&b));
    let (s, _, _) = send(&c, &bc, body, Some(&n.to_string())).await;
    assert_eq!(s, 200, "the same request with its header length is fine");

    let both = json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": vec![0.0; 30], "parameters": {"binary_data_size": 120}}]});
    let (body, n) = binary_body(&both, &zeros(120));
    let (s, b, _) = send(&c, &bc, body, Some(&n.to_string())).await;
    assert!(
        s == 400
            && String::from_utf8_lossy(&b).contains("input 'input' has both `data` and `parameters.binary_data_size`"),
        "{s}"
    );

    // A BYTES element whose length prefix runs past the buffer.
    let mut color = lp(&["pale"]);
    color[0] = 200;
    let header = json!({"inputs": [
        {"name": "features", "shape": [1, 12], "datatype": "FP32", "data": vec![1.0; 12]},
        {"name": "color", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": color.len()}},
    ]});
    let (body, n) = binary_body(&header, &color);
    let (s, b, _) = send(&c, &url(&gw, "/v2/models/wine/infer"), body, Some(&n.to_string())).await;
    let msg = String::from_utf8_lossy(&b);
    assert!(s == 400 && msg.contains("input 'color'") && msg.contains("claims 200 bytes"), "{s} {msg}");

    // A small gzip body that inflates past the body limit: 413, not the memory.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 8 * 1024 * 1024]).expect("gzip");
    let bomb = gz.finish().expect("gzip");
    assert!(bomb.len() < 64 * 1024);
    let r = c.post(&bc).header("Content-Encoding", "gzip").body(bomb).send().await.expect("sent");
    assert_eq!(r.status().as_u16(), 413, "{}", r.text().await.unwrap_or_default());

    // FP16 NaN and infinity under the reject policy: refused, naming the feature.
    for bad in [f32::NAN, f32::INFINITY] {
        let mut xs = vec![1.0f32; 30];
        xs[3] = bad;
        let header = json!({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP16", "parameters": {"binary_data_size": 60}}]});
        let (body, n) = binary_body(&header, &f16_bytes(&xs));
        let (s, b, _) = send(&c, &url(&gw, "/v2/models/breast-cancer-fp16/infer"), body, Some(&n.to_string())).await;
        let msg = String::from_utf8_lossy(&b);
        assert!(s == 400 && msg.contains("input 'input', feature 'mean area'"), "{bad}: {s} {msg}");
    }
    // Every refusal above was counted as the client's (4xx), none as the server's.
    let page = scrape(&gw).await;
    let codes: Vec<&str> = page.lines().filter(|l| l.starts_with("gateway_requests_total{")).collect();
    assert!(codes.iter().any(|l| l.contains("code=\"400\"")), "{codes:?}");
    assert!(codes.iter().any(|l| l.contains("code=\"413\"")), "{codes:?}");
    assert!(!codes.iter().any(|l| l.contains("code=\"5")), "{codes:?}");
    gw.shutdown().await;
}

/// Answers are compressed as `Accept-Encoding` asks, from 1 KiB on, whether the request body came compressed (the
/// router's path, which inflates it) or plain (the handler's own path): the same headers and bytes either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_compressed_as_accept_encoding_asks_on_both_paths() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let golden = &manifest("breast-cancer", "1")["golden"][0];
    let row = golden["inputs"][0]["data"].as_array().expect("data").clone();
    let request = |rows: usize| {
        let data: Vec<Value> = (0..rows).flat_map(|_| row.iter().cloned()).collect();
        serde_json::to_vec(
            &json!({"inputs": [{"name": "input", "shape": [rows, 30], "datatype": "FP32", "data": data}]}),
        )
        .expect("json")
    };
    let infer = url(&gw, "/v2/models/breast-cancer/versions/1/infer");
    let call = |body: Vec<u8>, gzip_body: bool, accept: Option<&'static str>| {
        let (c, infer) = (c.clone(), infer.clone());
        async move {
            let mut req = c.post(infer);
            let body = if gzip_body {
                req = req.header("Content-Encoding", "gzip");
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gz.write_all(&body).expect("gzip");
                gz.finish().expect("gzip")
            } else {
                body
            };
            if let Some(a) = accept {
                req = req.header("Accept-Encoding", a);
            }
            let r = req.body(body).send().await.expect("sent");
            assert_eq!(r.status().as_u16(), 200);
            let h = |name: &str| r.headers().get(name).map(|v| v.to_str().expect("ascii").to_owned());
            let (encoding, vary) = (h("content-encoding"), h("vary"));
            (encoding, vary, r.bytes().await.expect("body").to_vec())
        }
    };
    let inflate = |encoding: Option<&str>, bytes: &[u8]| -> Value {
        let mut out = Vec::new();
        match encoding {
            Some("gzip") => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).map(drop).expect("gunzip"),
            Some("deflate") => flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut out).map(drop).expect("inflate"),
            None => out = bytes.to_vec(),
            Some(other) => panic!("unexpected Content-Encoding {other}"),
        }
        serde_json::from_slice(&out).expect("a JSON answer")
    };

    // 64 rows answer well past 1 KiB; one row well under it.
    let (encoding, vary, plain) = call(request(64), false, None).await;
    assert_eq!((encoding.as_deref(), vary.as_deref()), (None, Some("accept-encoding")));
    let want = inflate(None, &plain);
    assert!(plain.len() > 1024, "{} bytes", plain.len());
    for gzip_body in [false, true] {
        for (accept, coding) in [
            ("gzip, deflate", Some("gzip")),
            ("gzip;q=0.5, deflate", Some("deflate")),
            ("x-gzip", Some("gzip")),
            ("br, gzip;q=0", None),
            ("identity", None),
        ] {
            let (encoding, vary, bytes) = call(request(64), gzip_body, Some(accept)).await;
            assert_eq!(encoding.as_deref(), coding, "{accept} (compressed request: {gzip_body})");
            assert_eq!(vary.as_deref(), Some("accept-encoding"), "{accept}");
            if coding.is_some() {
                assert!(bytes.len() < plain.len() / 2, "{accept}: {} bytes compressed", bytes.len());
            }
            assert_eq!(inflate(encoding.as_deref(), &bytes), want, "{accept} (compressed request: {gzip_body})");
        }
        let (encoding, vary, bytes) = call(request(1), gzip_body, Some("gzip")).await;
        assert_eq!((encoding, vary), (None, None), "a small answer is sent as it is");
        assert_eq!(inflate(None, &bytes)["outputs"][0]["data"], golden["outputs"][0]["data"]);
    }
}

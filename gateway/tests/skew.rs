//! Train/serve skew checks, each with the fault injected: drift against the training baseline, invalid values
//! under both policies, and staleness.

mod common;

use common::*;
use gateway::protocol::InferRequest;
use gateway::routing::RouteHint;
use gateway::skew::InvalidPolicy;
use gateway::tensor::{Tensor, TensorData};
use reqwest::Method;
use serde_json::{Value, json};

/// Rows drawn from the training distribution as the baseline describes it: a bin by its training share, then a
/// value uniformly inside it. `shift` moves the named features far above their training maximum.
fn rows(manifest: &Value, n: usize, shift: &[usize], rng: &mut fastrand::Rng) -> Vec<f64> {
    let feats = manifest["inputs"][0]["features"].as_array().expect("features");
    let mut out = Vec::with_capacity(n * feats.len());
    for _ in 0..n {
        for (i, f) in feats.iter().enumerate() {
            let edges: Vec<f64> = f["bin_edges"].as_array().expect("edges").iter().filter_map(Value::as_f64).collect();
            let counts: Vec<f64> =
                f["bin_counts"].as_array().expect("counts").iter().filter_map(Value::as_f64).collect();
            let (min, max) = (f["min"].as_f64().expect("min"), f["max"].as_f64().expect("max"));
            if shift.contains(&i) {
                out.push(max * 2.0 + 1.0);
                continue;
            }
            let total: f64 = counts.iter().sum();
            let mut pick = rng.f64() * total;
            let mut bin = 0;
            while bin + 1 < counts.len() && pick >= counts[bin] {
                pick -= counts[bin];
                bin += 1;
            }
            let lo = if bin == 0 { min } else { edges[bin - 1] };
            let hi = if bin == edges.len() { max } else { edges[bin] };
            // Strictly inside (lo, hi]: bins include their upper edge.
            out.push(lo + (hi - lo) * (1.0 - rng.f64() * 0.999));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_stays_low_in_distribution_and_flags_exactly_the_shifted_features() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut rng = fastrand::Rng::with_seed(11);
    let m = manifest("breast-cancer", "2");
    let shifted = [3usize, 7];
    for (version, shift) in [("2", &[][..]), ("1", &shifted[..])] {
        for _ in 0..20 {
            let data = rows(&m, 50, shift, &mut rng);
            let body = json!({"inputs": [{"name": "input", "shape": [50, 30], "datatype": "FP32", "data": data}]});
            let (s, v) =
                post(&c, &url(&gw, &format!("/v2/models/breast-cancer/versions/{version}/infer")), body.to_string())
                    .await;
            assert_eq!(s, 200, "{v}");
        }
    }
    let (s, skew) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer/skew", None).await;
    assert_eq!(s, 200, "{skew}");
    let version = |v: &str| {
        skew["versions"].as_array().expect("versions").iter().find(|x| x["version"] == json!(v)).expect("v").clone()
    };
    let clean = version("2");
    assert_eq!(clean["drift"]["rows"], json!(1000));
    let max_clean = clean["drift"]["max_psi"].as_f64().expect("psi");
    assert!(max_clean < 0.1, "in-distribution traffic keeps PSI low: {max_clean}");

    let drifted = version("1");
    let names: Vec<String> = m["inputs"][0]["features"]
        .as_array()
        .expect("f")
        .iter()
        .map(|f| f["name"].as_str().expect("n").to_string())
        .collect();
    for f in drifted["drift"]["features"].as_array().expect("features") {
        let name = f["name"].as_str().expect("name");
        let psi = f["psi"].as_f64().expect("psi");
        let idx = names.iter().position(|n| n == name).expect("known feature");
        if shifted.contains(&idx) {
            assert!(psi > 1.0, "shifted feature {name} has PSI {psi}");
            assert_eq!(f["out_of_range_share"], json!(1.0), "{name}: every value above the training max");
        } else {
            assert!(psi < 0.1, "unshifted feature {name} has PSI {psi}");
        }
    }
    assert!(shifted.iter().any(|&i| drifted["drift"]["max_psi_feature"] == json!(names[i])));
    let metrics = scrape(&gw).await;
    let psi_line = format!(r#"gateway_feature_psi{{feature="{}",model="breast-cancer",version="1"}}"#, names[3]);
    assert!(metrics.lines().any(|l| l.starts_with(&psi_line)), "{psi_line} missing");
    gw.shutdown().await;
}

/// Past the rows a time slot bins one by one, requests are sampled (whole small ones, rows of large ones) and
/// weighted: the window still counts about the rows sent, and in-distribution traffic still reads as such.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_version_is_sampled_and_still_reads_true() {
    let gw = start(config(&bundled_models())).await;
    let c = client();
    let mut rng = fastrand::Rng::with_seed(5);
    let m = manifest("breast-cancer", "2");
    let infer = url(&gw, "/v2/models/breast-cancer/versions/2/infer");
    let mut sent = 0;
    for n in std::iter::repeat_n(200, 30).chain(std::iter::repeat_n(1, 300)) {
        let body = json!({"inputs": [{"name": "input", "shape": [n, 30], "datatype": "FP32", "data": rows(&m, n, &[], &mut rng)}]});
        let (s, v) = post(&c, &infer, body.to_string()).await;
        assert_eq!(s, 200, "{v}");
        sent += n;
    }
    let (s, skew) = admin(&c, &gw, Method::GET, "/admin/models/breast-cancer/skew", None).await;
    assert_eq!(s, 200, "{skew}");
    let v2 = skew["versions"].as_array().expect("versions").iter().find(|x| x["version"] == json!("2")).expect("v2");
    let counted = v2["drift"]["rows"].as_u64().expect("rows") as usize;
    assert!(counted.abs_diff(sent) < sent / 10, "{sent} rows sent, {counted} counted");
    let max = v2["drift"]["max_psi"].as_f64().expect("psi");
    assert!(max < 0.1, "in-distribution traffic keeps PSI low when sampled: {max}");
    gw.shutdown().await;
}

fn nan_request(value: f32) -> InferRequest {
    let mut data = vec![1.0f32; 30];
    data[4] = value;
    InferRequest {
        id: None,
        inputs: vec![Tensor { name: "input".into(), shape: vec![1, 30], data: TensorData::F32(data) }],
        outputs: None,
    }
}

#[tokio::test]
async fn invalid_values_are_rejected_or_counted_by_policy() {
    // breast-cancer rejects, diabetes counts (the default).
    let mut cfg = config(&bundled_models());
    cfg.skew
        .models
        .insert("breast-cancer".into(), gateway::config::SkewOverride { invalid_policy: Some(InvalidPolicy::Reject) });
    let gw = start(cfg).await;
    let c = client();
    let slot = gw.core.model("breast-cancer").expect("model");
    for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = gw.core.infer(&slot, RouteHint::default(), nan_request(v)).await.expect_err("rejected").1.to_string();
        assert!(err.contains("feature 'mean smoothness' (row 0)") && err.contains("not allowed"), "{err}");
    }
    // Over HTTP: a negative size is outside the declared bounds [0, -].
    let mut body = breast_cancer_rows(2);
    body["inputs"][0]["data"][30 + 3] = json!(-5.0);
    let (s, v) = post(&c, &url(&gw, "/v2/models/breast-cancer/infer"), body.to_string()).await;
    assert_eq!(s, 400);
    assert!(
        v["error"].as_str().expect("error").contains("feature 'mean area' (row 1): -5, outside the declared bounds"),
        "{v}"
    );

    // The counting policy serves and counts.
    let slot = gw.core.model("diabetes").expect("model");
    let req = |features: Vec<f64>, sex: i64| InferRequest {
        id: None,
        inputs: vec![
            Tensor { name: "features".into(), shape: vec![1, 9], data: TensorData::F64(features) },
            Tensor { name: "sex".into(), shape: vec![1, 1], data: TensorData::I64(vec![sex]) },
        ],
        outputs: None,
    };
    let mut f = vec![50.0, 25.0, 90.0, 180.0, 100.0, 50.0, 4.0, 4.5, 90.0];
    f[0] = f64::NAN;
    assert!(gw.core.infer(&slot, RouteHint::default(), req(f.clone(), 1)).await.is_ok(), "counted, not refused");
    f[0] = f64::INFINITY;
    assert!(gw.core.infer(&slot, RouteHint::default(), req(f, 3)).await.is_ok());
    let (_, skew) = admin(&c, &gw, Method::GET, "/admin/models/diabetes/skew", None).await;
    let invalid = skew["versions"][0]["invalid_values"].as_array().expect("invalid").clone();
    let find = |name: &str| invalid.iter().find(|x| x["feature"] == json!(name)).cloned().unwrap_or(Value::Null);
    assert_eq!((find("age")["nan"].clone(), find("age")["inf"].clone()), (json!(1), json!(1)), "{invalid:?}");
    assert_eq!(find("sex")["out_of_bounds"], json!(1), "sex 3 is outside [1, 2]");
    let metrics = scrape(&gw).await;
    assert!(
        metrics.contains(r#"gateway_invalid_values_total{feature="age",kind="nan",model="diabetes",version="1"} 1"#)
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn old_models_are_marked_stale() {
    let c = client();
    for (max_days, stale) in [(0.01, true), (1000.0, false)] {
        let mut cfg = config(&bundled_models());
        cfg.skew.max_model_age_days = max_days;
        let gw = start(cfg).await;
        let (_, meta) = get(&c, &url(&gw, "/v2/models/breast-cancer")).await;
        assert_eq!(meta["stale"], json!(stale), "max age {max_days} days: {meta}");
        let metrics = scrape(&gw).await;
        let line = format!(r#"gateway_model_stale{{model="breast-cancer",version="2"}} {}"#, u8::from(stale));
        assert!(metrics.contains(&line), "{line}");
        assert!(metrics.contains("gateway_model_age_seconds"));
        gw.shutdown().await;
    }
}

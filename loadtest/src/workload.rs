//! Request bodies. A fixed set of distinct bodies is built before the run and cycled through, so generating load
//! costs the generator almost nothing and never distorts what it measures.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use serde_json::{Value, json};

/// One input of the model's signature and how to draw values for it.
#[derive(Debug, Clone)]
pub struct InputGen {
    pub name: String,
    pub datatype: String,
    /// Shape without the batch dimension.
    pub row_shape: Vec<i64>,
    /// Per element of a row: (low, high) to draw from uniformly.
    pub ranges: Vec<(f64, f64)>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub bodies: Vec<Bytes>,
    pub rows_per_request: usize,
    /// For binary tensor bodies (HTTP), the JSON header length of each body; empty otherwise.
    pub header_lens: Vec<usize>,
}

impl Workload {
    pub fn body(&self, i: usize) -> Bytes {
        self.bodies[i % self.bodies.len()].clone()
    }

    pub fn header_len(&self, i: usize) -> Option<usize> {
        (!self.header_lens.is_empty()).then(|| self.header_lens[i % self.header_lens.len()])
    }
}

/// Reads the signature from `GET /v2/models/{m}` metadata, and ranges from a manifest's training baseline when
/// one is given (values drawn inside [min, max] of each feature); otherwise values are drawn in [0, 1).
pub fn inputs_from_metadata(meta: &Value, manifest: Option<&Value>) -> anyhow::Result<Vec<InputGen>> {
    let inputs = meta["inputs"].as_array().context("model metadata has no 'inputs'")?;
    let mut out = Vec::new();
    for i in inputs {
        let name = i["name"].as_str().context("input without a name")?.to_string();
        let datatype = i["datatype"].as_str().context("input without a datatype")?.to_string();
        let shape: Vec<i64> =
            i["shape"].as_array().context("input without a shape")?.iter().filter_map(Value::as_i64).collect();
        let row_shape: Vec<i64> = shape.iter().skip(1).map(|&d| d.max(1)).collect();
        let n: i64 = row_shape.iter().product();
        let baseline = manifest
            .and_then(|m| m["inputs"].as_array())
            .and_then(|ins| ins.iter().find(|x| x["name"] == name))
            .and_then(|x| x["features"].as_array());
        let ranges = (0..n as usize)
            .map(|k| {
                baseline
                    .and_then(|b| b.get(k))
                    .and_then(|f| Some((f["min"].as_f64()?, f["max"].as_f64()?)))
                    .unwrap_or((0.0, 1.0))
            })
            .collect();
        out.push(InputGen { name, datatype, row_shape, ranges });
    }
    if out.is_empty() {
        bail!("the model declares no inputs");
    }
    Ok(out)
}

/// One tensor, written in the order tritonclient uses (datatype before data), which servers can parse in one pass.
/// (A `serde_json::Value` map would sort the keys and put `data` first.)
fn tensor(g: &InputGen, rows: usize, data: &[Value]) -> String {
    let mut shape = vec![rows as i64];
    shape.extend(&g.row_shape);
    format!(
        r#"{{"name":{},"shape":{},"datatype":{},"data":{}}}"#,
        Value::from(g.name.as_str()),
        Value::from(shape),
        Value::from(g.datatype.as_str()),
        Value::from(data.to_vec())
    )
}

fn body(tensors: &[String]) -> Bytes {
    Bytes::from(format!(r#"{{"inputs":[{}]}}"#, tensors.join(",")))
}

fn value(datatype: &str, lo: f64, hi: f64, rng: &mut fastrand::Rng) -> Value {
    let x = lo + (hi - lo) * rng.f64();
    match datatype {
        "FP32" | "FP64" => json!(x),
        "BOOL" => json!(x >= (lo + hi) / 2.0),
        _ => json!(x.round() as i64),
    }
}

/// Builds `variants` distinct bodies of `rows` random rows each.
pub fn random(inputs: &[InputGen], rows: usize, variants: usize, seed: u64) -> Workload {
    let mut rng = fastrand::Rng::with_seed(seed);
    let bodies = (0..variants.max(1))
        .map(|_| {
            let tensors: Vec<String> = inputs
                .iter()
                .map(|g| {
                    let data: Vec<Value> = (0..rows)
                        .flat_map(|_| {
                            g.ranges.iter().map(|&(lo, hi)| value(&g.datatype, lo, hi, &mut rng)).collect::<Vec<_>>()
                        })
                        .collect();
                    tensor(g, rows, &data)
                })
                .collect();
            body(&tensors)
        })
        .collect();
    Workload { bodies, rows_per_request: rows, header_lens: Vec::new() }
}

/// Builds bodies from a JSON Lines file: each line is an object mapping input names to one row of values (or,
/// for a single-input model, just the row as an array). Consecutive lines are grouped `rows` at a time.
pub fn from_rows_file(inputs: &[InputGen], path: &Path, rows: usize) -> anyhow::Result<Workload> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line).with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        lines.push(v);
    }
    if lines.len() < rows {
        bail!("{} has {} rows, fewer than the {rows} rows per request", path.display(), lines.len());
    }
    let bodies = lines
        .chunks_exact(rows)
        .map(|chunk| {
            let tensors: Vec<String> = inputs
                .iter()
                .map(|g| {
                    let data: Vec<Value> = chunk
                        .iter()
                        .flat_map(|l| {
                            let row = if inputs.len() == 1 && l.is_array() { l } else { &l[&g.name] };
                            row.as_array().cloned().unwrap_or_default()
                        })
                        .collect();
                    tensor(g, rows, &data)
                })
                .collect();
            body(&tensors)
        })
        .collect();
    Ok(Workload { bodies, rows_per_request: rows, header_lens: Vec::new() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Value {
        json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}, {"name": "k", "datatype": "INT64", "shape": [-1, 1]}]})
    }

    #[test]
    fn random_rows_stay_inside_the_baseline_ranges() {
        let manifest = json!({"inputs": [
            {"name": "x", "features": [{"min": 10.0, "max": 11.0}, {"min": -5.0, "max": -4.0}]},
            {"name": "k", "features": [{"min": 1.0, "max": 2.0}]}]});
        let inputs = inputs_from_metadata(&meta(), Some(&manifest)).expect("inputs");
        let w = random(&inputs, 3, 4, 1);
        assert_eq!(w.bodies.len(), 4);
        for b in &w.bodies {
            let v: Value = serde_json::from_slice(b).expect("json");
            assert_eq!(v["inputs"][0]["shape"], json!([3, 2]));
            let xs = v["inputs"][0]["data"].as_array().expect("data");
            for (i, x) in xs.iter().enumerate() {
                let x = x.as_f64().expect("num");
                let (lo, hi) = if i % 2 == 0 { (10.0, 11.0) } else { (-5.0, -4.0) };
                assert!((lo..=hi).contains(&x), "{x} outside [{lo}, {hi}]");
            }
            for k in v["inputs"][1]["data"].as_array().expect("data") {
                assert!(k == &json!(1) || k == &json!(2), "{k}");
            }
        }
    }

    #[test]
    fn tensors_are_written_in_tritonclient_order() {
        let inputs = inputs_from_metadata(&meta(), None).expect("inputs");
        let w = random(&inputs, 1, 1, 1);
        let text = std::str::from_utf8(&w.bodies[0]).expect("utf8");
        let (n, s, d, data) =
            (text.find("\"name\""), text.find("\"shape\""), text.find("\"datatype\""), text.find("\"data\""));
        assert!(n < s && s < d && d < data, "{text}");
    }

    #[test]
    fn rows_file_groups_lines() {
        let dir = std::env::temp_dir().join(format!("lt-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("rows.jsonl");
        std::fs::write(&p, "{\"x\":[1,2],\"k\":[3]}\n{\"x\":[4,5],\"k\":[6]}\n").expect("write");
        let inputs = inputs_from_metadata(&meta(), None).expect("inputs");
        let w = from_rows_file(&inputs, &p, 2).expect("workload");
        let v: Value = serde_json::from_slice(&w.bodies[0]).expect("json");
        assert_eq!(v["inputs"][0]["data"], json!([1, 2, 4, 5]));
        assert_eq!(v["inputs"][1]["shape"], json!([2, 1]));
        assert!(from_rows_file(&inputs, &p, 3).is_err());
    }
}

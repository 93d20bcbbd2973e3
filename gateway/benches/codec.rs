//! The hot-path codec: decoding v2 JSON requests and encoding responses, at 1 and 64 rows, with the tensor keys in
//! the order tritonclient writes them (datatype before data) and in alphabetical order (data first, as a
//! `serde_json::Value` map serializes), 17-digit values (Python's `repr` of a double) through the fast single-pass
//! decoder and through the serde path alone, and the binary tensor data extension on the same values (the JSON header,
//! then the raw little-endian floats), which tritonclient sends at its defaults.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use gateway::protocol::json::{
    AnswerFormat, decode_request, decode_request_parts, decode_request_with_serde, encode_answer, encode_outputs,
};
use gateway::tensor::{Tensor, TensorData};

fn body(rows: usize, datatype_first: bool) -> Vec<u8> {
    body_with(rows, datatype_first, |i| format!("{:.4}", 10.0 + (i % 97) as f64 * 1.37))
}

/// Values as Python's `repr` of a double writes them (and the load tester sends them): up to 17 digits.
fn body_17_digits(rows: usize) -> Vec<u8> {
    body_with(rows, true, |i| format!("{}", 10.0 + (i % 97) as f64 * 1.37 + 1.0 / (3.0 + i as f64)))
}

fn body_with(rows: usize, datatype_first: bool, value: impl Fn(usize) -> String) -> Vec<u8> {
    let data: Vec<String> = (0..rows * 30).map(value).collect();
    let data = data.join(",");
    let t = if datatype_first {
        format!(r#"{{"name":"input","shape":[{rows},30],"datatype":"FP32","data":[{data}]}}"#)
    } else {
        format!(r#"{{"data":[{data}],"datatype":"FP32","name":"input","shape":[{rows},30]}}"#)
    };
    format!(r#"{{"id":"42","inputs":[{t}]}}"#).into_bytes()
}

/// The same request with the tensor binary: (body, JSON header length).
fn binary_body(rows: usize) -> (Vec<u8>, usize) {
    let values: Vec<f32> = (0..rows * 30).map(|i| 10.0 + (i % 97) as f32 * 1.37).collect();
    let header = format!(
        r#"{{"id":"42","inputs":[{{"name":"input","shape":[{rows},30],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"label","parameters":{{"binary_data":true}}}},{{"name":"probabilities","parameters":{{"binary_data":true}}}}]}}"#,
        values.len() * 4
    );
    let mut body = header.clone().into_bytes();
    body.extend(values.iter().flat_map(|x| x.to_le_bytes()));
    (body, header.len())
}

fn outputs(rows: usize) -> Vec<Tensor> {
    vec![
        Tensor {
            name: "label".into(),
            shape: vec![rows as i64],
            data: TensorData::I64((0..rows as i64).map(|i| i % 2).collect()),
        },
        Tensor {
            name: "probabilities".into(),
            shape: vec![rows as i64, 2],
            data: TensorData::F32((0..rows * 2).map(|i| (i as f32 * 0.137).fract()).collect()),
        },
    ]
}

fn codec(c: &mut Criterion) {
    for rows in [1usize, 64] {
        let mut g = c.benchmark_group(format!("codec/{rows}row"));
        g.throughput(Throughput::Elements(rows as u64));
        for (label, first) in [("decode_datatype_first", true), ("decode_data_first", false)] {
            let b = body(rows, first);
            g.bench_function(label, |bench| {
                bench.iter(|| decode_request(std::hint::black_box(&b)).map(|r| r.inputs.len()))
            });
        }
        // The fast single-pass decoder against the serde path alone, on the same body.
        let b = body_17_digits(rows);
        assert_eq!(decode_request(&b).expect("decodes"), decode_request_with_serde(&b).expect("decodes").0);
        g.bench_function("decode_17_digits", |bench| {
            bench.iter(|| decode_request(std::hint::black_box(&b)).map(|r| r.inputs.len()))
        });
        g.bench_function("decode_17_digits_serde_path", |bench| {
            bench.iter(|| decode_request_with_serde(std::hint::black_box(&b)).map(|r| r.0.inputs.len()))
        });
        let (b, n) = binary_body(rows);
        g.bench_function("decode_binary", |bench| {
            bench.iter(|| decode_request_parts(std::hint::black_box(&b), Some(n)).map(|r| r.0.inputs.len()))
        });
        let outs = outputs(rows);
        g.bench_function("encode", |bench| {
            bench.iter(|| encode_outputs("breast-cancer", "2", Some("42"), std::hint::black_box(&outs)).len())
        });
        let format = decode_request_parts(&b, Some(n)).expect("decodes").1;
        assert!(!format.is_json() && format != AnswerFormat::default());
        g.bench_function("encode_binary", |bench| {
            bench.iter(|| encode_answer("breast-cancer", "2", Some("42"), std::hint::black_box(&outs), &format).0.len())
        });
        g.finish();
    }
}

criterion_group!(benches, codec);
criterion_main!(benches);

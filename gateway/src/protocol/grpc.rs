//! Tensors to and from the gRPC messages: typed `contents` fields and little-endian `raw_*_contents` buffers, as
//! the Open Inference Protocol defines them (the raw layout lives in [`crate::tensor::raw`]). Every message names
//! the input and what was expected.

use crate::error::GatewayError;
use crate::protocol::pb;
use crate::tensor::{DataType, Tensor, TensorData, element_count, raw, shape_problem};

fn invalid(msg: String) -> GatewayError {
    GatewayError::InvalidInput(msg)
}

/// The contents field that carries a datatype's values.
fn field_of(d: DataType) -> &'static str {
    match d {
        DataType::Bool => "bool_contents",
        DataType::U8 | DataType::U16 | DataType::U32 => "uint_contents",
        DataType::U64 => "uint64_contents",
        DataType::I8 | DataType::I16 | DataType::I32 => "int_contents",
        DataType::I64 => "int64_contents",
        DataType::F32 => "fp32_contents",
        DataType::F64 => "fp64_contents",
        DataType::Bytes => "bytes_contents",
        // The protocol has no typed field for half floats: they travel only as raw little-endian bytes.
        DataType::F16 => "raw_input_contents",
    }
}

/// Names of the non-empty contents fields.
fn filled(c: &pb::InferTensorContents) -> Vec<&'static str> {
    [
        ("bool_contents", c.bool_contents.is_empty()),
        ("int_contents", c.int_contents.is_empty()),
        ("int64_contents", c.int64_contents.is_empty()),
        ("uint_contents", c.uint_contents.is_empty()),
        ("uint64_contents", c.uint64_contents.is_empty()),
        ("fp32_contents", c.fp32_contents.is_empty()),
        ("fp64_contents", c.fp64_contents.is_empty()),
        ("bytes_contents", c.bytes_contents.is_empty()),
    ]
    .into_iter()
    .filter(|(_, empty)| !empty)
    .map(|(n, _)| n)
    .collect()
}

/// Narrows 32-bit protocol values into a smaller type, naming the first value that does not fit.
fn narrow<S: Copy + std::fmt::Display, T: TryFrom<S>>(
    name: &str,
    d: DataType,
    v: &[S],
) -> Result<Vec<T>, GatewayError> {
    v.iter()
        .map(|&x| T::try_from(x).map_err(|_| invalid(format!("input '{name}': {x} does not fit datatype {d}"))))
        .collect()
}

fn typed(name: &str, d: DataType, c: &pb::InferTensorContents) -> Result<TensorData, GatewayError> {
    let expected = field_of(d);
    if let Some(other) = filled(c).into_iter().find(|f| *f != expected) {
        return Err(invalid(format!(
            "input '{name}' has datatype {d}: its values go in contents.{expected}, not contents.{other}"
        )));
    }
    Ok(match d {
        DataType::Bool => TensorData::Bool(c.bool_contents.clone()),
        DataType::U8 => TensorData::U8(narrow(name, d, &c.uint_contents)?),
        DataType::U16 => TensorData::U16(narrow(name, d, &c.uint_contents)?),
        DataType::U32 => TensorData::U32(c.uint_contents.clone()),
        DataType::U64 => TensorData::U64(c.uint64_contents.clone()),
        DataType::I8 => TensorData::I8(narrow(name, d, &c.int_contents)?),
        DataType::I16 => TensorData::I16(narrow(name, d, &c.int_contents)?),
        DataType::I32 => TensorData::I32(c.int_contents.clone()),
        DataType::I64 => TensorData::I64(c.int64_contents.clone()),
        DataType::F32 => TensorData::F32(c.fp32_contents.clone()),
        DataType::F64 => TensorData::F64(c.fp64_contents.clone()),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents.clone()),
        DataType::F16 => {
            return Err(invalid(format!(
                "input '{name}' has datatype FP16, which has no typed contents field: send its values as \
                 little-endian half floats in raw_input_contents"
            )));
        }
    })
}

fn from_raw(name: &str, d: DataType, bytes: &[u8], count: usize) -> Result<TensorData, GatewayError> {
    raw::decode(d, bytes, count).map_err(|e| invalid(format!("input '{name}': raw_input_contents {e}")))
}

/// Decodes the inputs of a request. Returns them and whether they came raw (answers go back the same way).
pub fn decode_inputs(
    inputs: Vec<pb::model_infer_request::InferInputTensor>,
    raw_contents: Vec<Vec<u8>>,
) -> Result<(Vec<Tensor>, bool), GatewayError> {
    let is_raw = !raw_contents.is_empty();
    if is_raw && raw_contents.len() != inputs.len() {
        return Err(invalid(format!(
            "raw_input_contents has {} buffers for {} inputs; give one per input, in the order of 'inputs'",
            raw_contents.len(),
            inputs.len()
        )));
    }
    let mut raw_iter = raw_contents.into_iter();
    let mut out = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = input.name;
        let d = DataType::parse(&input.datatype).ok_or_else(|| {
            invalid(format!(
                "input '{name}': unknown datatype '{}', expected one of {}",
                input.datatype,
                DataType::names()
            ))
        })?;
        let count = element_count(&input.shape).ok_or_else(|| {
            invalid(format!("input '{name}': shape {:?} {}", input.shape, shape_problem(&input.shape)))
        })?;
        let data = match raw_iter.next() {
            Some(bytes) => {
                if input.contents.as_ref().is_some_and(|c| !filled(c).is_empty()) {
                    return Err(invalid(format!(
                        "input '{name}' has values both in contents and in raw_input_contents; use one"
                    )));
                }
                from_raw(&name, d, &bytes, count)?
            }
            None => typed(&name, d, &input.contents.unwrap_or_default())?,
        };
        if data.len() != count {
            return Err(invalid(format!(
                "input '{name}': shape {:?} needs {count} values, got {} in contents.{}",
                input.shape,
                data.len(),
                field_of(d)
            )));
        }
        out.push(Tensor { name, shape: input.shape, data });
    }
    Ok((out, is_raw))
}

/// Little-endian bytes of a buffer, for `raw_output_contents`.
pub fn to_raw(data: &TensorData) -> Vec<u8> {
    raw::encode(data)
}

/// Typed contents of a buffer (8- and 16-bit types widen to the 32-bit fields).
pub fn to_contents(data: &TensorData) -> pb::InferTensorContents {
    let mut c = pb::InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v.clone(),
        TensorData::U8(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U16(v) => c.uint_contents = v.iter().map(|&x| u32::from(x)).collect(),
        TensorData::U32(v) => c.uint_contents = v.clone(),
        TensorData::U64(v) => c.uint64_contents = v.clone(),
        TensorData::I8(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I16(v) => c.int_contents = v.iter().map(|&x| i32::from(x)).collect(),
        TensorData::I32(v) => c.int_contents = v.clone(),
        TensorData::I64(v) => c.int64_contents = v.clone(),
        TensorData::F32(v) => c.fp32_contents = v.clone(),
        TensorData::F64(v) => c.fp64_contents = v.clone(),
        TensorData::Bytes(v) => c.bytes_contents = v.clone(),
        // No typed field exists for FP16 (see `field_of`): widen to fp32 so a client that asked for typed
        // contents still gets the values.
        TensorData::F16(v) => c.fp32_contents = v.iter().map(|x| x.to_f32()).collect(),
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::model_infer_request::InferInputTensor;

    fn input(
        name: &str,
        datatype: &str,
        shape: Vec<i64>,
        contents: Option<pb::InferTensorContents>,
    ) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: datatype.into(),
            shape,
            parameters: Default::default(),
            contents,
        }
    }

    #[test]
    fn raw_and_typed_round_trip_for_every_supported_datatype() {
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![0, 255]),
            TensorData::U16(vec![1, 65535]),
            TensorData::U32(vec![7, u32::MAX]),
            TensorData::U64(vec![9, u64::MAX]),
            TensorData::I8(vec![-128, 127]),
            TensorData::I16(vec![-3, 300]),
            TensorData::I32(vec![-5, i32::MAX]),
            TensorData::I64(vec![i64::MIN, 4]),
            TensorData::F32(vec![1.5, f32::NAN]),
            TensorData::F64(vec![-2.25, f64::INFINITY]),
            TensorData::Bytes(vec![b"deep".to_vec(), b"\xff".to_vec()]),
        ];
        for data in samples {
            let d = data.datatype().as_str();
            let (typed, raw) = (to_contents(&data), to_raw(&data));
            let (t, is_raw) = decode_inputs(vec![input("x", d, vec![2], Some(typed))], vec![]).expect(d);
            assert!(!is_raw);
            let (r, is_raw) = decode_inputs(vec![input("x", d, vec![2], None)], vec![raw]).expect(d);
            assert!(is_raw);
            // NaN != NaN, so compare the bytes.
            assert_eq!(to_raw(&t[0].data), to_raw(&data), "{d} typed");
            assert_eq!(to_raw(&r[0].data), to_raw(&data), "{d} raw");
        }
    }

    #[test]
    fn bad_inputs_name_the_problem() {
        let fp32 = |v: Vec<f32>| Some(pb::InferTensorContents { fp32_contents: v, ..Default::default() });
        type Case = (Vec<InferInputTensor>, Vec<Vec<u8>>, &'static str);
        let cases: Vec<Case> = vec![
            (vec![input("x", "FP33", vec![1], fp32(vec![1.0]))], vec![], "unknown datatype 'FP33'"),
            (vec![input("x", "FP32", vec![2, 2], fp32(vec![1.0]))], vec![], "needs 4 values, got 1"),
            (vec![input("x", "FP32", vec![-1], fp32(vec![1.0]))], vec![], "non-negative"),
            (
                vec![input("x", "FP64", vec![1], fp32(vec![1.0]))],
                vec![],
                "contents.fp64_contents, not contents.fp32_contents",
            ),
            (vec![input("x", "FP32", vec![2], None)], vec![vec![0; 7]], "holds 7 bytes"),
            (vec![input("x", "FP32", vec![1], None)], vec![vec![0; 4], vec![0; 4]], "2 buffers for 1 inputs"),
            (vec![input("x", "FP32", vec![1], fp32(vec![1.0]))], vec![vec![0; 4]], "both in contents"),
            (
                vec![input(
                    "x",
                    "INT8",
                    vec![1],
                    Some(pb::InferTensorContents { int_contents: vec![300], ..Default::default() }),
                )],
                vec![],
                "300 does not fit datatype INT8",
            ),
            (vec![input("x", "BYTES", vec![1], None)], vec![vec![1]], "at least 4 bytes (the length prefix)"),
            (vec![input("x", "FP16", vec![1], fp32(vec![1.0]))], vec![], "raw_input_contents"),
        ];
        for (inputs, raw, expect) in cases {
            let e = decode_inputs(inputs, raw).expect_err(expect).to_string();
            assert!(e.contains(expect), "{e} (expected {expect})");
            assert!(e.contains("'x'") || e.contains("inputs"), "{e} names the input");
        }
    }
}

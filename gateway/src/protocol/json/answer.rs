//! An inference answer's JSON, written straight into the body: the same bytes serde_json writes for the answer's
//! wire structs (`{"model_name":..,"model_version":..,"id":..,"outputs":[{"name":..,"datatype":..,"shape":[..],
//! "parameters":{"binary_data_size":n},"data":[..]}]}`, compact, keys in that order), without serde's machinery.
//! Through serde every key was a string escaped byte by byte and every value a trip through the serializer's
//! state machine: about 2,200 instructions for a 1-row answer, more than the rest of the answer's path together.
//! Here the keys are constants, a string that needs no escape (every name in practice) is copied whole, and
//! numbers go through the same formatters serde_json uses (`zmij`, `itoa`), so the text of every value is
//! unchanged. The rare string that needs an escape is written by serde_json itself.

use crate::tensor::{Tensor, TensorData};

/// Appends the answer's JSON to `buf`. An output for which `binary` says yes gets
/// `"parameters":{"binary_data_size":n}` (`n` its raw size) instead of `"data"`.
pub(super) fn write(
    buf: &mut Vec<u8>,
    model: &str,
    version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    binary: impl Fn(&Tensor) -> Option<usize>,
) {
    buf.extend_from_slice(b"{\"model_name\":");
    string(buf, model);
    buf.extend_from_slice(b",\"model_version\":");
    string(buf, version);
    if let Some(id) = id {
        buf.extend_from_slice(b",\"id\":");
        string(buf, id);
    }
    buf.extend_from_slice(b",\"outputs\":[");
    for (i, t) in outputs.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        buf.extend_from_slice(b"{\"name\":");
        string(buf, &t.name);
        buf.extend_from_slice(b",\"datatype\":\"");
        // Datatype names are upper-case ASCII letters and digits: nothing to escape.
        buf.extend_from_slice(t.datatype().as_str().as_bytes());
        buf.extend_from_slice(b"\",\"shape\":");
        list(buf, &t.shape, |buf, d| int(buf, *d));
        match binary(t) {
            Some(size) => {
                buf.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
                int(buf, size);
                buf.push(b'}');
            }
            None => {
                buf.extend_from_slice(b",\"data\":");
                data(buf, &t.data);
            }
        }
        buf.push(b'}');
    }
    buf.extend_from_slice(b"]}");
}

/// A JSON string: copied whole when nothing in it needs an escape, else escaped exactly as serde_json does.
fn string(buf: &mut Vec<u8>, s: &str) {
    if s.bytes().any(|b| b < 0x20 || b == b'"' || b == b'\\') {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *buf, s);
    } else {
        buf.push(b'"');
        buf.extend_from_slice(s.as_bytes());
        buf.push(b'"');
    }
}

fn list<T>(buf: &mut Vec<u8>, items: &[T], mut each: impl FnMut(&mut Vec<u8>, &T)) {
    buf.push(b'[');
    for (i, x) in items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        each(buf, x);
    }
    buf.push(b']');
}

fn int(buf: &mut Vec<u8>, x: impl itoa::Integer) {
    buf.extend_from_slice(itoa::Buffer::new().format(x).as_bytes());
}

/// serde_json writes a float that is not finite as `null`; so does this.
fn float(buf: &mut Vec<u8>, x: impl zmij::Float, finite: bool) {
    if finite {
        buf.extend_from_slice(zmij::Buffer::new().format_finite(x).as_bytes());
    } else {
        buf.extend_from_slice(b"null");
    }
}

/// A tensor's values as a flat JSON array: numbers, booleans, and for BYTES strings (bytes that are not UTF-8 are
/// replaced, as JSON holds text).
fn data(buf: &mut Vec<u8>, data: &TensorData) {
    macro_rules! ints {
        ($($v:ident),*) => {
            match data {
                $(TensorData::$v(d) => list(buf, d, |buf, &x| int(buf, x)),)*
                TensorData::Bool(d) => list(buf, d, |buf, &b| buf.extend_from_slice(if b { b"true" } else { b"false" })),
                TensorData::F16(d) => list(buf, d, |buf, &x| float(buf, x.to_f32(), x.is_finite())),
                TensorData::F32(d) => list(buf, d, |buf, &x| float(buf, x, x.is_finite())),
                TensorData::F64(d) => list(buf, d, |buf, &x| float(buf, x, x.is_finite())),
                TensorData::Bytes(d) => list(buf, d, |buf, b| string(buf, &String::from_utf8_lossy(b))),
            }
        };
    }
    ints!(U8, U16, U32, U64, I8, I16, I32, I64)
}

#[cfg(test)]
mod tests {
    use half::f16;
    use proptest::prelude::*;
    use serde::Serialize;

    use super::*;
    use crate::tensor::raw;

    /// The answer's wire structs as serde_json writes them: the oracle the hand-written encoder must match byte
    /// for byte (this was the encoder before).
    #[derive(Serialize)]
    struct ResponseWire<'a> {
        model_name: &'a str,
        model_version: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a str>,
        outputs: Vec<OutputWire<'a>>,
    }

    #[derive(Serialize)]
    struct OutputWire<'a> {
        name: &'a str,
        datatype: crate::tensor::DataType,
        shape: &'a [i64],
        #[serde(skip_serializing_if = "Option::is_none")]
        parameters: Option<BinaryParams>,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a TensorData>,
    }

    #[derive(Serialize)]
    struct BinaryParams {
        binary_data_size: usize,
    }

    fn with_serde(model: &str, version: &str, id: Option<&str>, outputs: &[Tensor], binary: &[bool]) -> Vec<u8> {
        let outputs = outputs
            .iter()
            .zip(binary)
            .map(|(t, &b)| OutputWire {
                name: &t.name,
                datatype: t.datatype(),
                shape: &t.shape,
                parameters: b.then(|| BinaryParams { binary_data_size: raw::encoded_len(&t.data) }),
                data: (!b).then_some(&t.data),
            })
            .collect();
        serde_json::to_vec(&ResponseWire { model_name: model, model_version: version, id, outputs }).expect("encodes")
    }

    fn by_hand(model: &str, version: &str, id: Option<&str>, outputs: &[Tensor], binary: &[bool]) -> Vec<u8> {
        let mut buf = Vec::new();
        let which = |t: &Tensor| {
            let i = outputs.iter().position(|o| std::ptr::eq(o, t)).expect("one of the outputs");
            binary[i].then(|| raw::encoded_len(&t.data))
        };
        write(&mut buf, model, version, id, outputs, which);
        buf
    }

    /// Names with every kind of character: plain, quotes and backslashes, control characters, non-ASCII.
    fn name() -> impl Strategy<Value = String> {
        prop_oneof![4 => "[a-z_0-9.-]{0,12}", 1 => any::<String>(), 1 => "[\"\\\\\u{0}-\u{1f}\u{7f}é€😀a]{0,6}"]
    }

    fn floats32() -> impl Strategy<Value = f32> {
        prop_oneof![any::<f32>(), Just(f32::NAN), Just(f32::INFINITY), Just(-0.0f32), Just(1e-45f32), -1e3f32..1e3]
    }

    fn floats64() -> impl Strategy<Value = f64> {
        prop_oneof![any::<f64>(), Just(f64::NEG_INFINITY), Just(5e-324f64), -1e3f64..1e3]
    }

    fn data() -> impl Strategy<Value = TensorData> {
        use proptest::collection::vec;
        prop_oneof![
            vec(any::<bool>(), 0..5).prop_map(TensorData::Bool),
            vec(any::<u8>(), 0..5).prop_map(TensorData::U8),
            vec(any::<u16>(), 0..5).prop_map(TensorData::U16),
            vec(any::<u32>(), 0..5).prop_map(TensorData::U32),
            vec(any::<u64>(), 0..5).prop_map(TensorData::U64),
            vec(any::<i8>(), 0..5).prop_map(TensorData::I8),
            vec(any::<i16>(), 0..5).prop_map(TensorData::I16),
            vec(any::<i32>(), 0..5).prop_map(TensorData::I32),
            vec(any::<i64>(), 0..5).prop_map(TensorData::I64),
            vec(any::<u16>().prop_map(f16::from_bits), 0..5).prop_map(TensorData::F16),
            vec(floats32(), 0..5).prop_map(TensorData::F32),
            vec(floats64(), 0..5).prop_map(TensorData::F64),
            vec(prop_oneof![vec(any::<u8>(), 0..6), name().prop_map(String::into_bytes)], 0..4)
                .prop_map(TensorData::Bytes),
        ]
    }

    fn output() -> impl Strategy<Value = (Tensor, bool)> {
        (name(), proptest::collection::vec(-3i64..1_000_000, 0..3), data(), any::<bool>())
            .prop_map(|(name, shape, data, binary)| (Tensor { name, shape, data }, binary))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        /// Every answer, byte for byte what serde_json wrote for the wire structs: any names, ids, shapes, every
        /// datatype with its edge values (NaN, infinities, -0, subnormals, extremes), binary or JSON outputs.
        #[test]
        fn writes_what_serde_json_wrote(
            model in name(),
            version in name(),
            id in proptest::option::of(name()),
            outputs in proptest::collection::vec(output(), 0..4),
        ) {
            let (outputs, binary): (Vec<Tensor>, Vec<bool>) = outputs.into_iter().unzip();
            let expected = with_serde(&model, &version, id.as_deref(), &outputs, &binary);
            let got = by_hand(&model, &version, id.as_deref(), &outputs, &binary);
            prop_assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&expected));
            prop_assert_eq!(got, expected);
        }
    }

    #[test]
    fn a_one_row_answer_reads_as_before() {
        let outputs = [
            Tensor { name: "label".into(), shape: vec![1], data: TensorData::I64(vec![0]) },
            Tensor { name: "probabilities".into(), shape: vec![1, 2], data: TensorData::F32(vec![0.99258584, 0.5]) },
        ];
        let got = by_hand("breast-cancer", "1", Some("a\"b"), &outputs, &[false, true]);
        assert_eq!(
            String::from_utf8(got).expect("utf-8"),
            r#"{"model_name":"breast-cancer","model_version":"1","id":"a\"b","outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[0]},{"name":"probabilities","datatype":"FP32","shape":[1,2],"parameters":{"binary_data_size":8}}]}"#
        );
    }
}

//! Open Inference Protocol REST wire types (request, response, metadata) and their conversion to and from the
//! protocol-neutral tensors. Decoding borrows the body and parses each tensor's data straight into its typed
//! buffer once the datatype is known. Requests in the shape nearly every client sends take a single-pass decoder
//! (`fast`); the serde types here decode every other shape and write every error message. Answers are written by
//! hand (`answer`), byte for byte what serde_json wrote. The front end decodes requests and encodes answers; the
//! remote backend encodes requests and decodes answers with the same types.
//!
//! The binary tensor data extension (Triton's `binary_tensor_data`, which KServe adopted) rides on the same types:
//! a request's JSON header is followed by raw tensors (an input with `parameters.binary_data_size` and no `data`),
//! and an answer puts the outputs a client asked to get binary after its JSON header in the same way.

mod answer;
mod fast;

use std::borrow::Cow;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::manifest::TensorSpec;
use crate::protocol::InferRequest;
use crate::tensor::json::{DataSeed, decode_data};
use crate::tensor::{DataType, Tensor, TensorData, element_count, raw, shape_problem};

#[derive(Deserialize)]
struct RequestWire<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<InputWire<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestWire>>,
    #[serde(default)]
    parameters: Option<RequestParams>,
}

/// The request parameters this gateway reads; others are accepted and ignored.
#[derive(Deserialize, Default)]
struct RequestParams {
    /// Binary outputs for every output that does not say otherwise.
    #[serde(default)]
    binary_data_output: Option<bool>,
}

/// The tensor parameters this gateway reads; others are accepted and ignored.
#[derive(Deserialize, Default)]
struct TensorParams {
    /// Input: the tensor's size in the binary part after the JSON header.
    #[serde(default)]
    binary_data_size: Option<u64>,
    /// Requested output: answer it binary (`true`) or as JSON `data` (`false`).
    #[serde(default)]
    binary_data: Option<bool>,
}

/// One input tensor, on the general path (requests the fast decoder leaves to serde). Integer, boolean and string
/// data is parsed in the same pass as the body when `datatype` (and ideally `shape`) come before `data`; float
/// data, and any data that comes before its datatype, is kept as raw text and parsed once the datatype is known.
struct InputWire<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    /// Absent for a binary input.
    data: Option<DataField<'a>>,
    binary_size: Option<u64>,
}

enum DataField<'a> {
    Raw(&'a RawValue),
    Parsed(TensorData),
}

impl<'de: 'a, 'a> Deserialize<'de> for InputWire<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(InputVisitor(std::marker::PhantomData))
    }
}

struct InputVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for InputVisitor<'a> {
    type Value = InputWire<'a>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an input tensor object with name, shape, datatype and data")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut name, mut shape, mut datatype, mut data) = (None::<String>, None::<Vec<i64>>, None::<String>, None);
        let mut params: Option<TensorParams> = None;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "name" if name.is_none() => name = Some(map.next_value()?),
                "shape" if shape.is_none() => shape = Some(map.next_value()?),
                "datatype" if datatype.is_none() => datatype = Some(map.next_value()?),
                "data" if data.is_none() => {
                    let known = datatype.as_deref().and_then(DataType::parse);
                    data = Some(match known {
                        // Floats keep their text for the scanner, which rounds every value once and exactly, as the
                        // fast decoder does (serde_json's own parser is best-effort, and FP32 went through f64).
                        Some(dt) if !dt.is_float() => {
                            let limit = shape.as_deref().and_then(element_count).unwrap_or(usize::MAX);
                            DataField::Parsed(map.next_value_seed(DataSeed {
                                datatype: dt,
                                limit,
                                input: name.as_deref(),
                            })?)
                        }
                        _ => DataField::Raw(map.next_value()?),
                    });
                }
                "parameters" if params.is_none() => params = Some(map.next_value()?),
                "name" | "shape" | "datatype" | "data" | "parameters" => {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let name = name.ok_or_else(|| de::Error::missing_field("name"))?;
        let binary_size = params.and_then(|p| p.binary_data_size);
        match (&data, binary_size) {
            (None, None) => {
                return Err(de::Error::custom(format_args!(
                    "input '{name}': missing field `data` (or `parameters.binary_data_size` for a binary tensor)"
                )));
            }
            (Some(_), Some(_)) => {
                return Err(de::Error::custom(format_args!(
                    "input '{name}' has both `data` and `parameters.binary_data_size`; a tensor is either JSON or \
                     binary"
                )));
            }
            _ => {}
        }
        Ok(InputWire {
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            name,
            data,
            binary_size,
        })
    }
}

#[derive(Deserialize)]
struct OutputRequestWire {
    name: String,
    #[serde(default)]
    parameters: Option<TensorParams>,
}

/// How the outputs of an answer travel: as JSON `data`, or binary after the JSON header.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AnswerFormat {
    /// The request's `binary_data_output`.
    binary_by_default: bool,
    /// Outputs whose own `binary_data` parameter said yes or no.
    explicit: Vec<(String, bool)>,
}

impl AnswerFormat {
    pub fn is_binary(&self, output: &str) -> bool {
        self.explicit.iter().find(|(n, _)| n == output).map_or(self.binary_by_default, |(_, b)| *b)
    }

    /// JSON only: the plain protocol, no extension.
    pub fn is_json(&self) -> bool {
        !self.binary_by_default && self.explicit.iter().all(|(_, b)| !b)
    }
}

/// Header giving the length of the JSON part of a message with binary tensors after it.
pub const HEADER_LENGTH: &str = "inference-header-content-length";

/// Decodes a plain JSON inference request body; errors name the input and what was expected.
pub fn decode_request(body: &[u8]) -> Result<InferRequest, GatewayError> {
    decode_request_parts(body, None).map(|(r, _)| r)
}

/// Decodes an inference request that may carry binary tensors: `header_len` (from `Inference-Header-Content-Length`)
/// splits the body into the JSON header and the binary part. Also returns how the client wants its outputs.
pub fn decode_request_parts(
    body: &[u8],
    header_len: Option<usize>,
) -> Result<(InferRequest, AnswerFormat), GatewayError> {
    decode(body, header_len, true)
}

/// A plain JSON request decoded by the serde path alone, skipping the fast decoder: the fuzz target and the tests
/// hold the fast decoder to exactly this.
#[doc(hidden)]
pub fn decode_request_with_serde(body: &[u8]) -> Result<(InferRequest, AnswerFormat), GatewayError> {
    decode(body, None, false)
}

fn decode(body: &[u8], header_len: Option<usize>, fast: bool) -> Result<(InferRequest, AnswerFormat), GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::invalid("request body is empty; expected a JSON inference request"));
    }
    let (json, binary) = match header_len {
        Some(n) if n > body.len() => {
            return Err(GatewayError::invalid(format!(
                "Inference-Header-Content-Length is {n}, past the end of the {}-byte body",
                body.len()
            )));
        }
        Some(n) => body.split_at(n),
        None => (body, &[][..]),
    };
    if fast
        && header_len.is_none()
        && let Some(decoded) = fast::request(json)
    {
        return Ok(decoded);
    }
    decode_with_serde(json, binary, header_len)
}

/// The general decoder: every request shape the protocol allows, and every error message.
fn decode_with_serde(
    json: &[u8],
    binary: &[u8],
    header_len: Option<usize>,
) -> Result<(InferRequest, AnswerFormat), GatewayError> {
    let wire: RequestWire<'_> = serde_json::from_slice(json).map_err(|e| {
        let hint = if header_len.is_none() && e.to_string().starts_with("trailing characters") {
            "; a request with binary tensors gives the length of its JSON header in Inference-Header-Content-Length"
        } else {
            ""
        };
        GatewayError::invalid(format!("invalid inference request: {e}{hint}"))
    })?;
    if wire.inputs.is_empty() {
        return Err(GatewayError::invalid("'inputs' is empty; at least one input tensor is required"));
    }
    let inputs = tensors(wire.inputs, "input", binary)?;
    let mut format = AnswerFormat {
        binary_by_default: wire.parameters.and_then(|p| p.binary_data_output).unwrap_or(false),
        explicit: Vec::new(),
    };
    let outputs = wire.outputs.map(|o| {
        o.into_iter()
            .map(|o| {
                if let Some(b) = o.parameters.and_then(|p| p.binary_data) {
                    format.explicit.push((o.name.clone(), b));
                }
                o.name
            })
            .collect()
    });
    Ok((InferRequest { id: wire.id, inputs, outputs }, format))
}

#[derive(Deserialize)]
struct ResponseIn<'a> {
    #[serde(borrow)]
    outputs: Vec<InputWire<'a>>,
}

/// Decodes the outputs of an inference response (an upstream's answer), with the same checks as a request.
pub fn decode_response(body: &[u8]) -> Result<Vec<Tensor>, GatewayError> {
    let wire: ResponseIn<'_> =
        serde_json::from_slice(body).map_err(|e| GatewayError::invalid(format!("invalid inference response: {e}")))?;
    tensors(wire.outputs, "output", &[])
}

/// Turns decoded wire tensors into checked tensors; `what` ("input" or "output") names them in messages. Binary
/// tensors take their bytes from `binary` in order; every byte of it must belong to one.
fn tensors(wire: Vec<InputWire<'_>>, what: &str, mut binary: &[u8]) -> Result<Vec<Tensor>, GatewayError> {
    let mut out = Vec::with_capacity(wire.len());
    for i in wire {
        let name = i.name;
        let datatype = DataType::parse(&i.datatype).ok_or_else(|| {
            GatewayError::invalid(format!(
                "{what} '{name}': unknown datatype '{}', expected one of {}",
                i.datatype,
                DataType::names()
            ))
        })?;
        let expected = element_count(&i.shape).ok_or_else(|| {
            GatewayError::invalid(format!("{what} '{name}': shape {:?} {}", i.shape, shape_problem(&i.shape)))
        })?;
        let data = match i.data {
            Some(DataField::Parsed(d)) => d,
            Some(DataField::Raw(raw)) => decode_data(raw, datatype, expected)
                .map_err(|e| GatewayError::invalid(format!("{what} '{name}': 'data': {e}")))?,
            None => {
                let size = i.binary_size.unwrap_or(0);
                let size = usize::try_from(size).ok().filter(|&n| n <= binary.len()).ok_or_else(|| {
                    GatewayError::invalid(format!(
                        "{what} '{name}': parameters.binary_data_size is {size}, but only {} bytes of binary data \
                         remain after the JSON header",
                        binary.len()
                    ))
                })?;
                let (bytes, rest) = binary.split_at(size);
                binary = rest;
                raw::decode(datatype, bytes, expected)
                    .map_err(|e| GatewayError::invalid(format!("{what} '{name}': binary data {e}")))?
            }
        };
        if data.len() != expected {
            return Err(GatewayError::invalid(format!(
                "{what} '{name}': shape {:?} needs {expected} values, 'data' has {}",
                i.shape,
                data.len()
            )));
        }
        out.push(Tensor { name, shape: i.shape, data });
    }
    if !binary.is_empty() {
        return Err(GatewayError::invalid(format!(
            "{} bytes after the JSON header belong to no input (the inputs' binary_data_size add up to less)",
            binary.len()
        )));
    }
    Ok(out)
}

#[derive(Serialize)]
struct RequestOut<'a> {
    inputs: Vec<TensorOut<'a>>,
}

/// Encodes an inference request (for an upstream server).
pub fn encode_request(inputs: &[Tensor]) -> Vec<u8> {
    let wire = RequestOut { inputs: inputs.iter().map(TensorOut::of).collect() };
    let mut buf = Vec::with_capacity(64 + inputs.iter().map(|t| 48 + t.data.len() * 12).sum::<usize>());
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, &wire);
    buf
}

/// A tensor as an upstream server's request carries it.
#[derive(Serialize)]
struct TensorOut<'a> {
    name: &'a str,
    datatype: DataType,
    shape: &'a [i64],
    data: &'a TensorData,
}

impl<'a> TensorOut<'a> {
    fn of(t: &'a Tensor) -> Self {
        Self { name: &t.name, datatype: t.datatype(), shape: &t.shape, data: &t.data }
    }
}

/// Encodes an inference response.
pub fn encode_outputs(model: &str, version: &str, id: Option<&str>, outputs: &[Tensor]) -> Vec<u8> {
    let cap = 96 + outputs.iter().map(|t| 48 + t.data.len() * 12).sum::<usize>();
    let mut buf = Vec::with_capacity(cap);
    answer::write(&mut buf, model, version, id, outputs, |_| None);
    buf
}

/// Encodes an answer as the client asked: plain JSON, or a JSON header with the binary outputs after it. Returns
/// the body and, when it has a binary part, the length of its JSON header (for `Inference-Header-Content-Length`).
pub fn encode_answer(
    model: &str,
    version: &str,
    id: Option<&str>,
    outputs: &[Tensor],
    format: &AnswerFormat,
) -> (Vec<u8>, Option<usize>) {
    if format.is_json() || !outputs.iter().any(|t| format.is_binary(&t.name)) {
        return (encode_outputs(model, version, id, outputs), None);
    }
    let binary = |t: &Tensor| format.is_binary(&t.name).then(|| raw::encoded_len(&t.data));
    let mut buf = Vec::with_capacity(256 + outputs.iter().filter_map(binary).sum::<usize>());
    answer::write(&mut buf, model, version, id, outputs, binary);
    let header = buf.len();
    for t in outputs.iter().filter(|t| format.is_binary(&t.name)) {
        raw::encode_into(&t.data, &mut buf);
    }
    (buf, Some(header))
}

#[derive(Serialize)]
pub struct ServerMetadata {
    pub name: &'static str,
    pub version: &'static str,
    pub extensions: Vec<&'static str>,
}

/// `GET /v2/models/{m}[/versions/{v}]`. `versions` lists ready versions; `states` (an extension) tells why the
/// others are not serving.
#[derive(Serialize)]
pub struct ModelMetadata {
    pub name: String,
    pub versions: Vec<String>,
    pub platform: &'static str,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    pub states: Vec<VersionStateWire>,
    /// When the answering version was trained, and whether it is older than the configured maximum age.
    pub trained_at: String,
    pub stale: bool,
}

#[derive(Serialize)]
pub struct VersionStateWire {
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For a serving version whose files changed or vanished since it loaded: `changed` or `missing`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<&'static str>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        decode_request(body.as_bytes()).expect_err("should fail").to_string()
    }

    #[test]
    fn decodes_nested_and_flat_inputs() {
        let r = decode_request(
            br#"{"id":"a","inputs":[{"name":"x","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4]]}],
                "outputs":[{"name":"label"}],"parameters":{"p":1}}"#,
        )
        .expect("decodes");
        assert_eq!(r.id.as_deref(), Some("a"));
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]));
        assert_eq!(r.outputs, Some(vec!["label".to_string()]));
    }

    #[test]
    fn requests_and_responses_round_trip_through_the_codec() {
        let x = Tensor { name: "x".into(), shape: vec![2, 1], data: TensorData::F64(vec![1.5, -2.0]) };
        let r = decode_request(&encode_request(std::slice::from_ref(&x))).expect("decodes");
        assert_eq!(r.inputs[0], x);
        let body = encode_outputs("m", "1", Some("id"), std::slice::from_ref(&x));
        assert_eq!(decode_response(&body).expect("decodes"), vec![x]);
        let e = decode_response(br#"{"outputs":[{"name":"y","shape":[2],"datatype":"FP32","data":[1]}]}"#);
        assert!(e.expect_err("short").to_string().contains("output 'y': shape [2] needs 2 values"));
    }

    /// A request as tritonclient writes it at its defaults: JSON header, then the raw tensors in input order.
    fn binary_request(header: &str, tail: &[u8]) -> (Vec<u8>, usize) {
        let mut body = header.as_bytes().to_vec();
        body.extend_from_slice(tail);
        (body, header.len())
    }

    #[test]
    fn binary_inputs_mix_with_json_and_answers_follow_the_request() {
        let mut tail = Vec::new();
        tail.extend_from_slice(&1.5f32.to_le_bytes());
        tail.extend_from_slice(&(-2f32).to_le_bytes());
        tail.extend_from_slice(&[4, 0, 0, 0]);
        tail.extend_from_slice(b"pale");
        let (body, n) = binary_request(
            r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","parameters":{"binary_data_size":8}},
                {"name":"j","shape":[1],"datatype":"INT64","data":[7]},
                {"name":"c","shape":[1,1],"datatype":"BYTES","parameters":{"binary_data_size":8}}],
               "outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b"}]}"#,
            &tail,
        );
        let (r, format) = decode_request_parts(&body, Some(n)).expect("decodes");
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![1.5, -2.0]));
        assert_eq!(r.inputs[1].data, TensorData::I64(vec![7]));
        assert_eq!(r.inputs[2].data, TensorData::Bytes(vec![b"pale".to_vec()]));
        assert!(format.is_binary("a") && !format.is_binary("b") && !format.is_json());

        let a = Tensor { name: "a".into(), shape: vec![2], data: TensorData::I64(vec![1, 2]) };
        let b = Tensor { name: "b".into(), shape: vec![1], data: TensorData::F32(vec![0.5]) };
        let (body, header) = encode_answer("m", "1", None, &[a, b.clone()], &format);
        let header = header.expect("has a binary part");
        let json: serde_json::Value = serde_json::from_slice(&body[..header]).expect("json header");
        assert_eq!(json["outputs"][0]["parameters"]["binary_data_size"], 16);
        assert!(json["outputs"][0].get("data").is_none());
        assert_eq!(json["outputs"][1]["data"], serde_json::json!([0.5]));
        assert_eq!(&body[header..], &[1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
        // JSON asked, JSON answered, with no header length.
        assert_eq!(encode_answer("m", "1", None, &[b], &AnswerFormat::default()).1, None);
    }

    #[test]
    fn binary_sizes_are_checked_and_named() {
        let header = r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let bad = |tail: &[u8], n: Option<usize>| {
            let (body, len) = binary_request(header, tail);
            decode_request_parts(&body, n.or(Some(len))).expect_err("refused").to_string()
        };
        assert!(bad(&[0; 4], None).contains("input 'x': parameters.binary_data_size is 8, but only 4 bytes"));
        assert!(bad(&[0; 12], None).contains("4 bytes after the JSON header belong to no input"));
        assert!(bad(&[0; 8], Some(10_000)).contains("past the end"));
        let (body, _) = binary_request(header, &[0; 8]);
        let e = decode_request_parts(&body, None).expect_err("no header length").to_string();
        assert!(e.contains("Inference-Header-Content-Length"), "{e}");
        let short = r#"{"inputs":[{"name":"x","shape":[3],"datatype":"FP32","parameters":{"binary_data_size":8}}]}"#;
        let (body, n) = binary_request(short, &[0; 8]);
        let e = decode_request_parts(&body, Some(n)).expect_err("size against shape").to_string();
        assert!(e.contains("input 'x': binary data holds 8 bytes") && e.contains("= 12 bytes"), "{e}");
        let both =
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{"binary_data_size":4}}]}"#;
        let (body, n) = binary_request(both, &[0; 4]);
        let e = decode_request_parts(&body, Some(n)).expect_err("both").to_string();
        assert!(e.contains("input 'x' has both `data` and `parameters.binary_data_size`"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("{").contains("invalid inference request"));
        assert!(err(r#"{"inputs":[{"name":"x","datatype":"FP32","data":[1]}]}"#).contains("missing field `shape`"));
        assert!(
            err(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FLOAT","data":[1]}]}"#)
                .contains("input 'x': unknown datatype 'FLOAT'")
        );
        assert!(
            err(r#"{"inputs":[{"name":"x","shape":[2],"datatype":"FP32","data":[1]}]}"#)
                .contains("shape [2] needs 2 values, 'data' has 1")
        );
        assert!(err(r#"{"inputs":[{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}]}"#).contains("non-negative"));
        let e = err(r#"{"inputs":[{"name":"x","shape":[4294967296,4294967296],"datatype":"FP32","data":[1]}]}"#);
        assert!(e.contains("overflows") && !e.contains("non-negative"), "{e}");
        assert!(
            err(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":["a"]}]}"#)
                .contains("input 'x': 'data'")
        );
        assert!(err(r#"{"inputs":[]}"#).contains("'inputs' is empty"));
        // Datatype before data: parsed in the same pass, and the message still names the input.
        let e = err(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"UINT8","data":[300]}]}"#);
        assert!(e.contains("input 'x': 'data': value 300 is not a valid UINT8"), "{e}");
        let e = err(r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1],"data":[2]}]}"#);
        assert!(e.contains("duplicate field `data`"), "{e}");
        assert!(err("").contains("empty"));
        // serde says "expected" before our description of the data; it must not say it twice.
        for body in [
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":"a"}]}"#,
            r#"{"inputs":[{"name":"x","data":"a","shape":[1],"datatype":"FP32"}]}"#,
        ] {
            let e = err(body);
            assert!(e.contains("expected an array of numbers") && !e.contains("expected expected"), "{e}");
        }
    }
}

//! Open Inference Protocol REST wire types (request, response, metadata) and their conversion to and from the
//! protocol-neutral tensors. Decoding borrows the body and parses each tensor's data straight into its typed
//! buffer once the datatype is known. The front end decodes requests and encodes responses; the remote backend
//! encodes requests and decodes responses with the same types.

use std::borrow::Cow;

use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::GatewayError;
use crate::manifest::TensorSpec;
use crate::protocol::InferRequest;
use crate::tensor::json::{DataSeed, decode_data};
use crate::tensor::{DataType, Tensor, TensorData, element_count, shape_problem};

#[derive(Deserialize)]
struct RequestWire<'a> {
    #[serde(default)]
    id: Option<String>,
    #[serde(borrow)]
    inputs: Vec<InputWire<'a>>,
    #[serde(default)]
    outputs: Option<Vec<OutputRequestWire>>,
    #[serde(default, rename = "parameters")]
    _parameters: Option<IgnoredAny>,
}

/// One input tensor. Its data is parsed in the same pass as the body when `datatype` (and ideally `shape`) come
/// before `data`, as tritonclient writes them; otherwise the raw text is kept and parsed once the datatype is known.
struct InputWire<'a> {
    name: String,
    shape: Vec<i64>,
    datatype: String,
    data: DataField<'a>,
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
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "name" if name.is_none() => name = Some(map.next_value()?),
                "shape" if shape.is_none() => shape = Some(map.next_value()?),
                "datatype" if datatype.is_none() => datatype = Some(map.next_value()?),
                "data" if data.is_none() => {
                    let known = datatype.as_deref().and_then(DataType::parse).filter(|d| d.is_supported());
                    data = Some(match known {
                        Some(dt) => {
                            let limit = shape.as_deref().and_then(element_count).unwrap_or(usize::MAX);
                            DataField::Parsed(map.next_value_seed(DataSeed {
                                datatype: dt,
                                limit,
                                input: name.as_deref(),
                            })?)
                        }
                        None => DataField::Raw(map.next_value()?),
                    });
                }
                "name" | "shape" | "datatype" | "data" => {
                    return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(InputWire {
            name: name.ok_or_else(|| de::Error::missing_field("name"))?,
            shape: shape.ok_or_else(|| de::Error::missing_field("shape"))?,
            datatype: datatype.ok_or_else(|| de::Error::missing_field("datatype"))?,
            data: data.ok_or_else(|| de::Error::missing_field("data"))?,
        })
    }
}

#[derive(Deserialize)]
struct OutputRequestWire {
    name: String,
    #[serde(default, rename = "parameters")]
    _parameters: Option<IgnoredAny>,
}

/// Decodes an inference request body; errors name the input and what was expected.
pub fn decode_request(body: &[u8]) -> Result<InferRequest, GatewayError> {
    if body.is_empty() {
        return Err(GatewayError::invalid("request body is empty; expected a JSON inference request"));
    }
    let wire: RequestWire<'_> =
        serde_json::from_slice(body).map_err(|e| GatewayError::invalid(format!("invalid inference request: {e}")))?;
    if wire.inputs.is_empty() {
        return Err(GatewayError::invalid("'inputs' is empty; at least one input tensor is required"));
    }
    let inputs = tensors(wire.inputs, "input")?;
    let outputs = wire.outputs.map(|o| o.into_iter().map(|o| o.name).collect());
    Ok(InferRequest { id: wire.id, inputs, outputs })
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
    tensors(wire.outputs, "output")
}

/// Turns decoded wire tensors into checked tensors; `what` ("input" or "output") names them in messages.
fn tensors(wire: Vec<InputWire<'_>>, what: &str) -> Result<Vec<Tensor>, GatewayError> {
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
            DataField::Parsed(d) => d,
            DataField::Raw(raw) => decode_data(raw, datatype, expected)
                .map_err(|e| GatewayError::invalid(format!("{what} '{name}': 'data': {e}")))?,
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
    Ok(out)
}

#[derive(Serialize)]
struct RequestOut<'a> {
    inputs: Vec<OutputWire<'a>>,
}

/// Encodes an inference request (for an upstream server).
pub fn encode_request(inputs: &[Tensor]) -> Vec<u8> {
    let wire = RequestOut { inputs: inputs.iter().map(OutputWire::of).collect() };
    let mut buf = Vec::with_capacity(64 + inputs.iter().map(|t| 48 + t.data.len() * 12).sum::<usize>());
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, &wire);
    buf
}

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
    datatype: DataType,
    shape: &'a [i64],
    data: &'a TensorData,
}

impl<'a> OutputWire<'a> {
    fn of(t: &'a Tensor) -> Self {
        Self { name: &t.name, datatype: t.datatype(), shape: &t.shape, data: &t.data }
    }
}

/// Encodes an inference response.
pub fn encode_outputs(model: &str, version: &str, id: Option<&str>, outputs: &[Tensor]) -> Vec<u8> {
    let wire = ResponseWire {
        model_name: model,
        model_version: version,
        id,
        outputs: outputs.iter().map(OutputWire::of).collect(),
    };
    let cap = 96 + outputs.iter().map(|t| 48 + t.data.len() * 12).sum::<usize>();
    let mut buf = Vec::with_capacity(cap);
    // Serializing plain structs of numbers and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut buf, &wire);
    buf
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

//! A single-pass decoder for the JSON inference requests nearly every client sends: `id`, `inputs` with `name`,
//! `shape`, `datatype` and then FP32 or FP64 `data`, and optionally `outputs` and the binary-output parameters.
//! It reads the body once, numbers straight into the tensor's buffer, where serde's path reads float data twice
//! (serde_json checks and captures it, then the scanner parses it). Anything else (another key, an escape in a
//! string, another datatype, a value of the wrong kind, any error at all) returns `None`, and the request goes to
//! the serde path, which decodes it or writes the error message. So this path only has to be right about what it
//! accepts: a property test and the `json_request` fuzz target check that it decodes exactly what the serde path
//! decodes, and both paths convert numbers with the same code (`tensor::number::scan_number`).

use super::AnswerFormat;
use crate::protocol::InferRequest;
use crate::tensor::number::{Number, scan_number};
use crate::tensor::{DataType, Tensor, TensorData, element_count};

/// Nesting deeper than any real tensor goes to the serde path (which refuses beyond 32 levels too).
const MAX_DEPTH: usize = 32;

/// The request and how its outputs travel, or `None` for the serde path.
pub(super) fn request(body: &[u8]) -> Option<(InferRequest, AnswerFormat)> {
    let mut p = Parser { b: body, i: 0 };
    let (mut id, mut inputs, mut outputs, mut params) = (None, None, None, None);
    p.object(|p, key| {
        match key {
            "id" if id.is_none() => id = Some(p.string()?.to_owned()),
            "inputs" if inputs.is_none() => inputs = Some(p.list(1, Parser::input)?),
            "outputs" if outputs.is_none() => outputs = Some(p.list(2, Parser::output)?),
            "parameters" if params.is_none() => params = Some(p.flag("binary_data_output")?),
            _ => return None,
        }
        Some(())
    })?;
    p.ws();
    if p.i != body.len() {
        return None;
    }
    let inputs = inputs.filter(|i: &Vec<Tensor>| !i.is_empty())?;
    let mut format = AnswerFormat { binary_by_default: params.flatten().unwrap_or(false), explicit: Vec::new() };
    let outputs = outputs.map(|list: Vec<(String, Option<bool>)>| {
        list.into_iter()
            .map(|(name, binary)| {
                if let Some(b) = binary {
                    format.explicit.push((name.clone(), b));
                }
                name
            })
            .collect()
    });
    Some((InferRequest { id, inputs, outputs }, format))
}

/// The float types the fast decoder takes, converted exactly (`tensor::number::Number`).
trait Float: Sized {
    fn of(n: &Number<'_>) -> Option<Self>;
}

impl Float for f32 {
    #[inline]
    fn of(n: &Number<'_>) -> Option<Self> {
        n.to_f32()
    }
}

impl Float for f64 {
    #[inline]
    fn of(n: &Number<'_>) -> Option<Self> {
        n.to_f64()
    }
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after white space, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// A string with no escapes and no control characters (serde_json refuses those raw), as UTF-8.
    fn string(&mut self) -> Option<&'a str> {
        self.eat(b'"')?;
        let rest = &self.b[self.i..];
        let len = rest.iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.i += len + 1;
        std::str::from_utf8(&rest[..len]).ok()
    }

    fn boolean(&mut self) -> Option<bool> {
        self.ws();
        let rest = &self.b[self.i..];
        let (v, n) = if rest.starts_with(b"true") {
            (true, 4)
        } else if rest.starts_with(b"false") {
            (false, 5)
        } else {
            return None;
        };
        self.i += n;
        Some(v)
    }

    /// A parameters object holding at most the one boolean `key` (other parameters go to the serde path).
    fn flag(&mut self, key: &str) -> Option<Option<bool>> {
        let mut flag = None;
        self.object(|p, k| {
            if k != key || flag.is_some() {
                return None;
            }
            flag = Some(p.boolean()?);
            Some(())
        })?;
        Some(flag)
    }

    /// An object's members, each handed to `member` with its key (which must consume the value).
    fn object(&mut self, mut member: impl FnMut(&mut Self, &'a str) -> Option<()>) -> Option<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = self.string()?;
            self.eat(b':')?;
            member(self, key)?;
            if !self.more(b'}')? {
                return Some(());
            }
        }
    }

    /// After a member or an element: `true` past a comma, `false` past the closing `close`.
    #[inline]
    fn more(&mut self, close: u8) -> Option<bool> {
        let c = self.peek()?;
        if c != b',' && c != close {
            return None;
        }
        self.i += 1;
        Some(c == b',')
    }

    /// An array's elements, each consumed by `element`.
    fn array(&mut self, mut element: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        self.eat(b'[')?;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            element(self)?;
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    /// An array whose elements `element` reads, collected.
    fn list<T>(&mut self, capacity: usize, mut element: impl FnMut(&mut Self) -> Option<T>) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(capacity);
        self.array(|p| element(p).map(|v| out.push(v)))?;
        Some(out)
    }

    /// A number (after white space, which the caller has skipped), which must end where a JSON value ends.
    #[inline]
    fn number(&mut self) -> Option<Number<'a>> {
        let n = scan_number(&self.b[self.i..])?;
        self.i += n.token.len();
        match self.b.get(self.i) {
            Some(b',' | b']' | b'}' | b' ' | b'\n' | b'\r' | b'\t') | None => Some(n),
            _ => None,
        }
    }

    /// A dimension: a non-negative integer that fits i64 (18 digits at most, to stay clear of the edge).
    fn dimension(&mut self) -> Option<i64> {
        self.ws();
        let n = self.number()?;
        let t = n.token;
        (t.len() <= 18 && t.iter().all(u8::is_ascii_digit))
            .then(|| t.iter().fold(0, |d, &c| d * 10 + i64::from(c - b'0')))
    }

    fn input(&mut self) -> Option<Tensor> {
        let (mut name, mut shape, mut datatype, mut data) = (None, None, None, None);
        self.object(|p, key| {
            match key {
                "name" if name.is_none() => name = Some(p.string()?.to_owned()),
                "shape" if shape.is_none() => shape = Some(p.list(2, Parser::dimension)?),
                "datatype" if datatype.is_none() => datatype = Some(DataType::parse(p.string()?)?),
                // Data after its datatype only, and only floats; the element limit bounds the work on hostile input.
                "data" if data.is_none() => {
                    let limit = shape.as_deref().and_then(element_count).unwrap_or(usize::MAX);
                    // Never trust the shape for the allocation size beyond what the text could possibly hold.
                    let capacity = limit.min((p.b.len() - p.i) / 2 + 1);
                    data = Some(match datatype? {
                        DataType::F32 => TensorData::F32(p.floats(capacity, limit)?),
                        DataType::F64 => TensorData::F64(p.floats(capacity, limit)?),
                        _ => return None,
                    });
                }
                _ => return None,
            }
            Some(())
        })?;
        let shape = shape?;
        let data = data?;
        let name = name?;
        (element_count(&shape)? == data.len()).then_some(Tensor { name, shape, data })
    }

    fn floats<T: Float>(&mut self, capacity: usize, limit: usize) -> Option<Vec<T>> {
        let mut out = Vec::with_capacity(capacity);
        self.values(&mut out, limit, 0)?;
        Some(out)
    }

    /// A number or a (nested) array of numbers, flattened row-major into `out`. The hottest loop of a request:
    /// one element per turn, statically dispatched, so the conversion inlines.
    fn values<T: Float>(&mut self, out: &mut Vec<T>, limit: usize, depth: usize) -> Option<()> {
        if self.peek()? != b'[' {
            return self.value(out, limit);
        }
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        if self.peek()? == b']' {
            self.i += 1;
            return Some(());
        }
        loop {
            if self.peek()? == b'[' {
                self.values(out, limit, depth + 1)?;
            } else {
                self.value(out, limit)?;
            }
            if !self.more(b']')? {
                return Some(());
            }
        }
    }

    #[inline]
    fn value<T: Float>(&mut self, out: &mut Vec<T>, limit: usize) -> Option<()> {
        let v = T::of(&self.number()?)?;
        if out.len() >= limit {
            return None;
        }
        out.push(v);
        Some(())
    }

    /// A requested output: its name and, if given, whether it should come back binary.
    fn output(&mut self) -> Option<(String, Option<bool>)> {
        let (mut name, mut binary) = (None, None);
        self.object(|p, key| {
            match key {
                "name" if name.is_none() => name = Some(p.string()?.to_owned()),
                "parameters" if binary.is_none() => binary = Some(p.flag("binary_data")?),
                _ => return None,
            }
            Some(())
        })?;
        Some((name?, binary.flatten()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::protocol::json::decode_request_with_serde;

    /// The fast decoder's answer, checked against the serde path: where it decodes, it decodes the same.
    fn fast(body: &str) -> Option<(InferRequest, AnswerFormat)> {
        let got = request(body.as_bytes());
        if let Some(got) = &got {
            let want =
                decode_request_with_serde(body.as_bytes()).expect("the serde path decodes what the fast one does");
            assert_eq!(got, &want, "{body}");
        }
        got
    }

    #[test]
    fn takes_what_clients_send_at_their_defaults() {
        // The load tester's and curl's request, KServe's (an id, outputs), tritonclient's JSON mode (outputs with
        // binary_data false), and one asking for binary outputs.
        for body in [
            r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[23.1441540290062,0.11719263302213714,-3]}]}"#,
            r#"{"id": "r-1", "inputs": [{"name": "x", "shape": [2, 2], "datatype": "FP64", "data": [[1.5, 2], [3e2, -0.0]]}],
                "outputs": [{"name": "label"}]}"#,
            r#"{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,2],"data":[1,2]}],
                "outputs":[{"name":"OUTPUT0","parameters":{"binary_data":false}}]}"#,
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"binary_data_output":true}}"#,
            "\n{ \"inputs\" : [ { \"name\" : \"x\" , \"shape\" : [ 0 ] , \"datatype\" : \"FP32\" , \"data\" : [ ] } ] }\n",
        ] {
            assert!(fast(body).is_some(), "{body}");
        }
        let (r, format) = fast(
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[0.5]}],
                "outputs":[{"name":"a","parameters":{"binary_data":true}},{"name":"b"}],"parameters":{}}"#,
        )
        .expect("fast");
        assert_eq!(r.inputs[0].data, TensorData::F32(vec![0.5]));
        assert_eq!(r.outputs, Some(vec!["a".to_string(), "b".to_string()]));
        assert!(format.is_binary("a") && !format.is_binary("b"));
    }

    #[test]
    fn leaves_everything_else_to_the_serde_path() {
        let input = |t: &str| format!(r#"{{"inputs":[{t}]}}"#);
        for body in [
            input(r#"{"data":[1],"name":"x","shape":[1],"datatype":"FP32"}"#), // data before its datatype
            input(r#"{"name":"x","shape":[1],"datatype":"INT64","data":[1]}"#), // not a float
            input(r#"{"name":"x\u0079","shape":[1],"datatype":"FP32","data":[1]}"#), // an escape
            input(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1],"parameters":{}}"#), // tensor parameters
            input(r#"{"name":"x","shape":[01],"datatype":"FP32","data":[1]}"#), // not JSON
            input(r#"{"name":"x","shape":[-1],"datatype":"FP32","data":[1]}"#), // a negative dimension
            input(r#"{"name":"x","shape":[2],"datatype":"FP32","data":[1]}"#), // too few values
            input(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1,2]}"#), // too many
            input(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1e39]}"#), // beyond FP32
            input(r#"{"name":"x","shape":[1],"datatype":"FP32","data":[1.]}"#), // not JSON
            input(r#"{"name":"x","shape":[1],"datatype":"FP32","data":["1"]}"#), // a string
            input(r#"{"name":"x","name":"y","shape":[1],"datatype":"FP32","data":[1]}"#), // a duplicate key
            input(r#"{"name":"x","shape":[1],"datatype":"FP33","data":[1]}"#), // an unknown datatype
            input(&format!(
                r#"{{"name":"x","shape":[1],"datatype":"FP32","data":{}1{}}}"#,
                "[".repeat(40),
                "]".repeat(40)
            )),
            r#"{"inputs":[]}"#.to_string(),
            r#"{"id":null,"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]}"#.to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"extra":1}"#.to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}]} x"#.to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}],"parameters":{"other":1}}"#
                .to_string(),
            r#"{"inputs":[{"name":"x","shape":[1],"datatype":"FP32","data":[1]}"#.to_string(),
        ] {
            assert!(fast(&body).is_none(), "{body}");
        }
    }

    /// How a client writes a tensor: rows nested or flat, the keys' order, the numbers' form, the white space.
    struct Style<'a> {
        nested: bool,
        order: &'a [usize],
        form: u8,
        ws: &'a str,
    }

    /// One input tensor's JSON, as a client might write it: keys in any order, numbers in any JSON form.
    fn input_text(name: &str, dt: &str, shape: &[i64], values: &[f64], style: &Style<'_>) -> String {
        let Style { nested, order, form, ws } = *style;
        let number = |v: f64| match form % 4 {
            0 => format!("{v}"),
            1 => format!("{v:e}"),
            2 => format!("{}", v as f32),
            _ => format!("{v:.3}"),
        };
        let data = if nested && shape.len() == 2 && shape[1] > 0 {
            let rows: Vec<String> = values
                .chunks(shape[1] as usize)
                .map(|r| format!("[{}]", r.iter().map(|&v| number(v)).collect::<Vec<_>>().join(&format!(",{ws}"))))
                .collect();
            format!("[{}]", rows.join(","))
        } else {
            format!("[{}]", values.iter().map(|&v| number(v)).collect::<Vec<_>>().join(&format!(",{ws}")))
        };
        let shape = format!("[{}]", shape.iter().map(i64::to_string).collect::<Vec<_>>().join(","));
        let members = [
            format!(r#""name":{ws}"{name}""#),
            format!(r#""shape":{ws}{shape}"#),
            format!(r#""datatype":{ws}"{dt}""#),
            format!(r#""data":{ws}{data}"#),
        ];
        let ordered: Vec<&str> = order.iter().map(|&i| members[i].as_str()).collect();
        format!("{{{ws}{}{ws}}}", ordered.join(&format!(",{ws}")))
    }

    proptest! {
        /// Requests as clients write them, and near misses: wherever the fast decoder answers, it answers exactly
        /// what the serde path does (checked in `fast`), and it answers for every plain float request with its
        /// datatype before its data.
        #[test]
        fn decodes_exactly_what_the_serde_path_decodes(
            name in "[a-z_]{1,8}|x\\\\n|é",
            dt in prop::sample::select(vec!["FP32", "FP64", "INT64", "FP16"]),
            rows in 0i64..4, cols in 0i64..5,
            values in prop::collection::vec(-1e6f64..1e6, 0..20),
            count_off in prop::sample::select(vec![0i64, 0, 0, 1, -1]),
            nested in any::<bool>(),
            order in Just(vec![0usize, 1, 2, 3]).prop_shuffle(),
            form in 0u8..4,
            ws in prop::sample::select(vec!["", " ", "\n  "]),
            id in prop::option::of("[a-z0-9-]{0,12}"),
            outputs in prop::option::of(prop::collection::vec((("[a-z]{1,4}"), prop::option::of(any::<bool>())), 0..3)),
            binary_output in prop::option::of(any::<bool>()),
        ) {
            let n = ((rows * cols) + count_off).max(0) as usize;
            let values: Vec<f64> = (0..n).map(|i| values.get(i % values.len().max(1)).copied().unwrap_or(i as f64)).collect();
            let mut body = format!(r#"{{"inputs":[{}]"#, input_text(&name, dt, &[rows, cols], &values, &Style { nested, order: &order, form, ws }));
            if let Some(id) = &id {
                body = format!(r#"{{"id":"{id}",{}"#, &body[1..]);
            }
            if let Some(outputs) = &outputs {
                let list: Vec<String> = outputs.iter().map(|(name, b)| match b {
                    Some(b) => format!(r#"{{"name":"{name}","parameters":{{"binary_data":{b}}}}}"#),
                    None => format!(r#"{{"name":"{name}"}}"#),
                }).collect();
                body += &format!(r#","outputs":[{}]"#, list.join(","));
            }
            if let Some(b) = binary_output {
                body += &format!(r#","parameters":{{"binary_data_output":{b}}}"#);
            }
            body += "}";
            let plain = matches!(dt, "FP32" | "FP64") && count_off == 0 && order.iter().position(|&i| i == 2) < order.iter().position(|&i| i == 3)
                && !name.contains('\\') && !(dt == "FP32" && values.iter().any(|v| !(*v as f32).is_finite()));
            let got = fast(&body);
            if plain {
                prop_assert!(got.is_some(), "the fast decoder left a plain request to the serde path: {}", body);
            }
        }
    }
}

//! Typed decoding of the `data` member of a JSON tensor. The protocol allows flat or nested (row-major) arrays.
//! serde_json has already checked that the body is valid JSON and handed us the raw text of `data`; a small
//! scanner then flattens it straight into the tensor's element type. No `serde_json::Value` tree is built, no
//! scalar is boxed, and the scan stops as soon as the data holds more elements than the shape allows (bounded work
//! for hostile input). Numbers are scanned by the JSON grammar and converted exactly (`tensor::number`), the same way
//! for this path and for the fast request decoder (`protocol::json::fast`). This is the hottest loop of a batched
//! request: it is measured in `benches/codec.rs`.

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::number::{Number, scan_number};
use super::{DataType, TensorData, f16};

/// A scalar that can be read from a JSON number token or boolean, with the protocol's range rules.
trait JsonScalar: Sized {
    const DATATYPE: DataType;
    fn parse(token: &[u8]) -> Option<Self>;
    /// The value of the JSON number at the start of `text` (checked JSON, so the number is well formed) and its
    /// length; `None` with the length when the value does not fit the type.
    fn parse_prefix(text: &[u8]) -> (Option<Self>, usize) {
        let end = text.iter().position(|c| !matches!(c, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'));
        let token = &text[..end.unwrap_or(text.len())];
        (Self::parse(token), token.len())
    }
    /// From a number serde_json has already parsed (the single-pass path).
    fn from_i128(v: i128) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

/// A JSON number token as the nearest f64 (`fast-float2`, correctly rounded).
fn parse_f64(tok: &[u8]) -> Option<f64> {
    fast_float2::parse(tok).ok()
}

/// A float at the start of checked JSON text, and the number's length.
fn float_prefix<T>(text: &[u8], value: impl Fn(&Number<'_>) -> Option<T>) -> (Option<T>, usize) {
    match scan_number(text) {
        Some(n) => (value(&n), n.token.len()),
        None => (None, 0),
    }
}

/// An integer token, in full 64-bit range; integral floats (3.0, 2e2) are accepted too.
fn parse_int(tok: &[u8]) -> Option<i128> {
    let (neg, digits) = match tok.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, tok),
    };
    if digits.is_empty() || digits.len() > 20 || !digits.iter().all(u8::is_ascii_digit) {
        let v = parse_f64(tok)?;
        return (v.fract() == 0.0 && v.abs() < 1.9e19).then_some(v as i128);
    }
    let mut v: i128 = 0;
    for &c in digits {
        v = v * 10 + i128::from(c - b'0');
    }
    Some(if neg { -v } else { v })
}

macro_rules! int_scalar {
    ($t:ty, $dt:ident) => {
        impl JsonScalar for $t {
            const DATATYPE: DataType = DataType::$dt;
            fn parse(token: &[u8]) -> Option<Self> {
                <$t>::try_from(parse_int(token)?).ok()
            }
            fn from_i128(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(v: f64) -> Option<Self> {
                (v.fract() == 0.0 && v.abs() < 1.9e19).then(|| <$t>::try_from(v as i128).ok()).flatten()
            }
        }
    };
}
int_scalar!(u8, U8);
int_scalar!(u16, U16);
int_scalar!(u32, U32);
int_scalar!(u64, U64);
int_scalar!(i8, I8);
int_scalar!(i16, I16);
int_scalar!(i32, I32);
int_scalar!(i64, I64);

impl JsonScalar for f64 {
    const DATATYPE: DataType = DataType::F64;
    fn parse(token: &[u8]) -> Option<Self> {
        parse_f64(token).filter(|x| x.is_finite())
    }
    fn parse_prefix(text: &[u8]) -> (Option<Self>, usize) {
        float_prefix(text, |n| n.to_f64())
    }
    fn from_i128(v: i128) -> Option<Self> {
        Some(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        v.is_finite().then_some(v)
    }
}

impl JsonScalar for f32 {
    const DATATYPE: DataType = DataType::F32;
    fn parse(token: &[u8]) -> Option<Self> {
        scan_number(token).filter(|n| n.token.len() == token.len())?.to_f32()
    }
    fn parse_prefix(text: &[u8]) -> (Option<Self>, usize) {
        // A literal beyond f32's range would become infinity, so it is refused.
        float_prefix(text, |n| n.to_f32())
    }
    fn from_i128(v: i128) -> Option<Self> {
        Some(v as f32)
    }
    fn from_f64(v: f64) -> Option<Self> {
        Some(v as f32).filter(|x| x.is_finite())
    }
}

impl JsonScalar for f16 {
    const DATATYPE: DataType = DataType::F16;
    fn parse(token: &[u8]) -> Option<Self> {
        parse_f64(token).and_then(<Self as JsonScalar>::from_f64)
    }
    fn from_i128(v: i128) -> Option<Self> {
        <Self as JsonScalar>::from_f64(v as f64)
    }
    fn from_f64(v: f64) -> Option<Self> {
        // Rounds to the nearest half float; a literal beyond its range (65504) would become infinity: refused.
        Some(f16::from_f64(v)).filter(|x| x.is_finite())
    }
}

impl JsonScalar for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn parse(_: &[u8]) -> Option<Self> {
        None
    }
    fn from_i128(_: i128) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

/// Nesting deeper than any real tensor is refused (serde_json already bounds it at 128).
const MAX_DEPTH: usize = 32;

struct Scanner<'a, T> {
    b: &'a [u8],
    i: usize,
    out: Vec<T>,
    limit: usize,
}

/// What the data of a `T` tensor must look like; serde puts "expected" in front of it, and so do our messages.
fn expected<T: JsonScalar>() -> String {
    let what = match T::DATATYPE {
        DataType::Bool => "true/false values",
        DataType::F16 | DataType::F32 | DataType::F64 => "numbers",
        _ => "integers",
    };
    format!("an array of {what} for datatype {} (flat or nested)", T::DATATYPE)
}

impl<T: JsonScalar> Scanner<'_, T> {
    fn skip_ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\n' | b'\r' | b'\t')) {
            self.i += 1;
        }
    }

    fn push(&mut self, v: Option<T>, shown: &[u8]) -> Result<(), String> {
        let v = v.ok_or_else(|| format!("value {} is not a valid {}", String::from_utf8_lossy(shown), T::DATATYPE))?;
        if self.out.len() >= self.limit {
            return Err(format!("data has more elements than the shape's {}", self.limit));
        }
        self.out.push(v);
        Ok(())
    }

    fn value(&mut self, depth: usize) -> Result<(), String> {
        self.skip_ws();
        match self.b.get(self.i) {
            Some(b'[') => {
                if depth >= MAX_DEPTH {
                    return Err(format!("arrays nested deeper than {MAX_DEPTH} levels"));
                }
                self.i += 1;
                self.skip_ws();
                if self.b.get(self.i) == Some(&b']') {
                    self.i += 1;
                    return Ok(());
                }
                loop {
                    self.value(depth + 1)?;
                    self.skip_ws();
                    match self.b.get(self.i) {
                        Some(b',') => self.i += 1,
                        Some(b']') => {
                            self.i += 1;
                            return Ok(());
                        }
                        _ => return Err("malformed array".into()),
                    }
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                let (v, n) = T::parse_prefix(&self.b[start..]);
                self.i += n.max(1);
                self.push(v, &self.b[start..self.i])
            }
            Some(b't') if self.b[self.i..].starts_with(b"true") => {
                self.i += 4;
                self.push(T::from_bool(true), b"true")
            }
            Some(b'f') if self.b[self.i..].starts_with(b"false") => {
                self.i += 5;
                self.push(T::from_bool(false), b"false")
            }
            Some(b'"') => Err(format!("expected {}, found a string", expected::<T>())),
            Some(b'n') => Err(format!("expected {}, found null", expected::<T>())),
            Some(b'{') => Err(format!("expected {}, found an object", expected::<T>())),
            _ => Err(format!("expected {}", expected::<T>())),
        }
    }
}

fn decode_typed<T: JsonScalar>(raw: &str, limit: usize) -> Result<Vec<T>, String> {
    // Never trust the shape for the allocation size beyond what the text could possibly hold.
    let out = Vec::with_capacity(limit.min(raw.len() / 2 + 1));
    let mut s = Scanner { b: raw.as_bytes(), i: 0, out, limit };
    s.value(0)?;
    s.skip_ws();
    if s.i != s.b.len() {
        return Err(format!("expected {}", expected::<T>()));
    }
    Ok(s.out)
}

/// Decodes `raw` (the JSON text of a `data` member) as `datatype`, accepting at most `expected` elements.
/// The caller checks the exact count against the shape, so the message can name both.
pub fn decode_data(raw: &RawValue, datatype: DataType, expected: usize) -> Result<TensorData, String> {
    let raw = raw.get();
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(decode_typed(raw, expected)?),
        DataType::U8 => TensorData::U8(decode_typed(raw, expected)?),
        DataType::U16 => TensorData::U16(decode_typed(raw, expected)?),
        DataType::U32 => TensorData::U32(decode_typed(raw, expected)?),
        DataType::U64 => TensorData::U64(decode_typed(raw, expected)?),
        DataType::I8 => TensorData::I8(decode_typed(raw, expected)?),
        DataType::I16 => TensorData::I16(decode_typed(raw, expected)?),
        DataType::I32 => TensorData::I32(decode_typed(raw, expected)?),
        DataType::I64 => TensorData::I64(decode_typed(raw, expected)?),
        DataType::F32 => TensorData::F32(decode_typed(raw, expected)?),
        DataType::F64 => TensorData::F64(decode_typed(raw, expected)?),
        DataType::F16 => TensorData::F16(decode_typed(raw, expected)?),
        DataType::Bytes => {
            let mut out = Vec::with_capacity(expected.min(raw.len() / 2 + 1));
            let mut d = serde_json::Deserializer::from_str(raw);
            Strings { out: &mut out, limit: expected }.deserialize(&mut d).map_err(|e| e.to_string())?;
            TensorData::Bytes(out)
        }
    })
}

/// Single-pass decoding for when the tensor's `datatype` came before its `data` (the order tritonclient and most
/// clients write): the values are parsed into the typed buffer while serde_json reads the body, with no second
/// scan of the text. Float data does not come here: serde_json's float parser is best-effort, so float data is
/// scanned from its raw text by `scan_number`, exactly. `input` names the tensor in error messages when its name
/// came first too.
pub struct DataSeed<'a> {
    pub datatype: DataType,
    pub limit: usize,
    pub input: Option<&'a str>,
}

struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    limit: usize,
}

impl<T: JsonScalar> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, shown: &dyn std::fmt::Display) -> Result<(), E> {
        let v = v.ok_or_else(|| E::custom(format_args!("value {shown} is not a valid {}", T::DATATYPE)))?;
        if self.out.len() >= self.limit {
            return Err(E::custom(format_args!("data has more elements than the shape's {}", self.limit)));
        }
        self.out.push(v);
        Ok(())
    }
}

impl<'de, T: JsonScalar> DeserializeSeed<'de> for Flatten<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: JsonScalar> Visitor<'de> for Flatten<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&expected::<T>())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_i128(i128::from(v)), &v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i128(i128::from(v)), &v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), &v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), &v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, limit) = (self.out, self.limit);
        while seq.next_element_seed(Flatten { out: &mut *out, limit })?.is_some() {}
        Ok(())
    }
}

fn seed_typed<'de, T: JsonScalar, D: de::Deserializer<'de>>(d: D, limit: usize) -> Result<Vec<T>, D::Error> {
    let mut out = Vec::with_capacity(limit.min(1 << 16));
    Flatten { out: &mut out, limit }.deserialize(d)?;
    Ok(out)
}

impl<'de> DeserializeSeed<'de> for DataSeed<'_> {
    type Value = TensorData;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<TensorData, D::Error> {
        let (limit, input) = (self.limit, self.input);
        let named = |e: D::Error| match input {
            Some(name) => de::Error::custom(format_args!("input '{name}': 'data': {e}")),
            None => de::Error::custom(format_args!("'data': {e}")),
        };
        Ok(match self.datatype {
            DataType::Bool => TensorData::Bool(seed_typed(d, limit).map_err(named)?),
            DataType::U8 => TensorData::U8(seed_typed(d, limit).map_err(named)?),
            DataType::U16 => TensorData::U16(seed_typed(d, limit).map_err(named)?),
            DataType::U32 => TensorData::U32(seed_typed(d, limit).map_err(named)?),
            DataType::U64 => TensorData::U64(seed_typed(d, limit).map_err(named)?),
            DataType::I8 => TensorData::I8(seed_typed(d, limit).map_err(named)?),
            DataType::I16 => TensorData::I16(seed_typed(d, limit).map_err(named)?),
            DataType::I32 => TensorData::I32(seed_typed(d, limit).map_err(named)?),
            DataType::I64 => TensorData::I64(seed_typed(d, limit).map_err(named)?),
            DataType::F32 => TensorData::F32(seed_typed(d, limit).map_err(named)?),
            DataType::F64 => TensorData::F64(seed_typed(d, limit).map_err(named)?),
            DataType::F16 => TensorData::F16(seed_typed(d, limit).map_err(named)?),
            DataType::Bytes => {
                let mut out = Vec::with_capacity(limit.min(1 << 12));
                Strings { out: &mut out, limit }.deserialize(d).map_err(named)?;
                TensorData::Bytes(out)
            }
        })
    }
}

/// BYTES elements in JSON: strings, in flat or nested arrays.
struct Strings<'a> {
    out: &'a mut Vec<Vec<u8>>,
    limit: usize,
}

impl Strings<'_> {
    fn push<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        if self.out.len() >= self.limit {
            return Err(E::custom(format_args!("data has more elements than the shape's {}", self.limit)));
        }
        self.out.push(v.to_vec());
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Strings<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Strings<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an array of strings for datatype BYTES (flat or nested)")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(v.as_bytes())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.push(v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, limit) = (self.out, self.limit);
        while seq.next_element_seed(Strings { out: &mut *out, limit })?.is_some() {}
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("valid json")
    }

    #[test]
    fn flat_and_nested_decode_to_the_same_buffer() {
        let flat = decode_data(&raw("[1, 2.5, 3, 4]"), DataType::F32, 4).expect("flat");
        let nested = decode_data(&raw("[[1, 2.5],\n [3, 4]]"), DataType::F32, 4).expect("nested");
        assert_eq!(flat, TensorData::F32(vec![1.0, 2.5, 3.0, 4.0]));
        assert_eq!(flat, nested);
        assert_eq!(decode_data(&raw("[[], []]"), DataType::F64, 0), Ok(TensorData::F64(vec![])));
    }

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(decode_data(&raw("[255, 0]"), DataType::U8, 2), Ok(TensorData::U8(vec![255, 0])));
        let err = decode_data(&raw("[256]"), DataType::U8, 1).expect_err("out of range");
        assert!(err.contains("256") && err.contains("UINT8"), "{err}");
        let err = decode_data(&raw("[1.5]"), DataType::I64, 1).expect_err("fraction");
        assert!(err.contains("INT64"), "{err}");
        assert_eq!(decode_data(&raw("[-3.0, 2e2]"), DataType::I64, 2), Ok(TensorData::I64(vec![-3, 200])));
        assert_eq!(
            decode_data(&raw("[-9223372036854775808]"), DataType::I64, 1),
            Ok(TensorData::I64(vec![i64::MIN])),
            "full i64 range, no detour through f64"
        );
        assert!(decode_data(&raw("[-1]"), DataType::U32, 1).is_err());
    }

    #[test]
    fn non_numeric_and_excess_data_are_refused() {
        let err = decode_data(&raw(r#"["a"]"#), DataType::F32, 1).expect_err("string");
        assert!(err.contains("numbers for datatype FP32") && err.contains("string"), "{err}");
        let err = decode_data(&raw("[1, 2, 3]"), DataType::F64, 2).expect_err("too many");
        assert!(err.contains("more elements than the shape's 2"), "{err}");
        let err = decode_data(&raw("[true]"), DataType::F32, 1).expect_err("bool as float");
        assert!(err.contains("FP32"), "{err}");
        let err = decode_data(&raw("[null]"), DataType::F32, 1).expect_err("null");
        assert!(err.contains("null"), "{err}");
        let err = decode_data(&raw(r#"[{"a": 1}]"#), DataType::I32, 1).expect_err("object");
        assert!(err.contains("object"), "{err}");
        assert_eq!(decode_data(&raw("[true, false]"), DataType::Bool, 2), Ok(TensorData::Bool(vec![true, false])));
        let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
        assert!(decode_data(&raw(&deep), DataType::F32, 1).expect_err("deep").contains("nested deeper"));
    }

    #[test]
    fn f64_outside_f32_range_is_refused() {
        let err = decode_data(&raw("[1e300]"), DataType::F32, 1).expect_err("overflow");
        assert!(err.contains("FP32"), "{err}");
        assert_eq!(decode_data(&raw("[1e300]"), DataType::F64, 1), Ok(TensorData::F64(vec![1e300])));
    }

    #[test]
    fn half_floats_and_strings_decode() {
        assert_eq!(
            decode_data(&raw("[1.5, -2]"), DataType::F16, 2),
            Ok(TensorData::F16(vec![f16::from_f32(1.5), f16::from_f32(-2.0)]))
        );
        let err = decode_data(&raw("[70000]"), DataType::F16, 1).expect_err("beyond FP16");
        assert!(err.contains("FP16"), "{err}");
        let strings = TensorData::Bytes(vec![b"pale".to_vec(), b"d\"eep".to_vec()]);
        assert_eq!(decode_data(&raw(r#"[["pale"], ["d\"eep"]]"#), DataType::Bytes, 2), Ok(strings.clone()));
        assert_eq!(seeded(r#"["pale", "d\"eep"]"#, DataType::Bytes, 2), Ok(strings));
        let err = decode_data(&raw("[1]"), DataType::Bytes, 1).expect_err("number as BYTES");
        assert!(err.contains("strings for datatype BYTES"), "{err}");
        let err = seeded(r#"["a", "b"]"#, DataType::Bytes, 1).expect_err("too many");
        assert!(err.contains("more elements than the shape's 1"), "{err}");
    }

    #[test]
    fn a_scalar_where_an_array_belongs_counts_as_one_element() {
        // The protocol always sends arrays, but a bare number is unambiguous and harmless.
        assert_eq!(decode_data(&raw("7"), DataType::I32, 1), Ok(TensorData::I32(vec![7])));
    }

    fn seeded(text: &str, dt: DataType, limit: usize) -> Result<TensorData, String> {
        let mut d = serde_json::Deserializer::from_str(text);
        DataSeed { datatype: dt, limit, input: Some("x") }.deserialize(&mut d).map_err(|e| e.to_string())
    }

    #[test]
    fn single_pass_seed_agrees_with_the_scanner() {
        for (text, dt, n) in [
            ("[[1, 2.5], [3, 4]]", DataType::F32, 4),
            ("[255, 0]", DataType::U8, 2),
            ("[-3.0, 200]", DataType::I64, 2),
            ("[-9223372036854775808]", DataType::I64, 1),
            ("[true, false]", DataType::Bool, 2),
            ("[1e300]", DataType::F64, 1),
        ] {
            assert_eq!(seeded(text, dt, n), decode_data(&raw(text), dt, n), "{text}");
        }
        for (text, dt, n, needle) in [
            ("[256]", DataType::U8, 1, "not a valid UINT8"),
            ("[1.5]", DataType::I32, 1, "not a valid INT32"),
            ("[1e300]", DataType::F32, 1, "not a valid FP32"),
            ("[\"a\"]", DataType::F32, 1, "numbers for datatype FP32"),
            ("[1, 2, 3]", DataType::F64, 2, "more elements than the shape's 2"),
        ] {
            let err = seeded(text, dt, n).expect_err(text);
            assert!(err.contains(needle) && err.contains("input 'x': 'data'"), "{err}");
        }
    }

    proptest! {
        /// A token's f64 is what the standard library computes.
        #[test]
        fn decimal_tokens_parse_exactly(m in 0u64..(1u64 << 53), e in -30i32..30, neg in any::<bool>()) {
            let t = format!("{}{m}e{e}", if neg { "-" } else { "" });
            prop_assert_eq!(parse_f64(t.as_bytes()), t.parse::<f64>().ok());
        }

        /// FP32 data is the nearest f32 to the decimal written, as the standard library's correctly rounded
        /// parser computes it, for short and long mantissas, with and without an exponent, across f32's range.
        #[test]
        fn fp32_values_are_the_nearest_f32(
            digits in "[1-9][0-9]{0,21}", point in 0usize..23, e in -50i32..40, with_exp in any::<bool>()
        ) {
            let point = point.min(digits.len()).max(1);
            let mut t = format!("{}.{}", &digits[..point], &digits[point..]).trim_end_matches('.').to_string();
            if with_exp {
                t = format!("{t}e{e}");
            }
            let want = t.parse::<f32>().expect("a decimal");
            let got = decode_data(&raw(&format!("[{t}]")), DataType::F32, 1);
            if want.is_finite() {
                prop_assert_eq!(got, Ok(TensorData::F32(vec![want])), "{}", t);
            } else {
                prop_assert!(got.is_err(), "{} is beyond FP32", t);
            }
        }

        /// The shortest decimal of the midpoint between two neighbouring f32 values lies a little above or below
        /// it, and parses to that midpoint exactly as f64: rounding through f64 would then tie to even, wrong
        /// about half the time. Read straight as f32, it goes to its own side, written plainly (the fast path's
        /// form, which must hand such values to the exact parse) or with an exponent.
        #[test]
        fn decimals_near_an_f32_midpoint_round_once(bits in 0x3000_0000u32..0x5800_0000, plain in any::<bool>()) {
            let mid = (f64::from(f32::from_bits(bits)) + f64::from(f32::from_bits(bits + 1))) / 2.0;
            let t = if plain { format!("{mid}") } else { format!("{mid:e}") };
            let want = t.parse::<f32>().expect("a decimal");
            prop_assert_eq!(decode_data(&raw(&format!("[{t}]")), DataType::F32, 1), Ok(TensorData::F32(vec![want])), "{}", t);
        }

        /// Whatever serde_json writes for a float, the scanner reads back the same value, flat or nested.
        #[test]
        fn round_trips_what_serde_json_writes(xs in proptest::collection::vec(-1e30f64..1e30, 0..64), nest in 1usize..4) {
            let flat = serde_json::to_string(&xs).expect("json");
            prop_assert_eq!(decode_data(&raw(&flat), DataType::F64, xs.len()), Ok(TensorData::F64(xs.clone())));
            let rows: Vec<Vec<f64>> = xs.chunks(nest).map(<[f64]>::to_vec).collect();
            let nested = serde_json::to_string(&rows).expect("json");
            prop_assert_eq!(decode_data(&raw(&nested), DataType::F64, xs.len()), Ok(TensorData::F64(xs)));
        }

        #[test]
        fn integers_round_trip(xs in proptest::collection::vec(any::<i64>(), 0..64)) {
            let text = serde_json::to_string(&xs).expect("json");
            prop_assert_eq!(decode_data(&raw(&text), DataType::I64, xs.len()), Ok(TensorData::I64(xs)));
        }
    }
}

//! Typed decoding of the `data` member of a JSON tensor. The protocol allows flat or nested (row-major) arrays; we
//! flatten while parsing straight into the tensor's element type, so no `serde_json::Value` tree is ever built, and
//! we stop as soon as the data holds more elements than the shape allows (bounded work for hostile input).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::{DataType, TensorData};

/// A scalar that can be read from a JSON number or boolean, with the protocol's range rules.
trait JsonScalar: Sized {
    const DATATYPE: DataType;
    fn from_u64(v: u64) -> Option<Self>;
    fn from_i64(v: i64) -> Option<Self>;
    fn from_f64(v: f64) -> Option<Self>;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
}

macro_rules! int_scalar {
    ($t:ty, $dt:ident) => {
        impl JsonScalar for $t {
            const DATATYPE: DataType = DataType::$dt;
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_f64(v: f64) -> Option<Self> {
                // 3.0 is an integer written as a float; 3.5 is not. Range is checked by the cast back.
                (v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64).then(|| v as $t)
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

macro_rules! float_scalar {
    ($t:ty, $dt:ident) => {
        impl JsonScalar for $t {
            const DATATYPE: DataType = DataType::$dt;
            fn from_u64(v: u64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_i64(v: i64) -> Option<Self> {
                Some(v as $t)
            }
            fn from_f64(v: f64) -> Option<Self> {
                let x = v as $t;
                // An f64 beyond f32's range would silently become infinity.
                x.is_finite().then_some(x)
            }
        }
    };
}
float_scalar!(f32, F32);
float_scalar!(f64, F64);

impl JsonScalar for bool {
    const DATATYPE: DataType = DataType::Bool;
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

struct Flatten<'a, T> {
    out: &'a mut Vec<T>,
    limit: usize,
    _t: PhantomData<T>,
}

impl<T: JsonScalar> Flatten<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, shown: &dyn fmt::Display) -> Result<(), E> {
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

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match T::DATATYPE {
            DataType::Bool => "true/false values",
            DataType::F32 | DataType::F64 => "numbers",
            _ => "integers",
        };
        write!(f, "an array of {what} for datatype {} (flat or nested)", T::DATATYPE)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), &v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), &v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), &v)
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), &v)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let (out, limit) = (self.out, self.limit);
        while seq.next_element_seed(Flatten { out: &mut *out, limit, _t: PhantomData })?.is_some() {}
        Ok(())
    }
}

fn decode_typed<T: JsonScalar>(raw: &str, expected: usize) -> Result<Vec<T>, String> {
    // Never trust the shape for the allocation size beyond what the body could possibly hold.
    let mut out = Vec::with_capacity(expected.min(raw.len() / 2 + 1));
    let mut de = serde_json::Deserializer::from_str(raw);
    Flatten { out: &mut out, limit: expected, _t: PhantomData }.deserialize(&mut de).map_err(|e| e.to_string())?;
    Ok(out)
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
        DataType::F16 | DataType::Bytes => {
            return Err(format!("datatype {datatype} is not supported by this gateway"));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_string()).expect("valid json")
    }

    #[test]
    fn flat_and_nested_decode_to_the_same_buffer() {
        let flat = decode_data(&raw("[1, 2.5, 3, 4]"), DataType::F32, 4).expect("flat");
        let nested = decode_data(&raw("[[1, 2.5], [3, 4]]"), DataType::F32, 4).expect("nested");
        assert_eq!(flat, TensorData::F32(vec![1.0, 2.5, 3.0, 4.0]));
        assert_eq!(flat, nested);
    }

    #[test]
    fn integers_are_range_checked() {
        assert_eq!(decode_data(&raw("[255, 0]"), DataType::U8, 2), Ok(TensorData::U8(vec![255, 0])));
        let err = decode_data(&raw("[256]"), DataType::U8, 1).expect_err("out of range");
        assert!(err.contains("256") && err.contains("UINT8"), "{err}");
        let err = decode_data(&raw("[1.5]"), DataType::I64, 1).expect_err("fraction");
        assert!(err.contains("INT64"), "{err}");
        assert_eq!(decode_data(&raw("[-3.0]"), DataType::I64, 1), Ok(TensorData::I64(vec![-3])));
    }

    #[test]
    fn non_numeric_and_excess_data_are_refused() {
        let err = decode_data(&raw(r#"["a"]"#), DataType::F32, 1).expect_err("string");
        assert!(err.contains("numbers for datatype FP32"), "{err}");
        let err = decode_data(&raw("[1, 2, 3]"), DataType::F64, 2).expect_err("too many");
        assert!(err.contains("more elements than the shape's 2"), "{err}");
        let err = decode_data(&raw("[true]"), DataType::F32, 1).expect_err("bool as float");
        assert!(err.contains("FP32"), "{err}");
        assert_eq!(decode_data(&raw("[true, false]"), DataType::Bool, 2), Ok(TensorData::Bool(vec![true, false])));
    }

    #[test]
    fn f64_outside_f32_range_is_refused() {
        let err = decode_data(&raw("[1e300]"), DataType::F32, 1).expect_err("overflow");
        assert!(err.contains("FP32"), "{err}");
    }

    #[test]
    fn a_scalar_where_an_array_belongs_counts_as_one_element() {
        // The protocol always sends arrays, but a bare number is unambiguous and harmless.
        assert_eq!(decode_data(&raw("7"), DataType::I32, 1), Ok(TensorData::I32(vec![7])));
    }
}

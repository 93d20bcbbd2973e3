//! Protocol-neutral tensors: the datatypes of the Open Inference Protocol and typed, flat, row-major buffers.
//! HTTP JSON and gRPC decode into these, backends consume them, and nothing on the hot path boxes a scalar.

use std::fmt;

pub use half::f16;
use serde::{Serialize, Serializer};

pub mod json;
pub mod number;
pub mod raw;

/// Open Inference Protocol tensor datatypes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 13] = [
        Self::Bool,
        Self::U8,
        Self::U16,
        Self::U32,
        Self::U64,
        Self::I8,
        Self::I16,
        Self::I32,
        Self::I64,
        Self::F16,
        Self::F32,
        Self::F64,
        Self::Bytes,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bool => "BOOL",
            Self::U8 => "UINT8",
            Self::U16 => "UINT16",
            Self::U32 => "UINT32",
            Self::U64 => "UINT64",
            Self::I8 => "INT8",
            Self::I16 => "INT16",
            Self::I32 => "INT32",
            Self::I64 => "INT64",
            Self::F16 => "FP16",
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::Bytes => "BYTES",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == s)
    }

    /// FP16, FP32 or FP64.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F16 | Self::F32 | Self::F64)
    }

    /// Bytes per element in a raw (binary) buffer; `None` for BYTES, whose elements carry their own length.
    pub fn width(self) -> Option<usize> {
        Some(match self {
            Self::Bool | Self::U8 | Self::I8 => 1,
            Self::U16 | Self::I16 | Self::F16 => 2,
            Self::U32 | Self::I32 | Self::F32 => 4,
            Self::U64 | Self::I64 | Self::F64 => 8,
            Self::Bytes => return None,
        })
    }

    pub fn names() -> String {
        Self::ALL.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for DataType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for DataType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).ok_or_else(|| {
            serde::de::Error::custom(format!("unknown datatype '{s}', expected one of {}", DataType::names()))
        })
    }
}

/// A flat row-major buffer of one datatype. `Bytes` holds one byte string per element (the protocol's BYTES, ONNX's
/// string tensors).
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Every variant, for the matches that treat all buffers alike.
macro_rules! each_variant {
    ($m:ident) => {
        $m!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, F32, F64, Bytes)
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        macro_rules! arm {
            ($($v:ident),*) => { match self { $(Self::$v(_) => DataType::$v,)* } };
        }
        each_variant!(arm)
    }

    pub fn len(&self) -> usize {
        macro_rules! arm {
            ($($v:ident),*) => { match self { $(Self::$v(d) => d.len(),)* } };
        }
        each_variant!(arm)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i` as f64, for statistics and tolerance checks; booleans are 0/1, byte strings are NaN (not a
    /// number; categorical features are counted apart, see [`TensorData::bytes_at`]).
    pub fn get_f64(&self, i: usize) -> f64 {
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    Self::Bool(d) => d[i] as u8 as f64,
                    Self::F16(d) => d[i].to_f64(),
                    Self::Bytes(_) => f64::NAN,
                    $(Self::$v(d) => d[i] as f64,)*
                }
            };
        }
        arm!(U8, U16, U32, U64, I8, I16, I32, I64, F32, F64)
    }

    /// Element `i` of a BYTES buffer.
    pub fn bytes_at(&self, i: usize) -> Option<&[u8]> {
        match self {
            Self::Bytes(d) => d.get(i).map(Vec::as_slice),
            _ => None,
        }
    }

    /// Calls `f` with `n` values as f64, starting at `start`, `step` apart: one feature's column across rows. The
    /// type dispatch happens once, not per value. Byte strings have no numeric value and are skipped.
    /// Stops early at the end of the buffer. Plain index arithmetic: an iterator chain (skip, step_by, take) costs
    /// more to set up than one feature of a one-row request costs to count, and this runs per feature.
    #[inline]
    pub fn for_each_strided(&self, start: usize, step: usize, n: usize, mut f: impl FnMut(f64)) {
        fn strided<T: Copy>(d: &[T], start: usize, step: usize, n: usize, mut f: impl FnMut(T)) {
            let (mut i, step) = (start, step.max(1));
            for _ in 0..n {
                let Some(&x) = d.get(i) else { return };
                f(x);
                i += step;
            }
        }
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    Self::Bool(d) => strided(d, start, step, n, |x| f(f64::from(u8::from(x)))),
                    Self::F16(d) => strided(d, start, step, n, |x| f(x.to_f64())),
                    Self::Bytes(_) => {}
                    $(Self::$v(d) => strided(d, start, step, n, |x| f(x as f64)),)*
                }
            };
        }
        arm!(U8, U16, U32, U64, I8, I16, I32, I64, F32, F64)
    }

    /// Copies `rows` (each `row_len` values long) starting at row `start` into a new buffer of the same type:
    /// how batched outputs are split back per request.
    pub fn slice_rows(&self, start: usize, rows: usize, row_len: usize) -> TensorData {
        let (a, b) = (start * row_len, (start + rows) * row_len);
        macro_rules! arm {
            ($($v:ident),*) => { match self { $(Self::$v(d) => Self::$v(d[a..b].to_vec()),)* } };
        }
        each_variant!(arm)
    }

    /// Appends another buffer of the same type (batching several requests into one call).
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! arm {
            ($($v:ident),*) => {
                match (self, other) {
                    $((Self::$v(a), Self::$v(b)) => { a.extend_from_slice(b); true })*
                    _ => false,
                }
            };
        }
        each_variant!(arm)
    }
}

impl Serialize for TensorData {
    /// JSON numbers, booleans, and strings for BYTES (bytes that are not UTF-8 are replaced, as JSON holds text).
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        macro_rules! arm {
            ($($v:ident),*) => {
                match self {
                    Self::F16(d) => s.collect_seq(d.iter().map(|x| x.to_f32())),
                    Self::Bytes(d) => s.collect_seq(d.iter().map(|b| String::from_utf8_lossy(b))),
                    $(Self::$v(d) => d.serialize(s),)*
                }
            };
        }
        arm!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F32, F64)
    }
}

/// A named tensor with a concrete shape (no -1), as it travels between front end and backend.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub data: TensorData,
}

impl Tensor {
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }
}

/// Number of elements a concrete shape holds, or `None` on a negative dimension or overflow.
/// Why a shape has no element count, in words for a message: a negative dimension, or a product that overflows.
pub fn shape_problem(shape: &[i64]) -> &'static str {
    if shape.iter().any(|&d| d < 0) {
        "must list non-negative dimensions (requests carry concrete shapes)"
    } else {
        "has more elements than any request can carry (the product of its dimensions overflows)"
    }
}

pub fn element_count(shape: &[i64]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| if d < 0 { None } else { acc.checked_mul(usize::try_from(d).ok()?) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("FLOAT32"), None);
    }

    #[test]
    fn element_count_rejects_negative_and_overflow() {
        assert_eq!(element_count(&[2, 30]), Some(60));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[2, -1]), None);
        assert_eq!(element_count(&[i64::MAX, i64::MAX]), None);
    }

    #[test]
    fn slice_and_extend_rows() {
        let mut a = TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]);
        assert_eq!(a.slice_rows(1, 1, 2), TensorData::F32(vec![3.0, 4.0]));
        assert!(a.extend_from(&TensorData::F32(vec![5.0, 6.0])));
        assert_eq!(a.len(), 6);
        assert!(!a.extend_from(&TensorData::I64(vec![1])));
    }

    #[test]
    fn strided_reads_one_column_and_stops_at_the_end() {
        let d = TensorData::I32((0..12).collect());
        let mut seen = Vec::new();
        d.for_each_strided(1, 3, 4, |v| seen.push(v));
        assert_eq!(seen, [1.0, 4.0, 7.0, 10.0]);
        seen.clear();
        d.for_each_strided(2, 5, 10, |v| seen.push(v));
        assert_eq!(seen, [2.0, 7.0], "past the end: stops");
        seen.clear();
        TensorData::Bool(vec![true, false]).for_each_strided(0, 1, 2, |v| seen.push(v));
        assert_eq!(seen, [1.0, 0.0]);
    }
}

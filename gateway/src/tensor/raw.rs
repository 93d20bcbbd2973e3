//! The protocol's raw tensor layout, shared by gRPC's `raw_input_contents` / `raw_output_contents` and the HTTP
//! binary tensor extension: fixed-width values little-endian and back to back; BOOL one byte each; BYTES elements
//! each a 4-byte little-endian length followed by that many bytes. Decoding checks the size against the shape
//! before it allocates, so a short or long buffer costs nothing but the message.

use super::{DataType, TensorData, f16};

/// Why a raw buffer does not fit its tensor, in words for a 400 (the caller names the input).
pub type RawError = String;

/// Decodes `bytes` as `count` values of `d`.
pub fn decode(d: DataType, bytes: &[u8], count: usize) -> Result<TensorData, RawError> {
    let Some(w) = d.width() else {
        return decode_bytes(bytes, count).map(TensorData::Bytes);
    };
    let need = count.checked_mul(w).ok_or_else(|| format!("{count} values is too many"))?;
    if bytes.len() != need {
        return Err(format!(
            "holds {} bytes; shape and datatype {d} need {count} values of {w} bytes = {need} bytes",
            bytes.len(),
        ));
    }
    macro_rules! le {
        ($t:ty, $n:literal) => {
            bytes.chunks_exact($n).map(|b| <$t>::from_le_bytes(b.try_into().expect("chunk width"))).collect()
        };
    }
    Ok(match d {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::U8 => TensorData::U8(bytes.to_vec()),
        DataType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::U16 => TensorData::U16(le!(u16, 2)),
        DataType::I16 => TensorData::I16(le!(i16, 2)),
        DataType::F16 => TensorData::F16(le!(f16, 2)),
        DataType::U32 => TensorData::U32(le!(u32, 4)),
        DataType::I32 => TensorData::I32(le!(i32, 4)),
        DataType::F32 => TensorData::F32(le!(f32, 4)),
        DataType::U64 => TensorData::U64(le!(u64, 8)),
        DataType::I64 => TensorData::I64(le!(i64, 8)),
        DataType::F64 => TensorData::F64(le!(f64, 8)),
        DataType::Bytes => unreachable!("BYTES has no fixed width"),
    })
}

/// Length-prefixed byte strings. Every length is checked against what is left of the buffer before anything is
/// copied, and the element count against the shape, so a hostile length prefix allocates nothing.
fn decode_bytes(mut bytes: &[u8], count: usize) -> Result<Vec<Vec<u8>>, RawError> {
    // Each element takes at least its 4-byte prefix: a count the buffer cannot hold is refused before allocating.
    if count > bytes.len() / 4 {
        return Err(format!(
            "holds {} bytes; shape needs {count} BYTES elements of at least 4 bytes (the length prefix) each",
            bytes.len()
        ));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        let Some((prefix, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(format!("ends inside the length prefix of BYTES element {i} of {count}"));
        };
        let n = u32::from_le_bytes(*prefix) as usize;
        if n > rest.len() {
            return Err(format!(
                "BYTES element {i} claims {n} bytes, but only {} bytes remain in the buffer",
                rest.len()
            ));
        }
        out.push(rest[..n].to_vec());
        bytes = &rest[n..];
    }
    if !bytes.is_empty() {
        return Err(format!("has {} bytes left after the {count} BYTES elements the shape needs", bytes.len()));
    }
    Ok(out)
}

/// The raw bytes of a buffer.
pub fn encode(data: &TensorData) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(data));
    encode_into(data, &mut out);
    out
}

/// Bytes [`encode`] writes for `data`.
pub fn encoded_len(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
        other => other.len() * other.datatype().width().unwrap_or(0),
    }
}

/// Appends the raw bytes of a buffer to `out` (the binary HTTP response writes every output into one body).
pub fn encode_into(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        TensorData::U16(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::F16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::Bytes(v) => {
            for b in v {
                // Elements longer than 4 GiB cannot exist here: bodies are bounded far below that.
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_datatype_round_trips() {
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
            TensorData::F16(vec![f16::from_f32(1.5), f16::from_f32(-0.25)]),
            TensorData::F32(vec![1.5, -3.0]),
            TensorData::F64(vec![-2.25, 1e300]),
            TensorData::Bytes(vec![b"pale".to_vec(), vec![]]),
        ];
        for data in samples {
            let bytes = encode(&data);
            assert_eq!(bytes.len(), encoded_len(&data));
            assert_eq!(decode(data.datatype(), &bytes, 2).as_ref(), Ok(&data), "{}", data.datatype());
        }
    }

    #[test]
    fn half_floats_are_little_endian() {
        assert_eq!(encode(&TensorData::F16(vec![f16::from_f32(1.0)])), vec![0x00, 0x3c]);
    }

    #[test]
    fn bad_sizes_say_what_was_expected() {
        let e = decode(DataType::F32, &[0; 7], 2).expect_err("short");
        assert!(e.contains("holds 7 bytes") && e.contains("= 8 bytes"), "{e}");
        let e = decode(DataType::Bytes, &[5, 0, 0, 0, b'a'], 1).expect_err("element past the end");
        assert!(e.contains("claims 5 bytes") && e.contains("only 1"), "{e}");
        let e = decode(DataType::Bytes, &[1, 0, 0, 0, b'a', 9], 1).expect_err("trailing");
        assert!(e.contains("1 bytes left"), "{e}");
        let e = decode(DataType::Bytes, &[0, 0, 0, 0], 1_000_000).expect_err("count beyond the buffer");
        assert!(e.contains("1000000 BYTES elements"), "{e}");
        let e = decode(DataType::Bytes, &[0, 0, 0, 0, 1, 0, 0, 0], 3).expect_err("count beyond the buffer");
        assert!(e.contains("3 BYTES elements"), "{e}");
        let e = decode(DataType::Bytes, &[0, 0, 0, 0, 0, 0, 0, 0, 0], 2).expect_err("trailing byte");
        assert!(e.contains("1 bytes left"), "{e}");
        let e = decode(DataType::Bytes, &[1, 0, 0, 0, 7, 0, 0, 0], 2).expect_err("cut prefix");
        assert!(e.contains("inside the length prefix"), "{e}");
    }

    proptest! {
        /// Any byte strings round-trip, and decoding arbitrary bytes never panics.
        #[test]
        fn bytes_round_trip(xs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..20)) {
            let data = TensorData::Bytes(xs.clone());
            prop_assert_eq!(decode(DataType::Bytes, &encode(&data), xs.len()), Ok(data));
        }

        #[test]
        fn arbitrary_buffers_never_panic(b in proptest::collection::vec(any::<u8>(), 0..64), n in 0usize..32) {
            let _ = decode(DataType::Bytes, &b, n);
            let _ = decode(DataType::F16, &b, n);
        }
    }
}

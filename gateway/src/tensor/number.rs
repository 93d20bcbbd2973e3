//! JSON numbers: scanned by the grammar of RFC 8259 and converted to the nearest FP32 or FP64 value, rounded once.
//! One implementation for both JSON decoding paths (the serde path's data scanner in `tensor::json` and the fast
//! request decoder in `protocol::json::fast`), so they agree value for value. The conversion is on the hot path of
//! every JSON request: digits eight at a time, Clinger's division where it is exact, `fast-float2` elsewhere.

/// Powers of ten that f64 holds exactly.
const POW10: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20,
    1e21, 1e22,
];

/// A JSON number, scanned by the grammar of RFC 8259 (no leading zeros, digits after a point and in an exponent),
/// with its digits as an integer when there are at most 19 of them and no exponent.
pub struct Number<'a> {
    /// The whole token, for the general parse.
    pub token: &'a [u8],
    neg: bool,
    /// The digits, point removed, and how many of them were after the point; valid when `simple`.
    digits: u64,
    scale: usize,
    simple: bool,
}

/// Eight ASCII digits at the start of `b`, if there are eight, as their value (the SWAR step of fast_float:
/// two multiplications instead of eight).
#[inline(always)]
fn eight_digits(b: &[u8]) -> Option<u64> {
    let v = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
    // Every byte 0x30..=0x39: high nibble 3, and still 3 after adding 6 (no byte carries: each is at most 0x3f).
    let high = 0xF0F0_F0F0_F0F0_F0F0;
    if v & high != 0x3030_3030_3030_3030 || v.wrapping_add(0x0606_0606_0606_0606) & high != 0x3030_3030_3030_3030 {
        return None;
    }
    let v = v - 0x3030_3030_3030_3030;
    let v = v.wrapping_mul(10) + (v >> 8);
    let mask = 0x0000_00FF_0000_00FF;
    Some(
        ((v & mask).wrapping_mul(0x000F_4240_0000_0064) + ((v >> 16) & mask).wrapping_mul(0x0000_2710_0000_0001)) >> 32,
    )
}

/// Digits from `b[i..]`, appended to `acc` (wrapping: the caller counts the digits and trusts `acc` only up to
/// 19 of them); returns where they end. With `swar`, eight at a time while eight are there (worth its check only
/// where long runs are common: after the point), then one at a time.
#[inline(always)]
fn digits(b: &[u8], mut i: usize, acc: &mut u64, swar: bool) -> usize {
    let mut v = *acc;
    while swar && let Some(eight) = b.get(i..).and_then(eight_digits) {
        v = v.wrapping_mul(100_000_000).wrapping_add(eight);
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    *acc = v;
    i
}

/// The JSON number at the start of `b`, or `None` if `b` does not start with one. What follows it is the caller's
/// to check (a JSON value ends at a comma, a bracket, a brace or white space).
#[inline(always)]
pub fn scan_number(b: &[u8]) -> Option<Number<'_>> {
    let neg = b.first() == Some(&b'-');
    let start = usize::from(neg);
    let mut acc = 0u64;
    let mut i = match b.get(start) {
        Some(b'0') => start + 1,
        Some(b'1'..=b'9') => digits(b, start, &mut acc, false),
        _ => return None,
    };
    let mut count = i - start;
    let mut scale = 0;
    if b.get(i) == Some(&b'.') {
        let end = digits(b, i + 1, &mut acc, true);
        scale = end - (i + 1);
        if scale == 0 {
            return None;
        }
        count += scale;
        i = end;
    }
    let mut exponent = false;
    if let Some(b'e' | b'E') = b.get(i) {
        exponent = true;
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    // Up to 19 digits (leading zeros included) `acc` holds them exactly: 10^19 - 1 fits in 64 bits.
    let simple = count <= 19 && !exponent && scale < POW10.len();
    Some(Number { token: &b[..i], neg, digits: acc, scale, simple })
}

impl Number<'_> {
    #[inline]
    fn signed<T: std::ops::Neg<Output = T>>(&self, v: T) -> T {
        if self.neg { -v } else { v }
    }

    /// The nearest f64; `None` beyond its range. Up to 2^53 the digits and the power of ten are both exact, so one
    /// division rounds correctly (Clinger's fast path); the rest goes to `fast-float2`, which is exact too.
    #[inline(always)]
    pub fn to_f64(&self) -> Option<f64> {
        if self.simple && self.digits <= 1 << 53 {
            return Some(self.signed(self.digits as f64 / POW10[self.scale]));
        }
        fast_float2::parse::<f64, _>(self.token).ok().filter(|x| x.is_finite())
    }

    /// The nearest f32 (rounded once, straight from the decimal); `None` beyond its range. Clients write FP32
    /// features with up to 17 digits (the `repr` of a double), past Clinger's fast path. The digits divided by the
    /// power of ten in f64 are two roundings from the exact value, within a little over two f64 units in the last
    /// place, so the f32 nearest that is the f32 nearest the exact value unless it lies within four units of the
    /// midpoint between two f32 values (about one value in 2^26) or outside f32's normal range. Those, and numbers
    /// with more digits or an exponent, go to `fast-float2`, which is exact (at about twice the cost).
    #[inline(always)]
    pub fn to_f32(&self) -> Option<f32> {
        if self.simple {
            if self.digits == 0 {
                return Some(self.signed(0.0));
            }
            let w = self.digits as f64 / POW10[self.scale];
            // The 29 low bits of the f64 significand are what rounding to f32 drops; 1 << 28 is the midpoint.
            let low = (w.to_bits() & ((1 << 29) - 1)) as i64;
            if (low - (1 << 28)).abs() > 4 && (f64::from(f32::MIN_POSITIVE)..=f64::from(f32::MAX)).contains(&w) {
                return Some(self.signed(w as f32));
            }
        }
        fast_float2::parse::<f32, _>(self.token).ok().filter(|x| x.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn number(t: &str) -> Number<'_> {
        let n = scan_number(t.as_bytes()).unwrap_or_else(|| panic!("{t} is a JSON number"));
        assert_eq!(n.token.len(), t.len(), "{t} is one token");
        n
    }

    #[test]
    fn numbers_convert_as_the_standard_library_does() {
        for t in [
            "0",
            "-0",
            "1",
            "10.0000",
            "141.51",
            "0.000123",
            "1e-5",
            "2.5E3",
            "-7.25e-2",
            "123456789012345678",
            "0.1",
            "9007199254740993",
            "1e23",
            "1.7976931348623157e308",
            "4.9e-324",
            "0.30000000000000004",
            "23.1441540290062",
            "0.11719263302213714",
            "12345678901234567890123",
        ] {
            let n = number(t);
            assert_eq!(n.to_f64().map(f64::to_bits), t.parse::<f64>().ok().map(f64::to_bits), "{t} as f64");
            let f = t.parse::<f32>().ok().filter(|x| x.is_finite());
            assert_eq!(n.to_f32().map(f32::to_bits), f.map(f32::to_bits), "{t} as f32");
        }
        assert_eq!(number("1e39").to_f32(), None, "beyond FP32");
        assert_eq!(number("1e309").to_f64(), None, "beyond FP64");
    }

    #[test]
    fn the_scan_follows_the_json_grammar() {
        for bad in ["", "-", "+1", ".5", "-.5", "1.", "1.e5", "1e", "1e+", "x", "-x"] {
            assert!(scan_number(bad.as_bytes()).is_none_or(|n| n.token.len() < bad.len()), "{bad}");
        }
        // A number ends where the grammar does; what follows is the caller's to check.
        for (text, len) in [("01", 1), ("1.5.2", 3), ("1e5e5", 3), ("-0.0e-0,", 7), ("12345678901234567890123]", 23)] {
            assert_eq!(scan_number(text.as_bytes()).map(|n| n.token.len()), Some(len), "{text}");
        }
    }

    #[test]
    fn clients_features_take_the_fast_path() {
        // The load tester's and numpy's 17-digit values, and short ones: no exponent, at most 19 digits.
        for t in ["23.1441540290062", "0.11719263302213714", "3193.73141033228", "-0.5", "0", "17", "0.000123"] {
            assert!(number(t).simple, "{t}");
        }
        for t in ["1e5", "12345678901234567890", "0.00000000000000000000001"] {
            assert!(!number(t).simple, "{t}");
        }
    }

    proptest! {
        /// Any decimal parses to exactly what the standard library computes, in both widths.
        #[test]
        fn decimal_tokens_parse_exactly(m in 0u64..(1u64 << 53), e in -30i32..30, neg in any::<bool>()) {
            let t = format!("{}{m}e{e}", if neg { "-" } else { "" });
            prop_assert_eq!(number(&t).to_f64(), t.parse::<f64>().ok());
            let d = format!("{}.{:04}", m % 100_000, m % 10_000);
            prop_assert_eq!(number(&d).to_f64(), d.parse::<f64>().ok());
            prop_assert_eq!(number(&d).to_f32(), d.parse::<f32>().ok());
        }

        /// The eight-digit step reads what the digit-by-digit loop reads.
        #[test]
        fn eight_digits_at_once_agree_with_one_by_one(text in "[0-9]{8}[0-9a-z.]{0,4}") {
            let want = text[..8].parse::<u64>().expect("digits");
            prop_assert_eq!(eight_digits(text.as_bytes()), Some(want));
            let mut bytes = text.clone().into_bytes();
            for i in 0..8 {
                for c in [b'/', b':', b'a', b'.', 0x00, 0xff] {
                    let saved = bytes[i];
                    bytes[i] = c;
                    prop_assert_eq!(eight_digits(&bytes), None);
                    bytes[i] = saved;
                }
            }
        }
    }
}

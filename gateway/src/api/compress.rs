//! Compression of inference answers as the client's `Accept-Encoding` asks (tritonclient's
//! `response_compression_algorithm`): gzip or deflate, for answers of at least [`MIN_COMPRESSED_BYTES`].
//!
//! The handler does it rather than tower-http's `CompressionLayer`, whose service and future wrap every inference
//! request although almost no answer is big enough to compress. The choice is that layer's (a test compares them):
//! `gzip`, `x-gzip` and `deflate` (zlib-wrapped, as HTTP's deflate is) by their q-values, ties going to gzip, `q=0`
//! refusing one, unknown codings and malformed q-values ignored; an answer that size carries `Vary:
//! Accept-Encoding` whether or not it is compressed, a smaller one neither. Two differences no client sees: the
//! compressed answer goes out whole with its `Content-Length` rather than chunked, and error answers (short JSON
//! messages) are never compressed.

use std::io::Write;

use axum::http::{HeaderMap, HeaderValue, header};

/// Answers smaller than this go uncompressed whatever the client accepts: a 1-row prediction is not worth the CPU.
pub const MIN_COMPRESSED_BYTES: usize = 1024;

/// A content coding the gateway writes, in the order that breaks q-value ties (the last wins).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Encoding {
    Identity,
    Deflate,
    Gzip,
}

impl Encoding {
    fn parse(token: &str) -> Option<Self> {
        if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Some(Self::Gzip)
        } else if token.eq_ignore_ascii_case("deflate") {
            Some(Self::Deflate)
        } else if token.eq_ignore_ascii_case("identity") {
            Some(Self::Identity)
        } else {
            None
        }
    }

    fn header(self) -> Option<HeaderValue> {
        match self {
            Self::Identity => None,
            Self::Deflate => Some(HeaderValue::from_static("deflate")),
            Self::Gzip => Some(HeaderValue::from_static("gzip")),
        }
    }
}

/// `q=<0..1 with up to three decimals>` in thousandths; `None` when malformed (the coding is then ignored).
fn qvalue(s: &str) -> Option<u16> {
    let s = s.strip_prefix(['q', 'Q'])?.strip_prefix('=')?;
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    let whole: u16 = match int {
        "0" => 0,
        "1" => 1000,
        _ => return None,
    };
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut value = whole;
    for (digit, scale) in frac.bytes().zip([100, 10, 1]) {
        value += u16::from(digit - b'0') * scale;
    }
    (value <= 1000).then_some(value)
}

/// The coding the client prefers among those the gateway writes (identity when it names none).
pub fn negotiate(headers: &HeaderMap) -> Encoding {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|s| s.split(','))
        .filter_map(|item| {
            let mut parts = item.splitn(2, ';');
            let coding = Encoding::parse(parts.next().unwrap_or("").trim())?;
            let q = match parts.next() {
                Some(q) => qvalue(q.trim())?,
                None => 1000,
            };
            Some((q, coding))
        })
        .filter(|&(q, _)| q > 0)
        .max()
        .map_or(Encoding::Identity, |(_, coding)| coding)
}

/// The answer's body as the client asked, and the headers that go with it: `Vary` from the size threshold on, and
/// `Content-Encoding` when compressed. Small answers come back untouched.
pub fn answer(request: &HeaderMap, body: Vec<u8>, headers: &mut HeaderMap) -> Vec<u8> {
    if body.len() < MIN_COMPRESSED_BYTES {
        return body;
    }
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let coding = negotiate(request);
    let Some(value) = coding.header() else { return body };
    let level = flate2::Compression::default();
    // Writing into a Vec cannot fail.
    let packed = match coding {
        Encoding::Gzip => {
            let mut e = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), level);
            e.write_all(&body).and_then(|()| e.finish())
        }
        _ => {
            let mut e = flate2::write::ZlibEncoder::new(Vec::with_capacity(body.len() / 4), level);
            e.write_all(&body).and_then(|()| e.finish())
        }
    };
    match packed {
        Ok(packed) => {
            headers.insert(header::CONTENT_ENCODING, value);
            packed
        }
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn accept(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn negotiation_follows_q_values_and_breaks_ties_towards_gzip() {
        use Encoding::*;
        for (values, want) in [
            (&[][..], Identity),
            (&["gzip, deflate"][..], Gzip),
            (&["deflate, gzip"][..], Gzip),
            (&["deflate"][..], Deflate),
            (&["x-gzip"][..], Gzip),
            (&["GZIP"][..], Gzip),
            (&["gzip;q=0.5, deflate"][..], Deflate),
            (&["gzip;q=0, deflate;q=0"][..], Identity),
            (&["gzip;q=0"][..], Identity),
            (&["br, zstd"][..], Identity),
            (&["*"][..], Identity),
            (&["identity, deflate;q=0.2"][..], Identity),
            (&["gzip;q=2, deflate;q=0.1"][..], Deflate),
            (&["gzip;q=0.1234, deflate;q=0.1"][..], Deflate),
            (&["gzip;q=0.999, deflate;q=1.000"][..], Deflate),
            (&["gzip;q=1.001"][..], Identity),
            (&["gzip;q=.5"][..], Identity),
            (&["deflate", "gzip;q=0.3"][..], Deflate),
            (&["gzip ; q=0.9, deflate; q=0.8"][..], Gzip),
        ] {
            assert_eq!(negotiate(&accept(values)), want, "{values:?}");
        }
    }

    #[test]
    fn small_answers_are_untouched_and_large_ones_compressed_as_asked() {
        let small = vec![b'a'; MIN_COMPRESSED_BYTES - 1];
        let mut headers = HeaderMap::new();
        assert_ne!(answer(&accept(&["gzip"]), vec![b'a'; MIN_COMPRESSED_BYTES], &mut headers), small);
        assert_eq!(headers.get(header::CONTENT_ENCODING).expect("compressed from the threshold on"), "gzip");
        let mut headers = HeaderMap::new();
        assert_eq!(answer(&accept(&["gzip"]), small.clone(), &mut headers), small);
        assert!(headers.is_empty(), "{headers:?}");

        let large: Vec<u8> = (0..4 * MIN_COMPRESSED_BYTES).map(|i| (i % 7) as u8).collect();
        let mut headers = HeaderMap::new();
        assert_eq!(answer(&HeaderMap::new(), large.clone(), &mut headers), large);
        assert_eq!(headers.get(header::VARY).expect("vary"), "accept-encoding");
        assert!(headers.get(header::CONTENT_ENCODING).is_none());

        let mut headers = HeaderMap::new();
        let packed = answer(&accept(&["gzip"]), large.clone(), &mut headers);
        assert_eq!(headers.get(header::CONTENT_ENCODING).expect("encoding"), "gzip");
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..]).read_to_end(&mut out).expect("gunzip");
        assert_eq!(out, large);

        let mut headers = HeaderMap::new();
        let packed = answer(&accept(&["deflate"]), large.clone(), &mut headers);
        assert_eq!(headers.get(header::CONTENT_ENCODING).expect("encoding"), "deflate");
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&packed[..]).read_to_end(&mut out).expect("inflate");
        assert_eq!(out, large);
    }

    /// What tower-http's `CompressionLayer`, configured as the gateway configured it before, answers for a body of
    /// `size` bytes: its `Content-Encoding`, its `Vary`, and the body inflated again.
    fn by_the_layer(values: &[String], size: usize) -> (Option<String>, Option<String>, Vec<u8>) {
        use tower::{Layer, ServiceExt};
        use tower_http::compression::{CompressionLayer, predicate::SizeAbove};
        let body = body(size);
        let layer =
            CompressionLayer::new().gzip(true).deflate(true).compress_when(SizeAbove::new(MIN_COMPRESSED_BYTES as u16));
        let svc = layer.layer(tower::service_fn(move |_: axum::http::Request<()>| {
            let body = axum::body::Body::from(body.clone());
            async move { Ok::<_, std::convert::Infallible>(axum::http::Response::new(body)) }
        }));
        let mut req = axum::http::Request::new(());
        for v in values {
            req.headers_mut().append(header::ACCEPT_ENCODING, HeaderValue::from_str(v).expect("header"));
        }
        let rt = tokio::runtime::Builder::new_current_thread().build().expect("runtime");
        let resp = rt.block_on(svc.oneshot(req)).expect("answered");
        let h = |name| resp.headers().get(name).map(|v: &HeaderValue| v.to_str().expect("ascii").to_owned());
        let (encoding, vary) = (h(header::CONTENT_ENCODING), h(header::VARY));
        let bytes = rt.block_on(axum::body::to_bytes(axum::body::Body::new(resp.into_body()), usize::MAX));
        (encoding.clone(), vary, inflate(encoding.as_deref(), &bytes.expect("body")))
    }

    /// A compressible answer of `size` bytes, the same for the layer and for [`answer`].
    fn body(size: usize) -> Vec<u8> {
        (0..size).map(|i| (i % 11) as u8).collect()
    }

    fn inflate(encoding: Option<&str>, bytes: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match encoding {
            Some("gzip") => flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).expect("gunzip"),
            Some("deflate") => flate2::read::ZlibDecoder::new(bytes).read_to_end(&mut out).expect("inflate"),
            _ => return bytes.to_vec(),
        };
        out
    }

    fn accept_value() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let coding = prop_oneof![
            Just("gzip"),
            Just("x-gzip"),
            Just("GZip"),
            Just("deflate"),
            Just("identity"),
            Just("br"),
            Just("*"),
            Just("zstd"),
        ];
        let q = prop_oneof![
            Just(""),
            Just(";q=0"),
            Just(";q=1"),
            Just(";q=0.5"),
            Just(";q=0.123"),
            Just(";q=0.1234"),
            Just(";q=1.000"),
            Just(";q=1.001"),
            Just(";q=.5"),
            Just("; q=0.9"),
            Just(";q=2"),
            Just(";Q=0.7"),
        ];
        prop::collection::vec((coding, q), 0..4)
            .prop_map(|items| items.iter().map(|(c, q)| format!("{c}{q}")).collect::<Vec<_>>().join(", "))
    }

    proptest::proptest! {
        /// The same coding and `Vary` as tower-http's layer for any `Accept-Encoding` and size, and the same
        /// bytes once inflated.
        #[test]
        fn answers_as_the_compression_layer_did(
            values in proptest::collection::vec(accept_value(), 0..3),
            size in proptest::prop_oneof![proptest::strategy::Just(0usize), 1000..1100usize, 4000..5000usize],
        ) {
            let body = body(size);
            let mut headers = HeaderMap::new();
            let asked: Vec<&str> = values.iter().map(String::as_str).collect();
            let mine = answer(&accept(&asked), body.clone(), &mut headers);
            let h = |name| headers.get(name).map(|v: &HeaderValue| v.to_str().expect("ascii").to_owned());
            let (encoding, vary) = (h(header::CONTENT_ENCODING), h(header::VARY));
            let layer = by_the_layer(&values, size);
            proptest::prop_assert_eq!((&encoding, &vary), (&layer.0, &layer.1), "{:?} at {} bytes", values, size);
            proptest::prop_assert_eq!(inflate(encoding.as_deref(), &mine), body.clone());
            proptest::prop_assert_eq!(layer.2, body);
        }
    }
}

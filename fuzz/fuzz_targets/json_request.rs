//! Fuzzes the Open Inference Protocol JSON request decoder (`POST /v2/models/{m}/infer` bodies): any bytes must
//! decode to a request or come back as `Err`, never panic, overflow, hang or allocate without bound. The decoder
//! tries a fast single-pass path first and leaves everything it does not take to the serde path; the two must
//! agree exactly, value for value and error for error.
#![no_main]

use gateway::protocol::json::{decode_request, decode_request_with_serde};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let got = decode_request(data);
    let want = decode_request_with_serde(data).map(|(r, _)| r);
    match (&got, &want) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the fast path decoded differently"),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!("the fast path and the serde path disagree: {got:?} against {want:?}"),
    }
});

//! Fuzzes the binary tensor data extension's request decoder (a JSON header, then raw tensors, BYTES elements
//! length-prefixed): the first four bytes are the `Inference-Header-Content-Length` (little-endian), the rest is
//! the body. Any input must decode or come back as `Err`, never panic, overflow, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((len, body)) = data.split_first_chunk::<4>() {
        let _ = gateway::protocol::json::decode_request_parts(body, Some(u32::from_le_bytes(*len) as usize));
    }
});

//! Fuzzes the Open Inference Protocol JSON request decoder (`POST /v2/models/{m}/infer` bodies): any bytes must
//! decode to a request or come back as `Err`, never panic, overflow, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway::protocol::json::decode_request(data);
});

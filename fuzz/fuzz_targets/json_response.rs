//! Fuzzes the JSON inference response decoder (an upstream server's answer, untrusted to the gateway): any bytes
//! must decode to output tensors or come back as `Err`, never panic, overflow, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = gateway::protocol::json::decode_response(data);
});

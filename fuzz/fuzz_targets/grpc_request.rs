//! Fuzzes gRPC `ModelInfer` decoding: the protobuf message (prost) and then its tensors, typed `contents` or
//! `raw_input_contents` bytes. Any bytes must decode or come back as `Err`, never panic, overflow or hang.
#![no_main]

use gateway::protocol::pb::ModelInferRequest;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = ModelInferRequest::decode(data) {
        let _ = gateway::protocol::grpc::decode_inputs(req.inputs, req.raw_input_contents);
    }
});

//! Generates the Open Inference Protocol gRPC code from `proto/grpc_service.proto` with protox, a protobuf
//! compiler in Rust, so building needs no system `protoc`. Server methods get default bodies (UNIMPLEMENTED): the
//! gateway implements every one, and the bare baseline in `examples/` only `ModelInfer`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_service.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}

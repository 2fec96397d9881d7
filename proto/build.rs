//! Generates the gRPC code from `proto/sandstorm/v1/*.proto` with `protox`, a pure-Rust protobuf
//! compiler, so a fresh machine needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sandstorm/v1/common.proto",
        "proto/sandstorm/v1/agent.proto",
        "proto/sandstorm/v1/kv.proto",
        "proto/sandstorm/v1/link.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

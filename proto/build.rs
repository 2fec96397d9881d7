//! Generates the gRPC code from `proto/sandstorm/v1/*.proto` with `protox`, a pure-Rust protobuf
//! compiler, so a fresh machine needs no system `protoc`. Also writes the encoded descriptor set
//! (`sandstorm_descriptor.bin`) that server reflection serves.

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/sandstorm/v1/common.proto",
        "proto/sandstorm/v1/agent.proto",
        "proto/sandstorm/v1/kv.proto",
        "proto/sandstorm/v1/link.proto",
        "proto/sandstorm/v1/scheduler.proto",
    ];
    for file in files {
        println!("cargo:rerun-if-changed={file}");
    }
    let descriptors = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("sandstorm_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}

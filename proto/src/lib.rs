//! Sandstorm's gRPC contract: the `.proto` files under `proto/`, the code `tonic`/`prost` generate
//! from them, and (as services land) the conversions between wire types and domain types.
//!
//! Owns nothing else. Domain crates (`cost-model`, `naming`, `profiler`, the placement core) never
//! see prost types; the services convert at their edge through this crate.

/// Version 1 of the protocol (`package sandstorm.v1`). Generated code: the workspace lints are
/// relaxed here only.
#[allow(
    missing_docs,
    missing_debug_implementations,
    unused_qualifications,
    clippy::all
)]
pub mod v1 {
    tonic::include_proto!("sandstorm.v1");
}

/// Largest input or output of one invocation, bytes: 4 MiB less 64 KiB, so that a maximum-size
/// output and its invocation record fit in the 4 MiB message a default gRPC client accepts.
pub const MAX_PAYLOAD_BYTES: usize = (4 << 20) - (64 << 10);

/// The encoded `FileDescriptorSet` of every Sandstorm `.proto` file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sandstorm_descriptor.bin"));

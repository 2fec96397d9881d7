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

/// A failed invocation's status, carrying `kind` (see `FailureKind` in `common.proto`) in its
/// details as an encoded `CallError`, so the caller decides about retries by type, not by
/// reading the message.
pub fn invocation_failure(
    code: tonic::Code,
    message: impl Into<String>,
    kind: v1::FailureKind,
) -> tonic::Status {
    let message = message.into();
    let details = prost::Message::encode_to_vec(&v1::CallError {
        code: code as i32,
        message: message.clone(),
        kind: kind.into(),
    });
    tonic::Status::with_details(code, message, details.into())
}

/// The `CallError` of a status: its details when they hold one for the same code (made by
/// [`invocation_failure`]), else its code and message with the kind unspecified.
pub fn call_error(status: &tonic::Status) -> v1::CallError {
    let code = status.code() as i32;
    match <v1::CallError as prost::Message>::decode(status.details()) {
        Ok(e) if e.code == code && !status.details().is_empty() => v1::CallError {
            message: status.message().to_owned(),
            ..e
        },
        _ => v1::CallError {
            code,
            message: status.message().to_owned(),
            kind: v1::FailureKind::Unspecified.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failures_kind_travels_in_its_status() {
        let status = invocation_failure(
            tonic::Code::ResourceExhausted,
            "queue full",
            v1::FailureKind::Refused,
        );
        let e = call_error(&status);
        assert_eq!(e.code, tonic::Code::ResourceExhausted as i32);
        assert_eq!(e.message, "queue full");
        assert_eq!(e.kind(), v1::FailureKind::Refused);
        // A status without details (the transport's, an older agent's) has no kind.
        let e = call_error(&tonic::Status::unavailable("connection reset"));
        assert_eq!(e.kind(), v1::FailureKind::Unspecified);
        assert_eq!(e.code, tonic::Code::Unavailable as i32);
    }
}

//! End-to-end tests that start the real `sandstorm` binary, and the helpers they share.

use std::path::PathBuf;

/// The workspace root (where `Cargo.toml`, `data/` and `sim/scenarios/` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Path of the `sandstorm` binary that `cargo test --workspace` builds next to the test
/// executables (the `cli` package's integration tests make cargo build it first).
pub fn sandstorm_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    // target/<profile>/deps/<test> -> target/<profile>/sandstorm
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .unwrap_or_default();
    dir.join(format!("sandstorm{}", std::env::consts::EXE_SUFFIX))
}

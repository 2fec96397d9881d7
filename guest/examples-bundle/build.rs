//! Compiles `guest/examples` for `wasm32-unknown-unknown` with the same toolchain (the target is
//! listed in `rust-toolchain.toml`) into this crate's `OUT_DIR`, so the example modules are part
//! of every normal build and test run: nothing to build by hand.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const FUNCTIONS: [&str; 6] = [
    "echo",
    "kv-sum",
    "graph-walk",
    "hash-chain",
    "counter",
    "spin",
];

fn main() {
    let manifest_dir = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let guest = manifest_dir
        .parent()
        .expect("guest/examples-bundle has a parent")
        .to_path_buf();
    let examples = guest.join("examples");
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let target_dir = out_dir.join("wasm-target");
    for watched in [
        examples.join("functions"),
        examples.join("Cargo.toml"),
        guest.join("src"),
    ] {
        println!("cargo:rerun-if-changed={}", watched.display());
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build
        .args(["build", "--release", "--offline", "--examples"])
        .args(["--target", "wasm32-unknown-unknown"])
        .arg("--manifest-path")
        .arg(examples.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        // The outer build's flags are for the host; the jobserver and wrappers are not ours.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    let status = build
        .status()
        .expect("run cargo to build the guest examples");
    assert!(
        status.success(),
        "building guest/examples for wasm32-unknown-unknown failed ({status}); \
         is the target installed? `rustup target add wasm32-unknown-unknown`"
    );

    let wasm_dir = target_dir.join("wasm32-unknown-unknown/release/examples");
    let mut generated = String::new();
    generated.push_str("/// Every example function: its name and its module bytes.\n");
    generated.push_str("pub const ALL: &[(&str, &[u8])] = &[\n");
    for name in FUNCTIONS {
        let file = wasm_dir.join(format!("{}.wasm", name.replace('-', "_")));
        assert!(file.exists(), "{} was not built", file.display());
        generated.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            file.display().to_string()
        ));
    }
    generated.push_str("];\n");
    std::fs::write(out_dir.join("modules.rs"), generated).expect("write modules.rs");
}

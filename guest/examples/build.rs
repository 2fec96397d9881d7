//! A 64 KiB shadow stack instead of rustc's 1 MiB default: every instance's linear memory starts
//! that much smaller, which is most of what a fresh instance costs.
fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg=-zstack-size=65536");
    }
}

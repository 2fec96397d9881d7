//! The example functions of `guest/examples` as WebAssembly bytes, for tests, benchmarks,
//! `sandstorm dev` and the simulator's scenarios. The build script compiles them; this crate only
//! embeds the result. Source and input formats: `guest/examples/functions/`.

include!(concat!(env!("OUT_DIR"), "/modules.rs"));

/// The module of the example function `name` (`echo`, `kv-sum`, `graph-walk`, `hash-chain`,
/// `counter`, `spin`).
pub fn module(name: &str) -> Option<&'static [u8]> {
    ALL.iter()
        .find(|(n, _)| *n == name)
        .map(|(_, bytes)| *bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_example_is_a_wasm_module() {
        assert_eq!(super::ALL.len(), 6);
        for (name, bytes) in super::ALL {
            assert_eq!(&bytes[..4], b"\0asm", "{name}");
        }
        assert!(super::module("kv-sum").is_some());
        assert!(super::module("nope").is_none());
    }
}

//! The guest SDK: what tenants write Sandstorm functions with.
//!
//! Functions compile to `wasm32-unknown-unknown` and run unchanged inside a storage node's
//! WebAssembly sandbox or in a compute node's container. The SDK will wrap the host interface
//! (read input, write output, get/put/delete/multi-get/scan in the tenant's own keyspace, log)
//! and hold the example functions (`echo`, `kv-sum`, `graph-walk`, `hash-chain`, `counter`).
//!
//! Nothing is implemented yet: the storage-node issue fills this crate.
#![no_std]

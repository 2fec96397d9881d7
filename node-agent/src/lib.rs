//! The node agent: one binary, two roles.
//!
//! - **Storage role** (issue 3): holds tenants' data in an in-memory, durable key-value store and
//!   runs tenants' functions inside itself in WebAssembly sandboxes (wasmtime, pooling allocator),
//!   so a function that reads many records pays no network round trip per record.
//! - **Compute role** (issue 4): runs functions in Linux containers assembled in about a
//!   millisecond from pre-created parts (FlashCube-style namespace, cgroup and root file system
//!   pools, forked runtime templates).
//!
//! Both roles push per-core statistics and measured costs to the scheduler over the
//! `NodeAgent.StreamStats` gRPC stream defined in `sandstorm-proto`. The agent depends on
//! `proto`, `naming` and the pure crates, never on the scheduler.
//!
//! Nothing is implemented yet: this crate is a placeholder until the storage-node issue.

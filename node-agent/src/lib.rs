//! The node agent: one binary, two roles.
//!
//! - **Storage role** ([`storage`]): holds tenants' data in an in-memory, durable key-value store
//!   and runs tenants' functions inside itself in WebAssembly sandboxes (Wasmtime, pooling
//!   allocator), so a function that reads many records pays no network round trip per record.
//! - **Compute role** ([`compute`]): runs functions in Linux containers assembled in well under
//!   a millisecond from pre-created parts (FlashCube-style namespace, cgroup and root file
//!   system pools, forked runtime templates), and forwards their data calls to the storage
//!   nodes.
//!
//! Both roles push per-core statistics and measured costs ([`stats`]) over the
//! `NodeAgent.StreamStats` gRPC stream defined in `sandstorm-proto`. The agent depends on `proto`,
//! `naming` and the pure crates, never on the scheduler.

pub mod compute;
pub mod edge;
pub mod in_flight;
pub mod sandbox;
pub mod scheduling;
pub mod stats;
pub mod storage;
pub mod telemetry;

//! The scheduler.
//!
//! The **scheduler service** ([`service`]: client API over gRPC, the cluster view fed by agents'
//! statistics, the persistent store of tenants and functions) is the only part that does I/O.
//! It calls the **placement core** (the pure `sandstorm-placement` crate, re-exported here as
//! [`placement`], with its [`keepalive`] policies) exactly as the simulator does. The
//! **re-provisioner's model** ([`provision`]) is a small MILP over recent profiles that gives hot
//! functions storage cores of their own, keeps warm containers where they pay for their memory,
//! and sizes the compute nodes' part pools.
//!
//! Depends on `cost-model`, `naming`, `placement` and `profiler`; never on `node-agent` (they
//! meet only through `proto`).

pub use sandstorm_placement as placement;
pub use sandstorm_placement::keepalive;
pub mod provision;
pub mod service;

//! The scheduler.
//!
//! Today it owns the **placement core** ([`placement`]): the pure, synchronous engine that
//! filters, costs and chooses a node for each invocation, shared unchanged by the simulator and
//! (from the scheduler-service issue on) the live gRPC service; and the **keep-alive policies**
//! ([`keepalive`]) that decide how long an idle execution context lives; and the
//! **re-provisioner's model** ([`provision`]): a small MILP over recent profiles that gives hot
//! functions storage cores of their own, keeps warm containers where they pay for their memory,
//! and sizes the compute nodes' part pools. Beside them, the
//! **scheduler service** ([`service`]: client API over gRPC, the cluster view fed by agents'
//! statistics, the persistent store of tenants and functions) is the only part allowed to do
//! I/O; it calls the placement core exactly as the simulator does.
//!
//! Depends on `cost-model`, `naming` and `profiler`; never on `node-agent` (they meet only
//! through `proto`).

pub mod keepalive;
pub mod placement;
pub mod provision;
pub mod service;

//! The trace-driven discrete-event simulator.
//!
//! It replays real serverless traces (Azure Functions 2019 and 2021 formats) or synthetic load on
//! a simulated cluster of storage and compute nodes, and drives the placement core (`sandstorm-placement`, the live scheduler's own)
//! *unchanged* for every invocation: the same filters, costs and policies as the live scheduler.
//!
//! Owns: trace readers and arrival expansion ([`trace`]), scenario files ([`scenario`]),
//! per-function data-access profiles ([`profile`]), the event engine ([`engine`]), the offline
//! LP bound ([`bound`]) and the reports ([`report`]). It must not depend on networking, tokio or
//! any service crate.

pub mod bound;
pub mod driver;
pub mod engine;
pub mod profile;
pub mod report;
pub mod scenario;
pub mod trace;

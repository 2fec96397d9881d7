//! Names and places: what exists in a Sandstorm cluster and where it lives.
//!
//! This crate owns the pure data structures the scheduler (and the simulator) consult on every
//! placement:
//! - identifiers ([`TenantId`], [`FunctionId`], [`AppId`], [`NodeId`], [`CoreId`],
//!   [`InvocationId`]) and the roles of nodes ([`NodeRole`]);
//! - [`catalog`]: tenants, functions and nodes, looked up by id or by name;
//! - [`ring`]: which storage node owns which key (consistent hashing with virtual nodes, so adding
//!   or removing a node moves few keys);
//! - [`warm`]: warm execution contexts per app per node, busy or idle, with their last use;
//! - [`liveness`]: node liveness from heartbeats.
//!
//! It is pure and synchronous: time comes in as an argument (microseconds), there is no I/O and no
//! global state. It depends on no other Sandstorm crate.

pub mod catalog;
pub mod liveness;
pub mod ring;
pub mod warm;

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident($inner:ty), $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub $inner);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(
    /// A tenant: the unit of authentication and data isolation.
    TenantId(u32),
    "tenant-"
);
id!(
    /// A deployed function.
    FunctionId(u32),
    "fn-"
);
id!(
    /// An application: functions of one app share execution contexts (Azure's keep-alive unit).
    AppId(u32),
    "app-"
);
id!(
    /// A node of the cluster (storage or compute).
    NodeId(u32),
    "node-"
);
id!(
    /// A core of a node, numbered from 0 within the node.
    CoreId(u16),
    "core-"
);
id!(
    /// One invocation; also the seed of its placement's tie-breaking, so decisions replay.
    InvocationId(u64),
    "inv-"
);

/// What a node does in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeRole {
    /// Holds tenants' data in memory and runs functions next to it in Wasm sandboxes.
    Storage,
    /// Runs functions in containers assembled from pre-created parts.
    Compute,
}

impl fmt::Display for NodeRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeRole::Storage => "storage",
            NodeRole::Compute => "compute",
        })
    }
}

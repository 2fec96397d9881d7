//! The catalog: which tenants, functions and nodes exist, looked up by id or by name.
//!
//! Ids are dense and handed out in insertion order: the n-th tenant is `TenantId(n)`, the n-th
//! function `FunctionId(n)`, the n-th node `NodeId(n)`, so callers (the scheduler, the simulator)
//! can index their own per-tenant/per-function/per-node vectors with them. A removed function's id
//! is never reused, so a stale id can never name a different function.
//!
//! Names are unique per scope: tenant names and node names cluster-wide, function names within
//! their tenant. The catalog never removes tenants or nodes; a node that goes away is a liveness
//! matter (see [`crate::liveness`]), not a catalog one.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::{AppId, FunctionId, NodeId, NodeRole, TenantId};

/// A tenant: the unit of authentication and data isolation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub id: TenantId,
    pub name: String,
}

/// A deployed function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionSpec {
    pub id: FunctionId,
    pub tenant: TenantId,
    /// The application the function belongs to: functions of one app share warm contexts.
    pub app: AppId,
    pub name: String,
    /// Memory of one execution context of this function, MiB.
    pub memory_mb: u32,
}

/// A node of the cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    pub id: NodeId,
    pub name: String,
    pub role: NodeRole,
    /// Cores available to run functions.
    pub cores: u32,
    /// Memory available to execution contexts, MiB.
    pub memory_mb: u64,
}

/// Why a catalog change was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CatalogError {
    /// A name must not be empty.
    #[error("{kind} name must not be empty")]
    EmptyName { kind: &'static str },
    /// Tenant names are unique.
    #[error("tenant {name:?} already exists as {existing}")]
    DuplicateTenant { name: String, existing: TenantId },
    /// The function names a tenant the catalog does not know.
    #[error("unknown tenant {0}")]
    UnknownTenant(TenantId),
    /// Function names are unique within their tenant.
    #[error("function {name:?} already exists in {tenant} as {existing}")]
    DuplicateFunction {
        tenant: TenantId,
        name: String,
        existing: FunctionId,
    },
    /// A function needs some memory to run.
    #[error("function {name:?} of {tenant} asks for 0 MiB of memory")]
    ZeroMemory { tenant: TenantId, name: String },
    /// Node names are unique.
    #[error("node {name:?} already exists as {existing}")]
    DuplicateNode { name: String, existing: NodeId },
    /// A node without cores cannot run anything.
    #[error("node {name:?} has 0 cores")]
    ZeroCores { name: String },
    /// The id space (u32) of this kind is exhausted.
    #[error("too many {kind}s: the u32 id space is exhausted")]
    IdsExhausted { kind: &'static str },
}

/// Tenants, functions and nodes of a cluster.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    tenants: Vec<TenantSpec>,
    tenant_by_name: HashMap<String, TenantId>,
    /// Per tenant (indexed by `TenantId.0`): its function names and, in insertion order, its ids.
    tenant_functions: Vec<TenantFunctions>,
    /// Indexed by `FunctionId.0`; `None` once removed (ids are never reused).
    functions: Vec<Option<FunctionSpec>>,
    live_functions: usize,
    nodes: Vec<NodeSpec>,
    node_by_name: HashMap<String, NodeId>,
}

#[derive(Debug, Clone, Default)]
struct TenantFunctions {
    by_name: HashMap<String, FunctionId>,
    ids: Vec<FunctionId>,
}

fn next_id(len: usize, kind: &'static str) -> Result<u32, CatalogError> {
    u32::try_from(len).map_err(|_| CatalogError::IdsExhausted { kind })
}

fn non_empty(name: &str, kind: &'static str) -> Result<(), CatalogError> {
    if name.is_empty() {
        Err(CatalogError::EmptyName { kind })
    } else {
        Ok(())
    }
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tenant; its id is the number of tenants added before it.
    pub fn add_tenant(&mut self, name: impl Into<String>) -> Result<TenantId, CatalogError> {
        let name = name.into();
        non_empty(&name, "tenant")?;
        if let Some(&existing) = self.tenant_by_name.get(&name) {
            return Err(CatalogError::DuplicateTenant { name, existing });
        }
        let id = TenantId(next_id(self.tenants.len(), "tenant")?);
        self.tenant_by_name.insert(name.clone(), id);
        self.tenants.push(TenantSpec { id, name });
        self.tenant_functions.push(TenantFunctions::default());
        Ok(id)
    }

    /// Adds a function of `tenant` in application `app`, needing `memory_mb` per context.
    pub fn add_function(
        &mut self,
        tenant: TenantId,
        app: AppId,
        name: impl Into<String>,
        memory_mb: u32,
    ) -> Result<FunctionId, CatalogError> {
        let name = name.into();
        non_empty(&name, "function")?;
        let Some(entry) = self.tenant_functions.get_mut(tenant.0 as usize) else {
            return Err(CatalogError::UnknownTenant(tenant));
        };
        if let Some(&existing) = entry.by_name.get(&name) {
            return Err(CatalogError::DuplicateFunction {
                tenant,
                name,
                existing,
            });
        }
        if memory_mb == 0 {
            return Err(CatalogError::ZeroMemory { tenant, name });
        }
        let id = FunctionId(next_id(self.functions.len(), "function")?);
        entry.by_name.insert(name.clone(), id);
        entry.ids.push(id);
        self.functions.push(Some(FunctionSpec {
            id,
            tenant,
            app,
            name,
            memory_mb,
        }));
        self.live_functions += 1;
        Ok(id)
    }

    /// Removes a function; its id is never handed out again. `None` if it did not exist.
    pub fn remove_function(&mut self, id: FunctionId) -> Option<FunctionSpec> {
        let spec = self.functions.get_mut(id.0 as usize)?.take()?;
        if let Some(entry) = self.tenant_functions.get_mut(spec.tenant.0 as usize) {
            entry.by_name.remove(&spec.name);
            entry.ids.retain(|&f| f != id);
        }
        self.live_functions -= 1;
        Some(spec)
    }

    /// Adds a node; its id is the number of nodes added before it, so `NodeId(i)` indexes
    /// [`Catalog::nodes`].
    pub fn add_node(
        &mut self,
        name: impl Into<String>,
        role: NodeRole,
        cores: u32,
        memory_mb: u64,
    ) -> Result<NodeId, CatalogError> {
        let name = name.into();
        non_empty(&name, "node")?;
        if let Some(&existing) = self.node_by_name.get(&name) {
            return Err(CatalogError::DuplicateNode { name, existing });
        }
        if cores == 0 {
            return Err(CatalogError::ZeroCores { name });
        }
        let id = NodeId(next_id(self.nodes.len(), "node")?);
        self.node_by_name.insert(name.clone(), id);
        self.nodes.push(NodeSpec {
            id,
            name,
            role,
            cores,
            memory_mb,
        });
        Ok(id)
    }

    pub fn function(&self, id: FunctionId) -> Option<&FunctionSpec> {
        self.functions.get(id.0 as usize)?.as_ref()
    }

    pub fn function_by_name(&self, tenant: TenantId, name: &str) -> Option<&FunctionSpec> {
        let id = *self
            .tenant_functions
            .get(tenant.0 as usize)?
            .by_name
            .get(name)?;
        self.function(id)
    }

    /// The live functions of `tenant`, in the order they were added (empty for an unknown tenant).
    pub fn functions_of(&self, tenant: TenantId) -> impl Iterator<Item = &FunctionSpec> + '_ {
        self.tenant_functions
            .get(tenant.0 as usize)
            .map(|entry| entry.ids.as_slice())
            .unwrap_or_default()
            .iter()
            .filter_map(|&id| self.function(id))
    }

    /// Every live function, in id order.
    pub fn functions(&self) -> impl Iterator<Item = &FunctionSpec> + '_ {
        self.functions.iter().flatten()
    }

    /// Number of live (not removed) functions.
    pub fn function_count(&self) -> usize {
        self.live_functions
    }

    pub fn tenant(&self, id: TenantId) -> Option<&TenantSpec> {
        self.tenants.get(id.0 as usize)
    }

    pub fn tenant_by_name(&self, name: &str) -> Option<&TenantSpec> {
        self.tenant(*self.tenant_by_name.get(name)?)
    }

    /// Every tenant, indexed by `TenantId.0`.
    pub fn tenants(&self) -> &[TenantSpec] {
        &self.tenants
    }

    pub fn node(&self, id: NodeId) -> Option<&NodeSpec> {
        self.nodes.get(id.0 as usize)
    }

    pub fn node_by_name(&self, name: &str) -> Option<&NodeSpec> {
        self.node(*self.node_by_name.get(name)?)
    }

    /// Every node, indexed by `NodeId.0`.
    pub fn nodes(&self) -> &[NodeSpec] {
        &self.nodes
    }

    /// The nodes of one role, in id order.
    pub fn nodes_with_role(&self, role: NodeRole) -> impl Iterator<Item = &NodeSpec> + '_ {
        self.nodes.iter().filter(move |n| n.role == role)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn two_tenants() -> (Catalog, TenantId, TenantId) {
        let mut c = Catalog::new();
        let a = c.add_tenant("acme").expect("fresh name");
        let b = c.add_tenant("globex").expect("fresh name");
        (c, a, b)
    }

    #[test]
    fn ids_are_dense_in_insertion_order() {
        let (mut c, a, b) = two_tenants();
        assert_eq!((a, b), (TenantId(0), TenantId(1)));
        let f0 = c.add_function(a, AppId(0), "resize", 128).expect("ok");
        let f1 = c
            .add_function(b, AppId(1), "resize", 256)
            .expect("same name, other tenant");
        assert_eq!((f0, f1), (FunctionId(0), FunctionId(1)));
        let s = c.add_node("s0", NodeRole::Storage, 8, 1 << 14).expect("ok");
        let k = c
            .add_node("c0", NodeRole::Compute, 16, 1 << 15)
            .expect("ok");
        assert_eq!((s, k), (NodeId(0), NodeId(1)));
        for (i, n) in c.nodes().iter().enumerate() {
            assert_eq!(n.id, NodeId(i as u32));
        }
        let compute: Vec<_> = c.nodes_with_role(NodeRole::Compute).map(|n| n.id).collect();
        assert_eq!(compute, vec![k]);
        assert_eq!(c.node_by_name("s0").map(|n| n.cores), Some(8));
    }

    #[test]
    fn lookups_by_name() {
        let (mut c, a, b) = two_tenants();
        let f = c.add_function(a, AppId(7), "thumb", 64).expect("ok");
        assert_eq!(c.tenant_by_name("globex").map(|t| t.id), Some(b));
        assert_eq!(c.tenant(a).map(|t| t.name.as_str()), Some("acme"));
        assert_eq!(c.function_by_name(a, "thumb").map(|s| s.id), Some(f));
        assert_eq!(c.function_by_name(b, "thumb"), None);
        assert_eq!(c.function_by_name(TenantId(99), "thumb"), None);
        assert_eq!(c.function(f).map(|s| s.app), Some(AppId(7)));
    }

    #[test]
    fn rejections_name_what_was_wrong() {
        let (mut c, a, _) = two_tenants();
        c.add_function(a, AppId(0), "f", 128).expect("ok");
        c.add_node("n", NodeRole::Storage, 1, 1).expect("ok");
        let cases: Vec<(Result<u32, CatalogError>, &str)> = vec![
            (
                c.add_tenant("acme").map(|t| t.0),
                "tenant \"acme\" already exists as tenant-0",
            ),
            (
                c.add_tenant("").map(|t| t.0),
                "tenant name must not be empty",
            ),
            (
                c.add_function(TenantId(9), AppId(0), "g", 1).map(|f| f.0),
                "unknown tenant tenant-9",
            ),
            (
                c.add_function(a, AppId(0), "f", 1).map(|f| f.0),
                "function \"f\" already exists in tenant-0 as fn-0",
            ),
            (
                c.add_function(a, AppId(0), "g", 0).map(|f| f.0),
                "function \"g\" of tenant-0 asks for 0 MiB of memory",
            ),
            (
                c.add_node("n", NodeRole::Compute, 4, 1).map(|n| n.0),
                "node \"n\" already exists as node-0",
            ),
            (
                c.add_node("m", NodeRole::Compute, 0, 1).map(|n| n.0),
                "node \"m\" has 0 cores",
            ),
        ];
        for (result, message) in cases {
            assert_eq!(result.map_err(|e| e.to_string()), Err(message.to_string()));
        }
        // Nothing was added by the failed calls.
        assert_eq!(
            (c.tenants().len(), c.function_count(), c.nodes().len()),
            (2, 1, 1)
        );
    }

    #[test]
    fn removed_function_ids_are_not_reused() {
        let (mut c, a, _) = two_tenants();
        let f0 = c.add_function(a, AppId(0), "f", 128).expect("ok");
        let f1 = c.add_function(a, AppId(0), "g", 128).expect("ok");
        assert_eq!(c.remove_function(f0).map(|s| s.name), Some("f".to_string()));
        assert_eq!(c.remove_function(f0), None);
        assert_eq!(c.function(f0), None);
        assert_eq!(c.function_by_name(a, "f"), None);
        // The name is free again, the id is not: 2 functions were added before, so fn-2.
        let again = c.add_function(a, AppId(0), "f", 128).expect("name freed");
        assert_eq!(again, FunctionId(2));
        let ids: Vec<_> = c.functions_of(a).map(|s| s.id).collect();
        assert_eq!(ids, vec![f1, again]);
        assert_eq!(c.functions().count(), 2);
        assert_eq!(c.function_count(), 2);
        assert_eq!(c.functions_of(TenantId(42)).count(), 0);
    }

    #[test]
    fn specs_round_trip_through_serde() {
        let (mut c, a, _) = two_tenants();
        let f = c.add_function(a, AppId(3), "f", 128).expect("ok");
        let spec = c.function(f).cloned().expect("exists");
        let json = serde_json::to_string(&spec).expect("serialises");
        // Ids serialise transparently, as plain numbers.
        assert_eq!(
            json,
            r#"{"id":0,"tenant":0,"app":3,"name":"f","memory_mb":128}"#
        );
        let back: FunctionSpec = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, spec);
        let node = NodeSpec {
            id: NodeId(1),
            name: "c1".into(),
            role: NodeRole::Compute,
            cores: 4,
            memory_mb: 8192,
        };
        let json = serde_json::to_string(&node).expect("serialises");
        assert!(json.contains(r#""role":"compute""#), "{json}");
        assert!(serde_json::from_str::<TenantSpec>(r#"{"id":0,"name":"x","extra":1}"#).is_err());
    }
}

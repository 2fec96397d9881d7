//! What users deployed, kept in an embedded database (redb) in the scheduler's data directory:
//! tenants with their token hashes, functions with their limits and module bytes, the nodes that
//! registered (so a node keeps its id, and the key ring its shape, across restarts), and the
//! admin token's hash. Every change is one committed, durable transaction.
//!
//! Records are JSON (small, readable with redb's tools); module bytes live in their own table.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::auth::TokenHash;

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const TENANTS: TableDefinition<'_, u32, &str> = TableDefinition::new("tenants");
const FUNCTIONS: TableDefinition<'_, (u32, &str), &str> = TableDefinition::new("functions");
const MODULES: TableDefinition<'_, (u32, &str), &[u8]> = TableDefinition::new("modules");
const NODES: TableDefinition<'_, u32, &str> = TableDefinition::new("nodes");

const ADMIN_HASH: &str = "admin_token_sha256";

/// The file inside the data directory.
pub const DB_FILE: &str = "scheduler.redb";

/// The store failed (the message names the operation).
#[derive(Debug, Error)]
pub enum StoreError {
    #[error("scheduler store: {what}: {message}")]
    Db { what: &'static str, message: String },
    #[error("scheduler store: record {what} is corrupt: {source}")]
    Corrupt {
        what: String,
        source: serde_json::Error,
    },
}

fn db<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        what,
        message: e.to_string(),
    }
}

/// A tenant as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRecord {
    pub id: u32,
    pub name: String,
    pub token_sha256: TokenHash,
}

/// A function's settings as stored (the module is kept beside it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionLimits {
    pub deadline_ms: u32,
    pub memory_mb: u32,
    pub max_payload_bytes: u32,
}

/// A function with its module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionRecord {
    pub tenant: u32,
    pub name: String,
    pub limits: FunctionLimits,
    pub module: Vec<u8>,
}

/// A node that registered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRecord {
    pub id: u32,
    pub name: String,
    /// `storage` or `compute`.
    pub role: String,
    pub address: String,
    pub cores: u32,
    pub memory_mb: u64,
}

/// Everything stored, as loaded at start.
#[derive(Debug, Default)]
pub struct Loaded {
    pub admin_hash: Option<TokenHash>,
    /// In id order.
    pub tenants: Vec<TenantRecord>,
    pub functions: Vec<FunctionRecord>,
    /// In id order.
    pub nodes: Vec<NodeRecord>,
}

/// The scheduler's database.
#[derive(Debug)]
pub struct Store {
    db: Database,
}

fn json<T: Serialize>(value: &T) -> String {
    // Serialising these plain structs (strings, numbers, byte arrays) cannot fail.
    serde_json::to_string(value).unwrap_or_default()
}

fn parse<T: for<'de> Deserialize<'de>>(
    what: impl Into<String>,
    text: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: what.into(),
        source,
    })
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(db("creating the data directory"))?;
        let db = Database::create(dir.join(DB_FILE)).map_err(db("opening the database"))?;
        let store = Self { db };
        // Create every table, so reads never meet a missing one.
        store.write("creating tables", |txn| {
            txn.open_table(META)?;
            txn.open_table(TENANTS)?;
            txn.open_table(FUNCTIONS)?;
            txn.open_table(MODULES)?;
            txn.open_table(NODES)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn write(
        &self,
        what: &'static str,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db(what))?;
        f(&txn).map_err(db(what))?;
        txn.commit().map_err(db(what))
    }

    /// Everything stored.
    pub fn load(&self) -> Result<Loaded, StoreError> {
        let what = "loading";
        let txn = self.db.begin_read().map_err(db(what))?;
        let mut loaded = Loaded::default();
        let meta = txn.open_table(META).map_err(db(what))?;
        if let Some(v) = meta.get(ADMIN_HASH).map_err(db(what))? {
            loaded.admin_hash = v.value().try_into().ok();
        }
        for entry in txn
            .open_table(TENANTS)
            .map_err(db(what))?
            .iter()
            .map_err(db(what))?
        {
            let (k, v) = entry.map_err(db(what))?;
            loaded
                .tenants
                .push(parse(format!("tenant {}", k.value()), v.value())?);
        }
        let modules = txn.open_table(MODULES).map_err(db(what))?;
        for entry in txn
            .open_table(FUNCTIONS)
            .map_err(db(what))?
            .iter()
            .map_err(db(what))?
        {
            let (k, v) = entry.map_err(db(what))?;
            let (tenant, name) = k.value();
            let limits = parse(format!("function {name} of tenant {tenant}"), v.value())?;
            let module = modules
                .get((tenant, name))
                .map_err(db(what))?
                .map(|m| m.value().to_vec())
                .unwrap_or_default();
            loaded.functions.push(FunctionRecord {
                tenant,
                name: name.to_owned(),
                limits,
                module,
            });
        }
        for entry in txn
            .open_table(NODES)
            .map_err(db(what))?
            .iter()
            .map_err(db(what))?
        {
            let (k, v) = entry.map_err(db(what))?;
            loaded
                .nodes
                .push(parse(format!("node {}", k.value()), v.value())?);
        }
        Ok(loaded)
    }

    pub fn set_admin_hash(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.write("storing the admin token", |txn| {
            txn.open_table(META)?.insert(ADMIN_HASH, hash.as_slice())?;
            Ok(())
        })
    }

    pub fn put_tenant(&self, tenant: &TenantRecord) -> Result<(), StoreError> {
        self.write("storing a tenant", |txn| {
            txn.open_table(TENANTS)?
                .insert(tenant.id, json(tenant).as_str())?;
            Ok(())
        })
    }

    /// Stores (or replaces) a function and its module in one transaction.
    pub fn put_function(&self, f: &FunctionRecord) -> Result<(), StoreError> {
        self.write("storing a function", |txn| {
            let key = (f.tenant, f.name.as_str());
            txn.open_table(FUNCTIONS)?
                .insert(key, json(&f.limits).as_str())?;
            txn.open_table(MODULES)?.insert(key, f.module.as_slice())?;
            Ok(())
        })
    }

    pub fn remove_function(&self, tenant: u32, name: &str) -> Result<(), StoreError> {
        self.write("removing a function", |txn| {
            txn.open_table(FUNCTIONS)?.remove((tenant, name))?;
            txn.open_table(MODULES)?.remove((tenant, name))?;
            Ok(())
        })
    }

    pub fn put_node(&self, node: &NodeRecord) -> Result<(), StoreError> {
        self.write("storing a node", |txn| {
            txn.open_table(NODES)?
                .insert(node.id, json(node).as_str())?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_survives_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tenant = TenantRecord {
            id: 0,
            name: "acme".into(),
            token_sha256: [7; 32],
        };
        let f = FunctionRecord {
            tenant: 0,
            name: "echo".into(),
            limits: FunctionLimits {
                deadline_ms: 500,
                memory_mb: 16,
                max_payload_bytes: 1024,
            },
            module: b"\0asm-bytes".to_vec(),
        };
        let node = NodeRecord {
            id: 0,
            name: "storage-0".into(),
            role: "storage".into(),
            address: "http://127.0.0.1:1".into(),
            cores: 2,
            memory_mb: 0,
        };
        {
            let store = Store::open(dir.path()).expect("open");
            store.set_admin_hash(&[1; 32]).expect("admin");
            store.put_tenant(&tenant).expect("tenant");
            store.put_function(&f).expect("function");
            let mut g = f.clone();
            g.name = "gone".into();
            store.put_function(&g).expect("function");
            store.remove_function(0, "gone").expect("remove");
            store.put_node(&node).expect("node");
        }
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(loaded.admin_hash, Some([1; 32]));
        assert_eq!(loaded.tenants, vec![tenant]);
        assert_eq!(loaded.functions, vec![f]);
        assert_eq!(loaded.nodes, vec![node]);
    }
}

//! What users deployed, kept in an embedded database (redb) in the scheduler's data directory:
//! tenants with their token hashes and quotas, functions with their limits and module bytes (or
//! native command), the nodes that registered (so a node keeps its id, and the key ring its
//! shape, across restarts), the certificate each node name is bound to, join tokens' hashes, and
//! the admin token's hash. Every change is one committed, durable transaction.
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
const COMMANDS: TableDefinition<'_, (u32, &str), &str> = TableDefinition::new("commands");
const CERTIFICATES: TableDefinition<'_, &str, &str> = TableDefinition::new("certificates");
const JOIN_TOKENS: TableDefinition<'_, u32, &str> = TableDefinition::new("join_tokens");

const ADMIN_HASH: &str = "admin_token_sha256";
const RING: &str = "key_ring";

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
    /// As the admin set them (0: the default); a record from before quotas has none.
    #[serde(default)]
    pub quotas: QuotaSettings,
}

/// A tenant's quotas as the admin set them; 0 means the documented default
/// ([`super::quota`] resolves them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaSettings {
    pub max_stored_bytes: u64,
    pub max_keys: u64,
    pub max_data_calls: u64,
    pub max_data_bytes: u64,
    pub max_concurrent: u32,
}

/// The certificate a node name is bound to: only its holder registers that name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRecord {
    pub name: String,
    /// `storage` or `compute`.
    pub role: String,
    /// SHA-256 of the certificate (DER), hex.
    pub fingerprint: String,
    pub bound_unix_s: u64,
}

/// A join token as stored: only its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinTokenRecord {
    pub id: u32,
    pub token_sha256: TokenHash,
    pub expires_unix_s: u64,
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
    /// The WebAssembly module (empty for a native function).
    pub module: Vec<u8>,
    /// A native function's program and arguments (empty for a WebAssembly one).
    pub command: Vec<String>,
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

/// The key ring's membership: which storage nodes own keys, which were drained, and the move
/// in progress (see [`super::rebalance`]). One record, replaced whole: a move's switch of
/// ownership is one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RingRecord {
    /// Node ids on the ring, sorted.
    pub members: Vec<u32>,
    /// Storage nodes drained (or being drained) out of it, sorted: they do not join again.
    pub drained: Vec<u32>,
    pub moving: Option<MoveRecord>,
}

/// A membership change of the key ring in progress: its ranges are copied, then owned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveRecord {
    /// The node joining or draining.
    pub node: u32,
    /// Joining (else draining).
    pub join: bool,
    /// The ring's members before and after, sorted.
    pub before: Vec<u32>,
    pub after: Vec<u32>,
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
    pub certificates: Vec<CertificateRecord>,
    pub join_tokens: Vec<JoinTokenRecord>,
    /// `None` in a store from before the ring was recorded: every storage node is on it.
    pub ring: Option<RingRecord>,
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
            txn.open_table(COMMANDS)?;
            txn.open_table(CERTIFICATES)?;
            txn.open_table(JOIN_TOKENS)?;
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
        if let Some(v) = meta.get(RING).map_err(db(what))? {
            let text = std::str::from_utf8(v.value()).unwrap_or_default();
            loaded.ring = Some(parse("the key ring", text)?);
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
        let commands = txn.open_table(COMMANDS).map_err(db(what))?;
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
            let command = match commands.get((tenant, name)).map_err(db(what))? {
                Some(c) => parse(format!("command of {name} of tenant {tenant}"), c.value())?,
                None => Vec::new(),
            };
            loaded.functions.push(FunctionRecord {
                tenant,
                name: name.to_owned(),
                limits,
                module,
                command,
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
        for entry in txn
            .open_table(CERTIFICATES)
            .map_err(db(what))?
            .iter()
            .map_err(db(what))?
        {
            let (k, v) = entry.map_err(db(what))?;
            loaded
                .certificates
                .push(parse(format!("certificate of {}", k.value()), v.value())?);
        }
        for entry in txn
            .open_table(JOIN_TOKENS)
            .map_err(db(what))?
            .iter()
            .map_err(db(what))?
        {
            let (k, v) = entry.map_err(db(what))?;
            loaded
                .join_tokens
                .push(parse(format!("join token {}", k.value()), v.value())?);
        }
        Ok(loaded)
    }

    pub fn set_admin_hash(&self, hash: &TokenHash) -> Result<(), StoreError> {
        self.write("storing the admin token", |txn| {
            txn.open_table(META)?.insert(ADMIN_HASH, hash.as_slice())?;
            Ok(())
        })
    }

    pub fn put_ring(&self, ring: &RingRecord) -> Result<(), StoreError> {
        self.write("storing the key ring", |txn| {
            txn.open_table(META)?.insert(RING, json(ring).as_bytes())?;
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
            let mut commands = txn.open_table(COMMANDS)?;
            if f.command.is_empty() {
                commands.remove(key)?;
            } else {
                commands.insert(key, json(&f.command).as_str())?;
            }
            Ok(())
        })
    }

    pub fn remove_function(&self, tenant: u32, name: &str) -> Result<(), StoreError> {
        self.write("removing a function", |txn| {
            txn.open_table(FUNCTIONS)?.remove((tenant, name))?;
            txn.open_table(MODULES)?.remove((tenant, name))?;
            txn.open_table(COMMANDS)?.remove((tenant, name))?;
            Ok(())
        })
    }

    pub fn put_certificate(&self, c: &CertificateRecord) -> Result<(), StoreError> {
        self.write("binding a node name to its certificate", |txn| {
            txn.open_table(CERTIFICATES)?
                .insert(c.name.as_str(), json(c).as_str())?;
            Ok(())
        })
    }

    pub fn put_join_token(&self, t: &JoinTokenRecord) -> Result<(), StoreError> {
        self.write("storing a join token", |txn| {
            txn.open_table(JOIN_TOKENS)?
                .insert(t.id, json(t).as_str())?;
            Ok(())
        })
    }

    pub fn remove_join_token(&self, id: u32) -> Result<(), StoreError> {
        self.write("removing an expired join token", |txn| {
            txn.open_table(JOIN_TOKENS)?.remove(id)?;
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
            quotas: QuotaSettings {
                max_keys: 10,
                ..QuotaSettings::default()
            },
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
            command: Vec::new(),
        };
        let native = FunctionRecord {
            name: "upper".into(),
            module: Vec::new(),
            command: vec!["/bin/tr".into(), "a-z".into(), "A-Z".into()],
            ..f.clone()
        };
        let certificate = CertificateRecord {
            name: "storage-0".into(),
            role: "storage".into(),
            fingerprint: "ab".repeat(32),
            bound_unix_s: 5,
        };
        let join = JoinTokenRecord {
            id: 3,
            token_sha256: [9; 32],
            expires_unix_s: 100,
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
            store.put_function(&native).expect("native function");
            store.put_certificate(&certificate).expect("certificate");
            store.put_join_token(&join).expect("join token");
            let mut expired = join.clone();
            expired.id = 4;
            store.put_join_token(&expired).expect("join token");
            store.remove_join_token(4).expect("remove join token");
        }
        let loaded = Store::open(dir.path())
            .expect("reopen")
            .load()
            .expect("load");
        assert_eq!(loaded.admin_hash, Some([1; 32]));
        assert_eq!(loaded.tenants, vec![tenant]);
        assert_eq!(loaded.functions, vec![f, native]);
        assert_eq!(loaded.nodes, vec![node]);
        assert_eq!(loaded.certificates, vec![certificate]);
        assert_eq!(loaded.join_tokens, vec![join]);
    }
}

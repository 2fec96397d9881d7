//! The in-memory key-value store of a storage node: tenants' data, partitioned by tenant and
//! sharded for concurrency, optionally made durable by the write-ahead log in [`super::wal`].
//!
//! A key lives in the shard chosen by hashing (tenant, key); inside a shard each tenant has its own
//! ordered map, so a lookup never builds a composite key and a prefix scan walks only that
//! tenant's keys. Reads take a shard's read lock and may copy straight out of the map
//! ([`Store::get_with`]), which is how a guest's `kv_get` lands in its linear memory with one copy.
//!
//! Writes apply to memory and append to the log under the shard's write lock, so the log's order
//! of two writes to one key is the order they were applied in: replaying it rebuilds the same map.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{OnceLock, RwLock};

use rustc_hash::{FxBuildHasher, FxHashMap};
use sandstorm_naming::TenantId;

use super::wal::{Ack, LogOp, Wal};

/// Size limits on what the store accepts (the node's configuration; documented defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest key, bytes.
    pub max_key_bytes: usize,
    /// Largest value, bytes.
    pub max_value_bytes: usize,
    /// Most keys one multi-get or scan may return.
    pub max_batch_keys: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 1024,
            max_value_bytes: 1 << 20,
            max_batch_keys: 10_000,
        }
    }
}

impl Limits {
    /// Checks a key against the limits.
    pub fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        if key.is_empty() {
            return Err(StoreError::EmptyKey);
        }
        if key.len() > self.max_key_bytes {
            return Err(StoreError::KeyTooLarge {
                len: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }

    /// Checks a value against the limits.
    pub fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        if value.len() > self.max_value_bytes {
            return Err(StoreError::ValueTooLarge {
                len: value.len(),
                limit: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// Checks the number of keys in one request against the limits.
    pub fn check_batch(&self, len: usize) -> Result<(), StoreError> {
        if len > self.max_batch_keys {
            return Err(StoreError::BatchTooLarge {
                len,
                limit: self.max_batch_keys,
            });
        }
        Ok(())
    }
}

/// Why a store operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// key of {len} bytes is longer than the limit of {limit} bytes
    #[error("key of {len} bytes is longer than the limit of {limit} bytes")]
    KeyTooLarge { len: usize, limit: usize },
    /// value of {len} bytes is larger than the limit of {limit} bytes
    #[error("value of {len} bytes is larger than the limit of {limit} bytes")]
    ValueTooLarge { len: usize, limit: usize },
    /// the request asks for more keys than one batch may hold
    #[error("{len} keys in one request is more than the limit of {limit}")]
    BatchTooLarge { len: usize, limit: usize },
    /// the key is empty
    #[error("the key is empty")]
    EmptyKey,
    /// the write-ahead log failed; the write was not made durable
    #[error("the write-ahead log failed: {0}")]
    Log(String),
    /// the storage node that owns the key could not be reached or refused the call
    #[error("the storage node could not serve the call: {0}")]
    Remote(String),
}

type TenantMap = BTreeMap<Box<[u8]>, Box<[u8]>>;

#[derive(Debug, Default)]
struct Shard {
    tenants: FxHashMap<TenantId, TenantMap>,
}

/// Shards: a power of two well above the cores that will contend, so writers rarely meet.
const SHARDS: usize = 64;

/// Tenants' data. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    shards: Box<[RwLock<Shard>]>,
    limits: Limits,
    wal: OnceLock<Wal>,
    keys: AtomicI64,
    bytes: AtomicI64,
}

/// A key-value pair as returned by scans.
pub type Pair = (Vec<u8>, Vec<u8>);

impl Store {
    /// An empty store held only in memory; [`super::wal::open`] makes a durable one.
    pub fn new(limits: Limits) -> Self {
        let shards = (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect();
        Self {
            shards,
            limits,
            wal: OnceLock::new(),
            keys: AtomicI64::new(0),
            bytes: AtomicI64::new(0),
        }
    }

    /// From now on every write is appended to `wal` before it is acknowledged.
    pub(super) fn attach_wal(&self, wal: Wal) {
        let _ = self.wal.set(wal);
    }

    /// The limits writes are checked against.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Whether writes are logged (the node has a data directory).
    pub fn is_durable(&self) -> bool {
        self.wal.get().is_some()
    }

    /// Keys and bytes (keys + values) held, over all tenants.
    pub fn size(&self) -> (u64, u64) {
        let keys = self.keys.load(Ordering::Relaxed).max(0);
        let bytes = self.bytes.load(Ordering::Relaxed).max(0);
        (keys.unsigned_abs(), bytes.unsigned_abs())
    }

    fn shard(&self, tenant: TenantId, key: &[u8]) -> &RwLock<Shard> {
        let mut h = FxBuildHasher.build_hasher();
        tenant.hash(&mut h);
        key.hash(&mut h);
        // Fx's low bits are weak; the high bits pick the shard.
        let index = (h.finish() >> 58) as usize % SHARDS;
        &self.shards[index]
    }

    /// Checks a key against the limits.
    pub fn check_key(&self, key: &[u8]) -> Result<(), StoreError> {
        self.limits.check_key(key)
    }

    fn check_value(&self, value: &[u8]) -> Result<(), StoreError> {
        self.limits.check_value(value)
    }

    fn check_batch(&self, len: usize) -> Result<(), StoreError> {
        self.limits.check_batch(len)
    }

    /// Calls `f` with the value of `key` (or `None`) while holding the shard's read lock: the
    /// caller copies what it needs without an intermediate allocation.
    pub fn get_with<R>(
        &self,
        tenant: TenantId,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        self.check_key(key)?;
        let shard = self
            .shard(tenant, key)
            .read()
            .unwrap_or_else(|e| e.into_inner());
        Ok(f(shard
            .tenants
            .get(&tenant)
            .and_then(|m| m.get(key))
            .map(|v| &**v)))
    }

    /// The value of `key`, copied.
    pub fn get(&self, tenant: TenantId, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.get_with(tenant, key, |v| v.map(<[u8]>::to_vec))
    }

    /// Calls `f` with each key's value in order (a multi-get without intermediate copies).
    pub fn multi_get_with<K: AsRef<[u8]>>(
        &self,
        tenant: TenantId,
        keys: &[K],
        mut f: impl FnMut(Option<&[u8]>),
    ) -> Result<(), StoreError> {
        self.check_batch(keys.len())?;
        for key in keys {
            self.check_key(key.as_ref())?;
        }
        for key in keys {
            let key = key.as_ref();
            let shard = self
                .shard(tenant, key)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            f(shard
                .tenants
                .get(&tenant)
                .and_then(|m| m.get(key))
                .map(|v| &**v));
        }
        Ok(())
    }

    /// Up to `limit` pairs whose keys start with `prefix`, in key order.
    pub fn scan(
        &self,
        tenant: TenantId,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<Pair>, StoreError> {
        if prefix.len() > self.limits.max_key_bytes {
            return Err(StoreError::KeyTooLarge {
                len: prefix.len(),
                limit: self.limits.max_key_bytes,
            });
        }
        let limit = limit.min(self.limits.max_batch_keys);
        let mut pairs: Vec<Pair> = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            let Some(map) = shard.tenants.get(&tenant) else {
                continue;
            };
            let range = map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded));
            pairs.extend(
                range
                    .take_while(|(k, _)| k.starts_with(prefix))
                    .take(limit)
                    .map(|(k, v)| (k.to_vec(), v.to_vec())),
            );
        }
        pairs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        pairs.truncate(limit);
        Ok(pairs)
    }

    /// Stores `value` under `key`. With a log, the returned [`Ack`] completes once the write is
    /// on disk; the caller acknowledges its client only then.
    pub fn put(
        &self,
        tenant: TenantId,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Ack>, StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        Ok(self.apply(LogOp::Put { tenant, key, value }, true)?.1)
    }

    /// Removes `key`; whether it existed, and the log's acknowledgement.
    pub fn delete(&self, tenant: TenantId, key: &[u8]) -> Result<(bool, Option<Ack>), StoreError> {
        self.check_key(key)?;
        self.apply(LogOp::Delete { tenant, key }, true)
    }

    /// Applies a recovered log record without logging it again.
    pub(super) fn apply_recovered(&self, op: LogOp<'_>) {
        // Nothing to log, so nothing can fail.
        let _ = self.apply(op, false);
    }

    /// Every write goes through here: under the shard's write lock, append to the log (when
    /// asked and there is one), then change the map. Whether the key existed before.
    fn apply(&self, op: LogOp<'_>, log: bool) -> Result<(bool, Option<Ack>), StoreError> {
        let (tenant, key, value) = match op {
            LogOp::Put { tenant, key, value } => (tenant, key, Some(value)),
            LogOp::Delete { tenant, key } => (tenant, key, None),
        };
        let mut shard = self
            .shard(tenant, key)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let ack = match (log, self.wal.get()) {
            (true, Some(wal)) => Some(wal.append(op).map_err(|e| StoreError::Log(e.to_string()))?),
            _ => None,
        };
        let old = match value {
            Some(value) => shard
                .tenants
                .entry(tenant)
                .or_default()
                .insert(key.into(), value.into()),
            None => shard.tenants.get_mut(&tenant).and_then(|m| m.remove(key)),
        };
        self.account(key, old.as_deref(), value);
        Ok((old.is_some(), ack))
    }

    /// Calls `f` with every pair of every tenant, one shard at a time (for snapshots).
    pub(super) fn for_each(&self, mut f: impl FnMut(TenantId, &[u8], &[u8])) {
        for shard in self.shards.iter() {
            let shard = shard.read().unwrap_or_else(|e| e.into_inner());
            for (tenant, map) in &shard.tenants {
                for (k, v) in map {
                    f(*tenant, k, v);
                }
            }
        }
    }

    fn account(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let size = |v: Option<&[u8]>| v.map_or(0, |v| (key.len() + v.len()) as i64);
        let keys = i64::from(new.is_some()) - i64::from(old.is_some());
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes
            .fetch_add(size(new) - size(old), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: TenantId = TenantId(1);
    const B: TenantId = TenantId(2);

    fn store() -> Store {
        Store::new(Limits {
            max_key_bytes: 8,
            max_value_bytes: 16,
            max_batch_keys: 3,
        })
    }

    #[test]
    fn tenants_do_not_share_keys() {
        let s = store();
        s.put(A, b"k", b"a").unwrap();
        s.put(B, b"k", b"b").unwrap();
        assert_eq!(s.get(A, b"k").unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(s.get(B, b"k").unwrap().as_deref(), Some(&b"b"[..]));
        assert!(s.delete(A, b"k").unwrap().0);
        assert_eq!(s.get(A, b"k").unwrap(), None);
        assert_eq!(s.get(B, b"k").unwrap().as_deref(), Some(&b"b"[..]));
        assert_eq!(s.scan(A, b"", 10).unwrap(), vec![]);
    }

    #[test]
    fn limits_name_what_was_too_large() {
        let s = store();
        // 9 bytes > 8.
        assert_eq!(
            s.put(A, b"123456789", b"v").unwrap_err(),
            StoreError::KeyTooLarge { len: 9, limit: 8 }
        );
        assert_eq!(
            s.put(A, b"k", &[0; 17]).unwrap_err(),
            StoreError::ValueTooLarge { len: 17, limit: 16 }
        );
        assert_eq!(s.get(A, b"").unwrap_err(), StoreError::EmptyKey);
        let keys: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];
        assert_eq!(
            s.multi_get_with(A, &keys, |_| ()).unwrap_err(),
            StoreError::BatchTooLarge { len: 4, limit: 3 }
        );
    }

    #[test]
    fn scan_merges_shards_in_key_order_up_to_the_limit() {
        let s = Store::new(Limits::default());
        for i in (0..50).rev() {
            s.put(A, format!("p:{i:02}").as_bytes(), b"v").unwrap();
        }
        s.put(A, b"q:00", b"v").unwrap();
        let pairs = s.scan(A, b"p:", 5).unwrap();
        let keys: Vec<_> = pairs
            .iter()
            .map(|(k, _)| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(keys, ["p:00", "p:01", "p:02", "p:03", "p:04"]);
        assert_eq!(s.scan(A, b"p:", 100).unwrap().len(), 50);
    }

    #[test]
    fn size_counts_keys_and_bytes() {
        let s = store();
        s.put(A, b"ab", b"123").unwrap(); // 2 + 3
        s.put(A, b"ab", b"1").unwrap(); // replaced: 2 + 1
        s.put(B, b"c", b"").unwrap(); // 1 + 0
        assert_eq!(s.size(), (2, 4));
        s.delete(A, b"ab").unwrap();
        assert_eq!(s.size(), (1, 1));
    }
}

//! The in-memory key-value store of a storage node: tenants' data, partitioned by tenant and
//! sharded for concurrency, optionally made durable by the write-ahead log in [`super::wal`].
//!
//! A key lives in the shard chosen by hashing (tenant, key); inside a shard each tenant has its own
//! ordered map, so a lookup never builds a composite key and a prefix scan walks only that
//! tenant's keys. Reads take a shard's read lock and may copy straight out of the map
//! ([`Store::get_with`]), which is how a guest's `kv_get` lands in its linear memory with one copy.
//!
//! Without a log a write changes the map at once. With one, a write becomes visible only once it
//! is durable: under the shard's write lock it is checked, charged and appended to the log's
//! queue (so the log's order of two writes to one key is the order they were made in), and the
//! shard notes it as in flight; the log's writer thread applies it to the map after the sync that
//! made it durable, in log order, and only then acknowledges it. A failed sync applies nothing:
//! the write and its charge are taken back ([`Store::abandon`]) and the node turns read-only.
//!
//! Each tenant's keys and bytes are counted when a write is accepted, in-flight ones included,
//! and recovered ones too, so usage is rebuilt from the snapshot and the log on open. A write
//! that would take a tenant past its [`Allowance`] is refused before it is logged
//! ([`StoreError::OverQuota`]); a write that shrinks what the tenant holds (a delete, a smaller
//! value) is always accepted. Recovered writes are counted, never refused: they were accepted
//! once.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};

use rustc_hash::{FxBuildHasher, FxHashMap};
use sandstorm_naming::TenantId;

use super::handoff::Handoff;
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
    /// an earlier log sync failed, so the node accepts no writes until it is restarted
    #[error("the storage node is read-only: {0}")]
    ReadOnly(String),
    /// a key-ring move gave the key to another node: this one no longer serves it
    #[error(
        "{tenant}'s key belongs to storage node {to} since a key-ring move; this node no \
         longer serves it (route it by the new ring)"
    )]
    Moved { tenant: TenantId, to: u32 },
    /// the scheduler named a key-ring move this node does not know (it restarted since)
    #[error("this storage node knows no key-ring move {0} (it restarted since it began)")]
    UnknownMove(u64),
    /// the storage node that owns the key could not be reached or refused the call
    #[error("the storage node could not serve the call: {0}")]
    Remote(String),
    /// the storage node that owns the key refused the write: the tenant's allowance there
    #[error("{0}")]
    RemoteOverQuota(String),
    /// the write would take the tenant past its allowance on this node
    #[error(
        "{tenant} is over its storage quota: it holds {held} {what} on this node, this \
         write would add {adding}, and its allowance here is {limit} {what} ({})",
        quota_words(*quota, what)
    )]
    OverQuota {
        tenant: TenantId,
        /// `bytes` or `keys`.
        what: &'static str,
        held: u64,
        adding: u64,
        limit: u64,
        /// The tenant's cluster quota, when the scheduler set the allowance and named it.
        quota: Option<u64>,
    },
}

fn quota_words(quota: Option<u64>, what: &str) -> String {
    let name = if what == "keys" {
        "max_keys"
    } else {
        "max_stored_bytes"
    };
    match quota {
        Some(q) => format!("its share of its {name} quota of {q} {what} over the cluster"),
        None => "this node's default allowance per tenant; none was set for it".to_owned(),
    }
}

/// How much one tenant may hold on this node (`SetTenantQuotas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allowance {
    /// Bytes (keys + values) the tenant may hold here; 0: nothing may be added.
    pub max_bytes: u64,
    /// Keys the tenant may hold here; 0: nothing may be added.
    pub max_keys: u64,
    /// The tenant's quota over the whole cluster, for messages (0: not given).
    pub quota_bytes: u64,
    /// As `quota_bytes`, in keys.
    pub quota_keys: u64,
}

/// What every tenant may hold on a node nobody gave allowances to: 256 MiB (keys + values) and
/// 1,000,000 keys. With a scheduler it holds only until the first `SetTenantQuotas` (sent at
/// registration), which gives the node its share of each tenant's cluster quota. Bounded so that an unconfigured node still refuses unbounded growth: a
/// stored key costs about 100 bytes of node memory beyond its own bytes (two boxes and its
/// share of a B-tree node), so a tenant at this default holds roughly 350 MiB of memory.
pub const DEFAULT_ALLOWANCE: Allowance = Allowance {
    max_bytes: 256 << 20,
    max_keys: 1_000_000,
    quota_bytes: 0,
    quota_keys: 0,
};

/// What one tenant holds on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TenantUsage {
    /// The tenant.
    pub tenant: TenantId,
    /// Keys held.
    pub keys: u64,
    /// Bytes (keys + values) held.
    pub bytes: u64,
}

/// One tenant's usage and allowance. Usage changes only under the shard lock of the key being
/// written, but keys of one tenant live in every shard, so the counters are atomics and a
/// charge is a compare-and-swap against the limit: two writers in different shards can never
/// both take the last bytes.
#[derive(Debug)]
struct Account {
    keys: AtomicU64,
    bytes: AtomicU64,
    max_keys: AtomicU64,
    max_bytes: AtomicU64,
    quota_keys: AtomicU64,
    quota_bytes: AtomicU64,
    /// Whether `SetTenantQuotas` named the tenant (else it follows the node's default).
    configured: AtomicBool,
}

impl Account {
    fn new(allowance: Allowance) -> Self {
        let account = Self {
            keys: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            max_keys: AtomicU64::new(0),
            max_bytes: AtomicU64::new(0),
            quota_keys: AtomicU64::new(0),
            quota_bytes: AtomicU64::new(0),
            configured: AtomicBool::new(false),
        };
        account.set(allowance);
        account
    }

    fn set(&self, a: Allowance) {
        self.max_keys.store(a.max_keys, Ordering::Relaxed);
        self.max_bytes.store(a.max_bytes, Ordering::Relaxed);
        self.quota_keys.store(a.quota_keys, Ordering::Relaxed);
        self.quota_bytes.store(a.quota_bytes, Ordering::Relaxed);
    }

    /// Adds `keys` and `bytes` (either may be negative) to the usage. With `enforce`, a growth
    /// past the allowance is refused and nothing changes.
    fn charge(
        &self,
        tenant: TenantId,
        keys: i64,
        bytes: i64,
        enforce: bool,
    ) -> Result<(), StoreError> {
        let quota = |q: &AtomicU64| {
            let q = q.load(Ordering::Relaxed);
            (self.configured.load(Ordering::Relaxed) && q > 0).then_some(q)
        };
        change(
            &self.keys,
            keys,
            enforce.then(|| self.max_keys.load(Ordering::Relaxed)),
        )
        .map_err(|held| StoreError::OverQuota {
            tenant,
            what: "keys",
            held,
            adding: keys.unsigned_abs(),
            limit: self.max_keys.load(Ordering::Relaxed),
            quota: quota(&self.quota_keys),
        })?;
        change(
            &self.bytes,
            bytes,
            enforce.then(|| self.max_bytes.load(Ordering::Relaxed)),
        )
        .map_err(|held| {
            // Give back the key taken above: the write does not happen.
            let _ = change(&self.keys, -keys, None);
            StoreError::OverQuota {
                tenant,
                what: "bytes",
                held,
                adding: bytes.unsigned_abs(),
                limit: self.max_bytes.load(Ordering::Relaxed),
                quota: quota(&self.quota_bytes),
            }
        })
    }
}

/// Adds `delta` to `counter`; a growth that would pass `limit` fails with the current value.
fn change(counter: &AtomicU64, delta: i64, limit: Option<u64>) -> Result<(), u64> {
    if delta == 0 {
        return Ok(());
    }
    counter
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
            if delta < 0 {
                return Some(held.saturating_sub(delta.unsigned_abs()));
            }
            let after = held.saturating_add(delta.unsigned_abs());
            match limit {
                Some(limit) if after > limit => None,
                _ => Some(after),
            }
        })
        .map(|_| ())
}

type TenantMap = BTreeMap<Box<[u8]>, Box<[u8]>>;

/// Writes to one key that are in the log's queue and not applied yet.
#[derive(Debug)]
struct InFlight {
    /// Length of the value the newest of them leaves (`None`: a delete).
    latest: Option<usize>,
    /// How many there are.
    count: u32,
}

#[derive(Debug, Default)]
struct Shard {
    tenants: FxHashMap<TenantId, TenantMap>,
    in_flight: FxHashMap<TenantId, FxHashMap<Box<[u8]>, InFlight>>,
}

impl Shard {
    /// Changes the map; the change in (keys, bytes) it holds.
    fn set(&mut self, tenant: TenantId, key: &[u8], value: Option<&[u8]>) -> (i64, i64) {
        let size = |v: Option<usize>| v.map_or(0, |v| (key.len() + v) as i64);
        let old = match value {
            Some(value) => self
                .tenants
                .entry(tenant)
                .or_default()
                .insert(key.into(), value.into()),
            None => self.tenants.get_mut(&tenant).and_then(|m| m.remove(key)),
        };
        let old = old.map(|v| v.len());
        (
            i64::from(value.is_some()) - i64::from(old.is_some()),
            size(value.map(<[u8]>::len)) - size(old),
        )
    }

    /// One in-flight write to `key` was applied or abandoned.
    fn landed(&mut self, tenant: TenantId, key: &[u8]) {
        let Some(keys) = self.in_flight.get_mut(&tenant) else {
            return;
        };
        if let Some(w) = keys.get_mut(key) {
            w.count -= 1;
            if w.count == 0 {
                keys.remove(key);
                if keys.is_empty() {
                    self.in_flight.remove(&tenant);
                }
            }
        }
    }
}

/// How [`Store::apply`] treats a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// A client's write: checked against the allowance, logged if there is a log.
    Write,
    /// Replayed from the snapshot or log on open: counted, applied at once, never refused.
    Recovered,
    /// Copied from another node by a key-ring move: logged, counted, never refused.
    Import,
}

/// One pair of a key-ring move: tenant, key, its value (`None`: deleted), its new owner.
pub type MovedPair = (TenantId, Vec<u8>, Option<Vec<u8>>, u32);

/// Where an export resumes: shard, tenant, last key returned there.
pub type ExportCursor = (usize, u32, Vec<u8>);

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
    accounts: RwLock<FxHashMap<TenantId, Arc<Account>>>,
    /// The allowance of a tenant `SetTenantQuotas` has not named.
    default_allowance: RwLock<Allowance>,
    /// Key-ring moves out of this node ([`super::handoff`]); `any_handoff` spares every read
    /// and write the lock while there are none.
    handoffs: RwLock<Vec<Arc<Handoff>>>,
    any_handoff: AtomicBool,
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
            accounts: RwLock::new(FxHashMap::default()),
            default_allowance: RwLock::new(DEFAULT_ALLOWANCE),
            handoffs: RwLock::default(),
            any_handoff: AtomicBool::new(false),
        }
    }

    /// Begins the key-ring move `id` out of node `me` from the ring of `before` to that of
    /// `after` (or finds it, when it is known), then seals or finishes it if asked. Whether
    /// it was known. A seal or finish of a move not known is [`StoreError::UnknownMove`]: the
    /// writes since it began were not tracked. Unfinished moves of other ids are dropped (the
    /// scheduler runs one move at a time, and a new id is a new attempt, which unseals what
    /// an abandoned one sealed); finished ones stay, refusing their keys.
    pub fn begin_handoff(
        &self,
        id: u64,
        me: u32,
        (before, after, vnodes): (&[u32], &[u32], u32),
        seal: bool,
        finish: bool,
    ) -> Result<bool, StoreError> {
        let mut handoffs = self.handoffs.write().unwrap_or_else(|e| e.into_inner());
        let known = handoffs
            .iter()
            .find(|h| h.id == id && h.same(sandstorm_naming::NodeId(me), before, after))
            .cloned();
        let handoff = match known.clone() {
            Some(h) => h,
            None if seal || finish => return Err(StoreError::UnknownMove(id)),
            None => {
                handoffs.retain(|h| h.is_finished());
                let h = Arc::new(Handoff::new(
                    id,
                    sandstorm_naming::NodeId(me),
                    before,
                    after,
                    vnodes,
                ));
                handoffs.push(h.clone());
                self.any_handoff.store(true, Ordering::SeqCst);
                h
            }
        };
        if finish {
            handoff.finish();
        } else if seal {
            handoff.seal();
        }
        Ok(known.is_some())
    }

    /// The move `id`.
    pub fn handoff(&self, id: u64) -> Result<Arc<Handoff>, StoreError> {
        self.handoffs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|h| h.id == id)
            .cloned()
            .ok_or(StoreError::UnknownMove(id))
    }

    /// Calls `f` with each move while there are any.
    fn each_handoff<R>(&self, mut f: impl FnMut(&Handoff) -> Option<R>) -> Option<R> {
        if !self.any_handoff.load(Ordering::Relaxed) {
            return None;
        }
        let handoffs = self.handoffs.read().unwrap_or_else(|e| e.into_inner());
        handoffs.iter().find_map(|h| f(h))
    }

    /// Refuses a remote read (`KeyValue`: compute nodes, the scheduler) of a key another node
    /// owns since a finished move: the caller routed by a stale ring. Functions running here
    /// read what is here, as they always did.
    pub fn check_read(&self, tenant: TenantId, key: &[u8]) -> Result<(), StoreError> {
        match self.each_handoff(|h| h.refuses_read(tenant, key)) {
            Some(to) => Err(StoreError::Moved { tenant, to: to.0 }),
            None => Ok(()),
        }
    }

    /// A write to `key` became visible.
    fn note_visible(&self, tenant: TenantId, key: &[u8]) {
        self.each_handoff(|h| {
            h.note_visible(tenant, key);
            None::<()>
        });
    }

    /// Up to `limit` of the keys that move out in `handoff`, as they are now, from `cursor`
    /// on (shards in order, tenants in id order, keys in order); where the next page starts
    /// (`None`: this was the last).
    pub fn export(
        &self,
        handoff: &Handoff,
        cursor: Option<ExportCursor>,
        limit: usize,
    ) -> (Vec<MovedPair>, Option<ExportCursor>) {
        let (first, mut from_tenant, mut after_key) = cursor.unwrap_or((0, 0, Vec::new()));
        let mut pairs = Vec::new();
        for index in first..self.shards.len() {
            let shard = self.shards[index].read().unwrap_or_else(|e| e.into_inner());
            let mut tenants: Vec<TenantId> = shard
                .tenants
                .keys()
                .copied()
                .filter(|t| t.0 >= from_tenant)
                .collect();
            tenants.sort_unstable();
            for tenant in tenants {
                let start = if tenant.0 == from_tenant && !after_key.is_empty() {
                    Bound::Excluded(&after_key[..])
                } else {
                    Bound::Unbounded
                };
                let Some(map) = shard.tenants.get(&tenant) else {
                    continue;
                };
                for (k, v) in map.range::<[u8], _>((start, Bound::Unbounded)) {
                    if let Some(to) = handoff.destination(tenant, k) {
                        pairs.push((tenant, k.to_vec(), Some(v.to_vec()), to.0));
                        if pairs.len() >= limit {
                            return (pairs, Some((index, tenant.0, k.to_vec())));
                        }
                    }
                }
            }
            from_tenant = 0;
            after_key.clear();
        }
        (pairs, None)
    }

    /// Up to `limit` moving keys of `handoff` written since the last call, with what they hold
    /// now; and whether the move is settled: sealed, nothing left, no write to a moving key
    /// still on its way to the disk.
    pub fn changed(&self, handoff: &Handoff, limit: usize) -> (Vec<MovedPair>, bool) {
        let sealed = handoff.is_sealed();
        let mut pairs = Vec::new();
        for (tenant, key) in handoff.take_changed(limit) {
            let Some(to) = handoff.destination(tenant, &key) else {
                continue;
            };
            let shard = self
                .shard(tenant, &key)
                .read()
                .unwrap_or_else(|e| e.into_inner());
            let value = shard
                .tenants
                .get(&tenant)
                .and_then(|m| m.get(&key[..]))
                .map(|v| v.to_vec());
            pairs.push((tenant, key.into_vec(), value, to.0));
        }
        let settled = sealed
            && pairs.is_empty()
            && self.shards.iter().all(|shard| {
                let shard = shard.read().unwrap_or_else(|e| e.into_inner());
                shard.in_flight.iter().all(|(tenant, keys)| {
                    keys.keys()
                        .all(|k| handoff.destination(*tenant, k).is_none())
                })
            })
            && !handoff.has_changed();
        (pairs, settled)
    }

    /// Deletes, durably, every key `handoff` gave away (once it finished: the new owners hold
    /// them), so a range that later moves back here does not bring stale keys with it. How
    /// many.
    pub fn purge_moved(&self, handoff: &Handoff) -> Result<usize, StoreError> {
        let mut cursor = None;
        let mut purged = 0;
        loop {
            let (pairs, next) = self.export(handoff, cursor, 1_000);
            for (tenant, key, _, _) in &pairs {
                self.apply(
                    LogOp::Delete {
                        tenant: *tenant,
                        key,
                    },
                    Mode::Import,
                )?;
            }
            purged += pairs.len();
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(purged),
            }
        }
    }

    /// Stores pairs a key-ring move copied here: logged like any write, counted against the
    /// tenant but never refused. The log's acknowledgements, to wait for before answering.
    pub fn import(&self, pairs: &[MovedPair]) -> Result<Vec<Ack>, StoreError> {
        let mut acks = Vec::new();
        for (tenant, key, value, _) in pairs {
            self.check_key(key)?;
            let op = match value {
                Some(value) => {
                    self.check_value(value)?;
                    LogOp::Put {
                        tenant: *tenant,
                        key,
                        value,
                    }
                }
                None => LogOp::Delete {
                    tenant: *tenant,
                    key,
                },
            };
            if let (_, Some(ack)) = self.apply(op, Mode::Import)? {
                acks.push(ack);
            }
        }
        Ok(acks)
    }

    /// The allowance of every tenant not given one by [`Store::set_allowance`]
    /// ([`DEFAULT_ALLOWANCE`] until set).
    pub fn set_default_allowance(&self, allowance: Allowance) {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        *self
            .default_allowance
            .write()
            .unwrap_or_else(|e| e.into_inner()) = allowance;
        for account in accounts.values() {
            if !account.configured.load(Ordering::Relaxed) {
                account.set(allowance);
            }
        }
    }

    /// Sets what `tenant` may hold on this node, replacing its previous allowance. Lowering it
    /// below what the tenant holds loses nothing: further growth is refused until it shrinks.
    pub fn set_allowance(&self, tenant: TenantId, allowance: Allowance) {
        let account = self.tenant_account(tenant);
        account.set(allowance);
        account.configured.store(true, Ordering::Relaxed);
    }

    /// What `tenant` may hold on this node, and whether it was set for it (else the default).
    pub fn allowance(&self, tenant: TenantId) -> (Allowance, bool) {
        let account = self.tenant_account(tenant);
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        (
            Allowance {
                max_bytes: load(&account.max_bytes),
                max_keys: load(&account.max_keys),
                quota_bytes: load(&account.quota_bytes),
                quota_keys: load(&account.quota_keys),
            },
            account.configured.load(Ordering::Relaxed),
        )
    }

    /// What each tenant holding data holds, by tenant.
    pub fn tenant_usage(&self) -> Vec<TenantUsage> {
        let accounts = self.accounts.read().unwrap_or_else(|e| e.into_inner());
        let mut usage: Vec<TenantUsage> = accounts
            .iter()
            .map(|(tenant, a)| TenantUsage {
                tenant: *tenant,
                keys: a.keys.load(Ordering::Relaxed),
                bytes: a.bytes.load(Ordering::Relaxed),
            })
            .filter(|u| u.keys > 0 || u.bytes > 0)
            .collect();
        usage.sort_unstable_by_key(|u| u.tenant.0);
        usage
    }

    /// The tenant's account, created with the default allowance on its first write.
    fn tenant_account(&self, tenant: TenantId) -> Arc<Account> {
        if let Some(a) = self
            .accounts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&tenant)
        {
            return a.clone();
        }
        let mut accounts = self.accounts.write().unwrap_or_else(|e| e.into_inner());
        let default = *self
            .default_allowance
            .read()
            .unwrap_or_else(|e| e.into_inner());
        accounts
            .entry(tenant)
            .or_insert_with(|| Arc::new(Account::new(default)))
            .clone()
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

    /// Stores `value` under `key`. With a log, the write is visible once the returned [`Ack`]
    /// completes (when it is on disk); the caller acknowledges its client only then. Waits while
    /// the log's queue is full.
    pub fn put(
        &self,
        tenant: TenantId,
        key: &[u8],
        value: &[u8],
    ) -> Result<Option<Ack>, StoreError> {
        self.check_key(key)?;
        self.check_value(value)?;
        Ok(self
            .apply(LogOp::Put { tenant, key, value }, Mode::Write)?
            .1)
    }

    /// Removes `key`; whether it existed (counting writes still in flight), and the log's
    /// acknowledgement.
    pub fn delete(&self, tenant: TenantId, key: &[u8]) -> Result<(bool, Option<Ack>), StoreError> {
        self.check_key(key)?;
        self.apply(LogOp::Delete { tenant, key }, Mode::Write)
    }

    /// Why the node accepts no writes (a failed log sync), if it does not.
    pub fn read_only(&self) -> Option<String> {
        self.wal.get().and_then(Wal::failure)
    }

    /// Makes the next log sync fail, as a disk would (tests of what follows a failed sync).
    #[cfg(test)]
    pub(crate) fn fail_next_sync(&self) {
        self.wal.get().expect("a durable store").fail_next_sync();
    }

    /// Holds the log's writer before its next write, while the guard lives (tests of writes in
    /// flight).
    #[cfg(test)]
    pub(crate) fn hold_log_writer(&self) -> std::sync::MutexGuard<'_, ()> {
        self.wal.get().expect("a durable store").hold()
    }

    /// Writers waiting for room in the log's queue.
    #[cfg(test)]
    pub(crate) fn log_writers_waiting(&self) -> usize {
        self.wal.get().map_or(0, Wal::waiting)
    }

    /// Applies a recovered log record without logging it again.
    pub(super) fn apply_recovered(&self, op: LogOp<'_>) {
        // Nothing to log, so nothing can fail.
        let _ = self.apply(op, Mode::Recovered);
    }

    /// Every write goes through here. With a log, it first waits for room in the log's queue
    /// (never while holding a shard lock: the writer thread needs them to apply what it
    /// synced). Then under the shard's write lock it charges the tenant's account for the
    /// change from what the key will hold once every write in flight has landed (refusing
    /// growth past its allowance unless the write is recovered) and either queues it in the
    /// log, marking it in flight, or changes the map. Whether the key existed.
    fn apply(&self, op: LogOp<'_>, mode: Mode) -> Result<(bool, Option<Ack>), StoreError> {
        let (tenant, key, value) = match op {
            LogOp::Put { tenant, key, value } => (tenant, key, Some(value)),
            LogOp::Delete { tenant, key } => (tenant, key, None),
        };
        if mode == Mode::Write
            && let Some(to) = self.each_handoff(|h| h.refuses_write(tenant, key))
        {
            return Err(StoreError::Moved { tenant, to: to.0 });
        }
        let wal = self.wal.get().filter(|_| mode != Mode::Recovered);
        let room = match wal {
            Some(wal) => Some(wal.reserve(&op).map_err(StoreError::ReadOnly)?),
            None => None,
        };
        let account = self.tenant_account(tenant);
        let mut shard = self
            .shard(tenant, key)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let size = |v: Option<usize>| v.map_or(0, |v| (key.len() + v) as i64);
        let before = match shard.in_flight.get(&tenant).and_then(|m| m.get(key)) {
            Some(w) => w.latest,
            None => shard
                .tenants
                .get(&tenant)
                .and_then(|m| m.get(key))
                .map(|v| v.len()),
        };
        let keys = i64::from(value.is_some()) - i64::from(before.is_some());
        let bytes = size(value.map(<[u8]>::len)) - size(before);
        account.charge(tenant, keys, bytes, mode == Mode::Write)?;
        if let (Some(wal), Some(room)) = (wal, room) {
            let ack = match wal.append(op, room, (keys, bytes)) {
                Ok(ack) => ack,
                Err(e) => {
                    let _ = account.charge(tenant, -keys, -bytes, false);
                    return Err(StoreError::ReadOnly(e));
                }
            };
            let w = shard
                .in_flight
                .entry(tenant)
                .or_default()
                .entry(key.into())
                .or_insert(InFlight {
                    latest: None,
                    count: 0,
                });
            w.latest = value.map(<[u8]>::len);
            w.count += 1;
            return Ok((before.is_some(), Some(ack)));
        }
        let (keys, bytes) = shard.set(tenant, key, value);
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if mode != Mode::Recovered {
            self.note_visible(tenant, key);
        }
        Ok((before.is_some(), None))
    }

    /// A logged write is durable: readers see it from now on. The log's writer calls this in log
    /// order, before it acknowledges the write.
    pub(super) fn apply_durable(&self, op: LogOp<'_>) {
        let (tenant, key, value) = match op {
            LogOp::Put { tenant, key, value } => (tenant, key, Some(value)),
            LogOp::Delete { tenant, key } => (tenant, key, None),
        };
        let mut shard = self
            .shard(tenant, key)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let (keys, bytes) = shard.set(tenant, key, value);
        shard.landed(tenant, key);
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        self.note_visible(tenant, key);
    }

    /// A logged write failed to become durable: it never happens, and the tenant gets back
    /// what it was charged (`charge`: keys and bytes). Every later write to the key fails
    /// too (the log is read-only from then on), so taking back each charge in turn ends at
    /// what the map holds.
    pub(super) fn abandon(&self, op: LogOp<'_>, charge: (i64, i64)) {
        let (LogOp::Put { tenant, key, .. } | LogOp::Delete { tenant, key }) = op;
        let account = self.tenant_account(tenant);
        let mut shard = self
            .shard(tenant, key)
            .write()
            .unwrap_or_else(|e| e.into_inner());
        shard.landed(tenant, key);
        let _ = account.charge(tenant, -charge.0, -charge.1, false);
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

    fn allowance(max_bytes: u64, max_keys: u64) -> Allowance {
        Allowance {
            max_bytes,
            max_keys,
            quota_bytes: 1000,
            quota_keys: 50,
        }
    }

    #[test]
    fn allowances_refuse_growth_and_lose_nothing() {
        let s = store();
        s.set_allowance(A, allowance(10, 2));
        s.put(A, b"k1", b"1234").unwrap(); // 2 + 4 = 6 bytes, 1 key
        // 6 + (2 + 3) = 11 > 10 bytes.
        let err = s.put(A, b"k2", b"abc").unwrap_err();
        assert_eq!(
            err,
            StoreError::OverQuota {
                tenant: A,
                what: "bytes",
                held: 6,
                adding: 5,
                limit: 10,
                quota: Some(1000),
            }
        );
        assert_eq!(
            err.to_string(),
            "tenant-1 is over its storage quota: it holds 6 bytes on this node, this write would \
             add 5, and its allowance here is 10 bytes (its share of its max_stored_bytes \
             quota of 1000 bytes over the cluster)"
        );
        // Nothing was stored, and the key refused is not counted either.
        assert_eq!(s.get(A, b"k2").unwrap(), None);
        assert_eq!(
            s.tenant_usage(),
            [TenantUsage {
                tenant: A,
                keys: 1,
                bytes: 6
            }]
        );
        // Replacing with a larger value that still fits: 2 + 8 = 10.
        s.put(A, b"k1", b"12345678").unwrap();
        // Replacing past it is refused and the old value stays.
        assert!(matches!(
            s.put(A, b"k1", b"123456789"),
            Err(StoreError::OverQuota {
                what: "bytes",
                held: 10,
                adding: 1,
                ..
            })
        ));
        assert_eq!(s.get(A, b"k1").unwrap().as_deref(), Some(&b"12345678"[..]));
        // Shrinking is always accepted.
        s.put(A, b"k1", b"1").unwrap(); // 3 bytes
        s.put(A, b"k2", b"1").unwrap(); // 6 bytes, 2 keys
        // A third key: 2 keys held of 2.
        assert_eq!(
            s.put(A, b"k3", b"").unwrap_err(),
            StoreError::OverQuota {
                tenant: A,
                what: "keys",
                held: 2,
                adding: 1,
                limit: 2,
                quota: Some(50),
            }
        );
        // Deletes free the allowance.
        assert!(s.delete(A, b"k1").unwrap().0);
        s.put(A, b"k3", b"").unwrap();
        assert_eq!(
            s.tenant_usage()[0],
            TenantUsage {
                tenant: A,
                keys: 2,
                bytes: 5
            }
        );
        // Another tenant is not charged for any of it, and follows the default.
        s.put(B, b"k1", b"x").unwrap();
        assert_eq!(s.allowance(B), (DEFAULT_ALLOWANCE, false));
        assert_eq!(s.tenant_usage().len(), 2);
    }

    #[test]
    fn the_default_allowance_bounds_tenants_nobody_configured() {
        let s = store();
        s.put(A, b"a", b"1").unwrap();
        s.set_default_allowance(allowance(4, 100));
        s.set_allowance(B, allowance(100, 100));
        // A follows the new default (2 held + 3 > 4); B has its own.
        let err = s.put(A, b"bb", b"1").unwrap_err();
        assert!(
            err.to_string().ends_with(
                "its allowance here is 4 bytes (this node's default allowance per tenant; none \
                 was set for it)"
            ),
            "{err}"
        );
        s.put(B, b"bb", b"1").unwrap();
        // A tenant first seen after the change starts with it too: 0 + 5 > 4.
        assert!(s.put(TenantId(3), b"ccc", b"12").is_err());
        // An allowance of 0 lets nothing be added.
        s.set_allowance(B, allowance(0, 0));
        assert!(s.put(B, b"new", b"").is_err());
        assert!(s.delete(B, b"bb").unwrap().0);
    }

    #[test]
    fn a_move_exports_each_moving_key_once_tracks_changes_and_seals() {
        let source = Store::new(Limits::default());
        let target = Store::new(Limits::default());
        for i in 0..500 {
            source.put(A, format!("k{i}").as_bytes(), b"v1").unwrap();
        }
        // Node 0 alone, node 1 joins.
        let ring = (&[0][..], &[0, 1][..], 16);
        assert!(!source.begin_handoff(7, 0, ring, false, false).unwrap());
        assert!(source.begin_handoff(7, 0, ring, false, false).unwrap());
        let h = source.handoff(7).unwrap();
        // Pages of 7 cover every moving key exactly once.
        let (mut cursor, mut exported) = (None, Vec::new());
        loop {
            let (pairs, next) = source.export(&h, cursor, 7);
            exported.extend(pairs);
            match next {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
        let moving: Vec<Vec<u8>> = (0..500)
            .map(|i| format!("k{i}").into_bytes())
            .filter(|k| h.destination(A, k).is_some())
            .collect();
        let mut keys: Vec<Vec<u8>> = exported.iter().map(|p| p.1.clone()).collect();
        keys.sort();
        let mut want = moving.clone();
        want.sort();
        assert_eq!(keys, want);
        assert!(!moving.is_empty() && moving.len() < 500);
        target.import(&exported).unwrap();
        // A write and a delete during the copy are what `changed` returns next.
        source.put(A, &moving[0], b"v2").unwrap();
        source.delete(A, &moving[1]).unwrap();
        let (changed, settled) = source.changed(&h, 100);
        assert!(!settled, "not sealed yet");
        assert_eq!(changed.len(), 2);
        target.import(&changed).unwrap();
        assert_eq!(
            target.get(A, &moving[0]).unwrap().as_deref(),
            Some(&b"v2"[..])
        );
        assert_eq!(target.get(A, &moving[1]).unwrap(), None);
        // Sealed: writes to moving keys are refused, to the others accepted.
        source.begin_handoff(7, 0, ring, true, false).unwrap();
        assert!(matches!(
            source.put(A, &moving[2], b"v3"),
            Err(StoreError::Moved { to: 1, .. })
        ));
        let staying = (0..500)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| h.destination(A, k).is_none())
            .unwrap();
        source.put(A, &staying, b"v3").unwrap();
        assert_eq!(source.changed(&h, 100), (Vec::new(), true));
        // Finished: remote reads are refused, and the copies are purged.
        source.begin_handoff(7, 0, ring, true, true).unwrap();
        assert!(source.check_read(A, &moving[0]).is_err());
        assert!(source.check_read(A, &staying).is_ok());
        assert_eq!(source.purge_moved(&h).unwrap(), moving.len() - 1);
        assert_eq!(source.get(A, &moving[0]).unwrap(), None);
        // A move the node does not know cannot be sealed: its writes were not tracked.
        assert_eq!(
            source.begin_handoff(8, 0, ring, true, false),
            Err(StoreError::UnknownMove(8))
        );
    }

    #[test]
    fn concurrent_writers_never_take_a_tenant_past_its_allowance() {
        let s = Arc::new(Store::new(Limits::default()));
        // 100 keys of 2 + 8 bytes fit in 1,000 bytes; 8 threads try 50 each.
        s.set_allowance(A, allowance(1000, 1_000_000));
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    (0..50)
                        .filter(|i| s.put(A, &[t, *i], b"12345678").is_ok())
                        .count()
                })
            })
            .collect();
        let stored: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(stored, 100);
        assert_eq!(
            s.tenant_usage()[0],
            TenantUsage {
                tenant: A,
                keys: 100,
                bytes: 1000
            }
        );
        assert_eq!(s.scan(A, b"", 1000).unwrap().len(), 100);
    }
}

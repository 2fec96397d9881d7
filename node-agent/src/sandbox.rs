//! WebAssembly sandboxes for tenants' functions, shared by both roles.
//!
//! A module is validated, checked against the host interface and compiled once, at deploy time,
//! into an [`InstancePre`]. Every invocation gets a fresh instance (nothing survives from one
//! invocation to the next, within or across tenants) and a memory limit enforced when the guest
//! grows its memory. The host calls are the ABI documented in the guest SDK
//! (`guest/src/lib.rs`); every data call is bound to the invocation's tenant, so no key bytes a
//! guest passes reach another tenant's data.
//!
//! Where data calls go is the [`DataAccess`] a run is given:
//! - **storage role** ([`Sandbox::pooled`]): the node's own [`Store`], in place; instances come
//!   from Wasmtime's pooling allocator and a thread advances the epoch. Invocations run as
//!   futures ([`Sandbox::run_async`]) that give their core back at every epoch tick, so a
//!   worker can interleave many of them (the fair scheduler in `storage::fair`) and a spinning
//!   guest holds a core no longer than a tick against anyone else; the deadline is checked at
//!   each tick;
//! - **compute role** ([`Sandbox::for_templates`]): a descriptor to the agent, which forwards
//!   each call to the storage node that owns the key (`crate::compute::link`). The engine lives
//!   in single-threaded template processes that fork one process per invocation, so it has no
//!   threads: instances are allocated on demand and the template enforces deadlines by killing
//!   the process.
//!
//! Every data call counts against the invocation's quotas ([`FunctionLimits::max_data_calls`],
//! [`FunctionLimits::max_data_bytes`]): the call past either ends the invocation with
//! [`RunError::DataQuota`], naming the quota and its limit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use sandstorm_naming::TenantId;
use tracing::info;
use wasmtime::{
    Caller, Config, Engine, ExternType, InstanceAllocationStrategy, InstancePre, Linker, Memory,
    Module, PoolingAllocationConfig, ResourceLimiter, Trap, TypedFunc, UpdateDeadline, ValType,
};

use crate::storage::store::{Pair, Store, StoreError};
use crate::storage::wal::Ack;

/// Host calls a module may import, all from module `sandstorm`.
pub const HOST_CALLS: [&str; 10] = [
    "input_len",
    "input_read",
    "output_write",
    "kv_get",
    "kv_put",
    "kv_delete",
    "kv_multi_get",
    "kv_scan",
    "result_read",
    "log",
];

/// Error codes returned to the guest: the SDK's, one definition for both sides.
use sandstorm_guest::code;

/// Where a sandbox's data calls go. Every call names the invocation's tenant; an implementation
/// must keep tenants apart.
pub trait DataAccess: Send + Sync + 'static {
    /// Calls `f` with the value of `key` (or `None`).
    fn get_with<R>(
        &self,
        tenant: TenantId,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError>;
    /// Calls `f` with each key's value, in order.
    fn multi_get_with(
        &self,
        tenant: TenantId,
        keys: &[&[u8]],
        f: impl FnMut(Option<&[u8]>),
    ) -> Result<(), StoreError>;
    /// Up to `limit` pairs whose keys start with `prefix`, in key order.
    fn scan(&self, tenant: TenantId, prefix: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError>;
    /// Stores `value` under `key`; the acknowledgement completes once it is durable.
    fn put(&self, tenant: TenantId, key: &[u8], value: &[u8]) -> Result<Option<Ack>, StoreError>;
    /// Removes `key`; whether it existed.
    fn delete(&self, tenant: TenantId, key: &[u8]) -> Result<(bool, Option<Ack>), StoreError>;
    /// The instance is ready and `run` is about to be called, `instantiation` after the start.
    fn started(&self, _instantiation: Duration) {}
}

impl DataAccess for Store {
    fn get_with<R>(
        &self,
        tenant: TenantId,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R, StoreError> {
        Store::get_with(self, tenant, key, f)
    }
    fn multi_get_with(
        &self,
        tenant: TenantId,
        keys: &[&[u8]],
        f: impl FnMut(Option<&[u8]>),
    ) -> Result<(), StoreError> {
        Store::multi_get_with(self, tenant, keys, f)
    }
    fn scan(&self, tenant: TenantId, prefix: &[u8], limit: usize) -> Result<Vec<Pair>, StoreError> {
        Store::scan(self, tenant, prefix, limit)
    }
    fn put(&self, tenant: TenantId, key: &[u8], value: &[u8]) -> Result<Option<Ack>, StoreError> {
        Store::put(self, tenant, key, value)
    }
    fn delete(&self, tenant: TenantId, key: &[u8]) -> Result<(bool, Option<Ack>), StoreError> {
        Store::delete(self, tenant, key)
    }
}

/// The sandbox's node-wide settings (documented defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxConfig {
    /// Instances that may exist at once (pooled slots; default 1,000).
    pub max_instances: u32,
    /// Largest linear memory any function may be given (each pooled slot's size; 256 MiB).
    pub max_memory_bytes: usize,
    /// Epoch tick: the granularity of deadlines (1 ms).
    pub epoch_tick: Duration,
    /// Largest module accepted at deploy (16 MiB).
    pub max_module_bytes: usize,
    /// Largest input or output of one invocation ([`sandstorm_proto::MAX_PAYLOAD_BYTES`]).
    pub max_payload_bytes: usize,
    /// Log lines one invocation may write; more are dropped (10).
    pub log_lines_per_invocation: u32,
    /// Longest log line kept, bytes (512).
    pub log_line_bytes: usize,
    /// Bytes at the start of each linear memory kept resident between instances and reset with
    /// memset (256 KiB). A guest built with the SDK (64 KiB stack, 64 KiB allocation arena)
    /// fits, so a warm invocation takes no page faults and makes no memory system calls;
    /// measured: kv-sum 3.1 us with 256 KiB, 7.6 us with 128 KiB, 16 us with 64 KiB.
    pub keep_resident_bytes: usize,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            max_instances: 1000,
            max_memory_bytes: 256 << 20,
            epoch_tick: Duration::from_millis(1),
            max_module_bytes: 16 << 20,
            max_payload_bytes: sandstorm_proto::MAX_PAYLOAD_BYTES,
            log_lines_per_invocation: 10,
            log_line_bytes: 512,
            keep_resident_bytes: 256 << 10,
        }
    }
}

/// Per-function limits, set at deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FunctionLimits {
    /// Wall-clock budget of one invocation (default 1 s).
    pub deadline: Duration,
    /// Most linear memory one instance may grow to (default 16 MiB).
    pub memory_bytes: usize,
    /// Most data calls one invocation may make (default 10,000): the tenant's quota.
    pub max_data_calls: u64,
    /// Most bytes (keys and values, read and written) one invocation's data calls may move
    /// (default 64 MiB): the tenant's quota.
    pub max_data_bytes: u64,
}

/// [`FunctionLimits::max_data_calls`] when the deploy says 0.
pub const DEFAULT_MAX_DATA_CALLS: u64 = 10_000;
/// [`FunctionLimits::max_data_bytes`] when the deploy says 0.
pub const DEFAULT_MAX_DATA_BYTES: u64 = 64 << 20;

impl Default for FunctionLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(1),
            memory_bytes: 16 << 20,
            max_data_calls: DEFAULT_MAX_DATA_CALLS,
            max_data_bytes: DEFAULT_MAX_DATA_BYTES,
        }
    }
}

/// Why a module was refused at deploy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeployError {
    /// the bytes are not a WebAssembly binary
    #[error("not a WebAssembly module: the bytes do not start with the \\0asm magic number")]
    NotWasm,
    /// the module is larger than the node accepts
    #[error("module of {len} bytes is larger than the limit of {limit} bytes")]
    TooLarge { len: usize, limit: usize },
    /// the module failed validation or compilation
    #[error("invalid WebAssembly module: {0}")]
    Invalid(String),
    /// a required export is missing or has the wrong type
    #[error("the module must export {what}")]
    MissingExport { what: &'static str },
    /// the module imports something the host does not provide
    #[error(
        "the module imports `{module}::{name}`, which the host does not provide (host calls: \
         module `sandstorm`, functions {})",
        HOST_CALLS.join(", ")
    )]
    UnknownImport { module: String, name: String },
    /// an import has the right name but the wrong type
    #[error("import does not match the host interface: {0}")]
    ImportMismatch(String),
    /// the function's limits are out of range
    #[error("{0}")]
    BadLimits(String),
    /// a native command that the base root file system cannot run
    #[error("{0}")]
    BadCommand(String),
}

/// A per-invocation data quota of [`FunctionLimits`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataQuota {
    /// [`FunctionLimits::max_data_calls`].
    Calls,
    /// [`FunctionLimits::max_data_bytes`].
    Bytes,
}

impl DataQuota {
    /// The quota's name in `FunctionLimits`.
    pub fn name(self) -> &'static str {
        match self {
            DataQuota::Calls => "max_data_calls",
            DataQuota::Bytes => "max_data_bytes",
        }
    }

    /// What its limit counts.
    pub fn unit(self) -> &'static str {
        match self {
            DataQuota::Calls => "data calls",
            DataQuota::Bytes => "bytes moved by data calls",
        }
    }
}

/// Why an invocation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RunError {
    /// the function ran past its deadline and was stopped
    #[error("the function ran past its deadline of {deadline:?} and was stopped")]
    DeadlineExceeded { deadline: Duration },
    /// the function tried to grow its memory past its limit
    #[error(
        "the function tried to grow its memory to {wanted} bytes, past its limit of {limit} bytes"
    )]
    MemoryLimit { wanted: usize, limit: usize },
    /// the function trapped
    #[error("the function trapped: {0}")]
    Trap(String),
    /// the function returned an error
    #[error("the function failed: {0}")]
    Failed(String),
    /// the input is larger than the node accepts
    #[error("input of {len} bytes is larger than the limit of {limit} bytes")]
    InputTooLarge { len: usize, limit: usize },
    /// no pooled instance slot was free
    #[error("no sandbox slot free: {0}")]
    NoSlot(String),
    /// a data call would have passed one of the invocation's data quotas
    #[error(
        "the invocation reached its {} quota of {limit} {} and was stopped",
        quota.name(),
        quota.unit()
    )]
    DataQuota { quota: DataQuota, limit: u64 },
    /// a write was refused by the tenant's storage allowance and the function then failed
    #[error("{refused} (the function then failed: {failure})")]
    StorageQuota { refused: String, failure: String },
}

/// A deployed function: compiled, linked, ready to instantiate.
pub struct Compiled<D: DataAccess = Store> {
    /// Owner.
    pub tenant: TenantId,
    /// Name, unique within the tenant.
    pub name: Arc<str>,
    /// Limits of every invocation.
    pub limits: FunctionLimits,
    /// How long compilation took.
    pub compile_time: Duration,
    pre: InstancePre<Invocation<D>>,
}

impl<D: DataAccess> Compiled<D> {
    /// The compiled code, serialized for a process with an engine of the same configuration
    /// ([`Sandbox::load`]).
    pub fn serialize(&self) -> Result<Vec<u8>, DeployError> {
        self.pre
            .module()
            .serialize()
            .map_err(|e| DeployError::Invalid(format!("serializing the compiled module: {e:#}")))
    }
}

impl<D: DataAccess> std::fmt::Debug for Compiled<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiled")
            .field("tenant", &self.tenant)
            .field("name", &self.name)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// What one successful invocation produced.
#[derive(Debug)]
pub struct RunOutcome {
    /// The function's output.
    pub output: Vec<u8>,
    /// Instantiation: taking a pooled slot and initialising it (the isolation cost here).
    pub start: Duration,
    /// Running `run` to its return.
    pub exec: Duration,
    /// Returning the instance's slot to the pool (resetting its memory).
    pub teardown: Duration,
    /// Host data calls made (get, put, delete, multi-get, scan).
    pub data_calls: u64,
    /// Keys read by those calls (a multi-get of n keys reads n).
    pub keys_read: u64,
    /// Value bytes read.
    pub bytes_read: u64,
    /// Key and value bytes written.
    pub bytes_written: u64,
    /// Sampled duration of one local get, if one was timed.
    pub local_access: Option<Duration>,
    /// Completes when the invocation's writes are durable (none without a data directory).
    pub durable: Option<Ack>,
}

/// The store data of one invocation: everything its host calls see.
#[derive(Debug)]
pub struct Invocation<D: DataAccess = Store> {
    tenant: TenantId,
    input: Vec<u8>,
    output: Vec<u8>,
    /// A result that did not fit the guest's buffer, for `result_read`.
    kept: Vec<u8>,
    /// A copy of the key being looked up (the guest memory is written while it is used).
    scratch: Vec<u8>,
    memory: Option<Memory>,
    data: Arc<D>,
    limiter: Limiter,
    max_payload: usize,
    quotas: Quotas,
    keys_read: u64,
    bytes_read: u64,
    bytes_written: u64,
    local_access: Option<Duration>,
    durable: Option<Ack>,
    /// This invocation's writes that are not durable yet, so not visible in the store: its own
    /// reads see them (`None`: deleted). Bounded by its data quotas.
    written: BTreeMap<Box<[u8]>, Option<Box<[u8]>>>,
    logs_left: u32,
    log_line_bytes: usize,
    function: Arc<str>,
    /// The last write the tenant's storage allowance refused, in words.
    refused: Option<String>,
    /// Whether the deadline callback stopped the invocation.
    deadline_hit: bool,
}

/// An invocation's data calls, counted against its quotas.
#[derive(Debug)]
struct Quotas {
    data_calls: u64,
    /// Bytes (keys and values, read and written) the data calls moved so far.
    data_bytes: u64,
    max_data_calls: u64,
    max_data_bytes: u64,
    /// The data quota that ended the invocation, and its limit.
    exhausted: Option<(DataQuota, u64)>,
}

impl Quotas {
    /// Counts one data call that will move `bytes` (what the guest passes in), before it is
    /// made: past either quota the invocation ends (the host call fails) and the call is not
    /// made.
    fn begin_call(&mut self, bytes: usize) -> HostResult<()> {
        self.data_calls += 1;
        if self.data_calls > self.max_data_calls {
            return self.exhaust(DataQuota::Calls, self.max_data_calls);
        }
        self.moved(bytes)
    }

    /// Counts `bytes` a data call moved.
    fn moved(&mut self, bytes: usize) -> HostResult<()> {
        self.data_bytes = self.data_bytes.saturating_add(bytes as u64);
        if self.data_bytes > self.max_data_bytes {
            return self.exhaust(DataQuota::Bytes, self.max_data_bytes);
        }
        Ok(())
    }

    fn exhaust(&mut self, quota: DataQuota, limit: u64) -> HostResult<()> {
        self.exhausted = Some((quota, limit));
        Err(wasmtime::Error::msg(
            RunError::DataQuota { quota, limit }.to_string(),
        ))
    }
}

impl<D: DataAccess> Invocation<D> {
    /// Remembers a refusal by the tenant's storage allowance, for the error if the function
    /// then fails.
    fn note_refusal(&mut self, e: &StoreError) {
        if matches!(
            e,
            StoreError::OverQuota { .. } | StoreError::RemoteOverQuota(_)
        ) {
            self.refused = Some(e.to_string());
        }
    }
}

#[derive(Debug)]
struct Limiter {
    memory_bytes: usize,
    denied: Option<usize>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_bytes {
            self.denied = Some(desired);
            return Err(wasmtime::Error::msg("memory limit"));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _max: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// The engine, the host interface and (pooled) the epoch clock of one node.
pub struct Sandbox<D: DataAccess = Store> {
    engine: Engine,
    linker: Linker<Invocation<D>>,
    config: SandboxConfig,
    ticker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
}

impl<D: DataAccess> std::fmt::Debug for Sandbox<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<D: DataAccess> Drop for Sandbox<D> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Every `n`th local get is timed for the cost model's local-access figure.
const TIME_EVERY: u64 = 64;

impl<D: DataAccess> Sandbox<D> {
    /// An engine with pooled instances and a thread that advances its epoch (the storage role).
    pub fn pooled(config: SandboxConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_core_instances(config.max_instances)
            .total_memories(config.max_instances)
            .total_tables(config.max_instances)
            .max_memories_per_module(1)
            .max_tables_per_module(1)
            .max_memory_size(config.max_memory_bytes)
            // Each running invocation suspended at a tick keeps its stack: one per instance.
            .total_stacks(config.max_instances)
            // Keep a slot's first pages mapped between instances: re-zeroing them with memset
            // is cheaper than the madvise and page faults of giving them back.
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(4 << 10);
        let mut wasm = Config::new();
        wasm.epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&wasm)?;
        let linker = host_interface(&engine)?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let engine = engine.clone();
            let stop = stop.clone();
            let tick = config.epoch_tick;
            thread::Builder::new()
                .name("wasm-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(tick);
                        engine.increment_epoch();
                    }
                })?
        };
        Ok(Self {
            engine,
            linker,
            config,
            ticker: Some(ticker),
            stop,
        })
    }

    /// An engine without threads, for template processes that fork one process per invocation
    /// (the compute role): instances are allocated on demand, and no epoch advances, so the
    /// template enforces deadlines from outside. The agent compiles with one of these too, so
    /// what it serializes loads in the templates.
    pub fn for_templates(config: SandboxConfig) -> wasmtime::Result<Self> {
        let mut wasm = Config::new();
        // Same generated code as the pooled engine (epoch checks included); they never fire.
        wasm.epoch_interruption(true);
        // No copy-on-write memory images: Wasmtime would keep each module's initial memory in
        // a memfd it opens on the first instantiation and maps again at every later one. A
        // template's children close every descriptor they do not know of (`keep_only`), that
        // one included, so a spare that instantiated after would fail with EBADF, a process
        // dropping the module would abort on closing it twice, and tenant code would hold it.
        // Data segments are copied into each instance instead, while it is prepared ahead.
        wasm.memory_init_cow(false);
        let engine = Engine::new(&wasm)?;
        let linker = host_interface(&engine)?;
        Ok(Self {
            engine,
            linker,
            config,
            ticker: None,
            stop: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Loads code [`Compiled::serialize`]d by an engine of this configuration.
    ///
    /// # Safety
    /// `bytes` must come from `Compiled::serialize` of a trusted process (the agent): Wasmtime
    /// maps them as executable code without re-validating them.
    #[allow(unsafe_code)]
    pub unsafe fn load(
        &self,
        tenant: TenantId,
        name: &str,
        bytes: &[u8],
        limits: FunctionLimits,
    ) -> Result<Compiled<D>, DeployError> {
        let started = Instant::now();
        // SAFETY: the caller guarantees the bytes are our own serialized code.
        let module = unsafe { Module::deserialize(&self.engine, bytes) }
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| DeployError::ImportMismatch(format!("{e:#}")))?;
        Ok(Compiled {
            tenant,
            name: Arc::from(name),
            limits,
            compile_time: started.elapsed(),
            pre,
        })
    }

    /// The node-wide settings.
    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Validates, checks and compiles a module for `tenant`.
    pub fn compile(
        &self,
        tenant: TenantId,
        name: &str,
        bytes: &[u8],
        limits: FunctionLimits,
    ) -> Result<Compiled<D>, DeployError> {
        if bytes.len() > self.config.max_module_bytes {
            return Err(DeployError::TooLarge {
                len: bytes.len(),
                limit: self.config.max_module_bytes,
            });
        }
        if !bytes.starts_with(b"\0asm") {
            return Err(DeployError::NotWasm);
        }
        if limits.memory_bytes > self.config.max_memory_bytes {
            return Err(DeployError::BadLimits(format!(
                "memory limit of {} bytes is more than this node's largest instance, {} bytes",
                limits.memory_bytes, self.config.max_memory_bytes
            )));
        }
        if limits.deadline.is_zero() {
            return Err(DeployError::BadLimits(
                "the deadline must be positive".into(),
            ));
        }
        let started = Instant::now();
        let module = Module::from_binary(&self.engine, bytes)
            .map_err(|e| DeployError::Invalid(format!("{e:#}")))?;
        check_interface(&module, limits)?;
        let pre = self
            .linker
            .instantiate_pre(&module)
            .map_err(|e| DeployError::ImportMismatch(format!("{e:#}")))?;
        Ok(Compiled {
            tenant,
            name: Arc::from(name),
            limits,
            compile_time: started.elapsed(),
            pre,
        })
    }

    /// Runs one invocation of `function` in a fresh instance, its data calls going to `data`.
    pub fn run(
        &self,
        function: &Compiled<D>,
        input: Vec<u8>,
        data: &Arc<D>,
    ) -> Result<RunOutcome, RunError> {
        if self.ticker.is_some() {
            // The pooled engine's epoch also advances when a storage worker cuts a slice short
            // (`storage::workers`), so a deadline counted in ticks could end early; the async
            // run's deadline is wall time.
            return block_on(self.run_async(function, input, data));
        }
        self.prepare(function, data.clone())?.run(input)
    }

    /// Instantiates `function` ahead of its invocation, its data calls going to `data`: the
    /// compute role's templates prepare the next instance before they fork, so an
    /// invocation's process starts with it ready.
    /// Its deadline is counted in epoch ticks: meant for the templates' engine, whose epoch
    /// nobody advances (the storage role runs through [`Sandbox::run_async`]).
    pub fn prepare<'a>(
        &'a self,
        function: &'a Compiled<D>,
        data: Arc<D>,
    ) -> Result<Prepared<'a, D>, RunError> {
        let mut store = self.new_store(
            function,
            Vec::new(),
            data,
            self.config.log_lines_per_invocation,
        );
        let started = Instant::now();
        let entry = self.instantiate(&mut store, function)?;
        Ok(Prepared {
            sandbox: self,
            function,
            store,
            entry,
            start: started.elapsed(),
        })
    }

    /// Instantiates `function` in `store` and returns its entry point.
    fn instantiate(
        &self,
        store: &mut wasmtime::Store<Invocation<D>>,
        function: &Compiled<D>,
    ) -> Result<TypedFunc<(), i32>, RunError> {
        let instance = function
            .pre
            .instantiate(&mut *store)
            .map_err(|e| self.failure(store, function, &e))?;
        let memory = instance.get_memory(&mut *store, "memory");
        store.data_mut().memory = memory;
        instance
            .get_typed_func::<(), i32>(&mut *store, "run")
            .map_err(|e| RunError::Trap(format!("{e:#}")))
    }

    /// A store for one instance of `function`, its host state bound to the function's tenant.
    fn new_store(
        &self,
        function: &Compiled<D>,
        input: Vec<u8>,
        data: Arc<D>,
        log_lines: u32,
    ) -> wasmtime::Store<Invocation<D>> {
        let state = Invocation {
            tenant: function.tenant,
            input,
            output: Vec::new(),
            kept: Vec::new(),
            scratch: Vec::new(),
            memory: None,
            data,
            limiter: Limiter {
                memory_bytes: function.limits.memory_bytes,
                denied: None,
            },
            max_payload: self.config.max_payload_bytes,
            quotas: Quotas {
                data_calls: 0,
                data_bytes: 0,
                max_data_calls: function.limits.max_data_calls,
                max_data_bytes: function.limits.max_data_bytes,
                exhausted: None,
            },
            keys_read: 0,
            bytes_read: 0,
            bytes_written: 0,
            local_access: None,
            durable: None,
            written: BTreeMap::new(),
            logs_left: log_lines,
            log_line_bytes: self.config.log_line_bytes,
            function: function.name.clone(),
            refused: None,
            deadline_hit: false,
        };
        let mut store = wasmtime::Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        // The current tick is partly gone: one more tick keeps the deadline a lower bound.
        let tick = self.config.epoch_tick.as_nanos().max(1);
        let ticks = function.limits.deadline.as_nanos().div_ceil(tick) + 1;
        store.set_epoch_deadline(u64::try_from(ticks).unwrap_or(u64::MAX));
        store.epoch_deadline_trap();
        store
    }

    fn failure(
        &self,
        store: &wasmtime::Store<Invocation<D>>,
        function: &Compiled<D>,
        e: &wasmtime::Error,
    ) -> RunError {
        let state = store.data();
        if let Some((quota, limit)) = state.quotas.exhausted {
            return RunError::DataQuota { quota, limit };
        }
        if let Some(wanted) = state.limiter.denied {
            return RunError::MemoryLimit {
                wanted,
                limit: function.limits.memory_bytes,
            };
        }
        if state.deadline_hit {
            return RunError::DeadlineExceeded {
                deadline: function.limits.deadline,
            };
        }
        let error = self.trap_error(function, e);
        match (&state.refused, error) {
            (Some(refused), RunError::Trap(failure)) => RunError::StorageQuota {
                refused: refused.clone(),
                failure: format!("it trapped: {failure}"),
            },
            (_, error) => error,
        }
    }

    fn trap_error(&self, function: &Compiled<D>, e: &wasmtime::Error) -> RunError {
        match e.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => RunError::DeadlineExceeded {
                deadline: function.limits.deadline,
            },
            Some(Trap::AllocationTooLarge) => RunError::NoSlot(format!("{e}")),
            Some(trap) => RunError::Trap(trap.to_string()),
            None => {
                let message = format!("{e:#}");
                if message.contains("maximum concurrent") || message.contains("pooling") {
                    RunError::NoSlot(message)
                } else {
                    RunError::Trap(message)
                }
            }
        }
    }

    /// The engine (for benchmarks that hold instances themselves).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Instantiates `function`, runs it once on `input` and leaves the instance alive: what one
    /// of many concurrent invocations holds. For measuring what a concurrent instance costs
    /// (its deadline is counted in epoch ticks, which a busy storage node's workers may
    /// advance early).
    /// Returns the store (drop it to free the slot) and the instance's memory.
    pub fn hold_instance(
        &self,
        function: &Compiled<D>,
        input: Vec<u8>,
        data: Arc<D>,
    ) -> Result<(wasmtime::Store<Invocation<D>>, Option<Memory>), RunError> {
        let mut store = self.new_store(function, input, data, 0);
        let run = self.instantiate(&mut store, function)?;
        run.call(&mut store, ())
            .map_err(|e| self.failure(&store, function, &e))?;
        let memory = store.data().memory;
        Ok((store, memory))
    }
}

/// An instance made ahead of its invocation: instantiated, `run` not called yet.
pub struct Prepared<'a, D: DataAccess> {
    sandbox: &'a Sandbox<D>,
    function: &'a Compiled<D>,
    store: wasmtime::Store<Invocation<D>>,
    entry: TypedFunc<(), i32>,
    start: Duration,
}

impl<D: DataAccess> std::fmt::Debug for Prepared<'_, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("function", &self.function.name)
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl<D: DataAccess> Prepared<'_, D> {
    /// Runs the invocation on `input`.
    pub fn run(mut self, input: Vec<u8>) -> Result<RunOutcome, RunError> {
        let config = &self.sandbox.config;
        if input.len() > config.max_payload_bytes {
            return Err(RunError::InputTooLarge {
                len: input.len(),
                limit: config.max_payload_bytes,
            });
        }
        let (sandbox, function) = (self.sandbox, self.function);
        let state = self.store.data_mut();
        state.input = input;
        state.data.started(self.start);
        let instantiated = Instant::now();
        let result = self.entry.call(&mut self.store, ());
        sandbox.conclude(function, self.store, result, self.start, instantiated)
    }
}

impl<D: DataAccess> Sandbox<D> {
    /// The outcome of a run that began at `instantiated`, from its store and `run`'s result.
    fn conclude(
        &self,
        function: &Compiled<D>,
        store: wasmtime::Store<Invocation<D>>,
        result: wasmtime::Result<i32>,
        start: Duration,
        instantiated: Instant,
    ) -> Result<RunOutcome, RunError> {
        let exec = instantiated.elapsed();
        let status = result.map_err(|e| self.failure(&store, function, &e))?;
        // Dropping the instance returns its slot to the pool, which resets its memory: part of
        // what every invocation costs, so it is timed too.
        let finished = Instant::now();
        let state = store.into_data();
        let teardown = finished.elapsed();
        if status != 0 {
            let failure = String::from_utf8_lossy(&state.output).into_owned();
            return Err(match state.refused {
                Some(refused) => RunError::StorageQuota { refused, failure },
                None => RunError::Failed(failure),
            });
        }
        Ok(RunOutcome {
            output: state.output,
            start,
            exec,
            teardown,
            data_calls: state.quotas.data_calls,
            keys_read: state.keys_read,
            bytes_read: state.bytes_read,
            bytes_written: state.bytes_written,
            local_access: state.local_access,
            durable: state.durable,
        })
    }

    /// Runs one invocation like [`Sandbox::run`], as a future that gives its thread back at
    /// every epoch tick: it returns `Pending` then (having woken its waker) and continues
    /// where it stopped when polled again, so one worker thread can interleave many
    /// invocations and choose which runs next. The deadline is wall time from instantiation,
    /// checked at each tick; the tick that finds it passed ends the run with
    /// [`RunError::DeadlineExceeded`].
    pub async fn run_async(
        &self,
        function: &Compiled<D>,
        input: Vec<u8>,
        data: &Arc<D>,
    ) -> Result<RunOutcome, RunError> {
        if input.len() > self.config.max_payload_bytes {
            return Err(RunError::InputTooLarge {
                len: input.len(),
                limit: self.config.max_payload_bytes,
            });
        }
        let mut store = self.new_store(
            function,
            Vec::new(),
            data.clone(),
            self.config.log_lines_per_invocation,
        );
        let started = Instant::now();
        let deadline = started + function.limits.deadline;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |mut cx| {
            if Instant::now() >= deadline {
                cx.data_mut().deadline_hit = true;
                return Err(Trap::Interrupt.into());
            }
            Ok(UpdateDeadline::Yield(1))
        });
        let instance = match function.pre.instantiate_async(&mut store).await {
            Ok(i) => i,
            Err(e) => return Err(self.failure(&store, function, &e)),
        };
        let memory = instance.get_memory(&mut store, "memory");
        store.data_mut().memory = memory;
        let entry = instance
            .get_typed_func::<(), i32>(&mut store, "run")
            .map_err(|e| RunError::Trap(format!("{e:#}")))?;
        let start = started.elapsed();
        let state = store.data_mut();
        state.input = input;
        state.data.started(start);
        let instantiated = Instant::now();
        let result = entry.call_async(&mut store, ()).await;
        self.conclude(function, store, result, start, instantiated)
    }
}

/// Polls `future` on this thread until it is ready. For [`Sandbox::run_async`], whose only
/// `Pending` is a yield at an epoch tick: it is ready to go on at once.
fn block_on<F: Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

/// Checks a function's name: 1 to 128 characters, no '/' or control characters.
pub fn check_function_name(name: &str) -> Result<(), DeployError> {
    if name.is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '/') {
        return Err(DeployError::BadLimits(format!(
            "function name {name:?} must be 1 to 128 characters, without '/' or control characters"
        )));
    }
    Ok(())
}

/// Checks the exports a function needs and that every import is a host call.
fn check_interface(module: &Module, limits: FunctionLimits) -> Result<(), DeployError> {
    for import in module.imports() {
        if import.module() != "sandstorm" || !HOST_CALLS.contains(&import.name()) {
            return Err(DeployError::UnknownImport {
                module: import.module().to_owned(),
                name: import.name().to_owned(),
            });
        }
    }
    let run_ok = matches!(
        module.get_export("run"),
        Some(ExternType::Func(f)) if f.params().len() == 0
            && f.results().len() == 1
            && f.results().all(|r| matches!(r, ValType::I32))
    );
    if !run_ok {
        return Err(DeployError::MissingExport {
            what: "a function `run` taking nothing and returning i32",
        });
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(m)) => {
            let initial = m.minimum().saturating_mul(m.page_size());
            if initial > limits.memory_bytes as u64 {
                return Err(DeployError::BadLimits(format!(
                    "the module's memory starts at {initial} bytes, more than its limit of {} bytes",
                    limits.memory_bytes
                )));
            }
            Ok(())
        }
        _ => Err(DeployError::MissingExport {
            what: "its linear memory as `memory`",
        }),
    }
}

type HostResult<T> = wasmtime::Result<T>;

/// The guest memory and the invocation state, borrowed together.
fn split<'a, D: DataAccess>(
    caller: &'a mut Caller<'_, Invocation<D>>,
) -> HostResult<(&'a mut [u8], &'a mut Invocation<D>)> {
    let memory = caller
        .data()
        .memory
        .ok_or_else(|| wasmtime::Error::msg("host call before the instance's memory was set up"))?;
    Ok(memory.data_and_store_mut(caller))
}

/// The guest range `[ptr, ptr + len)`, or a trap naming it.
fn range(memory_len: usize, ptr: i32, len: i32) -> HostResult<std::ops::Range<usize>> {
    let (start, n) = (ptr as u32 as usize, len as u32 as usize);
    match start.checked_add(n) {
        Some(end) if end <= memory_len => Ok(start..end),
        _ => Err(wasmtime::Error::msg(format!(
            "host call argument out of bounds: {n} bytes at {start} in a memory of {memory_len} bytes"
        ))),
    }
}

fn store_code(e: &StoreError) -> i64 {
    match e {
        StoreError::KeyTooLarge { .. } | StoreError::EmptyKey => code::KEY_TOO_LARGE,
        StoreError::ValueTooLarge { .. } => code::VALUE_TOO_LARGE,
        StoreError::BatchTooLarge { .. }
        | StoreError::OverQuota { .. }
        | StoreError::RemoteOverQuota(_) => code::QUOTA,
        StoreError::Log(_)
        | StoreError::ReadOnly(_)
        | StoreError::Remote(_)
        | StoreError::Moved { .. }
        | StoreError::UnknownMove(_) => code::UNAVAILABLE,
    }
}

/// Copies `result` into the guest buffer if it fits, else keeps it for `result_read`.
fn deliver(data: &mut [u8], buf: std::ops::Range<usize>, kept: &mut Vec<u8>, result: &[u8]) -> i64 {
    if result.len() <= buf.len() {
        data[buf.start..buf.start + result.len()].copy_from_slice(result);
    } else {
        kept.clear();
        kept.extend_from_slice(result);
    }
    result.len() as i64
}

fn host_interface<D: DataAccess>(engine: &Engine) -> wasmtime::Result<Linker<Invocation<D>>> {
    let mut linker = Linker::new(engine);
    linker.func_wrap(
        "sandstorm",
        "input_len",
        |caller: Caller<'_, Invocation<D>>| -> i32 {
            i32::try_from(caller.data().input.len()).unwrap_or(i32::MAX)
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "input_read",
        |mut caller: Caller<'_, Invocation<D>>, ptr: i32, len: i32| -> HostResult<i32> {
            let (data, st) = split(&mut caller)?;
            let n = (len as u32 as usize).min(st.input.len());
            let dst = range(data.len(), ptr, n as i32)?;
            data[dst].copy_from_slice(&st.input[..n]);
            Ok(n as i32)
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "output_write",
        |mut caller: Caller<'_, Invocation<D>>, ptr: i32, len: i32| -> HostResult<i32> {
            let (data, st) = split(&mut caller)?;
            let src = range(data.len(), ptr, len)?;
            if st.output.len() + src.len() > st.max_payload {
                return Ok(code::OUTPUT_TOO_LARGE as i32);
            }
            st.output.extend_from_slice(&data[src]);
            Ok(0)
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "kv_get",
        |mut caller: Caller<'_, Invocation<D>>,
         key: i32,
         key_len: i32,
         buf: i32,
         cap: i32|
         -> HostResult<i64> {
            let (data, st) = split(&mut caller)?;
            let key = range(data.len(), key, key_len)?;
            let buf = range(data.len(), buf, cap)?;
            st.scratch.clear();
            st.scratch.extend_from_slice(&data[key]);
            st.quotas.begin_call(st.scratch.len())?;
            let timed = st.quotas.data_calls % TIME_EVERY == 1;
            let started = timed.then(Instant::now);
            let Invocation {
                data: store,
                scratch,
                kept,
                tenant,
                written,
                ..
            } = st;
            let answer = |v: Option<&[u8]>| match v {
                None => code::NOT_FOUND,
                Some(v) => deliver(data, buf, kept, v),
            };
            let result = match written.get(&scratch[..]) {
                Some(v) => Ok(answer(v.as_deref())),
                None => store.get_with(*tenant, scratch, answer),
            };
            if let Some(t) = started {
                st.local_access = Some(t.elapsed());
            }
            Ok(match result {
                Ok(n) => {
                    if n >= 0 {
                        st.keys_read += 1;
                        st.bytes_read += n as u64;
                        st.quotas.moved(n as usize)?;
                    }
                    n
                }
                Err(e) => store_code(&e),
            })
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "kv_put",
        |mut caller: Caller<'_, Invocation<D>>,
         key: i32,
         key_len: i32,
         val: i32,
         val_len: i32|
         -> HostResult<i32> {
            let (data, st) = split(&mut caller)?;
            let key = &data[range(data.len(), key, key_len)?];
            let value = &data[range(data.len(), val, val_len)?];
            st.quotas.begin_call(key.len() + value.len())?;
            match st.data.put(st.tenant, key, value) {
                Ok(ack) => {
                    st.bytes_written += (key.len() + value.len()) as u64;
                    if ack.is_some() {
                        st.durable = ack;
                        st.written.insert(key.into(), Some(value.into()));
                    }
                    Ok(0)
                }
                Err(e) => {
                    st.note_refusal(&e);
                    Ok(store_code(&e) as i32)
                }
            }
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "kv_delete",
        |mut caller: Caller<'_, Invocation<D>>, key: i32, key_len: i32| -> HostResult<i32> {
            let (data, st) = split(&mut caller)?;
            let key = &data[range(data.len(), key, key_len)?];
            st.quotas.begin_call(key.len())?;
            match st.data.delete(st.tenant, key) {
                Ok((existed, ack)) => {
                    st.bytes_written += key.len() as u64;
                    if ack.is_some() {
                        st.durable = ack;
                        st.written.insert(key.into(), None);
                    }
                    Ok(i32::from(existed))
                }
                Err(e) => Ok(store_code(&e) as i32),
            }
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "kv_multi_get",
        |mut caller: Caller<'_, Invocation<D>>,
         req: i32,
         req_len: i32,
         buf: i32,
         cap: i32|
         -> HostResult<i64> {
            let (data, st) = split(&mut caller)?;
            let req = range(data.len(), req, req_len)?;
            let buf = range(data.len(), buf, cap)?;
            st.scratch.clear();
            st.scratch.extend_from_slice(&data[req]);
            let Some(keys) = decode_keys(&st.scratch) else {
                return Ok(code::BAD_ENCODING);
            };
            let asked: usize = keys.iter().map(|k| k.len()).sum();
            st.quotas.begin_call(asked)?;
            let started =
                (st.quotas.data_calls % TIME_EVERY == 1 && !keys.is_empty()).then(Instant::now);
            let mut encoded = std::mem::take(&mut st.kept);
            encoded.clear();
            let (mut found, mut bytes) = (0u64, 0u64);
            let mut asked = keys.iter();
            let written = &st.written;
            let result = st.data.multi_get_with(st.tenant, &keys, |v| {
                let v = match asked.next().and_then(|k| written.get(*k)) {
                    Some(w) => w.as_deref(),
                    None => v,
                };
                match v {
                    None => encoded.extend_from_slice(&(-1i32).to_le_bytes()),
                    Some(v) => {
                        found += 1;
                        bytes += v.len() as u64;
                        encoded.extend_from_slice(&(v.len() as u32).to_le_bytes());
                        encoded.extend_from_slice(v);
                    }
                }
            });
            if let Some(t) = started {
                st.local_access = Some(t.elapsed() / u32::try_from(keys.len()).unwrap_or(u32::MAX));
            }
            st.keys_read += found;
            st.bytes_read += bytes;
            st.quotas
                .moved(usize::try_from(bytes).unwrap_or(usize::MAX))?;
            Ok(match result {
                Ok(()) if encoded.len() > st.max_payload => code::QUOTA,
                Ok(()) => finish(data, buf, st, encoded),
                Err(e) => store_code(&e),
            })
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "kv_scan",
        |mut caller: Caller<'_, Invocation<D>>,
         prefix: i32,
         prefix_len: i32,
         limit: i32,
         buf: i32,
         cap: i32|
         -> HostResult<i64> {
            let (data, st) = split(&mut caller)?;
            let prefix = range(data.len(), prefix, prefix_len)?;
            let buf = range(data.len(), buf, cap)?;
            st.quotas.begin_call(prefix.len())?;
            let limit = usize::try_from(limit).unwrap_or(0);
            let prefix = &data[prefix];
            let mine: Vec<_> = st
                .written
                .range::<[u8], _>((
                    std::ops::Bound::Included(prefix),
                    std::ops::Bound::Unbounded,
                ))
                .take_while(|(k, _)| k.starts_with(prefix))
                .collect();
            // Each of its own writes can hide at most one stored pair: ask for that many more.
            let pairs = match st
                .data
                .scan(st.tenant, prefix, limit.saturating_add(mine.len()))
            {
                Ok(p) if mine.is_empty() => p,
                Ok(p) => {
                    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = p.into_iter().collect();
                    for (k, v) in mine {
                        match v {
                            Some(v) => merged.insert(k.to_vec(), v.to_vec()),
                            None => merged.remove(&k[..]),
                        };
                    }
                    merged.into_iter().take(limit).collect()
                }
                Err(e) => return Ok(store_code(&e)),
            };
            let mut encoded = std::mem::take(&mut st.kept);
            encoded.clear();
            for (k, v) in &pairs {
                encoded.extend_from_slice(&(k.len() as u32).to_le_bytes());
                encoded.extend_from_slice(k);
                encoded.extend_from_slice(&(v.len() as u32).to_le_bytes());
                encoded.extend_from_slice(v);
                st.bytes_read += v.len() as u64;
            }
            st.keys_read += pairs.len() as u64;
            st.quotas
                .moved(pairs.iter().map(|(k, v)| k.len() + v.len()).sum())?;
            if encoded.len() > st.max_payload {
                return Ok(code::QUOTA);
            }
            Ok(finish(data, buf, st, encoded))
        },
    )?;
    linker.func_wrap(
        "sandstorm",
        "result_read",
        |mut caller: Caller<'_, Invocation<D>>, ptr: i32, len: i32| -> HostResult<i32> {
            let (data, st) = split(&mut caller)?;
            let n = (len as u32 as usize).min(st.kept.len());
            let dst = range(data.len(), ptr, n as i32)?;
            data[dst].copy_from_slice(&st.kept[..n]);
            st.kept.clear();
            Ok(n as i32)
        },
    )?;
    linker.func_wrap("sandstorm", "log", |mut caller: Caller<'_, Invocation<D>>, ptr: i32, len: i32| -> HostResult<()> {
        let (data, st) = split(&mut caller)?;
        let src = range(data.len(), ptr, len)?;
        if st.logs_left == 0 {
            return Ok(());
        }
        st.logs_left -= 1;
        let end = src.start + src.len().min(st.log_line_bytes);
        let line = String::from_utf8_lossy(&data[src.start..end]);
        // A field, escaped by the formatter: a tenant's text never becomes a line of its own.
        info!(target: "guest", tenant = st.tenant.0, function = &*st.function, line = ?line, "function log");
        if st.logs_left == 0 {
            info!(target: "guest", tenant = st.tenant.0, function = &*st.function, "log limit reached; further lines of this invocation are dropped");
        }
        Ok(())
    })?;
    Ok(linker)
}

/// Delivers an encoded result built in the `kept` buffer (taken out of `st` while it was built).
fn finish<D: DataAccess>(
    data: &mut [u8],
    buf: std::ops::Range<usize>,
    st: &mut Invocation<D>,
    encoded: Vec<u8>,
) -> i64 {
    let n = encoded.len() as i64;
    if encoded.len() <= buf.len() {
        data[buf.start..buf.start + encoded.len()].copy_from_slice(&encoded);
        st.kept = encoded;
        st.kept.clear();
    } else {
        st.kept = encoded;
    }
    n
}

/// Splits a multi-get request, `n x ([u32 len][key])`.
fn decode_keys(mut bytes: &[u8]) -> Option<Vec<&[u8]>> {
    let mut keys = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        keys.push(bytes.get(4..4 + len)?);
        bytes = &bytes[4 + len..];
    }
    Some(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_get_requests_decode_or_are_refused() {
        let mut req = Vec::new();
        for key in [&b"ab"[..], b"", b"xyz"] {
            req.extend_from_slice(&(key.len() as u32).to_le_bytes());
            req.extend_from_slice(key);
        }
        assert_eq!(decode_keys(&req), Some(vec![&b"ab"[..], b"", b"xyz"]));
        // Claims 3 bytes of key, has 2.
        assert_eq!(decode_keys(&[3, 0, 0, 0, b'a', b'b']), None);
    }

    #[test]
    fn guest_ranges_are_bounds_checked() {
        assert_eq!(range(100, 10, 20).unwrap(), 10..30);
        assert!(range(100, 90, 11).is_err());
        // Negative i32 pointers are huge u32 offsets, never wrap around.
        assert!(range(100, -1, 2).is_err());
    }
}

//! The scheduler's state, behind four locks, each a narrow handle on what one concern owns:
//!
//! | handle | guards | owned by |
//! |---|---|---|
//! | [`Scheduler::lock`] | [`Inner`]: the catalog, deployed functions, nodes and their channels, the placement view, liveness, calibration, placer, warm containers, admission holds | placement ([`super::invoke`]) and registration ([`super::cluster`]) |
//! | [`Scheduler::history`] | [`History`]: each function's profile and where its data lives | [`super::invoke`] records, [`super::reprovision`] reads |
//! | [`Scheduler::tenants`] | [`TenantBook`]: tokens and quota settings | [`super::tenants`], [`super::quota`] |
//! | [`Scheduler::ring`] | [`RingState`]: the key ring, its stored membership, a sealed move | [`super::rebalance`] |
//! | [`Scheduler::plan`] | the re-provisioner's latest round | [`super::reprovision`] |
//!
//! What one placement decision reads and writes together (the view, the holds, the warm
//! table) stays under one lock, so a decision and its reservation are one step. The other
//! four are *leaf* locks: taken alone, or while holding the cluster lock, never
//! one inside another, and the cluster lock is never taken while holding one (debug builds
//! check this on every acquisition). No lock is held across an `.await` (the guards are not
//! `Send`): every path copies what it needs (a function's module, a node's channel, a ring
//! snapshot) and lets go before talking to a node.

use std::cell::Cell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use sandstorm_cost_model::Workload;
use sandstorm_naming::catalog::Catalog;
use sandstorm_naming::liveness::Liveness;
use sandstorm_naming::{FunctionId, NodeId, NodeRole, TenantId};
use sandstorm_profiler::Profiler;
use sandstorm_proto::v1::handoff_client::HandoffClient;
use sandstorm_proto::v1::key_value_client::KeyValueClient;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;
use tonic::transport::Channel;

use super::SchedulerConfig;
use super::auth::{self, Caller, TokenHash};
use super::calibration::Calibration;
use super::error::ApiError;
use super::executor::Executor;
use super::quota::Quotas;
use super::rebalance::RingState;
use super::results::Results;
use super::store::{FunctionLimits, Loaded, RingRecord, Store};
use super::tenants::TenantBook;
use super::warm::WarmTable;
use crate::placement::{ClusterView, NodeView, Placer, Policy};
use crate::provision::{DataHomes, PlanReport};

/// The workload assumed for a function never invoked: 1 ms of compute, one access of 1 KiB.
/// Deliberately modest (docs/design.md's 0.7 s trace prior describes whole Azure functions, not the
/// small data functions this platform runs); the first record replaces it.
pub const PRIOR_WORKLOAD: Workload = Workload {
    compute_us: 1_000.0,
    accesses: 1.0,
    rounds: 1.0,
    bytes: 1024.0,
};

/// Memory assumed for a node that did not say, MiB.
pub const DEFAULT_NODE_MEMORY_MB: u64 = 16 * 1024;

/// A deployed function, with what the catalog does not hold.
#[derive(Debug, Clone)]
pub struct FunctionEntry {
    pub id: FunctionId,
    pub tenant: TenantId,
    pub name: String,
    pub limits: FunctionLimits,
    pub code: FunctionCode,
    /// SHA-256 of the module, or of the command's arguments each ended by a NUL byte; hex.
    pub sha256: String,
}

/// What a function runs.
#[derive(Debug, Clone)]
pub enum FunctionCode {
    /// A WebAssembly module: storage nodes run it in the sandbox, compute nodes in a container.
    Wasm(Arc<Vec<u8>>),
    /// A native program of the compute nodes' base root file system and its arguments: runs
    /// in a container on compute nodes only.
    Native(Arc<Vec<String>>),
}

impl FunctionCode {
    /// The stored form: `(module, command)`, one of them empty.
    pub fn from_stored(module: Vec<u8>, command: Vec<String>) -> Self {
        if command.is_empty() {
            Self::Wasm(Arc::new(module))
        } else {
            Self::Native(Arc::new(command))
        }
    }

    /// SHA-256 of the code, hex: of the module, or of the arguments each ended by a NUL byte.
    pub fn sha256(&self) -> String {
        match self {
            Self::Wasm(module) => auth::hex(&auth::hash_bytes(module)),
            Self::Native(argv) => {
                let mut bytes = Vec::new();
                for a in argv.iter() {
                    bytes.extend_from_slice(a.as_bytes());
                    bytes.push(0);
                }
                auth::hex(&auth::hash_bytes(&bytes))
            }
        }
    }

    /// Whether a node of `role` can run it.
    pub fn runs_on(&self, role: NodeRole) -> bool {
        matches!(self, Self::Wasm(_)) || role == NodeRole::Compute
    }
}

/// What the scheduler keeps about one node besides its catalog entry and view.
#[derive(Debug)]
pub struct NodeEntry {
    pub address: String,
    pub agent: NodeAgentClient<Channel>,
    pub kv: KeyValueClient<Channel>,
    /// Storage nodes: key-ring moves in and out of it.
    pub handoff: HandoffClient<Channel>,
    /// Invocations go over its stream (see [`super::executor`]).
    pub executor: Arc<Executor>,
    /// Registration session: bumped when the node (re)registers; 0 before it registered with
    /// this scheduler process.
    pub session: u64,
    /// The agent process's incarnation at its last registration.
    pub incarnation: u64,
    /// The task consuming its stats stream.
    pub stats_task: Option<tokio::task::AbortHandle>,
    /// The latest statistics.
    pub last: Option<LastStats>,
    /// The [`TenantBook::allowances_version`] this (storage) node last acknowledged.
    pub quotas_pushed: u64,
    /// Tenants whose functions failed to deploy here with their latest data quotas.
    pub stale_limits: Vec<TenantId>,
}

/// The latest statistics of a node, summed over its cores.
#[derive(Debug, Clone, Copy, Default)]
pub struct LastStats {
    pub busy: f64,
    pub queue_len: u32,
    pub functions: u32,
    pub keys: u64,
    /// Invocations it said it holds.
    pub running: u32,
    /// Memory of its containers, MiB, and how many it keeps (idle ones among them).
    pub memory_mb: u64,
    pub containers: u32,
    pub idle_containers: u32,
}

/// What each function did, from its invocations: the placer's workload estimates and the
/// re-provisioner's demand.
#[derive(Debug)]
pub struct History {
    pub profiler: Profiler,
    /// Where each function's data lives, from the keys its invocations name.
    pub data_homes: DataHomes,
}

impl History {
    /// A function removed or replaced: its history goes with it.
    pub fn forget(&mut self, function: FunctionId) {
        self.profiler.forget(function);
        self.data_homes.forget(function);
    }
}

/// Most a single compute run's data calls may multiply the round-trip estimate by.
const ROUND_TRIP_STEP: f64 = 4.0;

/// Everything behind the cluster lock.
#[derive(Debug)]
pub struct Inner {
    pub catalog: Catalog,
    pub functions: HashMap<FunctionId, FunctionEntry>,
    /// Indexed by `NodeId.0`, like the catalog's nodes and the view.
    pub nodes: Vec<NodeEntry>,
    pub view: ClusterView,
    pub liveness: Liveness,
    /// The cost model's calibration, per node and for the cluster.
    pub calibration: Calibration,
    pub placer: Placer,
    /// Warm containers per (function, compute node), inferred from execution records.
    pub warm: WarmTable,
    /// Admission places each tenant holds on each node.
    pub shares: super::holds::NodeShares,
    /// Every reservation held, per node: what each report is reconciled with.
    pub held: super::holds::HeldTable,
}

impl Inner {
    /// The function `name` of `tenant`.
    pub fn function(&self, tenant: TenantId, name: &str) -> Result<&FunctionEntry, ApiError> {
        self.catalog
            .function_by_name(tenant, name)
            .and_then(|spec| self.functions.get(&spec.id))
            .ok_or_else(|| ApiError::UnknownFunction {
                tenant,
                name: name.chars().take(80).collect(),
            })
    }

    pub fn node_name(&self, id: u32) -> String {
        self.catalog
            .node(NodeId(id))
            .map_or_else(|| format!("node-{id}"), |n| n.name.clone())
    }

    /// Copies liveness into the view: a node is placeable only while it is heard from.
    pub fn refresh_alive(&mut self, now_us: u64) {
        for i in 0..self.view.len() {
            let id = NodeId(i as u32);
            let alive = self.liveness.is_alive(id, now_us);
            if let Some(node) = self.view.node_mut(id) {
                node.alive = alive;
            }
        }
    }

    /// Alive compute nodes where `function` has a warm container now: the placement request's
    /// `warm` list.
    pub fn warm_nodes(&mut self, function: FunctionId, now_us: u64) -> Vec<NodeId> {
        self.warm.expire(now_us);
        let view = &self.view;
        self.warm
            .warm_nodes(function, now_us)
            .into_iter()
            .filter(|n| {
                view.node(*n)
                    .is_some_and(|v| v.alive && v.role == NodeRole::Compute)
            })
            .collect()
    }

    /// An invocation of `function` ran on `node` as `exec` reports, answered at `now_us`: on a
    /// compute node its container stays warm for the node's keep-alive window from the run's
    /// start.
    pub fn note_execution(
        &mut self,
        node: NodeId,
        function: FunctionId,
        exec: &sandstorm_proto::v1::ExecutionRecord,
        now_us: u64,
    ) {
        if exec.tier == i32::from(sandstorm_proto::v1::Tier::Compute) {
            let ran_us = exec.start_us.saturating_add(exec.exec_us);
            self.warm
                .used(function, node, now_us.saturating_sub(ran_us));
            self.calibrate_round_trip(node, exec);
        }
    }

    /// A compute run's data calls measure what a remote access really costs here: each one
    /// waited for a round trip plus the storage node's dispatch. Their mean, less the dispatch,
    /// calibrates the cost model's round trip (which nothing else measures in a live cluster).
    /// One sample moves the estimate at most [`ROUND_TRIP_STEP`]-fold: a run whose first call
    /// also dialled the storage node must not make remote data look 1,000x dearer.
    fn calibrate_round_trip(&mut self, node: NodeId, exec: &sandstorm_proto::v1::ExecutionRecord) {
        let Some(rtt) = round_trip_sample(exec, &self.calibration.params_of(node)) else {
            return;
        };
        self.calibration.observe(
            node,
            sandstorm_cost_model::SampleKind::RoundTrip,
            rtt,
            &mut self.placer,
        );
    }

    /// The placer for a request restricted to `tier` (`pb::Tier` as sent; anything but storage or
    /// compute means either): the configured one, or the same core and tunables with the policy
    /// that only allows that tier, so the decision still costs and records every candidate.
    pub fn placer_for(&self, tier: i32) -> Placer {
        use sandstorm_proto::v1::Tier;
        let policy = match Tier::try_from(tier) {
            Ok(Tier::Storage) => Policy::AlwaysStorage,
            Ok(Tier::Compute) => Policy::AlwaysCompute,
            _ => return self.placer.clone(),
        };
        self.placer.with_policy(policy)
    }

    /// The storage nodes on the key ring `owners` with their addresses, in node-id order: what
    /// a compute node routes its functions' data calls with.
    pub fn storage_addresses(
        &self,
        owners: &sandstorm_naming::ring::KeyRing,
    ) -> Vec<sandstorm_proto::v1::StorageNodeAddress> {
        owners
            .nodes()
            .iter()
            .filter_map(|id| {
                let entry = self.nodes.get(id.0 as usize)?;
                Some(sandstorm_proto::v1::StorageNodeAddress {
                    node_id: id.0,
                    name: self.node_name(id.0),
                    address: entry.address.clone(),
                })
            })
            .collect()
    }

    /// Adds a node to the catalog and the view (the key ring changes only by
    /// [`super::rebalance`]).
    pub fn add_node(
        &mut self,
        name: &str,
        role: NodeRole,
        cores: u32,
        memory_mb: u64,
        entry: NodeEntry,
    ) -> Result<NodeId, ApiError> {
        let id = self
            .catalog
            .add_node(name, role, cores, memory_mb)
            .map_err(|e| ApiError::InvalidArgument(e.to_string()))?;
        let mut nodes = self.view.nodes().to_vec();
        let mut view = NodeView::new(id, role, cores, memory_mb);
        view.alive = false;
        nodes.push(view);
        self.view = ClusterView::new(nodes);
        self.nodes.push(entry);
        Ok(id)
    }
}

/// The round trip a compute run's data calls measured (see [`Inner::calibrate_round_trip`]):
/// their mean wait less the storage node's dispatch, at most [`ROUND_TRIP_STEP`] times the
/// current estimate; `None` for a run without data calls or whose calls took no longer than
/// the dispatch.
fn round_trip_sample(
    exec: &sandstorm_proto::v1::ExecutionRecord,
    params: &sandstorm_cost_model::CostParams,
) -> Option<f64> {
    if exec.data_calls == 0 || exec.data_wait_us == 0 {
        return None;
    }
    let per_call = exec.data_wait_us as f64 / exec.data_calls as f64;
    let rtt = (per_call - params.dispatch_us).min(ROUND_TRIP_STEP * params.rtt_us.max(1.0));
    (rtt > 0.0).then_some(rtt)
}

/// The peer a node of `role` named `name` is: what its certificate must say.
pub fn node_peer(role: NodeRole, name: &str) -> Result<sandstorm_identity::Peer, ApiError> {
    let role = match role {
        NodeRole::Storage => sandstorm_identity::Role::Storage,
        NodeRole::Compute => sandstorm_identity::Role::Compute,
    };
    sandstorm_identity::Peer::new(role, name)
        .map_err(|e| ApiError::InvalidArgument(format!("node {name}: {e}")))
}

/// What the scheduler talks to a node through.
#[derive(Debug)]
pub struct NodeLinks {
    pub agent: NodeAgentClient<Channel>,
    pub kv: KeyValueClient<Channel>,
    pub handoff: HandoffClient<Channel>,
    pub executor: Arc<Executor>,
}

/// `https://host:port` for a node address given as `host:port`, `http://host:port` or
/// `https://host:port`: every link to an agent is mutual TLS, whatever scheme it was written
/// with.
/// Channels to `node` at `address`, over mutual TLS with the scheduler's `credentials` (the
/// node's certificate must name it), connected lazily (the first call dials; a broken connection
/// is re-dialled by the channel itself).
pub fn node_channels(
    node: &sandstorm_identity::Peer,
    address: &str,
    credentials: &sandstorm_identity::Credentials,
    connect_timeout: Duration,
) -> Result<NodeLinks, ApiError> {
    let channel = credentials
        .endpoint(node, address)
        .map_err(|e| ApiError::InvalidArgument(format!("node {node}: {e}")))?
        .connect_timeout(connect_timeout)
        .connect_lazy();
    let max = 64 << 20;
    let agent = NodeAgentClient::new(channel.clone())
        .max_decoding_message_size(max)
        .max_encoding_message_size(max);
    Ok(NodeLinks {
        executor: Arc::new(Executor::new(agent.clone())),
        agent,
        kv: KeyValueClient::new(channel.clone())
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
        handoff: HandoffClient::new(channel)
            .max_decoding_message_size(max)
            .max_encoding_message_size(max),
    })
}

/// The scheduler: configuration, store, state, async results.
#[derive(Debug)]
pub struct Scheduler {
    pub config: SchedulerConfig,
    pub store: Store,
    inner: Mutex<Inner>,
    history: Mutex<History>,
    tenants: Mutex<TenantBook>,
    ring: Mutex<RingState>,
    plan: Mutex<Option<Arc<PlanReport>>>,
    started: Instant,
    next_invocation: AtomicU64,
    pub results: Results,
    /// Where finished decisions and node statistics go for the dashboard.
    pub dashboard: Arc<super::hub::Hub>,
    /// The cluster CA, the scheduler's certificate, join tokens and name bindings.
    pub membership: super::membership::Membership,
    /// Calls each tenant has in flight: a narrow lock of its own, taken once per call.
    pub(super) tenant_slots: Arc<super::holds::TenantSlots>,
    /// Bumped at every switch of key ownership; writers held back by a sealed move wait on it.
    pub ring_version: tokio::sync::watch::Sender<u64>,
    /// Wakes the rebalancer (a storage node registered, a drain was asked for).
    pub rebalance_wake: tokio::sync::Notify,
}

impl Scheduler {
    /// The scheduler over what `store` holds. Must run inside a tokio runtime (node channels).
    pub fn new(
        config: SchedulerConfig,
        store: Store,
        loaded: Loaded,
        admin_hash: TokenHash,
        membership: super::membership::Membership,
    ) -> Result<Arc<Self>, ApiError> {
        let mut inner = Inner {
            catalog: Catalog::new(),
            functions: HashMap::new(),
            nodes: Vec::new(),
            view: ClusterView::default(),
            liveness: Liveness::new(
                u64::try_from(config.node_timeout.as_micros()).unwrap_or(u64::MAX),
            ),
            calibration: Calibration::new(config.placer.params),
            placer: Placer::new(config.policy, config.placer),
            // Orders numbered from the Unix time in microseconds: above any an earlier
            // scheduler process sent.
            warm: WarmTable::with_policy(
                config.keep_alive,
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
            ),
            shares: super::holds::NodeShares::default(),
            held: super::holds::HeldTable::default(),
        };
        let mut tenants = TenantBook::new(admin_hash);
        let slots = super::holds::TenantSlots::default();
        for t in loaded.tenants {
            let id = inner
                .catalog
                .add_tenant(t.name.clone())
                .map_err(|e| ApiError::InvalidArgument(format!("stored tenant {}: {e}", t.name)))?;
            if id.0 != t.id {
                return Err(ApiError::InvalidArgument(format!(
                    "stored tenant {} has id {} but loads as {id}: the store is inconsistent",
                    t.name, t.id
                )));
            }
            tenants.add(t.token_sha256, t.quotas);
            slots.set_limit(id, Quotas::resolve(&t.quotas).max_concurrent);
        }
        for f in loaded.functions {
            let tenant = TenantId(f.tenant);
            let id = inner
                .catalog
                .add_function(
                    tenant,
                    sandstorm_naming::AppId(0),
                    f.name.clone(),
                    f.limits.memory_mb.max(1),
                )
                .map_err(|e| {
                    ApiError::InvalidArgument(format!("stored function {}: {e}", f.name))
                })?;
            let code = FunctionCode::from_stored(f.module, f.command);
            inner.functions.insert(
                id,
                FunctionEntry {
                    id,
                    tenant,
                    name: f.name,
                    limits: f.limits,
                    sha256: code.sha256(),
                    code,
                },
            );
        }
        for n in loaded.nodes {
            let role = if n.role == "compute" {
                NodeRole::Compute
            } else {
                NodeRole::Storage
            };
            let peer = node_peer(role, &n.name)?;
            let NodeLinks {
                agent,
                kv,
                handoff,
                executor,
            } = node_channels(
                &peer,
                &n.address,
                &membership.credentials,
                config.connect_timeout,
            )?;
            let entry = NodeEntry {
                address: n.address,
                agent,
                kv,
                handoff,
                executor,
                session: 0,
                incarnation: 0,
                stats_task: None,
                last: None,
                quotas_pushed: 0,
                stale_limits: Vec::new(),
            };
            inner.add_node(&n.name, role, n.cores, n.memory_mb, entry)?;
        }
        let ring_record = loaded.ring.unwrap_or_else(|| RingRecord {
            // A store from before the ring was recorded: every storage node was on it.
            members: inner
                .catalog
                .nodes()
                .iter()
                .filter(|n| n.role == NodeRole::Storage)
                .map(|n| n.id.0)
                .collect(),
            ..RingRecord::default()
        });
        let ring = RingState::new(
            ring_record,
            sandstorm_naming::ring::KeyRing::default().vnodes_per_node(),
        );
        let unix_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(1));
        Ok(Arc::new(Self {
            config,
            store,
            inner: Mutex::new(inner),
            history: Mutex::new(History {
                profiler: Profiler::new(PRIOR_WORKLOAD),
                data_homes: DataHomes::default(),
            }),
            tenants: Mutex::new(tenants),
            ring: Mutex::new(ring),
            plan: Mutex::new(None),
            started: Instant::now(),
            // Ids from the start time onwards: distinct across restarts, so a stale id from a
            // previous run never names a new invocation.
            next_invocation: AtomicU64::new(unix_us),
            results: Results::default(),
            dashboard: Arc::default(),
            membership,
            tenant_slots: Arc::new(slots),
            ring_version: tokio::sync::watch::Sender::new(0),
            rebalance_wake: tokio::sync::Notify::new(),
        }))
    }

    /// The cluster lock (see the module docs for what it guards and the order of locks).
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        debug_assert_eq!(
            LEAVES_HELD.get(),
            0,
            "the cluster lock taken while holding a leaf lock (tenants, ring or plan)"
        );
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What each function did: its profile and its data's homes (a leaf lock).
    pub fn history(&self) -> Leaf<'_, History> {
        Leaf::take(&self.history)
    }

    /// The tenants' tokens and quota settings (a leaf lock).
    pub fn tenants(&self) -> Leaf<'_, TenantBook> {
        Leaf::take(&self.tenants)
    }

    /// The key ring and its membership (a leaf lock).
    pub fn ring(&self) -> Leaf<'_, RingState> {
        Leaf::take(&self.ring)
    }

    /// A snapshot of who owns each key now; holds no lock.
    pub fn key_owners(&self) -> Arc<sandstorm_naming::ring::KeyRing> {
        self.ring().owners()
    }

    /// The re-provisioner's latest round (a leaf lock; [`Scheduler::plan`] reads it).
    pub(super) fn plan_slot(&self) -> Leaf<'_, Option<Arc<PlanReport>>> {
        Leaf::take(&self.plan)
    }

    /// Microseconds since the scheduler started (its clock for liveness and profiles).
    pub fn now_us(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    pub fn next_invocation_id(&self) -> u64 {
        self.next_invocation.fetch_add(1, Ordering::Relaxed)
    }

    /// Checks a call's token.
    pub fn authenticate(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Caller, ApiError> {
        let presented = auth::presented(metadata)?;
        self.tenants().authenticate(presented)
    }
}

thread_local! {
    /// Leaf locks this thread holds: at most one, and none when it takes the cluster lock.
    static LEAVES_HELD: Cell<u32> = const { Cell::new(0) };
}

/// A guard of one of the leaf locks (see the module docs). Not `Send`, like the guard it wraps,
/// so it is released on the thread that took it.
#[derive(Debug)]
pub struct Leaf<'a, T> {
    guard: MutexGuard<'a, T>,
}

impl<'a, T> Leaf<'a, T> {
    fn take(lock: &'a Mutex<T>) -> Self {
        debug_assert_eq!(
            LEAVES_HELD.get(),
            0,
            "a leaf lock taken while holding another"
        );
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        LEAVES_HELD.set(LEAVES_HELD.get() + 1);
        Self { guard }
    }
}

impl<T> Drop for Leaf<'_, T> {
    fn drop(&mut self) {
        LEAVES_HELD.set(LEAVES_HELD.get().saturating_sub(1));
    }
}

impl<T> Deref for Leaf<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.guard
    }
}

impl<T> DerefMut for Leaf<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.guard
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sandstorm_cost_model::CostParams;
    use sandstorm_proto::v1::ExecutionRecord;

    #[test]
    fn leaf_locks_one_after_another_leave_none_held() {
        let (a, b) = (Mutex::new(1), Mutex::new(2));
        *Leaf::take(&a) += 1;
        *Leaf::take(&b) += 1;
        let got_a = *Leaf::take(&a);
        let got_b = *Leaf::take(&b);
        assert_eq!((got_a, got_b), (2, 3));
        assert_eq!(LEAVES_HELD.get(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "a leaf lock taken while holding another")]
    fn a_leaf_lock_inside_another_is_caught() {
        let (a, b) = (Mutex::new(1), Mutex::new(2));
        let _a = Leaf::take(&a);
        let _b = Leaf::take(&b);
    }

    #[test]
    fn a_compute_runs_data_waits_sample_the_round_trip_within_a_bounded_step() {
        let params = CostParams {
            dispatch_us: 10.0,
            rtt_us: 100.0,
            ..CostParams::default()
        };
        let run = |data_calls: u64, data_wait_us: u64| ExecutionRecord {
            data_calls,
            data_wait_us,
            ..Default::default()
        };
        // 4 calls waited 1,000 us: 250 us each, of which 10 were the node's dispatch.
        assert_eq!(round_trip_sample(&run(4, 1_000), &params), Some(240.0));
        // A first call that also dialled the node: at most 4x the estimate.
        assert_eq!(round_trip_sample(&run(1, 50_000), &params), Some(400.0));
        // Nothing to learn: no calls, no wait, or no longer than the dispatch.
        assert_eq!(round_trip_sample(&run(0, 500), &params), None);
        assert_eq!(round_trip_sample(&run(3, 0), &params), None);
        assert_eq!(round_trip_sample(&run(2, 20), &params), None);
    }
}

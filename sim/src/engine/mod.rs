//! The discrete-event engine: one run of one (placement policy, keep-alive policy, load point).
//!
//! Arrivals stream from the trace in time order into one event queue with everything else (a
//! radix heap keyed by time; equal times pop in a fixed order), so a run is a pure function of
//! its inputs and seed.
//!
//! For each arrival the engine builds a [`PlacementRequest`] exactly as the live scheduler does
//! (workload from the online profiler, data location from the key ring, warm contexts from
//! naming) and asks the scheduler's [`Placer`] where it goes. Then it simulates what that node
//! does:
//! - **compute node**: reuse an idle warm context, or start one (assembled from a pool part
//!   when one is ready, otherwise built from nothing); a context runs `concurrency` invocations at
//!   once and holds its memory while it lives; idle contexts are kept, pre-warmed or destroyed as
//!   the keep-alive policy says, and evicted (policy's victim) when memory is needed;
//! - **storage node**: a pooled Wasm instance per invocation, no keep-alive;
//! - **cores**: each node runs at most `cores` invocations at once, the rest wait in FIFO order;
//! - **data**: an invocation's true cost comes from the same cost model (queue 0) with its true
//!   workload; a compute-tier invocation also puts its remote accesses' dispatch CPU on the
//!   storage node holding the data, as work that queues for that node's cores, and waits that
//!   node's queueing delay once per dependent round.
//!
//! The profiler learns each function's workload from completed invocations, so the placement
//! sees what a live scheduler would: a default for functions never seen, then measurements.

mod contexts;
mod cpu;
mod metrics;
mod queue;

use std::cmp::Reverse;
use std::collections::VecDeque;

use radix_heap::RadixHeapMap;
use rustc_hash::FxHashMap;
use std::time::Instant;

use sandstorm_cost_model::{
    Candidate, CostBreakdown, CostParams, StartKind, Tier, Workload, estimate,
};
use sandstorm_naming::ring::{DEFAULT_VNODES_PER_NODE, KeyRing};
use sandstorm_naming::warm::{ContextId, WarmContexts};
use sandstorm_naming::{AppId, FunctionId, InvocationId, NodeId, NodeRole, TenantId};
use sandstorm_placement::keepalive::{IdleReason, KeepAlive};
use sandstorm_placement::{
    Choice, ClusterView, NodeView, PlacementRequest, Placer, PlacerConfig, Policy,
};
use sandstorm_profiler::{Observation, Profiler};

use crate::report::RunResult;
use crate::trace::Trace;
pub use cpu::CpuModel;
use cpu::{JobId, Next, NodeCpu};
use metrics::Metrics;
use queue::Waiting;

/// How many of an app's contexts with room are looked at per arrival, and how many distinct
/// nodes among them are offered to the placement as warm candidates: like the sampled scan of
/// cold nodes, a few warm choices are as good as all of them for a popular app whose contexts
/// are spread over the cluster, and keep placement cost flat.
const MAX_WARM_SCAN: usize = 8;
const MAX_WARM_NODES: usize = 2;

/// The core time, us, an invocation costing `real` holds on the node it runs on: dispatch, start
/// and compute (and local data accesses on a storage node). What it waits on remote data (round
/// trips, wire time, the storage node's dispatch of each access) holds no core there. The engine
/// holds a core for the whole microseconds of this (truncated); the offline bound charges the same.
pub fn held_core_us(params: &CostParams, real: &CostBreakdown) -> f64 {
    let remote_dispatch_us = real.dispatch_us - params.dispatch_us;
    let waits_us = real.network_rtt_us - params.rtt_us + real.bytes_us + remote_dispatch_us;
    (real.latency_us() - params.rtt_us - waits_us).max(0.0)
}

/// The storage-node core time, us, of one dependent round of remote data requests of an
/// invocation costing `real` with `rounds` rounds (the engine's job per round).
pub fn round_work_us(real: &CostBreakdown, rounds: u32) -> u64 {
    (real.storage_cpu_us / f64::from(rounds.max(1))).round() as u64
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub result: RunResult,
    /// Mean objective per completed invocation, priced like the offline bound.
    pub mean_objective: f64,
}

/// The shape of the simulated cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterShape {
    pub storage_nodes: u32,
    pub storage_cores: u32,
    pub compute_nodes: u32,
    pub compute_cores: u32,
    pub compute_memory_mb: u64,
    /// How compute nodes share their cores (storage nodes are worker pools: always FIFO).
    pub compute_cpu: CpuModel,
}

/// Which idle context of an app a node reuses when several are idle there.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum ReuseOrder {
    /// The most recently used one (naming's order), as OpenWhisk's container pool does: the
    /// others stay idle and expire, so fewer contexts are kept warm.
    #[default]
    MostRecent,
    /// The first in an insertion-ordered set that contexts join when they are deployed or fall
    /// idle and leave by swap-removal when they get busy or are destroyed: the order of the
    /// DSLab FaaS simulator's container manager, kept so its keep-alive figures can be
    /// reproduced (its hybrid-policy cold starts depend on it: most-recent gives 22% more).
    FirstInSet,
}

/// What one invocation of a function really does (the simulator's ground truth; the scheduler
/// only sees what the profiler learns of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FunctionData {
    pub accesses: u32,
    pub rounds: u32,
    pub bytes: u64,
    /// Native compute time; `None`: the trace's duration is the compute time.
    pub compute_us: Option<u64>,
}

/// Everything one run needs besides the trace.
#[derive(Debug)]
pub struct RunConfig<'a> {
    pub cluster: ClusterShape,
    pub placer: PlacerConfig,
    pub policy: Policy,
    pub keep_alive: Box<dyn KeepAlive>,
    /// Ground truth per function, indexed by `FunctionId.0`; missing entries mean no data.
    pub data: &'a [FunctionData],
    /// Contexts are shared by the functions of an app (true) or per function (false).
    pub contexts_per_app: bool,
    /// Invocations one context runs at once.
    pub concurrency: u32,
    /// Which idle context a node reuses.
    pub reuse: ReuseOrder,
    /// Pool part sets each compute node keeps ready, and how long one takes to refill.
    pub pool_per_node: u32,
    pub pool_refill_us: u64,
    /// Goodput counts completions within `max(slo_latency_us, slo_slowdown x unloaded latency)`.
    pub slo_latency_us: f64,
    pub slo_slowdown: f64,
    pub load: f64,
    pub seed: u64,
    /// An invocation no node can take waits at a host (see [`queue`]) instead of being rejected.
    pub queue: bool,
}

#[derive(Debug, Clone, Copy)]
enum Event {
    /// The next invocation of the trace arrives.
    Arrival {
        function: FunctionId,
        duration_us: u64,
    },
    /// A job that started on a FIFO node's core finished.
    JobDone(NodeId, JobId),
    /// A processor-shared node's next job may have finished.
    NodeWake(NodeId),
    /// A context's keep-alive timer: destroy it if it is idle past its deadline, re-arm if the
    /// deadline moved (it was used and fell idle again since), forget it if it is busy.
    Expire(ContextId),
    /// Start a pre-warmed context of an app, unless the app was invoked since.
    Prewarm {
        app: AppId,
        node: NodeId,
        memory_mb: u32,
        arrivals_then: u64,
    },
    /// A pre-warmed context finished starting.
    PrewarmReady(ContextId),
    /// A compute node's pool got one part set back.
    PoolRefill(NodeId),
    /// A processor-shared node's invocation finished waiting for its container to start and
    /// joins the cores.
    Begin(NodeId, u32),
    /// A remote round's reply reached the invocation.
    RoundReturned(u32),
}

/// An invocation placed and not finished.
#[derive(Debug, Clone, Copy)]
struct InFlight {
    arrival_us: u64,
    function: FunctionId,
    app: AppId,
    node: NodeId,
    context: Option<ContextId>,
    /// Time it holds a core (start + execution), us.
    hold_us: u64,
    /// Latency it would have unloaded and warm at its tier, us (for slowdown and goodput).
    unloaded_us: f64,
    cpu_us: u64,
    started_us: u64,
    /// Dependent rounds of remote data accesses still to do after its CPU part.
    remote: Option<RemoteRounds>,
    /// The work its reservation added to the node's backlog, given back when it completes.
    reserved_work_us: f64,
}

/// The remote-data part of an invocation whose data is not on its node: `left` rounds, each a
/// request served by the storage node `home` (a job of `work_us` on its cores, queueing behind
/// everything else there) plus the network's `delay_us` (round trip and wire time).
#[derive(Debug, Clone, Copy)]
struct RemoteRounds {
    home: NodeId,
    left: u32,
    work_us: u64,
    delay_us: u64,
}

/// Work for a node's cores.
#[derive(Debug, Clone, Copy)]
enum Job {
    /// An invocation's own CPU part (its slot in `inflight`).
    Invocation(u32),
    /// One round of an invocation's remote data requests, served by the storage node holding
    /// the data.
    Round(u32),
}

/// Job ids with this bit set are remote rounds; the low half is the invocation's slot.
const ROUND_JOB: u64 = 1 << 63;

impl Job {
    fn id(self) -> JobId {
        match self {
            Job::Invocation(slot) => u64::from(slot),
            Job::Round(slot) => ROUND_JOB | u64::from(slot),
        }
    }

    fn from_id(id: JobId) -> Self {
        let slot = id as u32;
        if id & ROUND_JOB != 0 {
            Job::Round(slot)
        } else {
            Job::Invocation(slot)
        }
    }
}

/// Sim-side facts about a context that naming does not keep.
#[derive(Debug, Clone, Copy, Default)]
struct ContextExtra {
    first_idle_us: Option<u64>,
    /// A pre-warmed context is not usable before this time.
    ready_us: u64,
    /// While idle: when the keep-alive policy lets it go (`u64::MAX`: not before eviction).
    expires_us: u64,
    /// When its pending `Expire` event fires, if one is pending. At most one per context, so a
    /// context used a thousand times within its keep-alive costs one timer, not a thousand.
    timer_us: Option<u64>,
}

/// The state of one run.
struct Engine<'a> {
    trace: &'a Trace,
    cfg: RunConfig<'a>,
    placer: Placer,
    view: ClusterView,
    /// Each node's cores, indexed by `NodeId.0`.
    cpus: Vec<NodeCpu>,
    warm: WarmContexts,
    extra: Vec<ContextExtra>,
    profiler: Profiler,
    inflight: Vec<InFlight>,
    free_slots: Vec<u32>,
    /// Pending events by time. Simulated time never goes back, so a radix heap (O(1) push,
    /// cache-friendly pop) replaces a binary heap; events at the same microsecond pop in
    /// reverse order of scheduling, which is as deterministic as any other order.
    events: RadixHeapMap<Reverse<u64>, Event>,
    now: u64,
    app_arrivals: Vec<u64>,
    warm_nodes: Vec<NodeId>,
    finished_jobs: Vec<JobId>,
    ring: KeyRing,
    /// With [`ReuseOrder::FirstInSet`]: per (app, node), the set of contexts deployed or idle,
    /// in its order.
    free_order: FxHashMap<(AppId, NodeId), Vec<ContextId>>,
    /// With [`RunConfig::queue`]: per node, the invocations waiting there, in arrival order.
    queues: Vec<VecDeque<Waiting>>,
    metrics: Metrics,
}

/// Replay `trace` under `cfg`; `progress` is called now and then with the arrivals done so far.
pub fn run(trace: &Trace, cfg: RunConfig<'_>, progress: &mut dyn FnMut(u64)) -> RunOutcome {
    let wall = Instant::now();
    let mut engine = Engine::new(trace, cfg);
    let mut arrivals = trace.arrivals(engine.cfg.seed, engine.cfg.load);
    // Arrivals join the event queue one at a time: the next is scheduled when one is handled.
    if let Some(a) = arrivals.next() {
        engine.schedule(
            a.at_us,
            Event::Arrival {
                function: a.function,
                duration_us: a.duration_us,
            },
        );
    }
    let mut done = 0u64;
    while let Some((Reverse(at), event)) = engine.events.pop() {
        engine.now = engine.now.max(at);
        if let Event::Arrival {
            function,
            duration_us,
        } = event
        {
            engine.arrive(function, duration_us);
            if let Some(a) = arrivals.next() {
                let arrival = Event::Arrival {
                    function: a.function,
                    duration_us: a.duration_us,
                };
                engine.schedule(a.at_us, arrival);
            }
            done += 1;
            if done.is_multiple_of(65_536) {
                progress(done);
            }
        } else {
            engine.handle(event);
        }
    }
    progress(done);
    engine.metrics.rejected += engine.still_waiting();
    let span_s = trace.span_us as f64 / 1e6;
    let policy = engine.cfg.policy.name().to_owned();
    let keep_alive = engine.cfg.keep_alive.name();
    let load = engine.cfg.load;
    let result = engine.metrics.finish(
        policy,
        keep_alive,
        load,
        trace.offered_per_s(load),
        span_s,
        wall.elapsed().as_secs_f64(),
    );
    RunOutcome {
        result,
        mean_objective: engine.metrics.mean_objective(),
    }
}

impl<'a> Engine<'a> {
    fn new(trace: &'a Trace, cfg: RunConfig<'a>) -> Self {
        let shape = cfg.cluster;
        let mut views = Vec::new();
        for i in 0..shape.storage_nodes + shape.compute_nodes {
            let storage = i < shape.storage_nodes;
            let (role, cores, memory) = if storage {
                (NodeRole::Storage, shape.storage_cores, 0)
            } else {
                (
                    NodeRole::Compute,
                    shape.compute_cores,
                    shape.compute_memory_mb,
                )
            };
            let mut view = NodeView::new(NodeId(i), role, cores, memory);
            if !storage {
                view.pool_ready = cfg.pool_per_node;
            }
            views.push(view);
        }
        let nodes = views
            .iter()
            .map(|v| {
                let model = if v.role == NodeRole::Compute {
                    shape.compute_cpu
                } else {
                    CpuModel::Fifo
                };
                NodeCpu::new(model, v.cores)
            })
            .collect();
        let default_workload = Workload {
            compute_us: 1_000.0,
            ..Workload::default()
        };
        Self {
            trace,
            placer: Placer::new(cfg.policy, cfg.placer),
            view: ClusterView::new(views),
            cpus: nodes,
            warm: WarmContexts::new(cfg.concurrency.max(1)),
            extra: Vec::new(),
            profiler: Profiler::new(default_workload),
            inflight: Vec::new(),
            free_slots: Vec::new(),
            events: RadixHeapMap::new(),
            now: 0,
            app_arrivals: vec![0; trace.apps.len().max(trace.functions.len())],
            warm_nodes: Vec::new(),
            finished_jobs: Vec::new(),
            free_order: FxHashMap::default(),
            queues: Vec::new(),
            ring: KeyRing::with_nodes(
                DEFAULT_VNODES_PER_NODE,
                (0..shape.storage_nodes).map(NodeId),
            ),
            metrics: Metrics::new(cfg.slo_latency_us, cfg.slo_slowdown, cfg.placer.weights),
            cfg,
        }
    }

    fn schedule(&mut self, at: u64, event: Event) {
        // Never before the present: the radix heap only takes times at or after the last popped.
        self.events.push(Reverse(at.max(self.now)), event);
    }

    fn handle(&mut self, event: Event) {
        self.metrics.events += 1;
        match event {
            Event::Arrival {
                function,
                duration_us,
            } => self.arrive(function, duration_us),
            Event::JobDone(node, job) => {
                self.job_done(node, job);
                let next = self.cpus[node.0 as usize].fifo_finished();
                self.follow(node, next);
            }
            Event::NodeWake(node) => {
                let mut done = std::mem::take(&mut self.finished_jobs);
                let next = self.cpus[node.0 as usize].shared_wake(self.now, &mut done);
                for &job in &done {
                    self.job_done(node, job);
                }
                done.clear();
                self.finished_jobs = done;
                self.follow(node, next);
            }
            Event::Expire(id) => self.expire(id),
            Event::Prewarm {
                app,
                node,
                memory_mb,
                arrivals_then,
            } => {
                if self.app_arrivals[app.0 as usize] == arrivals_then {
                    self.prewarm(app, node, memory_mb);
                }
            }
            Event::PrewarmReady(id) => {
                if let Some(ctx) = self.warm.get(id).filter(|c| c.in_flight == 0) {
                    let info = self.idle_info(ctx.id);
                    let action =
                        self.cfg
                            .keep_alive
                            .on_idle(&info, IdleReason::Prewarmed, self.now);
                    self.apply_idle_action(id, action);
                }
            }
            Event::Begin(node, slot) => {
                let f = self.inflight[slot as usize];
                if let Some(id) = f.context {
                    self.leave_set(f.app, node, id);
                }
                self.submit(node, Job::Invocation(slot))
            }
            Event::RoundReturned(slot) => self.next_round(slot),
            Event::PoolRefill(node) => {
                if let Some(v) = self.view.node_mut(node) {
                    v.pool_ready += 1;
                }
            }
        }
    }

    fn app_of(&self, function: FunctionId) -> AppId {
        if self.cfg.contexts_per_app {
            self.trace.functions[function.0 as usize].app
        } else {
            AppId(function.0)
        }
    }

    fn truth(&self, function: FunctionId, duration_us: u64) -> Workload {
        let d = self
            .cfg
            .data
            .get(function.0 as usize)
            .copied()
            .unwrap_or_default();
        Workload {
            compute_us: d.compute_us.unwrap_or(duration_us) as f64,
            accesses: f64::from(d.accesses),
            rounds: f64::from(d.rounds),
            bytes: d.bytes as f64,
        }
    }

    /// The storage node holding a function's data: the owner of its key on the consistent-hash
    /// ring of storage nodes (naming's ring, as the live scheduler uses).
    fn data_home(&self, function: FunctionId, truth: &Workload) -> Option<NodeId> {
        if truth.accesses <= 0.0 {
            return None;
        }
        let name = &self.trace.functions[function.0 as usize].name;
        self.ring.owner(TenantId(0), name.as_bytes())
    }

    fn arrive(&mut self, function: FunctionId, duration_us: u64) {
        let app = self.app_of(function);
        self.app_arrivals[app.0 as usize] += 1;
        self.metrics.invocations += 1;
        let invocation = InvocationId(self.metrics.invocations ^ self.cfg.seed.rotate_left(32));
        let truth = self.truth(function, duration_us);
        let home = self.data_home(function, &truth);
        let data = home.map(|n| [(n, 1.0)]);
        self.collect_warm_nodes(app);
        let memory_mb =
            self.trace.apps[self.trace.functions[function.0 as usize].app.0 as usize].memory_mb;
        let request = PlacementRequest {
            invocation,
            tenant: TenantId(0),
            function,
            app,
            workload: self.profiler.workload(function),
            memory_mb,
            data: data.as_ref().map_or(&[][..], |d| &d[..]),
            warm: &self.warm_nodes,
        };
        let Some(choice) = self.placer.place(&mut self.view, &request) else {
            let waiting = Waiting {
                function,
                duration_us,
                arrival_us: self.now,
            };
            if !(self.cfg.queue && self.enqueue(waiting, memory_mb)) {
                self.metrics.rejected += 1;
            }
            return;
        };
        let now = self.now;
        self.start_placed(function, app, &choice, &truth, home, memory_mb, now, false);
    }

    /// Fill `warm_nodes` with the nodes of the app's most recently used contexts with room:
    /// enough for the placement to see where warm capacity is without walking every context of
    /// a popular app. Policies defined by an order over all nodes (first-fit, hash-home) see
    /// every warm node.
    fn collect_warm_nodes(&mut self, app: AppId) {
        self.warm_nodes.clear();
        let (scan, keep) = if self.cfg.policy.samples() {
            (MAX_WARM_SCAN, MAX_WARM_NODES)
        } else {
            (usize::MAX, usize::MAX)
        };
        for ctx in self.warm.with_room_of(app).take(scan) {
            if !self.warm_nodes.contains(&ctx.node) {
                self.warm_nodes.push(ctx.node);
                if self.warm_nodes.len() == keep {
                    break;
                }
            }
        }
    }

    /// Run a placed invocation that arrived at `arrival_us`: get its context, work out what it
    /// really costs (the cost model with its true workload), and hand its CPU part to the node's
    /// cores. One that `queued` counts as a cold start whatever context it gets.
    #[allow(clippy::too_many_arguments)]
    fn start_placed(
        &mut self,
        function: FunctionId,
        app: AppId,
        choice: &Choice,
        truth: &Workload,
        home: Option<NodeId>,
        memory_mb: u32,
        arrival_us: u64,
        queued: bool,
    ) {
        let node = choice.node;
        let mut start = choice.start;
        let mut wait_us = 0;
        let mut context = None;
        if choice.tier == Tier::Compute {
            let (id, s, w) = self.obtain_context(app, node, start, memory_mb);
            (start, wait_us, context) = (s, w, Some(id));
        }
        let counted = if queued { StartKind::Cold } else { start };
        self.metrics.count_start(choice.tier, counted);
        let params = self.placer.config().params;
        let params = &params;
        let local = if Some(node) == home { 1.0 } else { 0.0 };
        let real = estimate(
            params,
            truth,
            &Candidate {
                tier: choice.tier,
                start,
                queue_us: 0.0,
                local_fraction: local,
            },
        );
        // Unloaded and warm: the same estimate without the start cost.
        let mut warm_cost = real;
        warm_cost.start_us = 0.0;
        if choice.tier == Tier::Storage {
            warm_cost.start_us = real.start_us; // a Wasm instance starts every time
        }
        // What waits on remote data (round trips, wire time, the storage node's dispatch) is
        // simulated round by round after the CPU part; only the CPU part holds this node's core.
        let remote = home
            .filter(|h| *h != node && truth.rounds > 0.0)
            .map(|home| {
                let rounds = truth.rounds as u32;
                RemoteRounds {
                    home,
                    left: rounds,
                    work_us: round_work_us(&real, rounds),
                    delay_us: ((real.network_rtt_us - params.rtt_us + real.bytes_us)
                        / f64::from(rounds))
                    .round() as u64,
                }
            });
        let mut hold_us = held_core_us(params, &real) as u64 + wait_us;
        // On a processor-shared node the container start is a wait before the invocation joins
        // the cores, not CPU shared with the others (DSLab FaaS models deployment the same way).
        let shared = matches!(self.cpus[node.0 as usize], NodeCpu::Shared(_));
        let start_delay_us = if shared {
            (real.start_us as u64 + wait_us).min(hold_us)
        } else {
            0
        };
        hold_us -= start_delay_us;
        self.metrics.add_cost(&real);
        let unloaded_us = warm_cost.latency_us();
        let cpu_us = truth.compute_us as u64;
        let slot = self.alloc(InFlight {
            arrival_us,
            function,
            app,
            node,
            context,
            hold_us,
            unloaded_us,
            cpu_us,
            started_us: 0,
            remote,
            reserved_work_us: choice.reservation.map_or(0.0, |r| r.work_us),
        });
        if let Some(ctx) = context {
            let info = self.idle_info(ctx);
            let start_cost = self.placer.config().params.container_cold_us;
            self.cfg.keep_alive.on_use(&info, start_cost);
        }
        if start_delay_us > 0 {
            self.schedule(
                self.now.saturating_add(start_delay_us),
                Event::Begin(node, slot),
            );
        } else {
            if let Some(id) = context {
                self.leave_set(app, node, id);
            }
            self.submit(node, Job::Invocation(slot));
        }
    }

    fn submit(&mut self, node: NodeId, job: Job) {
        let work_us = match job {
            Job::Invocation(slot) => {
                self.inflight[slot as usize].started_us = self.now;
                self.inflight[slot as usize].hold_us
            }
            Job::Round(slot) => {
                // Counted in the storage node's load while it waits, so placement sees it.
                let work_us = self.inflight[slot as usize].remote.map_or(0, |r| r.work_us);
                self.view.remote_request(node, work_us as f64);
                work_us
            }
        };
        let next = self.cpus[node.0 as usize].submit(job.id(), work_us, self.now);
        self.follow(node, next);
    }

    /// Schedule what a change to a node's cores asks for.
    fn follow(&mut self, node: NodeId, next: Next) {
        match next {
            Next::Nothing => {}
            Next::Started { job, ends_in_us } => {
                if let Job::Invocation(slot) = Job::from_id(job) {
                    self.inflight[slot as usize].started_us = self.now;
                }
                self.schedule(
                    self.now.saturating_add(ends_in_us),
                    Event::JobDone(node, job),
                );
            }
            Next::WakeAt { at_us } => self.schedule(at_us, Event::NodeWake(node)),
        }
    }

    fn job_done(&mut self, node: NodeId, job: JobId) {
        match Job::from_id(job) {
            Job::Invocation(slot) => self.next_round(slot),
            Job::Round(slot) => {
                let r = self.inflight[slot as usize].remote;
                self.view
                    .remote_request_done(node, r.map_or(0, |r| r.work_us) as f64);
                let delay = r.map_or(0, |r| r.delay_us);
                self.schedule(self.now.saturating_add(delay), Event::RoundReturned(slot));
            }
        }
    }

    /// The invocation's CPU part or one of its remote rounds is done: start the next round, or
    /// complete it.
    fn next_round(&mut self, slot: u32) {
        match &mut self.inflight[slot as usize].remote {
            Some(r) if r.left > 0 => {
                r.left -= 1;
                let home = r.home;
                self.submit(home, Job::Round(slot));
            }
            _ => self.finish(slot),
        }
    }

    fn finish(&mut self, slot: u32) {
        let f = self.inflight[slot as usize];
        self.free_slots.push(slot);
        let rtt = self.placer.config().params.rtt_us;
        let latency = (self.now - f.arrival_us) as f64 + rtt;
        self.metrics.complete(latency, f.unloaded_us + rtt);
        self.view.complete(f.node, f.reserved_work_us);
        self.profiler.record(
            f.function,
            &Observation {
                arrival_us: f.arrival_us,
                duration_us: self.now - f.started_us,
                cpu_us: f.cpu_us,
                accesses: self
                    .cfg
                    .data
                    .get(f.function.0 as usize)
                    .map_or(0, |d| d.accesses),
                rounds: self
                    .cfg
                    .data
                    .get(f.function.0 as usize)
                    .map_or(0, |d| d.rounds),
                bytes: self
                    .cfg
                    .data
                    .get(f.function.0 as usize)
                    .map_or(0, |d| d.bytes),
            },
        );
        self.cfg
            .keep_alive
            .on_finish(f.app, f.function, f.arrival_us, self.now);
        if let Some(id) = f.context {
            let _ = self.warm.release(id, self.now);
            if self.cfg.reuse == ReuseOrder::FirstInSet {
                self.free_order.entry((f.app, f.node)).or_default().push(id);
            }
            if let Some(ctx) = self.warm.get(id).filter(|c| c.in_flight == 0) {
                self.view.context_idle(f.node, ctx.memory_mb);
                let now = self.now;
                self.extra_mut(id).first_idle_us.get_or_insert(now);
                let info = self.idle_info(id);
                let action = self
                    .cfg
                    .keep_alive
                    .on_idle(&info, IdleReason::Finished, self.now);
                self.apply_idle_action(id, action);
            }
            if self.cfg.queue {
                self.dequeue(f.node);
            }
        }
    }

    fn alloc(&mut self, f: InFlight) -> u32 {
        match self.free_slots.pop() {
            Some(slot) => {
                self.inflight[slot as usize] = f;
                slot
            }
            None => {
                self.inflight.push(f);
                (self.inflight.len() - 1) as u32
            }
        }
    }
}

//! The placement core: Filter -> Cost -> Score -> Choose -> Reserve, for one invocation.
//!
//! Pure and synchronous, shared unchanged by the live scheduler and the simulator. For every node
//! of the [`ClusterView`] it
//! 1. **filters**: the node must be alive, of a role the policy allows, below its admission
//!    limit, and (compute nodes) have memory for a new context unless a warm one is idle there;
//!    every rejection is recorded with its reason;
//! 2. **costs** the candidate with `sandstorm-cost-model` (queueing from the view, start kind from
//!    warm contexts and pools, data locality from the request) and turns the breakdown into the
//!    weighted objective;
//! 3. lets the [`Policy`] **score** it (lower wins); equal scores are broken by a hash of the
//!    invocation id and the node id, so the same invocation on the same view always lands on the
//!    same node and decisions replay.
//!
//! [`Placer::place`] returns only the choice and allocates nothing (the simulator's hot path);
//! [`Placer::place_recorded`] runs the very same code and also returns a [`Decision`] that lists
//! every candidate's cost breakdown and why each one lost or was rejected.
//!
//! Beside it, the **keep-alive policies** ([`keepalive`]) decide how long an idle execution
//! context lives; the live compute nodes and the simulator run the same code.
//!
//! This crate does no I/O and has no clock: it depends on `cost-model`, `naming`, `profiler`
//! and `serde` only, so the simulator can use it without the scheduler service's gRPC, HTTP and
//! storage stack.

pub mod keepalive;
mod policy;
mod view;

use policy::ScoreInput;
pub use policy::{Policy, UnknownPolicy};
use sandstorm_cost_model::{
    Candidate, CostBreakdown, CostParams, StartKind, Tier, Weights, estimate,
};
use sandstorm_naming::{AppId, FunctionId, InvocationId, NodeId, NodeRole, TenantId};
use serde::{Deserialize, Serialize};
pub use view::{ClusterView, Held, NodeReport, NodeView, Reservation};

/// What the placement core needs to know about one invocation.
#[derive(Debug, Clone, Copy)]
pub struct PlacementRequest<'a> {
    pub invocation: InvocationId,
    pub tenant: TenantId,
    pub function: FunctionId,
    /// The unit that shares warm contexts (the app, or the function itself).
    pub app: AppId,
    /// What the profiler expects one invocation to do.
    pub workload: sandstorm_cost_model::Workload,
    /// Memory a new execution context needs on a compute node.
    pub memory_mb: u32,
    /// Storage nodes holding the invocation's data, with the fraction each holds.
    pub data: &'a [(NodeId, f64)],
    /// Nodes where an idle warm context of `app` is ready now.
    pub warm: &'a [NodeId],
}

/// Tunables of the placement core.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PlacerConfig {
    pub params: CostParams,
    pub weights: Weights,
    /// Admission limit: a node takes at most `cores x (1 + max_queue_per_core)` invocations at
    /// once (running plus waiting). Default 8 waiting per core; `f64::INFINITY`: no limit.
    pub max_queue_per_core: f64,
    /// `data-affinity` backs off a storage node busier than this (fraction of cores). Default 0.8.
    pub busy_threshold: f64,
    /// How many feasible nodes beyond the warm and data-holding ones are scored (0: all of them).
    /// Default 8.
    pub sample: u32,
}

impl Default for PlacerConfig {
    fn default() -> Self {
        Self {
            params: CostParams::default(),
            weights: Weights::default(),
            max_queue_per_core: 8.0,
            busy_threshold: 0.8,
            sample: 8,
        }
    }
}

/// Why a node could not take the invocation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Rejection {
    /// Liveness declared the node dead.
    Dead,
    /// The policy does not place on this role.
    WrongRole { role: NodeRole },
    /// Not enough memory for a new execution context, even evicting every idle one, and no warm
    /// one is idle there. `free_mb` counts reclaimable memory.
    NoMemory { needed_mb: u32, free_mb: u64 },
    /// The node already holds as many invocations as its admission limit.
    Saturated { load: u32, limit: u32 },
}

/// What became of a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "verdict", rename_all = "kebab-case")]
pub enum Verdict {
    Chosen,
    /// Passed the filters but scored worse than the chosen node (or tied and lost the seeded
    /// tie-break).
    Lost,
    Rejected(Rejection),
}

/// One candidate of a recorded decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateRecord {
    pub node: NodeId,
    pub role: NodeRole,
    pub start: StartKind,
    pub cost: CostBreakdown,
    pub objective: f64,
    /// The policy's score (lower wins); for `cost-aware` it is the objective.
    pub score: f64,
    pub verdict: Verdict,
}

/// The placement chosen for an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub node: NodeId,
    pub tier: Tier,
    pub start: StartKind,
    /// The estimate the choice was made on.
    pub cost: CostBreakdown,
    pub objective: f64,
    /// What to hold on the node; already applied to the view by [`Placer::place`].
    #[serde(skip)]
    pub reservation: Option<Reservation>,
}

/// A placement and why: every candidate with its cost breakdown and verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub invocation: InvocationId,
    pub policy: Policy,
    /// `None` when every node was rejected.
    pub chosen: Option<Choice>,
    /// Every node that was filtered and scored.
    pub candidates: Vec<CandidateRecord>,
    /// Nodes not scored: beyond the sample (`PlacerConfig::sample`), or pruned because no node
    /// without a warm context or the data could beat the chosen one.
    pub unscored: u32,
}

/// Places invocations with one policy.
#[derive(Debug, Clone)]
pub struct Placer {
    config: PlacerConfig,
    policy: Policy,
    /// Cost parameters of single nodes, by `NodeId.0`, where they differ from `config.params`
    /// (the live scheduler calibrates each node from its own measurements; the simulator sets
    /// none). A candidate is costed with its node's.
    node_params: Vec<Option<CostParams>>,
}

/// A candidate that passed the filters, as the scoring loop keeps it.
#[derive(Clone, Copy)]
struct Costed {
    index: usize,
    start: StartKind,
    cost: CostBreakdown,
    objective: f64,
    score: f64,
}

impl Placer {
    pub fn new(policy: Policy, config: PlacerConfig) -> Self {
        Self {
            config,
            policy,
            node_params: Vec::new(),
        }
    }

    /// The same placer (tunables and nodes' parameters) with another policy.
    pub fn with_policy(&self, policy: Policy) -> Self {
        Self {
            policy,
            ..self.clone()
        }
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn config(&self) -> &PlacerConfig {
        &self.config
    }

    /// Replace the cost parameters (after calibration).
    pub fn set_params(&mut self, params: CostParams) {
        self.config.params = params;
    }

    /// Cost candidates on `node` with `params` (`None`: with [`PlacerConfig::params`]).
    pub fn set_node_params(&mut self, node: NodeId, params: Option<CostParams>) {
        let i = node.0 as usize;
        if self.node_params.len() <= i {
            self.node_params.resize(i + 1, None);
        }
        self.node_params[i] = params;
    }

    /// The parameters candidates on `node` are costed with.
    pub fn params_of(&self, node: NodeId) -> &CostParams {
        self.node_params
            .get(node.0 as usize)
            .and_then(Option::as_ref)
            .unwrap_or(&self.config.params)
    }

    /// Choose a node, reserve it in `view`, and return the choice; `None` if no node passed the
    /// filters. Allocates nothing.
    pub fn place(&self, view: &mut ClusterView, req: &PlacementRequest<'_>) -> Option<Choice> {
        let choice = self.run(view, req, false, &mut |_| {});
        commit(view, req, choice)
    }

    /// [`Placer::place`], plus the full record of every candidate.
    pub fn place_recorded(&self, view: &mut ClusterView, req: &PlacementRequest<'_>) -> Decision {
        let mut candidates = Vec::with_capacity(view.len());
        let choice = self.run(view, req, true, &mut |record| candidates.push(record));
        let chosen = commit(view, req, choice);
        if let Some(c) = &chosen {
            for record in &mut candidates {
                if record.node == c.node {
                    record.verdict = Verdict::Chosen;
                }
            }
        }
        let unscored = view.len().saturating_sub(candidates.len()) as u32;
        Decision {
            invocation: req.invocation,
            policy: self.policy,
            chosen,
            candidates,
            unscored,
        }
    }

    /// Filter, cost and score the candidates; report each one to `record`.
    ///
    /// Nodes holding a warm context of the app and nodes holding the invocation's data are
    /// always candidates. The others are visited in an order shuffled by the invocation id
    /// (a stride permutation, so no allocation) until `sample` of them have passed the filters,
    /// as Nomad's scheduler limits the nodes it scores: on a large cluster the best of a few
    /// random feasible nodes is nearly as good as the best of all (the power of d choices), and
    /// placement cost stays flat as the cluster grows. `sample = 0` scores every node.
    fn run<R: FnMut(CandidateRecord)>(
        &self,
        view: &ClusterView,
        req: &PlacementRequest<'_>,
        recording: bool,
        record: &mut R,
    ) -> Option<Choice> {
        let nodes = view.nodes();
        let mut scan = Scan {
            placer: self,
            view,
            req,
            home_price: self.config.weights.storage_cpu_price(
                req.data
                    .first()
                    .and_then(|(node, _)| view.node(*node))
                    .map_or(0.0, NodeView::utilisation),
            ),
            home_queue_us: req
                .data
                .first()
                .and_then(|(node, _)| view.node(*node))
                .map_or(0.0, NodeView::queue_us),
            best: None,
            feasible: 0,
            classes: [None; PARTIAL_CLASS + 1],
            recording,
        };
        let local_of = |id: NodeId| {
            req.data
                .iter()
                .find(|(n, _)| *n == id)
                .map_or(0.0, |(_, f)| *f)
        };
        for &node in req.warm {
            scan.visit(node.0 as usize, true, local_of(node), record);
        }
        for &(node, local) in req.data {
            if !req.warm.contains(&node) {
                scan.visit(node.0 as usize, false, local, record);
            }
        }
        let n = nodes.len();
        // Branch and bound: when the best warm or data-holding candidate already scores below
        // anything another node could score, the others need not be visited. Exact: it never
        // changes the choice, only saves the scan (the common case of a warm hit).
        let best = scan
            .best
            .as_ref()
            .map(|(b, (evicts, _))| (*evicts, b.score));
        let pruned = best.is_some_and(|(evicts, score)| !evicts && score < scan.floor());
        if n > 0 && !pruned {
            let key = splitmix64(req.invocation.0);
            let stride = coprime_stride(n as u64, key >> 32);
            let mut index = (key % n as u64) as usize;
            scan.feasible = 0;
            for _ in 0..n {
                let id = nodes[index].id;
                if !req.warm.contains(&id) && !req.data.iter().any(|(d, _)| *d == id) {
                    scan.visit(index, false, 0.0, record);
                    if self.policy.samples()
                        && self.config.sample > 0
                        && scan.feasible >= self.config.sample
                    {
                        break;
                    }
                }
                index += stride;
                if index >= n {
                    index -= n;
                }
            }
        }
        let recording = scan.recording;
        let best = scan.best.take();
        best.map(|(mut c, _)| {
            let node = &nodes[c.index];
            if !recording {
                let local = req
                    .data
                    .iter()
                    .find(|(n, _)| *n == node.id)
                    .map_or(0.0, |(_, f)| *f);
                (c.cost, c.objective) = scan.costed(node, tier_of(node.role), c.start, local);
            }
            Choice {
                node: node.id,
                tier: tier_of(node.role),
                start: c.start,
                cost: c.cost,
                objective: c.objective,
                reservation: None,
            }
        })
    }

    /// How a context would be obtained on `node`.
    fn start_kind(&self, node: &NodeView, warm: bool) -> StartKind {
        match node.role {
            // A storage node starts a pooled Wasm instance for every invocation.
            NodeRole::Storage => StartKind::Assembled,
            NodeRole::Compute if warm => StartKind::Warm,
            NodeRole::Compute if node.pool_ready > 0 => StartKind::Assembled,
            NodeRole::Compute => StartKind::Cold,
        }
    }

    fn filter(&self, node: &NodeView, req: &PlacementRequest<'_>, warm: bool) -> Option<Rejection> {
        if !node.alive {
            return Some(Rejection::Dead);
        }
        if !self.policy.allows(node.role) {
            return Some(Rejection::WrongRole { role: node.role });
        }
        let limit = admission_limit(node, self.config.max_queue_per_core);
        if node.load >= limit {
            return Some(Rejection::Saturated {
                load: node.load,
                limit,
            });
        }
        if node.role == NodeRole::Compute && !warm {
            let free_mb = node.memory_free_mb() + node.memory_idle_mb;
            if free_mb < u64::from(req.memory_mb) {
                return Some(Rejection::NoMemory {
                    needed_mb: req.memory_mb,
                    free_mb,
                });
            }
        }
        None
    }
}

/// The state of one placement's pass over the candidates.
struct Scan<'p, 'r> {
    placer: &'p Placer,
    view: &'p ClusterView,
    req: &'p PlacementRequest<'r>,
    /// Storage CPU price at the node holding the data (prices a compute candidate's remote
    /// accesses).
    home_price: f64,
    /// Queueing at the storage node holding the data, which every remote dependent round waits.
    home_queue_us: f64,
    /// The best candidate so far with its (must-evict, tie-break) key.
    best: Option<(Costed, (bool, u64))>,
    /// Sampled candidates that passed the filters so far.
    feasible: u32,
    /// Costs without queueing for (tier, start kind, all-local), computed once per placement:
    /// candidates of one class differ only in their queue and storage CPU price.
    classes: [Option<ClassCost>; PARTIAL_CLASS + 1],
    /// Whether every candidate's breakdown is kept (the decision is recorded); otherwise only
    /// the objective is computed per candidate, and the breakdown for the chosen one.
    recording: bool,
}

/// Slots of the class cache: 2 tiers x 3 start kinds x (remote, local), then one for a
/// candidate holding part of the data.
const PARTIAL_CLASS: usize = 12;

/// A candidate class's cost without queueing, and the part of its objective that does not
/// depend on the node: `latency x (latency without queue) + compute CPU + bytes` terms.
#[derive(Clone, Copy)]
struct ClassCost {
    cost: CostBreakdown,
    fixed_objective: f64,
}

impl Scan<'_, '_> {
    #[inline(always)]
    /// Filter, cost and score the node at `index`, which holds a warm context of the app if
    /// `warm` and `local` of the invocation's data.
    fn visit<R: FnMut(CandidateRecord)>(
        &mut self,
        index: usize,
        warm: bool,
        local: f64,
        record: &mut R,
    ) {
        let Some(node) = self.view.nodes().get(index) else {
            return;
        };
        let (placer, req) = (self.placer, self.req);
        let start = placer.start_kind(node, warm);
        let rejection = placer.filter(node, req, warm);
        let tier = tier_of(node.role);
        let (cost, objective) = if self.recording {
            self.costed(node, tier, start, local)
        } else if placer.policy.uses_objective() {
            (
                CostBreakdown::default(),
                self.objective(node, tier, start, local),
            )
        } else {
            (CostBreakdown::default(), 0.0)
        };
        let score = placer.policy.score(&ScoreInput {
            config: &placer.config,
            req,
            node,
            warm,
            local_fraction: local,
            objective,
            compute_nodes: self.view.compute_nodes(),
        });
        record(CandidateRecord {
            node: node.id,
            role: node.role,
            start,
            cost,
            objective,
            score,
            verdict: rejection.map_or(Verdict::Lost, Verdict::Rejected),
        });
        if rejection.is_some() || !score.is_finite() {
            return;
        }
        self.feasible += 1;
        // A node that must evict idle contexts to fit a new one loses to any node that need not:
        // eviction turns someone's future warm start into a cold one.
        let evicts =
            tier == Tier::Compute && !warm && node.memory_free_mb() < u64::from(req.memory_mb);
        // The seeded tie-break is computed only when it decides (equal eviction need and score).
        let better = match &self.best {
            None => true,
            Some((b, (b_evicts, b_tie))) => {
                (evicts, score) < (*b_evicts, b.score)
                    || (evicts == *b_evicts
                        && score == b.score
                        && tie_break(req.invocation, node.id) < *b_tie)
            }
        };
        let key = (
            evicts,
            if better {
                tie_break(req.invocation, node.id)
            } else {
                0
            },
        );
        if better {
            self.best = Some((
                Costed {
                    index,
                    start,
                    cost,
                    objective,
                    score,
                },
                key,
            ));
        }
    }
}

impl Scan<'_, '_> {
    /// The cost breakdown and objective of placing the request on `node`.
    fn costed(
        &mut self,
        node: &NodeView,
        tier: Tier,
        start: StartKind,
        local: f64,
    ) -> (CostBreakdown, f64) {
        let objective = self.objective(node, tier, start, local);
        let mut cost = self.class_cost_ref(node, tier, start, local).cost;
        cost.queue_us = self.queue_us(node, local);
        (cost, objective)
    }

    /// The objective of placing the request on `node`. One formula for every path, so a
    /// recorded decision and a plain one agree to the bit.
    #[inline(always)]
    fn objective(&mut self, node: &NodeView, tier: Tier, start: StartKind, local: f64) -> f64 {
        let (fixed, storage_cpu_us) = {
            let class = self.class_cost_ref(node, tier, start, local);
            (class.fixed_objective, class.cost.storage_cpu_us)
        };
        let weights = &self.placer.config.weights;
        let price = if tier == Tier::Storage {
            weights.storage_cpu_price(node.utilisation())
        } else {
            self.home_price
        };
        fixed + weights.latency * self.queue_us(node, local) + price * storage_cpu_us
    }

    /// Queueing at `node`, plus at the data's storage node once per remote dependent round.
    fn queue_us(&self, node: &NodeView, local: f64) -> f64 {
        node.queue_us() + self.req.workload.rounds * (1.0 - local) * self.home_queue_us
    }

    /// A lower bound on the score of any node that holds neither a warm context nor the data.
    fn floor(&mut self) -> f64 {
        let policy = self.placer.policy;
        if !self.placer.node_params.is_empty() && policy.uses_objective() {
            // Nodes costed with their own parameters have no common bound: visit them all.
            return f64::NEG_INFINITY;
        }
        match policy {
            Policy::CostAware | Policy::AlwaysStorage | Policy::AlwaysCompute => {
                let weights = self.placer.config.weights;
                let mut floor = f64::INFINITY;
                let storage_nodes = self.view.len() as u32 - self.view.compute_nodes();
                if policy.allows(NodeRole::Storage) && storage_nodes > 0 {
                    let c = self.class_cost(Tier::Storage, StartKind::Assembled, 0.0);
                    let price = weights.storage_cpu_price(0.0);
                    floor = floor.min(c.fixed_objective + price * c.cost.storage_cpu_us);
                }
                if policy.allows(NodeRole::Compute) && self.view.compute_nodes() > 0 {
                    for start in [StartKind::Assembled, StartKind::Cold] {
                        let c = self.class_cost(Tier::Compute, start, 0.0);
                        floor =
                            floor.min(c.fixed_objective + self.home_price * c.cost.storage_cpu_us);
                    }
                }
                floor
            }
            // Scores of nodes without a warm context: utilisation >= 0, node id >= 0, 1 + util.
            Policy::LeastLoaded | Policy::FirstFit => 0.0,
            Policy::DataAffinity => 1.0,
            Policy::Random | Policy::HashHome => f64::NEG_INFINITY,
        }
    }

    /// The cost of a candidate class without queueing, with the cluster's parameters: from the
    /// cache when its locality is all or nothing.
    fn class_cost(&mut self, tier: Tier, start: StartKind, local: f64) -> ClassCost {
        *self.cached_class_cost(tier, start, local)
    }

    /// The cost of a candidate on `node` of a class without queueing: with the node's own
    /// parameters if it has some (not cached), else [`Scan::class_cost`] without copying.
    #[inline(always)]
    fn class_cost_ref(
        &mut self,
        node: &NodeView,
        tier: Tier,
        start: StartKind,
        local: f64,
    ) -> &ClassCost {
        if !self.placer.node_params.is_empty()
            && let Some(params) = self
                .placer
                .node_params
                .get(node.id.0 as usize)
                .and_then(Option::as_ref)
        {
            let class = class_cost(params, self.placer, &self.req.workload, tier, start, local);
            return self.classes[PARTIAL_CLASS].insert(class);
        }
        self.cached_class_cost(tier, start, local)
    }

    #[inline(always)]
    fn cached_class_cost(&mut self, tier: Tier, start: StartKind, local: f64) -> &ClassCost {
        let (params, work, placer) = (&self.placer.config.params, &self.req.workload, self.placer);
        let compute = || class_cost(params, placer, work, tier, start, local);
        if local == 0.0 || local == 1.0 {
            let class = (tier as usize) * 6 + (start as usize) * 2 + local as usize;
            self.classes[class].get_or_insert_with(compute)
        } else {
            // Partial locality is not cached: the last slot holds the latest one.
            self.classes[PARTIAL_CLASS].insert(compute())
        }
    }
}

/// A candidate class's cost with `params`, and its objective at storage CPU price 0 (the price
/// is added per node).
#[inline(always)]
fn class_cost(
    params: &CostParams,
    placer: &Placer,
    work: &sandstorm_cost_model::Workload,
    tier: Tier,
    start: StartKind,
    local: f64,
) -> ClassCost {
    let candidate = Candidate {
        tier,
        start,
        queue_us: 0.0,
        local_fraction: local,
    };
    let cost = estimate(params, work, &candidate);
    ClassCost {
        cost,
        fixed_objective: placer.config.weights.objective_at_price(&cost, 0.0),
    }
}

fn tier_of(role: NodeRole) -> Tier {
    match role {
        NodeRole::Storage => Tier::Storage,
        NodeRole::Compute => Tier::Compute,
    }
}

/// A stride in 1..n co-prime with n (so `i, i + s, i + 2s, ...` mod n visits every index once),
/// picked by `pick`.
fn coprime_stride(n: u64, pick: u64) -> usize {
    if n <= 2 {
        return 1;
    }
    let mut s = 1 + pick % (n - 1);
    while gcd(s, n) != 1 {
        s = s % (n - 1) + 1;
    }
    s as usize
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Reserve the chosen node: a core slot, and on a compute node the memory of a new context (and a
/// pooled part set when assembled) or the warm context's memory, no longer reclaimable.
fn commit(
    view: &mut ClusterView,
    req: &PlacementRequest<'_>,
    choice: Option<Choice>,
) -> Option<Choice> {
    let mut choice = choice?;
    let compute = choice.tier == Tier::Compute;
    let new_container = compute && choice.start != StartKind::Warm;
    let reservation = Reservation {
        node: choice.node,
        memory_mb: if new_container { req.memory_mb } else { 0 },
        warm_mb: if compute && !new_container {
            req.memory_mb
        } else {
            0
        },
        pool_part: new_container && choice.start == StartKind::Assembled,
        work_us: if compute {
            choice.cost.compute_cpu_us
        } else {
            choice.cost.storage_cpu_us
        },
    };
    view.reserve(reservation);
    choice.reservation = Some(reservation);
    Some(choice)
}

/// The most invocations (running plus waiting) a node admits.
pub fn admission_limit(node: &NodeView, max_queue_per_core: f64) -> u32 {
    let cores = f64::from(node.cores);
    (cores * (1.0 + max_queue_per_core.max(0.0))).min(f64::from(u32::MAX)) as u32
}

/// A deterministic pseudo-random tie-break for (invocation, node): splitmix64 of their mix.
pub fn tie_break(invocation: InvocationId, node: NodeId) -> u64 {
    splitmix64(invocation.0 ^ (u64::from(node.0) << 40 | u64::from(node.0)).rotate_left(17))
}

/// The splitmix64 finaliser: a fast, well-mixed, stable 64-bit hash step.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests;

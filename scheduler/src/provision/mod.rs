//! The re-provisioner's model: which hot functions get storage-node cores of their own, which
//! functions keep a warm container on which compute node, and how many pre-created parts each
//! compute node pools. Pure: the service gathers the inputs (recent profiles, the cluster's
//! nodes, the calibrated cost model) every few seconds, calls [`solve`], and applies the
//! [`Plan`] through the agents' `Provision` call.
//!
//! Placement stays per invocation and unchanged: the plan shapes the capacity it chooses from
//! (a dedicated core is one more queue a hot function does not share; a planned warm container
//! makes a compute node a warm candidate), it does not route anything.
//!
//! # The model (a small MILP, good_lp with the pure-Rust `microlp` backend)
//! For each of the hottest functions `f` (at most [`ProvisionConfig::max_functions`], by the
//! CPU they use), with rate `r` (1/s) and the cost model's per-invocation objective in storage
//! `A`, on a warm compute container `B` and on an assembled one `B'`:
//! - shares `s` (storage), `c_n` (warm container on compute node `n`), `k_n` (a container
//!   assembled per invocation on `n`), `s + sum c + sum k = 1`;
//! - `w_n` binary: `f` keeps a warm container on `n`; `c_n <= w_n`;
//! - on each storage node `m`, which holds the share `h_m` of `f`'s data: `d_m` dedicated cores
//!   (integer) and `z_m` of `f`'s invocations per second served on them:
//!   `z_m <= r h_m s`, `z_m sigma <= u d_m` (`sigma`: storage core-seconds per invocation, `u`:
//!   the utilisation a planned core is filled to);
//! - every node's capacity: the shared cores of `m` carry the rest of its storage load within
//!   `u (cores - sum d)`, with at least one shared core left; compute load within `u cores`;
//!   warm containers' and pooled parts' memory within the node's memory. An overload slack on
//!   each node keeps the model feasible when demand exceeds the cluster, at a prohibitive price;
//! - pool size `p_n` (integer, within bounds) covers the containers assembled on `n` during one
//!   refill window.
//!
//! Objective (microseconds of latency-equivalent per second, the cost model's units):
//! `sum r (A s + sum B c + sum B' k)`, plus a shared-core wait per invocation not on a dedicated
//! core (the M/M/1 wait at utilisation `u` of the mean storage invocation: what sharing cores
//! with everyone costs), plus the idle part of each dedicated core at the storage CPU price (a
//! core set aside and not filled is capacity lost), plus memory held by warm containers and
//! pooled parts at [`ProvisionConfig::memory_price`].

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::panic::{AssertUnwindSafe, catch_unwind};

use good_lp::{
    Expression, ProblemVariables, Solution, SolverModel, Variable, constraint, microlp, variable,
};
use sandstorm_cost_model::{Candidate, CostParams, StartKind, Tier, Weights, Workload, estimate};
use sandstorm_naming::{FunctionId, NodeId, NodeRole, TenantId};
use serde::{Deserialize, Serialize};

/// Microseconds per second.
const US_PER_S: f64 = 1e6;
/// Price of a unit of overload slack (per core or MB beyond capacity): no real plan pays it.
const OVERLOAD_PRICE: f64 = 1e9;

/// The re-provisioner's tunables.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProvisionConfig {
    /// Utilisation a planned core is filled to, 0..1. Default 0.7.
    pub target_utilisation: f64,
    /// Most functions modelled per round, the hottest by CPU used; the rest keep the default
    /// (shared cores, keep-alive warm containers). Default 24.
    pub max_functions: usize,
    /// Functions slower than this many invocations per second are left out. Default 0.2.
    pub min_rate_per_s: f64,
    /// Latency-equivalent microseconds per second of holding one MB (warm containers, pooled
    /// parts). Default 2: a 64 MB container is kept warm for a function whose invocations
    /// would otherwise pay 128 us a second of assembly (at 1 ms an assembly, one invocation
    /// every 8 s).
    pub memory_price: f64,
    /// Fraction of a compute node's memory the plan may hold in warm containers and parts.
    /// Default 0.5.
    pub memory_fraction: f64,
    /// Memory one pooled part set holds (namespaces, a writable layer, a cgroup with a parked
    /// forker), MB. Default 1.
    pub part_memory_mb: f64,
    /// Bounds of a compute node's pool size. Defaults 2 and 64.
    pub pool_min: u32,
    pub pool_max: u32,
    /// How long a pool takes to replace a part, seconds: the window the pool must cover.
    /// Default 0.05.
    pub refill_s: f64,
}

impl Default for ProvisionConfig {
    fn default() -> Self {
        Self {
            target_utilisation: 0.7,
            max_functions: 24,
            min_rate_per_s: 0.2,
            memory_price: 2.0,
            memory_fraction: 0.5,
            part_memory_mb: 1.0,
            pool_min: 2,
            pool_max: 64,
            refill_s: 0.05,
        }
    }
}

/// What the profiles say about one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionDemand {
    pub function: FunctionId,
    pub tenant: TenantId,
    pub name: String,
    /// Recent arrivals per second.
    pub rate_per_s: f64,
    /// Means per invocation (native CPU, accesses, rounds, bytes).
    pub workload: Workload,
    /// Memory a container of it may use, MB.
    pub memory_mb: f64,
    /// Share of its data on each storage node (normalised here; empty: spread evenly).
    pub data_home: Vec<(NodeId, f64)>,
}

/// A live node the plan may use.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeSupply {
    pub id: NodeId,
    pub role: NodeRole,
    pub cores: u32,
    pub memory_mb: u64,
}

/// The plan for one function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionPlan {
    pub function: FunctionId,
    pub tenant: TenantId,
    pub name: String,
    pub rate_per_s: f64,
    /// Expected share of its invocations in storage nodes, 0..1.
    pub storage_share: f64,
    /// Expected share on each compute node (warm or assembled).
    pub compute_share: Vec<(NodeId, f64)>,
    /// Storage cores of its own, per storage node.
    pub dedicated_cores: Vec<(NodeId, u32)>,
    /// Compute nodes that keep a warm container of it.
    pub warm_on: Vec<NodeId>,
}

/// A re-provisioning round as the live scheduler reports it: the plan, when it was solved and
/// what applying it could not do.
#[derive(Debug, Clone, Default)]
pub struct PlanReport {
    pub round: u64,
    pub solved_at_us: u64,
    pub solve_us: u64,
    pub plan: Plan,
    pub problems: Vec<String>,
}

/// A solved plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Plan {
    /// Modelled functions, hottest first.
    pub functions: Vec<FunctionPlan>,
    /// Pool size per compute node.
    pub pools: Vec<(NodeId, u32)>,
    /// Nodes whose demand exceeds what the plan may use (the overload slack was needed).
    pub overloaded: Vec<NodeId>,
    /// The objective, latency-equivalent microseconds per second.
    pub objective: f64,
}

impl Plan {
    /// The plan for `function`, if it was modelled.
    pub fn function(&self, function: FunctionId) -> Option<&FunctionPlan> {
        self.functions.iter().find(|f| f.function == function)
    }

    /// Dedicated cores per function on storage node `node`.
    pub fn dedicated_on(&self, node: NodeId) -> Vec<(&FunctionPlan, u32)> {
        self.functions
            .iter()
            .filter_map(|f| {
                f.dedicated_cores
                    .iter()
                    .find(|(n, c)| *n == node && *c > 0)
                    .map(|&(_, c)| (f, c))
            })
            .collect()
    }

    /// Functions kept warm on compute node `node`.
    pub fn warm_on(&self, node: NodeId) -> Vec<&FunctionPlan> {
        self.functions
            .iter()
            .filter(|f| f.warm_on.contains(&node))
            .collect()
    }

    /// The pool size planned for compute node `node`.
    pub fn pool_size(&self, node: NodeId) -> Option<u32> {
        self.pools.iter().find(|(n, _)| *n == node).map(|&(_, p)| p)
    }
}

/// Why no plan came out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionError {
    #[error("the solver failed: {0}")]
    Solver(String),
}

/// One modelled function: its inputs and variables.
struct Modelled<'a> {
    demand: &'a FunctionDemand,
    /// Storage core-seconds, compute core-seconds per invocation.
    sigma: f64,
    kappa: f64,
    storage_objective: f64,
    warm_objective: f64,
    assembled_objective: f64,
    s: Option<Variable>,
    /// Per compute node: (warm share, assembled share, warm container).
    compute: Vec<(Variable, Variable, Variable)>,
    /// Per storage node: (its data share, dedicated cores, invocations/s on them).
    storage: Vec<(f64, Variable, Variable)>,
}

/// Solves the model for `demand` on `nodes` (dead nodes already left out).
pub fn solve(
    demand: &[FunctionDemand],
    nodes: &[NodeSupply],
    params: &CostParams,
    weights: &Weights,
    config: &ProvisionConfig,
) -> Result<Plan, ProvisionError> {
    let u = config.target_utilisation.clamp(0.05, 0.95);
    let storage: Vec<&NodeSupply> = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Storage && n.cores > 0)
        .collect();
    let compute: Vec<&NodeSupply> = nodes
        .iter()
        .filter(|n| n.role == NodeRole::Compute && n.cores > 0)
        .collect();
    let hot = hottest(demand, params, config);
    if hot.is_empty() || (storage.is_empty() && compute.is_empty()) {
        return Ok(Plan {
            pools: compute.iter().map(|n| (n.id, config.pool_min)).collect(),
            ..Plan::default()
        });
    }

    let mut vars = ProblemVariables::new();
    let modelled: Vec<Modelled<'_>> = hot
        .iter()
        .map(|d| model_function(d, &storage, &compute, params, weights, &mut vars))
        .collect();
    let pools: Vec<Variable> = compute
        .iter()
        .map(|_| {
            vars.add(
                variable()
                    .integer()
                    .min(config.pool_min)
                    .max(config.pool_max.max(config.pool_min)),
            )
        })
        .collect();
    let storage_slack: Vec<Variable> = storage
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();
    let compute_slack: Vec<Variable> = compute
        .iter()
        .map(|_| vars.add(variable().min(0.0)))
        .collect();

    // The wait an invocation pays on cores shared with the other functions: M/M/1 at
    // utilisation u, for the mean storage invocation of everyone else's modelled load.
    let (load, rate): (f64, f64) = modelled
        .iter()
        .map(|m| (m.demand.rate_per_s * m.sigma, m.demand.rate_per_s))
        .fold((0.0, 0.0), |(l, r), (a, b)| (l + a, r + b));
    let shared_wait_us = |m: &Modelled<'_>| {
        let others_rate = rate - m.demand.rate_per_s;
        if others_rate <= 1e-9 {
            return 0.0;
        }
        let others_service_us = (load - m.demand.rate_per_s * m.sigma) / others_rate * US_PER_S;
        others_service_us.max(0.0) * u / (1.0 - u)
    };

    let mut objective = Expression::from(0.0);
    let mut constraints = Vec::new();
    for m in &modelled {
        let r = m.demand.rate_per_s;
        let shared_wait_us = shared_wait_us(m);
        let mut total = Expression::from(0.0);
        if let Some(s) = m.s {
            total += s;
            objective += (r * (m.storage_objective + shared_wait_us)) * s;
            for &(share, d, z) in &m.storage {
                // Invocations on dedicated cores skip the shared wait; a dedicated core's idle
                // capacity is priced as storage CPU.
                objective += -shared_wait_us * z;
                objective += (weights.storage_cpu * US_PER_S) * (u * d - m.sigma * z);
                constraints.push(constraint!(z - (r * share) * s <= 0.0));
                constraints.push(constraint!(m.sigma * z - u * d <= 0.0));
            }
        }
        for &(c, k, w) in &m.compute {
            total += c + k;
            objective += (r * m.warm_objective) * c + (r * m.assembled_objective) * k;
            objective += (config.memory_price * m.demand.memory_mb) * w;
            constraints.push(constraint!(c - w <= 0.0));
        }
        constraints.push(constraint!(total == 1.0));
    }
    for (j, node) in storage.iter().enumerate() {
        // The shared cores carry everything not on a dedicated core.
        let mut shared = Expression::from(0.0);
        let mut dedicated = Expression::from(0.0);
        for m in &modelled {
            let (Some(s), Some(&(share, d, z))) = (m.s, m.storage.get(j)) else {
                continue;
            };
            shared += (m.demand.rate_per_s * share * m.sigma) * s - m.sigma * z;
            dedicated += d;
        }
        let cores = f64::from(node.cores);
        constraints.push(constraint!(
            shared + u * dedicated.clone() - storage_slack[j] <= u * cores
        ));
        constraints.push(constraint!(dedicated <= cores - 1.0));
        objective += OVERLOAD_PRICE * storage_slack[j];
    }
    for (i, node) in compute.iter().enumerate() {
        let mut cpu = Expression::from(0.0);
        let mut memory = Expression::from(0.0);
        let mut assemblies = Expression::from(0.0);
        for m in &modelled {
            let (c, k, w) = m.compute[i];
            cpu += (m.demand.rate_per_s * m.kappa) * (c + k);
            memory += m.demand.memory_mb * w;
            assemblies += (m.demand.rate_per_s * config.refill_s) * k;
        }
        // Never below what the smallest pool holds, so the model stays feasible.
        let memory_budget = (node.memory_mb as f64 * config.memory_fraction)
            .max(config.part_memory_mb * f64::from(config.pool_min));
        memory += config.part_memory_mb * pools[i];
        constraints.push(constraint!(
            cpu - compute_slack[i] <= u * f64::from(node.cores)
        ));
        constraints.push(constraint!(memory <= memory_budget));
        constraints.push(constraint!(assemblies - pools[i] <= 0.0));
        objective += (config.memory_price * config.part_memory_mb) * pools[i];
        objective += OVERLOAD_PRICE * compute_slack[i];
    }

    // Scaled so the solver sees numbers near 1.
    let scale = 1.0 / (rate.max(1.0) * 1_000.0);
    let problem = vars
        .minimise(objective.clone() * scale)
        .using(microlp)
        .with_all(constraints);
    let solution = catch_unwind(AssertUnwindSafe(|| problem.solve()))
        .map_err(|panic| {
            ProvisionError::Solver(
                panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panicked".to_owned()),
            )
        })?
        .map_err(|e| ProvisionError::Solver(e.to_string()))?;

    let round = |v: Variable| solution.value(v).round().max(0.0) as u32;
    let functions = modelled
        .iter()
        .map(|m| FunctionPlan {
            function: m.demand.function,
            tenant: m.demand.tenant,
            name: m.demand.name.clone(),
            rate_per_s: m.demand.rate_per_s,
            storage_share: m.s.map_or(0.0, |s| solution.value(s).clamp(0.0, 1.0)),
            compute_share: compute
                .iter()
                .zip(&m.compute)
                .map(|(n, &(c, k, _))| {
                    (
                        n.id,
                        (solution.value(c) + solution.value(k)).clamp(0.0, 1.0),
                    )
                })
                .collect(),
            dedicated_cores: storage
                .iter()
                .zip(&m.storage)
                .map(|(n, &(_, d, _))| (n.id, round(d)))
                .filter(|&(_, d)| d > 0)
                .collect(),
            warm_on: compute
                .iter()
                .zip(&m.compute)
                .filter(|&(_, &(_, _, w))| solution.value(w) > 0.5)
                .map(|(n, _)| n.id)
                .collect(),
        })
        .collect();
    let overloaded = storage
        .iter()
        .zip(&storage_slack)
        .chain(compute.iter().zip(&compute_slack))
        .filter(|&(_, &v)| solution.value(v) > 1e-6)
        .map(|(n, _)| n.id)
        .collect();
    Ok(Plan {
        functions,
        pools: compute
            .iter()
            .zip(&pools)
            .map(|(n, &p)| (n.id, round(p)))
            .collect(),
        overloaded,
        objective: solution.eval(&objective),
    })
}

/// The functions worth modelling: fast enough, hottest (by CPU used) first, at most
/// `max_functions`.
fn hottest<'a>(
    demand: &'a [FunctionDemand],
    params: &CostParams,
    config: &ProvisionConfig,
) -> Vec<&'a FunctionDemand> {
    let mut hot: Vec<(&FunctionDemand, f64)> = demand
        .iter()
        .filter(|d| d.rate_per_s.is_finite() && d.rate_per_s >= config.min_rate_per_s)
        .map(|d| {
            let cpu = d.workload.compute_us * params.wasm_slowdown + params.dispatch_us;
            (d, d.rate_per_s * cpu)
        })
        .collect();
    hot.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.function.cmp(&b.0.function)));
    hot.truncate(config.max_functions);
    hot.into_iter().map(|(d, _)| d).collect()
}

fn model_function<'a>(
    demand: &'a FunctionDemand,
    storage: &[&NodeSupply],
    compute: &[&NodeSupply],
    params: &CostParams,
    weights: &Weights,
    vars: &mut ProblemVariables,
) -> Modelled<'a> {
    let cost = |tier, start, local_fraction| {
        estimate(
            params,
            &demand.workload,
            &Candidate {
                tier,
                start,
                queue_us: 0.0,
                local_fraction,
            },
        )
    };
    let in_storage = cost(Tier::Storage, StartKind::Warm, 1.0);
    let warm = cost(Tier::Compute, StartKind::Warm, 0.0);
    let assembled = cost(Tier::Compute, StartKind::Assembled, 0.0);
    let price = weights.storage_cpu_price(0.0);
    let shares = data_shares(demand, storage);
    Modelled {
        demand,
        sigma: in_storage.storage_cpu_us / US_PER_S,
        kappa: warm.compute_cpu_us / US_PER_S,
        storage_objective: weights.objective_at_price(&in_storage, price),
        warm_objective: weights.objective_at_price(&warm, price),
        assembled_objective: weights.objective_at_price(&assembled, price),
        s: (!storage.is_empty()).then(|| vars.add(variable().min(0.0).max(1.0))),
        compute: compute
            .iter()
            .map(|_| {
                (
                    vars.add(variable().min(0.0).max(1.0)),
                    vars.add(variable().min(0.0).max(1.0)),
                    vars.add(variable().binary()),
                )
            })
            .collect(),
        storage: storage
            .iter()
            .zip(shares)
            .map(|(n, share)| {
                let most = f64::from(n.cores.saturating_sub(1));
                (
                    share,
                    vars.add(variable().integer().min(0.0).max(most)),
                    vars.add(variable().min(0.0)),
                )
            })
            .collect(),
    }
}

/// `demand`'s data share on each of `storage`, normalised; spread evenly when unknown.
fn data_shares(demand: &FunctionDemand, storage: &[&NodeSupply]) -> Vec<f64> {
    let known: HashMap<NodeId, f64> = demand
        .data_home
        .iter()
        .filter(|(_, w)| w.is_finite() && *w > 0.0)
        .fold(HashMap::new(), |mut acc, &(n, w)| {
            *acc.entry(n).or_insert(0.0) += w;
            acc
        });
    let shares: Vec<f64> = storage
        .iter()
        .map(|n| known.get(&n.id).copied().unwrap_or(0.0))
        .collect();
    let total: f64 = shares.iter().sum();
    if total > 0.0 {
        shares.iter().map(|s| s / total).collect()
    } else {
        vec![1.0 / storage.len().max(1) as f64; storage.len()]
    }
}

/// Where a function's data lives, learned from the keys its invocations name: decayed counts
/// per storage node, so a function whose data moves is followed within a few rounds.
#[derive(Debug, Clone, Default)]
pub struct DataHomes {
    counts: HashMap<FunctionId, BTreeMap<NodeId, f64>>,
}

impl DataHomes {
    /// An invocation of `function` named data on these nodes with these shares.
    pub fn observe(&mut self, function: FunctionId, shares: &[(NodeId, f64)]) {
        if shares.is_empty() {
            return;
        }
        let counts = self.counts.entry(function).or_default();
        for &(node, share) in shares {
            *counts.entry(node).or_insert(0.0) += share;
        }
    }

    /// The shares seen for `function` since the last [`DataHomes::decay`], with older rounds
    /// weighing less.
    pub fn shares(&self, function: FunctionId) -> Vec<(NodeId, f64)> {
        self.counts
            .get(&function)
            .map(|c| c.iter().map(|(&n, &w)| (n, w)).collect())
            .unwrap_or_default()
    }

    /// Halves every count (once per re-provisioning round) and drops what has faded.
    pub fn decay(&mut self) {
        for counts in self.counts.values_mut() {
            counts.retain(|_, w| {
                *w *= 0.5;
                *w > 1e-3
            });
        }
        self.counts.retain(|_, c| !c.is_empty());
    }

    /// The function is gone.
    pub fn forget(&mut self, function: FunctionId) {
        self.counts.remove(&function);
    }
}

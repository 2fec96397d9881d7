//! The offline bound the report shows beside each placement policy.
//!
//! For one load point of a scenario (a set of invocation classes, each with an arrival rate, and
//! the cores of the storage and compute tiers) this module solves a small linear program that no
//! placement policy can beat, so the report can say how far each policy is from the best
//! achievable result.
//!
//! # The model
//!
//! Each class `c` (all invocations of one function, or of one data class) arrives at
//! `rate_c` invocations per second. Per class there are three fractions, all `>= 0`:
//! `s_c` on the storage tier, `k_c` on the compute tier and `u_c` unserved, with
//! `s_c + k_c + u_c = 1` (`u_c` is implicit: `s_c + k_c <= 1`). A tier the class cannot run on
//! ([`TierCost::available`] false) has its fraction fixed to 0.
//!
//! A placement occupies core time on *both* tiers: running on the storage node occupies storage
//! cores; running on a compute node occupies compute cores and, for every data access, some
//! per-request CPU at the storage node (docs/design.md, "The cost model"). So [`TierCost`] carries
//! both [`TierCost::storage_core_us`] and [`TierCost::compute_core_us`], and capacity is
//!
//! ```text
//! sum_c rate_c (s_c * storage.storage_core_us + k_c * compute.storage_core_us) / 1e6
//!     <= storage_cores * max_utilisation
//! sum_c rate_c (s_c * storage.compute_core_us + k_c * compute.compute_core_us) / 1e6
//!     <= compute_cores * max_utilisation
//! ```
//!
//! * **Stage 1** maximises the served throughput `G = sum_c rate_c (s_c + k_c)`: the goodput
//!   bound [`Bound::goodput_per_s`].
//! * **Stage 2** keeps the served throughput at `(1 - 1e-9) G*` or more and minimises the total
//!   objective `sum_c rate_c (s_c obj_s,c + k_c obj_k,c)`; divided by the served throughput it
//!   is [`Bound::objective_per_invocation`], a lower bound on the mean objective per served
//!   invocation of any placement that serves the maximum goodput.
//!
//! Classes with identical costs are interchangeable, so they are merged (their rates added)
//! before the LP is built and share the same fractions in the answer. The LP is solved with
//! good_lp's pure-Rust `microlp` backend; a thousand distinct classes take a fraction of a second
//! (0.1-0.5 s in a test build on two shared cores).
//!
//! # Why it is a bound
//!
//! Every real placement is a feasible point of this LP, or better than one:
//!
//! * **Queueing is ignored.** The costs are *unloaded* (no queueing delay, storage CPU priced at
//!   an idle node: build [`TierCost::objective`] with `Weights::objective(cost, 0.0)` from
//!   `sandstorm-cost-model`). Under load a real placement only pays more, so its mean objective
//!   is at least the LP's.
//! * **Capacity is only an average.** A real system needs headroom to keep queues finite; the LP
//!   lets the cores be busy up to `max_utilisation` (1.0 = every core, every microsecond).
//! * **Core time is what the engine holds, no more.** A compute invocation holds its core for
//!   dispatch, start and compute only: its round trips and wire time are waits, not core time
//!   (`engine::held_core_us`). Charging the waits too made an earlier version of this bound
//!   lower than what policies achieved. The driver builds each class from the very arrivals the
//!   runs replay (same seed, same load) and stretches capacity over the span plus the latest
//!   deadline a good completion can have, since work arriving late in the span may finish after
//!   it.
//! * **Fractional splitting is allowed.** A policy places each invocation whole, on one node, with
//!   whatever it knows at arrival; the LP splits each class's *rate* across tiers in any ratio
//!   with perfect knowledge of the whole load point, and pools all cores of a tier as one.
//!
//! So [`Bound::goodput_per_s`] is an upper bound on any policy's goodput and
//! [`Bound::objective_per_invocation`] is a lower bound on the mean objective per invocation of
//! any policy that serves that goodput. If a policy serves less than the goodput bound (overload)
//! it may drop expensive invocations and report a lower mean than the bound: compare goodput
//! first, and read the objective gap only when the goodputs match.
//!
//! # Reading the gap
//!
//! The report shows `gap = objective / objective_bound - 1`. 0 means the policy is as good as the
//! bound (it can never be negative at the same goodput). A gap is the sum of what the LP
//! assumed away: queueing and start costs under load, imperfect placement decisions, and
//! integrality (whole invocations, whole nodes). A policy near 0 has nothing left to gain from
//! smarter placement; a large gap at low load points to placement mistakes, a gap that grows with
//! load points to queueing, which a better policy can reduce but never remove. The bound is
//! optimistic, so even a perfect online policy keeps a small gap; it is a yardstick for comparing
//! policies, not a target to reach.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};

use good_lp::{
    Expression, ProblemVariables, ResolutionError, Solution, SolverModel, Variable, microlp,
    variable,
};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Stage 2 keeps the served fraction at `(1 - slack)` of the stage-1 optimum or more, trying each
/// slack in turn while the solver calls the previous one infeasible. Exactly the optimum first:
/// with any slack at all, stage 2 spends it dropping the dearest invocations, which shows as
/// shares like 0.999999997. Round-off can make that exact target infeasible; then the brief's
/// `1 - 1e-9`, widened if needed.
const GOODPUT_SLACKS: [f64; 4] = [0.0, 1e-9, 1e-7, 1e-5];

/// Microseconds per second: converts `rate (1/s) * core_us` into cores.
const US_PER_S: f64 = 1e6;

/// One class of invocations (e.g. all invocations of one function, or of one data class).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassDemand {
    /// Names the class in errors and reports.
    pub name: String,
    /// Arrivals per second at this load point.
    pub rate_per_s: f64,
    /// Cost of one invocation placed on the storage tier.
    pub storage: TierCost,
    /// Cost of one invocation placed on the compute tier.
    pub compute: TierCost,
}

/// What one invocation of a class costs when placed on one tier, unloaded (no queueing).
///
/// When `available` is false the other fields are ignored (they may be NaN or infinite).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TierCost {
    /// The objective per invocation: weighted latency plus resource prices, from
    /// `sandstorm-cost-model` (`Weights::objective` at storage utilisation 0). Must be `>= 0`.
    pub objective: f64,
    /// Storage-node core time the invocation occupies, microseconds: its whole execution when
    /// placed on storage; the per-request CPU of its data accesses when placed on compute.
    pub storage_core_us: f64,
    /// Compute-node core time the invocation occupies, microseconds (normally 0 on storage).
    pub compute_core_us: f64,
    /// Whether the class may run on this tier at all (e.g. no Wasm build: not on storage).
    pub available: bool,
}

impl TierCost {
    /// A storage placement: `core_us` of storage cores, nothing on compute.
    pub fn on_storage(objective: f64, core_us: f64) -> Self {
        Self {
            objective,
            storage_core_us: core_us,
            compute_core_us: 0.0,
            available: true,
        }
    }

    /// A compute placement: `core_us` of compute cores, nothing on storage (add the per-request
    /// storage CPU of its data accesses with [`TierCost::with_storage_core_us`]).
    pub fn on_compute(objective: f64, core_us: f64) -> Self {
        Self {
            objective,
            storage_core_us: 0.0,
            compute_core_us: core_us,
            available: true,
        }
    }

    /// This placement also occupies `core_us` of storage cores.
    pub fn with_storage_core_us(self, core_us: f64) -> Self {
        Self {
            storage_core_us: core_us,
            ..self
        }
    }

    /// The class cannot run on this tier.
    pub fn unavailable() -> Self {
        Self {
            objective: 0.0,
            storage_core_us: 0.0,
            compute_core_us: 0.0,
            available: false,
        }
    }
}

/// The cores of each tier at this load point.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Capacity {
    /// Worker cores over all storage nodes.
    pub storage_cores: f64,
    /// Cores over all compute nodes.
    pub compute_cores: f64,
    /// Fraction of each tier's cores usable, in `[0, 1]` (1.0: every core, all the time).
    pub max_utilisation: f64,
}

/// The answer: what no placement policy can beat at this load point.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bound {
    /// Upper bound on the invocations per second servable under core capacity.
    pub goodput_per_s: f64,
    /// Lower bound on the mean objective per served invocation while serving `goodput_per_s`.
    /// 0 when nothing can be served (objectives are non-negative, so 0 is a valid, vacuous bound).
    pub objective_per_invocation: f64,
    /// Per class, in input order: fraction of its rate placed on storage.
    pub storage_share: Vec<f64>,
    /// Per class, in input order: fraction of its rate served (storage + compute).
    pub served_share: Vec<f64>,
}

impl Bound {
    /// Per class, in input order: fraction of its rate placed on compute.
    pub fn compute_share(&self) -> Vec<f64> {
        self.served_share
            .iter()
            .zip(&self.storage_share)
            .map(|(sv, st)| (sv - st).max(0.0))
            .collect()
    }
}

/// Why the bound could not be computed.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum BoundError {
    /// The load point has no classes.
    #[error("no invocation classes to bound")]
    NoClasses,
    /// A class carries a negative, NaN or infinite number.
    #[error("class `{class}` (#{index}): {field} is {value}, must be finite and >= 0")]
    InvalidClass {
        /// The class's name.
        class: String,
        /// Its position in the input.
        index: usize,
        /// The offending field, e.g. `storage.objective`.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The capacity carries a negative, NaN or infinite number, or a utilisation above 1.
    #[error("capacity: {field} is {value}, must be finite, >= 0 (and <= 1 for max_utilisation)")]
    InvalidCapacity {
        /// The offending field, e.g. `storage_cores`.
        field: &'static str,
        /// The offending value.
        value: f64,
    },
    /// The LP solver failed (or panicked); the message says how.
    #[error("LP solver failed in {stage}: {message}")]
    Solver {
        /// `goodput` (stage 1) or `objective` (stage 2).
        stage: &'static str,
        /// The solver's message.
        message: String,
    },
}

/// Solves the two-stage LP for `classes` under `capacity`. See the module documentation.
pub fn solve(classes: &[ClassDemand], capacity: &Capacity) -> Result<Bound, BoundError> {
    if classes.is_empty() {
        return Err(BoundError::NoClasses);
    }
    validate(classes, capacity)?;

    let caps = [
        capacity.storage_cores * capacity.max_utilisation,
        capacity.compute_cores * capacity.max_utilisation,
    ];
    let (groups, group_of) = aggregate(classes, caps);

    let total_rate: f64 = groups.iter().map(|g| g.rate).sum();
    // Shares of each group: (storage, compute).
    let mut shares = vec![(0.0, 0.0); groups.len()];
    let mut goodput_per_s = 0.0;
    let mut objective_per_invocation = 0.0;

    let lp = Lp::new(&groups, caps, total_rate);
    if lp.n_vars > 0 {
        let served = lp.max_goodput()?;
        if served > 0.0 {
            let cost;
            (shares, cost) = lp.min_objective(served)?;
            let served_sol: f64 = lp
                .members
                .iter()
                .map(|&g| groups[g].rate * (shares[g].0 + shares[g].1))
                .sum();
            goodput_per_s = served * total_rate;
            if served_sol > 0.0 {
                objective_per_invocation = cost / served_sol;
            }
        }
    }

    // Groups that take no part in the LP (zero rate) are shown at their cheaper usable tier:
    // they cost no capacity.
    for (g, group) in groups.iter().enumerate() {
        if group.rate == 0.0 {
            shares[g] = match (group.storage_usable, group.compute_usable) {
                (true, true) if group.storage.objective <= group.compute.objective => (1.0, 0.0),
                (true, false) => (1.0, 0.0),
                (_, true) => (0.0, 1.0),
                (false, false) => (0.0, 0.0),
            };
        }
    }

    let storage_share = group_of.iter().map(|&g| shares[g].0).collect();
    let served_share = group_of
        .iter()
        .map(|&g| (shares[g].0 + shares[g].1).min(1.0))
        .collect();
    Ok(Bound {
        goodput_per_s,
        objective_per_invocation,
        storage_share,
        served_share,
    })
}

fn validate(classes: &[ClassDemand], capacity: &Capacity) -> Result<(), BoundError> {
    let ok = |v: f64| v.is_finite() && v >= 0.0;
    for (index, class) in classes.iter().enumerate() {
        let mut fields = vec![("rate_per_s", class.rate_per_s)];
        for (tier, names) in [
            (
                &class.storage,
                [
                    "storage.objective",
                    "storage.storage_core_us",
                    "storage.compute_core_us",
                ],
            ),
            (
                &class.compute,
                [
                    "compute.objective",
                    "compute.storage_core_us",
                    "compute.compute_core_us",
                ],
            ),
        ] {
            if tier.available {
                fields.extend(names.into_iter().zip([
                    tier.objective,
                    tier.storage_core_us,
                    tier.compute_core_us,
                ]));
            }
        }
        if let Some(&(field, value)) = fields.iter().find(|(_, v)| !ok(*v)) {
            return Err(BoundError::InvalidClass {
                class: class.name.clone(),
                index,
                field,
                value,
            });
        }
    }
    for (field, value) in [
        ("storage_cores", capacity.storage_cores),
        ("compute_cores", capacity.compute_cores),
        ("max_utilisation", capacity.max_utilisation),
    ] {
        if !ok(value) || (field == "max_utilisation" && value > 1.0) {
            return Err(BoundError::InvalidCapacity { field, value });
        }
    }
    Ok(())
}

/// Classes with identical costs, merged.
#[derive(Debug, Clone)]
struct Group {
    rate: f64,
    storage: TierCost,
    compute: TierCost,
    /// Available, and not shut out by a zero-capacity tier it would need.
    storage_usable: bool,
    compute_usable: bool,
}

/// Merges classes with bit-identical costs (first-occurrence order, so deterministic). Returns the
/// groups and, per class, its group.
fn aggregate(classes: &[ClassDemand], caps: [f64; 2]) -> (Vec<Group>, Vec<usize>) {
    // `+ 0.0` turns -0.0 into 0.0 so both hash alike.
    let bits = |t: &TierCost| {
        if t.available {
            [
                1,
                (t.objective + 0.0).to_bits(),
                (t.storage_core_us + 0.0).to_bits(),
                (t.compute_core_us + 0.0).to_bits(),
            ]
        } else {
            [0; 4]
        }
    };
    // A tier with zero usable cores admits only placements that occupy none of them.
    let usable = |t: &TierCost| {
        t.available
            && (caps[0] > 0.0 || t.storage_core_us == 0.0)
            && (caps[1] > 0.0 || t.compute_core_us == 0.0)
    };
    let mut index: HashMap<[u64; 8], usize> = HashMap::new();
    let mut groups: Vec<Group> = Vec::new();
    let mut group_of = Vec::with_capacity(classes.len());
    for class in classes {
        let [a, b, c, d] = bits(&class.storage);
        let [e, f, g, h] = bits(&class.compute);
        let key = [a, b, c, d, e, f, g, h];
        // An unavailable tier's fields may be garbage (NaN): keep none of them.
        let clean = |t: TierCost| {
            if t.available {
                t
            } else {
                TierCost::unavailable()
            }
        };
        let at = *index.entry(key).or_insert_with(|| {
            groups.push(Group {
                rate: 0.0,
                storage: clean(class.storage),
                compute: clean(class.compute),
                storage_usable: usable(&class.storage),
                compute_usable: usable(&class.compute),
            });
            groups.len() - 1
        });
        groups[at].rate += class.rate_per_s;
        group_of.push(at);
    }
    (groups, group_of)
}

/// The LP over the groups that take part (positive rate, at least one usable tier), scaled so
/// every number the solver sees is of order 1: shares are fractions, rates are weights summing
/// to at most 1, capacity rows have right-hand side 1 and objectives are divided by the largest.
#[derive(Debug)]
struct Lp<'a> {
    groups: &'a [Group],
    /// Indices (into `groups`) of the groups in the LP.
    members: Vec<usize>,
    /// `rate / total_rate` per group.
    weights: Vec<f64>,
    caps: [f64; 2],
    obj_scale: f64,
    n_vars: usize,
}

/// The variables of one build of the LP, per member: (storage, compute).
type Vars = Vec<(Option<Variable>, Option<Variable>)>;

impl<'a> Lp<'a> {
    fn new(groups: &'a [Group], caps: [f64; 2], total_rate: f64) -> Self {
        let members: Vec<usize> = (0..groups.len())
            .filter(|&g| {
                groups[g].rate > 0.0 && (groups[g].storage_usable || groups[g].compute_usable)
            })
            .collect();
        let weights = groups
            .iter()
            .map(|g| {
                if total_rate > 0.0 {
                    g.rate / total_rate
                } else {
                    0.0
                }
            })
            .collect();
        let n_vars = members
            .iter()
            .map(|&g| usize::from(groups[g].storage_usable) + usize::from(groups[g].compute_usable))
            .sum();
        let obj_scale = members
            .iter()
            .flat_map(|&g| {
                let g = &groups[g];
                [
                    (g.storage_usable, g.storage.objective),
                    (g.compute_usable, g.compute.objective),
                ]
            })
            .filter(|(usable, _)| *usable)
            .map(|(_, o)| o)
            .fold(0.0, f64::max);
        let obj_scale = if obj_scale > 0.0 { obj_scale } else { 1.0 };
        Self {
            groups,
            members,
            weights,
            caps,
            obj_scale,
            n_vars,
        }
    }

    /// Fresh variables, the served-fraction expression and the constraints (per-class
    /// `s + k <= 1` and the two capacity rows).
    fn build(&self) -> (ProblemVariables, Vars, Expression, Vec<good_lp::Constraint>) {
        let mut problem = ProblemVariables::new();
        let mut vars = Vec::with_capacity(self.members.len());
        let mut served = Expression::with_capacity(self.n_vars);
        let mut rows = [
            Expression::with_capacity(self.n_vars),
            Expression::with_capacity(self.n_vars),
        ];
        let mut row_used = [false; 2];
        let mut constraints = Vec::with_capacity(self.members.len() + 2);
        for &g in &self.members {
            let group = &self.groups[g];
            let mut add = |usable: bool, tier: &TierCost| {
                usable.then(|| {
                    let v = problem.add(variable().min(0.0).max(1.0));
                    served.add_mul(self.weights[g], v);
                    let cores = [tier.storage_core_us, tier.compute_core_us];
                    for (r, row) in rows.iter_mut().enumerate() {
                        let (cap, core_us) = (self.caps[r], cores[r]);
                        if core_us > 0.0 {
                            row_used[r] = true;
                            // Cores this variable occupies at share 1, over the usable cores.
                            row.add_mul(group.rate * core_us / US_PER_S / cap, v);
                        }
                    }
                    v
                })
            };
            let s = add(group.storage_usable, &group.storage);
            let k = add(group.compute_usable, &group.compute);
            if let (Some(s), Some(k)) = (s, k) {
                constraints.push((s + k).leq(1.0));
            }
            vars.push((s, k));
        }
        for (row, used) in rows.into_iter().zip(row_used) {
            if used {
                constraints.push(row.leq(1.0));
            }
        }
        (problem, vars, served, constraints)
    }

    /// Stage 1: the largest served fraction of the total rate.
    fn max_goodput(&self) -> Result<f64, BoundError> {
        let (problem, _, served, constraints) = self.build();
        let solution = guarded(|| {
            problem
                .maximise(served.clone())
                .using(microlp)
                .with_all(constraints)
                .solve()
        })
        .map_err(|panic| solver_error("goodput", panic))?
        .map_err(|e| solver_error("goodput", e.to_string()))?;
        Ok(solution.eval(&served).clamp(0.0, 1.0))
    }

    /// Stage 2: with the served fraction at least `(1 - slack) * served`, the least total
    /// objective. Returns the shares per group ((0, 0) outside the LP) and the total
    /// objective per second of the solution, unscaled.
    fn min_objective(&self, served_max: f64) -> Result<(Vec<(f64, f64)>, f64), BoundError> {
        let mut last_error = None;
        for slack in GOODPUT_SLACKS {
            let (problem, vars, served, mut constraints) = self.build();
            let mut cost = Expression::with_capacity(self.n_vars);
            for (&g, &(s, k)) in self.members.iter().zip(&vars) {
                let group = &self.groups[g];
                if let Some(s) = s {
                    cost.add_mul(
                        self.weights[g] * group.storage.objective / self.obj_scale,
                        s,
                    );
                }
                if let Some(k) = k {
                    cost.add_mul(
                        self.weights[g] * group.compute.objective / self.obj_scale,
                        k,
                    );
                }
            }
            constraints.push(served.geq(served_max * (1.0 - slack)));
            let outcome = guarded(|| {
                problem
                    .minimise(cost)
                    .using(microlp)
                    .with_all(constraints)
                    .solve()
            });
            let solution = match outcome {
                Ok(Ok(solution)) => solution,
                Ok(Err(ResolutionError::Infeasible)) => {
                    last_error = Some(ResolutionError::Infeasible.to_string());
                    continue;
                }
                Ok(Err(e)) => return Err(solver_error("objective", e.to_string())),
                Err(panic) => return Err(solver_error("objective", panic)),
            };
            let mut shares = vec![(0.0, 0.0); self.groups.len()];
            let mut total = 0.0;
            for (&g, &(s, k)) in self.members.iter().zip(&vars) {
                let group = &self.groups[g];
                let s = s.map_or(0.0, |v| solution.value(v).clamp(0.0, 1.0));
                let k = k.map_or(0.0, |v| solution.value(v).clamp(0.0, 1.0 - s));
                total += group.rate * (s * group.storage.objective + k * group.compute.objective);
                shares[g] = (s, k);
            }
            return Ok((shares, total));
        }
        Err(solver_error("objective", last_error.unwrap_or_default()))
    }
}

fn solver_error(stage: &'static str, message: String) -> BoundError {
    BoundError::Solver { stage, message }
}

/// Runs `f`, turning a panic (microlp documents that it may panic on hard problems) into its
/// message, so [`solve`] never panics.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown payload".to_owned());
        format!("panicked: {message}")
    })
}

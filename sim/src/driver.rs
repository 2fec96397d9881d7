//! Runs a whole scenario: every (placement policy x keep-alive policy x load point), spread over
//! the machine's cores, plus the offline bound and the peer figures, into one [`SimReport`].

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use anyhow::{Context, bail};
use sandstorm_cost_model::{Candidate, CostBreakdown, StartKind, Tier, Workload, estimate};
use sandstorm_naming::FunctionId;
use sandstorm_placement::{PlacerConfig, Policy};

use crate::bound::{self, Capacity, ClassDemand, TierCost};
use crate::engine::{self, ClusterShape, FunctionData, RunConfig};
use crate::profile::DataProfiles;
use crate::report::{
    BoundComparison, PeerComparison, RunResult, SCHEMA_VERSION, SimReport, TraceSummary,
};
use crate::scenario::{Admission, InstanceUnit, KeepAliveSpec, Scenario};
use crate::trace::Trace;

/// How to run a scenario, beyond what its file says.
#[derive(Debug, Clone, Default)]
pub struct SimOptions {
    /// Placement policies to run instead of the scenario's (names).
    pub policies: Vec<String>,
    /// Seed instead of the scenario's.
    pub seed: Option<u64>,
    /// Worker threads (0: one per core).
    pub threads: usize,
}

/// Progress of a scenario: arrivals simulated so far, out of `total`.
#[derive(Debug, Default)]
pub struct Progress {
    pub done: AtomicU64,
    pub total: AtomicU64,
}

/// One run to do.
#[derive(Debug, Clone, Copy)]
struct RunSpec {
    policy: Policy,
    keep_alive: KeepAliveSpec,
    load: f64,
}

/// Resolve policy names (the options' or else the scenario's), naming the scenario on error.
pub fn policies(scenario: &Scenario, options: &SimOptions) -> anyhow::Result<Vec<Policy>> {
    let names = if options.policies.is_empty() {
        &scenario.policies
    } else {
        &options.policies
    };
    names
        .iter()
        .map(|name| {
            name.parse::<Policy>()
                .with_context(|| format!("scenario {}: policy `{name}`", scenario.path.display()))
        })
        .collect()
}

/// The simulator's ground truth per function, from the scenario's data profiles.
pub fn function_data(profiles: &DataProfiles, trace: &Trace) -> Vec<FunctionData> {
    (0..trace.functions.len())
        .map(|i| {
            let p = profiles.get(FunctionId(i as u32));
            FunctionData {
                accesses: p.accesses,
                rounds: p.rounds,
                bytes: p.bytes,
                compute_us: p.compute_us,
            }
        })
        .collect()
}

/// Run every (policy, keep-alive, load) of `scenario`.
pub fn run_scenario(
    scenario: &Scenario,
    options: &SimOptions,
    progress: &Progress,
) -> anyhow::Result<SimReport> {
    let policies = policies(scenario, options)?;
    let trace = scenario
        .load_trace()
        .with_context(|| format!("scenario {}: loading its trace", scenario.path.display()))?;
    let profiles = DataProfiles::build(&scenario.data, &trace)
        .with_context(|| format!("scenario {}: data profiles", scenario.path.display()))?;
    let data = function_data(&profiles, &trace);
    let seed = options.seed.unwrap_or(scenario.seed);
    let mut specs = Vec::new();
    for &load in &scenario.load_scales {
        for &keep_alive in &scenario.keep_alive {
            for &policy in &policies {
                specs.push(RunSpec {
                    policy,
                    keep_alive,
                    load,
                });
            }
        }
    }
    let total: f64 = specs
        .iter()
        .map(|s| s.load * trace.total_invocations() as f64)
        .sum();
    progress.total.store(total as u64, Ordering::Relaxed);
    let outcomes = run_all(
        scenario,
        &trace,
        &data,
        seed,
        &specs,
        options.threads,
        progress,
    )?;

    let mut runs: Vec<RunResult> = Vec::with_capacity(outcomes.len());
    let bounds = if scenario.bound {
        Some(bounds(scenario, &trace, &data, seed)?)
    } else {
        None
    };
    for (spec, outcome) in specs.iter().zip(outcomes) {
        let mut result = outcome.result;
        if let Some((_, b)) = bounds.iter().flatten().find(|(load, _)| *load == spec.load) {
            let objective = outcome.mean_objective;
            result.bound = Some(BoundComparison {
                objective_bound: b.objective_per_invocation,
                objective,
                goodput_bound_per_s: b.goodput_per_s,
                gap: if b.objective_per_invocation > 0.0 {
                    objective / b.objective_per_invocation - 1.0
                } else {
                    0.0
                },
            });
        }
        runs.push(result);
    }
    let peer = peers(scenario, &runs);
    Ok(SimReport {
        schema_version: SCHEMA_VERSION,
        scenario: scenario.name.clone(),
        description: scenario.description.clone(),
        seed,
        trace: TraceSummary {
            format: trace.format.name().to_owned(),
            source: trace.source.clone(),
            functions: trace.functions.len() as u64,
            apps: trace.apps.len() as u64,
            invocations: trace.total_invocations(),
            span_s: trace.span_us as f64 / 1e6,
        },
        runs,
        peer,
    })
}

fn engine_config<'a>(
    scenario: &Scenario,
    data: &'a [FunctionData],
    spec: RunSpec,
    seed: u64,
) -> RunConfig<'a> {
    let c = &scenario.cluster;
    RunConfig {
        cluster: ClusterShape {
            storage_nodes: c.storage_nodes,
            storage_cores: c.storage_cores,
            compute_nodes: c.compute_nodes,
            compute_cores: c.compute_cores,
            compute_memory_mb: c.compute_memory_mb,
            compute_cpu: c.compute_cpu,
        },
        placer: PlacerConfig {
            params: scenario.costs,
            weights: scenario.weights,
            // No admission limit: `cores x (1 + inf)` saturates at u32::MAX invocations.
            max_queue_per_core: match c.admission {
                Admission::Limited => PlacerConfig::default().max_queue_per_core,
                Admission::Unlimited | Admission::Queue => f64::INFINITY,
            },
            ..PlacerConfig::default()
        },
        policy: spec.policy,
        keep_alive: spec.keep_alive.policy(),
        data,
        contexts_per_app: scenario.instances.per == InstanceUnit::App,
        concurrency: scenario.instances.concurrency,
        reuse: scenario.instances.reuse,
        pool_per_node: scenario.instances.pool_per_node,
        pool_refill_us: scenario.instances.pool_refill_us,
        slo_latency_us: scenario.slo.latency_us as f64,
        slo_slowdown: scenario.slo.slowdown,
        load: spec.load,
        seed,
        queue: c.admission == Admission::Queue,
    }
}

/// Run `specs` on `threads` workers (0: one per core); results in the order of `specs`.
fn run_all(
    scenario: &Scenario,
    trace: &Trace,
    data: &[FunctionData],
    seed: u64,
    specs: &[RunSpec],
    threads: usize,
    progress: &Progress,
) -> anyhow::Result<Vec<engine::RunOutcome>> {
    let threads = if threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        threads
    }
    .min(specs.len())
    .max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<engine::RunOutcome>>> = Mutex::new(vec![None; specs.len()]);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(&spec) = specs.get(i) else { break };
                    let cfg = engine_config(scenario, data, spec, seed);
                    let mut reported = 0;
                    let outcome = engine::run(trace, cfg, &mut |done| {
                        progress.done.fetch_add(done - reported, Ordering::Relaxed);
                        reported = done;
                    });
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(outcome);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    if results.iter().any(Option::is_none) {
        bail!("a simulation worker failed; see the log above");
    }
    Ok(results.into_iter().flatten().collect())
}

/// The offline bound at each load point, over invocation classes = functions, for the arrivals
/// the runs replay (the same seed and load).
///
/// Each class is charged exactly the core time the engine holds ([`engine::held_core_us`],
/// truncated to whole microseconds as the engine does, summed over its real arrivals; the
/// storage node's remote-request work per round, rounded as the engine does), with a warm start
/// (any other start only holds more). Goodput counts completions within the objective, which
/// can come after the trace's span: capacity is the cores over the span plus the latest deadline
/// any invocation has, so that no run can beat the bound by finishing its backlog late.
fn bounds(
    scenario: &Scenario,
    trace: &Trace,
    data: &[FunctionData],
    seed: u64,
) -> anyhow::Result<Vec<(f64, bound::Bound)>> {
    let params = &scenario.costs;
    let weights = &scenario.weights;
    let c = &scenario.cluster;
    let span_s = (trace.span_us as f64 / 1e6).max(1e-9);
    let n_functions = trace.functions.len();
    let workload = |i: usize, duration_us: f64| {
        let d = data[i];
        Workload {
            compute_us: d.compute_us.map_or(duration_us, |c| c as f64),
            accesses: f64::from(d.accesses),
            rounds: f64::from(d.rounds),
            bytes: d.bytes as f64,
        }
    };
    let estimate_at = |work: &Workload, tier, local_fraction| {
        let start = if tier == Tier::Storage {
            StartKind::Assembled
        } else {
            StartKind::Warm
        };
        let candidate = Candidate {
            tier,
            start,
            queue_us: 0.0,
            local_fraction,
        };
        estimate(params, work, &candidate)
    };
    let cost = |work: &Workload, tier| {
        estimate_at(work, tier, if tier == Tier::Storage { 1.0 } else { 0.0 })
    };
    // The latest a good completion can come after its arrival: the objective of the slowest
    // placement unloaded (the engine's `unloaded + rtt`; a storage node away from the data
    // waits for it like a compute node).
    let deadline_us = |work: &Workload, k: &CostBreakdown| {
        let mut unloaded = k.latency_us();
        if c.storage_nodes > 0 {
            unloaded = unloaded.max(estimate_at(work, Tier::Storage, 0.0).latency_us());
        }
        (scenario.slo.latency_us as f64).max(scenario.slo.slowdown * (unloaded + params.rtt_us))
    };
    let mut out = Vec::new();
    for &load in &scenario.load_scales {
        let mut counts = vec![0u64; n_functions];
        let mut duration_sum = vec![0f64; n_functions];
        let mut held = vec![(0u64, 0u64); n_functions];
        let mut max_deadline_us = 0f64;
        for a in trace.arrivals(seed, load) {
            let i = a.function.0 as usize;
            counts[i] += 1;
            duration_sum[i] += a.duration_us as f64;
            let work = workload(i, a.duration_us as f64);
            let (s, k) = (cost(&work, Tier::Storage), cost(&work, Tier::Compute));
            held[i].0 += engine::held_core_us(params, &s) as u64;
            held[i].1 += engine::held_core_us(params, &k) as u64;
            max_deadline_us = max_deadline_us.max(deadline_us(&work, &k));
        }
        let stretch = (span_s + max_deadline_us / 1e6) / span_s;
        let capacity = Capacity {
            storage_cores: f64::from(c.storage_nodes * c.storage_cores) * stretch,
            compute_cores: f64::from(c.compute_nodes * c.compute_cores) * stretch,
            max_utilisation: 1.0,
        };
        let mut classes = Vec::new();
        for (i, &n) in counts.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let mean = workload(i, duration_sum[i] / n as f64);
            let (s, k) = (cost(&mean, Tier::Storage), cost(&mean, Tier::Compute));
            let per = |sum: u64| sum as f64 / n as f64;
            let storage = if c.storage_nodes > 0 {
                TierCost::on_storage(weights.objective(&s, 0.0), per(held[i].0))
            } else {
                TierCost::unavailable()
            };
            let rounds = data[i].rounds;
            let remote_us = if c.storage_nodes > 0 && data[i].accesses > 0 && rounds > 0 {
                (engine::round_work_us(&k, rounds) * u64::from(rounds)) as f64
            } else {
                0.0
            };
            let compute = if c.compute_nodes > 0 {
                TierCost::on_compute(weights.objective(&k, 0.0), per(held[i].1))
                    .with_storage_core_us(remote_us)
            } else {
                TierCost::unavailable()
            };
            classes.push(ClassDemand {
                name: trace.functions[i].name.clone(),
                rate_per_s: n as f64 / span_s,
                storage,
                compute,
            });
        }
        let b = bound::solve(&classes, &capacity).with_context(|| {
            format!(
                "scenario {}: offline bound at load {load}",
                scenario.path.display()
            )
        })?;
        out.push((load, b));
    }
    Ok(out)
}

/// Our figures beside each peer figure: the first policy's run at load 1.0 with that keep-alive.
fn peers(scenario: &Scenario, runs: &[RunResult]) -> Vec<PeerComparison> {
    scenario
        .peers
        .iter()
        .filter_map(|p| {
            let name = p.keep_alive.to_string();
            let run = runs
                .iter()
                .find(|r| r.keep_alive == name && r.load == 1.0)?;
            Some(PeerComparison {
                keep_alive: name,
                peer: p.source.clone(),
                peer_cold_starts: p.cold_starts,
                peer_invocations: p.invocations,
                cold_starts: run.cold_starts,
                invocations: run.invocations,
                difference: if p.cold_starts > 0 {
                    run.cold_starts as f64 / p.cold_starts as f64 - 1.0
                } else {
                    0.0
                },
            })
        })
        .collect()
}

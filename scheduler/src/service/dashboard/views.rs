//! What the dashboard's JSON endpoints say about the cluster and the functions, built from the
//! scheduler's state (one short hold of its lock) and the hub's node statistics, series and
//! plans.

use serde::Serialize;

use super::hub::{self, Bucket, FunctionPlan, Hub, SERIES_BUCKET_S};
use crate::service::state::Scheduler;

/// One core of a node, as it last reported it.
#[derive(Debug, Serialize)]
pub struct CoreView {
    pub core: u32,
    /// Fraction of the last interval the core was busy, 0..1.
    pub busy: f64,
    pub queue_len: u32,
    pub invocations: u64,
}

#[derive(Debug, Serialize)]
pub struct PoolView {
    pub part: String,
    pub ready: u32,
    pub target: u32,
}

/// One node: role, liveness, per-core load, warm containers, pools, data held.
#[derive(Debug, Serialize)]
pub struct NodeView {
    pub name: String,
    pub id: u32,
    pub role: &'static str,
    pub address: String,
    pub alive: bool,
    /// Milliseconds since its last statistics (0 if never heard from).
    pub silent_ms: u64,
    pub cores: u32,
    /// Invocations the scheduler placed there and has not seen finish.
    pub load: u32,
    /// Mean busy fraction of its cores, 0..1.
    pub busy: f64,
    /// Invocations waiting in its run queues.
    pub queue_len: u32,
    pub functions: u32,
    pub keys: u64,
    pub bytes: u64,
    pub warm_containers: u32,
    pub pools: Vec<PoolView>,
    /// Empty until the node's first statistics.
    pub per_core: Vec<CoreView>,
}

#[derive(Debug, Serialize)]
pub struct ParamView {
    /// The node whose own measurements these are; empty for the cluster's.
    pub node: String,
    pub name: String,
    pub micros: f64,
    /// Samples taken (0: still the documented default).
    pub samples: u32,
}

/// The cluster as the scheduler sees it.
#[derive(Debug, Serialize)]
pub struct ClusterView {
    pub at_unix_ms: u64,
    /// Where the decisions come from: `scheduler`, or `bench` (placement only, nothing runs).
    pub source: &'static str,
    pub policy: String,
    pub tenants: u32,
    pub functions: u32,
    pub nodes: Vec<NodeView>,
    pub params: Vec<ParamView>,
    /// Decisions published since the scheduler started.
    pub decisions_total: u64,
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The cluster view, or an empty one (`source: bench`) without a scheduler.
pub fn cluster(scheduler: Option<&Scheduler>, hub: &Hub) -> ClusterView {
    let Some(scheduler) = scheduler else {
        return ClusterView {
            at_unix_ms: unix_ms(),
            source: "bench",
            policy: String::new(),
            tenants: 0,
            functions: 0,
            nodes: Vec::new(),
            params: Vec::new(),
            decisions_total: hub.total(),
        };
    };
    let status = scheduler.status();
    let nodes = status
        .nodes
        .into_iter()
        .map(|n| {
            let snapshot = hub.node_snapshot(n.node_id);
            let stats = snapshot.as_ref().map(|s| &s.stats);
            NodeView {
                role: hub::tier_name(n.role),
                id: n.node_id,
                alive: n.alive,
                silent_ms: n.silent_ms,
                cores: n.cores,
                load: n.load,
                busy: n.busy,
                queue_len: n.queue_len,
                functions: n.functions,
                keys: n.keys,
                bytes: stats.map_or(0, |s| s.bytes),
                warm_containers: stats.map_or(0, |s| s.warm_containers),
                pools: stats.map_or_else(Vec::new, |s| {
                    s.pools
                        .iter()
                        .map(|p| PoolView {
                            part: p.part.clone(),
                            ready: p.ready,
                            target: p.target,
                        })
                        .collect()
                }),
                per_core: stats.map_or_else(Vec::new, |s| {
                    s.cores
                        .iter()
                        .map(|c| CoreView {
                            core: c.core,
                            busy: c.busy.clamp(0.0, 1.0),
                            queue_len: c.queue_len,
                            invocations: c.invocations,
                        })
                        .collect()
                }),
                name: n.name,
                address: n.address,
            }
        })
        .collect();
    ClusterView {
        at_unix_ms: unix_ms(),
        source: "scheduler",
        policy: status.policy,
        tenants: status.tenants,
        functions: status.functions,
        nodes,
        params: status
            .params
            .into_iter()
            .map(|p| ParamView {
                node: p.node,
                name: p.name,
                micros: p.micros,
                samples: p.samples,
            })
            .collect(),
        decisions_total: hub.total(),
    }
}

/// A function's profile: what the profiler measured.
#[derive(Debug, Serialize)]
pub struct ProfileView {
    pub invocations: u64,
    pub duration_p50_us: u64,
    pub duration_p90_us: u64,
    pub duration_p99_us: u64,
    pub cpu_p50_us: u64,
    pub cpu_p90_us: u64,
    pub cpu_p99_us: u64,
    pub mean_accesses: f64,
    pub mean_rounds: f64,
    pub mean_bytes: f64,
    pub arrival_rate_per_s: f64,
    /// Coefficient of variation of inter-arrival gaps.
    pub burstiness: f64,
}

/// One deployed function.
#[derive(Debug, Serialize)]
pub struct FunctionView {
    pub tenant: String,
    pub name: String,
    pub memory_mb: u32,
    pub deadline_ms: u32,
    /// `None` before its first invocation.
    pub profile: Option<ProfileView>,
    /// Tier and start-kind counts per `bucket_s` bucket, oldest first.
    pub series: Vec<Bucket>,
    /// Decisions seen by the dashboard since the scheduler started.
    pub decisions: u64,
    /// Compute-node starts that were not warm.
    pub cold_starts: u64,
    /// `cold_starts / decisions` (0 with no decisions).
    pub cold_start_ratio: f64,
    /// The re-provisioner's latest plan; `None` until one is made.
    pub plan: Option<FunctionPlan>,
}

#[derive(Debug, Serialize)]
pub struct FunctionsView {
    pub bucket_s: u64,
    pub functions: Vec<FunctionView>,
}

/// What the re-provisioner's latest round planned for `function`, if it modelled it.
fn plan_view(
    report: &crate::provision::PlanReport,
    function: sandstorm_naming::FunctionId,
    now_us: u64,
    inner: &crate::service::state::Inner,
) -> Option<FunctionPlan> {
    let f = report.plan.function(function)?;
    let node = |id: sandstorm_naming::NodeId| inner.node_name(id.0);
    let age_ms = now_us.saturating_sub(report.solved_at_us) / 1_000;
    let now_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Some(FunctionPlan {
        at_unix_ms: now_unix_ms.saturating_sub(age_ms),
        dedicated_storage_cores: f
            .dedicated_cores
            .iter()
            .map(|&(n, c)| (node(n), c))
            .collect(),
        warm_containers: f.warm_on.iter().map(|&n| (node(n), 1)).collect(),
        pool_sizes: f
            .warm_on
            .iter()
            .chain(
                f.compute_share
                    .iter()
                    .filter(|(_, s)| *s > 0.0)
                    .map(|(n, _)| n),
            )
            .filter_map(|&n| report.plan.pool_size(n).map(|p| (node(n), p)))
            .collect::<std::collections::BTreeMap<_, _>>()
            .into_iter()
            .collect(),
        note: format!(
            "round {}: {:.1} invocations/s, {:.0}% expected in storage; solved in {} us",
            report.round,
            f.rate_per_s,
            f.storage_share * 100.0,
            report.solve_us
        ),
    })
}

/// Every deployed function. Also forgets the series of functions no longer deployed.
pub fn functions(scheduler: Option<&Scheduler>, hub: &Hub) -> FunctionsView {
    let mut out = Vec::new();
    if let Some(scheduler) = scheduler {
        let now_us = scheduler.now_us();
        let latest_plan = scheduler.plan();
        let inner = scheduler.lock();
        for spec in inner.catalog.functions() {
            let tenant = inner
                .catalog
                .tenant(spec.tenant)
                .map_or_else(|| spec.tenant.to_string(), |t| t.name.clone());
            let profile = scheduler
                .history()
                .profiler
                .profile(spec.id)
                .map(|p| ProfileView {
                    invocations: p.invocations(),
                    duration_p50_us: p.duration_us(0.5),
                    duration_p90_us: p.duration_us(0.9),
                    duration_p99_us: p.duration_us(0.99),
                    cpu_p50_us: p.cpu_us(0.5),
                    cpu_p90_us: p.cpu_us(0.9),
                    cpu_p99_us: p.cpu_us(0.99),
                    mean_accesses: p.mean_accesses(),
                    mean_rounds: p.mean_rounds(),
                    mean_bytes: p.mean_bytes(),
                    arrival_rate_per_s: p.arrival_rate_per_s(),
                    burstiness: p.burstiness(),
                });
            let deadline_ms = inner
                .functions
                .get(&spec.id)
                .map_or(0, |f| f.limits.deadline_ms);
            out.push(FunctionView {
                memory_mb: spec.memory_mb,
                deadline_ms,
                profile,
                series: Vec::new(),
                decisions: 0,
                cold_starts: 0,
                cold_start_ratio: 0.0,
                plan: latest_plan
                    .as_deref()
                    .and_then(|report| plan_view(report, spec.id, now_us, &inner)),
                tenant,
                name: spec.name.clone(),
            });
        }
    }
    // The hub's locks are taken after the scheduler's is let go.
    let deployed: std::collections::HashSet<(String, String)> = out
        .iter()
        .map(|f| (f.tenant.clone(), f.name.clone()))
        .collect();
    for f in &mut out {
        if let Some(s) = hub.series(&f.tenant, &f.name) {
            f.decisions = s.total;
            f.cold_starts = s.cold_starts;
            f.cold_start_ratio = if s.total == 0 {
                0.0
            } else {
                s.cold_starts as f64 / s.total as f64
            };
            f.series = s.buckets.into_iter().collect();
        }
    }
    if scheduler.is_some() {
        for (tenant, name) in hub.series_keys() {
            if !deployed.contains(&(tenant.clone(), name.clone())) {
                hub.forget_function(&tenant, &name);
            }
        }
    } else {
        // Bench: the functions are the ones decisions named.
        for (tenant, name) in hub.series_keys() {
            if let Some(s) = hub.series(&tenant, &name) {
                out.push(FunctionView {
                    memory_mb: 0,
                    deadline_ms: 0,
                    profile: None,
                    decisions: s.total,
                    cold_starts: s.cold_starts,
                    cold_start_ratio: if s.total == 0 {
                        0.0
                    } else {
                        s.cold_starts as f64 / s.total as f64
                    },
                    series: s.buckets.into_iter().collect(),
                    plan: None,
                    tenant,
                    name,
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.tenant, &a.name).cmp(&(&b.tenant, &b.name)));
    FunctionsView {
        bucket_s: SERIES_BUCKET_S,
        functions: out,
    }
}

//! The periodic re-provisioner: every [`SchedulerConfig::reprovision_interval`] it turns the
//! recent profiles and the live nodes into the [`crate::provision`] model, solves it off the
//! async threads, and applies the plan through each node's `Provision` call: dedicated worker
//! cores on storage nodes; warm containers kept, and pool sizes, on compute nodes. The compute
//! nodes' kept containers are pinned in the warm table, so placement sees them as warm
//! candidates. The latest plan, with what nodes could not apply, is in the cluster status.
//!
//! [`SchedulerConfig::reprovision_interval`]: super::SchedulerConfig::reprovision_interval

use std::sync::Arc;
use std::time::Instant;

use sandstorm_naming::{FunctionId, NodeId, NodeRole};
use sandstorm_proto::v1 as pb;
use tracing::{debug, warn};

use super::state::Scheduler;
use crate::provision::{self, FunctionDemand, NodeSupply, Plan, PlanReport, ProvisionConfig};

/// A function whose last arrival is this many of its mean gaps old has gone quiet: its rate is
/// read from the silence instead.
const QUIET_GAPS: f64 = 4.0;

impl Scheduler {
    /// Runs re-provisioning rounds forever at the configured interval (0: never). Rounds run
    /// one after another on this task: a slow solve delays the next round, never stacks them.
    pub async fn reprovision_loop(self: Arc<Self>) {
        let interval = self.config.reprovision_interval;
        if interval.is_zero() {
            return;
        }
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await; // The first tick is immediate: there are no profiles yet.
        loop {
            tick.tick().await;
            self.reprovision().await;
        }
    }

    /// One round: gather, solve, apply, report.
    pub async fn reprovision(self: &Arc<Self>) -> Arc<PlanReport> {
        let (demand, nodes, params, weights, config) = self.provision_inputs();
        let started = Instant::now();
        let solved = tokio::task::spawn_blocking(move || {
            provision::solve(&demand, &nodes, &params, &weights, &config)
        })
        .await;
        let solve_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        metrics::histogram!("sandstorm_reprovision_solve_seconds")
            .record(started.elapsed().as_secs_f64());
        let mut report = PlanReport {
            solved_at_us: self.now_us(),
            solve_us,
            ..PlanReport::default()
        };
        match solved {
            Ok(Ok(plan)) => {
                report.problems = self.apply(&plan).await;
                report.plan = plan;
            }
            Ok(Err(e)) => report
                .problems
                .push(format!("this round was not solved: {e}")),
            Err(e) => report
                .problems
                .push(format!("the solver thread failed: {e}")),
        }
        for problem in &report.problems {
            warn!(%problem, "re-provisioning");
        }
        metrics::gauge!("sandstorm_reprovision_objective").set(report.plan.objective);
        self.history().data_homes.decay();
        let mut slot = self.plan_slot();
        report.round = slot.as_ref().map_or(0, |p| p.round) + 1;
        let report = Arc::new(report);
        *slot = Some(report.clone());
        drop(slot);
        debug!(
            round = report.round,
            functions = report.plan.functions.len(),
            solve_us,
            "re-provisioned"
        );
        report
    }

    /// The model's inputs from the profiles and the live nodes, copied under the lock.
    fn provision_inputs(
        &self,
    ) -> (
        Vec<FunctionDemand>,
        Vec<NodeSupply>,
        sandstorm_cost_model::CostParams,
        sandstorm_cost_model::Weights,
        ProvisionConfig,
    ) {
        let now = self.now_us();
        let mut inner = self.lock();
        inner.refresh_alive(now);
        let demand = inner
            .functions
            .values()
            .filter_map(|f| {
                let history = self.history();
                let profile = history.profiler.profile(f.id)?;
                let mut rate = profile.arrival_rate_per_s();
                if let Some(last) = profile.last_arrival_us()
                    && rate > 0.0
                {
                    let silence_us = now.saturating_sub(last) as f64;
                    if silence_us > QUIET_GAPS * 1e6 / rate {
                        rate = rate.min(1e6 / silence_us);
                    }
                }
                Some(FunctionDemand {
                    function: f.id,
                    tenant: f.tenant,
                    name: f.name.clone(),
                    rate_per_s: rate,
                    workload: profile.workload(),
                    memory_mb: f64::from(f.limits.memory_mb.max(1)),
                    data_home: history.data_homes.shares(f.id),
                })
            })
            .collect();
        let nodes = inner
            .view
            .nodes()
            .iter()
            .filter(|n| n.alive)
            .map(|n| NodeSupply {
                id: n.id,
                role: n.role,
                cores: n.cores,
                memory_mb: n.memory_mb,
            })
            .collect();
        let placer = *inner.placer.config();
        (
            demand,
            nodes,
            placer.params,
            placer.weights,
            self.config.provision,
        )
    }

    /// Sends each live node its part of `plan`; returns what could not be applied.
    async fn apply(&self, plan: &Plan) -> Vec<String> {
        let timeout = self.config.rpc_timeout;
        let targets: Vec<(NodeId, NodeRole, String, _)> = {
            let inner = self.lock();
            inner
                .view
                .nodes()
                .iter()
                .filter(|n| n.alive)
                .filter_map(|n| {
                    let entry = inner.nodes.get(n.id.0 as usize)?;
                    Some((n.id, n.role, inner.node_name(n.id.0), entry.agent.clone()))
                })
                .collect()
        };
        let reference = |f: &provision::FunctionPlan| pb::FunctionRef {
            tenant: f.tenant.0,
            name: f.name.clone(),
        };
        let mut problems = Vec::new();
        for (id, role, name, mut agent) in targets {
            let request = match role {
                NodeRole::Storage => pb::ProvisionRequest {
                    dedicated: plan
                        .dedicated_on(id)
                        .into_iter()
                        .map(|(f, cores)| pb::DedicatedCores {
                            function: Some(reference(f)),
                            cores,
                        })
                        .collect(),
                    ..Default::default()
                },
                NodeRole::Compute => pb::ProvisionRequest {
                    keep_warm: plan.warm_on(id).into_iter().map(reference).collect(),
                    pool_size: plan.pool_size(id).unwrap_or(0),
                    ..Default::default()
                },
            };
            let mut call = tonic::Request::new(request);
            call.set_timeout(timeout);
            match tokio::time::timeout(timeout, agent.provision(call)).await {
                Ok(Ok(response)) => {
                    problems.extend(
                        response
                            .into_inner()
                            .skipped
                            .into_iter()
                            .map(|s| format!("{name}: {s}")),
                    );
                    if role == NodeRole::Compute {
                        let kept: Vec<FunctionId> =
                            plan.warm_on(id).iter().map(|f| f.function).collect();
                        self.lock().warm.pin(id, &kept);
                    }
                }
                Ok(Err(status)) => problems.push(format!(
                    "{name}: the plan was refused: {}: {}",
                    status.code(),
                    status.message()
                )),
                Err(_) => {
                    problems.push(format!("{name}: no answer to the plan within {timeout:?}"))
                }
            }
        }
        problems
    }

    /// The latest plan as the status reports it, restricted to `tenant`'s functions if given.
    pub fn plan_status(&self, tenant: Option<sandstorm_naming::TenantId>) -> pb::ProvisionPlan {
        let now = self.now_us();
        let Some(report) = self.plan() else {
            return pb::ProvisionPlan::default();
        };
        let inner = self.lock();
        let node = |id: NodeId| inner.node_name(id.0);
        pb::ProvisionPlan {
            round: report.round,
            age_ms: now.saturating_sub(report.solved_at_us) / 1_000,
            solve_us: report.solve_us,
            objective: report.plan.objective,
            functions: report
                .plan
                .functions
                .iter()
                .filter(|f| tenant.is_none_or(|t| t == f.tenant))
                .map(|f| pb::FunctionProvision {
                    function: f.name.clone(),
                    tenant: f.tenant.0,
                    rate_per_s: f.rate_per_s,
                    storage_share: f.storage_share,
                    dedicated: f
                        .dedicated_cores
                        .iter()
                        .map(|&(n, cores)| pb::DedicatedCoresPlan {
                            node: node(n),
                            cores,
                        })
                        .collect(),
                    warm_on: f.warm_on.iter().map(|&n| node(n)).collect(),
                })
                .collect(),
            pools: report
                .plan
                .pools
                .iter()
                .map(|&(n, size)| pb::PoolProvision {
                    node: node(n),
                    size,
                })
                .collect(),
            overloaded: report.plan.overloaded.iter().map(|&n| node(n)).collect(),
            // Problems name functions of any tenant: only the operator sees them.
            problems: if tenant.is_none() {
                report.problems.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// The latest round, if one ran.
    pub fn plan(&self) -> Option<Arc<PlanReport>> {
        self.plan_slot().clone()
    }
}

//! The invocation path: catalog lookup -> placement (`Placer::place_recorded`, the same core the
//! simulator runs) -> the chosen node's execute stream ([`super::executor`]) -> the
//! record, the profile and the view's release. Chains ([`super::chain`]) run their steps that
//! hand off through the global path through it.
//!
//! Fair admission: a node admits `cores x (1 + queue)` invocations at once (the placement
//! core's limit), and one tenant may hold all of those places on a node but one per core
//! ([`NodeShares`]), so a tenant flooding a node with long invocations cannot lock the other
//! tenants out (the node's fair queue runs their calls at its next tick); its own excess is
//! refused with RESOURCE_EXHAUSTED naming its share.
//!
//! Failures: every call to a node has a deadline (the function's plus slack). A node that cannot
//! be reached, or refuses for lack of room, never started the invocation: it is placed again
//! without that node. A node that fails mid-invocation is an UNAVAILABLE error naming it, unless
//! the caller marked the invocation retryable. Either way the reservation is released.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandstorm_naming::{InvocationId, NodeId, TenantId};
use sandstorm_profiler::Observation;
use sandstorm_proto::v1 as pb;
use sandstorm_proto::v1::node_agent_client::NodeAgentClient;

use tonic::transport::Channel;
use tracing::{Instrument as _, debug, info_span, warn};

use super::error::ApiError;
use super::executor::Executor;
use super::failure::Failure;
use super::holds::NodeShares;
use super::record;
use super::state::{FunctionCode, FunctionEntry, Scheduler};
use crate::placement::{PlacementRequest, Reservation};

/// Most steps in a chain.
pub const MAX_CHAIN_STEPS: usize = 16;
/// Most attempts of one invocation (on distinct nodes).
pub const MAX_ATTEMPTS: usize = 3;
/// Most hint keys per invocation.
pub const MAX_HINT_KEYS: usize = 64;

/// A placement the scheduler holds until the node answers.
pub(super) struct Placed {
    pub(super) node: NodeId,
    pub(super) name: String,
    pub(super) agent: NodeAgentClient<Channel>,
    pub(super) executor: Arc<Executor>,
    pub(super) reservation: HeldReservation,
    pub(super) record: pb::InvocationRecord,
}

/// A reservation on the live view, owned by the invocation that made it. Whatever ends the
/// call (an answer, a failure, the client's deadline, a cancelled request, a dropped stream),
/// the reservation goes back: completed when the node answered, and otherwise unreserved when
/// this is dropped. Without the drop, every abandoned call kept its node's load raised for
/// good, and a burst of client time-outs left every node at its admission limit.
///
/// It takes the scheduler's lock when dropped armed: never drop one while holding it.
pub(super) struct HeldReservation {
    scheduler: Arc<Scheduler>,
    /// The reservation and its entry in [`HeldTable`]; `None` once given back.
    reservation: Option<(Reservation, u64)>,
    /// The tenant whose place on the node (in [`NodeShares`]) the reservation holds.
    tenant: TenantId,
}

impl HeldReservation {
    /// Holds `reservation`, entered in `Inner::held` as `entry` with the place in
    /// `Inner::shares` `tenant` took with it.
    pub(super) fn new(
        scheduler: Arc<Scheduler>,
        reservation: Option<(Reservation, u64)>,
        tenant: TenantId,
    ) -> Self {
        Self {
            scheduler,
            reservation,
            tenant,
        }
    }

    /// The invocation ran to an answer: its load and backlog leave the view (the memory of a
    /// new context stays, held by the context, until the node's next report shows it).
    pub(super) fn complete(&mut self, inner: &mut super::state::Inner) {
        if let Some((r, entry)) = self.reservation.take() {
            inner.held.give_back(r.node, entry);
            inner.view.complete(r.node, r.work_us);
            inner.shares.give_back(self.tenant, r.node);
        }
    }

    /// The invocation did not complete: give the reservation back now.
    pub(super) fn release(&mut self) {
        if let Some((r, entry)) = self.reservation.take() {
            let mut inner = self.scheduler.lock();
            inner.held.give_back(r.node, entry);
            inner.shares.give_back(self.tenant, r.node);
            inner.view.unreserve(r);
        }
    }
}

impl Drop for HeldReservation {
    fn drop(&mut self) {
        self.release();
    }
}

/// Owners of the hint keys, with the share of the keys each holds (most first).
fn data_shares(owners: impl Iterator<Item = NodeId>) -> Vec<(NodeId, f64)> {
    let mut counts: Vec<(NodeId, u32)> = Vec::new();
    let mut total = 0u32;
    for node in owners {
        total += 1;
        match counts.iter_mut().find(|(n, _)| *n == node) {
            Some((_, c)) => *c += 1,
            None => counts.push((node, 1)),
        }
    }
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    counts
        .into_iter()
        .map(|(n, c)| (n, f64::from(c) / f64::from(total.max(1))))
        .collect()
}

/// Nanoseconds of `d`, saturating.
pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Scheduler {
    /// Checks an input against the function's limit.
    pub(super) fn check_payload(
        &self,
        f: &FunctionEntry,
        what: String,
        size: usize,
    ) -> Result<(), ApiError> {
        let limit = match f.limits.max_payload_bytes {
            0 => self.config.max_payload_bytes,
            n => (n as usize).min(self.config.max_payload_bytes),
        };
        if size > limit {
            return Err(ApiError::TooLarge { what, size, limit });
        }
        Ok(())
    }

    /// Runs one invocation of `function` of `tenant`.
    pub async fn invoke(
        self: &Arc<Self>,
        tenant: TenantId,
        request: pb::InvokeRequest,
        hop: Option<pb::ChainHop>,
    ) -> Result<pb::InvokeResponse, ApiError> {
        let id = self.next_invocation_id();
        self.invoke_as(id, tenant, request, hop).await
    }

    /// [`Scheduler::invoke`] with an invocation id handed out earlier (async invocations).
    pub async fn invoke_as(
        self: &Arc<Self>,
        id: u64,
        tenant: TenantId,
        request: pb::InvokeRequest,
        hop: Option<pb::ChainHop>,
    ) -> Result<pb::InvokeResponse, ApiError> {
        if pb::Tier::try_from(request.tier).is_err() {
            return Err(ApiError::InvalidArgument(format!(
                "tier {} is not a tier: 0 (either), 1 (TIER_STORAGE) or 2 (TIER_COMPUTE)",
                request.tier
            )));
        }
        let f = self.lock().function(tenant, &request.function)?.clone();
        if matches!(f.code, FunctionCode::Native(_)) && request.tier == pb::Tier::Storage as i32 {
            return Err(ApiError::InvalidArgument(format!(
                "{} is a native command, which runs on compute nodes only; TIER_STORAGE cannot run it",
                f.name
            )));
        }
        self.check_payload(&f, format!("input of {}", f.name), request.input.len())?;
        let _slot = self.tenant_slots.take(tenant)?;
        if request.keys.len() > MAX_HINT_KEYS {
            return Err(ApiError::InvalidArgument(format!(
                "{} key hints; at most {MAX_HINT_KEYS}",
                request.keys.len()
            )));
        }
        let span = info_span!("invoke", invocation_id = id, tenant = tenant.0, function = %f.name);
        self.run_invocation(id, &f, request, hop, None, None)
            .instrument(span)
            .await
    }

    /// Runs one invocation: places it (or takes `first`, a placement made already), executes
    /// it, retries where that is safe. `input_at` is the node holding its input (a chain's
    /// previous step), for placement.
    pub(super) async fn run_invocation(
        self: &Arc<Self>,
        id: u64,
        f: &FunctionEntry,
        request: pb::InvokeRequest,
        hop: Option<pb::ChainHop>,
        input_at: Option<NodeId>,
        mut first: Option<Placed>,
    ) -> Result<pb::InvokeResponse, ApiError> {
        let received = Instant::now();
        let arrival_us = self.now_us();
        let mut excluded: Vec<NodeId> = Vec::new();
        let mut failed: Vec<pb::FailedAttempt> = Vec::new();
        let mut redeployed = false;
        loop {
            let placed = match first.take() {
                Some(placed) => Ok(placed),
                None => self.place(id, f, &request.keys, input_at, &excluded, request.tier),
            };
            let mut placed = match placed {
                Ok(placed) => placed,
                // Every node that could take it failed: name them and what happened.
                Err(ApiError::NoNode(others)) if !failed.is_empty() => {
                    let nodes: Vec<&str> = failed.iter().map(|a| a.node.as_str()).collect();
                    let errors: Vec<&str> = failed.iter().map(|a| a.error.as_str()).collect();
                    return Err(ApiError::NodeFailed {
                        node: nodes.join(", "),
                        message: format!(
                            "{}; no other node can take the invocation ({others})",
                            errors.join("; ")
                        ),
                    });
                }
                Err(e) => return Err(e),
            };
            let deadline = Duration::from_millis(u64::from(match f.limits.deadline_ms {
                0 => 1_000,
                ms => ms,
            })) + self.config.execute_slack;
            let call = pb::ExecuteRequest {
                function: Some(pb::FunctionRef {
                    tenant: f.tenant.0,
                    name: f.name.clone(),
                }),
                input: request.input.clone(),
                invocation_id: id,
            };
            let sent = Instant::now();
            let outcome = tokio::time::timeout(deadline, placed.executor.execute(call)).await;
            let failure = match outcome {
                Ok(Ok(response)) => {
                    let round_trip = sent.elapsed();
                    let exec = response.record.unwrap_or_default();
                    self.finish(f, &mut placed, &exec, arrival_us);
                    let mut rec = placed.record;
                    record::merge_execution(&mut rec, &exec);
                    if rec.node.is_empty() {
                        rec.node = placed.name.clone();
                    }
                    rec.invocation_id = id;
                    rec.failed_attempts = failed;
                    rec.total_us =
                        u64::try_from(received.elapsed().as_micros()).unwrap_or(u64::MAX);
                    rec.hop = hop.map(|mut h| {
                        h.to_node = rec.node.clone();
                        if h.path == i32::from(pb::chain_hop::Path::Global) {
                            // The scheduler's turnaround, plus the transit to the node and back.
                            h.handoff_ns += nanos(sent - received)
                                + nanos(round_trip).saturating_sub(record::node_ns(&exec));
                        }
                        h
                    });
                    debug!(node = %rec.node, total_us = rec.total_us, "invocation done");
                    self.publish_decision(f, &rec);
                    return Ok(pb::InvokeResponse {
                        output: response.output,
                        record: Some(rec),
                    });
                }
                Ok(Err(failure)) => failure,
                Err(_) => Failure::Timeout(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX)),
            };
            placed.reservation.release();
            let node = std::mem::take(&mut placed.name);
            let retry_elsewhere = |message: String,
                                   failed: &mut Vec<pb::FailedAttempt>,
                                   excluded: &mut Vec<NodeId>| {
                warn!(%node, error = %message, "attempt failed; placing again without the node");
                failed.push(pb::FailedAttempt {
                    node: node.clone(),
                    error: message,
                });
                excluded.push(placed.node);
            };
            match failure {
                Failure::NotDeployed if !redeployed => {
                    redeployed = true;
                    warn!(%node, "node does not have the function; deploying it again");
                    if let Err(e) = self.deploy_to(&placed.agent, f).await {
                        retry_elsewhere(
                            format!("redeploy failed: {}", e.message()),
                            &mut failed,
                            &mut excluded,
                        );
                    }
                }
                Failure::NotDeployed => retry_elsewhere(
                    "the node lost the function again after a redeploy".into(),
                    &mut failed,
                    &mut excluded,
                ),
                Failure::NeverStarted(message) => {
                    retry_elsewhere(message, &mut failed, &mut excluded)
                }
                Failure::MidRun(message) if request.retryable => {
                    retry_elsewhere(message, &mut failed, &mut excluded)
                }
                Failure::MidRun(message) => {
                    return Err(ApiError::NodeFailed {
                        node,
                        message: format!(
                            "{message} (the invocation may have run; not retried: it was not marked retryable)"
                        ),
                    });
                }
                Failure::Timeout(ms) if request.retryable => retry_elsewhere(
                    format!("no answer within {ms} ms"),
                    &mut failed,
                    &mut excluded,
                ),
                Failure::Timeout(ms) => return Err(ApiError::NodeTimeout { node, ms }),
                Failure::Function(code, message) => {
                    return Err(ApiError::Node {
                        node,
                        code,
                        message,
                    });
                }
            }
            if failed.len() >= MAX_ATTEMPTS {
                let last = failed
                    .last()
                    .map(|a| format!("{}: {}", a.node, a.error))
                    .unwrap_or_default();
                return Err(ApiError::NodeFailed {
                    node: failed
                        .iter()
                        .map(|a| a.node.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message: format!("{} attempts failed; last {last}", failed.len()),
                });
            }
        }
    }

    /// Places the invocation with the placement core, on the live view (or, when retrying, a
    /// copy of it without the nodes that failed, the reservation then applied to the live one).
    ///
    /// `input_at`, a chain step's previous node: its input lives there, so a storage node there
    /// counts as holding the invocation's data (the hint that keeps a chain on one node's local
    /// bus when the cost model agrees). Key hints, when given, take precedence.
    pub(super) fn place(
        self: &Arc<Self>,
        id: u64,
        f: &FunctionEntry,
        keys: &[Vec<u8>],
        input_at: Option<NodeId>,
        excluded: &[NodeId],
        tier: i32,
    ) -> Result<Placed, ApiError> {
        let started = Instant::now();
        let now = self.now_us();
        let owners = self.key_owners();
        let mut guard = self.lock();
        let inner = &mut *guard;
        inner.refresh_alive(now);
        let mut data = data_shares(keys.iter().filter_map(|k| owners.owner(f.tenant, k)));
        let workload = {
            let mut history = self.history();
            history.data_homes.observe(f.id, &data);
            history.profiler.workload(f.id)
        };
        if let Some(node) = input_at
            && data.is_empty()
            && inner
                .view
                .node(node)
                .is_some_and(|n| n.role == sandstorm_naming::NodeRole::Storage)
        {
            data.push((node, 1.0));
        }
        // A native command runs on compute nodes only, whatever the caller left open.
        let tier = match f.code {
            FunctionCode::Native(_) => pb::Tier::Compute as i32,
            FunctionCode::Wasm(_) => tier,
        };
        let (warm, placer) = (inner.warm_nodes(f.id, now), inner.placer_for(tier));
        let request = PlacementRequest {
            invocation: InvocationId(id),
            tenant: f.tenant,
            function: f.id,
            app: sandstorm_naming::AppId(f.id.0),
            workload,
            memory_mb: f.limits.memory_mb.max(1),
            data: &data,
            warm: &warm,
        };
        // Nodes where the tenant holds its share of the admission places: not for it now.
        let max_queue = placer.config().max_queue_per_core;
        let over_share: Vec<(NodeId, u32, u32)> = inner
            .view
            .nodes()
            .iter()
            .filter_map(|n| {
                let limit = crate::placement::admission_limit(n, max_queue);
                let held = inner.shares.held(f.tenant, n.id);
                (held >= NodeShares::share(limit, n.cores)).then_some((n.id, held, limit))
            })
            .collect();
        let decision = if excluded.is_empty() && over_share.is_empty() {
            placer.place_recorded(&mut inner.view, &request)
        } else {
            let mut view = inner.view.clone();
            for node in excluded.iter().chain(over_share.iter().map(|(n, ..)| n)) {
                if let Some(n) = view.node_mut(*node) {
                    n.alive = false;
                }
            }
            let decision = placer.place_recorded(&mut view, &request);
            if let Some(r) = decision.chosen.and_then(|c| c.reservation) {
                inner.view.reserve(r);
            }
            decision
        };
        let names = |id: u32| inner.node_name(id);
        let mut candidates = record::candidates(&decision, names);
        for c in &mut candidates {
            if excluded.contains(&NodeId(c.node_id)) {
                c.reason = "excluded: an earlier attempt of this invocation failed there".into();
            } else if let Some((_, held, limit)) =
                over_share.iter().find(|(n, ..)| n.0 == c.node_id)
            {
                c.reason = format!(
                    "excluded: {} holds {held} of its {limit} admission places, its share \
                     (all but one per core, kept for other tenants)",
                    f.tenant
                );
            }
        }
        let Some(choice) = decision.chosen else {
            // Only the tenant's own calls stand in the way: its quota, not the cluster's room.
            if !over_share.is_empty() {
                let reasons: Vec<String> = candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.node, c.reason))
                    .collect();
                return Err(ApiError::Quota(format!(
                    "no node can take more calls of {}: {}; retry when some have finished",
                    f.tenant,
                    reasons.join("; ")
                )));
            }
            let reasons = if candidates.is_empty() {
                "no node has registered".to_owned()
            } else {
                candidates
                    .iter()
                    .map(|c| format!("{}: {}", c.node, c.reason))
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            return Err(ApiError::NoNode(reasons));
        };
        let name = inner.node_name(choice.node.0);
        let entry = &inner.nodes[choice.node.0 as usize];
        let (agent, executor) = (entry.agent.clone(), entry.executor.clone());
        let record = pb::InvocationRecord {
            invocation_id: id,
            function: f.name.clone(),
            node: name.clone(),
            tier: record::tier(choice.tier).into(),
            start: record::start(choice.start).into(),
            policy: decision.policy.name().into(),
            candidates,
            unscored: decision.unscored,
            schedule_us: u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            ..Default::default()
        };
        let held = choice.reservation.map(|r| {
            inner.shares.take(f.tenant, choice.node);
            (r, inner.held.hold(id, r))
        });
        // A new container past the node's memory: the keep-alive policy's victims make room.
        let room = match inner.view.node(choice.node) {
            Some(n)
                if choice.tier == sandstorm_cost_model::Tier::Compute
                    && choice.start != sandstorm_cost_model::StartKind::Warm =>
            {
                n.memory_used_mb.saturating_sub(n.memory_mb)
            }
            _ => 0,
        };
        let evicted = if room > 0 {
            inner.warm.make_room(choice.node, f.id, room)
        } else {
            Vec::new()
        };
        // Armed only once the lock is let go: a guard dropped under it would deadlock.
        drop(guard);
        if !evicted.is_empty() {
            self.send_keep_alive(evicted, None);
        }
        Ok(Placed {
            node: choice.node,
            name,
            agent,
            executor,
            reservation: HeldReservation::new(self.clone(), held, f.tenant),
            record,
        })
    }

    /// The invocation ran: release its hold on the view, profile it.
    pub(super) fn finish(
        self: &Arc<Self>,
        f: &FunctionEntry,
        placed: &mut Placed,
        exec: &pb::ExecutionRecord,
        arrival_us: u64,
    ) {
        let mut inner = self.lock();
        placed.reservation.complete(&mut inner);
        let now = self.now_us();
        inner.note_execution(placed.node, f.id, exec, now);
        let mut keep_alive = None;
        if exec.tier == i32::from(pb::Tier::Compute) {
            // The cluster's keep-alive policy hears of it and says how long its container stays.
            let start_cost_us = inner.calibration.params_of(placed.node).container_cold_us;
            let (order, prewarm) = inner.warm.finished(&super::keep_alive::Ended {
                function: f.id,
                app: sandstorm_naming::AppId(f.id.0),
                node: placed.node,
                memory_mb: f.limits.memory_mb.max(1),
                arrival_us,
                end_us: now,
                start_cost_us,
            });
            keep_alive = Some((order, prewarm));
        }
        // The profile holds native compute: undo the sandbox slowdown of a run in a storage node.
        let slowdown = if exec.tier == i32::from(pb::Tier::Storage) {
            inner.placer.config().params.wasm_slowdown.max(1.0)
        } else {
            1.0
        };
        let observation = Observation {
            arrival_us,
            duration_us: exec.start_us + exec.exec_us,
            // Waiting for remote data is not compute: the cost model adds the round trips itself.
            cpu_us: (exec.exec_us.saturating_sub(exec.data_wait_us) as f64 / slowdown) as u64,
            accesses: u32::try_from(exec.keys_read.max(exec.data_calls)).unwrap_or(u32::MAX),
            rounds: u32::try_from(exec.data_calls).unwrap_or(u32::MAX),
            bytes: exec.bytes_read + exec.bytes_written,
        };
        drop(inner);
        self.history().profiler.record(f.id, &observation);
        if let Some((order, prewarm)) = keep_alive {
            self.send_keep_alive(order.into_iter().collect(), prewarm);
        }
    }
}

/// Checks a chain's shape: 1 to [`MAX_CHAIN_STEPS`] steps, each a valid function name.
pub fn validate_chain(steps: &[String]) -> Result<&[String], ApiError> {
    if steps.is_empty() {
        return Err(ApiError::MalformedChain("it has no steps".into()));
    }
    if steps.len() > MAX_CHAIN_STEPS {
        return Err(ApiError::MalformedChain(format!(
            "{} steps; at most {MAX_CHAIN_STEPS}",
            steps.len()
        )));
    }
    for (i, step) in steps.iter().enumerate() {
        super::error::check_name("function", step)
            .map_err(|e| ApiError::MalformedChain(format!("step {i}: {e}")))?;
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chains_are_checked_before_anything_runs() {
        let ok: Vec<String> = vec!["kv-sum".into(), "echo".into()];
        assert!(validate_chain(&ok).is_ok());
        let long: Vec<String> = (0..17).map(|i| format!("f{i}")).collect();
        // (steps, what the message says)
        let table: [(&[String], &str); 3] = [
            (&[], "malformed chain: it has no steps"),
            (&long, "malformed chain: 17 steps; at most 16"),
            (
                &["echo".into(), String::new()],
                "malformed chain: step 1: invalid function name \"\": it is empty",
            ),
        ];
        for (steps, says) in table {
            let e = validate_chain(steps).expect_err(says);
            assert_eq!(e.to_string(), says);
        }
    }

    #[test]
    fn data_shares_count_owners() {
        let (a, b) = (NodeId(0), NodeId(1));
        assert!(data_shares(std::iter::empty()).is_empty());
        // 3 of 4 keys on b, 1 on a: b first.
        assert_eq!(
            data_shares([a, b, b, b].into_iter()),
            vec![(b, 0.75), (a, 0.25)]
        );
    }
}

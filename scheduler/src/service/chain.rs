//! Chains, on SAND's hierarchical bus: consecutive steps that the placement core puts on one node
//! run there as one `NodeAgent.ExecuteChain` (the node's local bus hands each output to the next
//! step in memory); every other hand-off goes through the global path (the output comes back to
//! the scheduler, which invokes the next step through [`Scheduler::run_invocation`]).
//!
//! Grouping uses the placement core unchanged: step i+1 is placed like any invocation, with the
//! node holding its input (step i's node) as the data it reads. If the core picks the same node,
//! the step joins the local group; otherwise the group ends there and that placement starts the
//! next one. Each step keeps its own invocation id, reservation, profile update and record; every
//! record's `hop` says which path its input took and how long the hand-off was.
//!
//! Failures: a step that fails is named in the error (`chain step I (NAME) ...`) and nothing after
//! it runs. A node that refuses a whole group before running anything (it lost the functions,
//! its queues are full, it cannot be reached) costs only the local bus: those steps run through
//! the global path instead, with its retries and redeploys.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandstorm_naming::{NodeId, TenantId};
use sandstorm_proto::v1 as pb;
use tonic::Code;
use tracing::{Instrument as _, info_span};

use super::error::ApiError;
use super::failure::{Failure, classify};
use super::invoke::{MAX_HINT_KEYS, Placed, nanos, validate_chain};
use super::record;
use super::state::{FunctionEntry, Scheduler};

/// Chain steps are placed by the scheduler's own policy: no step is pinned to a tier.
const ANY_TIER: i32 = pb::Tier::Unspecified as i32;

/// How a group of steps sent to one node's local bus ended.
enum Group {
    /// Every step ran: the last output and one record per step.
    Ran {
        output: Vec<u8>,
        records: Vec<pb::InvocationRecord>,
    },
    /// The node ran none of them: the input back, to take the global path.
    NothingRan(Vec<u8>),
}

/// `e` with the chain step it happened in named.
fn in_step(step: usize, function: &str, e: ApiError) -> ApiError {
    let what = format!("chain step {step} ({function})");
    match e {
        ApiError::Node {
            node,
            code,
            message,
        } => ApiError::Node {
            node,
            code,
            message: format!("{what} failed: {message}"),
        },
        ApiError::NodeFailed { node, message } => ApiError::NodeFailed {
            node,
            message: format!("{what}: {message}"),
        },
        ApiError::NodeTimeout { node, ms } => ApiError::NodeTimeout {
            node: format!("{node} (running {what})"),
            ms,
        },
        ApiError::NoNode(message) => ApiError::NoNode(format!("{what}: {message}")),
        ApiError::TooLarge {
            what: w,
            size,
            limit,
        } => ApiError::TooLarge {
            what: format!("{what}: {w}"),
            size,
            limit,
        },
        e => e,
    }
}

/// The node a step's record says was chosen.
fn chosen_node(record: &pb::InvocationRecord) -> Option<NodeId> {
    record
        .candidates
        .iter()
        .find(|c| c.verdict == pb::candidate_cost::Verdict::Chosen as i32 && c.node == record.node)
        .map(|c| NodeId(c.node_id))
}

impl Scheduler {
    /// Runs a chain: validates every step first, then runs them in order, each step's output
    /// the next one's input, on a node's local bus where consecutive steps share the node.
    pub async fn invoke_chain(
        self: &Arc<Self>,
        tenant: TenantId,
        request: pb::InvokeChainRequest,
    ) -> Result<pb::InvokeChainResponse, ApiError> {
        let steps = validate_chain(&request.steps)?;
        let _slot = self.tenant_slots.take(tenant)?;
        let functions: Vec<FunctionEntry> = {
            let inner = self.lock();
            steps
                .iter()
                .enumerate()
                .map(|(i, step)| {
                    inner.function(tenant, step).cloned().map_err(|e| match e {
                        ApiError::UnknownFunction { .. } => ApiError::MalformedChain(format!(
                            "step {i} names function {step:?}, which {tenant} does not have"
                        )),
                        e => e,
                    })
                })
                .collect::<Result<_, _>>()?
        };
        if request.keys.len() > MAX_HINT_KEYS {
            return Err(ApiError::InvalidArgument(format!(
                "{} key hints; at most {MAX_HINT_KEYS}",
                request.keys.len()
            )));
        }
        let n = functions.len();
        let mut input = request.input;
        let mut records: Vec<pb::InvocationRecord> = Vec::with_capacity(n);
        // The node the previous step ran on, and when its output was in the scheduler's hands
        // (global path) or the group's answer arrived.
        let mut previous: Option<(NodeId, String)> = None;
        let mut answered = Instant::now();
        // A placement made while growing the previous group: the step it is for, its id and
        // placement. Used only for that step; if the group ran nothing, the group's own steps
        // come first and it is dropped (its reservation with it).
        let mut pending: Option<(usize, u64, Placed)> = None;
        // Steps below this take the global path (their node refused them as a group).
        let mut global_until = if request.global_only { n } else { 0 };
        let mut i = 0;
        while i < n {
            let formed = Instant::now();
            let arrival_us = self.now_us();
            let keys: &[Vec<u8>] = if i == 0 { &request.keys } else { &[] };
            let input_at = previous.as_ref().map(|p| p.0);
            let name = &functions[i].name;
            if let Err(e) =
                self.check_payload(&functions[i], format!("input of {name}"), input.len())
            {
                return Err(in_step(i, name, e));
            }
            let head = match pending.take() {
                Some((step, id, placed)) if step == i => (id, placed),
                _ => {
                    let id = self.next_invocation_id();
                    let placed = self
                        .place(id, &functions[i], keys, input_at, &[], ANY_TIER)
                        .map_err(|e| in_step(i, name, e))?;
                    (id, placed)
                }
            };
            let mut group = vec![head];
            // Grow the group while the placement core puts the next step on the same node.
            while i >= global_until && i + group.len() < n {
                let j = i + group.len();
                let id = self.next_invocation_id();
                let node = group[0].1.node;
                match self.place(id, &functions[j], &[], Some(node), &[], ANY_TIER) {
                    Ok(p) if p.node == node => group.push((id, p)),
                    Ok(p) => {
                        pending = Some((j, id, p));
                        break;
                    }
                    // Its own placement, as the head of the next group, says why.
                    Err(_) => break,
                }
            }
            let mut hop = record::hop(
                i,
                previous.as_ref().map_or("", |p| p.1.as_str()),
                if i == 0 {
                    pb::chain_hop::Path::Client
                } else {
                    pb::chain_hop::Path::Global
                },
                input.len(),
            );
            if i > 0 {
                hop.handoff_ns = nanos(answered.elapsed());
            }

            if group.len() > 1 {
                let steps = group.len();
                let span = info_span!("chain_group", tenant = tenant.0, first_step = i, steps);
                let ran = self
                    .run_local_group(
                        i,
                        &functions[i..i + steps],
                        group,
                        input,
                        hop,
                        request.retryable,
                        (formed, arrival_us),
                    )
                    .instrument(span)
                    .await;
                match ran {
                    Ok(Group::Ran {
                        output,
                        records: ran,
                    }) => {
                        answered = Instant::now();
                        previous = ran
                            .last()
                            .and_then(|r| chosen_node(r).map(|id| (id, r.node.clone())));
                        records.extend(ran);
                        input = output;
                        i += steps;
                    }
                    Ok(Group::NothingRan(back)) => {
                        // Run the same steps again, through the global path.
                        input = back;
                        global_until = i + steps;
                    }
                    Err(e) => return Err(e),
                }
                continue;
            }

            let Some((id, placed)) = group.pop() else {
                continue;
            };
            let f = &functions[i];
            let step = pb::InvokeRequest {
                function: f.name.clone(),
                input,
                keys: keys.to_vec(),
                retryable: request.retryable,
                ..Default::default()
            };
            let span = info_span!("invoke", invocation_id = id, tenant = tenant.0, function = %f.name, chain_step = i);
            let response = self
                .run_invocation(id, f, step, Some(hop), input_at, Some(placed))
                .instrument(span)
                .await;
            let response = match response {
                Ok(r) => r,
                Err(e) => return Err(in_step(i, &f.name, e)),
            };
            answered = Instant::now();
            let record = response.record.unwrap_or_default();
            previous = chosen_node(&record).map(|id| (id, record.node.clone()));
            records.push(record);
            input = response.output;
            i += 1;
        }
        Ok(pb::InvokeChainResponse {
            output: input,
            records,
        })
    }

    /// Sends chain steps `first_step..` (`functions`, placed on one node as `group`) to that
    /// node's local bus as one `ExecuteChain`, and turns its answer into one record per step.
    #[allow(clippy::too_many_arguments)]
    async fn run_local_group(
        self: &Arc<Self>,
        first_step: usize,
        functions: &[FunctionEntry],
        mut group: Vec<(u64, Placed)>,
        input: Vec<u8>,
        head_hop: pb::ChainHop,
        retryable: bool,
        (formed, arrival_us): (Instant, u64),
    ) -> Result<Group, ApiError> {
        let last_step = first_step + group.len() - 1;
        let node = group[0].1.name.clone();
        let deadline = functions
            .iter()
            .map(|f| {
                Duration::from_millis(u64::from(match f.limits.deadline_ms {
                    0 => 1_000,
                    ms => ms,
                }))
            })
            .sum::<Duration>()
            + self.config.execute_slack;
        let call = pb::ExecuteChainRequest {
            steps: group
                .iter()
                .zip(functions)
                .map(|((id, _), f)| pb::ChainStep {
                    function: Some(pb::FunctionRef {
                        tenant: f.tenant.0,
                        name: f.name.clone(),
                    }),
                    invocation_id: *id,
                })
                .collect(),
            // Kept to take the global path if the node runs nothing.
            input: input.clone(),
        };
        let mut agent = group[0].1.agent.clone();
        let mut tonic_request = tonic::Request::new(call);
        tonic_request.set_timeout(deadline);
        let sent = Instant::now();
        let outcome = tokio::time::timeout(deadline, agent.execute_chain(tonic_request)).await;
        let steps_named = format!(
            "chain steps {first_step}-{last_step} ({})",
            functions
                .iter()
                .map(|f| f.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let response = match outcome {
            Ok(Ok(response)) => response.into_inner(),
            // Returning drops `group`, which gives every step's reservation back.
            Ok(Err(status)) => {
                return match classify(&status) {
                    Failure::NotDeployed | Failure::NeverStarted(_) => {
                        tracing::warn!(%node, error = %status.message(), "the local bus refused a chain group; taking the global path");
                        Ok(Group::NothingRan(input))
                    }
                    Failure::MidRun(_) | Failure::Timeout(_) if retryable => {
                        Ok(Group::NothingRan(input))
                    }
                    Failure::MidRun(message) => Err(ApiError::NodeFailed {
                        node,
                        message: format!(
                            "{steps_named}: {message} (they may have run; not retried: the chain was not marked retryable)"
                        ),
                    }),
                    Failure::Timeout(ms) => Err(ApiError::NodeTimeout {
                        node: format!("{node} (running {steps_named})"),
                        ms,
                    }),
                    Failure::Function(code, message) => Err(ApiError::Node {
                        node,
                        code,
                        message: format!("{steps_named}: {message}"),
                    }),
                };
            }
            Err(_) => {
                if retryable {
                    return Ok(Group::NothingRan(input));
                }
                return Err(ApiError::NodeTimeout {
                    node: format!("{node} (running {steps_named})"),
                    ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
                });
            }
        };
        let round_trip = sent.elapsed();
        let total_us = u64::try_from(formed.elapsed().as_micros()).unwrap_or(u64::MAX);
        // The node's own time on the group: every step's run and the local hand-offs.
        let at_node: u64 = response
            .records
            .iter()
            .map(|r| record::node_ns(r).saturating_add(r.handoff_ns))
            .sum();
        let mut records = Vec::with_capacity(group.len());
        for (k, ((id, placed), exec)) in group.iter_mut().zip(&response.records).enumerate() {
            let f = &functions[k];
            self.finish(f, placed, exec, arrival_us);
            let mut rec = placed.record.clone();
            record::merge_execution(&mut rec, exec);
            if rec.node.is_empty() {
                rec.node = placed.name.clone();
            }
            rec.invocation_id = *id;
            rec.total_us = total_us;
            let mut hop = if k == 0 {
                let mut hop = head_hop.clone();
                if hop.path == i32::from(pb::chain_hop::Path::Global) {
                    hop.handoff_ns +=
                        nanos(sent - formed) + nanos(round_trip).saturating_sub(at_node);
                }
                hop
            } else {
                let mut hop = record::hop(
                    first_step + k,
                    &rec.node,
                    pb::chain_hop::Path::LocalBus,
                    usize::try_from(exec.input_bytes).unwrap_or(usize::MAX),
                );
                hop.handoff_ns = exec.handoff_ns;
                hop
            };
            hop.to_node = rec.node.clone();
            rec.hop = Some(hop);
            self.publish_decision(f, &rec);
            records.push(rec);
        }
        // Steps that did not run (a step failed, or the node answered for fewer) give their
        // reservations back as `group` drops on return.
        if let Some(failure) = response.failure {
            let k = failure.step as usize;
            let name = functions.get(k).map_or("?", |f| f.name.as_str());
            return Err(in_step(
                first_step + k,
                name,
                ApiError::Node {
                    node,
                    code: Code::from(failure.code),
                    message: failure.message,
                },
            ));
        }
        if records.len() < group.len() {
            return Err(ApiError::NodeFailed {
                node,
                message: format!(
                    "{steps_named}: the node answered for {} of {} steps",
                    records.len(),
                    group.len()
                ),
            });
        }
        Ok(Group::Ran {
            output: response.output,
            records,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_chain_step() {
        // (error, what its message says)
        let table = [
            (
                ApiError::Node {
                    node: "s0".into(),
                    code: Code::Aborted,
                    message: "trap".into(),
                },
                "node s0: chain step 1 (kv-sum) failed: trap",
            ),
            (
                ApiError::NodeTimeout {
                    node: "s0".into(),
                    ms: 5,
                },
                "node s0 (running chain step 1 (kv-sum)) did not answer within 5 ms",
            ),
            (
                ApiError::NoNode("none alive".into()),
                "no node can take the invocation: chain step 1 (kv-sum): none alive",
            ),
        ];
        for (e, says) in table {
            let code = tonic::Status::from(in_step(1, "kv-sum", e));
            assert_eq!(code.message(), says);
        }
        let kept = in_step(1, "kv-sum", ApiError::MalformedChain("x".into()));
        assert_eq!(kept.to_string(), "malformed chain: x");
    }

    #[test]
    fn the_chosen_node_comes_from_the_record() {
        let record = pb::InvocationRecord {
            node: "s1".into(),
            candidates: vec![
                pb::CandidateCost {
                    node: "s0".into(),
                    node_id: 0,
                    verdict: pb::candidate_cost::Verdict::Lost.into(),
                    ..Default::default()
                },
                pb::CandidateCost {
                    node: "s1".into(),
                    node_id: 1,
                    verdict: pb::candidate_cost::Verdict::Chosen.into(),
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(chosen_node(&record), Some(NodeId(1)));
        assert_eq!(chosen_node(&pb::InvocationRecord::default()), None);
    }
}

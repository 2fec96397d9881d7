//! Invocation records: the placement [`Decision`] and the node's [`pb::ExecutionRecord`] turned
//! into the [`pb::InvocationRecord`] a client receives, with every candidate's cost breakdown and,
//! in words, why each one that was not chosen lost or was rejected; and a chain step's hop (which
//! path its input took, and how long the hand-off was).

use sandstorm_cost_model::{CostBreakdown, StartKind, Tier};
use sandstorm_naming::NodeRole;
use sandstorm_proto::v1 as pb;

use crate::placement::{CandidateRecord, Decision, Rejection, Verdict};

pub fn tier(t: Tier) -> pb::Tier {
    match t {
        Tier::Storage => pb::Tier::Storage,
        Tier::Compute => pb::Tier::Compute,
    }
}

pub fn role_tier(r: NodeRole) -> pb::Tier {
    match r {
        NodeRole::Storage => pb::Tier::Storage,
        NodeRole::Compute => pb::Tier::Compute,
    }
}

pub fn start(s: StartKind) -> pb::StartKind {
    match s {
        StartKind::Warm => pb::StartKind::Warm,
        StartKind::Assembled => pb::StartKind::Assembled,
        StartKind::Cold => pb::StartKind::Cold,
    }
}

pub fn cost(c: &CostBreakdown, objective: f64) -> pb::CostBreakdown {
    pb::CostBreakdown {
        queue_us: c.queue_us,
        dispatch_us: c.dispatch_us,
        start_us: c.start_us,
        compute_us: c.compute_us,
        local_access_us: c.local_access_us,
        network_rtt_us: c.network_rtt_us,
        bytes_us: c.bytes_us,
        storage_cpu_us: c.storage_cpu_us,
        compute_cpu_us: c.compute_cpu_us,
        bytes_moved: c.bytes_moved.max(0.0).round() as u64,
        objective,
    }
}

/// Why a candidate lost or was rejected, in words (empty for the chosen one).
pub fn reason(c: &CandidateRecord, chosen: Option<(&str, f64)>, policy: &str) -> String {
    match c.verdict {
        Verdict::Chosen => String::new(),
        Verdict::Lost => match chosen {
            Some((node, score)) if c.score > score => format!(
                "scored {:.2} against {score:.2} for {node} ({policy}: lower wins)",
                c.score
            ),
            Some((node, score)) => format!(
                "tied with {node} at {score:.2} and lost the tie-break seeded by the invocation id"
            ),
            None => "no node was chosen".to_owned(),
        },
        Verdict::Rejected(r) => match r {
            Rejection::Dead => {
                "rejected: declared dead (silent longer than the node timeout)".to_owned()
            }
            Rejection::WrongRole { role } => {
                format!("rejected: policy {policy} does not place on {role} nodes")
            }
            Rejection::NoMemory { needed_mb, free_mb } => format!(
                "rejected: needs {needed_mb} MiB for a new context, {free_mb} MiB free or reclaimable"
            ),
            Rejection::Saturated { load, limit } => {
                format!("rejected: saturated ({load} invocations held, admission limit {limit})")
            }
        },
    }
}

/// Every candidate of `decision`, named by `node_name`.
pub fn candidates(
    decision: &Decision,
    node_name: impl Fn(u32) -> String,
) -> Vec<pb::CandidateCost> {
    let policy = decision.policy.name();
    let chosen_name = decision.chosen.map(|c| node_name(c.node.0));
    let chosen = decision.chosen.and_then(|c| {
        let score = decision
            .candidates
            .iter()
            .find(|r| r.node == c.node)
            .map_or(c.objective, |r| r.score);
        chosen_name.as_deref().map(|n| (n, score))
    });
    decision
        .candidates
        .iter()
        .map(|c| pb::CandidateCost {
            node: node_name(c.node.0),
            node_id: c.node.0,
            tier: role_tier(c.role).into(),
            start: start(c.start).into(),
            cost: Some(cost(&c.cost, c.objective)),
            score: c.score,
            verdict: match c.verdict {
                Verdict::Chosen => pb::candidate_cost::Verdict::Chosen,
                Verdict::Lost => pb::candidate_cost::Verdict::Lost,
                Verdict::Rejected(_) => pb::candidate_cost::Verdict::Rejected,
            }
            .into(),
            reason: reason(c, chosen, policy),
        })
        .collect()
}

/// The node's measurements of one run, copied into the client's record.
pub fn merge_execution(record: &mut pb::InvocationRecord, exec: &pb::ExecutionRecord) {
    record.node = exec.node.clone();
    record.tier = exec.tier;
    record.start = exec.start;
    record.core = exec.core;
    record.queue_us = exec.queue_us;
    record.start_us = exec.start_us;
    record.exec_us = exec.exec_us;
    record.durable_us = exec.durable_us;
    record.data_calls = exec.data_calls;
    record.keys_read = exec.keys_read;
    record.bytes_read = exec.bytes_read;
    record.bytes_written = exec.bytes_written;
    // Inside a storage node data is read in place; elsewhere every byte crossed the network.
    record.bytes_moved = if exec.tier == i32::from(pb::Tier::Storage) {
        0
    } else {
        exec.bytes_read + exec.bytes_written
    };
}

/// Time the node spent on the invocation itself (start, execution, durability), nanoseconds:
/// what is left of a round trip without it is the hand-off's transit.
pub fn node_ns(exec: &pb::ExecutionRecord) -> u64 {
    exec.start_us
        .saturating_add(exec.exec_us)
        .saturating_add(exec.durable_us)
        .saturating_mul(1000)
}

/// The hop into chain step `step`, whose input of `bytes` came from `from_node` (empty: from
/// the client) along `path`.
pub fn hop(step: usize, from_node: &str, path: pb::chain_hop::Path, bytes: usize) -> pb::ChainHop {
    pb::ChainHop {
        step: u32::try_from(step).unwrap_or(u32::MAX),
        from_node: from_node.to_owned(),
        to_node: String::new(),
        path: path.into(),
        bytes: bytes as u64,
        handoff_ns: 0,
    }
}

#[cfg(test)]
mod tests {
    use sandstorm_naming::{InvocationId, NodeId};

    use super::*;
    use crate::placement::{Choice, Policy};

    fn candidate(node: u32, score: f64, verdict: Verdict) -> CandidateRecord {
        CandidateRecord {
            node: NodeId(node),
            role: NodeRole::Storage,
            start: StartKind::Assembled,
            cost: CostBreakdown {
                queue_us: 1.0,
                ..CostBreakdown::default()
            },
            objective: score,
            score,
            verdict,
        }
    }

    #[test]
    fn every_candidate_says_why() {
        let decision = Decision {
            invocation: InvocationId(1),
            policy: Policy::CostAware,
            chosen: Some(Choice {
                node: NodeId(0),
                tier: Tier::Storage,
                start: StartKind::Assembled,
                cost: CostBreakdown::default(),
                objective: 10.0,
                reservation: None,
            }),
            candidates: vec![
                candidate(0, 10.0, Verdict::Chosen),
                candidate(1, 12.5, Verdict::Lost),
                candidate(2, 10.0, Verdict::Lost),
                candidate(3, 0.0, Verdict::Rejected(Rejection::Dead)),
                candidate(
                    4,
                    0.0,
                    Verdict::Rejected(Rejection::Saturated { load: 9, limit: 9 }),
                ),
            ],
            unscored: 0,
        };
        let got = candidates(&decision, |id| format!("s{id}"));
        let reasons: Vec<&str> = got.iter().map(|c| c.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "",
                "scored 12.50 against 10.00 for s0 (cost-aware: lower wins)",
                "tied with s0 at 10.00 and lost the tie-break seeded by the invocation id",
                "rejected: declared dead (silent longer than the node timeout)",
                "rejected: saturated (9 invocations held, admission limit 9)",
            ]
        );
        assert_eq!(got[0].verdict, pb::candidate_cost::Verdict::Chosen as i32);
        assert_eq!(got[3].verdict, pb::candidate_cost::Verdict::Rejected as i32);
        assert_eq!(got[1].cost.map(|c| c.queue_us), Some(1.0));
        assert_eq!(got[1].node, "s1");
    }

    #[test]
    fn bytes_cross_the_network_only_off_the_storage_node() {
        let mut exec = pb::ExecutionRecord {
            node: "n".into(),
            tier: pb::Tier::Storage.into(),
            bytes_read: 10,
            bytes_written: 5,
            ..Default::default()
        };
        let mut r = pb::InvocationRecord::default();
        merge_execution(&mut r, &exec);
        assert_eq!((r.node.as_str(), r.bytes_moved, r.bytes_read), ("n", 0, 10));
        exec.tier = pb::Tier::Compute.into();
        merge_execution(&mut r, &exec);
        assert_eq!(r.bytes_moved, 15);
    }

    #[test]
    fn node_time_is_start_exec_and_durability() {
        let exec = pb::ExecutionRecord {
            queue_us: 100,
            start_us: 3,
            exec_us: 5,
            durable_us: 2,
            ..Default::default()
        };
        // (3 + 5 + 2) us; the queue wait is part of the hand-off, not the node's own time.
        assert_eq!(node_ns(&exec), 10_000);
        let h = hop(2, "s0", pb::chain_hop::Path::LocalBus, 7);
        assert_eq!(
            (h.step, h.from_node.as_str(), h.path, h.bytes),
            (2, "s0", pb::chain_hop::Path::LocalBus as i32, 7)
        );
    }
}

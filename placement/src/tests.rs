//! Placement tables (arithmetic in comments) and properties.

use proptest::prelude::*;
use sandstorm_cost_model::Workload;

use super::*;

/// A cluster of `storage` storage nodes then `compute` compute nodes, 8 cores each, 16 GiB on
/// compute nodes, every compute node with a pool part ready.
fn cluster(storage: u32, compute: u32) -> ClusterView {
    let mut nodes = Vec::new();
    for i in 0..storage + compute {
        let role = if i < storage {
            NodeRole::Storage
        } else {
            NodeRole::Compute
        };
        let mut n = NodeView::new(
            NodeId(i),
            role,
            8,
            if role == NodeRole::Compute { 16_384 } else { 0 },
        );
        n.pool_ready = 4;
        nodes.push(n);
    }
    ClusterView::new(nodes)
}

fn request<'a>(
    invocation: u64,
    work: Workload,
    data: &'a [(NodeId, f64)],
    warm: &'a [NodeId],
) -> PlacementRequest<'a> {
    PlacementRequest {
        invocation: InvocationId(invocation),
        tenant: TenantId(1),
        function: FunctionId(7),
        app: AppId(7),
        workload: work,
        memory_mb: 256,
        data,
        warm,
    }
}

const DATA_HEAVY: Workload = Workload {
    compute_us: 20.0,
    accesses: 32.0,
    rounds: 4.0,
    bytes: 32_768.0,
};
const CPU_HEAVY: Workload = Workload {
    compute_us: 2_000.0,
    accesses: 1.0,
    rounds: 1.0,
    bytes: 1_024.0,
};

fn placer(policy: Policy) -> Placer {
    Placer::new(
        policy,
        PlacerConfig {
            sample: 0,
            ..PlacerConfig::default()
        },
    )
}

#[test]
fn cost_aware_keeps_data_heavy_work_next_to_its_data() {
    let mut view = cluster(2, 2);
    let data = [(NodeId(1), 1.0)];
    let choice = placer(Policy::CostAware)
        .place(&mut view, &request(1, DATA_HEAVY, &data, &[]))
        .expect("placed");
    // Storage (node 1): dispatch 10 + start 2.3 + 32 x 0.013 + 20 x 1.2 + 32 x 0.1 + rtt 30 = 69.9 us.
    // Compute (assembled): dispatch 10 x 33 + 1,000 start + 20 + rtt 30 x 5 + wire = ~1,511 us.
    assert_eq!(choice.node, NodeId(1));
    assert_eq!(choice.tier, Tier::Storage);
    assert!(
        (choice.cost.latency_us() - 69.916).abs() < 0.01,
        "{}",
        choice.cost.latency_us()
    );
}

#[test]
fn cost_aware_sends_cpu_heavy_work_to_a_warm_container_when_storage_is_busy() {
    let mut view = cluster(1, 2);
    // The storage node is full: 16 invocations of 1 ms each on 8 cores -> queue 16,000 / 8 = 2,000 us.
    let storage = view.node_mut(NodeId(0)).expect("node");
    storage.load = 16;
    storage.backlog_us = 16_000.0;
    let data = [(NodeId(0), 1.0)];
    let warm = [NodeId(2)];
    let choice = placer(Policy::CostAware)
        .place(&mut view, &request(1, CPU_HEAVY, &data, &warm))
        .expect("placed");
    // Compute, warm: dispatch 20 + compute 2,000 + rtt 60 + ~0.5 bytes = ~2,080 us latency.
    // Storage: 2,000 queue + 2,000 compute x 1.2 + ... and storage CPU priced at the cap.
    assert_eq!(choice.node, NodeId(2));
    assert_eq!(choice.start, StartKind::Warm);
}

#[test]
fn filters_record_why() {
    let mut view = cluster(1, 3);
    view.node_mut(NodeId(1)).expect("node").alive = false;
    // Node 2 is at its admission limit: 8 cores x (1 + 8) = 72.
    view.node_mut(NodeId(2)).expect("node").load = 72;
    // Node 3 has 100 MB free, the function needs 256.
    view.node_mut(NodeId(3)).expect("node").memory_used_mb = 16_284;
    let decision =
        placer(Policy::AlwaysCompute).place_recorded(&mut view, &request(1, CPU_HEAVY, &[], &[]));
    assert!(decision.chosen.is_none());
    let verdict = |n: u32| {
        decision
            .candidates
            .iter()
            .find(|c| c.node == NodeId(n))
            .map(|c| c.verdict)
    };
    assert_eq!(
        verdict(0),
        Some(Verdict::Rejected(Rejection::WrongRole {
            role: NodeRole::Storage
        }))
    );
    assert_eq!(verdict(1), Some(Verdict::Rejected(Rejection::Dead)));
    assert_eq!(
        verdict(2),
        Some(Verdict::Rejected(Rejection::Saturated {
            load: 72,
            limit: 72
        }))
    );
    assert_eq!(
        verdict(3),
        Some(Verdict::Rejected(Rejection::NoMemory {
            needed_mb: 256,
            free_mb: 100
        }))
    );
}

#[test]
fn an_infinite_queue_allowance_admits_whatever_the_load() {
    // Node 0 holds an idle warm context but runs 1,000 invocations, far past 8 x (1 + 8) = 72.
    let mut view = cluster(0, 2);
    view.node_mut(NodeId(0)).expect("node").load = 1_000;
    let warm = [NodeId(0)];
    let place = |view: &mut ClusterView, max_queue_per_core: f64| {
        Placer::new(
            Policy::FirstFit,
            PlacerConfig {
                max_queue_per_core,
                ..PlacerConfig::default()
            },
        )
        .place(view, &request(1, CPU_HEAVY, &[], &warm))
        .expect("placed")
    };
    // The default limit turns it away: a new container on node 1 (assembled from its pool).
    let limited = place(
        &mut view.clone(),
        PlacerConfig::default().max_queue_per_core,
    );
    assert_eq!(
        (limited.node, limited.start),
        (NodeId(1), StartKind::Assembled)
    );
    // No limit (DSLab FaaS's hosts): the warm context on node 0 is used.
    let unlimited = place(&mut view, f64::INFINITY);
    assert_eq!(
        (unlimited.node, unlimited.start),
        (NodeId(0), StartKind::Warm)
    );
    assert_eq!(
        admission_limit(view.node(NodeId(0)).expect("node"), f64::INFINITY),
        u32::MAX
    );
}

#[test]
fn a_warm_context_needs_no_free_memory() {
    let mut view = cluster(0, 1);
    view.node_mut(NodeId(0)).expect("node").memory_used_mb = 16_384;
    let warm = [NodeId(0)];
    let choice = placer(Policy::LeastLoaded)
        .place(&mut view, &request(1, CPU_HEAVY, &[], &warm))
        .expect("placed");
    assert_eq!(choice.start, StartKind::Warm);
}

#[test]
fn reserve_and_unreserve_balance() {
    let mut view = cluster(0, 2);
    let choice = placer(Policy::CostAware)
        .place(&mut view, &request(3, CPU_HEAVY, &[], &[]))
        .expect("placed");
    let r = choice.reservation.expect("reserved");
    let node = view.node(choice.node).expect("node").clone();
    // One slot and the new context's 256 MB, and the pool part it was assembled from.
    assert_eq!(
        (node.load, node.memory_used_mb, node.pool_ready),
        (1, 256, 3)
    );
    view.unreserve(r);
    let node = view.node(choice.node).expect("node");
    assert_eq!((node.load, node.memory_used_mb), (0, 0));
}

#[test]
fn policies_parse_by_name() {
    for p in Policy::ALL {
        assert_eq!(p.name().parse::<Policy>(), Ok(p));
    }
    let err = "fastest".parse::<Policy>().expect_err("unknown");
    assert!(
        err.to_string()
            .contains("unknown placement policy `fastest`")
    );
    assert!(err.to_string().contains("cost-aware"));
}

#[test]
fn hash_home_is_sticky_and_probes_past_a_full_home() {
    let mut view = cluster(0, 5);
    let p = placer(Policy::HashHome);
    let home = p
        .place(&mut view.clone(), &request(1, CPU_HEAVY, &[], &[]))
        .expect("placed")
        .node;
    // Another invocation of the same function goes to the same home.
    assert_eq!(
        p.place(&mut view.clone(), &request(99, CPU_HEAVY, &[], &[]))
            .expect("placed")
            .node,
        home
    );
    view.node_mut(home).expect("node").load = 72;
    let next = p
        .place(&mut view, &request(1, CPU_HEAVY, &[], &[]))
        .expect("placed")
        .node;
    assert_ne!(next, home);
}

#[test]
fn data_affinity_backs_off_a_busy_storage_node() {
    let mut view = cluster(1, 2);
    let data = [(NodeId(0), 1.0)];
    let p = placer(Policy::DataAffinity);
    assert_eq!(
        p.place(&mut view.clone(), &request(1, CPU_HEAVY, &data, &[]))
            .expect("placed")
            .node,
        NodeId(0)
    );
    // 7 of 8 cores busy = 0.875 >= 0.8: back off to a compute node.
    view.node_mut(NodeId(0)).expect("node").load = 7;
    assert_eq!(
        p.place(&mut view, &request(1, CPU_HEAVY, &data, &[]))
            .expect("placed")
            .tier,
        Tier::Compute
    );
}

#[test]
fn sampling_scores_a_bounded_number_of_nodes() {
    let mut view = cluster(0, 100);
    let p = Placer::new(
        Policy::LeastLoaded,
        PlacerConfig {
            sample: 8,
            ..PlacerConfig::default()
        },
    );
    let d = p.place_recorded(&mut view, &request(5, CPU_HEAVY, &[], &[]));
    assert_eq!(d.candidates.len(), 8);
    assert_eq!(d.unscored, 92);
    assert!(d.chosen.is_some());
}

#[test]
fn each_node_is_costed_with_its_own_parameters() {
    // Two compute nodes, both assembling a container; the storage node is busy, so the CPU-heavy
    // work goes to compute. Node 2 measured its assembly at 20 ms, node 1 at 0.5 ms.
    let mut view = cluster(1, 2);
    let storage = view.node_mut(NodeId(0)).expect("node");
    storage.load = 16;
    storage.backlog_us = 16_000.0;
    let mut p = placer(Policy::CostAware);
    let slow = CostParams {
        container_assembled_us: 20_000.0,
        ..CostParams::default()
    };
    let fast = CostParams {
        container_assembled_us: 500.0,
        ..CostParams::default()
    };
    p.set_node_params(NodeId(1), Some(fast));
    p.set_node_params(NodeId(2), Some(slow));
    let data = [(NodeId(0), 1.0)];
    for inv in 0..32 {
        let d = p.place_recorded(&mut view.clone(), &request(inv, CPU_HEAVY, &data, &[]));
        let chosen = d.chosen.expect("placed");
        assert_eq!(chosen.node, NodeId(1), "invocation {inv}");
        assert_eq!(chosen.cost.start_us, 500.0);
        let slow_one = d.candidates.iter().find(|c| c.node == NodeId(2));
        assert_eq!(slow_one.map(|c| c.cost.start_us), Some(20_000.0));
        // The plain path costs it the same way.
        let plain = p.place(&mut view.clone(), &request(inv, CPU_HEAVY, &data, &[]));
        assert_eq!(
            plain.map(|c| (c.node, c.objective)),
            Some((chosen.node, chosen.objective))
        );
    }
    // Swapped: the other node wins.
    p.set_node_params(NodeId(1), Some(slow));
    p.set_node_params(NodeId(2), Some(fast));
    let choice = p.place(&mut view, &request(1, CPU_HEAVY, &data, &[]));
    assert_eq!(choice.map(|c| c.node), Some(NodeId(2)));
}

fn any_view() -> impl Strategy<Value = ClusterView> {
    (
        1u32..4,
        1u32..6,
        prop::collection::vec((0u32..100, any::<bool>(), 0u64..20_000), 10),
    )
        .prop_map(|(storage, compute, states)| {
            let mut view = cluster(storage, compute);
            for (i, (load, alive, mem)) in states.into_iter().enumerate() {
                if let Some(n) = view.node_mut(NodeId(i as u32)) {
                    n.load = load;
                    n.alive = alive || i % 3 == 0;
                    n.memory_used_mb = mem.min(n.memory_mb);
                }
            }
            view
        })
}

proptest! {
    #[test]
    fn rejected_candidates_are_never_chosen(view in any_view(), policy in 0usize..8, inv in any::<u64>(), heavy in any::<bool>()) {
        let work = if heavy { CPU_HEAVY } else { DATA_HEAVY };
        let data = [(NodeId(0), 1.0)];
        let d = placer(Policy::ALL[policy]).place_recorded(&mut view.clone(), &request(inv, work, &data, &[]));
        if let Some(choice) = d.chosen {
            let rec = d.candidates.iter().find(|c| c.node == choice.node).expect("chosen is a candidate");
            prop_assert_eq!(rec.verdict, Verdict::Chosen);
            for c in &d.candidates {
                if c.node != choice.node {
                    prop_assert!(c.verdict != Verdict::Chosen);
                    if c.verdict == Verdict::Lost {
                        prop_assert!(c.score >= rec.score);
                    }
                }
            }
        } else {
            prop_assert!(d.candidates.iter().all(|c| matches!(c.verdict, Verdict::Rejected(_)) || !c.score.is_finite()));
        }
    }

    #[test]
    fn no_node_is_oversubscribed(view in any_view(), policy in 0usize..8, n in 1usize..400) {
        let mut view = view;
        let before: Vec<u32> = view.nodes().iter().map(|n| n.load).collect();
        let p = placer(Policy::ALL[policy]);
        for i in 0..n {
            let _ = p.place(&mut view, &request(i as u64, CPU_HEAVY, &[], &[]));
        }
        for (node, was) in view.nodes().iter().zip(before) {
            let limit = admission_limit(node, PlacerConfig::default().max_queue_per_core);
            // A node already over its limit gets nothing more; no node is pushed past it.
            prop_assert!(node.load <= limit.max(was));
            prop_assert!(node.memory_used_mb <= node.memory_mb.max(20_000));
        }
    }

    #[test]
    fn same_invocation_same_decision(view in any_view(), policy in 0usize..8, inv in any::<u64>()) {
        let p = Placer::new(Policy::ALL[policy], PlacerConfig::default());
        let a = p.place_recorded(&mut view.clone(), &request(inv, DATA_HEAVY, &[], &[]));
        let b = p.place_recorded(&mut view.clone(), &request(inv, DATA_HEAVY, &[], &[]));
        prop_assert_eq!(a, b);
    }
}

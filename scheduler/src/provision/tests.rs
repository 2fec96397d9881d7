use super::*;

fn node(id: u32, role: NodeRole, cores: u32) -> NodeSupply {
    NodeSupply {
        id: NodeId(id),
        role,
        cores,
        memory_mb: 4_096,
    }
}

fn demand(id: u32, rate: f64, compute_us: f64, accesses: f64, bytes: f64) -> FunctionDemand {
    FunctionDemand {
        function: FunctionId(id),
        tenant: TenantId(1),
        name: format!("f{id}"),
        rate_per_s: rate,
        workload: Workload {
            compute_us,
            accesses,
            rounds: accesses.min(1.0),
            bytes,
        },
        memory_mb: 64.0,
        data_home: Vec::new(),
    }
}

fn solve_default(demand: &[FunctionDemand], nodes: &[NodeSupply]) -> Plan {
    solve(
        demand,
        nodes,
        &CostParams::default(),
        &Weights::default(),
        &ProvisionConfig::default(),
    )
    .expect("the model solves")
}

fn cluster() -> Vec<NodeSupply> {
    vec![node(0, NodeRole::Storage, 4), node(1, NodeRole::Compute, 4)]
}

#[test]
fn a_hot_data_heavy_function_sharing_a_storage_node_gets_a_core_of_its_own() {
    // f1 fills most of a core with short data-heavy invocations; f2 and f3 are long, so on a
    // shared core f1 waits behind them.
    let hot = demand(1, 8_000.0, 60.0, 4.0, 4_000.0);
    let others = [
        demand(2, 200.0, 1_500.0, 2.0, 1_000.0),
        demand(3, 100.0, 2_000.0, 2.0, 1_000.0),
    ];
    let mut all = vec![hot];
    all.extend(others);
    let plan = solve_default(&all, &cluster());
    let f1 = plan.function(FunctionId(1)).expect("f1 is modelled");
    assert_eq!(f1.dedicated_cores, vec![(NodeId(0), 1)], "{plan:#?}");
    assert!(f1.storage_share > 0.9, "{plan:#?}");
    for f in [2, 3] {
        assert!(
            plan.function(FunctionId(f))
                .unwrap()
                .dedicated_cores
                .is_empty(),
            "{plan:#?}"
        );
    }
    assert!(plan.overloaded.is_empty());
}

#[test]
fn a_function_alone_gets_no_dedicated_core_since_it_shares_with_nobody() {
    let plan = solve_default(&[demand(1, 8_000.0, 60.0, 4.0, 4_000.0)], &cluster());
    assert!(plan.functions[0].dedicated_cores.is_empty(), "{plan:#?}");
}

#[test]
fn a_busy_cpu_heavy_function_keeps_a_warm_container_and_a_rare_one_does_not() {
    // CPU-heavy with few accesses: compute is cheaper. f1 runs 50/s (assembly would cost it
    // 50 ms/s, far more than 64 MB held); f2, of 512 MB, runs once every 4 s (250 us/s of
    // assembly against 1 ms/s of memory).
    let busy = demand(1, 50.0, 20_000.0, 1.0, 100.0);
    let rare = FunctionDemand {
        memory_mb: 512.0,
        ..demand(2, 0.25, 20_000.0, 1.0, 100.0)
    };
    let plan = solve_default(&[busy, rare], &cluster());
    let f1 = plan.function(FunctionId(1)).unwrap();
    assert_eq!(f1.warm_on, vec![NodeId(1)], "{plan:#?}");
    assert!(f1.storage_share < 0.1, "{plan:#?}");
    let f2 = plan.function(FunctionId(2)).unwrap();
    assert!(f2.warm_on.is_empty(), "{plan:#?}");
}

#[test]
fn warm_containers_fit_in_the_memory_budget() {
    // Twelve busy CPU-heavy functions of 256 MB each on a node with 2 GB, half of it plannable:
    // at most three stay warm (1 GB less the pool's parts holds three).
    let demand: Vec<FunctionDemand> = (1..=12)
        .map(|i| FunctionDemand {
            memory_mb: 256.0,
            ..demand(i, 40.0 + f64::from(i), 20_000.0, 1.0, 100.0)
        })
        .collect();
    let mut nodes = cluster();
    nodes[1].memory_mb = 2_048;
    nodes[1].cores = 64;
    let plan = solve_default(&demand, &nodes);
    let warm = plan.warm_on(NodeId(1)).len();
    assert!((1..=3).contains(&warm), "{warm} warm: {plan:#?}");
}

#[test]
fn pools_cover_the_containers_assembled_in_one_refill_window() {
    // Many rare CPU-heavy functions on a node too small in memory to keep them warm: each
    // invocation assembles, 0.05 s refill x their total rate.
    let demand: Vec<FunctionDemand> = (1..=10)
        .map(|i| FunctionDemand {
            memory_mb: 1_000.0,
            ..demand(i, 60.0, 20_000.0, 1.0, 100.0)
        })
        .collect();
    let mut nodes = cluster();
    nodes[1].memory_mb = 1_024;
    nodes[1].cores = 64;
    let plan = solve_default(&demand, &nodes);
    assert!(plan.warm_on(NodeId(1)).is_empty(), "{plan:#?}");
    let pool = plan.pool_size(NodeId(1)).unwrap();
    // 600 assemblies/s x 0.05 s = 30 parts.
    assert!((30..=31).contains(&pool), "pool {pool}: {plan:#?}");
}

#[test]
fn demand_beyond_the_cluster_is_planned_and_the_overloaded_node_named() {
    let plan = solve_default(&[demand(1, 1_000_000.0, 500.0, 10.0, 10_000.0)], &cluster());
    assert!(!plan.overloaded.is_empty(), "{plan:#?}");
}

#[test]
fn without_compute_nodes_everything_stays_in_storage() {
    let plan = solve_default(
        &[demand(1, 50.0, 20_000.0, 1.0, 100.0)],
        &[node(0, NodeRole::Storage, 2)],
    );
    assert!(
        (plan.functions[0].storage_share - 1.0).abs() < 1e-6,
        "{plan:#?}"
    );
    assert!(plan.pools.is_empty());
}

#[test]
fn slow_and_non_finite_rates_are_left_out_and_nothing_panics() {
    let plan = solve_default(
        &[
            demand(1, 0.01, 100.0, 1.0, 10.0),
            demand(2, f64::NAN, 100.0, 1.0, 10.0),
            demand(3, f64::INFINITY, 100.0, 1.0, 10.0),
        ],
        &cluster(),
    );
    assert!(plan.functions.is_empty());
    assert_eq!(
        plan.pools,
        vec![(NodeId(1), ProvisionConfig::default().pool_min)]
    );
}

#[test]
fn dedicated_cores_follow_the_data_home() {
    let mut hot = demand(1, 8_000.0, 60.0, 4.0, 4_000.0);
    hot.data_home = vec![(NodeId(2), 3.0)];
    let others = demand(2, 300.0, 1_500.0, 2.0, 1_000.0);
    let nodes = [
        node(0, NodeRole::Storage, 4),
        node(2, NodeRole::Storage, 4),
        node(1, NodeRole::Compute, 4),
    ];
    let plan = solve_default(&[hot, others], &nodes);
    let f1 = plan.function(FunctionId(1)).unwrap();
    assert_eq!(f1.dedicated_cores, vec![(NodeId(2), 1)], "{plan:#?}");
}

#[test]
fn data_homes_decay_and_forget() {
    let mut homes = DataHomes::default();
    homes.observe(FunctionId(1), &[(NodeId(0), 1.0)]);
    homes.observe(FunctionId(1), &[(NodeId(1), 0.5), (NodeId(0), 0.5)]);
    assert_eq!(
        homes.shares(FunctionId(1)),
        vec![(NodeId(0), 1.5), (NodeId(1), 0.5)]
    );
    homes.decay();
    assert_eq!(
        homes.shares(FunctionId(1)),
        vec![(NodeId(0), 0.75), (NodeId(1), 0.25)]
    );
    for _ in 0..20 {
        homes.decay();
    }
    assert!(homes.shares(FunctionId(1)).is_empty());
    homes.observe(FunctionId(2), &[(NodeId(0), 1.0)]);
    homes.forget(FunctionId(2));
    assert!(homes.shares(FunctionId(2)).is_empty());
}

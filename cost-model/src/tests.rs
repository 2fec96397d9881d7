//! Tables with the arithmetic in comments, and properties of the model.

use proptest::prelude::*;

use super::*;

fn warm_compute() -> Candidate {
    Candidate {
        tier: Tier::Compute,
        start: StartKind::Warm,
        queue_us: 0.0,
        local_fraction: 0.0,
    }
}

fn owning_storage() -> Candidate {
    Candidate {
        tier: Tier::Storage,
        start: StartKind::Assembled,
        queue_us: 0.0,
        local_fraction: 1.0,
    }
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * (1.0 + a.abs().max(b.abs()))
}

#[test]
fn storage_breakdown_by_hand() {
    let p = CostParams::default();
    let w = Workload {
        compute_us: 100.0,
        accesses: 10.0,
        rounds: 5.0,
        bytes: 10_000.0,
    };
    let c = estimate(&p, &w, &owning_storage());
    // dispatch: 10 x (1 + 0 remote accesses) = 10
    assert!(close(c.dispatch_us, 10.0));
    // start: 2.3 + 10 crossings x 0.013 = 2.43
    assert!(close(c.start_us, 2.43));
    // compute: 100 x 1.2 slowdown = 120
    assert!(close(c.compute_us, 120.0));
    // local: 10 x 0.1 = 1
    assert!(close(c.local_access_us, 1.0));
    // only the invocation's own round trip: 30
    assert!(close(c.network_rtt_us, 30.0));
    assert!(close(c.bytes_us, 0.0) && close(c.bytes_moved, 0.0));
    // latency: 10 + 2.43 + 120 + 1 + 30 = 163.43
    assert!(close(c.latency_us(), 163.43));
    // storage CPU: 10 + 2.43 + 120 + 1 = 133.43
    assert!(close(c.storage_cpu_us, 133.43));
    assert!(close(c.compute_cpu_us, 0.0));
}

#[test]
fn compute_breakdown_by_hand() {
    let p = CostParams::default();
    let w = Workload {
        compute_us: 100.0,
        accesses: 10.0,
        rounds: 5.0,
        bytes: 10_000.0,
    };
    let c = estimate(&p, &w, &warm_compute());
    // dispatch: 10 x (1 + 10 remote accesses) = 110
    assert!(close(c.dispatch_us, 110.0));
    assert!(close(c.start_us, 0.0));
    assert!(close(c.compute_us, 100.0));
    // round trips: 30 x (1 + 5 rounds) = 180
    assert!(close(c.network_rtt_us, 180.0));
    // bytes: 10,000 B / (25 Gbit/s = 3,125 B/us) = 3.2 us wire + 2 sides x 10,000 x 0.25 ns = 5 us
    assert!(close(c.bytes_us, 8.2));
    // latency: 110 + 0 + 100 + 180 + 8.2 = 398.2
    assert!(close(c.latency_us(), 398.2));
    // storage CPU: 10 accesses x 10 dispatch + 2.5 us stack = 102.5
    assert!(close(c.storage_cpu_us, 102.5));
    // compute CPU: 10 dispatch + 100 compute + 10 x 10 client dispatch + 2.5 stack = 212.5
    assert!(close(c.compute_cpu_us, 212.5));
}

#[test]
fn container_start_terms() {
    let p = CostParams::default();
    let w = Workload::default();
    let mut cand = warm_compute();
    for (start, expect) in [
        (StartKind::Warm, 0.0),
        (StartKind::Assembled, 1_000.0),
        (StartKind::Cold, 50_000.0),
    ] {
        cand.start = start;
        assert!(close(estimate(&p, &w, &cand).start_us, expect), "{start:?}");
    }
}

#[test]
fn crossover_matches_the_estimates() {
    // At the crossover the storage and warm-compute latencies are equal.
    let p = CostParams::default();
    let mut w = Workload {
        compute_us: 0.0,
        accesses: 8.0,
        rounds: 8.0,
        bytes: 4_096.0,
    };
    w.compute_us = storage_crossover_us(&p, &w);
    let s = estimate(&p, &w, &owning_storage()).latency_us();
    let c = estimate(&p, &w, &warm_compute()).latency_us();
    assert!(close(s, c), "storage {s} vs compute {c}");
    // 8 accesses x (10 - 0.1) + 4096/3125 wire + 2 x 4096 x 0.25/1000 stack + 8 x 30 rtt
    //   - 8 x 0.013 crossings - 2.3 start
    // = 79.2 + 1.31072 + 2.048 + 240 - 0.104 - 2.3 = 320.15472; over 0.2 extra slowdown = 1600.7736.
    assert!(close(w.compute_us, 1_600.773_6));
}

#[test]
fn storage_cpu_price_grows_with_utilisation() {
    let w = Weights::default();
    // 1 / (1 - 0) = 1; 1 / (1 - 0.5) = 2; capped at 1 / 0.05 = 20.
    assert!(close(w.storage_cpu_price(0.0), 1.0));
    assert!(close(w.storage_cpu_price(0.5), 2.0));
    assert!(close(w.storage_cpu_price(1.0), 20.0));
}

#[test]
fn calibration_replaces_defaults_then_tracks() {
    let mut cal = Calibrator::new(CostParams::default());
    assert_eq!(cal.samples(SampleKind::RoundTrip), 0);
    cal.observe(SampleKind::RoundTrip, 100.0).expect("valid");
    // The first sample replaces the default of 30.
    assert!(close(cal.params().rtt_us, 100.0));
    cal.observe(SampleKind::RoundTrip, 200.0).expect("valid");
    // Mean of the first samples: (100 + 200) / 2 = 150.
    assert!(close(cal.params().rtt_us, 150.0));
    assert!(cal.observe(SampleKind::WasmStart, f64::NAN).is_err());
    assert!(cal.observe(SampleKind::WasmStart, -1.0).is_err());
    // Rejected samples change nothing.
    assert!(close(cal.params().wasm_start_us, 2.3));
}

#[test]
fn a_report_with_nothing_new_is_no_sample() {
    let mut cal = Calibrator::new(CostParams::default());
    cal.observe_many(SampleKind::ContainerCold, 9_000.0, 0)
        .expect("valid");
    assert_eq!(cal.samples(SampleKind::ContainerCold), 0);
    assert!(close(cal.params().container_cold_us, 50_000.0));
    cal.observe_many(SampleKind::ContainerCold, 9_000.0, 3)
        .expect("valid");
    assert_eq!(cal.samples(SampleKind::ContainerCold), 3);
    assert!(close(cal.params().container_cold_us, 9_000.0));
}

#[test]
fn a_nodes_overlay_replaces_only_what_it_measured() {
    let cluster = CostParams {
        rtt_us: 80.0,
        ..CostParams::default()
    };
    let mut node = Calibrator::new(CostParams::default());
    node.observe(SampleKind::WarmStart, 400.0).expect("valid");
    node.observe(SampleKind::ContainerAssembly, 2_000.0)
        .expect("valid");
    let params = node.overlay(&cluster, 0);
    assert!(close(params.zygote_fork_us, 400.0));
    assert!(close(params.container_assembled_us, 2_000.0));
    // Not measured by the node: the cluster's.
    assert!(close(params.rtt_us, 80.0));
    assert!(close(params.wasm_start_us, cluster.wasm_start_us));
}

#[test]
fn a_nodes_few_measurements_are_weighed_against_the_clusters_figure() {
    let cluster = CostParams {
        rtt_us: 100.0,
        ..CostParams::default()
    };
    let mut node = Calibrator::new(CostParams::default());
    // One slow round trip: weighed as 1 sample against the cluster's 4.
    node.observe(SampleKind::RoundTrip, 600.0).expect("valid");
    assert!(close(node.overlay(&cluster, 4).rtt_us, 200.0));
    // Sixteen of 600 us: 16 against 4, so the node's own figure mostly.
    node.observe_many(SampleKind::RoundTrip, 600.0, 15)
        .expect("valid");
    assert!(close(node.overlay(&cluster, 4).rtt_us, 500.0));
    assert!(close(node.overlay(&cluster, 0).rtt_us, 600.0));
    // Unmeasured kinds stay the cluster's.
    assert!(close(
        node.overlay(&cluster, 4).wasm_start_us,
        cluster.wasm_start_us
    ));
}

fn workload() -> impl Strategy<Value = Workload> {
    (0.0..1e6f64, 0.0..1e3f64, 0.0..1e2f64, 0.0..1e7f64).prop_map(
        |(compute_us, accesses, rounds, bytes)| Workload {
            compute_us,
            accesses,
            rounds,
            bytes,
        },
    )
}

fn candidate() -> impl Strategy<Value = Candidate> {
    (any::<bool>(), 0u8..3, 0.0..1e5f64, 0.0..=1.0f64).prop_map(
        |(storage, start, queue_us, local)| Candidate {
            tier: if storage {
                Tier::Storage
            } else {
                Tier::Compute
            },
            start: [StartKind::Warm, StartKind::Assembled, StartKind::Cold][start as usize],
            queue_us,
            local_fraction: if storage { local } else { 0.0 },
        },
    )
}

proptest! {
    #[test]
    fn n_measurements_at_once_are_n_samples(
        before in proptest::collection::vec(0.0..1e5f64, 0..40),
        mean in 0.0..1e5f64,
        n in 1u32..60,
    ) {
        let mut one_by_one = Calibrator::new(CostParams::default());
        let mut at_once = Calibrator::new(CostParams::default());
        for &x in &before {
            one_by_one.observe(SampleKind::Dispatch, x).expect("valid");
            at_once.observe(SampleKind::Dispatch, x).expect("valid");
        }
        for _ in 0..n {
            one_by_one.observe(SampleKind::Dispatch, mean).expect("valid");
        }
        at_once.observe_many(SampleKind::Dispatch, mean, n).expect("valid");
        prop_assert_eq!(one_by_one.samples(SampleKind::Dispatch), at_once.samples(SampleKind::Dispatch));
        let (a, b) = (one_by_one.params().dispatch_us, at_once.params().dispatch_us);
        prop_assert!((a - b).abs() <= 1e-6 * a.abs().max(1.0), "{} != {}", a, b);
    }

    #[test]
    fn cost_is_monotone_in_rounds_and_bytes(w in workload(), c in candidate(), more_rounds in 0.0..50f64, more_bytes in 0.0..1e6f64) {
        let p = CostParams::default();
        let base = estimate(&p, &w, &c);
        let rounds = estimate(&p, &Workload { rounds: w.rounds + more_rounds, ..w }, &c);
        let bytes = estimate(&p, &Workload { bytes: w.bytes + more_bytes, ..w }, &c);
        prop_assert!(rounds.latency_us() >= base.latency_us());
        prop_assert!(bytes.latency_us() >= base.latency_us());
        prop_assert!(bytes.bytes_moved >= base.bytes_moved);
        let weights = Weights::default();
        prop_assert!(weights.objective(&rounds, 0.5) >= weights.objective(&base, 0.5));
        prop_assert!(weights.objective(&bytes, 0.5) >= weights.objective(&base, 0.5));
    }

    #[test]
    fn every_term_is_finite_and_non_negative(w in workload(), c in candidate()) {
        let b = estimate(&CostParams::default(), &w, &c);
        for v in [b.queue_us, b.dispatch_us, b.start_us, b.compute_us, b.local_access_us, b.network_rtt_us, b.bytes_us, b.storage_cpu_us, b.compute_cpu_us, b.bytes_moved] {
            prop_assert!(v.is_finite() && v >= 0.0);
        }
    }
}

//! The offline LP bound: hand-computed cases, tier availability, bad input, determinism, scale.

use std::time::Instant;

use sandstorm_sim::bound::{Bound, BoundError, Capacity, ClassDemand, TierCost, solve};

type TestResult = Result<(), BoundError>;

const TOL: f64 = 1e-6;

fn class(name: &str, rate_per_s: f64, storage: TierCost, compute: TierCost) -> ClassDemand {
    ClassDemand {
        name: name.to_owned(),
        rate_per_s,
        storage,
        compute,
    }
}

fn cap(storage_cores: f64, compute_cores: f64) -> Capacity {
    Capacity {
        storage_cores,
        compute_cores,
        max_utilisation: 1.0,
    }
}

/// The error `result` must be.
fn error(result: Result<Bound, BoundError>) -> BoundError {
    match result {
        Ok(bound) => panic!("expected an error, got {bound:?}"),
        Err(e) => e,
    }
}

fn close(actual: f64, expected: f64, what: &str) {
    assert!(
        (actual - expected).abs() <= TOL * expected.abs().max(1.0),
        "{what}: got {actual}, expected {expected}"
    );
}

/// Cores each tier uses under the bound's shares.
fn cores_used(classes: &[ClassDemand], bound: &Bound) -> (f64, f64) {
    let compute_share = bound.compute_share();
    let mut used = (0.0, 0.0);
    for (i, c) in classes.iter().enumerate() {
        let (s, k) = (bound.storage_share[i], compute_share[i]);
        used.0 +=
            c.rate_per_s * (s * c.storage.storage_core_us + k * c.compute.storage_core_us) / 1e6;
        used.1 +=
            c.rate_per_s * (s * c.storage.compute_core_us + k * c.compute.compute_core_us) / 1e6;
    }
    used
}

#[test]
fn storage_only_classes_fill_two_storage_cores_at_2000_per_s() -> TestResult {
    // A: 1000/s x 1 ms = 1 core; B: 2000/s x 1 ms = 2 cores; storage has 2 cores, compute is
    // unavailable to both. Storage is full at 2000 invocations/s, so 1000/s are unservable.
    // Stage 2 serves the cheaper A whole (1000/s, objective 10) and B half (1000/s, 20):
    // mean = (1000 x 10 + 1000 x 20) / 2000 = 15.
    let classes = [
        class(
            "A",
            1000.0,
            TierCost::on_storage(10.0, 1000.0),
            TierCost::unavailable(),
        ),
        class(
            "B",
            2000.0,
            TierCost::on_storage(20.0, 1000.0),
            TierCost::unavailable(),
        ),
    ];
    let bound = solve(&classes, &cap(2.0, 8.0))?;
    close(bound.goodput_per_s, 2000.0, "goodput");
    close(bound.objective_per_invocation, 15.0, "objective");
    close(bound.storage_share[0], 1.0, "A on storage");
    close(bound.storage_share[1], 0.5, "B on storage");
    close(bound.served_share[0], 1.0, "A served");
    close(bound.served_share[1], 0.5, "B served");

    // max_utilisation 0.75: 2 x 0.75 = 1.5 cores -> 1500/s: all of A, 500/s of B (a quarter).
    // mean = (1000 x 10 + 500 x 20) / 1500 = 13.33...
    let bound = solve(
        &classes,
        &Capacity {
            storage_cores: 2.0,
            compute_cores: 8.0,
            max_utilisation: 0.75,
        },
    )?;
    close(bound.goodput_per_s, 1500.0, "goodput at 75%");
    close(
        bound.objective_per_invocation,
        20_000.0 / 1500.0,
        "objective at 75%",
    );
    close(bound.served_share[1], 0.25, "B served at 75%");
    Ok(())
}

#[test]
fn storage_capacity_binds_and_goes_to_the_best_saving_per_core() -> TestResult {
    // Storage 2 cores, compute 4 cores.
    //   A: 1000/s; storage obj 100, 1 ms -> 1 core if all on storage; compute obj 300, 2 ms.
    //   B: 3000/s; storage obj  50, 0.5 ms -> 1.5 cores;                compute obj  80, 1 ms.
    // All on storage would need 2.5 cores (> 2); all on compute 2 + 3 = 5 cores (> 4); but e.g.
    // A on storage and half of B on storage fits (1.75 storage, 1.5 compute), so all 4000/s are
    // servable.
    // With a, b the storage fractions the total objective per second is
    //   1000 (100a + 300(1-a)) + 3000 (50b + 80(1-b)) = 540000 - 200000a - 90000b,
    // subject to a + 1.5b <= 2 (storage) and 2(1-a) + 3(1-b) <= 4 (compute).
    // Saving per storage core: A 200000 / 1 core, B 90000 / 1.5 cores = 60000: A goes first,
    // a = 1, then b = (2 - 1) / 1.5 = 2/3 (compute: 3 x 1/3 = 1 core, fine).
    // Total = 540000 - 200000 - 60000 = 280000 per second, mean = 280000 / 4000 = 70.
    let classes = [
        class(
            "A",
            1000.0,
            TierCost::on_storage(100.0, 1000.0),
            TierCost::on_compute(300.0, 2000.0),
        ),
        class(
            "B",
            3000.0,
            TierCost::on_storage(50.0, 500.0),
            TierCost::on_compute(80.0, 1000.0),
        ),
    ];
    let bound = solve(&classes, &cap(2.0, 4.0))?;
    close(bound.goodput_per_s, 4000.0, "goodput");
    close(bound.objective_per_invocation, 70.0, "objective");
    close(bound.storage_share[0], 1.0, "A on storage");
    close(bound.storage_share[1], 2.0 / 3.0, "B on storage");
    close(bound.served_share[0], 1.0, "A served");
    close(bound.served_share[1], 1.0, "B served");
    let compute = bound.compute_share();
    close(compute[1], 1.0 / 3.0, "B on compute");
    let (storage_used, compute_used) = cores_used(&classes, &bound);
    close(storage_used, 2.0, "storage cores used");
    close(compute_used, 1.0, "compute cores used");
    Ok(())
}

#[test]
fn compute_placements_also_spend_storage_cpu() -> TestResult {
    // One class, 3000/s. Storage: obj 10, 1 ms of storage core. Compute: obj 20, 1 ms of compute
    // core plus 0.5 ms of storage CPU for its data accesses. Storage 1 core, compute 10 cores.
    // Storage row: 3000 (1 ms s + 0.5 ms k) = 3s + 1.5k <= 1; compute 3k <= 10.
    // Max s + k: compute placements need half the storage CPU, so k = 2/3, s = 0 -> 2000/s.
    // Serving 2000/s leaves no choice: all on compute, mean objective 20.
    let classes = [class(
        "data-heavy",
        3000.0,
        TierCost::on_storage(10.0, 1000.0),
        TierCost::on_compute(20.0, 1000.0).with_storage_core_us(500.0),
    )];
    let bound = solve(&classes, &cap(1.0, 10.0))?;
    close(bound.goodput_per_s, 2000.0, "goodput");
    close(bound.objective_per_invocation, 20.0, "objective");
    close(bound.storage_share[0], 0.0, "on storage");
    close(bound.served_share[0], 2.0 / 3.0, "served");
    Ok(())
}

#[test]
fn unconstrained_each_class_goes_to_its_cheaper_tier() -> TestResult {
    // Plenty of cores: nothing binds, so every class is served whole at its cheaper tier.
    //   f: 100/s, storage 5 < compute 9  -> storage, 5
    //   g: 300/s, storage 40 > compute 12 -> compute, 12
    //   h: 600/s, storage 7 < compute 8  -> storage, 7
    // mean = (100 x 5 + 300 x 12 + 600 x 7) / 1000 = (500 + 3600 + 4200) / 1000 = 8.3
    let classes = [
        class(
            "f",
            100.0,
            TierCost::on_storage(5.0, 100.0),
            TierCost::on_compute(9.0, 100.0),
        ),
        class(
            "g",
            300.0,
            TierCost::on_storage(40.0, 5000.0),
            TierCost::on_compute(12.0, 4000.0),
        ),
        class(
            "h",
            600.0,
            TierCost::on_storage(7.0, 50.0),
            TierCost::on_compute(8.0, 60.0),
        ),
    ];
    let bound = solve(&classes, &cap(64.0, 256.0))?;
    close(bound.goodput_per_s, 1000.0, "goodput");
    close(bound.objective_per_invocation, 8.3, "objective");
    for (i, expected) in [1.0, 0.0, 1.0].into_iter().enumerate() {
        close(
            bound.storage_share[i],
            expected,
            &format!("class {i} on storage"),
        );
        close(bound.served_share[i], 1.0, &format!("class {i} served"));
    }
    Ok(())
}

#[test]
fn unavailable_tiers_and_zero_capacity_are_respected() -> TestResult {
    // wasm-less: storage unavailable (its fields may be garbage) -> compute only, obj 30 although
    //   storage would have been cheaper.
    // storage-only: compute unavailable -> storage, obj 4.
    // stranded: no tier at all -> never served.
    // idle: rate 0 -> no capacity; shown at its cheaper tier (compute, 2 < 3), counted nowhere.
    // goodput = 100 + 200 = 300 of 400/s; mean = (100 x 30 + 200 x 4) / 300 = 3800 / 300.
    let garbage = TierCost {
        objective: f64::NAN,
        storage_core_us: -1.0,
        compute_core_us: f64::INFINITY,
        available: false,
    };
    let classes = [
        class(
            "wasm-less",
            100.0,
            garbage,
            TierCost::on_compute(30.0, 1000.0),
        ),
        class(
            "storage-only",
            200.0,
            TierCost::on_storage(4.0, 100.0),
            TierCost::unavailable(),
        ),
        class(
            "stranded",
            100.0,
            TierCost::unavailable(),
            TierCost::unavailable(),
        ),
        class(
            "idle",
            0.0,
            TierCost::on_storage(3.0, 10.0),
            TierCost::on_compute(2.0, 10.0),
        ),
    ];
    let bound = solve(&classes, &cap(4.0, 4.0))?;
    close(bound.goodput_per_s, 300.0, "goodput");
    close(bound.objective_per_invocation, 3800.0 / 300.0, "objective");
    assert_eq!(bound.storage_share, vec![0.0, 1.0, 0.0, 0.0]);
    assert_eq!(bound.served_share, vec![1.0, 1.0, 0.0, 1.0]);

    // No storage cores: storage-only class cannot run; wasm-less still runs on compute.
    let bound = solve(&classes, &cap(0.0, 4.0))?;
    close(bound.goodput_per_s, 100.0, "goodput without storage cores");
    close(
        bound.objective_per_invocation,
        30.0,
        "objective without storage cores",
    );
    assert_eq!(bound.served_share[1], 0.0);

    // Nothing servable at all: goodput 0 and the vacuous objective bound 0.
    let bound = solve(&classes[2..3], &cap(4.0, 4.0))?;
    assert_eq!(bound.goodput_per_s, 0.0);
    assert_eq!(bound.objective_per_invocation, 0.0);
    assert_eq!(bound.served_share, vec![0.0]);
    Ok(())
}

#[test]
fn bad_input_is_an_error_naming_the_class_and_field() -> TestResult {
    let good = class(
        "ok",
        10.0,
        TierCost::on_storage(1.0, 1.0),
        TierCost::on_compute(2.0, 1.0),
    );
    assert_eq!(solve(&[], &cap(1.0, 1.0)), Err(BoundError::NoClasses));

    let negative_rate = class("neg", -1.0, good.storage, good.compute);
    let err = error(solve(&[good.clone(), negative_rate], &cap(1.0, 1.0)));
    assert!(matches!(
        &err,
        BoundError::InvalidClass { class, index: 1, field: "rate_per_s", .. } if class == "neg"
    ));
    let message = err.to_string();
    assert!(
        message.contains("`neg`") && message.contains("rate_per_s"),
        "{message}"
    );

    let nan_core = class(
        "nan",
        1.0,
        good.storage,
        TierCost::on_compute(2.0, f64::NAN),
    );
    let err = error(solve(&[nan_core], &cap(1.0, 1.0)));
    assert!(
        matches!(&err, BoundError::InvalidClass { field: "compute.compute_core_us", value, .. } if value.is_nan()),
        "{err}"
    );

    let inf_obj = class(
        "inf",
        1.0,
        TierCost::on_storage(f64::INFINITY, 1.0),
        good.compute,
    );
    let err = error(solve(&[inf_obj], &cap(1.0, 1.0)));
    assert!(
        matches!(
            err,
            BoundError::InvalidClass {
                field: "storage.objective",
                ..
            }
        ),
        "{err}"
    );

    for (capacity, field) in [
        (cap(-1.0, 1.0), "storage_cores"),
        (cap(1.0, f64::NAN), "compute_cores"),
        (
            Capacity {
                storage_cores: 1.0,
                compute_cores: 1.0,
                max_utilisation: 1.5,
            },
            "max_utilisation",
        ),
    ] {
        let err = error(solve(std::slice::from_ref(&good), &capacity));
        assert!(
            matches!(err, BoundError::InvalidCapacity { field: f, .. } if f == field),
            "{err}"
        );
    }
    Ok(())
}

/// A deterministic pseudo-random load point (splitmix64), so tests need no seed plumbing.
fn random_classes(n: usize, seed: u64) -> Vec<ClassDemand> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|i| {
            let rate = 1.0 + 200.0 * next();
            let exec_us = 20.0 + 2000.0 * next();
            let accesses_us = 1.0 + 50.0 * next();
            let storage = if next() < 0.9 {
                TierCost::on_storage(1.2 * exec_us + accesses_us * 0.1, 1.2 * exec_us)
            } else {
                TierCost::unavailable()
            };
            let compute = TierCost::on_compute(exec_us + accesses_us * 3.0 + 50.0, exec_us)
                .with_storage_core_us(accesses_us * 0.5);
            class(&format!("fn-{i}"), rate, storage, compute)
        })
        .collect()
}

#[test]
fn identical_input_gives_identical_output_and_duplicates_share_fractions() -> TestResult {
    let classes = random_classes(200, 7);
    let capacity = cap(20.0, 40.0);
    let first = solve(&classes, &capacity)?;
    let second = solve(&classes, &capacity)?;
    assert_eq!(first, second);

    // Splitting a class into two identical halves changes nothing: they are merged.
    let mut split = classes.clone();
    split[0].rate_per_s /= 2.0;
    split.push(split[0].clone());
    let bound = solve(&split, &capacity)?;
    close(
        bound.goodput_per_s,
        first.goodput_per_s,
        "goodput after split",
    );
    close(
        bound.objective_per_invocation,
        first.objective_per_invocation,
        "objective after split",
    );
    assert_eq!(bound.storage_share[0], bound.storage_share[200]);
    Ok(())
}

#[test]
fn a_thousand_classes_solve_quickly_and_respect_capacity() -> TestResult {
    let classes = random_classes(1000, 42);
    let total: f64 = classes.iter().map(|c| c.rate_per_s).sum();
    // Around 100 cores' worth of demand: tight on storage, loose on compute.
    for capacity in [cap(30.0, 200.0), cap(30.0, 40.0), cap(1000.0, 1000.0)] {
        let start = Instant::now();
        let bound = solve(&classes, &capacity)?;
        let elapsed = start.elapsed();
        println!(
            "1000 classes, {:.0}/s, {capacity:?}: goodput {:.1}/s, objective {:.2}, solved in {elapsed:?}",
            total, bound.goodput_per_s, bound.objective_per_invocation
        );
        assert!(bound.goodput_per_s <= total * (1.0 + TOL));
        let (storage, compute) = cores_used(&classes, &bound);
        assert!(
            storage <= capacity.storage_cores * (1.0 + TOL),
            "storage {storage}"
        );
        assert!(
            compute <= capacity.compute_cores * (1.0 + TOL),
            "compute {compute}"
        );
        let served: f64 = classes
            .iter()
            .zip(&bound.served_share)
            .map(|(c, s)| c.rate_per_s * s)
            .sum();
        close(served, bound.goodput_per_s, "served by shares vs goodput");

        // No whole-class greedy placement that fits may beat the bound: each class at its
        // cheaper tier, if it fits, is one such placement.
        if capacity.storage_cores >= 1000.0 {
            let greedy: f64 = classes
                .iter()
                .map(|c| {
                    let s = if c.storage.available {
                        c.storage.objective
                    } else {
                        f64::INFINITY
                    };
                    c.rate_per_s * s.min(c.compute.objective)
                })
                .sum::<f64>()
                / total;
            close(bound.goodput_per_s, total, "all served when unconstrained");
            close(
                bound.objective_per_invocation,
                greedy,
                "objective when unconstrained",
            );
        }
    }
    Ok(())
}

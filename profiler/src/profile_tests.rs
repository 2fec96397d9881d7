//! Tests of [`super::FunctionProfile`].

use proptest::prelude::*;

use super::*;

fn obs(arrival_us: u64, duration_us: u64, cpu_us: u64) -> Observation {
    Observation {
        arrival_us,
        duration_us,
        cpu_us,
        ..Observation::default()
    }
}

fn within_1pct(got: u64, want: u64) -> bool {
    (got as f64 - want as f64).abs() <= 0.01 * want as f64 + 1.0
}

#[test]
fn histograms_are_constructible() {
    let h = new_histogram();
    assert_eq!(h.high(), HISTOGRAM_HIGH_US);
    assert_eq!(h.low(), HISTOGRAM_LOW_US);
}

#[test]
fn empty_profile_is_all_zero() {
    let p = FunctionProfile::new();
    assert_eq!(p.invocations(), 0);
    assert_eq!((p.duration_us(0.5), p.cpu_us(0.99)), (0, 0));
    assert_eq!((p.arrival_rate_per_s(), p.burstiness()), (0.0, 0.0));
    assert_eq!(p.workload(), Workload::default());
    assert_eq!(p.last_arrival_us(), None);
    assert!(format!("{p:?}").starts_with("FunctionProfile(ProfileSummary"));
}

#[test]
fn quantiles_and_clamping() {
    let mut p = FunctionProfile::new();
    // Durations 1..=100 ms: p50 = 50 ms, p99 = 99 ms, p100 = 100 ms (each within 1%).
    for i in 1..=100u64 {
        p.record(&obs(i, i * 1_000, i * 500));
    }
    let table = [(0.5, 50_000), (0.99, 99_000), (1.0, 100_000), (0.0, 1_000)];
    for (q, want) in table {
        let got = p.duration_us(q);
        assert!(within_1pct(got, want), "q{q}: {got} vs {want}");
    }
    // CPU is half the duration: p50 = 25 ms.
    assert!(within_1pct(p.cpu_us(0.5), 25_000));
    // Out-of-range quantiles are clamped, NaN is read as 0.
    assert_eq!(p.duration_us(7.0), p.duration_us(1.0));
    assert_eq!(p.duration_us(-1.0), p.duration_us(0.0));
    assert_eq!(p.duration_us(f64::NAN), p.duration_us(0.0));

    // 0 is recorded as 1 us, anything past an hour as an hour; nothing panics.
    let mut q = FunctionProfile::new();
    q.record(&obs(0, 0, 0));
    q.record(&obs(1, u64::MAX, u64::MAX));
    assert!(q.duration_us(0.0) <= 1);
    assert!(within_1pct(q.duration_us(1.0), HISTOGRAM_HIGH_US));
    // The mean is of the raw values: (0 + 2^64 - 1) / 2 ~ 9.2e18.
    assert!((q.mean_cpu_us() - u64::MAX as f64 / 2.0).abs() < 1e6);
}

#[test]
fn running_means_feed_the_workload() {
    let mut p = FunctionProfile::new();
    // (cpu, accesses, rounds, bytes)
    let rows = [(100, 2, 1, 1_000), (300, 4, 2, 3_000), (200, 0, 0, 2_000)];
    for (i, &(cpu, accesses, rounds, bytes)) in rows.iter().enumerate() {
        p.record(&Observation {
            arrival_us: i as u64,
            duration_us: cpu,
            cpu_us: cpu,
            accesses,
            rounds,
            bytes,
        });
    }
    // Means: cpu (100+300+200)/3 = 200, accesses 6/3 = 2, rounds 3/3 = 1, bytes 6000/3 = 2000.
    let w = p.workload();
    let want = [
        (w.compute_us, 200.0),
        (w.accesses, 2.0),
        (w.rounds, 1.0),
        (w.bytes, 2_000.0),
    ];
    for (got, want) in want {
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    }
    assert_eq!(
        (p.mean_accesses(), p.mean_rounds(), p.mean_bytes()),
        (w.accesses, w.rounds, w.bytes)
    );
    assert_eq!(p.invocations(), 3);
}

#[test]
fn arrival_rate_is_a_moving_average_of_gaps() {
    // (arrivals, expected rate per second, expected burstiness)
    let table: [(&[u64], f64, f64); 5] = [
        // One arrival: no gap yet.
        (&[5_000], 0.0, 0.0),
        // One gap of 1 ms: 1000/s; a single gap has no variance.
        (&[0, 1_000], 1_000.0, 0.0),
        // Gaps 1000, 1000, 1000: periodic, CV 0.
        (&[0, 1_000, 2_000, 3_000], 1_000.0, 0.0),
        // Gaps 1000 then 2000: EWMA 1000 + (2000 - 1000) / 8 = 1125 us -> 888.9/s;
        // mean 1500, sample sd sqrt(((-500)^2 + 500^2) / 1) = 707.1, CV 0.4714.
        (&[0, 1_000, 3_000], 1e6 / 1_125.0, 707.106_781 / 1_500.0),
        // Simultaneous arrivals: the gap is taken as 1 us, 1e6/s; mean gap 0 -> CV 0.
        (&[10, 10, 10], 1e6, 0.0),
    ];
    for (arrivals, rate, cv) in table {
        let mut p = FunctionProfile::new();
        for &a in arrivals {
            p.record(&obs(a, 10, 10));
        }
        assert!(
            (p.arrival_rate_per_s() - rate).abs() < 1e-6 * rate.max(1.0),
            "{arrivals:?}: rate {}",
            p.arrival_rate_per_s()
        );
        assert!(
            (p.burstiness() - cv).abs() < 1e-6,
            "{arrivals:?}: cv {}",
            p.burstiness()
        );
    }
}

#[test]
fn out_of_order_arrivals_count_as_zero_gaps() {
    let mut p = FunctionProfile::new();
    // Arrivals 0, 2000 then (finishing late) 1000: gaps 2000 and 0; the latest stays 2000.
    for a in [0, 2_000, 1_000] {
        p.record(&obs(a, 10, 10));
    }
    assert_eq!(p.last_arrival_us(), Some(2_000));
    // EWMA: 2000 + (0 - 2000) / 8 = 1750 us -> 571.4/s. Mean gap 1000 = span 2000 / 2 gaps.
    assert!((p.arrival_rate_per_s() - 1e6 / 1_750.0).abs() < 1e-6);
    assert!((p.gaps.mean - 1_000.0).abs() < 1e-9);
}

#[test]
fn poisson_arrivals_have_burstiness_near_one() {
    // Exponential gaps from a fixed-seed LCG (no global RNG): CV of an exponential is 1.
    let mut state: u64 = 42;
    let mut now = 0u64;
    let mut p = FunctionProfile::new();
    for _ in 0..20_000 {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let u = ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        now += (-u.ln() * 10_000.0) as u64; // mean gap 10 ms: 100/s
        p.record(&obs(now, 10, 10));
    }
    assert!((p.burstiness() - 1.0).abs() < 0.05, "cv {}", p.burstiness());
    // The EWMA weighs ~8 recent gaps, so it is noisy: within a factor 3 of 100/s.
    let rate = p.arrival_rate_per_s();
    assert!((33.0..300.0).contains(&rate), "rate {rate}");
}

proptest! {
    /// Quantiles are monotone and bracket the data within 1%; means are exact; nothing panics.
    #[test]
    fn quantiles_and_means_hold(
        rows in proptest::collection::vec((any::<u32>(), 0u64..10_000_000_000, any::<u16>(), any::<u16>()), 1..200)
    ) {
        let mut p = FunctionProfile::new();
        let mut arrival = 0u64;
        for &(gap, d, accesses, bytes) in &rows {
            arrival += u64::from(gap);
            p.record(&Observation {
                arrival_us: arrival,
                duration_us: d,
                cpu_us: d / 2,
                accesses: accesses.into(),
                rounds: 0,
                bytes: bytes.into(),
            });
        }
        let qs = [0.0, 0.1, 0.5, 0.9, 0.99, 1.0];
        for pair in qs.windows(2) {
            prop_assert!(p.duration_us(pair[0]) <= p.duration_us(pair[1]));
        }
        let clamp = |v: u64| v.clamp(HISTOGRAM_LOW_US, HISTOGRAM_HIGH_US);
        let max = rows.iter().map(|r| clamp(r.1)).max().unwrap_or(0);
        let min = rows.iter().map(|r| clamp(r.1)).min().unwrap_or(0);
        prop_assert!(within_1pct(p.duration_us(1.0), max));
        prop_assert!(within_1pct(p.duration_us(0.0), min));
        let n = rows.len() as f64;
        let mean_accesses = rows.iter().map(|r| f64::from(r.2)).sum::<f64>() / n;
        prop_assert!((p.mean_accesses() - mean_accesses).abs() < 1e-6 * mean_accesses.max(1.0));
        prop_assert!(p.burstiness() >= 0.0 && p.burstiness().is_finite());
        prop_assert!(p.arrival_rate_per_s() >= 0.0 && p.arrival_rate_per_s() <= 1e6);
        prop_assert_eq!(p.invocations(), rows.len() as u64);
    }
}

//! The simulator's inputs: the bundled real traces load with the right totals, arrivals expand as
//! DSLab FaaS does (counts, order, determinism, load scaling, the duration step rule), the
//! bundled scenarios load, and every bad input names its file, line and field.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sandstorm_naming::{AppId, FunctionId};
use sandstorm_sim::trace::{Arrival, DurationModel, SyntheticFunction, SyntheticSpec, Trace};

// A test crate's root resolves `mod` beside itself, so name the files.
#[path = "inputs/bad_traces.rs"]
mod bad_traces;
#[path = "inputs/scenarios.rs"]
mod scenarios;

const INV: &str = "invocations_per_function_md.anon.d01.csv";

fn repo(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
fn tiny() -> Trace {
    Trace::load_azure2019(&fixture("tiny2019"), "d01", None).expect("tiny fixture loads")
}

/// Asserts the error's message contains every part (file name, line, field...).
fn assert_names(err: &impl Display, parts: &[&str]) {
    let msg = err.to_string();
    for part in parts {
        assert!(msg.contains(part), "message {msg:?} lacks {part:?}");
    }
}

/// Checks arrivals are in order and returns them.
fn ordered(arrivals: impl Iterator<Item = Arrival>) -> Vec<Arrival> {
    let all: Vec<Arrival> = arrivals.collect();
    assert!(
        all.windows(2).all(|w| w[0].at_us <= w[1].at_us),
        "arrivals out of order"
    );
    all
}

/// Counts arrivals (checking order) without keeping them.
fn count_ordered(arrivals: impl Iterator<Item = Arrival>) -> u64 {
    let (mut n, mut last) = (0u64, 0u64);
    for a in arrivals {
        assert!(a.at_us >= last, "arrival at {} after {}", a.at_us, last);
        last = a.at_us;
        n += 1;
    }
    n
}

// ---------------------------------------------------------------- real traces

#[test]
fn azure2019_500fn_totals_and_arrivals() {
    let trace = Trace::load_azure2019(&repo("data/traces/azure2019-500fn-8h"), "d01", None)
        .expect("500fn trace loads");
    assert_eq!(trace.total_invocations(), 3_037_902);
    assert_eq!((trace.functions.len(), trace.apps.len()), (500, 476));
    assert_eq!(trace.apps_without_memory(), 0);
    assert!(
        trace
            .functions
            .iter()
            .all(|f| matches!(f.duration, DurationModel::Percentiles(_)))
    );
    assert_eq!(trace.span_us, 1440 * 60_000_000);
    assert_eq!(count_ordered(trace.arrivals(1, 1.0)), 3_037_902);
    // Every invocation lies in the active hours: 1-based minutes 480..959 = [479 min, 959 min).
    let first = trace.arrivals(1, 1.0).next().expect("some arrival");
    assert!(first.at_us >= 479 * 60_000_000, "{}", first.at_us);
}

#[test]
fn azure2019_500fn_window_matches_whole_day() {
    let dir = repo("data/traces/azure2019-500fn-8h");
    let window = Trace::load_azure2019(&dir, "d01", Some((480, 960))).expect("loads");
    assert_eq!(window.total_invocations(), 3_037_902); // all of it is in the window
    assert_eq!(
        (window.start_us(), window.span_us),
        (479 * 60_000_000, 480 * 60_000_000)
    );
    // 3,037,902 invocations over 480 min x 60 s = 28,800 s: 105.48 per second.
    assert!((window.offered_per_s(1.0) - 3_037_902.0 / 28_800.0).abs() < 1e-9);
    // Per-minute seeding: a minute's arrivals do not depend on the window.
    let day = Trace::load_azure2019(&dir, "d01", None).expect("loads");
    let a: Vec<Arrival> = window.arrivals(9, 1.0).take(50_000).collect();
    let b: Vec<Arrival> = day.arrivals(9, 1.0).take(50_000).collect();
    assert_eq!(a, b);
}

#[test]
fn azure2019_1000fn_day_loads_fast() {
    let dir = repo("data/traces/azure2019-1000fn-24h");
    let started = Instant::now();
    let trace = Trace::load_azure2019(&dir, "d01", None).expect("1000fn trace loads");
    let load_time = started.elapsed();
    println!("1000fn trace (11.6 M invocations, 3.6 MB) loaded in {load_time:?}");
    assert!(load_time.as_secs_f64() < 1.0, "took {load_time:?}");
    assert_eq!(trace.total_invocations(), 11_639_447);
    assert_eq!((trace.functions.len(), trace.apps.len()), (1000, 1000));

    let started = Instant::now();
    let n = count_ordered(trace.arrivals(1, 1.0));
    let per = started.elapsed().as_secs_f64() * 1e9 / n as f64;
    println!("expanded {n} arrivals at {per:.1} ns each");
    assert_eq!(n, 11_639_447);
}

#[test]
fn azure2021_sample() {
    let trace = Trace::load_azure2021(&repo("data/traces/azure2021-sample/Azure2021_200.csv"))
        .expect("2021 sample loads");
    assert_eq!(trace.total_invocations(), 199);
    assert_eq!((trace.apps.len(), trace.functions.len()), (13, 31));
    assert_eq!(trace.apps_without_memory(), 13); // the 2021 trace has no memory
    let all = ordered(trace.arrivals(1, 1.0));
    assert_eq!(all.len(), 199);
    assert!(all.iter().all(|a| a.duration_us >= 1_000)); // DSLab's 1 ms floor
    // Load 2.0: each record twice, at the same instant.
    assert_eq!(ordered(trace.arrivals(1, 2.0)).len(), 398);
}

#[test]
fn azure2021_expansion_by_hand() {
    let trace = Trace::load_azure2021(&fixture("tiny2021.csv")).expect("loads");
    // functions by first appearance: A/x = 0, A/y = 1, B/x = 2; apps A = 0, B = 1
    assert_eq!(trace.functions[2].app, AppId(1));
    let got: Vec<(u64, u32, u64)> = trace
        .arrivals(5, 1.0)
        .map(|a| (a.at_us, a.function.0, a.duration_us))
        .collect();
    let want = vec![
        (0, 1, 1_500_000),       // end 1.0 - 1.5 = -0.5, clamped to 0
        (2_000_000, 0, 250_000), // end 2.25 - 0.25
        (2_000_000, 0, 500_000), // end 2.5 - 0.5
        (3_000_000, 2, 1_000),   // duration 0 -> 1 ms
    ];
    assert_eq!(got, want);
    assert_eq!(trace.span_us, 3_001_000); // latest end: 3.0 + 1 ms
}

// ---------------------------------------------------------------- expansion rules

#[test]
fn tiny2019_model() {
    let trace = tiny();
    // f1: minutes 1 (3), 2 (1), 1440 (2); f2: minute 2 (5); f3: minute 3 (4)
    assert_eq!(trace.total_invocations(), 15);
    let names: Vec<&str> = trace.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["f1", "f2", "f3"]);
    assert_eq!(trace.functions[1].trigger, "timer");
    assert_eq!(
        (trace.functions[0].app, trace.functions[2].app),
        (AppId(0), AppId(1))
    );
    // a1: pct100 127.5 -> 128 MB; a2 has no row: median of known apps = 128.
    assert_eq!(
        (trace.apps[0].memory_mb, trace.apps[1].memory_mb),
        (128, 128)
    );
    assert_eq!(trace.apps_without_memory(), 1);
    // f3 has no durations row: the ATC'20 log-normal, clamped to >= 1 ms.
    assert_eq!(
        trace.functions[2].duration,
        DurationModel::LogNormal {
            mu: -0.38,
            sigma: 2.36
        }
    );
}

#[test]
fn tiny2019_minutes_expand_uniformly_in_place() {
    let trace = tiny();
    let all = ordered(trace.arrivals(3, 1.0));
    // (function, 1-based minute, count)
    let cells = [
        (0u32, 1u64, 3usize),
        (0, 2, 1),
        (0, 1440, 2),
        (1, 2, 5),
        (2, 3, 4),
    ];
    for (f, m, count) in cells {
        let (lo, hi) = ((m - 1) * 60_000_000, m * 60_000_000);
        let n = all
            .iter()
            .filter(|a| a.function.0 == f && (lo..hi).contains(&a.at_us))
            .count();
        assert_eq!(n, count, "function {f} minute {m}");
    }
    assert_eq!(all.len(), 15);
    // f2's percentiles are all 100 ms.
    assert!(
        all.iter()
            .filter(|a| a.function.0 == 1)
            .all(|a| a.duration_us == 100_000)
    );
    assert!(all.iter().all(|a| a.duration_us >= 1_000));
    // A window of minute 2 only: f1 x 1 + f2 x 5, times absolute.
    let w = Trace::load_azure2019(&fixture("tiny2019"), "d01", Some((2, 3))).expect("loads");
    let got = ordered(w.arrivals(3, 1.0));
    assert_eq!(got.len(), 6);
    assert!(
        got.iter()
            .all(|a| (60_000_000..120_000_000).contains(&a.at_us))
    );
}

#[test]
fn minute_instants_are_uniform_and_labels_mixed() {
    // Minute 2 of the tiny trace holds f1 x 1 and f2 x 5; at load 10,000: 60,000 arrivals.
    let w = Trace::load_azure2019(&fixture("tiny2019"), "d01", Some((2, 3))).expect("loads");
    let all = ordered(w.arrivals(21, 10_000.0));
    assert_eq!(all.len(), 60_000);
    // Ten 6-second bins: 6,000 expected each, sd sqrt(60,000 x 0.1 x 0.9) = 73.5; allow 6 sd.
    let mut bins = [0u32; 10];
    let mut f1 = [0u32; 10];
    for a in &all {
        let bin = ((a.at_us - 60_000_000) / 6_000_000) as usize;
        bins[bin] += 1;
        f1[bin] += u32::from(a.function.0 == 0);
    }
    for (bin, (&n, &ones)) in bins.iter().zip(&f1).enumerate() {
        assert!((f64::from(n) - 6_000.0).abs() < 441.0, "bin {bin}: {n}");
        // f1 is 1/6 of every bin: 1,000 of 6,000, sd 28.9; allow 6 sd.
        assert!(
            (f64::from(ones) - f64::from(n) / 6.0).abs() < 174.0,
            "bin {bin}: f1 {ones} of {n}"
        );
    }
}

#[test]
fn per_minute_counts_match_the_file() {
    // Recount minutes 480..539 of the 500fn trace straight from the CSV, then from arrivals.
    let dir = repo("data/traces/azure2019-500fn-8h");
    let trace = Trace::load_azure2019(&dir, "d01", Some((480, 540))).expect("loads");
    let mut reader = csv::Reader::from_path(dir.join(INV)).expect("csv");
    let mut want = std::collections::HashMap::new();
    for (f, row) in reader.records().enumerate() {
        let row = row.expect("row");
        for m in 480..540usize {
            let c: u64 = row[3 + m].parse().expect("count");
            if c > 0 {
                want.insert((f as u32, m as u64), c);
            }
        }
    }
    let mut got = std::collections::HashMap::new();
    for a in trace.arrivals(4, 1.0) {
        *got.entry((a.function.0, a.at_us / 60_000_000 + 1))
            .or_insert(0u64) += 1;
    }
    assert_eq!(got, want);
}

#[test]
fn seeds_make_arrivals_reproducible() {
    let dir = repo("data/traces/azure2019-500fn-8h");
    let trace = Trace::load_azure2019(&dir, "d01", Some((480, 500))).expect("loads");
    let a: Vec<Arrival> = trace.arrivals(42, 1.0).collect();
    let b: Vec<Arrival> = trace.arrivals(42, 1.0).collect();
    let c: Vec<Arrival> = trace.arrivals(43, 1.0).collect();
    assert_eq!(a, b);
    assert_eq!(a.len(), c.len()); // load 1.0: the same invocations...
    assert_ne!(a, c); // ...at other instants and durations
    // Fractional loads are reproducible too.
    let d: Vec<Arrival> = trace.arrivals(42, 1.5).collect();
    assert_eq!(d, trace.arrivals(42, 1.5).collect::<Vec<_>>());
}

#[test]
fn load_scales_counts() {
    let trace = Trace::load_azure2019(
        &repo("data/traces/azure2019-500fn-8h"),
        "d01",
        Some((480, 600)),
    )
    .expect("loads");
    let n = trace.total_invocations();
    assert_eq!(count_ordered(trace.arrivals(1, 2.0)), 2 * n); // floor(2.0) = 2 copies each
    assert_eq!(count_ordered(trace.arrivals(1, 3.0)), 3 * n);
    // load 0.5 / 1.5: Binomial(n, 0.5) extra copies, sd = sqrt(n/4); allow 6 sd.
    let slack = 6.0 * (n as f64 / 4.0).sqrt();
    for (load, base) in [(0.5, 0.0), (1.5, n as f64)] {
        let got = count_ordered(trace.arrivals(1, load)) as f64;
        let want = base + n as f64 / 2.0;
        assert!((got - want).abs() < slack, "load {load}: {got} vs {want}");
    }
    assert_eq!(trace.arrivals(1, 0.0).count(), 0);
    assert_eq!(trace.arrivals(1, f64::NAN).count(), 0);
    assert!((trace.offered_per_s(2.0) - 2.0 * trace.offered_per_s(1.0)).abs() < 1e-9);
}

#[test]
fn duration_step_rule_distribution() {
    // f1 of the tiny trace: percentiles (ms) p0..p100 = 1, 2, 3, 4, 5, 6, 7. At load 40,000 its
    // minute 1 (3 invocations) becomes 120,000 draws. DSLab's rule returns the band's upper end:
    //   value  band of p         probability  expected of 120,000
    //   2 ms   [0, .01)          0.01           1,200
    //   3 ms   [.01, .25)        0.24          28,800
    //   4 ms   [.25, .5)         0.25          30,000
    //   5 ms   [.5, .75)         0.25          30,000
    //   6 ms   [.75, .99)        0.24          28,800
    //   7 ms   [.99, 1)          0.01           1,200
    //   1 ms   (p0)              0                  0
    let w = Trace::load_azure2019(&fixture("tiny2019"), "d01", Some((1, 2))).expect("loads");
    let mut counts = [0u64; 8];
    for a in w.arrivals(11, 40_000.0) {
        counts[(a.duration_us / 1_000) as usize] += 1;
    }
    let total: u64 = counts.iter().sum();
    assert_eq!(total, 120_000);
    let probs = [0.0, 0.0, 0.01, 0.24, 0.25, 0.25, 0.24, 0.01];
    for (ms, p) in probs.iter().enumerate() {
        let want = p * total as f64;
        let sd = (total as f64 * p * (1.0 - p)).sqrt();
        let got = counts[ms] as f64;
        assert!(
            (got - want).abs() <= 6.0 * sd + 1e-9,
            "{ms} ms: {got} vs {want} (sd {sd:.0})"
        );
    }
}

#[test]
fn synthetic_poisson_arrivals() {
    let f = |name: &str, rate: f64, ms: f64, sigma: f64| SyntheticFunction {
        name: name.into(),
        rate_per_s: rate,
        duration_ms: ms,
        sigma,
        memory_mb: 256,
        app: None,
        data: None,
    };
    let spec = SyntheticSpec {
        duration_s: 10.0,
        functions: vec![f("a", 1000.0, 0.05, 0.0), f("b", 3000.0, 2.0, 1.0)],
    };
    let trace = Trace::synthetic(&spec).expect("valid spec");
    assert_eq!(trace.total_invocations(), 40_000); // (1,000 + 3,000)/s x 10 s, expected
    assert_eq!(trace.offered_per_s(2.0), 8_000.0);
    let all = ordered(trace.arrivals(1, 1.0));
    // Poisson(40,000): sd 200; allow 6 sd. Function a gets 1/4.
    assert!(
        (all.len() as f64 - 40_000.0).abs() < 1_200.0,
        "{}",
        all.len()
    );
    let a = all.iter().filter(|x| x.function == FunctionId(0)).count() as f64;
    assert!((a / all.len() as f64 - 0.25).abs() < 0.02);
    assert!(
        all.iter()
            .filter(|x| x.function == FunctionId(0))
            .all(|x| x.duration_us == 50)
    );
    // b: log-normal with median 2 ms.
    let mut b: Vec<u64> = all
        .iter()
        .filter(|x| x.function == FunctionId(1))
        .map(|x| x.duration_us)
        .collect();
    b.sort_unstable();
    let median = b[b.len() / 2] as f64;
    assert!((median - 2_000.0).abs() < 150.0, "median {median}");
    assert!(all.last().is_some_and(|x| x.at_us < 10_000_000));
    let doubled = trace.arrivals(1, 2.0).count() as f64;
    assert!((doubled - 80_000.0).abs() < 1_700.0, "{doubled}");
    // Bad spec: names the field.
    let mut bad = spec.clone();
    bad.functions[1].rate_per_s = -1.0;
    assert_names(
        &Trace::synthetic(&bad).expect_err("negative rate"),
        &["functions[1].rate_per_s"],
    );
}

//! `sandstorm sim` on the tiny Azure 2019 fixture, end to end through the real binary: the JSON
//! report matches the committed golden file (wall-clock fields blanked), the counts are exact, and
//! the seed alone decides the report.
//!
//! The fixture (tests/fixtures/tiny.toml) has 5 functions of 3 apps and 40 invocations in minutes
//! 1..5, replayed under 2 placement policies x 2 keep-alive policies x loads 1.0 and 2.0: 8 runs.
//! Regenerate the golden file with `SANDSTORM_BLESS=1 cargo test -p sandstorm-tests`.

use std::ffi::OsString;
use std::path::Path;

use sandstorm_tests::{assert_golden, fixtures_dir, normalise_report, sandstorm};
use serde_json::Value;

/// Invocations in the fixture at load 1.0: f-http 4+3+5+2+6, f-queue 2+1, f-timer 5 x 1,
/// f-blob 7, f-event 2+3.
const TINY_INVOCATIONS: u64 = 20 + 3 + 5 + 7 + 5;

/// Runs the tiny scenario with `seed` from the fixtures directory (so the report's trace source
/// is the relative `./tiny-azure2019`), writing every output into `out`; returns the JSON text.
fn run_tiny(seed: u64, out: &Path) -> String {
    let json = out.join("out.json");
    let csv = out.join("out.csv");
    let html = out.join("out.html");
    let seed = seed.to_string();
    let mut args: Vec<OsString> = ["sim", "--scenario", "tiny.toml", "--seed", seed.as_str()]
        .map(OsString::from)
        .to_vec();
    for (flag, path) in [("--json", &json), ("--csv", &csv), ("--html", &html)] {
        args.push(flag.into());
        args.push(path.into());
    }
    args.push("--quiet".into());
    let run = sandstorm(Some(&fixtures_dir()), args);
    run.success();
    assert!(
        run.stdout.contains("Scenario tiny"),
        "the table names the scenario:\n{}",
        run.stdout
    );
    std::fs::read_to_string(&json).expect("--json wrote the report")
}

fn normalised(text: &str) -> Value {
    normalise_report(text).unwrap_or_else(|e| panic!("{e}:\n{text}"))
}

#[test]
fn tiny_report_matches_golden() {
    let out = tempfile::tempdir().expect("temp dir");
    let report = normalised(&run_tiny(3, out.path()));
    assert_golden(
        &fixtures_dir().join("tiny.golden.json"),
        &report,
        Path::new(env!("CARGO_TARGET_TMPDIR")),
    );
}

#[test]
fn tiny_counts_are_exact_and_every_output_is_written() {
    let out = tempfile::tempdir().expect("temp dir");
    let report = normalised(&run_tiny(3, out.path()));
    assert_eq!(report["seed"], 3);
    assert_eq!(report["trace"]["format"], "azure2019");
    assert_eq!(report["trace"]["functions"], 5);
    assert_eq!(report["trace"]["apps"], 3);
    assert_eq!(report["trace"]["invocations"], TINY_INVOCATIONS);
    // 5 one-minute columns: minutes 1..5 of the window [1, 6).
    assert_eq!(report["trace"]["span_s"], 300.0);

    let runs = report["runs"].as_array().expect("runs");
    let mut seen = Vec::new();
    for run in runs {
        let key = (
            run["policy"].as_str().unwrap_or_default().to_owned(),
            run["keep_alive"].as_str().unwrap_or_default().to_owned(),
            run["load"].as_f64().unwrap_or_default(),
        );
        // Load 1.0 replays the trace; load 2.0 replays exactly two copies of each invocation.
        let want = if key.2 == 2.0 {
            2 * TINY_INVOCATIONS
        } else {
            TINY_INVOCATIONS
        };
        assert_eq!(run["invocations"], want, "{key:?}");
        assert_eq!(
            run["completed"], want,
            "{key:?}: a big cluster finishes all"
        );
        assert_eq!(run["rejected"], 0, "{key:?}");
        let tiers = run["tiers"]["storage"].as_u64().unwrap_or_default()
            + run["tiers"]["compute"].as_u64().unwrap_or_default();
        assert_eq!(tiers, want, "{key:?}: every invocation ran on one tier");
        seen.push(key);
    }
    // Every (policy, keep-alive, load) exactly once: 2 x 2 x 2.
    let mut expected = Vec::new();
    for policy in ["cost-aware", "least-loaded"] {
        for keep_alive in ["fixed:1m", "hybrid"] {
            for load in [1.0, 2.0] {
                expected.push((policy.to_owned(), keep_alive.to_owned(), load));
            }
        }
    }
    let sort = |v: &mut Vec<(String, String, f64)>| {
        v.sort_by(|a, b| {
            (&a.0, &a.1, a.2)
                .partial_cmp(&(&b.0, &b.1, b.2))
                .expect("finite")
        })
    };
    sort(&mut seen);
    sort(&mut expected);
    assert_eq!(seen, expected);

    let csv = std::fs::read_to_string(out.path().join("out.csv")).expect("--csv wrote");
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default();
    assert!(
        header.starts_with("scenario,seed,policy,keep_alive,load"),
        "{header}"
    );
    assert_eq!(lines.count(), runs.len(), "one CSV row per run:\n{csv}");
    let html = std::fs::read_to_string(out.path().join("out.html")).expect("--html wrote");
    assert!(
        html.contains("<html") && html.contains("tiny"),
        "an HTML page"
    );
}

#[test]
fn same_seed_same_report_other_seed_other_report() {
    let (a, b, c) = (
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
        tempfile::tempdir().expect("temp dir"),
    );
    let first = normalised(&run_tiny(3, a.path()));
    let again = normalised(&run_tiny(3, b.path()));
    let other = normalised(&run_tiny(4, c.path()));
    assert_eq!(first, again, "seed 3 twice must give the same report");
    let strip_seed = |mut v: Value| {
        v["seed"] = Value::Null;
        v
    };
    assert_ne!(
        strip_seed(first)["runs"],
        strip_seed(other)["runs"],
        "seed 4 should draw other arrivals and durations than seed 3"
    );
}

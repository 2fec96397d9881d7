//! `sandstorm bench sim` end to end, on stand-ins for its two scenarios built from the tiny
//! fixture (so it runs in milliseconds): the table prints every figure beside its peer, the
//! full-day figures come back from the child process, and `--json` has the documented shape.
//! The figures themselves are timing and are not checked.

use std::path::Path;

use sandstorm_tests::{fixtures_dir, sandstorm};
use serde_json::Value;

/// A scenario directory whose `keepalive-azure500.toml` and `azure1000-day.toml` both replay the
/// tiny trace (by absolute path).
fn stand_in_scenarios(dir: &Path) {
    let tiny = std::fs::read_to_string(fixtures_dir().join("tiny.toml")).expect("tiny.toml");
    let trace = fixtures_dir().join("tiny-azure2019");
    let trace = trace.to_str().expect("a UTF-8 fixtures path");
    assert!(!trace.contains(['"', '\\']), "a path TOML takes verbatim");
    let text = tiny.replace("path = \"tiny-azure2019\"", &format!("path = \"{trace}\""));
    assert_ne!(
        text, tiny,
        "tiny.toml names its trace as path = \"tiny-azure2019\""
    );
    for name in ["keepalive-azure500.toml", "azure1000-day.toml"] {
        std::fs::write(dir.join(name), &text).expect("writing a stand-in scenario");
    }
}

#[test]
fn bench_sim_prints_figures_beside_peers_and_writes_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    stand_in_scenarios(dir.path());
    let json = dir.path().join("bench.json");
    let run = sandstorm(
        Some(dir.path()),
        [
            "bench",
            "sim",
            "--scenario-dir",
            ".",
            "--repeat",
            "2",
            "--json",
            "bench.json",
        ],
    );
    run.success();
    for needle in [
        "figure",
        "target",
        "peer",
        "verdict",
        "keep-alive replay",
        "full-day replay wall time",
        "full-day replay peak memory",
        "DSLab FaaS",
        "not measured in this run",
        "in a child process",
    ] {
        assert!(
            run.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            run.stdout
        );
    }

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("--json wrote"))
            .expect("bench JSON");
    assert_eq!(report["bench"], "sim");
    let figures = report["figures"].as_array().expect("figures array");
    let names: Vec<&str> = figures.iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(
        names.iter().any(|n| n.starts_with("keep-alive replay")),
        "{names:?}"
    );
    assert!(names.contains(&"full-day replay wall time"), "{names:?}");
    assert!(names.contains(&"full-day replay peak memory"), "{names:?}");
    for f in figures {
        let keys: Vec<&str> = f
            .as_object()
            .expect("a figure is an object")
            .keys()
            .map(String::as_str)
            .collect();
        let mut keys = keys;
        keys.sort_unstable();
        assert_eq!(keys, ["mean", "n", "name", "p50", "p99", "unit"], "{f}");
        assert!(f["mean"].as_f64().is_some_and(|m| m > 0.0), "{f}");
        assert!(f["unit"].is_string() && f["n"].is_u64(), "{f}");
    }
    let keepalive = &figures[0];
    assert_eq!(keepalive["n"], 2, "--repeat 2");
    assert!(keepalive["p50"].is_f64(), "the median of the repeats");
    let memory = figures
        .iter()
        .find(|f| f["name"] == "full-day replay peak memory")
        .expect("peak memory");
    assert_eq!(memory["unit"], "bytes");
}

#[test]
fn bench_sim_only_keepalive_skips_the_day() {
    let dir = tempfile::tempdir().expect("temp dir");
    stand_in_scenarios(dir.path());
    let run = sandstorm(
        Some(dir.path()),
        [
            "bench",
            "sim",
            "--scenario-dir",
            ".",
            "--repeat",
            "1",
            "--only",
            "keepalive",
        ],
    );
    run.success();
    assert!(run.stdout.contains("keep-alive replay"), "{}", run.stdout);
    assert!(!run.stdout.contains("full-day"), "{}", run.stdout);
}

#[test]
fn bench_sim_without_scenarios_fails_clearly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run = sandstorm(Some(dir.path()), ["bench", "sim"]);
    run.clean_failure()
        .stderr_names(&["scenario directory", "sim/scenarios", "--scenario-dir"]);
}

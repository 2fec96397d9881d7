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

/// `sandstorm bench isolation` in a short mode: its own scheduler and storage agent, a quiet and
/// a noisy tenant. The table puts both phases side by side with the p99 ratio and each tenant's
/// failures, `--json` (no file) prints the same as one line, and the quiet tenant had no
/// failure: with spinners on its node every one of its calls still answered right. The latencies
/// are timing and are not checked.
#[test]
fn bench_isolation_reports_both_tenants_and_the_quiet_one_never_fails() {
    let args = [
        "bench",
        "isolation",
        "--calls",
        "30",
        "--spinners",
        "3",
        "--spin-ms",
        "300",
    ];
    let run = sandstorm(None, args);
    run.success();
    for needle in [
        "isolation.quiet_alone",
        "isolation.quiet_noisy",
        "isolation.p99_ratio",
        "isolation.quiet_failures",
        "isolation.noisy_failures",
        "quiet tenant alone, this run",
        "3 spinners in flight",
        "target: p99 within 2x of quiet, no failures: ",
    ] {
        assert!(
            run.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            run.stdout
        );
    }
    assert!(
        run.stdout.contains("failures: quiet 0 (0 alone, 0 beside)"),
        "{}",
        run.stdout
    );

    let run = sandstorm(None, args.iter().chain(&["--json"]));
    run.success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line, no table:\n{}", run.stdout);
    let report: Value = serde_json::from_str(lines[0]).expect("a JSON line");
    assert_eq!(report["bench"], "isolation");
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name}: {report}"))
            .clone()
    };
    for phase in ["isolation.quiet_alone", "isolation.quiet_noisy"] {
        let f = figure(phase);
        assert_eq!(
            (f["unit"].as_str(), f["n"].as_u64()),
            (Some("us"), Some(30)),
            "{f}"
        );
        assert!(f["p50"].is_f64() && f["p99"].is_f64(), "{f}");
    }
    assert!(figure("isolation.p99_ratio")["mean"].is_f64());
    let quiet = figure("isolation.quiet_failures");
    assert_eq!(
        (quiet["unit"].as_str(), quiet["mean"].as_f64()),
        (Some("count"), Some(0.0))
    );
    assert!(figure("isolation.noisy_failures")["mean"].is_f64());
}

#[test]
fn bench_isolation_refuses_flags_out_of_range() {
    for (flag, value, names) in [
        ("--calls", "0", "--calls"),
        ("--spin-ms", "0", "--spin-ms"),
        ("--spin-ms", "60001", "--spin-ms"),
    ] {
        let run = sandstorm(None, ["bench", "isolation", flag, value]);
        run.clean_failure().stderr_names(&[names]);
    }
}

/// `sandstorm bench soak` for a minute: its own scheduler, storage agent and (with root) compute
/// agent with a 1 s keep-alive, abandoned calls, dropped streams and one agent killed and
/// restarted half way. Nothing is lost or hung, and once the load stops the scheduler's view
/// equals the agents' reports: load, container memory and containers. Latencies are timing and
/// are not checked.
#[test]
fn bench_soak_for_a_minute_loses_nothing_and_leaves_no_drift() {
    let scratch = tempfile::tempdir().unwrap();
    let json = scratch.path().join("soak.json");
    let json_arg = json.display().to_string();
    let args = [
        "bench",
        "soak",
        "--minutes",
        "1",
        "--functions",
        "6",
        "--clients",
        "4",
        "--json",
        &json_arg,
    ];
    let run = sandstorm(None, args);
    run.success();
    println!("{}", run.stdout);
    if run.stderr.contains("SKIPPED") {
        println!(
            "SKIPPED (in part): soak ran without a compute agent: {}",
            run.stderr
        );
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["bench"], "soak");
    let figure = |name: &str| {
        report["figures"]
            .as_array()
            .expect("figures")
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no figure {name}: {report}"))
            .clone()
    };
    assert!(
        figure("soak.minute_1")["n"].as_u64().unwrap() > 0,
        "calls were answered:\n{}",
        run.stdout
    );
    for name in [
        "soak.lost",
        "soak.hung",
        "soak.drift_load",
        "soak.drift_memory_mb",
        "soak.drift_containers",
    ] {
        assert_eq!(
            figure(name)["mean"].as_f64(),
            Some(0.0),
            "{name}:\n{}",
            run.stdout
        );
    }
}

//! `sandstorm bench e2e` end to end with small counts: it starts its own scheduler and storage
//! agent, prints every figure beside its target and peer, and `--json` writes the documented
//! schema with the documented figure names and units. The figures themselves are timing and are
//! not checked beyond being measured.

#![allow(clippy::unwrap_used)] // A panic is how a test reports failure.

use sandstorm_tests::sandstorm;
use serde_json::Value;

#[test]
fn bench_e2e_prints_figures_and_writes_the_documented_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("e2e.json");
    let run = sandstorm(
        Some(dir.path()),
        [
            "bench",
            "e2e",
            "--iterations",
            "20",
            "--throughput-invocations",
            "200",
            "--clients",
            "4",
            "--connections",
            "2",
            "--chains",
            "3",
            "--chain-steps",
            "4",
            "--json",
            json.to_str().unwrap(),
        ],
    );
    run.success();
    for needle in [
        "sandstorm bench e2e",
        "verdict",
        "direct Execute on the agent",
        "SAND",
        "published",
        "scheduler overhead at p50",
        "streamed: CPU per invocation: scheduler",
        "unary: CPU per invocation: scheduler",
    ] {
        assert!(
            run.stdout.contains(needle),
            "table lacks {needle:?}:\n{}",
            run.stdout
        );
    }

    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["bench"], "e2e");
    let figures = report["figures"].as_array().unwrap();
    let got: Vec<(&str, &str)> = figures
        .iter()
        .map(|f| (f["name"].as_str().unwrap(), f["unit"].as_str().unwrap()))
        .collect();
    assert_eq!(
        got,
        [
            ("e2e.via_scheduler", "us"),
            ("e2e.direct", "us"),
            ("e2e.throughput", "invocations/s"),
            ("e2e.throughput_unary", "invocations/s"),
            ("chain.local_hop", "us"),
            ("chain.global_hop", "us"),
            ("chain.local_speedup", "x"),
        ]
    );
    for f in figures {
        let mut keys: Vec<&str> = f.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["mean", "n", "name", "p50", "p99", "unit"], "{f}");
        assert!(f["mean"].as_f64().is_some_and(|m| m > 0.0), "{f}");
    }
    let by_name = |name: &str| figures.iter().find(|f| f["name"] == name).unwrap();
    // Latencies: one sample per invocation, with percentiles.
    for name in ["e2e.via_scheduler", "e2e.direct"] {
        let f = by_name(name);
        assert_eq!(f["n"], 20, "{f}");
        assert!(f["p50"].is_f64() && f["p99"].is_f64(), "{f}");
    }
    // Throughputs: their value in `mean`, no percentiles.
    for name in ["e2e.throughput", "e2e.throughput_unary"] {
        let t = by_name(name);
        assert!(t["p50"].is_null() && t["p99"].is_null(), "{t}");
    }
    // Hops: 3 chains of 4 steps, 3 hops each, on each path.
    for name in ["chain.local_hop", "chain.global_hop"] {
        assert_eq!(by_name(name)["n"], 9, "{name}");
    }
}

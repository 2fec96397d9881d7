//! The JSON report of `sandstorm sim` has the fields `sim/REPORT.md` documents, with their types:
//! a top-level `runs` array whose entries carry policy, keep-alive, load, counts, latency
//! percentiles, queueing (count and wait percentiles), CPU, bytes, goodput, events and wall time.

use sandstorm_tests::TinyCopy;
use serde_json::Value;

/// Field paths inside a run, and what each must be.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Str,
    /// An unsigned integer (counts are never null).
    Count,
    /// A number (documented as possibly null when undefined; the tiny runs define every one).
    Number,
}

const RUN_FIELDS: &[(&str, Kind)] = &[
    ("policy", Kind::Str),
    ("keep_alive", Kind::Str),
    ("load", Kind::Number),
    ("invocations", Kind::Count),
    ("cold_starts", Kind::Count),
    ("rejected", Kind::Count),
    ("queued", Kind::Count),
    ("queue_wait_us.p50", Kind::Number),
    ("queue_wait_us.p99", Kind::Number),
    ("queue_wait_us.p999", Kind::Number),
    ("queue_wait_us.mean", Kind::Number),
    ("latency_us.p50", Kind::Number),
    ("latency_us.p99", Kind::Number),
    ("latency_us.p999", Kind::Number),
    ("storage_cpu_s", Kind::Number),
    ("compute_cpu_s", Kind::Number),
    ("bytes_moved", Kind::Count),
    ("goodput_per_s", Kind::Number),
    ("events", Kind::Count),
    ("wall_s", Kind::Number),
];

fn at<'v>(value: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(value, |v, key| v.get(key))
}

#[test]
fn report_has_the_documented_fields() {
    let tiny = TinyCopy::new();
    let json = tiny.dir.path().join("out.json");
    let json_arg = json.to_string_lossy().into_owned();
    tiny.sim(&["--seed", "3", "--json", &json_arg]).success();
    let text = std::fs::read_to_string(&json).expect("--json wrote the report");
    let report: Value = serde_json::from_str(&text).expect("the report is JSON");

    assert_eq!(report["schema_version"], 1);
    assert_eq!(report["scenario"], "tiny");
    assert_eq!(report["seed"], 3);
    for field in [
        "format",
        "source",
        "functions",
        "apps",
        "invocations",
        "span_s",
    ] {
        assert!(
            report["trace"].get(field).is_some(),
            "trace.{field} missing"
        );
    }
    let runs = report["runs"].as_array().expect("a top-level `runs` array");
    assert_eq!(runs.len(), 8, "2 policies x 2 keep-alives x 2 loads");
    for (i, run) in runs.iter().enumerate() {
        for &(path, kind) in RUN_FIELDS {
            let value = at(run, path).unwrap_or_else(|| panic!("runs[{i}].{path} missing"));
            let ok = match kind {
                Kind::Str => value.as_str().is_some_and(|s| !s.is_empty()),
                Kind::Count => value.is_u64(),
                Kind::Number => value.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0),
            };
            assert!(ok, "runs[{i}].{path} = {value} is not a {kind:?}");
        }
        let p50 = at(run, "latency_us.p50").and_then(Value::as_f64);
        let p99 = at(run, "latency_us.p99").and_then(Value::as_f64);
        let p999 = at(run, "latency_us.p999").and_then(Value::as_f64);
        assert!(
            p50 <= p99 && p99 <= p999,
            "runs[{i}]: percentiles in order: {p50:?} {p99:?} {p999:?}"
        );
        assert!(
            run["events"].as_u64() >= run["invocations"].as_u64(),
            "runs[{i}]: at least one event per invocation"
        );
    }
}

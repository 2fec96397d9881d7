//! What an agent reports to Prometheus (through the `metrics` facade; the binary installs the
//! exporter): every execution by role, start kind and outcome with its duration, and the node's
//! state (stored keys and bytes, warm containers, part-pool levels), refreshed every second.

use std::time::Instant;

/// Records one execution: `start` is its start kind when it succeeded.
pub fn execution(role: &'static str, started: Instant, start: Option<&'static str>) {
    let (start, outcome) = match start {
        Some(start) => (start, "ok"),
        None => ("none", "error"),
    };
    metrics::counter!(
        "sandstorm_agent_executions_total",
        "role" => role, "start" => start, "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!("sandstorm_agent_execution_seconds", "role" => role, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// A gauge of the node's state.
pub fn gauge(name: &'static str, value: f64) {
    metrics::gauge!(name).set(value);
}

/// A part pool's level.
pub fn pool_level(part: &'static str, ready: usize, target: usize) {
    metrics::gauge!("sandstorm_pool_ready", "part" => part).set(ready as f64);
    metrics::gauge!("sandstorm_pool_target", "part" => part).set(target as f64);
}

//! What the scheduler reports to Prometheus (through the `metrics` facade; the binary installs
//! the exporter): every invocation by tier, start kind and outcome with its latency, and each
//! node's liveness, load and busy fraction, refreshed every second.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sandstorm_proto::v1 as pb;

use super::state::Scheduler;

/// Records one finished invocation (or chain): `record` when it succeeded.
pub fn invocation(kind: &'static str, started: Instant, record: Option<&pb::InvocationRecord>) {
    let (tier, start, outcome) = match record {
        Some(r) => (r.tier().as_str_name(), r.start().as_str_name(), "ok"),
        None => ("none", "none", "error"),
    };
    metrics::counter!(
        "sandstorm_invocations_total",
        "kind" => kind, "tier" => tier, "start" => start, "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!("sandstorm_invocation_seconds", "kind" => kind, "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}

/// Every second, the cluster as the scheduler sees it, as gauges labelled by node.
pub async fn export_cluster(scheduler: Arc<Scheduler>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let status = scheduler.status();
        let alive = status.nodes.iter().filter(|n| n.alive).count();
        metrics::gauge!("sandstorm_nodes_alive").set(alive as f64);
        metrics::gauge!("sandstorm_tenants").set(f64::from(status.tenants));
        metrics::gauge!("sandstorm_functions").set(f64::from(status.functions));
        for n in &status.nodes {
            let labels = [
                ("node", n.name.clone()),
                ("role", n.role().as_str_name().to_owned()),
            ];
            metrics::gauge!("sandstorm_node_alive", &labels).set(if n.alive { 1.0 } else { 0.0 });
            metrics::gauge!("sandstorm_node_busy_ratio", &labels).set(n.busy);
            metrics::gauge!("sandstorm_node_load", &labels).set(f64::from(n.load));
        }
    }
}

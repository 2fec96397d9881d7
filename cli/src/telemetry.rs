//! Prometheus `/metrics` for every long-running process (scheduler and agents).
//!
//! The library crates record with the `metrics` facade (`metrics::counter!` and friends); this
//! installs the Prometheus recorder once per process and serves its text exposition on an HTTP
//! port of its own. The process prints `metrics on http://ADDR/metrics` once it listens.

use std::net::SocketAddr;

use anyhow::Context;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets for durations in seconds: 10 us to 10 s.
const SECONDS_BUCKETS: [f64; 13] = [
    1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 0.1, 1.0, 10.0,
];

/// Installs the recorder and serves `/metrics` on `listen` (port 0 picks one); returns the
/// bound address. Must run inside a tokio runtime.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<SocketAddr> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("configuring histogram buckets")?
        .install_recorder()
        .context("installing the metrics recorder")?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding the metrics address {listen}"))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || render(handle.clone())),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the metrics server stopped");
        }
    });
    println!("metrics on http://{addr}/metrics");
    Ok(addr)
}

async fn render(handle: PrometheusHandle) -> String {
    handle.render()
}

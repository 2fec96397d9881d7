//! What a simulation produces, and the ways it is shown: a table on the terminal, JSON (the
//! schema the dashboard reads, documented in `sim/REPORT.md`), CSV, and an HTML report with plots.
//!
//! The types here are the contract between the engine (which fills them) and every output:
//!
//! * [`render_table`] ([`table`]): aligned plain-text tables for the terminal;
//! * [`to_json`] / [`from_json`] ([`json`]): the schema the dashboard reads back;
//! * [`to_csv`] ([`mod@csv`]): one flat row per run, for spreadsheets and pandas;
//! * [`to_html`] ([`html`]): one self-contained page with SVG charts, readable offline.
//!
//! Every output is a pure function of a [`SimReport`]; none does I/O.

use serde::{Deserialize, Deserializer, Serialize};
use thiserror::Error;

pub mod csv;
pub mod html;
pub mod json;
pub mod table;
pub mod units;

pub use self::csv::{CSV_COLUMNS, to_csv};
pub use self::html::to_html;
pub use self::json::{from_json, to_json};
pub use self::table::render_table;

/// A peer figure agrees with ours when `|difference| <= PEER_TOLERANCE` (5%).
pub const PEER_TOLERANCE: f64 = 0.05;

/// Reading a report back failed.
#[derive(Debug, Error)]
pub enum ReportError {
    /// The text is not JSON, or not a report of this schema (a missing field, a wrong type).
    #[error("report is not valid JSON for this schema: {0}")]
    Json(#[from] serde_json::Error),
    /// The report was written by a newer build whose fields may mean something else.
    #[error("report has schema_version {found}; this build reads up to {supported}")]
    UnsupportedVersion { found: u64, supported: u32 },
}

/// JSON has no NaN or infinity: serde_json writes them as `null`. Read `null` back as NaN so a
/// report with an undefined figure (a percentile of nothing, a gap over a zero bound) round-trips.
fn f64_or_nan<'de, D: Deserializer<'de>>(deserializer: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(deserializer)?.unwrap_or(f64::NAN))
}

/// Version of the JSON schema; bump when a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// Everything one `sandstorm sim` run reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SimReport {
    pub schema_version: u32,
    /// Scenario name (from its file).
    pub scenario: String,
    pub description: String,
    pub seed: u64,
    /// What was replayed.
    pub trace: TraceSummary,
    /// One entry per (policy, keep-alive, load point).
    pub runs: Vec<RunResult>,
    /// Reference figures from a peer simulator, beside ours, where the scenario gives them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer: Vec<PeerComparison>,
}

/// What was replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceSummary {
    /// `azure2019`, `azure2021` or `synthetic`.
    pub format: String,
    /// Where it came from (path, or `synthetic`).
    pub source: String,
    pub functions: u64,
    pub apps: u64,
    /// Invocations in the trace at load 1.0.
    pub invocations: u64,
    /// Simulated time span, seconds.
    #[serde(deserialize_with = "f64_or_nan")]
    pub span_s: f64,
}

/// Percentiles of a distribution.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    #[serde(deserialize_with = "f64_or_nan")]
    pub p50: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p99: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub p999: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub mean: f64,
}

/// How execution contexts were obtained.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartCounts {
    /// Built from nothing on the critical path.
    pub cold: u64,
    /// Assembled from pre-created parts (compute) or a pooled instance start (storage).
    pub assembled: u64,
    /// An idle warm context was reused.
    pub warm: u64,
}

/// Invocations per tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierCounts {
    pub storage: u64,
    pub compute: u64,
}

/// One (policy, keep-alive, load point) run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResult {
    /// Placement policy name.
    pub policy: String,
    /// Keep-alive policy name, e.g. `fixed:10m`, `hybrid`, `greedy-dual`.
    pub keep_alive: String,
    /// Load point: the multiplier applied to the trace's arrival rate.
    #[serde(deserialize_with = "f64_or_nan")]
    pub load: f64,
    /// Offered load at this point, invocations per simulated second.
    #[serde(deserialize_with = "f64_or_nan")]
    pub offered_per_s: f64,
    /// Invocations that arrived.
    pub invocations: u64,
    /// Invocations that completed.
    pub completed: u64,
    /// Invocations that could not be placed anywhere (no node passed the filters) and, under
    /// `admission = "queue"`, could not wait either (no host could ever hold them).
    pub rejected: u64,
    /// Invocations that waited at a host because no node could take them on arrival
    /// (`admission = "queue"` only; 0 otherwise). Each counts as a cold start.
    #[serde(default)]
    pub queued: u64,
    /// How long the queued invocations waited, arrival to start, microseconds (all 0 when none
    /// queued).
    #[serde(default)]
    pub queue_wait_us: Percentiles,
    /// Starts that were not warm (`starts.cold + starts.assembled`): what keep-alive studies call
    /// cold starts.
    pub cold_starts: u64,
    pub starts: StartCounts,
    pub tiers: TierCounts,
    /// End-to-end latency, arrival to completion, microseconds.
    pub latency_us: Percentiles,
    /// Latency divided by the invocation's own execution time at its tier, unloaded.
    pub slowdown: Percentiles,
    /// CPU-seconds spent on storage nodes.
    #[serde(deserialize_with = "f64_or_nan")]
    pub storage_cpu_s: f64,
    /// CPU-seconds spent on compute nodes.
    #[serde(deserialize_with = "f64_or_nan")]
    pub compute_cpu_s: f64,
    /// Bytes that crossed the network.
    pub bytes_moved: u64,
    /// Completed invocations per simulated second that met the scenario's latency objective.
    #[serde(deserialize_with = "f64_or_nan")]
    pub goodput_per_s: f64,
    /// Discrete events the engine processed.
    pub events: u64,
    /// Wall-clock seconds the run took.
    #[serde(deserialize_with = "f64_or_nan")]
    pub wall_s: f64,
    /// The offline bound on the objective for this load point, and how far this run is from it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bound: Option<BoundComparison>,
}

/// The offline LP bound beside a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoundComparison {
    /// Lower bound on the mean objective per invocation (no policy can do better).
    #[serde(deserialize_with = "f64_or_nan")]
    pub objective_bound: f64,
    /// This run's mean objective per invocation, measured the same way.
    #[serde(deserialize_with = "f64_or_nan")]
    pub objective: f64,
    /// Upper bound on goodput (invocations/s) under core capacity.
    #[serde(deserialize_with = "f64_or_nan")]
    pub goodput_bound_per_s: f64,
    /// `objective / objective_bound - 1`: 0 means optimal.
    #[serde(deserialize_with = "f64_or_nan")]
    pub gap: f64,
}

/// A peer simulator's figure beside ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerComparison {
    pub keep_alive: String,
    /// Who produced the peer figure (e.g. `DSLab FaaS`).
    pub peer: String,
    pub peer_cold_starts: u64,
    pub peer_invocations: u64,
    pub cold_starts: u64,
    pub invocations: u64,
    /// `cold_starts / peer_cold_starts - 1`.
    #[serde(deserialize_with = "f64_or_nan")]
    pub difference: f64,
}

impl SimReport {
    /// Distinct placement policies, in order of first appearance.
    pub fn policies(&self) -> Vec<&str> {
        distinct(self.runs.iter().map(|r| r.policy.as_str()))
    }

    /// Distinct keep-alive policies, in order of first appearance.
    pub fn keep_alives(&self) -> Vec<&str> {
        distinct(self.runs.iter().map(|r| r.keep_alive.as_str()))
    }

    /// Distinct load points, ascending.
    pub fn loads(&self) -> Vec<f64> {
        let mut loads: Vec<f64> = self
            .runs
            .iter()
            .map(|r| r.load)
            .filter(|l| l.is_finite())
            .collect();
        loads.sort_by(f64::total_cmp);
        loads.dedup();
        loads
    }
}

impl RunResult {
    /// Cold starts (`cold_starts`, i.e. not warm) per invocation, 0..1; NaN without invocations.
    pub fn cold_start_ratio(&self) -> f64 {
        ratio(self.cold_starts, self.invocations)
    }

    /// Every start counted in [`RunResult::starts`].
    pub fn total_starts(&self) -> u64 {
        self.starts.cold + self.starts.assembled + self.starts.warm
    }
}

impl PeerComparison {
    /// The peer's cold starts per invocation, 0..1; NaN without invocations.
    pub fn peer_ratio(&self) -> f64 {
        ratio(self.peer_cold_starts, self.peer_invocations)
    }

    /// Our cold starts per invocation, 0..1; NaN without invocations.
    pub fn ratio(&self) -> f64 {
        ratio(self.cold_starts, self.invocations)
    }

    /// Whether our figure is within [`PEER_TOLERANCE`] of the peer's. Equal counts agree even when
    /// `difference` is undefined (both zero).
    pub fn within_tolerance(&self) -> bool {
        self.cold_starts == self.peer_cold_starts
            || (self.difference.is_finite() && self.difference.abs() <= PEER_TOLERANCE)
    }
}

/// `part / whole` as a float; NaN when `whole` is 0.
fn ratio(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        f64::NAN
    } else {
        part as f64 / whole as f64
    }
}

/// The distinct items of `items`, in order of first appearance.
fn distinct<'a>(items: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = Vec::new();
    for item in items {
        if !out.contains(&item) {
            out.push(item);
        }
    }
    out
}

//! The CSV form of a report: one header row, then one flat row per run, columns in the stable
//! order of [`CSV_COLUMNS`] (new columns are only ever appended). Units are in the column names;
//! a run without a bound leaves the `bound_*` cells empty; an undefined figure is `NaN`.

use super::{RunResult, SimReport};

/// The header row, in order. Units: `_us` microseconds, `_s` seconds (CPU-seconds for `_cpu_s`),
/// `_per_s` per simulated second; `bytes_moved` in bytes; `cold_start_ratio` (cold starts per
/// invocation) and `storage_share` (share of invocations run on the storage tier) are 0..1; the
/// rest are counts, names or plain ratios.
pub const CSV_COLUMNS: [&str; 40] = [
    "scenario",
    "seed",
    "policy",
    "keep_alive",
    "load",
    "offered_per_s",
    "invocations",
    "completed",
    "rejected",
    "cold_starts",
    "cold_start_ratio",
    "starts_cold",
    "starts_assembled",
    "starts_warm",
    "tier_storage",
    "tier_compute",
    "storage_share",
    "latency_p50_us",
    "latency_p99_us",
    "latency_p999_us",
    "latency_mean_us",
    "slowdown_p50",
    "slowdown_p99",
    "slowdown_p999",
    "slowdown_mean",
    "storage_cpu_s",
    "compute_cpu_s",
    "bytes_moved",
    "goodput_per_s",
    "events",
    "wall_s",
    "bound_objective",
    "bound_objective_bound",
    "bound_goodput_per_s",
    "bound_gap",
    "queued",
    "queue_wait_p50_us",
    "queue_wait_p99_us",
    "queue_wait_p999_us",
    "queue_wait_mean_us",
];

/// The report as CSV (see the module doc). Ends with a newline.
pub fn to_csv(report: &SimReport) -> String {
    let mut writer = ::csv::Writer::from_writer(Vec::new());
    // Writing records of a fixed width into memory cannot fail: the csv crate only errors on
    // I/O (a Vec never fails) or on rows of different lengths (every row is CSV_COLUMNS wide).
    writer
        .write_record(CSV_COLUMNS)
        .expect("writing CSV into memory cannot fail");
    for run in &report.runs {
        writer
            .write_record(row(report, run))
            .expect("writing CSV into memory cannot fail");
    }
    let bytes = writer
        .into_inner()
        .expect("flushing CSV into memory cannot fail");
    String::from_utf8(bytes).expect("CSV of UTF-8 fields is UTF-8")
}

fn row(report: &SimReport, run: &RunResult) -> [String; CSV_COLUMNS.len()] {
    let bound = |f: fn(&super::BoundComparison) -> f64| {
        run.bound.map_or_else(String::new, |b| f(&b).to_string())
    };
    let invocations_on_tiers = run.tiers.storage + run.tiers.compute;
    let storage_share = if invocations_on_tiers == 0 {
        f64::NAN
    } else {
        run.tiers.storage as f64 / invocations_on_tiers as f64
    };
    [
        report.scenario.clone(),
        report.seed.to_string(),
        run.policy.clone(),
        run.keep_alive.clone(),
        run.load.to_string(),
        run.offered_per_s.to_string(),
        run.invocations.to_string(),
        run.completed.to_string(),
        run.rejected.to_string(),
        run.cold_starts.to_string(),
        run.cold_start_ratio().to_string(),
        run.starts.cold.to_string(),
        run.starts.assembled.to_string(),
        run.starts.warm.to_string(),
        run.tiers.storage.to_string(),
        run.tiers.compute.to_string(),
        storage_share.to_string(),
        run.latency_us.p50.to_string(),
        run.latency_us.p99.to_string(),
        run.latency_us.p999.to_string(),
        run.latency_us.mean.to_string(),
        run.slowdown.p50.to_string(),
        run.slowdown.p99.to_string(),
        run.slowdown.p999.to_string(),
        run.slowdown.mean.to_string(),
        run.storage_cpu_s.to_string(),
        run.compute_cpu_s.to_string(),
        run.bytes_moved.to_string(),
        run.goodput_per_s.to_string(),
        run.events.to_string(),
        run.wall_s.to_string(),
        bound(|b| b.objective),
        bound(|b| b.objective_bound),
        bound(|b| b.goodput_bound_per_s),
        bound(|b| b.gap),
        run.queued.to_string(),
        run.queue_wait_us.p50.to_string(),
        run.queue_wait_us.p99.to_string(),
        run.queue_wait_us.p999.to_string(),
        run.queue_wait_us.mean.to_string(),
    ]
}

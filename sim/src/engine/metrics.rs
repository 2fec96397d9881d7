//! What a run counts and measures, and how it becomes a [`RunResult`].

use hdrhistogram::Histogram;
use sandstorm_cost_model::{CostBreakdown, StartKind, Tier, Weights};

use crate::report::{Percentiles, RunResult, StartCounts, TierCounts};

/// Slowdowns are kept in thousandths so the integer histogram resolves them.
const SLOWDOWN_SCALE: f64 = 1_000.0;

#[derive(Debug)]
pub(super) struct Metrics {
    pub invocations: u64,
    pub rejected: u64,
    pub queued: u64,
    pub events: u64,
    completed: u64,
    good: u64,
    starts: StartCounts,
    tiers: TierCounts,
    latency_us: Histogram<u64>,
    slowdown: Histogram<u64>,
    queue_wait_us: Histogram<u64>,
    storage_cpu_us: f64,
    compute_cpu_us: f64,
    bytes_moved: f64,
    objective_sum: f64,
    slo_latency_us: f64,
    slo_slowdown: f64,
    weights: Weights,
}

fn histogram() -> Histogram<u64> {
    // 1 us .. ~12 days at 2 significant digits; values beyond are clamped by `saturating_record`.
    // Auto-resizing is the fallback should the fixed bounds ever be rejected.
    Histogram::new_with_bounds(1, 1 << 40, 2).unwrap_or_else(|_| {
        let mut h =
            Histogram::new_with_max(2, 2).expect("2 significant digits and max 2 are valid");
        h.auto(true);
        h
    })
}

fn percentiles(h: &Histogram<u64>, scale: f64) -> Percentiles {
    if h.is_empty() {
        return Percentiles::default();
    }
    Percentiles {
        p50: h.value_at_quantile(0.5) as f64 / scale,
        p99: h.value_at_quantile(0.99) as f64 / scale,
        p999: h.value_at_quantile(0.999) as f64 / scale,
        mean: h.mean() / scale,
    }
}

impl Metrics {
    pub fn new(slo_latency_us: f64, slo_slowdown: f64, weights: Weights) -> Self {
        Self {
            invocations: 0,
            rejected: 0,
            queued: 0,
            events: 0,
            completed: 0,
            good: 0,
            starts: StartCounts::default(),
            tiers: TierCounts::default(),
            latency_us: histogram(),
            slowdown: histogram(),
            queue_wait_us: histogram(),
            storage_cpu_us: 0.0,
            compute_cpu_us: 0.0,
            bytes_moved: 0.0,
            objective_sum: 0.0,
            slo_latency_us,
            slo_slowdown,
            weights,
        }
    }

    /// Count where an invocation ran and, on a compute node, how its container was obtained.
    /// (Every storage-node invocation starts a pooled Wasm instance in microseconds; those are
    /// not container starts and are not counted as such.)
    pub fn count_start(&mut self, tier: Tier, start: StartKind) {
        match tier {
            Tier::Storage => {
                self.tiers.storage += 1;
                return;
            }
            Tier::Compute => self.tiers.compute += 1,
        }
        match start {
            StartKind::Warm => self.starts.warm += 1,
            StartKind::Assembled => self.starts.assembled += 1,
            StartKind::Cold => self.starts.cold += 1,
        }
    }

    /// A queued invocation started after waiting `wait_us` at its host.
    pub fn waited(&mut self, wait_us: u64) {
        self.queue_wait_us.saturating_record(wait_us.max(1));
    }

    /// Resources an invocation used (its true cost, queueing aside).
    pub fn add_cost(&mut self, cost: &CostBreakdown) {
        self.storage_cpu_us += cost.storage_cpu_us;
        self.compute_cpu_us += cost.compute_cpu_us;
        self.bytes_moved += cost.bytes_moved;
        // Priced as the offline bound prices it (an idle storage node), so the two compare.
        self.objective_sum +=
            self.weights.objective(cost, 0.0) - self.weights.latency * cost.latency_us();
    }

    /// An invocation completed after `latency_us`; unloaded and warm it would have taken
    /// `unloaded_us`.
    pub fn complete(&mut self, latency_us: f64, unloaded_us: f64) {
        self.completed += 1;
        self.objective_sum += self.weights.latency * latency_us;
        self.latency_us
            .saturating_record(latency_us.max(1.0) as u64);
        let slowdown = latency_us / unloaded_us.max(1.0);
        self.slowdown
            .saturating_record((slowdown * SLOWDOWN_SCALE).max(1.0) as u64);
        if latency_us <= self.slo_latency_us.max(self.slo_slowdown * unloaded_us) {
            self.good += 1;
        }
    }

    /// Mean objective per completed invocation, priced like the offline bound.
    pub fn mean_objective(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.objective_sum / self.completed as f64
        }
    }

    pub fn finish(
        &self,
        policy: String,
        keep_alive: String,
        load: f64,
        offered_per_s: f64,
        span_s: f64,
        wall_s: f64,
    ) -> RunResult {
        RunResult {
            policy,
            keep_alive,
            load,
            offered_per_s,
            invocations: self.invocations,
            completed: self.completed,
            rejected: self.rejected,
            queued: self.queued,
            queue_wait_us: percentiles(&self.queue_wait_us, 1.0),
            cold_starts: self.starts.cold + self.starts.assembled,
            starts: self.starts,
            tiers: self.tiers,
            latency_us: percentiles(&self.latency_us, 1.0),
            slowdown: percentiles(&self.slowdown, SLOWDOWN_SCALE),
            storage_cpu_s: self.storage_cpu_us / 1e6,
            compute_cpu_s: self.compute_cpu_us / 1e6,
            bytes_moved: self.bytes_moved as u64,
            goodput_per_s: if span_s > 0.0 {
                self.good as f64 / span_s
            } else {
                0.0
            },
            events: self.events + self.invocations,
            wall_s,
            bound: None,
        }
    }
}

//! One function's online profile: duration and CPU distributions, per-invocation means of data
//! accesses, rounds and bytes, arrival rate and burstiness.
//!
//! Choices, all O(1) per observation with no allocation:
//! - **Distributions**: HDR histograms of microseconds from 1 us to 1 hour with 2 significant
//!   digits (quantiles within 1%). Values outside are clamped into range (0 counts as 1 us, more
//!   than an hour as an hour). Each histogram is ~26 KiB of counts (3,328 `u64` buckets), so a
//!   profile is ~53 KiB: budget it when profiling tens of thousands of functions.
//! - **Means**: running means (`m += (x - m) / n`) of the raw, unclamped values.
//! - **Arrival rate**: an exponentially weighted moving average of inter-arrival gaps with weight
//!   [`ARRIVAL_GAP_EWMA_WEIGHT`] (1/8, as TCP's smoothed RTT), seeded with the first gap; the rate
//!   is 10^6 / that average gap (the gap is taken as at least 1 us). It follows the recent gaps,
//!   not the silence since the last arrival: a caller that cares about a function that stopped
//!   arriving compares [`FunctionProfile::last_arrival_us`] with its clock.
//! - **Burstiness**: the coefficient of variation (sample standard deviation / mean) of all
//!   inter-arrival gaps seen, by Welford's online algorithm. 0 for perfectly periodic arrivals,
//!   about 1 for Poisson arrivals, above 1 for bursts.
//! - **Order**: observations are recorded when invocations finish, so arrivals can come out of
//!   order. An arrival earlier than the latest one seen counts as a gap of 0 (it arrived no later
//!   than that one), and the latest arrival never moves back. This keeps the sum of the gaps
//!   equal to the observed span (so the mean gap and the rate stay right) at the price of
//!   slightly overstating burstiness when completions reorder.

use std::fmt;

use hdrhistogram::Histogram;
use sandstorm_cost_model::Workload;
use serde::{Deserialize, Serialize};

use crate::Observation;

/// Smallest recorded duration, microseconds.
pub const HISTOGRAM_LOW_US: u64 = 1;
/// Largest recorded duration (1 hour), microseconds; longer values are recorded as this.
pub const HISTOGRAM_HIGH_US: u64 = 3_600_000_000;
/// Significant digits kept by the histograms.
pub const HISTOGRAM_SIGFIG: u8 = 2;
/// Weight of the newest gap in the inter-arrival moving average.
pub const ARRIVAL_GAP_EWMA_WEIGHT: f64 = 0.125;

fn new_histogram() -> Histogram<u64> {
    // The bounds are constants that satisfy hdrhistogram's rules (low >= 1, high >= 2 * low,
    // sigfig <= 5); the `histograms_are_constructible` test pins that.
    Histogram::new_with_bounds(HISTOGRAM_LOW_US, HISTOGRAM_HIGH_US, HISTOGRAM_SIGFIG)
        .expect("constant histogram bounds are valid")
}

/// Welford's online mean and variance.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Welford {
    n: u64,
    mean: f64,
    m2: f64,
}

impl Welford {
    fn push(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Sample standard deviation / mean; 0 with fewer than 2 samples or a zero mean.
    fn cv(&self) -> f64 {
        if self.n < 2 || self.mean <= 0.0 {
            return 0.0;
        }
        (self.m2 / (self.n - 1) as f64).sqrt() / self.mean
    }
}

/// A running mean.
fn update_mean(mean: &mut f64, x: f64, n: u64) {
    *mean += (x - *mean) / n as f64;
}

/// A quantile argument made safe: clamped to [0, 1], NaN read as 0.
fn sanitize_quantile(q: f64) -> f64 {
    if q.is_nan() { 0.0 } else { q.clamp(0.0, 1.0) }
}

/// The online profile of one function.
#[derive(Clone)]
pub struct FunctionProfile {
    duration: Histogram<u64>,
    cpu: Histogram<u64>,
    invocations: u64,
    mean_cpu_us: f64,
    mean_accesses: f64,
    mean_rounds: f64,
    mean_bytes: f64,
    last_arrival_us: Option<u64>,
    /// Moving average of inter-arrival gaps; `None` until the second arrival.
    gap_ewma_us: Option<f64>,
    gaps: Welford,
}

impl Default for FunctionProfile {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for FunctionProfile {
    /// The summary, not the histograms' thousands of buckets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("FunctionProfile")
            .field(&self.summary())
            .finish()
    }
}

impl FunctionProfile {
    /// An empty profile.
    pub fn new() -> Self {
        Self {
            duration: new_histogram(),
            cpu: new_histogram(),
            invocations: 0,
            mean_cpu_us: 0.0,
            mean_accesses: 0.0,
            mean_rounds: 0.0,
            mean_bytes: 0.0,
            last_arrival_us: None,
            gap_ewma_us: None,
            gaps: Welford::default(),
        }
    }

    /// Adds one finished invocation.
    pub fn record(&mut self, obs: &Observation) {
        let clamp = |v: u64| v.clamp(HISTOGRAM_LOW_US, HISTOGRAM_HIGH_US);
        self.duration.saturating_record(clamp(obs.duration_us));
        self.cpu.saturating_record(clamp(obs.cpu_us));
        self.invocations += 1;
        let n = self.invocations;
        update_mean(&mut self.mean_cpu_us, obs.cpu_us as f64, n);
        update_mean(&mut self.mean_accesses, f64::from(obs.accesses), n);
        update_mean(&mut self.mean_rounds, f64::from(obs.rounds), n);
        update_mean(&mut self.mean_bytes, obs.bytes as f64, n);
        self.record_arrival(obs.arrival_us);
    }

    fn record_arrival(&mut self, arrival_us: u64) {
        let Some(last) = self.last_arrival_us else {
            self.last_arrival_us = Some(arrival_us);
            return;
        };
        let gap = arrival_us.saturating_sub(last) as f64;
        self.last_arrival_us = Some(last.max(arrival_us));
        self.gap_ewma_us = Some(match self.gap_ewma_us {
            None => gap,
            Some(avg) => avg + ARRIVAL_GAP_EWMA_WEIGHT * (gap - avg),
        });
        self.gaps.push(gap);
    }

    pub fn invocations(&self) -> u64 {
        self.invocations
    }

    /// Duration at quantile `q` (0..=1; clamped, NaN read as 0), microseconds, within 1%; 0 if
    /// nothing was recorded.
    pub fn duration_us(&self, q: f64) -> u64 {
        self.duration.value_at_quantile(sanitize_quantile(q))
    }

    /// CPU time at quantile `q`, as [`FunctionProfile::duration_us`].
    pub fn cpu_us(&self, q: f64) -> u64 {
        self.cpu.value_at_quantile(sanitize_quantile(q))
    }

    /// Mean CPU time per invocation, microseconds (unclamped).
    pub fn mean_cpu_us(&self) -> f64 {
        self.mean_cpu_us
    }

    pub fn mean_accesses(&self) -> f64 {
        self.mean_accesses
    }

    pub fn mean_rounds(&self) -> f64 {
        self.mean_rounds
    }

    pub fn mean_bytes(&self) -> f64 {
        self.mean_bytes
    }

    /// The latest arrival seen, microseconds.
    pub fn last_arrival_us(&self) -> Option<u64> {
        self.last_arrival_us
    }

    /// Arrivals per second from the moving average of recent gaps; 0 before the second arrival.
    pub fn arrival_rate_per_s(&self) -> f64 {
        self.gap_ewma_us.map_or(0.0, |gap| 1e6 / gap.max(1.0))
    }

    /// Coefficient of variation of inter-arrival gaps; 0 before three arrivals.
    pub fn burstiness(&self) -> f64 {
        self.gaps.cv()
    }

    /// What the cost model needs: mean CPU, accesses, rounds and bytes per invocation.
    pub fn workload(&self) -> Workload {
        Workload {
            compute_us: self.mean_cpu_us,
            accesses: self.mean_accesses,
            rounds: self.mean_rounds,
            bytes: self.mean_bytes,
        }
    }

    /// A serialisable snapshot for records, the dashboard and logs.
    pub fn summary(&self) -> ProfileSummary {
        ProfileSummary {
            invocations: self.invocations,
            duration_p50_us: self.duration_us(0.5),
            duration_p99_us: self.duration_us(0.99),
            cpu_p50_us: self.cpu_us(0.5),
            cpu_p99_us: self.cpu_us(0.99),
            mean_cpu_us: self.mean_cpu_us,
            mean_accesses: self.mean_accesses,
            mean_rounds: self.mean_rounds,
            mean_bytes: self.mean_bytes,
            arrival_rate_per_s: self.arrival_rate_per_s(),
            burstiness: self.burstiness(),
        }
    }
}

/// A snapshot of a [`FunctionProfile`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSummary {
    pub invocations: u64,
    pub duration_p50_us: u64,
    pub duration_p99_us: u64,
    pub cpu_p50_us: u64,
    pub cpu_p99_us: u64,
    pub mean_cpu_us: f64,
    pub mean_accesses: f64,
    pub mean_rounds: f64,
    pub mean_bytes: f64,
    pub arrival_rate_per_s: f64,
    pub burstiness: f64,
}

#[cfg(test)]
#[path = "profile_tests.rs"]
mod tests;

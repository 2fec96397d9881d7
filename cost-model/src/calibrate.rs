//! Calibration: measured samples replace the documented defaults.
//!
//! Each parameter is tracked separately. Until [`WARMUP_SAMPLES`] samples of a kind have arrived
//! its estimate is their plain mean (so the first measurement already replaces the default);
//! after that an exponentially weighted moving average with weight [`EWMA_WEIGHT`] follows
//! drift without being thrown by one outlier.
//!
//! A sample is one measurement: a node that reports the mean of `n` new measurements feeds them
//! as `n` samples ([`Calibrator::observe_many`]), and a report with nothing new feeds none.

use serde::{Deserialize, Serialize};

use crate::CostParams;

/// Samples averaged plainly before switching to the moving average.
pub const WARMUP_SAMPLES: u32 = 16;
/// Weight of a new sample in the moving average.
pub const EWMA_WEIGHT: f64 = 0.05;

/// What a measured sample is of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SampleKind {
    /// One network round trip, us.
    RoundTrip,
    /// CPU a storage node spent dispatching one request, us.
    Dispatch,
    /// Starting a pooled Wasm instance on a storage node, us.
    WasmStart,
    /// Assembling a container from pre-created parts, us.
    ContainerAssembly,
    /// Building a container from nothing, us.
    ContainerCold,
    /// One in-memory access inside a storage node, us.
    LocalAccess,
    /// From request to running in a warm container (a fork of its template), us.
    WarmStart,
}

impl SampleKind {
    /// Every kind, in a fixed order.
    pub const ALL: [SampleKind; 7] = [
        SampleKind::RoundTrip,
        SampleKind::Dispatch,
        SampleKind::WasmStart,
        SampleKind::ContainerAssembly,
        SampleKind::ContainerCold,
        SampleKind::LocalAccess,
        SampleKind::WarmStart,
    ];

    fn param(self, params: &mut CostParams) -> &mut f64 {
        match self {
            SampleKind::RoundTrip => &mut params.rtt_us,
            SampleKind::Dispatch => &mut params.dispatch_us,
            SampleKind::WasmStart => &mut params.wasm_start_us,
            SampleKind::ContainerAssembly => &mut params.container_assembled_us,
            SampleKind::ContainerCold => &mut params.container_cold_us,
            SampleKind::LocalAccess => &mut params.local_access_us,
            SampleKind::WarmStart => &mut params.zygote_fork_us,
        }
    }

    /// The parameter of `params` this kind calibrates.
    pub fn of(self, params: &CostParams) -> f64 {
        let mut params = *params;
        *self.param(&mut params)
    }
}

/// A sample that cannot be a duration.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
#[error("{kind:?} sample of {micros} us rejected: a measured cost must be finite and non-negative")]
pub struct SampleError {
    pub kind: SampleKind,
    pub micros: f64,
}

/// Turns measured samples into [`CostParams`].
#[derive(Debug, Clone)]
pub struct Calibrator {
    params: CostParams,
    counts: [u32; SampleKind::ALL.len()],
}

impl Calibrator {
    /// Start from `defaults`; nothing is calibrated yet.
    pub fn new(defaults: CostParams) -> Self {
        Self {
            params: defaults,
            counts: [0; SampleKind::ALL.len()],
        }
    }

    /// Feed one measurement of `kind`, in microseconds.
    pub fn observe(&mut self, kind: SampleKind, micros: f64) -> Result<(), SampleError> {
        self.observe_many(kind, micros, 1)
    }

    /// Feed `n` measurements of `kind` whose mean is `mean` microseconds: the same estimate as
    /// feeding `n` measurements of exactly `mean` one by one. `n = 0` feeds nothing.
    pub fn observe_many(&mut self, kind: SampleKind, mean: f64, n: u32) -> Result<(), SampleError> {
        if !mean.is_finite() || mean < 0.0 {
            return Err(SampleError { kind, micros: mean });
        }
        if n == 0 {
            return Ok(());
        }
        let count = &mut self.counts[kind as usize];
        let before = *count;
        *count = count.saturating_add(n);
        let after = *count;
        let value = kind.param(&mut self.params);
        // The part of the n that falls in the warm-up is a plain mean; the rest is the moving
        // average applied that many times, (1 - w)^k of the old estimate left.
        let plain = WARMUP_SAMPLES.saturating_sub(before).min(n);
        if plain > 0 {
            let seen = before.min(WARMUP_SAMPLES);
            *value = if seen == 0 {
                mean
            } else {
                (*value * f64::from(seen) + mean * f64::from(plain)) / f64::from(seen + plain)
            };
        }
        let moving = after - before - plain;
        if moving > 0 {
            let kept = (1.0 - EWMA_WEIGHT).powi(i32::try_from(moving).unwrap_or(i32::MAX));
            *value = mean + kept * (*value - mean);
        }
        Ok(())
    }

    /// `base` with every parameter this calibrator has measured moved to its estimate by the
    /// weight of its samples, `n / (n + prior_samples)`: a node's own figures over the
    /// cluster's, where the cluster's figure counts as `prior_samples` measurements. So a node's
    /// first few measurements (a restarted node's cold caches) do not on their own decide what
    /// it costs, and its own figure takes over as they accumulate. `prior_samples = 0`: its
    /// estimate replaces `base` outright.
    pub fn overlay(&self, base: &CostParams, prior_samples: u32) -> CostParams {
        let mut params = *base;
        for kind in SampleKind::ALL {
            let n = f64::from(self.samples(kind));
            if n > 0.0 {
                let prior = f64::from(prior_samples);
                let value = kind.param(&mut params);
                *value = (n * kind.of(&self.params) + prior * *value) / (n + prior);
            }
        }
        params
    }

    /// How many samples of `kind` have been taken (0: the parameter is still its default).
    pub fn samples(&self, kind: SampleKind) -> u32 {
        self.counts[kind as usize]
    }

    /// The current parameters.
    pub fn params(&self) -> &CostParams {
        &self.params
    }
}

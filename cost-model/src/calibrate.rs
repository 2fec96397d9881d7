//! Calibration: measured samples replace the documented defaults.
//!
//! Each parameter is tracked separately. Until [`WARMUP_SAMPLES`] samples of a kind have arrived
//! its estimate is their plain mean (so the first measurement already replaces the default);
//! after that an exponentially weighted moving average with weight [`EWMA_WEIGHT`] follows
//! drift without being thrown by one outlier.

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
    /// Starting a pooled Wasm instance, us.
    WasmStart,
    /// Assembling a container from pre-created parts, us.
    ContainerAssembly,
    /// Building a container from nothing, us.
    ContainerCold,
    /// One in-memory access inside a storage node, us.
    LocalAccess,
    /// Starting an invocation in a warm container (a fork of its template), us.
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
        if !micros.is_finite() || micros < 0.0 {
            return Err(SampleError { kind, micros });
        }
        let count = &mut self.counts[kind as usize];
        *count = count.saturating_add(1);
        let n = *count;
        let value = kind.param(&mut self.params);
        if n == 1 {
            *value = micros;
        } else if n <= WARMUP_SAMPLES {
            *value += (micros - *value) / f64::from(n);
        } else {
            *value += EWMA_WEIGHT * (micros - *value);
        }
        Ok(())
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

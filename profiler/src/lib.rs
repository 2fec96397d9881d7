//! Online per-function profiles: what a function does per invocation and how it arrives.
//!
//! This crate owns the statistics the scheduler and the re-provisioner read to place and
//! pre-warm functions:
//! - [`FunctionProfile`] ([`profile`]): duration and CPU distributions (HDR histograms), running
//!   means of data accesses, dependent rounds and bytes, arrival rate and burstiness; it turns
//!   into the cost model's [`Workload`];
//! - [`IdleTimeHistogram`] ([`idle`]): the per-app histogram of idle times that the hybrid
//!   keep-alive policy of "Serverless in the Wild" (ATC'20) reads its pre-warm and keep-alive
//!   windows from;
//! - [`Profiler`]: the profiles of every function, with a documented default for a function
//!   never seen.
//!
//! It is pure and synchronous: observations carry their own times (microseconds), there is no
//! clock, no I/O and no randomness. It depends on `sandstorm-naming` (ids) and
//! `sandstorm-cost-model` (the `Workload` it produces) only, never on the scheduler or the
//! simulator that feed it.

pub mod idle;
pub mod profile;

use sandstorm_cost_model::Workload;
use sandstorm_naming::FunctionId;
use serde::{Deserialize, Serialize};

pub use idle::{IdleHistogramError, IdleTimeHistogram};
pub use profile::{FunctionProfile, ProfileSummary};

/// What one finished invocation did, as its record reports it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// When the invocation arrived at the scheduler.
    pub arrival_us: u64,
    /// Wall time from start of execution to its end.
    pub duration_us: u64,
    /// CPU time of the function's own code.
    pub cpu_us: u64,
    /// Data accesses (gets and puts).
    pub accesses: u32,
    /// Dependent rounds of accesses (each waits for the previous answer).
    pub rounds: u32,
    /// Bytes read and written.
    pub bytes: u64,
}

/// The profiles of every function seen so far.
///
/// Indexed by function id: ids are dense (the catalog hands them out from 0), and a slot lookup
/// is what the simulator's per-invocation path can afford where a hash lookup was not.
#[derive(Debug, Clone)]
pub struct Profiler {
    default: Workload,
    profiles: Vec<Option<FunctionProfile>>,
    len: usize,
}

impl Profiler {
    /// A profiler that answers `default` for functions it has no observation of. Callers should
    /// pass the platform's documented prior (e.g. docs/design.md's "execution time when the trace gives
    /// none"); `Workload::default()` (all zeros) means "assume a trivial function".
    pub fn new(default: Workload) -> Self {
        Self {
            default,
            profiles: Vec::new(),
            len: 0,
        }
    }

    /// Adds one finished invocation of `function` to its profile.
    pub fn record(&mut self, function: FunctionId, observation: &Observation) {
        let i = function.0 as usize;
        if self.profiles.len() <= i {
            self.profiles.resize_with(i + 1, || None);
        }
        let slot = &mut self.profiles[i];
        if slot.is_none() {
            self.len += 1;
        }
        slot.get_or_insert_with(FunctionProfile::default)
            .record(observation);
    }

    pub fn profile(&self, function: FunctionId) -> Option<&FunctionProfile> {
        self.profiles.get(function.0 as usize)?.as_ref()
    }

    /// The function's measured workload, or the default if it was never observed.
    pub fn workload(&self, function: FunctionId) -> Workload {
        self.profile(function)
            .map_or(self.default, FunctionProfile::workload)
    }

    /// The workload assumed for a function never seen.
    pub fn default_workload(&self) -> Workload {
        self.default
    }

    /// Forgets a function (it was removed).
    pub fn forget(&mut self, function: FunctionId) -> Option<FunctionProfile> {
        let gone = self.profiles.get_mut(function.0 as usize)?.take();
        if gone.is_some() {
            self.len -= 1;
        }
        gone
    }

    /// Every profiled function, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (FunctionId, &FunctionProfile)> + '_ {
        self.profiles
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((FunctionId(i as u32), p.as_ref()?)))
    }

    /// Number of profiled functions.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unseen_functions_get_the_default() {
        let prior = Workload {
            compute_us: 700_000.0,
            accesses: 1.0,
            rounds: 1.0,
            bytes: 1024.0,
        };
        let mut p = Profiler::new(prior);
        assert!(p.is_empty());
        assert_eq!(p.workload(FunctionId(3)), prior);
        assert_eq!(p.default_workload(), prior);
        let obs = Observation {
            arrival_us: 0,
            duration_us: 120,
            cpu_us: 100,
            accesses: 4,
            rounds: 2,
            bytes: 64,
        };
        p.record(FunctionId(3), &obs);
        let measured = Workload {
            compute_us: 100.0,
            accesses: 4.0,
            rounds: 2.0,
            bytes: 64.0,
        };
        assert_eq!(p.workload(FunctionId(3)), measured);
        assert_eq!(p.workload(FunctionId(4)), prior);
        assert_eq!(p.profile(FunctionId(3)).map(|f| f.invocations()), Some(1));
        assert_eq!((p.len(), p.iter().count()), (1, 1));
        assert!(p.forget(FunctionId(3)).is_some());
        assert_eq!(p.workload(FunctionId(3)), prior);
    }
}

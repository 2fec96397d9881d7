//! Per-core accounting and measured costs, the raw material of the stats stream both roles push.
//!
//! Workers update [`CoreCounters`] with relaxed atomics (a sample may be a few nanoseconds stale;
//! nothing is lost). [`CostMeter`] keeps per measured cost a moving mean and the count and sum of
//! its measurements, the figures the scheduler calibrates its cost model of the node with.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Counters of one worker core.
#[derive(Debug, Default)]
pub struct CoreCounters {
    /// Nanoseconds spent running invocations, since start.
    pub busy_ns: AtomicU64,
    /// Invocations waiting in (or being taken from) this core's run queue.
    pub queue_len: AtomicU32,
    /// Invocations finished, since start.
    pub invocations: AtomicU64,
    /// Instances started, since start (on a storage node: one per invocation).
    pub instance_starts: AtomicU64,
}

impl CoreCounters {
    /// Counts `busy` of core time spent running (one slice of an invocation, as it happens, so
    /// a long run shows in the interval it runs in and not only when it ends).
    pub fn ran(&self, busy: Duration) {
        self.busy_ns.fetch_add(
            u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Records one finished invocation that kept the core busy for `busy`.
    pub fn finished(&self, busy: Duration, instance_started: bool) {
        self.busy_ns.fetch_add(
            u64::try_from(busy.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.invocations.fetch_add(1, Ordering::Relaxed);
        if instance_started {
            self.instance_starts.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One core's figures over a sampling interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CoreSample {
    /// Fraction of the interval the core was busy, 0..1.
    pub busy: f64,
    /// Run-queue length at the sample.
    pub queue_len: u32,
    /// Invocations finished since start.
    pub invocations: u64,
    /// Instances started since start.
    pub instance_starts: u64,
}

/// Turns cumulative counters into per-interval samples.
#[derive(Debug, Default)]
pub struct Sampler {
    last_busy_ns: Vec<u64>,
}

impl Sampler {
    /// Samples every core; `interval` is the wall time since the previous call.
    pub fn sample(&mut self, cores: &[CoreCounters], interval: Duration) -> Vec<CoreSample> {
        self.last_busy_ns.resize(cores.len(), 0);
        let interval_ns = interval.as_nanos().max(1) as f64;
        cores
            .iter()
            .zip(self.last_busy_ns.iter_mut())
            .map(|(core, last)| {
                let busy_ns = core.busy_ns.load(Ordering::Relaxed);
                let delta = busy_ns.saturating_sub(*last);
                *last = busy_ns;
                CoreSample {
                    busy: (delta as f64 / interval_ns).clamp(0.0, 1.0),
                    queue_len: core.queue_len.load(Ordering::Relaxed),
                    invocations: core.invocations.load(Ordering::Relaxed),
                    instance_starts: core.instance_starts.load(Ordering::Relaxed),
                }
            })
            .collect()
    }
}

/// Per-CPU utilisation of the whole machine from `/proc/stat`, for the compute role, whose
/// invocations are processes the kernel schedules on any CPU.
#[derive(Debug, Default)]
pub struct CpuSampler {
    /// (busy, total) jiffies per CPU at the last sample.
    last: Vec<(u64, u64)>,
}

impl CpuSampler {
    /// Busy fraction of each CPU since the last call (0 on the first).
    pub fn sample(&mut self) -> Vec<f64> {
        let now = read_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        self.last.resize(now.len(), (0, 0));
        let busy = now
            .iter()
            .zip(&self.last)
            .map(|(&(busy, total), &(last_busy, last_total))| {
                let total = total.saturating_sub(last_total);
                if last_total == 0 || total == 0 {
                    0.0
                } else {
                    (busy.saturating_sub(last_busy) as f64 / total as f64).clamp(0.0, 1.0)
                }
            })
            .collect();
        self.last = now;
        busy
    }
}

/// (busy, total) jiffies of each `cpuN` line: busy is everything but idle and iowait.
fn read_proc_stat(text: &str) -> Vec<(u64, u64)> {
    text.lines()
        .filter(|l| l.starts_with("cpu") && l.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .map(|l| {
            let fields: Vec<u64> = l
                .split_whitespace()
                .skip(1)
                .filter_map(|f| f.parse().ok())
                .collect();
            let total: u64 = fields.iter().take(8).sum();
            let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
            (total.saturating_sub(idle), total)
        })
        .collect()
}

/// Costs a node measures for the scheduler's cost model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CostKind {
    /// Starting a pooled Wasm instance next to the data (storage role).
    WasmStart,
    /// One access to local data from inside a sandbox.
    LocalAccess,
    /// Handling one request at the node, beyond the function's own run.
    Dispatch,
    /// From request to running in a container assembled from pooled parts (compute role).
    ContainerAssembly,
    /// From request to running in a warm container (compute role: a fork).
    WarmStart,
    /// From request to running in a container some part of which was built on the critical
    /// path (compute role).
    ContainerCold,
}

impl CostKind {
    /// Every kind, in a fixed order.
    pub const ALL: [CostKind; 6] = [
        CostKind::WasmStart,
        CostKind::LocalAccess,
        CostKind::Dispatch,
        CostKind::ContainerAssembly,
        CostKind::WarmStart,
        CostKind::ContainerCold,
    ];
}

/// What has been measured of one cost since the node started.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Measured {
    pub kind: CostKind,
    /// Exponentially weighted mean, microseconds.
    pub mean: f64,
    /// Measurements taken.
    pub count: u64,
    /// Their sum, microseconds.
    pub total: f64,
}

/// Measured costs: per kind, a moving mean and the count and sum of every measurement (the
/// scheduler calibrates with the measurements new since its previous look).
#[derive(Debug, Default)]
pub struct CostMeter {
    measured: Mutex<[Option<(f64, u64, f64)>; CostKind::ALL.len()]>,
}

/// Weight of a new sample: about the last 20 samples dominate.
const EWMA_ALPHA: f64 = 0.05;

impl CostMeter {
    /// Folds in one measurement.
    pub fn record(&self, kind: CostKind, value: Duration) {
        let micros = value.as_secs_f64() * 1e6;
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut measured[kind as usize];
        *slot = Some(match *slot {
            None => (micros, 1, micros),
            Some((mean, count, total)) => (
                mean + EWMA_ALPHA * (micros - mean),
                count.saturating_add(1),
                total + micros,
            ),
        });
    }

    /// Every cost measured so far.
    pub fn measured(&self) -> Vec<Measured> {
        let measured = *self.measured.lock().unwrap_or_else(|e| e.into_inner());
        CostKind::ALL
            .into_iter()
            .filter_map(|kind| {
                measured[kind as usize].map(|(mean, count, total)| Measured {
                    kind,
                    mean,
                    count,
                    total,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_lines_give_busy_and_total_per_cpu() {
        let text = "cpu  10 0 10 80 0 0 0 0 0 0\ncpu0 5 0 5 40 0 0 0 0 0 0\ncpu1 1 1 1 1 4 0 0 0 0 0\nintr 1 2\n";
        // idle (4th) and iowait (5th) are not busy; the aggregate line is skipped.
        assert_eq!(read_proc_stat(text), vec![(10, 50), (3, 8)]);
    }

    #[test]
    fn busy_fraction_is_per_interval() {
        let cores = [CoreCounters::default(), CoreCounters::default()];
        let mut sampler = Sampler::default();
        cores[0].finished(Duration::from_millis(5), true);
        let s = sampler.sample(&cores, Duration::from_millis(10));
        // 5 ms busy of 10 ms.
        assert_eq!(s[0].busy, 0.5);
        assert_eq!(s[1].busy, 0.0);
        assert_eq!((s[0].invocations, s[0].instance_starts), (1, 1));
        // Nothing new: idle in the next interval.
        assert_eq!(
            sampler.sample(&cores, Duration::from_millis(10))[0].busy,
            0.0
        );
    }

    #[test]
    fn cost_means_move_towards_new_samples() {
        let meter = CostMeter::default();
        assert!(meter.measured().is_empty());
        meter.record(CostKind::WasmStart, Duration::from_micros(10));
        meter.record(CostKind::WasmStart, Duration::from_micros(30));
        // 10 + 0.05 x (30 - 10) = 11; two measurements summing to 40.
        let m = meter.measured()[0];
        assert_eq!((m.kind, m.count), (CostKind::WasmStart, 2));
        assert!((m.mean - 11.0).abs() < 1e-9);
        assert!((m.total - 40.0).abs() < 1e-9);
    }
}

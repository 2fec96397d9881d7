//! Keep-alive policies: how long an idle execution context lives, and which one goes first when
//! memory runs short.
//!
//! The driver (the simulator's engine, or the live scheduler for its compute nodes) tells the policy what happens to contexts
//! and invocations; the policy answers with an [`IdleAction`] each time a context falls idle and
//! picks eviction victims. Three policies:
//! - [`FixedTtl`]: keep an idle context for a fixed time after its last use (the 10-minute
//!   baseline of "Serverless in the Wild", ATC'20), or, with `reset = false`, until a fixed time
//!   after it first fell idle however often it is reused (the semantics of the DSLab FaaS
//!   simulator's `FixedTimeColdStartPolicy` by default; kept so its figures can be reproduced);
//! - [`HybridHistogram`]: ATC'20's hybrid histogram policy;
//! - [`GreedyDual`]: FaasCache's (ASPLOS'21) greedy-dual keep-alive: contexts stay until memory is
//!   needed, and the one with the lowest `clock + frequency x cost / size` goes.
//!
//! Pure: time is passed in (microseconds), there is no clock and no randomness.

mod spec;

use std::collections::HashMap;

use sandstorm_naming::{AppId, FunctionId, NodeId};
use sandstorm_profiler::IdleTimeHistogram;
pub use spec::{DEFAULT_HYBRID_RANGE_US, KeepAliveSpec};

/// Why a context is idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleReason {
    /// Its last running invocation finished.
    Finished,
    /// It was just started ahead of demand by a pre-warm.
    Prewarmed,
}

/// An idle context, as the policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleContext {
    /// The driver's id for the context (stable while it lives).
    pub id: u64,
    pub app: AppId,
    pub node: NodeId,
    pub memory_mb: u32,
    /// When it last finished an invocation (or became ready, if never used).
    pub last_used_us: u64,
    /// When it first fell idle after it was created.
    pub first_idle_us: u64,
}

/// What to do with a context that just fell idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleAction {
    /// Keep it; destroy it at `until_us` unless it is used before.
    KeepUntil(u64),
    /// Keep it until memory pressure makes it a victim.
    KeepUntilEvicted,
    /// Destroy it now and start a fresh one at `at_us` (unless the app is invoked before), which
    /// will then be kept as the policy says for [`IdleReason::Prewarmed`].
    UnloadAndPrewarm { at_us: u64 },
    /// Destroy it now.
    Destroy,
}

/// A keep-alive policy.
pub trait KeepAlive: std::fmt::Debug + Send {
    /// Name as written in scenario files, e.g. `fixed:10m`.
    fn name(&self) -> String;

    /// An invocation of `function` (of `app`) that arrived at `arrival_us` finished at `end_us`.
    /// Called before the context it ran in is reported idle.
    fn on_finish(&mut self, _app: AppId, _function: FunctionId, _arrival_us: u64, _end_us: u64) {}

    /// A context of `app` started serving an invocation; `start_cost_us` is what starting it
    /// from nothing costs (greedy-dual's cost term).
    fn on_use(&mut self, _ctx: &IdleContext, _start_cost_us: f64) {}

    /// A context is idle at `now_us`: what to do with it.
    fn on_idle(&mut self, ctx: &IdleContext, reason: IdleReason, now_us: u64) -> IdleAction;

    /// A context was destroyed (expired, evicted or unloaded); forget what was kept about it.
    fn on_destroy(&mut self, _ctx: &IdleContext) {}

    /// Memory is needed on a node: which of its idle contexts goes first. The default evicts the
    /// least recently used.
    fn victim(&mut self, idle: &[IdleContext]) -> Option<usize> {
        idle.iter()
            .enumerate()
            .min_by_key(|(_, c)| (c.last_used_us, c.id))
            .map(|(i, _)| i)
    }
}

/// Keep an idle context for `ttl_us`.
#[derive(Debug, Clone)]
pub struct FixedTtl {
    ttl_us: u64,
    reset: bool,
}

impl FixedTtl {
    /// Idle contexts live `ttl_us` after their last use.
    pub fn new(ttl_us: u64) -> Self {
        Self {
            ttl_us,
            reset: true,
        }
    }

    /// Idle contexts live until `ttl_us` after they *first* fell idle, however often they are
    /// used in between (DSLab FaaS's default fixed policy).
    pub fn lifetime(ttl_us: u64) -> Self {
        Self {
            ttl_us,
            reset: false,
        }
    }
}

impl KeepAlive for FixedTtl {
    fn name(&self) -> String {
        let prefix = if self.reset {
            "fixed"
        } else {
            "fixed-lifetime"
        };
        format!("{prefix}:{}", format_duration(self.ttl_us))
    }

    fn on_idle(&mut self, ctx: &IdleContext, _reason: IdleReason, now_us: u64) -> IdleAction {
        let from = if self.reset {
            now_us
        } else {
            ctx.first_idle_us
        };
        let until = from.saturating_add(self.ttl_us);
        if until <= now_us && !self.reset {
            IdleAction::Destroy
        } else {
            IdleAction::KeepUntil(until)
        }
    }
}

/// Idle-time percentiles the hybrid policy reads (ATC'20 §4.2).
const HEAD: f64 = 0.05;
const TAIL: f64 = 0.99;
/// Margins: pre-warm 10% early, keep alive 10% longer.
const HIST_MARGIN: f64 = 0.10;
/// Out-of-bounds prediction margin (the paper's ARIMA path): pre-warm at 85%, keep 30%.
const FORECAST_MARGIN: f64 = 0.15;
/// Below this coefficient of variation of the bin counts the histogram is not representative.
const CV_THRESHOLD: f64 = 2.0;
/// At or above this share of out-of-bounds idle times, forecast instead of reading the histogram.
const OOB_THRESHOLD: f64 = 0.5;

/// The hybrid histogram policy of "Serverless in the Wild" (Shahrad et al., ATC'20).
///
/// Per app, a histogram of idle times (1-minute bins over `range`, 4 h by default) fed at every
/// invocation end with `arrival - previous end` of the same function. When it falls idle, a
/// context is
/// - *representative* histogram (CV of bin counts >= 2): unloaded and pre-warmed at the 5th
///   percentile minus 10% (kept loaded if that is 0), then kept alive until the 99th percentile
///   plus 10%;
/// - *not representative* (CV < 2, including an app never seen): kept alive for the whole range;
/// - *mostly out of bounds* (>= half the idle times exceed the range): the next idle time is
///   forecast and the context pre-warmed at 85% of it and kept for 30% of it. The paper fits an
///   ARIMA model; we forecast with the last observed idle time (ARIMA(0,1,0)), which is what the
///   paper's model reduces to with the one or two samples such apps have in a day.
#[derive(Debug, Clone)]
pub struct HybridHistogram {
    range_us: u64,
    apps: Vec<Option<AppIdleTimes>>,
    last_end: Vec<Option<u64>>,
}

#[derive(Debug, Clone)]
struct AppIdleTimes {
    histogram: IdleTimeHistogram,
    last_idle_us: u64,
}

/// The windows the hybrid policy derived for an app, microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HybridWindows {
    pub prewarm_us: u64,
    pub keep_alive_us: u64,
}

/// The ATC'20 bin width: one minute.
pub const HYBRID_BIN_US: u64 = 60_000_000;

impl HybridHistogram {
    /// The policy with a histogram `range_us` long (ATC'20: 4 hours) in 1-minute bins.
    pub fn new(range_us: u64) -> Self {
        Self {
            range_us: range_us.max(HYBRID_BIN_US),
            apps: Vec::new(),
            last_end: Vec::new(),
        }
    }

    /// The windows for `app` as of now.
    pub fn windows(&self, app: AppId) -> HybridWindows {
        let Some(Some(data)) = self.apps.get(app.0 as usize) else {
            return HybridWindows {
                prewarm_us: 0,
                keep_alive_us: self.range_us,
            };
        };
        let h = &data.histogram;
        let total = h.total();
        let oob_rate = if total == 0 {
            0.0
        } else {
            h.out_of_bounds() as f64 / total as f64
        };
        if oob_rate >= OOB_THRESHOLD {
            let forecast = data.last_idle_us as f64;
            return HybridWindows {
                prewarm_us: (forecast * (1.0 - FORECAST_MARGIN)) as u64,
                keep_alive_us: (forecast * FORECAST_MARGIN * 2.0) as u64,
            };
        }
        if h.in_bounds() == 0 || h.bin_counts_cv() < CV_THRESHOLD {
            return HybridWindows {
                prewarm_us: 0,
                keep_alive_us: self.range_us,
            };
        }
        let bin = h.bin_width_us() as f64;
        let head = h.percentile_bin(HEAD).unwrap_or(0) as f64;
        let tail = h.percentile_bin(TAIL).unwrap_or(h.bins() - 1) as f64;
        HybridWindows {
            prewarm_us: (head * bin * (1.0 - HIST_MARGIN)) as u64,
            keep_alive_us: ((tail + 1.0) * bin * (1.0 + HIST_MARGIN)) as u64,
        }
    }

    fn app_mut(&mut self, app: AppId) -> &mut AppIdleTimes {
        let i = app.0 as usize;
        if self.apps.len() <= i {
            self.apps.resize(i + 1, None);
        }
        let bins = (self.range_us / HYBRID_BIN_US) as usize;
        self.apps[i].get_or_insert_with(|| AppIdleTimes {
            histogram: IdleTimeHistogram::new(HYBRID_BIN_US, bins)
                .unwrap_or_else(|_| IdleTimeHistogram::atc20()),
            last_idle_us: 0,
        })
    }
}

impl KeepAlive for HybridHistogram {
    fn name(&self) -> String {
        if self.range_us == 4 * 3_600_000_000 {
            "hybrid".to_owned()
        } else {
            format!("hybrid:{}", format_duration(self.range_us))
        }
    }

    fn on_finish(&mut self, app: AppId, function: FunctionId, arrival_us: u64, end_us: u64) {
        let f = function.0 as usize;
        if self.last_end.len() <= f {
            self.last_end.resize(f + 1, None);
        }
        if let Some(previous_end) = self.last_end[f].replace(end_us) {
            let idle = arrival_us.saturating_sub(previous_end);
            let data = self.app_mut(app);
            data.histogram.record(idle);
            data.last_idle_us = idle;
        }
    }

    fn on_idle(&mut self, ctx: &IdleContext, reason: IdleReason, now_us: u64) -> IdleAction {
        let w = self.windows(ctx.app);
        if reason == IdleReason::Finished && w.prewarm_us > 0 {
            return IdleAction::UnloadAndPrewarm {
                at_us: now_us.saturating_add(w.prewarm_us),
            };
        }
        IdleAction::KeepUntil(now_us.saturating_add(w.keep_alive_us))
    }
}

/// FaasCache's greedy-dual keep-alive (Fuerst & Sharma, ASPLOS'21).
///
/// Idle contexts are kept until memory is needed. Each context's priority is
/// `clock + frequency(app) x cost / size`, set when it is used; the victim is the idle context
/// with the lowest priority, and the clock advances to the victim's priority, so contexts that
/// have not been used for a while age out relative to fresh ones.
#[derive(Debug, Clone, Default)]
pub struct GreedyDual {
    clock: f64,
    frequency: HashMap<AppId, u64>,
    priority: HashMap<u64, f64>,
}

impl GreedyDual {
    pub fn new() -> Self {
        Self::default()
    }
}

impl KeepAlive for GreedyDual {
    fn name(&self) -> String {
        "greedy-dual".to_owned()
    }

    fn on_use(&mut self, ctx: &IdleContext, start_cost_us: f64) {
        let freq = self.frequency.entry(ctx.app).or_insert(0);
        *freq += 1;
        let size = f64::from(ctx.memory_mb.max(1));
        self.priority
            .insert(ctx.id, self.clock + *freq as f64 * start_cost_us / size);
    }

    fn on_idle(&mut self, _ctx: &IdleContext, _reason: IdleReason, _now_us: u64) -> IdleAction {
        IdleAction::KeepUntilEvicted
    }

    fn on_destroy(&mut self, ctx: &IdleContext) {
        self.priority.remove(&ctx.id);
    }

    fn victim(&mut self, idle: &[IdleContext]) -> Option<usize> {
        let (index, priority) = idle
            .iter()
            .enumerate()
            .map(|(i, c)| (i, self.priority.get(&c.id).copied().unwrap_or(self.clock)))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(idle[a.0].id.cmp(&idle[b.0].id)))?;
        self.clock = self.clock.max(priority);
        Some(index)
    }
}

/// `90s`, `10m`, `4h`, or microseconds when not a whole number of seconds.
pub fn format_duration(us: u64) -> String {
    const S: u64 = 1_000_000;
    match us {
        0 => "0s".to_owned(),
        _ if us.is_multiple_of(3_600 * S) => format!("{}h", us / (3_600 * S)),
        _ if us.is_multiple_of(60 * S) => format!("{}m", us / (60 * S)),
        _ if us.is_multiple_of(S) => format!("{}s", us / S),
        _ => format!("{us}us"),
    }
}

#[cfg(test)]
mod tests;

//! The trace model: what the simulator replays.
//!
//! Owns [`Trace`] (apps, functions and a compact, private body of arrival counts or records), the
//! readers that build it ([`Trace::load_azure2019`], [`Trace::load_azure2021`],
//! [`Trace::synthetic`]) and [`Arrivals`], the streaming expansion of a trace into timed
//! invocations at a given seed and load.
//!
//! Design notes:
//! - A trace is never expanded into all its invocations at once. The Azure 2019 body is a sparse
//!   matrix of per-minute counts (minute -> (function, count) pairs); [`Arrivals`] expands one
//!   minute at a time into a reused buffer. The 2021 body is its per-invocation records (the
//!   input itself); synthetic traces store only rates.
//! - **Load scaling**: each trace invocation becomes `floor(load)` copies plus one more with
//!   probability `frac(load)`, independently per invocation (Azure 2019 and 2021). Synthetic
//!   traces are Poisson processes, so `load` multiplies their rates instead. Load 1.0 is the trace
//!   exactly. A load that is not finite and positive yields no arrivals.
//! - **Time**: microseconds from the start of the trace's day (2019: minute column `m`, 1-based,
//!   covers `[60(m-1), 60m)` s). A minute window is *not* rebased: [`Trace::start_us`] says where
//!   it begins and [`Trace::span_us`] how long it is.
//! - **Limits**: every time and duration an input gives is at most [`MAX_TIME_S`] (about 32
//!   years), and every drawn duration at most [`MAX_TIME_US`], so the engine's microsecond clock
//!   (a `u64`) never comes near overflowing; readers reject larger values with the file and line.
//! - Determinism: arrivals depend only on the trace, the seed and the load. Azure 2019 seeds one
//!   generator per minute from `(seed, minute)`, so a minute's arrivals do not depend on the
//!   window it is replayed in.

mod arrivals;
mod azure2019;
mod azure2021;
pub mod input;
mod synthetic;

use std::fmt;

use sandstorm_naming::{AppId, FunctionId};
use serde::{Deserialize, Serialize};

pub use arrivals::Arrivals;
pub use input::CsvError;
pub use synthetic::{SyntheticError, SyntheticFunction, SyntheticSpec};

/// Memory of an app whose trace gives none, MB: 140, the median of the Burr fit of Azure app
/// memory in "Serverless in the Wild" (ATC'20; c = 11.652, k = 0.221, lambda = 107.083), the
/// distribution DSLab FaaS draws 2021 memory from. Azure 2019 apps without a memory row use the
/// median of the trace's known apps instead, and this only when none is known.
pub const DEFAULT_MEMORY_MB: u32 = 140;

/// The largest time or duration, in seconds, a trace input may give: 10^9 s, about 32 years (the
/// Azure traces span one and fourteen days).
pub const MAX_TIME_S: f64 = 1e9;

/// [`MAX_TIME_S`] in microseconds.
pub const MAX_TIME_US: u64 = 1_000_000_000_000_000;

/// Where a trace came from. Written in scenario files as `azure2019`, `azure2021`, `synthetic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TraceFormat {
    /// Azure Functions 2019: per-minute invocation counts per function.
    Azure2019,
    /// Azure Functions 2021: one row per invocation with its duration.
    Azure2021,
    /// Poisson arrivals generated from a [`SyntheticSpec`].
    Synthetic,
}

impl TraceFormat {
    /// The name used in scenario files and reports: `azure2019`, `azure2021`, `synthetic`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Azure2019 => "azure2019",
            Self::Azure2021 => "azure2021",
            Self::Synthetic => "synthetic",
        }
    }
}

impl fmt::Display for TraceFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An application: its functions share warm execution contexts (Azure's keep-alive unit).
/// `AppId(i)` indexes [`Trace::apps`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub name: String,
    /// Memory one instance of the app needs, MB (>= 1).
    pub memory_mb: u32,
}

/// A function of the trace. `FunctionId(i)` indexes [`Trace::functions`].
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub app: AppId,
    /// Trigger type from the trace (`http`, `timer`, ...), `unknown` or `synthetic`.
    pub trigger: String,
    pub duration: DurationModel,
}

/// How an invocation's execution time is drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DurationModel {
    /// Azure 2019 percentiles, ms at p0, p1, p25, p50, p75, p99, p100, drawn by DSLab FaaS's step
    /// rule: `p ~ U[0,1)`, the band's upper percentile is returned (`p < .01` -> p1,
    /// `< .25` -> p25, `< .5` -> p50, `< .75` -> p75, `< .99` -> p99, else p100; p0 never), then
    /// clamped to at least 1 ms.
    Percentiles([f64; 7]),
    /// Log-normal of the duration in *seconds*. Azure 2019 functions without a durations row use
    /// `mu = -0.38, sigma = 2.36` (the ATC'20 fit), clamped to at least 1 ms as DSLab does; other
    /// traces clamp to at least 1 us.
    LogNormal { mu: f64, sigma: f64 },
    /// Always this many microseconds.
    Fixed(u64),
    /// Azure 2021: each invocation carries its own duration.
    Recorded,
}

/// One invocation to simulate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Arrival time, microseconds from the start of the trace's day.
    pub at_us: u64,
    pub function: FunctionId,
    /// Execution time the trace gives (or draws) for it.
    pub duration_us: u64,
}

/// A loaded trace; see the module docs.
#[derive(Debug, Clone)]
pub struct Trace {
    pub format: TraceFormat,
    /// Where it came from: a path, or a description of the synthetic spec.
    pub source: String,
    pub apps: Vec<App>,
    pub functions: Vec<Function>,
    /// Length of the replayed window, microseconds.
    pub span_us: u64,
    start_us: u64,
    apps_without_memory: usize,
    data_classes: Vec<Option<String>>,
    body: Body,
}

/// The private, compact form of a trace's arrivals.
#[derive(Debug, Clone)]
enum Body {
    /// Azure 2019: per-minute counts.
    Minutes(MinuteCounts),
    /// Azure 2021: records sorted by arrival time.
    Records(Vec<Record>),
    /// Synthetic: per-function Poisson rates.
    Poisson(PoissonRates),
}

/// Sparse per-minute counts: minute `first_minute + k` (0-based) holds
/// `entries[offsets[k]..offsets[k + 1]]`, pairs of (function index, count).
#[derive(Debug, Clone)]
struct MinuteCounts {
    first_minute: u32,
    offsets: Vec<usize>,
    entries: Vec<(u32, u32)>,
    total: u64,
}

/// One recorded invocation (Azure 2021).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Record {
    at_us: u64,
    function: u32,
    duration_us: u64,
}

/// Poisson rates per function over a window.
#[derive(Debug, Clone)]
struct PoissonRates {
    duration_us: u64,
    rates_per_s: Vec<f64>,
}

/// Why a trace could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// An input file is missing, unreadable or malformed (the message names file, line, column).
    #[error(transparent)]
    Input(#[from] CsvError),
    /// The minute window is not `1 <= start < end <= 1440`.
    #[error("minutes window [{start}, {end}) is invalid: need 1 <= start < end <= 1440")]
    Window { start: u32, end: u32 },
    /// A day label that cannot be part of a file name.
    #[error("day label {day:?} is invalid: expected something like \"d01\"")]
    Day { day: String },
    /// More functions or apps than 32-bit identifiers can name.
    #[error("{path}: more than 2^32 functions or apps")]
    TooLarge { path: String },
    /// A synthetic spec field is out of range.
    #[error("synthetic trace: {0}")]
    Synthetic(SyntheticError),
}

impl Trace {
    /// Invocations in the trace at load 1.0. For a synthetic trace, the expected number
    /// (sum of rates x duration, rounded), since its arrivals are random.
    pub fn total_invocations(&self) -> u64 {
        match &self.body {
            Body::Minutes(m) => m.total,
            Body::Records(r) => r.len() as u64,
            Body::Poisson(p) => {
                let per_s: f64 = p.rates_per_s.iter().sum();
                (per_s * p.duration_us as f64 / 1e6).round() as u64
            }
        }
    }

    /// Offered load at `load`, invocations per simulated second over [`Trace::span_us`].
    pub fn offered_per_s(&self, load: f64) -> f64 {
        if let Body::Poisson(p) = &self.body {
            return p.rates_per_s.iter().sum::<f64>() * load;
        }
        if self.span_us == 0 {
            return 0.0;
        }
        self.total_invocations() as f64 * load / (self.span_us as f64 / 1e6)
    }

    /// The timed invocations at `load` (see the module docs), in non-decreasing `at_us` order;
    /// the same `(seed, load)` gives the same sequence.
    pub fn arrivals(&self, seed: u64, load: f64) -> Arrivals<'_> {
        Arrivals::new(self, seed, load)
    }

    /// Start of the replayed window, microseconds from the start of the trace's day (0 unless a
    /// 2019 minute window starts later).
    pub fn start_us(&self) -> u64 {
        self.start_us
    }

    /// Apps whose memory the trace does not give, so they got a default (Azure 2019: apps without
    /// a memory row, see [`Trace::load_azure2019`]; Azure 2021: every app).
    pub fn apps_without_memory(&self) -> usize {
        self.apps_without_memory
    }

    /// The data class a synthetic function names (its `data` field), if any.
    pub fn function_data_class(&self, function: FunctionId) -> Option<&str> {
        self.data_classes.get(function.0 as usize)?.as_deref()
    }

    /// The function called `name` (first match), if any.
    pub fn function_by_name(&self, name: &str) -> Option<FunctionId> {
        let index = self.functions.iter().position(|f| f.name == name)?;
        Some(FunctionId(u32::try_from(index).ok()?))
    }
}

/// A 32-bit identifier for the `index`-th item, or an error naming `path`.
fn id32(index: usize, path: &str) -> Result<u32, TraceError> {
    u32::try_from(index).map_err(|_| TraceError::TooLarge {
        path: path.to_owned(),
    })
}

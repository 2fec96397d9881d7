//! Scenario files: what one `sandstorm sim` run replays, on which cluster, with which policies.
//!
//! Owns the TOML schema (the raw serde structs, public, every one `deny_unknown_fields`), its
//! validation into [`Scenario`], and [`KeepAliveSpec`], the keep-alive policy names. Every error
//! names the file and the 1-based line: serde errors through toml's spans, validation errors by
//! looking the offending key up in the parsed document. Paths inside a scenario are relative to
//! its directory. Placement policy names are checked against the scheduler's
//! ([`sandstorm_placement::Policy`]) and kept as the file writes them.
//!
//! Admission (`[cluster] admission`): `limited` (default) caps each node at the placement's
//! admission limit and rejects what no node takes; `unlimited` lets a node take whatever is
//! placed on it (DSLab FaaS's hosts) and rejects only what no node has memory for; `queue` is
//! `unlimited` where an invocation no node can take waits FIFO at a compute host until it can
//! run, counted as a cold start, with the run's `queued` count and wait percentiles reported.
//!
//! Defaults: `seed = 1`, `policies = ["cost-aware"]`, `keep_alive = ["fixed:10m"]`,
//! `bound = false`, `trace.day = "d01"`, `[cluster] compute_cpu = "fifo", admission = "limited"`,
//! `[instances] per = "app", concurrency = 1,
//! pool_per_node = 0, pool_refill_us = 1000`, `[data] mode = "none", seed = 1`,
//! `[load] scales = [1.0]`, `[slo] latency_us = 0, slowdown = 10.0`; `[costs]` and `[weights]`
//! default to the cost model's documented defaults, field by field.
//!
//! Limits, so that no scenario can overflow the engine's microsecond clock or exhaust memory
//! (each is an error naming the line): load points in `(0, MAX_LOAD_SCALE]`; at most 100,000
//! nodes and 4,096 cores a node; every `[costs]` value at most 1e9; `pool_refill_us` and a data
//! class's `compute_us` at most [`crate::trace::MAX_TIME_US`]; the synthetic trace's own limits
//! (see [`SyntheticSpec::validate`]).

mod check;
mod file;

use std::path::{Path, PathBuf};

use sandstorm_cost_model::{CostParams, Weights};
use toml::de::{DeTable, DeValue};

use crate::profile::DataSpec;
use crate::trace::{SyntheticSpec, Trace, TraceError};
use check::{Check, field_at, line_at};

pub use file::{
    Admission, Cluster, DataMode, DataSection, InstanceUnit, Instances, LoadSection, PeerSection,
    ScenarioFile, Slo, TraceSection,
};
pub use sandstorm_placement::keepalive::{DEFAULT_HYBRID_RANGE_US, KeepAliveSpec};

/// The largest load point a scenario may ask for. A 2019 trace minute is expanded in memory,
/// `load` copies of each invocation: at 100x, the busiest minute of the bundled day trace (45,514
/// invocations) is 4.6 million arrivals, about 160 MB; an absurd scale would exhaust memory.
pub const MAX_LOAD_SCALE: f64 = 100.0;

/// A validated peer figure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerFigure {
    pub keep_alive: KeepAliveSpec,
    pub source: String,
    pub cold_starts: u64,
    pub invocations: u64,
}

/// The validated trace to replay (paths resolved against the scenario's directory).
#[derive(Debug, Clone, PartialEq)]
pub enum TraceSpec {
    Azure2019 {
        dir: PathBuf,
        day: String,
        minutes: Option<(u32, u32)>,
    },
    Azure2021 {
        file: PathBuf,
    },
    Synthetic(SyntheticSpec),
}

/// A parsed and validated scenario.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The file it was read from.
    pub path: PathBuf,
    pub name: String,
    /// Empty when the file gives none.
    pub description: String,
    /// The CLI's `--seed` overrides it by assignment.
    pub seed: u64,
    /// Placement policy names, each one a name `Policy::from_str` accepts.
    pub policies: Vec<String>,
    pub keep_alive: Vec<KeepAliveSpec>,
    /// Compute the LP bound.
    pub bound: bool,
    pub trace: TraceSpec,
    pub cluster: Cluster,
    pub costs: CostParams,
    pub weights: Weights,
    pub instances: Instances,
    pub data: DataSpec,
    /// Load points, multipliers of the trace's rate (each > 0 and <= [`MAX_LOAD_SCALE`]).
    pub load_scales: Vec<f64>,
    pub slo: Slo,
    pub peers: Vec<PeerFigure>,
}

/// Why a scenario could not be loaded. Messages start with `FILE:LINE:`.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read. (`error` is part of the message, not an error source, so a
    /// chain printed with `{:#}` does not repeat it.)
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Not valid TOML, or not the schema (unknown key, wrong type, missing field). `field` is
    /// the key path the error lies under, when known.
    #[error("{}:{line}: {}{message}", path.display(), prefix(field))]
    Parse {
        path: PathBuf,
        line: u64,
        field: String,
        message: String,
    },
    /// A value out of range or inconsistent with another.
    #[error("{}:{line}: {field}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        field: String,
        reason: String,
    },
}

impl Scenario {
    /// Reads, parses and validates the scenario at `path`.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Io {
            path: path.to_owned(),
            error,
        })?;
        Self::parse(&text, path)
    }

    /// Parses and validates `text` as if read from `path` (used for messages and to resolve
    /// relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Scenario, ScenarioError> {
        let parse_error = |e: toml::de::Error, doc: Option<&DeValue<'_>>| {
            let offset = e.span().map(|s| s.start);
            ScenarioError::Parse {
                path: path.to_owned(),
                line: offset.map_or(1, |o| line_at(text, o)),
                field: doc
                    .zip(offset)
                    .map(|(d, o)| field_at(d, o))
                    .unwrap_or_default(),
                message: e.message().trim_end().to_owned(),
            }
        };
        let doc = DeTable::parse(text).map_err(|e| parse_error(e, None))?;
        let doc = DeValue::Table(doc.into_inner());
        let raw: ScenarioFile = toml::from_str(text).map_err(|e| parse_error(e, Some(&doc)))?;
        let check = Check { path, text, doc };
        check.scenario(raw)
    }

    /// Loads the trace the scenario names.
    pub fn load_trace(&self) -> Result<Trace, TraceError> {
        match &self.trace {
            TraceSpec::Azure2019 { dir, day, minutes } => Trace::load_azure2019(dir, day, *minutes),
            TraceSpec::Azure2021 { file } => Trace::load_azure2021(file),
            TraceSpec::Synthetic(spec) => {
                let mut trace = Trace::synthetic(spec)?;
                trace.source = format!("{} [trace.synthetic]", self.path.display());
                Ok(trace)
            }
        }
    }
}

fn prefix(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("{field}: ")
    }
}

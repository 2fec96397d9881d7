//! Synthetic traces: independent Poisson arrivals per function, for scenarios the real traces do
//! not cover (the locality scenario's mix of data-heavy and CPU-heavy functions).
//!
//! Each function arrives at `rate_per_s x load` over `duration_s`. Its execution time is fixed
//! (`duration_ms`) or, when `sigma > 0`, log-normal with median `duration_ms` and that sigma (of
//! the natural log of seconds). Each function is its own app (named after it) unless `app` names
//! one; an app's memory is the largest `memory_mb` of its functions. `data` names a data class of
//! the scenario's `[data]` section (see `profile`); it is kept on the trace, see
//! [`Trace::function_data_class`].

use std::collections::HashMap;

use sandstorm_naming::AppId;
use serde::{Deserialize, Serialize};

use super::{
    App, Body, DurationModel, Function, MAX_TIME_S, PoissonRates, Trace, TraceError, TraceFormat,
};

/// The largest log-normal sigma: at 10, one draw in a million is 10^20 times the median.
const MAX_SIGMA: f64 = 10.0;
/// The most invocations a synthetic trace may expect at load 1.0 (sum of rates x `duration_s`).
const MAX_INVOCATIONS: f64 = 1e10;

/// A synthetic workload, as written under `[trace.synthetic]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticSpec {
    /// Simulated seconds of arrivals (> 0).
    pub duration_s: f64,
    /// At least one function.
    pub functions: Vec<SyntheticFunction>,
}

/// One synthetic function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyntheticFunction {
    /// Unique, non-empty.
    pub name: String,
    /// Mean arrivals per second at load 1.0 (>= 0).
    pub rate_per_s: f64,
    /// Execution time, ms (>= 0; the median when `sigma > 0`, then > 0).
    pub duration_ms: f64,
    /// Log-normal sigma of the execution time; 0 (default) means fixed.
    #[serde(default)]
    pub sigma: f64,
    /// Memory of one instance, MB (>= 1; default 128).
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// App the function belongs to (default: an app of its own, named after it).
    #[serde(default)]
    pub app: Option<String>,
    /// Data class of the scenario's `[data]` section this function gets.
    #[serde(default)]
    pub data: Option<String>,
}

fn default_memory_mb() -> u32 {
    128
}

/// A field of a [`SyntheticSpec`] out of range. `function` is the index into `functions` (None
/// for a top-level field); `field` the field's name, as written in the scenario file.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {reason}", self.field_path())]
pub struct SyntheticError {
    pub function: Option<usize>,
    pub field: &'static str,
    pub reason: String,
}

impl SyntheticError {
    /// `functions[2].rate_per_s` or `duration_s`.
    pub fn field_path(&self) -> String {
        match self.function {
            Some(i) => format!("functions[{i}].{}", self.field),
            None => self.field.to_owned(),
        }
    }
}

impl SyntheticSpec {
    /// Checks every field's range; the first problem found is returned. Beyond the per-field
    /// rules: `duration_s` and each `duration_ms` at most [`MAX_TIME_S`] (in their units),
    /// `sigma` at most 10, and at most 10^10 expected invocations (sum of rates x `duration_s`).
    pub fn validate(&self) -> Result<(), SyntheticError> {
        let top = |field, reason: &str| SyntheticError {
            function: None,
            field,
            reason: reason.into(),
        };
        if !(self.duration_s.is_finite() && self.duration_s > 0.0 && self.duration_s <= MAX_TIME_S)
        {
            return Err(top("duration_s", "must be a number > 0 and at most 1e9"));
        }
        if self.functions.is_empty() {
            return Err(top("functions", "at least one function is required"));
        }
        let mut seen = HashMap::new();
        for (i, f) in self.functions.iter().enumerate() {
            let err = |field, reason: &str| SyntheticError {
                function: Some(i),
                field,
                reason: reason.into(),
            };
            if f.name.is_empty() {
                return Err(err("name", "must not be empty"));
            }
            if let Some(first) = seen.insert(f.name.as_str(), i) {
                return Err(err(
                    "name",
                    &format!("\"{}\" is also functions[{first}]", f.name),
                ));
            }
            if !(f.rate_per_s.is_finite() && f.rate_per_s >= 0.0) {
                return Err(err("rate_per_s", "must be a finite number >= 0"));
            }
            if !(f.duration_ms.is_finite()
                && f.duration_ms >= 0.0
                && f.duration_ms <= MAX_TIME_S * 1e3)
            {
                return Err(err("duration_ms", "must be a number >= 0 and at most 1e12"));
            }
            if !(f.sigma.is_finite() && f.sigma >= 0.0 && f.sigma <= MAX_SIGMA) {
                return Err(err("sigma", "must be a number >= 0 and at most 10"));
            }
            if f.sigma > 0.0 && f.duration_ms == 0.0 {
                return Err(err(
                    "duration_ms",
                    "must be > 0 when sigma > 0 (it is the median)",
                ));
            }
            if f.memory_mb == 0 {
                return Err(err("memory_mb", "must be >= 1"));
            }
            if f.app.as_deref() == Some("") {
                return Err(err("app", "must not be empty"));
            }
        }
        let expected: f64 =
            self.functions.iter().map(|f| f.rate_per_s).sum::<f64>() * self.duration_s;
        if expected > MAX_INVOCATIONS {
            return Err(top(
                "functions",
                &format!("the rates over duration_s make {expected:.3e} invocations; at most 1e10"),
            ));
        }
        Ok(())
    }
}

impl Trace {
    /// A synthetic trace from a validated-here `spec`; see the module docs. Its `source` is
    /// `synthetic` (callers may overwrite it with something more telling).
    pub fn synthetic(spec: &SyntheticSpec) -> Result<Trace, TraceError> {
        spec.validate().map_err(TraceError::Synthetic)?;
        let mut apps: Vec<App> = Vec::new();
        let mut app_index: HashMap<&str, usize> = HashMap::new();
        let mut functions = Vec::with_capacity(spec.functions.len());
        for f in &spec.functions {
            let app_name = f.app.as_deref().unwrap_or(&f.name);
            let a = *app_index.entry(app_name).or_insert_with(|| {
                apps.push(App {
                    name: app_name.to_owned(),
                    memory_mb: f.memory_mb,
                });
                apps.len() - 1
            });
            apps[a].memory_mb = apps[a].memory_mb.max(f.memory_mb);
            let duration = if f.sigma > 0.0 {
                DurationModel::LogNormal {
                    mu: (f.duration_ms / 1e3).ln(),
                    sigma: f.sigma,
                }
            } else {
                DurationModel::Fixed((f.duration_ms * 1e3).round() as u64)
            };
            functions.push(Function {
                name: f.name.clone(),
                app: AppId(super::id32(a, "synthetic")?),
                trigger: "synthetic".to_owned(),
                duration,
            });
        }
        Ok(Trace {
            format: TraceFormat::Synthetic,
            source: "synthetic".to_owned(),
            apps,
            functions,
            span_us: (spec.duration_s * 1e6).round() as u64,
            start_us: 0,
            apps_without_memory: 0,
            data_classes: spec.functions.iter().map(|f| f.data.clone()).collect(),
            body: Body::Poisson(PoissonRates {
                duration_us: (spec.duration_s * 1e6).round() as u64,
                rates_per_s: spec.functions.iter().map(|f| f.rate_per_s).collect(),
            }),
        })
    }
}

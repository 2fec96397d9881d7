//! Validation of a parsed scenario file into a [`Scenario`], and the line lookups that let every
//! error name the file, line and key: the document is also parsed into toml's spanned tree, and
//! an error's key path is looked up in it.

use std::path::{Path, PathBuf};

use sandstorm_placement::Policy;
use serde::Serialize;
use toml::de::DeValue;

use super::file::{Cluster, DataMode, DataSection, PeerSection, ScenarioFile, TraceSection};
use super::{KeepAliveSpec, MAX_LOAD_SCALE, PeerFigure, Scenario, ScenarioError, TraceSpec};
use crate::profile::DataSpec;
use crate::trace::{MAX_TIME_US, TraceFormat};

/// Most nodes a cluster may have (storage + compute); each is simulated in memory.
const MAX_NODES: u64 = 100_000;
/// Most cores a node may have.
const MAX_CORES: u32 = 4_096;
/// Largest value of any `[costs]` parameter (microseconds, ns per byte, Gbit/s or a ratio): 10^9
/// is 1,000 s as a time, and keeps every cost the engine turns into time far from overflow.
const MAX_COST: f64 = 1e9;

/// The dotted key path of the key or value whose span holds byte `offset` (empty if none). Table
/// headers' spans do not cover their bodies, so the whole document is searched.
pub(super) fn field_at(doc: &DeValue<'_>, offset: usize) -> String {
    fn walk(value: &DeValue<'_>, offset: usize, path: &mut Vec<String>) -> bool {
        let children: Vec<(String, bool, &DeValue<'_>, bool)> = match value {
            DeValue::Table(t) => t
                .iter()
                .map(|(k, v)| {
                    let hit = k.span().contains(&offset) || v.span().contains(&offset);
                    (k.get_ref().to_string(), true, v.get_ref(), hit)
                })
                .collect(),
            DeValue::Array(a) => a
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    (
                        format!("[{i}]"),
                        false,
                        v.get_ref(),
                        v.span().contains(&offset),
                    )
                })
                .collect(),
            _ => return false,
        };
        for (name, is_key, child, hit) in children {
            path.push(if is_key && !path.is_empty() {
                format!(".{name}")
            } else {
                name
            });
            if walk(child, offset, path) || hit {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = Vec::new();
    walk(doc, offset, &mut path);
    path.concat()
}

/// 1-based line of byte `offset` in `text`.
pub(super) fn line_at(text: &str, offset: usize) -> u64 {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count() as u64
        + 1
}

/// One step of a key path in the document.
#[derive(Debug, Clone, Copy)]
enum Seg<'s> {
    K(&'s str),
    I(usize),
}
use Seg::{I, K};

/// Validation context: the file, its text and its parsed document (for line numbers).
pub(super) struct Check<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) doc: DeValue<'a>,
}

impl Check<'_> {
    /// The error for the value at `at` (the line of the deepest part of `at` the file has).
    fn invalid(&self, at: &[Seg<'_>], reason: impl Into<String>) -> ScenarioError {
        let mut offset = 0;
        let mut value = &self.doc;
        for seg in at {
            let next = match seg {
                K(k) => value.get(*k),
                I(i) => value.get(*i),
            };
            let Some(next) = next else { break };
            offset = next.span().start;
            value = next.get_ref();
        }
        let field = at.iter().fold(String::new(), |mut s, seg| {
            match seg {
                K(k) if s.is_empty() => s.push_str(k),
                K(k) => {
                    s.push('.');
                    s.push_str(k);
                }
                I(i) => s.push_str(&format!("[{i}]")),
            }
            s
        });
        ScenarioError::Invalid {
            path: self.path.to_owned(),
            line: line_at(self.text, offset),
            field,
            reason: reason.into(),
        }
    }

    fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    pub(super) fn scenario(&self, raw: ScenarioFile) -> Result<Scenario, ScenarioError> {
        if raw.name.trim().is_empty() {
            return Err(self.invalid(&[K("name")], "must not be empty"));
        }
        if raw.policies.is_empty() {
            return Err(self.invalid(&[K("policies")], "at least one policy is required"));
        }
        for (i, name) in raw.policies.iter().enumerate() {
            if name.trim().is_empty() {
                return Err(self.invalid(&[K("policies"), I(i)], "must not be empty"));
            }
            // The message lists the known policies.
            if let Err(e) = name.parse::<Policy>() {
                return Err(self.invalid(&[K("policies"), I(i)], e.to_string()));
            }
        }
        if raw.keep_alive.is_empty() {
            return Err(self.invalid(
                &[K("keep_alive")],
                "at least one keep-alive policy is required",
            ));
        }
        let keep_alive = raw
            .keep_alive
            .iter()
            .enumerate()
            .map(|(i, s)| {
                KeepAliveSpec::parse(s).map_err(|e| self.invalid(&[K("keep_alive"), I(i)], e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if raw.load.scales.is_empty() {
            return Err(self.invalid(
                &[K("load"), K("scales")],
                "at least one load point is required",
            ));
        }
        if let Some(i) = raw
            .load
            .scales
            .iter()
            .position(|s| !(s.is_finite() && *s > 0.0 && *s <= MAX_LOAD_SCALE))
        {
            return Err(self.invalid(
                &[K("load"), K("scales"), I(i)],
                format!("must be a number > 0 and at most {MAX_LOAD_SCALE}"),
            ));
        }
        if !(raw.slo.slowdown.is_finite() && raw.slo.slowdown > 0.0) {
            return Err(self.invalid(&[K("slo"), K("slowdown")], "must be a finite number > 0"));
        }
        self.cluster(&raw.cluster)?;
        if raw.instances.concurrency == 0 {
            return Err(self.invalid(&[K("instances"), K("concurrency")], "must be >= 1"));
        }
        if raw.instances.pool_refill_us > MAX_TIME_US {
            return Err(self.invalid(
                &[K("instances"), K("pool_refill_us")],
                format!("must be at most {MAX_TIME_US} (about 32 years)"),
            ));
        }
        self.non_negative("costs", &raw.costs, Some(MAX_COST))?;
        self.non_negative("weights", &raw.weights, None)?;
        let trace = self.trace(&raw.trace)?;
        let data = self.data(&raw.data, &raw.trace)?;
        let peers = raw
            .peer
            .iter()
            .enumerate()
            .map(|(i, p)| self.peer(i, p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Scenario {
            path: self.path.to_owned(),
            name: raw.name,
            description: raw.description,
            seed: raw.seed,
            policies: raw.policies,
            keep_alive,
            bound: raw.bound,
            trace,
            cluster: raw.cluster,
            costs: raw.costs,
            weights: raw.weights,
            instances: raw.instances,
            data,
            load_scales: raw.load.scales,
            slo: raw.slo,
            peers,
        })
    }

    fn cluster(&self, c: &Cluster) -> Result<(), ScenarioError> {
        let at = |field| [K("cluster"), K(field)];
        if c.storage_nodes == 0 && c.compute_nodes == 0 {
            return Err(self.invalid(
                &[K("cluster")],
                "at least one storage or compute node is required",
            ));
        }
        if c.storage_nodes > 0 && c.storage_cores == 0 {
            return Err(self.invalid(&at("storage_cores"), "must be > 0 when storage_nodes > 0"));
        }
        if c.compute_nodes > 0 && c.compute_cores == 0 {
            return Err(self.invalid(&at("compute_cores"), "must be > 0 when compute_nodes > 0"));
        }
        if u64::from(c.storage_nodes) + u64::from(c.compute_nodes) > MAX_NODES {
            return Err(self.invalid(
                &[K("cluster")],
                format!("at most {MAX_NODES} nodes (storage_nodes + compute_nodes)"),
            ));
        }
        for field in ["storage_cores", "compute_cores"] {
            let cores = if field == "storage_cores" {
                c.storage_cores
            } else {
                c.compute_cores
            };
            if cores > MAX_CORES {
                return Err(self.invalid(&at(field), format!("at most {MAX_CORES} cores a node")));
            }
        }
        if c.compute_nodes > 0 && c.compute_memory_mb == 0 {
            return Err(self.invalid(
                &at("compute_memory_mb"),
                "must be > 0 when compute_nodes > 0",
            ));
        }
        Ok(())
    }

    /// Every numeric field of a `[costs]`/`[weights]`-like section is finite, >= 0 and at most
    /// `max` (when given).
    fn non_negative<T: Serialize>(
        &self,
        section: &str,
        value: &T,
        max: Option<f64>,
    ) -> Result<(), ScenarioError> {
        let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(value) else {
            // Non-finite floats serialise to JSON null, so this is not expected; be safe.
            return Err(self.invalid(&[K(section)], "every value must be a finite number >= 0"));
        };
        let upper = max.unwrap_or(f64::INFINITY);
        for (name, v) in &fields {
            let ok = v
                .as_f64()
                .is_some_and(|x| x.is_finite() && x >= 0.0 && x <= upper);
            if !ok && (v.is_number() || v.is_null()) {
                let reason = match max {
                    Some(max) => format!("must be a number >= 0 and at most {max:e}"),
                    None => "must be a finite number >= 0".to_owned(),
                };
                return Err(self.invalid(&[K(section), K(name)], reason));
            }
        }
        Ok(())
    }

    fn trace(&self, t: &TraceSection) -> Result<TraceSpec, ScenarioError> {
        let at = |field| [K("trace"), K(field)];
        let only = |field: &'static str, present: bool, formats: &str| {
            if present {
                Err(self.invalid(&at(field), format!("only allowed with format = {formats}")))
            } else {
                Ok(())
            }
        };
        only(
            "synthetic",
            t.synthetic.is_some() && t.format != TraceFormat::Synthetic,
            "\"synthetic\"",
        )?;
        only(
            "day",
            t.day.is_some() && t.format != TraceFormat::Azure2019,
            "\"azure2019\"",
        )?;
        only(
            "minutes",
            t.minutes.is_some() && t.format != TraceFormat::Azure2019,
            "\"azure2019\"",
        )?;
        let path = || match &t.path {
            Some(p) if !p.is_empty() => Ok(self.base_dir().join(p)),
            _ => Err(self.invalid(
                &at("path"),
                format!("required with format = \"{}\"", t.format),
            )),
        };
        match t.format {
            TraceFormat::Azure2019 => {
                let day = t.day.clone().unwrap_or_else(|| "d01".to_owned());
                if day.is_empty() || day.contains(['/', '\\']) {
                    return Err(self.invalid(&at("day"), "must be a day label such as \"d01\""));
                }
                let minutes = t.minutes.map(|[start, end]| (start, end));
                if let Some((start, end)) = minutes
                    && !(1 <= start && start < end && end <= 1440)
                {
                    return Err(self.invalid(
                        &at("minutes"),
                        "need [start, end] with 1 <= start < end <= 1440",
                    ));
                }
                Ok(TraceSpec::Azure2019 {
                    dir: path()?,
                    day,
                    minutes,
                })
            }
            TraceFormat::Azure2021 => Ok(TraceSpec::Azure2021 { file: path()? }),
            TraceFormat::Synthetic => {
                only("path", t.path.is_some(), "\"azure2019\" or \"azure2021\"")?;
                let Some(spec) = &t.synthetic else {
                    return Err(self.invalid(
                        &[K("trace")],
                        "format = \"synthetic\" needs a [trace.synthetic] section",
                    ));
                };
                spec.validate().map_err(|e| {
                    let mut at = vec![K("trace"), K("synthetic")];
                    if let Some(i) = e.function {
                        at.extend([K("functions"), I(i)]);
                    }
                    at.push(K(e.field));
                    self.invalid(&at, e.reason)
                })?;
                Ok(TraceSpec::Synthetic(spec.clone()))
            }
        }
    }

    fn data(&self, d: &DataSection, t: &TraceSection) -> Result<DataSpec, ScenarioError> {
        let at = |field| [K("data"), K(field)];
        if d.mode != DataMode::Generated && !d.classes.is_empty() {
            return Err(self.invalid(&at("classes"), "only allowed with mode = \"generated\""));
        }
        if d.mode != DataMode::File && d.file.is_some() {
            return Err(self.invalid(&at("file"), "only allowed with mode = \"file\""));
        }
        for (i, c) in d.classes.iter().enumerate() {
            c.check().map_err(|(field, reason)| {
                self.invalid(&[K("data"), K("classes"), I(i), K(field)], reason)
            })?;
            if c.compute_us.is_some_and(|us| us > MAX_TIME_US) {
                return Err(self.invalid(
                    &[K("data"), K("classes"), I(i), K("compute_us")],
                    format!("must be at most {MAX_TIME_US} (about 32 years)"),
                ));
            }
            if let Some(first) = d.classes[..i].iter().position(|o| o.name == c.name) {
                let reason = format!("\"{}\" is also classes[{first}]", c.name);
                return Err(self.invalid(&[K("data"), K("classes"), I(i), K("name")], reason));
            }
        }
        // A synthetic function's `data` must name a class of the generated mode.
        let synthetic = t
            .synthetic
            .iter()
            .flat_map(|s| s.functions.iter().enumerate());
        for (i, f) in synthetic {
            let Some(class) = &f.data else { continue };
            let at = [K("trace"), K("synthetic"), K("functions"), I(i), K("data")];
            if d.mode != DataMode::Generated {
                return Err(self.invalid(
                    &at,
                    format!("names data class \"{class}\", but [data] mode is not \"generated\""),
                ));
            }
            if !d.classes.iter().any(|c| &c.name == class) {
                let defined: Vec<&str> = d.classes.iter().map(|c| c.name.as_str()).collect();
                let reason = format!(
                    "unknown data class \"{class}\" (defined: {})",
                    defined.join(", ")
                );
                return Err(self.invalid(&at, reason));
            }
        }
        match d.mode {
            DataMode::None => Ok(DataSpec::None),
            DataMode::Generated => {
                if d.classes.is_empty() {
                    return Err(self.invalid(&[K("data")], "mode = \"generated\" needs classes"));
                }
                let total: f64 = d.classes.iter().map(|c| c.share).sum();
                if !(total > 0.0 && total.is_finite()) {
                    return Err(
                        self.invalid(&at("classes"), "the shares must sum to a finite number > 0")
                    );
                }
                Ok(DataSpec::Generated {
                    seed: d.seed,
                    classes: d.classes.clone(),
                })
            }
            DataMode::File => match &d.file {
                Some(f) if !f.is_empty() => Ok(DataSpec::File {
                    path: self.base_dir().join(f),
                }),
                _ => Err(self.invalid(&at("file"), "required with mode = \"file\"")),
            },
        }
    }

    fn peer(&self, i: usize, p: &PeerSection) -> Result<PeerFigure, ScenarioError> {
        let at = |field| [K("peer"), I(i), K(field)];
        let keep_alive =
            KeepAliveSpec::parse(&p.keep_alive).map_err(|e| self.invalid(&at("keep_alive"), e))?;
        if p.cold_starts > p.invocations {
            return Err(self.invalid(&at("cold_starts"), "must not exceed invocations"));
        }
        Ok(PeerFigure {
            keep_alive,
            source: p.source.clone(),
            cold_starts: p.cold_starts,
            invocations: p.invocations,
        })
    }
}

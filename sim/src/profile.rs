//! Per-function data-access profiles: what each function does with data, which the traces do not
//! say.
//!
//! Owns [`DataSpec`] (the validated `[data]` section of a scenario), [`DataClass`],
//! [`DataProfile`] and [`DataProfiles`], the table the engine consults per invocation. Modes:
//! - `none`: every function does no data access (a zero profile); its compute time is the trace's
//!   duration.
//! - `generated`: each function draws a class with probability proportional to the classes'
//!   `share` (a PCG generator seeded with the spec's seed; one draw per function, in function
//!   order, so the assignment is deterministic and one function's explicit class does not shift
//!   the others'); a synthetic function whose `data` field names a class gets that class.
//! - `file`: a CSV `function,accesses,rounds,bytes[,compute_us]` (columns by header name;
//!   `compute_us` may be absent or empty) keyed by function name; a row applies to every trace
//!   function of that name. A name the trace does not have is an error; trace functions the file
//!   does not name get the zero profile (counted by [`DataProfiles::unprofiled`]).
//!
//! Rules for a profile: `rounds <= accesses`, and at least one round when there are accesses.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use csv::ByteRecord;
use rand::{Rng, SeedableRng};
use rand_pcg::Pcg64Mcg;
use sandstorm_naming::FunctionId;
use serde::{Deserialize, Serialize};

use crate::trace::Trace;
use crate::trace::input::{CsvError, CsvFile};

/// What one invocation of a function does with data.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataProfile {
    /// Data accesses (gets/puts) per invocation.
    pub accesses: u32,
    /// Dependent rounds the accesses come in (each costs a round trip from a compute node).
    pub rounds: u32,
    /// Bytes read and written per invocation, over all its accesses.
    pub bytes: u64,
    /// Native compute time, us; `None`: the trace's duration is the compute time.
    pub compute_us: Option<u64>,
    /// The class it came from (`generated` mode).
    pub class: Option<String>,
}

static ZERO_PROFILE: DataProfile = DataProfile {
    accesses: 0,
    rounds: 0,
    bytes: 0,
    compute_us: None,
    class: None,
};

/// A data class of the `generated` mode, as written in `[data] classes = [...]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataClass {
    /// Unique, non-empty.
    pub name: String,
    /// Relative weight (>= 0, finite); the shares of all classes must sum to > 0.
    pub share: f64,
    pub accesses: u32,
    pub rounds: u32,
    pub bytes: u64,
    /// Native compute time, us; absent: the trace's duration.
    #[serde(default)]
    pub compute_us: Option<u64>,
}

impl DataClass {
    /// The first field out of range, as (field, reason).
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        if self.name.is_empty() {
            return Err(("name", "must not be empty".into()));
        }
        if !(self.share.is_finite() && self.share >= 0.0) {
            return Err(("share", "must be a finite number >= 0".into()));
        }
        check_rounds(self.accesses, self.rounds).map_err(|reason| ("rounds", reason))
    }

    fn profile(&self) -> DataProfile {
        DataProfile {
            accesses: self.accesses,
            rounds: self.rounds,
            bytes: self.bytes,
            compute_us: self.compute_us,
            class: Some(self.name.clone()),
        }
    }
}

/// Most data accesses one invocation may make (each is simulated as work on a storage node).
pub const MAX_ACCESSES: u32 = 1_000_000;

/// Values the simulator's microsecond clock and event counts can take.
fn check_limits(accesses: u32, compute_us: Option<u64>) -> Result<(), (&'static str, String)> {
    if accesses > MAX_ACCESSES {
        return Err((
            "accesses",
            format!("{accesses} is more than the limit of {MAX_ACCESSES}"),
        ));
    }
    if let Some(c) = compute_us.filter(|c| *c > crate::trace::MAX_TIME_US) {
        let max = crate::trace::MAX_TIME_US;
        return Err((
            "compute_us",
            format!("{c} us is more than the limit of {max} us"),
        ));
    }
    Ok(())
}

fn check_rounds(accesses: u32, rounds: u32) -> Result<(), String> {
    if rounds > accesses {
        return Err(format!(
            "{rounds} rounds for {accesses} accesses: need rounds <= accesses"
        ));
    }
    if accesses > 0 && rounds == 0 {
        return Err(format!("{accesses} accesses need at least one round"));
    }
    Ok(())
}

/// The validated `[data]` section; see the module docs.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum DataSpec {
    #[default]
    None,
    Generated {
        seed: u64,
        classes: Vec<DataClass>,
    },
    /// A CSV of profiles by function name (path already resolved).
    File {
        path: PathBuf,
    },
}

/// Why profiles could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profiles file is missing, unreadable or malformed.
    #[error(transparent)]
    Input(#[from] CsvError),
    /// The file names a function the trace does not have.
    #[error("{}:{line}: column \"function\": unknown function \"{name}\" (not in the trace)", path.display())]
    UnknownFunction {
        path: PathBuf,
        line: u64,
        name: String,
    },
    /// The file names a function twice.
    #[error("{}:{line}: column \"function\": \"{name}\" is already profiled on line {first}", path.display())]
    Duplicate {
        path: PathBuf,
        line: u64,
        name: String,
        first: u64,
    },
    /// A row's values are inconsistent.
    #[error("{}:{line}: column \"{column}\": {reason}", path.display())]
    Invalid {
        path: PathBuf,
        line: u64,
        column: &'static str,
        reason: String,
    },
    /// A synthetic function names a class the spec does not define.
    #[error("function \"{function}\": unknown data class \"{class}\" (defined: {defined})")]
    UnknownClass {
        function: String,
        class: String,
        defined: String,
    },
    /// The generated mode's classes are unusable.
    #[error("data classes: {0}")]
    Classes(String),
}

/// The profile of every function of a trace.
#[derive(Debug, Clone, Default)]
pub struct DataProfiles {
    profiles: Vec<DataProfile>,
    unprofiled: usize,
}

impl DataProfiles {
    /// Builds the profiles of `trace`'s functions from `spec`; see the module docs.
    pub fn build(spec: &DataSpec, trace: &Trace) -> Result<Self, ProfileError> {
        let n = trace.functions.len();
        match spec {
            DataSpec::None => Ok(Self {
                profiles: vec![DataProfile::default(); n],
                unprofiled: 0,
            }),
            DataSpec::Generated { seed, classes } => generated(*seed, classes, trace),
            DataSpec::File { path } => from_file(path, trace),
        }
    }

    /// The profile of `function` (the zero profile for an id outside the trace).
    pub fn get(&self, function: FunctionId) -> &DataProfile {
        self.profiles
            .get(function.0 as usize)
            .unwrap_or(&ZERO_PROFILE)
    }

    /// Number of functions profiled (the trace's function count).
    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// `file` mode: trace functions the file does not name (they got the zero profile).
    pub fn unprofiled(&self) -> usize {
        self.unprofiled
    }

    /// Functions per class name (`generated` mode), sorted by name.
    pub fn class_counts(&self) -> Vec<(String, usize)> {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for class in self.profiles.iter().filter_map(|p| p.class.as_deref()) {
            *counts.entry(class).or_default() += 1;
        }
        let mut out: Vec<(String, usize)> =
            counts.into_iter().map(|(c, n)| (c.to_owned(), n)).collect();
        out.sort();
        out
    }
}

fn generated(
    seed: u64,
    classes: &[DataClass],
    trace: &Trace,
) -> Result<DataProfiles, ProfileError> {
    for class in classes {
        class.check().map_err(|(field, reason)| {
            ProfileError::Classes(format!("class \"{}\": {field}: {reason}", class.name))
        })?;
    }
    let total: f64 = classes.iter().map(|c| c.share).sum();
    if !(total > 0.0 && total.is_finite()) {
        return Err(ProfileError::Classes(
            "the shares must sum to a finite number > 0".into(),
        ));
    }
    let by_name: HashMap<&str, &DataClass> = classes.iter().map(|c| (c.name.as_str(), c)).collect();
    let mut rng = Pcg64Mcg::seed_from_u64(seed);
    let mut profiles = Vec::with_capacity(trace.functions.len());
    for (i, function) in trace.functions.iter().enumerate() {
        let x = rng.random::<f64>() * total;
        let drawn = pick(classes, x);
        let id = FunctionId(u32::try_from(i).unwrap_or(u32::MAX));
        let class = match trace.function_data_class(id) {
            None => drawn,
            Some(name) => by_name
                .get(name)
                .copied()
                .ok_or_else(|| ProfileError::UnknownClass {
                    function: function.name.clone(),
                    class: name.to_owned(),
                    defined: classes
                        .iter()
                        .map(|c| c.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
        };
        profiles.push(class.profile());
    }
    Ok(DataProfiles {
        profiles,
        unprofiled: 0,
    })
}

/// The class whose cumulative share band holds `x` (in `[0, total)`); classes with share 0 are
/// never picked. `classes` is non-empty with a positive total.
fn pick(classes: &[DataClass], x: f64) -> &DataClass {
    let mut upper = 0.0;
    let mut last = &classes[0];
    for class in classes.iter().filter(|c| c.share > 0.0) {
        upper += class.share;
        last = class;
        if x < upper {
            return class;
        }
    }
    last // rounding at the very top of the range
}

fn from_file(path: &Path, trace: &Trace) -> Result<DataProfiles, ProfileError> {
    let mut file = CsvFile::open(path, "function,accesses,rounds,bytes,compute_us")?;
    let name_col = file.column("function")?;
    let accesses_col = file.column("accesses")?;
    let rounds_col = file.column("rounds")?;
    let bytes_col = file.column("bytes")?;
    let compute_col = file.find("compute_us");

    let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, f) in trace.functions.iter().enumerate() {
        by_name.entry(f.name.as_str()).or_default().push(i);
    }
    let mut profiles = vec![DataProfile::default(); trace.functions.len()];
    let mut seen: HashMap<String, u64> = HashMap::new();
    let mut record = ByteRecord::new();
    while let Some(line) = file.next_row(&mut record)? {
        let name = file.text(&record, line, name_col)?;
        let accesses = file.u32(&record, line, accesses_col)?;
        let rounds = file.u32(&record, line, rounds_col)?;
        let bytes = file.u64(&record, line, bytes_col)?;
        let compute_us = match compute_col {
            Some(col) if !record.get(col).unwrap_or_default().trim_ascii().is_empty() => {
                Some(file.u64(&record, line, col)?)
            }
            _ => None,
        };
        let err_path = || path.to_owned();
        check_rounds(accesses, rounds).map_err(|reason| ProfileError::Invalid {
            path: err_path(),
            line,
            column: "rounds",
            reason,
        })?;
        check_limits(accesses, compute_us).map_err(|(column, reason)| ProfileError::Invalid {
            path: err_path(),
            line,
            column,
            reason,
        })?;
        let Some(ids) = by_name.get(name) else {
            return Err(ProfileError::UnknownFunction {
                path: err_path(),
                line,
                name: name.into(),
            });
        };
        if let Some(&first) = seen.get(name) {
            return Err(ProfileError::Duplicate {
                path: err_path(),
                line,
                name: name.into(),
                first,
            });
        }
        seen.insert(name.to_owned(), line);
        for &i in ids {
            profiles[i] = DataProfile {
                accesses,
                rounds,
                bytes,
                compute_us,
                class: None,
            };
        }
    }
    let unprofiled = trace
        .functions
        .iter()
        .filter(|f| !seen.contains_key(&f.name))
        .count();
    Ok(DataProfiles {
        profiles,
        unprofiled,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, share: f64) -> DataClass {
        DataClass {
            name: name.into(),
            share,
            accesses: 1,
            rounds: 1,
            bytes: 0,
            compute_us: None,
        }
    }

    #[test]
    fn pick_follows_cumulative_shares() {
        // shares 1, 0, 3 -> bands [0,1) a, b never, [1,4) c.
        let classes = [class("a", 1.0), class("b", 0.0), class("c", 3.0)];
        let cases = [
            (0.0, "a"),
            (0.999, "a"),
            (1.0, "c"),
            (3.999, "c"),
            (4.0, "c"),
        ];
        for (x, want) in cases {
            assert_eq!(pick(&classes, x).name, want, "x = {x}");
        }
    }

    #[test]
    fn rounds_rules() {
        // (accesses, rounds, ok)
        for (a, r, ok) in [
            (0, 0, true),
            (4, 1, true),
            (4, 4, true),
            (4, 5, false),
            (4, 0, false),
        ] {
            assert_eq!(check_rounds(a, r).is_ok(), ok, "{a} accesses, {r} rounds");
        }
    }
}

//! The Azure Functions 2021 reader: one CSV row per invocation, `app,func,end_timestamp,duration`
//! (seconds, floats; columns located by header name).
//!
//! As DSLab FaaS does (`dslab-faas/src/extra/azure_trace_2021.rs`): arrival = end - duration,
//! clamped to >= 0, and the recorded duration is kept but clamped to >= 1 ms. Each distinct `app`
//! is an [`App`] with [`DEFAULT_MEMORY_MB`] (all counted in
//! [`Trace::apps_without_memory`]) (the trace has no memory; DSLab draws it from the
//! same Burr fit whose median that is), each distinct (app, func) a [`Function`] with
//! [`DurationModel::Recorded`], both numbered in order of first appearance. Records are sorted by
//! arrival (then function, then duration). Times are kept as the file gives them, so the window
//! is `[0, latest end)`. Load scaling copies an invocation at the same instant with the same
//! duration (no jitter).

use std::collections::HashMap;
use std::path::Path;

use csv::ByteRecord;
use sandstorm_naming::AppId;

use super::input::{CsvError, CsvFile};
use super::{
    App, Body, DEFAULT_MEMORY_MB, DurationModel, Function, MAX_TIME_S, Record, Trace, TraceError,
    TraceFormat, id32,
};

/// Shortest recorded duration kept, microseconds (DSLab's 1 ms).
const MIN_DURATION_US: u64 = 1_000;

impl Trace {
    /// Reads an Azure 2021 invocation trace from `file`; see the module docs.
    pub fn load_azure2021(file: &Path) -> Result<Trace, TraceError> {
        let mut csv = CsvFile::open(file, "app,func,end_timestamp,duration")?;
        let app_col = csv.column("app")?;
        let func_col = csv.column("func")?;
        let end_col = csv.column("end_timestamp")?;
        let duration_col = csv.column("duration")?;
        let source = file.display().to_string();

        let mut apps: Vec<App> = Vec::new();
        let mut app_index: HashMap<String, u32> = HashMap::new();
        let mut functions: Vec<Function> = Vec::new();
        let mut function_index: HashMap<(u32, String), u32> = HashMap::new();
        let mut records = Vec::new();
        let mut end_us_max = 0u64;
        let mut record = ByteRecord::new();
        while let Some(line) = csv.next_row(&mut record)? {
            let end_s = seconds(&csv, &record, line, end_col)?;
            let duration_s = seconds(&csv, &record, line, duration_col)?;
            let app_name = csv.text(&record, line, app_col)?;
            let app = match app_index.get(app_name) {
                Some(&id) => id,
                None => {
                    let id = id32(apps.len(), &source)?;
                    apps.push(App {
                        name: app_name.to_owned(),
                        memory_mb: DEFAULT_MEMORY_MB,
                    });
                    app_index.insert(app_name.to_owned(), id);
                    id
                }
            };
            let func_name = csv.text(&record, line, func_col)?;
            let function = match function_index.get(&(app, func_name.to_owned())) {
                Some(&id) => id,
                None => {
                    let id = id32(functions.len(), &source)?;
                    functions.push(Function {
                        name: func_name.to_owned(),
                        app: AppId(app),
                        trigger: "unknown".to_owned(),
                        duration: DurationModel::Recorded,
                    });
                    function_index.insert((app, func_name.to_owned()), id);
                    id
                }
            };
            let at_us = seconds_to_us((end_s - duration_s).max(0.0));
            let duration_us = seconds_to_us(duration_s).max(MIN_DURATION_US);
            end_us_max = end_us_max.max(at_us.saturating_add(duration_us));
            records.push(Record {
                at_us,
                function,
                duration_us,
            });
        }
        if records.is_empty() {
            return Err(CsvError::NoRows {
                path: file.to_owned(),
            }
            .into());
        }
        records.sort_unstable();
        let data_classes = vec![None; functions.len()];
        Ok(Trace {
            format: TraceFormat::Azure2021,
            source,
            apps_without_memory: apps.len(),
            apps,
            functions,
            span_us: end_us_max,
            start_us: 0,
            data_classes,
            body: Body::Records(records),
        })
    }
}

/// Field `col` as a number of seconds in `0..=MAX_TIME_S`.
fn seconds(csv: &CsvFile, record: &ByteRecord, line: u64, col: usize) -> Result<f64, CsvError> {
    let s = csv.non_negative(record, line, col)?;
    if s > MAX_TIME_S {
        let raw = record.get(col).unwrap_or_default();
        return Err(csv.bad(line, col, raw, "a number of seconds up to 1e9"));
    }
    Ok(s)
}

/// Seconds (finite, >= 0) to whole microseconds, rounded; saturates at `u64::MAX`.
pub(super) fn seconds_to_us(seconds: f64) -> u64 {
    (seconds * 1e6).round() as u64
}

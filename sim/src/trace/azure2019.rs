//! The Azure Functions 2019 reader (three files per day, labelled `dNN`).
//!
//! Follows DSLab FaaS's expansion (`dslab-faas/src/extra/azure_trace_2019.rs`), whose keep-alive
//! figures we compare with: per-minute counts from `invocations_per_function_md.anon.dNN.csv`,
//! durations from the percentile columns of `function_durations_percentiles.anon.dNN.csv` (step
//! rule, see [`DurationModel::Percentiles`]), memory per app (HashOwner, HashApp) from the last
//! column of `app_memory_percentiles.anon.dNN.csv` (`AverageAllocatedMb_pct100`, the maximum,
//! rounded up to a whole MB >= 1). Differences from DSLab, all deliberate:
//! - apps without a memory row are kept (DSLab drops them) with the median memory of the trace's
//!   known apps ([`DEFAULT_MEMORY_MB`] if none is known), counted in
//!   [`Trace::apps_without_memory`];
//! - a function listed twice in the invocations file is one function whose counts add up;
//! - a duplicated duration row: the last one wins (as in DSLab); duplicated memory rows: the
//!   largest value wins (as DSLab does across days).
//!
//! Columns are located by header name; every minute column of the window must be present.

use std::collections::HashMap;
use std::path::Path;

use csv::ByteRecord;
use sandstorm_naming::AppId;

use super::input::{CsvError, CsvFile};
use super::{
    App, Body, DEFAULT_MEMORY_MB, DurationModel, Function, MAX_TIME_S, MinuteCounts, Trace,
    TraceError, TraceFormat, id32,
};

/// Minutes in a trace day.
const DAY_MINUTES: u32 = 1440;
const US_PER_MINUTE: u64 = 60_000_000;
/// The ATC'20 log-normal fit of durations (seconds), for functions without a durations row.
const FALLBACK_DURATION: DurationModel = DurationModel::LogNormal {
    mu: -0.38,
    sigma: 2.36,
};
const PERCENTILE_COLUMNS: [&str; 7] = [
    "percentile_Average_0",
    "percentile_Average_1",
    "percentile_Average_25",
    "percentile_Average_50",
    "percentile_Average_75",
    "percentile_Average_99",
    "percentile_Average_100",
];
const MEMORY_COLUMN: &str = "AverageAllocatedMb_pct100";

impl Trace {
    /// Reads day `day` (e.g. `d01`) of an Azure 2019 trace from `dir`. `minutes` is an optional
    /// window of 1-based minute columns `[start, end)` (default: the whole day); times stay
    /// absolute (minute `m` covers `[60(m-1), 60m)` s), see [`Trace::start_us`].
    pub fn load_azure2019(
        dir: &Path,
        day: &str,
        minutes: Option<(u32, u32)>,
    ) -> Result<Trace, TraceError> {
        if day.is_empty() || day.contains(['/', '\\']) {
            return Err(TraceError::Day {
                day: day.to_owned(),
            });
        }
        let (start, end) = minutes.unwrap_or((1, DAY_MINUTES + 1));
        if start < 1 || start >= end || end > DAY_MINUTES + 1 {
            return Err(TraceError::Window { start, end });
        }
        let mut inv = read_invocations(
            &dir.join(format!("invocations_per_function_md.anon.{day}.csv")),
            start,
            end,
        )?;
        let durations = read_durations(
            &dir.join(format!("function_durations_percentiles.anon.{day}.csv")),
            &inv.function_index,
        )?;
        let memory = read_memory(
            &dir.join(format!("app_memory_percentiles.anon.{day}.csv")),
            &inv.app_index,
        )?;

        let mut known: Vec<u32> = memory.iter().flatten().copied().collect();
        known.sort_unstable();
        let default_mb = known
            .get(known.len() / 2)
            .copied()
            .unwrap_or(DEFAULT_MEMORY_MB);
        let apps_without_memory = memory.iter().filter(|m| m.is_none()).count();
        let apps = std::mem::take(&mut inv.app_names)
            .into_iter()
            .zip(&memory)
            .map(|(name, mb)| App {
                name,
                memory_mb: mb.unwrap_or(default_mb),
            })
            .collect();
        let functions: Vec<Function> = std::mem::take(&mut inv.functions)
            .into_iter()
            .zip(durations)
            .map(|(f, d)| Function {
                name: f.name,
                app: AppId(f.app),
                trigger: f.trigger,
                duration: d.map_or(FALLBACK_DURATION, DurationModel::Percentiles),
            })
            .collect();
        let data_classes = vec![None; functions.len()];
        Ok(Trace {
            format: TraceFormat::Azure2019,
            source: format!("{} ({day})", dir.display()),
            apps,
            functions,
            span_us: u64::from(end - start) * US_PER_MINUTE,
            start_us: u64::from(start - 1) * US_PER_MINUTE,
            apps_without_memory,
            data_classes,
            body: Body::Minutes(inv.counts(start, end)),
        })
    }
}

/// A function as the invocations file names it.
struct FunctionRow {
    name: String,
    app: u32,
    trigger: String,
}

/// What the invocations file holds.
#[derive(Default)]
struct Invocations {
    app_names: Vec<String>,
    /// `owner \n app` -> app index.
    app_index: HashMap<String, u32>,
    functions: Vec<FunctionRow>,
    /// `owner \n app \n function` -> function index.
    function_index: HashMap<String, u32>,
    /// (minute within the window, function, count), count > 0, in file order.
    cells: Vec<(u32, u32, u32)>,
    total: u64,
}

impl Invocations {
    /// The sparse matrix of the window `[start, end)`: a counting sort of the cells by minute.
    fn counts(&self, start: u32, end: u32) -> MinuteCounts {
        let width = (end - start) as usize;
        let mut offsets = vec![0usize; width + 1];
        for &(minute, _, _) in &self.cells {
            offsets[minute as usize + 1] += 1;
        }
        for k in 0..width {
            offsets[k + 1] += offsets[k];
        }
        let mut fill = offsets.clone();
        let mut entries = vec![(0u32, 0u32); self.cells.len()];
        for &(minute, function, count) in &self.cells {
            let slot = &mut fill[minute as usize];
            entries[*slot] = (function, count);
            *slot += 1;
        }
        MinuteCounts {
            first_minute: start - 1,
            offsets,
            entries,
            total: self.total,
        }
    }
}

fn read_invocations(path: &Path, start: u32, end: u32) -> Result<Invocations, TraceError> {
    let mut file = CsvFile::open(path, "HashOwner,HashApp,HashFunction,Trigger,1..1440")?;
    let owner = file.column("HashOwner")?;
    let app = file.column("HashApp")?;
    let func = file.column("HashFunction")?;
    let trigger = file.column("Trigger")?;
    for m in start..end {
        file.column(&m.to_string())?;
    }
    // Every minute column present (validated even outside the window), with its minute.
    let minute_cols: Vec<(usize, u32)> = file
        .header()
        .iter()
        .enumerate()
        .filter_map(|(col, name)| {
            let m: u32 = name.parse().ok()?;
            (1..=DAY_MINUTES).contains(&m).then_some((col, m))
        })
        .collect();
    let source = path.display().to_string();
    let mut inv = Invocations::default();
    let mut record = ByteRecord::new();
    let mut key = String::new();
    while let Some(line) = file.next_row(&mut record)? {
        key.clear();
        key.push_str(file.text(&record, line, owner)?);
        key.push('\n');
        key.push_str(file.text(&record, line, app)?);
        let app_id = match inv.app_index.get(&key) {
            Some(&id) => id,
            None => {
                let id = id32(inv.app_names.len(), &source)?;
                inv.app_names
                    .push(file.text(&record, line, app)?.to_owned());
                inv.app_index.insert(key.clone(), id);
                id
            }
        };
        key.push('\n');
        key.push_str(file.text(&record, line, func)?);
        let function = match inv.function_index.get(&key) {
            Some(&id) => id,
            None => {
                let id = id32(inv.functions.len(), &source)?;
                inv.functions.push(FunctionRow {
                    name: file.text(&record, line, func)?.to_owned(),
                    app: app_id,
                    trigger: file.text(&record, line, trigger)?.to_owned(),
                });
                inv.function_index.insert(key.clone(), id);
                id
            }
        };
        for &(col, m) in &minute_cols {
            let count = file.u32(&record, line, col)?;
            if count > 0 && (start..end).contains(&m) {
                inv.cells.push((m - start, function, count));
                inv.total += u64::from(count);
            }
        }
    }
    if inv.functions.is_empty() {
        return Err(CsvError::NoRows {
            path: path.to_owned(),
        }
        .into());
    }
    Ok(inv)
}

/// Percentiles (ms) per function of the invocations file; `None` where no row names it.
fn read_durations(
    path: &Path,
    index: &HashMap<String, u32>,
) -> Result<Vec<Option<[f64; 7]>>, TraceError> {
    let mut file = CsvFile::open(
        path,
        "HashOwner,HashApp,HashFunction,...,percentile_Average_0,..,percentile_Average_100",
    )?;
    let key_cols = [
        file.column("HashOwner")?,
        file.column("HashApp")?,
        file.column("HashFunction")?,
    ];
    let mut value_cols = [0usize; 7];
    for (slot, name) in value_cols.iter_mut().zip(PERCENTILE_COLUMNS) {
        *slot = file.column(name)?;
    }
    let mut out = vec![None; index.len()];
    let mut record = ByteRecord::new();
    let mut key = String::new();
    while let Some(line) = file.next_row(&mut record)? {
        let mut values = [0.0; 7];
        for (value, &col) in values.iter_mut().zip(&value_cols) {
            *value = file.non_negative(&record, line, col)?;
            if *value > MAX_TIME_S * 1e3 {
                let raw = record.get(col).unwrap_or_default();
                return Err(file.bad(line, col, raw, "a duration up to 1e12 ms").into());
            }
        }
        join_key(&file, &record, line, &key_cols, &mut key)?;
        if let Some(&f) = index.get(&key) {
            out[f as usize] = Some(values);
        }
    }
    Ok(out)
}

/// Memory (MB, rounded up, >= 1) per app of the invocations file; `None` where no row names it.
fn read_memory(path: &Path, index: &HashMap<String, u32>) -> Result<Vec<Option<u32>>, TraceError> {
    let mut file = CsvFile::open(path, "HashOwner,HashApp,...,AverageAllocatedMb_pct100")?;
    let key_cols = [file.column("HashOwner")?, file.column("HashApp")?];
    let value_col = file.column(MEMORY_COLUMN)?;
    let mut out: Vec<Option<u32>> = vec![None; index.len()];
    let mut record = ByteRecord::new();
    let mut key = String::new();
    while let Some(line) = file.next_row(&mut record)? {
        let mb = file.non_negative(&record, line, value_col)?;
        if mb > f64::from(u32::MAX) {
            let raw = record.get(value_col).unwrap_or_default();
            return Err(file
                .bad(line, value_col, raw, "a memory size below 2^32 MB")
                .into());
        }
        let mb = (mb.ceil() as u32).max(1);
        join_key(&file, &record, line, &key_cols, &mut key)?;
        if let Some(&a) = index.get(&key) {
            let slot = &mut out[a as usize];
            *slot = Some(slot.map_or(mb, |old| old.max(mb)));
        }
    }
    Ok(out)
}

/// Joins the key columns of a row with newlines into `key`.
fn join_key(
    file: &CsvFile,
    record: &ByteRecord,
    line: u64,
    cols: &[usize],
    key: &mut String,
) -> Result<(), CsvError> {
    key.clear();
    for (i, &col) in cols.iter().enumerate() {
        if i > 0 {
            key.push('\n');
        }
        key.push_str(file.text(record, line, col)?);
    }
    Ok(())
}

//! `sandstorm sim`: replay a trace scenario under placement and keep-alive policies.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use sandstorm_scheduler::placement::Policy;
use sandstorm_sim::driver::{Progress, SimOptions, run_scenario};
use sandstorm_sim::report::{
    SimReport, csv::to_csv, html::to_html, json::to_json, table::render_table,
};
use sandstorm_sim::scenario::Scenario;

/// Replay a serverless trace on a simulated cluster, with the scheduler's own placement code.
///
/// A scenario file (TOML) names the trace, the cluster, the policies and the load points; see
/// sim/scenarios/ for three worked examples:
///
///   keepalive-azure500.toml  keep-alive policies on 8 h of real Azure traffic, beside DSLab FaaS
///   locality-mix.toml        data-heavy and CPU-heavy functions, storage vs compute, swept over load
///   azure1000-day.toml       a full day of 1,000 functions on 400 hosts
///
/// Every run prints a table; --json, --csv and --html also write the report to files.
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct SimArgs {
    /// The scenario file, e.g. sim/scenarios/keepalive-azure500.toml.
    #[arg(long, value_name = "FILE")]
    scenario: PathBuf,
    // The help lists the scheduler's own policy names, so it cannot drift from them. Names are
    // checked in `run` (not by a clap value parser) so a bad one exits 1 like any other error.
    #[arg(long = "policy", value_name = "NAME", help = policy_help())]
    policies: Vec<String>,
    /// Seed for every random choice (arrival spread, durations, data classes); the same seed gives
    /// the same report. Default: the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Write the report as JSON (the schema is in sim/REPORT.md).
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Write one CSV row per run.
    #[arg(long, value_name = "FILE")]
    csv: Option<PathBuf>,
    /// Write a self-contained HTML report with plots.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    /// Worker threads for independent runs (default: one per core).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// `--policy`'s help: what it does and every policy the scheduler knows.
fn policy_help() -> String {
    format!(
        "Placement policy to run (repeat for several); default: every policy the scenario \
         lists. Known: {}",
        Policy::names().join(", ")
    )
}

pub fn run(args: &SimArgs) -> anyhow::Result<()> {
    for name in &args.policies {
        name.parse::<Policy>()
            .with_context(|| format!("--policy {name}"))?;
    }
    check_outputs(args)?;
    let scenario = Scenario::load(&args.scenario)?;
    let options = SimOptions {
        policies: args.policies.clone(),
        seed: args.seed,
        threads: args.threads,
    };
    let progress = Progress::default();
    let report = std::thread::scope(|s| {
        let worker = s.spawn(|| run_scenario(&scenario, &options, &progress));
        if !args.quiet {
            show_progress(&progress, &worker);
        }
        worker
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the simulation thread panicked")))
    })?;
    print!("{}", render_table(&report));
    write_outputs(args, &report)
}

/// A progress bar over simulated arrivals, redrawn until the worker is done.
fn show_progress<T>(progress: &Progress, worker: &std::thread::ScopedJoinHandle<'_, T>) {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} invocations ({per_sec}, eta {eta})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    while !worker.is_finished() {
        bar.set_length(progress.total.load(Ordering::Relaxed));
        bar.set_position(progress.done.load(Ordering::Relaxed));
        std::thread::sleep(Duration::from_millis(100));
    }
    bar.finish_and_clear();
}

/// Renders a report in one output form.
type Render = fn(&SimReport) -> String;

/// The output flags: each one's name, the file it names (if given) and its renderer.
fn outputs(args: &SimArgs) -> [(&'static str, Option<&Path>, Render); 3] {
    [
        ("--json", args.json.as_deref(), to_json),
        ("--csv", args.csv.as_deref(), to_csv),
        ("--html", args.html.as_deref(), to_html),
    ]
}

/// Fails before the simulation, not after it, when a report could not be written: its directory
/// does not exist, or the path is a directory. (Other write errors still surface at the end.)
fn check_outputs(args: &SimArgs) -> anyhow::Result<()> {
    for (flag, path, _) in outputs(args) {
        let Some(path) = path else { continue };
        if path.is_dir() {
            anyhow::bail!("{flag} {}: is a directory, not a file", path.display());
        }
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "{flag} {}: directory {} does not exist",
                path.display(),
                dir.display()
            );
        }
    }
    Ok(())
}

fn write_outputs(args: &SimArgs, report: &SimReport) -> anyhow::Result<()> {
    for (flag, path, render) in outputs(args) {
        let Some(path) = path else { continue };
        std::fs::write(path, render(report))
            .with_context(|| format!("{flag}: writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

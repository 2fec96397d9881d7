//! `sandstorm bench`: whole-system figures, each printed beside the peer it is compared with.
//!
//! Every bench subcommand measures a few [`Figure`]s, pairs each with a target and a peer figure
//! ([`Row`]), prints them as one table (figure, ours, target, peer, vs peer, verdict) and, with
//! `--json FILE`, writes `{"bench": NAME, "figures": [...]}` where each figure is
//! `{"name", "unit", "p50", "p99", "mean", "n"}` (a throughput or a single measurement puts its
//! value in `mean` and leaves the percentiles `null`).
//!
//! Adding a bench: a variant of [`BenchCommand`] whose arguments flatten [`CommonArgs`], a module
//! below whose `run` returns a [`BenchOutput`], and one arm in [`run`]. The shared printing and
//! JSON writing is [`finish`].
//!
//! Peer figures that were not measured in the same run (a published number) say so, in the table
//! and in a note under it: the conventions ask for peers measured in the same run where possible.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::{Deserialize, Serialize};

/// Whole-system benchmarks, each printed beside the peer system it is compared with.
#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    command: BenchCommand,
}

/// The benchmarks.
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// The simulator: keep-alive replay throughput on one core, and a full-day replay's wall
    /// time and peak memory, beside DSLab FaaS.
    ///
    /// keepalive: sim/scenarios/keepalive-azure500.toml (3.0 M invocations, 8 h of Azure 2019),
    ///   least-loaded placement, fixed 10 min keep-alive, one worker thread, --repeat times;
    ///   figure: simulated invocations per second of wall time (median). Target >= 3 M/s.
    ///   Then the same under the file's own first policy and keep-alive (first-fit,
    ///   fixed-lifetime:10m: DSLab FaaS's settings), shown beside DSLab FaaS's 0.66 M/s
    ///   (published, not measured here: its source is printed, no ratio).
    /// day: sim/scenarios/azure1000-day.toml (11.6 M invocations on 400 hosts), its own
    ///   policies, all cores, in a child process so its peak memory (VmHWM) is its own;
    ///   figures: wall time (target < 15 s) and peak memory (target < 1 GiB). DSLab FaaS's
    ///   quoted 95 s and 4.9 GB are of unrecorded settings: a labelled extra note, no peer.
    #[command(verbatim_doc_comment)]
    Sim(sim::SimBenchArgs),
    /// The storage node: functions next to the data, beside remote data access.
    ///
    /// storage.invoke_warm: kv-sum of 1 key, instantiate + run, measured inside the node by the
    ///   worker (target p50 < 5 us).
    /// storage.host_get: one kv_get host call from a guest loop, 8-byte value (target < 200 ns).
    /// storage.graph_walk_in_storage: graph-walk of 8 dependent hops inside the node, vs
    ///   storage.graph_walk_remote: the same walk by a client on this machine doing 8 gRPC Gets
    ///   over loopback (target: in storage at least 10x faster; both measured in this run).
    /// storage.instance_extra_memory: resident memory each extra concurrent instance adds,
    ///   beyond its linear memory (target < 256 KiB; SAND: 1.1 MB per forked process,
    ///   OpenWhisk: 14 MB per container, published).
    #[command(verbatim_doc_comment)]
    Storage(storage::StorageBenchArgs),
    /// The compute node: time from request to the function running, beside runc (needs root).
    ///
    /// provision.warm: a process forked by the template of a warm container.
    /// provision.assembled: a WebAssembly function's container assembled from pooled parts
    ///   (target: p50 at most 1 ms).
    /// provision.from_scratch: every part built on the critical path (what the pools remove).
    /// provision.warm_native, provision.assembled_native: the same with a native program
    ///   (`/bin/echo ready`), judged against runc running that program (target: assembled
    ///   at least 40x faster).
    /// provision.runc: `runc run` of the same root file system, namespaces and limits.
    /// provision.fork_extra_memory: memory each extra concurrent invocation adds in a warm
    ///   container (target < 2 MB).
    /// Running = the function reports it runs (WebAssembly), or its first output byte (native).
    #[command(verbatim_doc_comment)]
    Provision(provision::ProvisionBenchArgs),
    /// The running system: a real scheduler and storage agent (child processes) and a client.
    ///
    /// e2e.via_scheduler: echo through the scheduler's Invoke, p50/p99 (target: under 100 us
    ///   more than e2e.direct at p50).
    /// e2e.direct: echo by NodeAgent.Execute on the agent itself.
    /// e2e.throughput: invocations/s through the scheduler from concurrent clients keeping
    ///   them in flight on InvokeStream (target >= 20,000/s with client, scheduler and agent
    ///   sharing the machine); e2e.throughput_unary: the same, each a unary Invoke.
    /// Both print each process's CPU time per invocation.
    /// chain.local_hop / chain.global_hop: hand-off time per hop of a chain of echo steps on the
    ///   node's local bus vs through the scheduler; chain.local_speedup: their ratio
    ///   (SAND: 2.9x, published).
    #[command(verbatim_doc_comment)]
    E2e(e2e::E2eBenchArgs),
    /// The operator dashboard under a flood of real placement decisions (placed, not run).
    ///
    /// Serves the dashboard (printed as `dashboard on http://ADDR/`) while publishing --rate
    /// decisions/s for --seconds: open it in a browser to see the page at that load.
    /// dashboard.decisions_per_s: decisions published per second (target: the rate).
    /// dashboard.publish: the cost of one publish, what the invocation path pays per decision.
    #[command(verbatim_doc_comment)]
    Dashboard(dashboard::DashboardBenchArgs),
    /// Noisy neighbours: a quiet tenant's storage-tier latency alone and beside another
    /// tenant's spinners on the same node, in one run (a real scheduler and storage agent).
    ///
    /// isolation.quiet_alone / isolation.quiet_noisy: kv-sum (Tier::Storage), p50/p99, alone
    ///   and while the noisy tenant keeps --spinners spinners (default 4 x cores) in flight,
    ///   each stopped at its --spin-ms deadline.
    /// isolation.p99_ratio: p99 beside the spinners over p99 alone (target < 2x).
    /// isolation.quiet_failures / isolation.noisy_failures: calls that failed (target 0; a
    ///   spinner stopped at its deadline is no failure, a refused one is).
    #[command(verbatim_doc_comment)]
    Isolation(isolation::IsolationBenchArgs),
    /// The whole cluster under churn for --minutes: many functions, a 1 s keep-alive, abandoned
    /// calls and dropped streams, one agent killed (SIGKILL) and restarted half way.
    ///
    /// soak.minute_N: latency of the right answers in each minute, p50/p99.
    /// soak.lost / soak.hung: calls failed or wrong outside the restart window / never
    ///   answered within 30 s (target 0).
    /// soak.drift_load / soak.drift_memory_mb / soak.drift_containers: once the load stops
    ///   and the cluster settles, the scheduler's view against the agents' reports (target 0).
    #[command(verbatim_doc_comment)]
    Soak(soak::SoakBenchArgs),
}

/// Options every bench subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Also write the figures as JSON: {"bench": NAME, "figures": [{"name", "unit", "p50",
    /// "p99", "mean", "n"}, ...]}. Without FILE (or with `-`): print that as one line on
    /// stdout instead of the table.
    #[arg(long, value_name = "FILE", num_args = 0..=1, default_missing_value = "-")]
    json: Option<PathBuf>,
}

pub fn run(args: &BenchArgs) -> anyhow::Result<()> {
    match &args.command {
        BenchCommand::Sim(a) => {
            let out = sim::run(a)?;
            finish(&a.common, &out, a.figures_to_stdout)
        }
        BenchCommand::Provision(a) => {
            let out = provision::run(a)?;
            finish(&a.common, &out, false)
        }
        BenchCommand::Storage(a) => {
            let out = storage::run(a)?;
            finish(&a.common, &out, false)
        }
        BenchCommand::E2e(a) => {
            let out = e2e::run(a)?;
            finish(&a.common, &out, false)
        }
        BenchCommand::Dashboard(a) => {
            let out = dashboard::run(a)?;
            finish(&a.common, &out, false)
        }
        BenchCommand::Isolation(a) => {
            let out = isolation::run(a)?;
            finish(&a.common, &out, false)
        }
        BenchCommand::Soak(a) => {
            let out = soak::run(a)?;
            finish(&a.common, &out, false)
        }
    }
}

/// What a bench measured, ready to print.
#[derive(Debug)]
pub struct BenchOutput {
    /// The subcommand's name, `"bench"` in the JSON.
    pub bench: &'static str,
    pub rows: Vec<Row>,
    /// Lines printed under the table (how figures were measured, where peers come from).
    pub notes: Vec<String>,
}

/// The JSON form: `{"bench": NAME, "figures": [...]}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct BenchReport {
    pub bench: String,
    pub figures: Vec<Figure>,
}

/// One measured figure. `unit` names what the numbers count (`invocations/s`, `s`, `bytes`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    pub name: String,
    pub unit: String,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub mean: Option<f64>,
    /// Samples the figure is taken over.
    pub n: u64,
}

impl Figure {
    /// A single value (a throughput, one wall time): `mean` only.
    pub fn single(name: &str, unit: Unit, value: f64) -> Self {
        Self {
            name: name.to_owned(),
            unit: unit.name().to_owned(),
            p50: None,
            p99: None,
            mean: Some(value),
            n: 1,
        }
    }

    /// Median (as `p50`) and mean of repeated measurements; `p99` is left out (too few samples).
    pub fn repeated(name: &str, unit: Unit, samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let median = match sorted.len() {
            0 => None,
            n if n % 2 == 1 => Some(sorted[n / 2]),
            n => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        };
        let mean = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64);
        Self {
            name: name.to_owned(),
            unit: unit.name().to_owned(),
            p50: median,
            p99: None,
            mean,
            n: sorted.len() as u64,
        }
    }

    /// Percentiles and mean of many measurements (nearest-rank percentiles).
    pub fn distribution(name: &str, unit: Unit, samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let rank = |q: f64| {
            let n = sorted.len();
            (n > 0).then(|| sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
        };
        let mean = (!sorted.is_empty()).then(|| sorted.iter().sum::<f64>() / sorted.len() as f64);
        Self {
            name: name.to_owned(),
            unit: unit.name().to_owned(),
            p50: rank(0.50),
            p99: rank(0.99),
            mean,
            n: sorted.len() as u64,
        }
    }

    /// The value the table shows: the median where there is one, else the mean.
    fn headline(&self) -> Option<f64> {
        self.p50.or(self.mean)
    }
}

/// Units the figures use; each knows how to print a value for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    InvocationsPerSecond,
    Seconds,
    Bytes,
    Microseconds,
    Milliseconds,
    Nanoseconds,
    Kibibytes,
    /// How many times one figure is another's.
    Ratio,
    /// How many of something (calls that failed).
    Count,
}

impl Unit {
    /// The name in the JSON.
    pub fn name(self) -> &'static str {
        match self {
            Unit::InvocationsPerSecond => "invocations/s",
            Unit::Seconds => "s",
            Unit::Bytes => "bytes",
            Unit::Microseconds => "us",
            Unit::Milliseconds => "ms",
            Unit::Nanoseconds => "ns",
            Unit::Kibibytes => "KiB",
            Unit::Ratio => "x",
            Unit::Count => "count",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        [
            Unit::InvocationsPerSecond,
            Unit::Seconds,
            Unit::Bytes,
            Unit::Microseconds,
            Unit::Milliseconds,
            Unit::Nanoseconds,
            Unit::Kibibytes,
            Unit::Ratio,
            Unit::Count,
        ]
        .into_iter()
        .find(|u| u.name() == name)
    }

    /// `3.12 M/s`, `12.4 s`, `812 MiB`.
    pub fn show(self, v: f64) -> String {
        if !v.is_finite() {
            return "-".to_owned();
        }
        match self {
            Unit::InvocationsPerSecond if v >= 1e6 => format!("{:.2} M/s", v / 1e6),
            Unit::InvocationsPerSecond if v >= 1e3 => format!("{:.1} k/s", v / 1e3),
            Unit::InvocationsPerSecond => format!("{v:.0} /s"),
            Unit::Seconds if v < 1.0 => format!("{:.0} ms", v * 1e3),
            Unit::Seconds => format!("{v:.1} s"),
            Unit::Microseconds if v >= 1000.0 => format!("{:.2} ms", v / 1e3),
            Unit::Microseconds => format!("{v:.2} us"),
            Unit::Nanoseconds => format!("{v:.0} ns"),
            Unit::Milliseconds => format!("{v:.3} ms"),
            Unit::Kibibytes if v >= 1024.0 => format!("{:.1} MiB", v / 1024.0),
            Unit::Kibibytes => format!("{v:.0} KiB"),
            Unit::Ratio => format!("{v:.1}x"),
            Unit::Count => format!("{v:.0}"),
            Unit::Bytes => {
                const GIB: f64 = (1u64 << 30) as f64;
                const MIB: f64 = (1u64 << 20) as f64;
                if v >= GIB {
                    format!("{:.2} GiB", v / GIB)
                } else {
                    format!("{:.0} MiB", v / MIB)
                }
            }
        }
    }
}

/// Which way is better for a figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// A goal for a figure: `>= value` when higher is better, `< value` when lower is.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub better: Better,
    pub value: f64,
}

impl Target {
    fn met(&self, ours: f64) -> bool {
        match self.better {
            Better::Higher => ours >= self.value,
            Better::Lower => ours < self.value,
        }
    }
}

/// A peer system's figure for the same measurement.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Who, e.g. `DSLab FaaS`.
    pub system: &'static str,
    pub value: f64,
    /// The figure as its source states it (`4.9 GB`), shown instead of `value` when given.
    pub as_published: Option<&'static str>,
    /// True when measured in this run; false for a published figure (said in the table).
    pub measured: bool,
}

/// One line of the table: a figure with what it is judged against.
#[derive(Debug, Clone)]
pub struct Row {
    pub figure: Figure,
    pub better: Better,
    pub target: Option<Target>,
    pub peer: Option<Peer>,
}

impl Row {
    fn unit(&self) -> Option<Unit> {
        Unit::from_name(&self.figure.unit)
    }

    fn show(&self, v: f64) -> String {
        self.unit()
            .map_or_else(|| format!("{v} {}", self.figure.unit), |u| u.show(v))
    }

    fn ours(&self) -> String {
        let Some(v) = self.figure.headline() else {
            return "-".to_owned();
        };
        let mut s = self.show(v);
        if let Some(p99) = self.figure.p99 {
            let _ = write!(s, " (p99 {})", self.show(p99));
        } else if self.figure.n > 1 && self.figure.p50.is_some() {
            let _ = write!(s, " (median of {})", self.figure.n);
        }
        s
    }

    fn target_text(&self) -> String {
        self.target.map_or_else(
            || "-".to_owned(),
            |t| {
                let op = if t.better == Better::Higher {
                    ">="
                } else {
                    "<"
                };
                format!("{op} {}", self.show(t.value))
            },
        )
    }

    fn peer_text(&self) -> String {
        self.peer.as_ref().map_or_else(
            || "-".to_owned(),
            |p| {
                let how = if p.measured { "" } else { ", published*" };
                let value = p
                    .as_published
                    .map_or_else(|| self.show(p.value), str::to_owned);
                format!("{value} ({}{how})", p.system)
            },
        )
    }

    /// `5.2x better` / `1.3x worse`, by the figure's direction. Only against a peer measured
    /// in this run: a published figure comes from other settings and another machine, so no
    /// ratio is printed against it.
    fn versus_peer(&self) -> String {
        let (Some(ours), Some(peer)) = (self.figure.headline(), self.peer.as_ref()) else {
            return "-".to_owned();
        };
        if !peer.measured {
            return "not compared".to_owned();
        }
        let ratio = match self.better {
            Better::Higher => ours / peer.value,
            Better::Lower => peer.value / ours,
        };
        if !ratio.is_finite() || ratio <= 0.0 {
            "-".to_owned()
        } else if ratio >= 1.0 {
            format!("{ratio:.1}x better")
        } else {
            format!("{:.1}x worse", 1.0 / ratio)
        }
    }

    fn verdict(&self) -> &'static str {
        match (self.target, self.figure.headline()) {
            (Some(t), Some(v)) if t.met(v) => "PASS",
            (Some(_), _) => "MISS",
            (None, _) => "-",
        }
    }
}

/// The table, with a header and aligned columns.
pub fn render(out: &BenchOutput) -> String {
    let header = ["figure", "ours", "target", "peer", "vs peer", "verdict"];
    let mut lines: Vec<[String; 6]> = vec![header.map(str::to_owned)];
    for row in &out.rows {
        lines.push([
            row.figure.name.clone(),
            row.ours(),
            row.target_text(),
            row.peer_text(),
            row.versus_peer(),
            row.verdict().to_owned(),
        ]);
    }
    let mut widths = [0usize; 6];
    for line in &lines {
        for (w, cell) in widths.iter_mut().zip(line) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut text = format!("sandstorm bench {}\n\n", out.bench);
    for (i, line) in lines.iter().enumerate() {
        let mut s = String::new();
        for (col, (cell, w)) in line.iter().zip(widths).enumerate() {
            // Numbers right-aligned, names left-aligned.
            if col == 1 || col == 2 {
                let _ = write!(s, "{cell:>w$}  ");
            } else {
                let _ = write!(s, "{cell:<w$}  ");
            }
        }
        text.push_str(s.trim_end());
        text.push('\n');
        if i == 0 {
            text.push_str(&"-".repeat(widths.iter().sum::<usize>() + 2 * (widths.len() - 1)));
            text.push('\n');
        }
    }
    if out
        .rows
        .iter()
        .any(|r| r.peer.as_ref().is_some_and(|p| !p.measured))
    {
        text.push_str(
            "* published figure, not measured in this run (the peer cannot be built here): shown, not compared.\n",
        );
    }
    for note in &out.notes {
        text.push_str(note);
        text.push('\n');
    }
    text
}

/// The JSON form of `out`, pretty-printed.
pub fn to_json(out: &BenchOutput) -> String {
    // Plain structs with string keys and Option<f64> fields always serialize (NaN becomes null).
    serde_json::to_string_pretty(&report(out)).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

/// The JSON form of `out` on one line.
pub fn to_json_line(out: &BenchOutput) -> String {
    serde_json::to_string(&report(out)).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
}

fn report(out: &BenchOutput) -> BenchReport {
    BenchReport {
        bench: out.bench.to_owned(),
        figures: out.rows.iter().map(|r| r.figure.clone()).collect(),
    }
}

/// Print the table (or, for a child process, the JSON on stdout) and write `--json`.
fn finish(common: &CommonArgs, out: &BenchOutput, json_to_stdout: bool) -> anyhow::Result<()> {
    let line = common.json.as_deref() == Some(std::path::Path::new("-"));
    if json_to_stdout {
        println!("{}", to_json(out));
    } else if line {
        println!("{}", to_json_line(out));
    } else {
        print!("{}", render(out));
    }
    if let Some(path) = common.json.as_ref().filter(|_| !line) {
        std::fs::write(path, to_json(out) + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// Peak resident memory of this process so far (VmHWM of /proc/self/status), bytes.
pub fn peak_rss_bytes() -> anyhow::Result<u64> {
    const STATUS: &str = "/proc/self/status";
    let status = std::fs::read_to_string(STATUS).with_context(|| format!("reading {STATUS}"))?;
    parse_vm_hwm(&status).with_context(|| format!("{STATUS}: no VmHWM line in kB"))
}

/// A new directory of this run's own under the system's temporary directory, for a bench's
/// processes' state and logs: `sandstorm-bench-NAME-PID-NANOS`. The caller removes it.
pub fn scratch_dir(bench: &str) -> anyhow::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "sandstorm-bench-{bench}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The `VmHWM:   1234 kB` line of a /proc status file, in bytes.
fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kb = line.trim().strip_suffix("kB")?.trim().parse::<u64>().ok()?;
    Some(kb * 1024)
}

pub mod dashboard;
pub mod e2e;
pub mod isolation;
pub mod provision;
pub mod sim;
pub mod soak;
pub mod storage;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vm_hwm_parses_kb() {
        let status = "Name:\tsandstorm\nVmPeak:\t  9000 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1 kB\n";
        assert_eq!(parse_vm_hwm(status), Some(2048 * 1024));
        assert_eq!(parse_vm_hwm("VmRSS: 1 kB\n"), None);
        assert_eq!(parse_vm_hwm("VmHWM: lots\n"), None);
    }

    #[test]
    fn peak_rss_is_positive_here() {
        assert!(peak_rss_bytes().is_ok_and(|b| b > 0));
    }

    #[test]
    fn repeated_figure_median_and_mean() {
        // odd count: the middle one; even: the mean of the middle two
        let f = Figure::repeated("x", Unit::Seconds, &[3.0, 1.0, 2.0]);
        assert_eq!((f.p50, f.mean, f.p99, f.n), (Some(2.0), Some(2.0), None, 3));
        let f = Figure::repeated("x", Unit::Seconds, &[4.0, 1.0, 2.0, 3.0]);
        assert_eq!((f.p50, f.mean), (Some(2.5), Some(2.5)));
        let f = Figure::single("x", Unit::Seconds, 7.0);
        assert_eq!((f.p50, f.mean, f.n), (None, Some(7.0), 1));
    }

    #[test]
    fn verdicts_follow_the_direction() {
        let row = |better, ours, target, peer| Row {
            figure: Figure::single("x", Unit::Seconds, ours),
            better,
            target: Some(Target {
                better,
                value: target,
            }),
            peer: Some(Peer {
                system: "P",
                value: peer,
                as_published: None,
                measured: true,
            }),
        };
        // lower is better: 10 s < 15 s passes; 95 / 10 = 9.5x better
        let r = row(Better::Lower, 10.0, 15.0, 95.0);
        assert_eq!(
            (r.verdict(), r.versus_peer().as_str()),
            ("PASS", "9.5x better")
        );
        // higher is better: 2 < 3 misses; 2 / 4 = 2.0x worse
        let r = row(Better::Higher, 2.0, 3.0, 4.0);
        assert_eq!(
            (r.verdict(), r.versus_peer().as_str()),
            ("MISS", "2.0x worse")
        );
        // a published peer is shown, never divided by
        let mut r = row(Better::Lower, 10.0, 15.0, 95.0);
        r.peer.as_mut().unwrap().measured = false;
        assert_eq!(r.versus_peer(), "not compared");
    }

    #[test]
    fn json_has_the_documented_shape() {
        let out = BenchOutput {
            bench: "sim",
            rows: vec![Row {
                figure: Figure::single("t", Unit::InvocationsPerSecond, 5.0),
                better: Better::Higher,
                target: None,
                peer: None,
            }],
            notes: vec![],
        };
        let v: serde_json::Value = serde_json::from_str(&to_json(&out)).unwrap_or_default();
        assert_eq!(v["bench"], "sim");
        let f = &v["figures"][0];
        assert_eq!(f["name"], "t");
        assert_eq!(f["unit"], "invocations/s");
        assert_eq!(f["mean"], 5.0);
        assert!(f["p50"].is_null() && f["p99"].is_null());
        assert_eq!(f["n"], 1);
        let table = render(&out);
        assert!(
            table.contains("figure") && table.contains("5 /s"),
            "{table}"
        );
    }
}

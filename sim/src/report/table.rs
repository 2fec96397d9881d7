//! The terminal output of `sandstorm sim`: aligned plain-text tables, no external crate.
//!
//! One row per run. When every column fits in [`MAX_LINE`] characters it is one table; otherwise
//! it is split into a "latency" and a "resources" table keyed by the same first columns (policy,
//! keep-alive, load), so each line stays readable in a terminal. If the scenario gives peer
//! figures a "Keep-alive vs peer" table follows.

use super::{PEER_TOLERANCE, RunResult, SimReport, units};

/// Lines stay shorter than this many characters.
pub const MAX_LINE: usize = 159;

/// Names in the peer table are cut to this many characters; the runs tables cut policy and
/// keep-alive names to whatever room the other columns leave under [`MAX_LINE`].
const MAX_KEY: usize = 28;

/// Space between columns.
const GAP: &str = "  ";

/// Renders the report as terminal tables (see the module doc). Ends with a newline.
pub fn render_table(report: &SimReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Scenario {} (seed {})\n",
        report.scenario, report.seed
    ));
    out.push_str(&format!(
        "Trace: {} from {}, {} functions, {} invocations at load 1 over {}\n\n",
        report.trace.format,
        report.trace.source,
        units::count(report.trace.functions),
        units::count(report.trace.invocations),
        units::span_s(report.trace.span_s),
    ));
    if report.runs.is_empty() {
        out.push_str("No runs.\n");
    } else {
        out.push_str(&runs_tables(&report.runs));
    }
    if !report.peer.is_empty() {
        out.push('\n');
        out.push_str(&peer_table(report));
    }
    out
}

/// One column: a header, cells top to bottom, and which side the cells lean on.
#[derive(Debug)]
struct Column {
    header: &'static str,
    right: bool,
    cells: Vec<String>,
}

impl Column {
    fn text(header: &'static str, cells: Vec<String>) -> Self {
        Self {
            header,
            right: false,
            cells,
        }
    }

    fn num(header: &'static str, cells: Vec<String>) -> Self {
        Self {
            header,
            right: true,
            cells,
        }
    }

    fn width(&self) -> usize {
        self.cells
            .iter()
            .map(|c| c.chars().count())
            .chain([self.header.len()])
            .max()
            .unwrap_or(0)
    }
}

fn runs_tables(runs: &[RunResult]) -> String {
    let col = |header, right, f: &dyn Fn(&RunResult) -> String| Column {
        header,
        right,
        cells: runs.iter().map(f).collect(),
    };
    let mut names = [
        Column::text("policy", runs.iter().map(|r| r.policy.clone()).collect()),
        Column::text(
            "keep-alive",
            runs.iter().map(|r| r.keep_alive.clone()).collect(),
        ),
    ];
    let load = col("load", true, &|r| units::load(r.load));
    let mut latency = vec![
        col("invocations", true, &|r| units::count(r.invocations)),
        col("cold starts", true, &|r| units::count(r.cold_starts)),
        col("cold %", true, &|r| units::pct(r.cold_start_ratio())),
        col("warm/asm/cold %", true, &|r| {
            let total = r.total_starts();
            split(&[r.starts.warm, r.starts.assembled, r.starts.cold], total)
        }),
        col("storage/compute %", true, &|r| {
            split(
                &[r.tiers.storage, r.tiers.compute],
                r.tiers.storage + r.tiers.compute,
            )
        }),
    ];
    if runs.iter().any(|r| r.rejected > 0) {
        latency.push(col("rejected", true, &|r| units::count(r.rejected)));
    }
    if runs.iter().any(|r| r.queued > 0) {
        latency.push(col("queued", true, &|r| units::count(r.queued)));
        latency.push(col("wait p50", true, &|r| {
            units::duration_us(r.queue_wait_us.p50)
        }));
        latency.push(col("wait p99", true, &|r| {
            units::duration_us(r.queue_wait_us.p99)
        }));
    }
    latency.extend([
        col("p50", true, &|r| units::duration_us(r.latency_us.p50)),
        col("p99", true, &|r| units::duration_us(r.latency_us.p99)),
        col("p99.9", true, &|r| units::duration_us(r.latency_us.p999)),
        col("slowdown p99", true, &|r| format!("{:.2}", r.slowdown.p99)),
    ]);
    let mut resources = vec![
        col("storage CPU s", true, &|r| units::fixed(r.storage_cpu_s, 1)),
        col("compute CPU s", true, &|r| units::fixed(r.compute_cpu_s, 1)),
        col("moved", true, &|r| units::bytes(r.bytes_moved)),
        col("goodput/s", true, &|r| units::fixed(r.goodput_per_s, 1)),
    ];
    if runs.iter().any(|r| r.bound.is_some()) {
        resources.push(col("bound gap", true, &|r| {
            r.bound
                .map_or_else(|| units::NONE.to_owned(), |b| units::signed_pct(b.gap))
        }));
    }
    resources.push(col("wall s", true, &|r| format!("{:.2}", r.wall_s)));

    let legend = "warm/asm/cold %: share of starts reusing a warm context, assembled from parts, \
                  built cold; cold starts = asm + cold.\nstorage/compute %: share of invocations \
                  run on each tier.";
    // The names take what the other columns leave; the wider of the two tables decides.
    let others = |cols: &[&Column]| {
        line_width(std::iter::once(&load).chain(cols.iter().copied())) + GAP.len()
    };
    let all: Vec<&Column> = latency.iter().chain(&resources).collect();
    let first: Vec<&Column> = latency.iter().collect();
    let second: Vec<&Column> = resources.iter().collect();
    let one_table = line_width(names.iter()) + others(&all) <= MAX_LINE;
    let budget = if one_table {
        MAX_LINE - others(&all)
    } else {
        MAX_LINE.saturating_sub(others(&first).max(others(&second)))
    };
    fit_names(&mut names, budget);
    let [policy, keep_alive] = names;
    let key = [policy, keep_alive, load];
    let mut out = String::new();
    if one_table {
        let columns: Vec<&Column> = key.iter().chain(&latency).chain(&resources).collect();
        out.push_str(&render("Runs", &columns));
    } else {
        let first: Vec<&Column> = key.iter().chain(&latency).collect();
        out.push_str(&render("Runs: starts and latency", &first));
        out.push('\n');
        let second: Vec<&Column> = key.iter().chain(&resources).collect();
        out.push_str(&render("Runs: resources", &second));
    }
    out.push_str(legend);
    out.push('\n');
    if runs.iter().any(|r| r.bound.is_some()) {
        out.push_str(
            "bound gap: mean objective over the offline LP bound, minus 1 (0 = optimal).\n",
        );
    }
    out
}

fn peer_table(report: &SimReport) -> String {
    let peer = &report.peer;
    let col = |header, f: &dyn Fn(&super::PeerComparison) -> String| {
        Column::num(header, peer.iter().map(f).collect())
    };
    let tolerance = format!("{:.0}%", PEER_TOLERANCE * 100.0);
    let columns = [
        Column::text(
            "keep-alive",
            peer.iter().map(|p| cut(&p.keep_alive)).collect(),
        ),
        Column::text("peer", peer.iter().map(|p| cut(&p.peer)).collect()),
        col("peer cold starts", &|p| units::count(p.peer_cold_starts)),
        col("peer %", &|p| units::pct(p.peer_ratio())),
        col("ours", &|p| units::count(p.cold_starts)),
        col("ours %", &|p| units::pct(p.ratio())),
        col("difference", &|p| units::signed_pct(p.difference)),
        Column::text(
            "verdict",
            peer.iter()
                .map(|p| {
                    if p.within_tolerance() {
                        format!("\u{2713} within {tolerance}")
                    } else {
                        format!("\u{2717} outside {tolerance}")
                    }
                })
                .collect(),
        ),
    ];
    let columns: Vec<&Column> = columns.iter().collect();
    let mut out = render("Keep-alive vs peer (cold starts)", &columns);
    out.push_str("difference: our cold starts over the peer's, minus 1.\n");
    out
}

/// Width of a line holding `columns`.
fn line_width<'a>(columns: impl Iterator<Item = &'a Column>) -> usize {
    let widths: Vec<usize> = columns.map(Column::width).collect();
    widths.iter().sum::<usize>() + GAP.len() * widths.len().saturating_sub(1)
}

/// A titled table: header, a rule, one line per row.
fn render(title: &str, columns: &[&Column]) -> String {
    let widths: Vec<usize> = columns.iter().map(|c| c.width()).collect();
    let rows = columns.first().map_or(0, |c| c.cells.len());
    let total = line_width(columns.iter().copied());
    let mut out = format!("{title}\n");
    let line = |cells: &mut dyn Iterator<Item = (&str, bool)>| {
        let mut line = String::new();
        for (i, (cell, right)) in cells.enumerate() {
            if i > 0 {
                line.push_str(GAP);
            }
            let pad = widths[i].saturating_sub(cell.chars().count());
            if right {
                line.push_str(&" ".repeat(pad));
                line.push_str(cell);
            } else {
                line.push_str(cell);
                line.push_str(&" ".repeat(pad));
            }
        }
        line.truncate(line.trim_end().len());
        line.push('\n');
        line
    };
    out.push_str(&line(&mut columns.iter().map(|c| (c.header, c.right))));
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in 0..rows {
        out.push_str(&line(
            &mut columns.iter().map(|c| (c.cells[row].as_str(), c.right)),
        ));
    }
    out
}

/// `parts` as whole percentages of `total`, slash-separated: `82/14/4`; `-` when `total` is 0.
fn split(parts: &[u64], total: u64) -> String {
    if total == 0 {
        return units::NONE.to_owned();
    }
    let pcts: Vec<String> = parts
        .iter()
        .map(|&p| format!("{:.0}", p as f64 * 100.0 / total as f64))
        .collect();
    pcts.join("/")
}

/// Cuts the cells of the two name columns so both fit in `budget` characters (plus the gap
/// between them): the keep-alive column keeps up to half, the policy column the rest.
fn fit_names([policy, keep_alive]: &mut [Column; 2], budget: usize) {
    let budget = budget.saturating_sub(GAP.len());
    if policy.width() + keep_alive.width() <= budget {
        return;
    }
    let keep_alive_max = keep_alive
        .width()
        .min(budget / 2)
        .max(keep_alive.header.len());
    let policy_max = budget
        .saturating_sub(keep_alive_max)
        .max(policy.header.len());
    for (column, max) in [(policy, policy_max), (keep_alive, keep_alive_max)] {
        for cell in &mut column.cells {
            *cell = cut_to(cell, max);
        }
    }
}

/// A name cell, cut to [`MAX_KEY`] characters.
fn cut(name: &str) -> String {
    cut_to(name, MAX_KEY)
}

/// `name` cut to `max` characters, the last one a `~` when it was longer.
fn cut_to(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        name.to_owned()
    } else {
        let mut cut: String = name.chars().take(max.saturating_sub(1)).collect();
        cut.push('~');
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_numbers_right_and_names_left() {
        let a = Column::text("name", vec!["x".into(), "longer".into()]);
        let b = Column::num("n", vec!["1".into(), "1,000".into()]);
        let out = render("T", &[&a, &b]);
        // widths 6 and 5, two spaces between; trailing spaces trimmed.
        assert_eq!(
            out,
            "T\nname        n\n-------------\nx           1\nlonger  1,000\n"
        );
    }

    #[test]
    fn splits_are_whole_percentages_and_long_keys_are_cut() {
        assert_eq!(split(&[82, 14, 4], 100), "82/14/4");
        assert_eq!(split(&[1, 2], 0), "-");
        assert_eq!(cut("short"), "short");
        let long = "a".repeat(40);
        assert_eq!(cut(&long).chars().count(), MAX_KEY);
        assert!(cut(&long).ends_with('~'));
    }
}

//! The report's charts. Each is a [`Figure`]: a title, a caption saying how to read it, an HTML
//! legend and one inline SVG. A series (policy, keep-alive) keeps its colour, marker and dash in
//! every chart: colour follows the placement policy, dash and marker the keep-alive policy.
//!
//! Charts against load show every load point; the breakdowns (starts, CPU) compare the series at
//! one reference load, the point closest to the trace's own rate (1x).

use super::draw::{self, Bar, Group, Line, Panel, Row, Segment};
use super::svg::{self, Axis, Plot, Svg, key_box, key_line};
use crate::report::{PEER_TOLERANCE, RunResult, SimReport, units};

/// Start kinds, tiers and reference figures, in Okabe-Ito colours that stay apart for every
/// common colour-vision deficiency.
const COLD: &str = "#D55E00";
const ASSEMBLED: &str = "#E69F00";
const WARM: &str = "#009E73";
const STORAGE: &str = "#0072B2";
const COMPUTE: &str = "#56B4E9";
const PEER: &str = "#999999";
const P50: &str = "#56B4E9";
const P99: &str = "#0072B2";
const P999: &str = "#CC79A7";
const BOUND: &str = "#222222";

/// Dash patterns of the keep-alive policies' lines, in order; the first is solid.
const DASHES: [Option<&str>; 4] = [None, Some("7 4"), Some("2 3"), Some("10 3 2 3")];

/// Reads one figure of a run.
type Metric = fn(&RunResult) -> f64;

/// Width and height of a half-width chart, in SVG units (about pixels on a wide screen).
const W: f64 = 640.0;
const H: f64 = 380.0;

/// One chart, ready to place on the page.
#[derive(Debug)]
pub(super) struct Figure {
    pub title: String,
    pub caption: String,
    /// Legend entries (HTML).
    pub legend: Vec<String>,
    pub svg: String,
    /// Takes the whole width of the page rather than half.
    pub wide: bool,
}

/// The runs of one (policy, keep-alive) pair, in load order, and how they are drawn.
#[derive(Debug)]
pub(super) struct Series<'a> {
    pub policy: &'a str,
    pub keep_alive: &'a str,
    /// Policy, keep-alive, or both: whatever tells the series apart in this report.
    pub label: String,
    pub colour: &'static str,
    pub shape: usize,
    pub dash: Option<&'static str>,
    pub runs: Vec<&'a RunResult>,
}

impl Series<'_> {
    fn key(&self) -> String {
        key_line(self.colour, Some(self.shape), self.dash, &self.label)
    }

    fn line(&self) -> Line<'_> {
        Line {
            label: &self.label,
            colour: self.colour,
            shape: self.shape,
            dash: self.dash,
            runs: &self.runs,
        }
    }

    /// The label under a bar group, on two lines (policy, then keep-alive) when it names both.
    fn group(&self) -> (String, Option<String>) {
        if self.label == self.policy || self.label == self.keep_alive {
            (self.label.clone(), None)
        } else {
            (self.policy.to_owned(), Some(self.keep_alive.to_owned()))
        }
    }

    fn at(&self, load: f64) -> Option<&RunResult> {
        self.runs.iter().copied().find(|r| r.load == load)
    }
}

/// Groups the runs of `report` by (policy, keep-alive), in order of first appearance.
pub(super) fn series(report: &SimReport) -> Vec<Series<'_>> {
    let (policies, keep_alives) = (report.policies(), report.keep_alives());
    let (many_policies, many_keep_alives) = (policies.len() > 1, keep_alives.len() > 1);
    let mut out: Vec<Series<'_>> = Vec::new();
    for run in &report.runs {
        if let Some(s) = out
            .iter_mut()
            .find(|s| s.policy == run.policy && s.keep_alive == run.keep_alive)
        {
            s.runs.push(run);
            continue;
        }
        let pi = policies.iter().position(|p| *p == run.policy).unwrap_or(0);
        let ki = keep_alives
            .iter()
            .position(|k| *k == run.keep_alive)
            .unwrap_or(0);
        out.push(Series {
            policy: &run.policy,
            keep_alive: &run.keep_alive,
            label: match (many_policies, many_keep_alives) {
                (_, false) => run.policy.clone(),
                (false, true) => run.keep_alive.clone(),
                (true, true) => format!("{} \u{b7} {}", run.policy, run.keep_alive),
            },
            colour: svg::colour(if many_policies { pi } else { ki }),
            shape: if many_keep_alives { ki } else { pi },
            dash: if many_policies {
                DASHES[ki % DASHES.len()]
            } else {
                None
            },
            runs: vec![run],
        });
    }
    for s in &mut out {
        s.runs.sort_by(|a, b| a.load.total_cmp(&b.load));
    }
    out
}

/// The load point the breakdowns and cards compare at: the one closest to 1x.
pub(super) fn reference_load(report: &SimReport) -> Option<f64> {
    report
        .loads()
        .into_iter()
        .min_by(|a, b| (a - 1.0).abs().total_cmp(&(b - 1.0).abs()))
}

/// The plot area of a chart `width` x `height` from `left`, leaving room for axis labels on the
/// left and `below` it.
fn plot_area(left: f64, width: f64, height: f64, below: f64) -> Plot {
    Plot {
        left: left + 84.0,
        right: left + width - 22.0,
        top: 30.0,
        bottom: height - below,
    }
}

/// (a) Latency against load: p50 and p99 in two panels, one line per series; a single load point
/// becomes grouped bars of p50, p99 and p99.9.
pub(super) fn latency(report: &SimReport, series: &[Series<'_>]) -> Figure {
    let loads = report.loads();
    if loads.len() < 2 {
        return latency_bars(series, loads.first().copied());
    }
    let x = Axis::loads(&loads);
    let mut svg = Svg::new(
        2.0 * W,
        H,
        "p50 and p99 latency against load, one line per series",
    );
    let panels: [(&str, Metric, &str); 2] = [
        ("p50 (median)", |r| r.latency_us.p50, "p50"),
        ("p99 (tail)", |r| r.latency_us.p99, "p99"),
    ];
    let lines: Vec<Line<'_>> = series.iter().map(Series::line).collect();
    for (i, (title, value, what)) in panels.into_iter().enumerate() {
        let y = Axis::values(
            series.iter().flat_map(|s| s.runs.iter().map(|r| value(r))),
            true,
        );
        let plot = plot_area(i as f64 * W, W, H, 58.0);
        let title = if y.log {
            format!("{title}, log scale")
        } else {
            title.to_owned()
        };
        svg.text(plot.mid_x(), 16.0, "middle", "panel-title", &title);
        let panel = Panel {
            plot,
            x: &x,
            y: &y,
            y_fmt: &units::duration_us_tick,
            y_title: "latency",
        };
        draw::lines(&mut svg, &panel, &lines, value, &|v| {
            format!("{what} {}", units::duration_us(v))
        });
    }
    Figure {
        title: "Latency against load".to_owned(),
        caption: "Arrival-to-completion time at each load point (a multiple of the trace's \
                  arrival rate); lower is better. Each panel has its own scale, logarithmic when \
                  its values span more than two decades."
            .to_owned(),
        legend: series.iter().map(Series::key).collect(),
        svg: svg.finish(),
        wide: true,
    }
}

fn latency_bars(series: &[Series<'_>], load: Option<f64>) -> Figure {
    let percentiles = |r: &RunResult| [r.latency_us.p50, r.latency_us.p99, r.latency_us.p999];
    let y = Axis::values(
        series
            .iter()
            .flat_map(|s| s.runs.iter().flat_map(|r| percentiles(r))),
        true,
    );
    let groups: Vec<Group> = series
        .iter()
        .map(|s| {
            let (label, sub) = s.group();
            let bars = percentiles(s.runs[0])
                .into_iter()
                .zip([("p50", P50), ("p99", P99), ("p99.9", P999)])
                .map(|(v, (what, colour))| Bar {
                    segments: vec![Segment {
                        value: v,
                        colour,
                        tooltip: format!("{}: {what} {}", s.label, units::duration_us(v)),
                        inside: None,
                    }],
                    label: Some(units::duration_us_tick(v)),
                    under: None,
                })
                .collect();
            Group {
                label,
                sub,
                bars,
                note: None,
            }
        })
        .collect();
    let mut svg = Svg::new(W, H, "latency percentiles per series");
    let plot = plot_area(0.0, W, H, 52.0);
    svg.y_axis(plot, &y, &units::duration_us_tick, "latency");
    draw::bars(&mut svg, plot, &y, &groups);
    Figure {
        title: format!(
            "Latency at load {}",
            load.map_or_else(String::new, units::load)
        ),
        caption: log_note(
            y.log,
            "Arrival-to-completion time per series; lower is better.",
        ),
        legend: vec![
            key_box(P50, "p50"),
            key_box(P99, "p99"),
            key_box(P999, "p99.9"),
        ],
        svg: svg.finish(),
        wide: false,
    }
}

/// (b) Goodput against load, with the offline LP bound (an upper limit) dashed.
pub(super) fn goodput(report: &SimReport, series: &[Series<'_>]) -> Figure {
    let loads = report.loads();
    // The bound depends on the load point only; runs at one point should agree: take the largest.
    let bound: Vec<(f64, f64)> = loads
        .iter()
        .filter_map(|&load| {
            report
                .runs
                .iter()
                .filter(|r| r.load == load)
                .filter_map(|r| r.bound.map(|b| b.goodput_bound_per_s))
                .filter(|b| b.is_finite())
                .reduce(f64::max)
                .map(|b| (load, b))
        })
        .collect();
    let values = series
        .iter()
        .flat_map(|s| s.runs.iter().map(|r| r.goodput_per_s));
    let y = Axis::values(values.chain(bound.iter().map(|b| b.1)), false);
    let y_fmt = |v: f64| units::si(v);
    let y_title = "goodput (invocations/s)";
    let mut svg = Svg::new(W, H, "goodput against load, one line per series");
    let plot = plot_area(0.0, W, H, 58.0);
    let ys = y.scale(plot.bottom, plot.top);
    if loads.len() < 2 {
        svg.y_axis(plot, &y, &y_fmt, y_title);
        let groups: Vec<Group> = series
            .iter()
            .map(|s| Group {
                label: s.group().0,
                sub: s.group().1,
                bars: vec![Bar {
                    segments: vec![Segment {
                        value: s.runs[0].goodput_per_s,
                        colour: s.colour,
                        tooltip: format!(
                            "{}: {}/s",
                            s.label,
                            units::fixed(s.runs[0].goodput_per_s, 1)
                        ),
                        inside: None,
                    }],
                    label: Some(units::si(s.runs[0].goodput_per_s)),
                    under: None,
                }],
                note: None,
            })
            .collect();
        draw::bars(&mut svg, plot, &y, &groups);
        if let Some(&(_, b)) = bound.first() {
            svg.line(plot.left, ys.map(b), plot.right, ys.map(b), "bound");
            let label = format!("LP bound {}/s", units::si(b));
            svg.text(plot.right, ys.map(b) - 6.0, "end", "bound-label", &label);
        }
    } else {
        let x = Axis::loads(&loads);
        let xs = x.scale(plot.left, plot.right);
        let points: Vec<(f64, f64)> = bound.iter().map(|&(l, b)| (xs.map(l), ys.map(b))).collect();
        let lines: Vec<Line<'_>> = series.iter().map(Series::line).collect();
        let panel = Panel {
            plot,
            x: &x,
            y: &y,
            y_fmt: &y_fmt,
            y_title,
        };
        draw::lines(&mut svg, &panel, &lines, |r| r.goodput_per_s, &|v| {
            format!("goodput {}/s", units::fixed(v, 1))
        });
        // A cap at each load point the bound is known at, joined where there are several.
        if points.len() > 1 {
            svg.polyline(&points, BOUND, Some("7 5"));
        }
        for (&(px, py), &(load, b)) in points.iter().zip(&bound) {
            svg.line(px - 22.0, py, px + 22.0, py, "bound");
            svg.hover(
                px,
                py,
                &format!(
                    "LP bound at {}: {}/s",
                    units::load(load),
                    units::fixed(b, 1)
                ),
            );
        }
        if let Some(&(px, py)) = points.last() {
            svg.text(px - 26.0, py - 8.0, "end", "bound-label", "LP bound");
        }
    }
    let mut legend: Vec<String> = if loads.len() < 2 {
        series.iter().map(|s| key_box(s.colour, &s.label)).collect()
    } else {
        series.iter().map(Series::key).collect()
    };
    if !bound.is_empty() {
        legend.push(key_line(
            BOUND,
            None,
            Some("5 3"),
            "LP bound (no policy can exceed it)",
        ));
    }
    Figure {
        title: match loads.as_slice() {
            [load] => format!("Goodput at load {}", units::load(*load)),
            _ => "Goodput against load".to_owned(),
        },
        caption: "Completed invocations per simulated second that met the latency objective; \
                  higher is better. Dashed: the offline LP bound where it was computed."
            .to_owned(),
        legend,
        svg: svg.finish(),
        wide: false,
    }
}

/// Caption words naming the reference load, when there are several load points.
fn at_reference(report: &SimReport, load: f64) -> String {
    if report.loads().len() > 1 {
        format!(
            " At load {} (closest to the trace's own rate); the table has every load.",
            units::load(load)
        )
    } else {
        String::new()
    }
}

/// (c) How contexts were obtained, per series, at the reference load.
pub(super) fn start_breakdown(report: &SimReport, series: &[Series<'_>]) -> Option<Figure> {
    let load = reference_load(report)?;
    let rows: Vec<Row> = series
        .iter()
        .filter_map(|s| s.at(load).map(|r| (s, r)))
        .map(|(s, r)| {
            let total = r.total_starts().max(1) as f64;
            let segment = |name: &str, n: u64, colour, ink| {
                let pct = n as f64 / total * 100.0;
                Segment {
                    value: pct,
                    colour,
                    tooltip: format!(
                        "{}: {name} {} of {} starts ({pct:.1}%)",
                        s.label,
                        units::count(n),
                        units::count(r.total_starts())
                    ),
                    inside: Some((format!("{pct:.0}%"), ink)),
                }
            };
            Row {
                label: s.label.clone(),
                segments: vec![
                    segment("cold", r.starts.cold, COLD, "ink-light"),
                    segment("assembled", r.starts.assembled, ASSEMBLED, "ink-dark"),
                    segment("warm", r.starts.warm, WARM, "ink-light"),
                ],
                right: format!(
                    "{} cold",
                    units::pct((r.starts.cold + r.starts.assembled) as f64 / total)
                ),
            }
        })
        .collect();
    let axis = Axis {
        log: false,
        lo: 0.0,
        hi: 100.0,
        ticks: (0..=5).map(|i| f64::from(i) * 20.0).collect(),
    };
    let svg = draw::hbars(
        W,
        "share of cold, assembled and warm starts per series",
        &rows,
        &axis,
        &|v| format!("{v:.0}%"),
        "share of starts",
    );
    Some(Figure {
        title: "Cold-start breakdown".to_owned(),
        caption: format!(
            "How each execution context was obtained, as a share of starts. Cold starts (right) \
             are assembled plus built cold.{}",
            at_reference(report, load)
        ),
        legend: vec![
            key_box(COLD, "built cold on the critical path"),
            key_box(ASSEMBLED, "assembled from pre-created parts"),
            key_box(WARM, "warm reuse"),
        ],
        svg,
        wide: false,
    })
}

/// (d) CPU-seconds on each tier, per series, at the reference load.
pub(super) fn cpu(report: &SimReport, series: &[Series<'_>]) -> Option<Figure> {
    let load = reference_load(report)?;
    let runs: Vec<(&Series<'_>, &RunResult)> = series
        .iter()
        .filter_map(|s| s.at(load).map(|r| (s, r)))
        .collect();
    let x = Axis::values(
        runs.iter().map(|(_, r)| r.storage_cpu_s + r.compute_cpu_s),
        false,
    );
    let rows: Vec<Row> = runs
        .iter()
        .map(|(s, r)| {
            let total = r.storage_cpu_s + r.compute_cpu_s;
            let segment = |tier: &str, v: f64, colour, ink| Segment {
                value: v,
                colour,
                tooltip: format!("{}: {tier} {} CPU-s", s.label, units::fixed(v, 1)),
                inside: Some((units::si(v), ink)),
            };
            Row {
                label: s.label.clone(),
                segments: vec![
                    segment("storage", r.storage_cpu_s, STORAGE, "ink-light"),
                    segment("compute", r.compute_cpu_s, COMPUTE, "ink-dark"),
                ],
                right: if total > 0.0 {
                    format!("{} storage", units::pct(r.storage_cpu_s / total))
                } else {
                    units::NONE.to_owned()
                },
            }
        })
        .collect();
    let svg = draw::hbars(
        W,
        "storage and compute CPU-seconds per series",
        &rows,
        &x,
        &|v| units::si(v),
        "CPU-seconds",
    );
    Some(Figure {
        title: "CPU by tier".to_owned(),
        caption: format!(
            "CPU-seconds spent on storage and compute nodes, and the storage share (right).{}",
            at_reference(report, load)
        ),
        legend: vec![
            key_box(STORAGE, "storage nodes"),
            key_box(COMPUTE, "compute nodes"),
        ],
        svg,
        wide: false,
    })
}

/// (e) Our cold starts beside a peer simulator's, per keep-alive, with the difference.
pub(super) fn peer(report: &SimReport) -> Option<Figure> {
    let first = report.peer.first()?;
    let many_peers = report.peer.iter().any(|p| p.peer != first.peer);
    let tolerance = format!("{:.0}%", PEER_TOLERANCE * 100.0);
    let counts = report
        .peer
        .iter()
        .flat_map(|p| [p.cold_starts, p.peer_cold_starts]);
    let y = Axis::values(counts.map(|n| n as f64), false);
    let groups: Vec<Group> = report
        .peer
        .iter()
        .map(|p| {
            let bar = |who: &str, n: u64, ratio: f64, colour| Bar {
                segments: vec![Segment {
                    value: n as f64,
                    colour,
                    tooltip: format!(
                        "{}, {who}: {} cold starts ({} of invocations)",
                        p.keep_alive,
                        units::count(n),
                        units::pct(ratio)
                    ),
                    inside: None,
                }],
                label: Some(units::si(n as f64)),
                under: None,
            };
            let (mark, class) = if p.within_tolerance() {
                ("\u{2713}", "note good")
            } else {
                ("\u{2717}", "note bad")
            };
            Group {
                label: p.keep_alive.clone(),
                sub: many_peers.then(|| p.peer.clone()),
                bars: vec![
                    bar("ours", p.cold_starts, p.ratio(), STORAGE),
                    bar(&p.peer, p.peer_cold_starts, p.peer_ratio(), PEER),
                ],
                note: Some((format!("{} {mark}", units::signed_pct(p.difference)), class)),
            }
        })
        .collect();
    let plot = plot_area(0.0, W, H, 52.0);
    let mut svg = Svg::new(
        W,
        H,
        "our cold starts beside the peer simulator's, per keep-alive",
    );
    svg.y_axis(plot, &y, &|v| units::si(v), "cold starts");
    draw::bars(&mut svg, plot, &y, &groups);
    let peer_name = if many_peers {
        "peer"
    } else {
        first.peer.as_str()
    };
    Some(Figure {
        title: format!("Keep-alive: ours vs {peer_name}"),
        caption: format!(
            "Cold starts per keep-alive policy, ours beside the peer simulator's on the same \
             trace. Above each pair: our difference from the peer, \u{2713} within {tolerance}, \
             \u{2717} outside."
        ),
        legend: vec![key_box(STORAGE, "sandstorm sim"), key_box(PEER, peer_name)],
        svg: svg.finish(),
        wide: false,
    })
}

/// A caption, plus a note when a value axis is logarithmic.
fn log_note(log: bool, caption: &str) -> String {
    if log {
        format!("{caption} Log scale: the values span more than two decades.")
    } else {
        caption.to_owned()
    }
}

//! The three chart shapes the report uses, on top of [`super::svg`]: lines against load,
//! vertical bar groups, and horizontal stacked bars with a label at the end of each row.

use super::svg::{Axis, Plot, Svg};
use crate::report::{RunResult, units};

/// The lines of one series: where its points come from and how they look.
#[derive(Debug)]
pub(super) struct Line<'a> {
    pub label: &'a str,
    pub colour: &'static str,
    pub shape: usize,
    pub dash: Option<&'static str>,
    pub runs: &'a [&'a RunResult],
}

/// A line chart's plot area and axes.
pub(super) struct Panel<'a> {
    pub plot: Plot,
    pub x: &'a Axis,
    pub y: &'a Axis,
    pub y_fmt: &'a dyn Fn(f64) -> String,
    pub y_title: &'a str,
}

/// Axes, then one line with markers per series; `tip` words a point's value in its tooltip.
pub(super) fn lines(
    svg: &mut Svg,
    panel: &Panel<'_>,
    series: &[Line<'_>],
    value: impl Fn(&RunResult) -> f64,
    tip: &dyn Fn(f64) -> String,
) {
    let plot = panel.plot;
    svg.y_axis(plot, panel.y, panel.y_fmt, panel.y_title);
    svg.x_axis(
        plot,
        panel.x,
        &units::load,
        "load (\u{d7} the trace's arrival rate)",
    );
    let xs = panel.x.scale(plot.left, plot.right);
    let ys = panel.y.scale(plot.bottom, plot.top);
    for s in series {
        let points: Vec<(f64, f64, f64, f64)> = s
            .runs
            .iter()
            .map(|r| (r.load, value(r)))
            .filter(|(load, v)| v.is_finite() && load.is_finite())
            .map(|(load, v)| (xs.map(load), ys.map(v), load, v))
            .collect();
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.0, p.1)).collect();
        svg.polyline(&line, s.colour, s.dash);
        for (x, y, load, v) in points {
            let tooltip = format!("{} at load {}: {}", s.label, units::load(load), tip(v));
            svg.marker(s.shape, x, y, s.colour, &tooltip);
        }
    }
}

/// One stacked part of a bar, with its hover text.
#[derive(Debug)]
pub(super) struct Segment {
    pub value: f64,
    pub colour: &'static str,
    pub tooltip: String,
    /// Written inside the segment when it is wide enough, in this text class.
    pub inside: Option<(String, &'static str)>,
}

/// A vertical bar: stacked segments, a value label above it, a label under it.
#[derive(Debug)]
pub(super) struct Bar {
    pub segments: Vec<Segment>,
    pub label: Option<String>,
    pub under: Option<String>,
}

/// Bars side by side under one category label (two lines with `sub`); `note` is written above
/// them in the given text class.
#[derive(Debug)]
pub(super) struct Group {
    pub label: String,
    pub sub: Option<String>,
    pub bars: Vec<Bar>,
    pub note: Option<(String, &'static str)>,
}

/// Draws `groups` of vertical bars across `plot` against the value axis `y`.
pub(super) fn bars(svg: &mut Svg, plot: Plot, y: &Axis, groups: &[Group]) {
    let ys = y.scale(plot.bottom, plot.top);
    let group_w = plot.width() / groups.len().max(1) as f64;
    let gap = 3.0;
    for (gi, group) in groups.iter().enumerate() {
        let g0 = plot.left + gi as f64 * group_w;
        let n = group.bars.len().max(1) as f64;
        let bar_w = ((group_w * 0.74 - gap * (n - 1.0)) / n).min(64.0);
        let x0 = g0 + (group_w - (bar_w * n + gap * (n - 1.0))) / 2.0;
        let mut group_top = plot.bottom;
        for (bi, bar) in group.bars.iter().enumerate() {
            let x = x0 + bi as f64 * (bar_w + gap);
            let mut acc = 0.0;
            for seg in bar
                .segments
                .iter()
                .filter(|s| s.value.is_finite() && s.value > 0.0)
            {
                let (bottom, top) = (ys.map(acc), ys.map(acc + seg.value));
                svg.rect(x, top, bar_w, bottom - top, seg.colour, &seg.tooltip);
                acc += seg.value;
            }
            let top = ys.map(acc);
            group_top = group_top.min(top);
            if let Some(label) = bar.label.as_deref().filter(|_| bar_w >= 30.0) {
                svg.text(x + bar_w / 2.0, top - 5.0, "middle", "value", label);
            }
            if let Some(under) = &bar.under {
                svg.text(
                    x + bar_w / 2.0,
                    plot.bottom + 15.0,
                    "middle",
                    "tick small",
                    under,
                );
            }
        }
        let has_under = group.bars.iter().any(|b| b.under.is_some());
        let label_y = plot.bottom + if has_under { 34.0 } else { 19.0 };
        let mid = g0 + group_w / 2.0;
        svg.text(mid, label_y, "middle", "group", &fit(&group.label, group_w));
        if let Some(sub) = &group.sub {
            svg.text(
                mid,
                label_y + 15.0,
                "middle",
                "group-sub",
                &fit(sub, group_w),
            );
        }
        if let Some((note, class)) = &group.note {
            let lift = if group.bars.iter().any(|b| b.label.is_some()) {
                24.0
            } else {
                8.0
            };
            svg.text(mid, group_top - lift, "middle", class, note);
        }
    }
}

/// One row of a horizontal bar chart: a name on the left, stacked segments, text on the right.
#[derive(Debug)]
pub(super) struct Row {
    pub label: String,
    pub segments: Vec<Segment>,
    pub right: String,
}

/// Horizontal stacked bars, one per row, against the value axis `x`, in an SVG `width` wide.
/// The height follows the number of rows.
pub(super) fn hbars(
    width: f64,
    aria: &str,
    rows: &[Row],
    x: &Axis,
    x_fmt: &dyn Fn(f64) -> String,
    x_title: &str,
) -> String {
    let row_h = 30.0;
    let longest = rows
        .iter()
        .map(|r| r.label.chars().count())
        .max()
        .unwrap_or(0) as f64;
    let label_w = (longest * 7.0 + 24.0).clamp(90.0, 240.0);
    let right_w = rows
        .iter()
        .map(|r| r.right.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 6.4
        + 16.0;
    let height = 16.0 + row_h * rows.len() as f64 + 52.0;
    let plot = Plot {
        left: label_w,
        right: width - right_w - 8.0,
        top: 12.0,
        bottom: height - 52.0,
    };
    let mut svg = Svg::new(width, height, aria);
    let xs = x.scale(plot.left, plot.right);
    for &t in &x.ticks {
        let class = if t == x.lo { "baseline" } else { "grid" };
        svg.line(xs.map(t), plot.top, xs.map(t), plot.bottom, class);
    }
    svg.x_axis(plot, x, x_fmt, x_title);
    let bar_h = row_h - 11.0;
    for (i, row) in rows.iter().enumerate() {
        let y = plot.top + 6.0 + i as f64 * row_h;
        let text_y = y + bar_h / 2.0 + 4.0;
        svg.text(
            plot.left - 10.0,
            text_y,
            "end",
            "group",
            &fit(&row.label, label_w - 10.0),
        );
        let mut acc = 0.0;
        for seg in row
            .segments
            .iter()
            .filter(|s| s.value.is_finite() && s.value > 0.0)
        {
            let (x0, x1) = (xs.map(acc), xs.map(acc + seg.value));
            svg.rect(x0, y, x1 - x0, bar_h, seg.colour, &seg.tooltip);
            if let Some((text, class)) = &seg.inside
                && x1 - x0 >= text.chars().count() as f64 * 6.6 + 8.0
            {
                svg.text((x0 + x1) / 2.0, text_y, "middle", class, text);
            }
            acc += seg.value;
        }
        svg.text(
            xs.map(acc).max(plot.left) + 8.0,
            text_y,
            "start",
            "value",
            &row.right,
        );
    }
    svg.finish()
}

/// `label` cut with an ellipsis to fit about `width` SVG units of 12-unit text.
pub(super) fn fit(label: &str, width: f64) -> String {
    let max = ((width - 6.0) / 6.8).floor().max(3.0) as usize;
    if label.chars().count() <= max {
        label.to_owned()
    } else {
        let mut cut: String = label.chars().take(max - 1).collect();
        cut.push('\u{2026}');
        cut
    }
}

//! Just enough SVG for the report's charts: axes with "nice" ticks (linear, or log10 when the
//! values span more than two decades), a string builder that escapes every text it places, and
//! markers and legend swatches so series differ by shape as well as colour.

use super::esc;

/// Okabe-Ito, the colour-blind-safe palette, in the order series take it. Yellow comes last: it
/// is the hardest to read on white.
pub(super) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442",
];

/// Colour of the `i`th series.
pub(super) fn colour(i: usize) -> &'static str {
    PALETTE[i % PALETTE.len()]
}

/// A value axis switches to log10 when its largest value is more than this many times its
/// smallest (two decades).
const LOG_SPAN: f64 = 100.0;

/// Domain and tick positions of one axis.
#[derive(Debug, Clone)]
pub(super) struct Axis {
    pub log: bool,
    pub lo: f64,
    pub hi: f64,
    pub ticks: Vec<f64>,
}

impl Axis {
    /// An axis for quantities (latency, goodput, CPU): from 0 to a nice round maximum, or log10
    /// over whole decades when `allow_log` and the positive values span more than two decades.
    pub fn values(values: impl IntoIterator<Item = f64>, allow_log: bool) -> Self {
        let values: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        let max = values.iter().copied().fold(0.0_f64, f64::max);
        let min_pos = values
            .iter()
            .copied()
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        if allow_log && min_pos.is_finite() && max / min_pos > LOG_SPAN {
            let lo = 10_f64.powf(min_pos.log10().floor());
            let hi = 10_f64.powf(max.log10().ceil());
            let decades = (hi / lo).log10().round() as i32;
            let ticks = (0..=decades).map(|d| lo * 10_f64.powi(d)).collect();
            return Self {
                log: true,
                lo,
                hi,
                ticks,
            };
        }
        let hi = if max > 0.0 { max } else { 1.0 };
        let step = nice_step(hi, 5.0);
        let hi = (hi / step - 1e-9).ceil() * step;
        let ticks = (0..=((hi / step).round() as usize))
            .map(|i| i as f64 * step)
            .collect();
        Self {
            log: false,
            lo: 0.0,
            hi,
            ticks,
        }
    }

    /// An axis for load points: ticks at the points themselves (when there are few), a margin on
    /// both sides so markers do not sit on the frame, log10 when the points span 10x or more.
    pub fn loads(loads: &[f64]) -> Self {
        let min = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let max = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let ticks = if loads.len() <= 10 {
            loads.to_vec()
        } else {
            let step = nice_step(max - min, 6.0);
            let first = (min / step).ceil() as i64;
            let last = (max / step).floor() as i64;
            (first..=last).map(|i| i as f64 * step).collect()
        };
        if min > 0.0 && max / min >= 10.0 {
            let pad = (max / min).powf(0.06);
            Self {
                log: true,
                lo: min / pad,
                hi: max * pad,
                ticks,
            }
        } else {
            let pad = ((max - min) * 0.06).max(f64::EPSILON);
            Self {
                log: false,
                lo: min - pad,
                hi: max + pad,
                ticks,
            }
        }
    }

    /// Maps this axis onto pixels `r0..r1`.
    pub fn scale(&self, r0: f64, r1: f64) -> Scale {
        Scale {
            log: self.log,
            d0: self.lo,
            d1: self.hi,
            r0,
            r1,
        }
    }
}

/// A step of 1, 2, 2.5 or 5 times a power of ten giving about `target` intervals over `range`.
fn nice_step(range: f64, target: f64) -> f64 {
    let raw = (range / target).max(f64::MIN_POSITIVE);
    let magnitude = 10_f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = [1.0, 2.0, 2.5, 5.0]
        .into_iter()
        .find(|n| norm <= *n + 1e-9)
        .unwrap_or(10.0);
    nice * magnitude
}

/// Data to pixels along one axis.
#[derive(Debug, Clone, Copy)]
pub(super) struct Scale {
    log: bool,
    d0: f64,
    d1: f64,
    r0: f64,
    r1: f64,
}

impl Scale {
    pub fn map(&self, v: f64) -> f64 {
        let (a, b, v) = if self.log {
            (self.d0.log10(), self.d1.log10(), v.max(self.d0).log10())
        } else {
            (self.d0, self.d1, v)
        };
        if (b - a).abs() < f64::EPSILON {
            return (self.r0 + self.r1) / 2.0;
        }
        self.r0 + (v - a) / (b - a) * (self.r1 - self.r0)
    }
}

/// The plot area of a chart, in SVG pixels (`top < bottom`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Plot {
    pub left: f64,
    pub right: f64,
    pub top: f64,
    pub bottom: f64,
}

impl Plot {
    pub fn width(&self) -> f64 {
        self.right - self.left
    }

    pub fn mid_x(&self) -> f64 {
        (self.left + self.right) / 2.0
    }
}

/// Builds one `<svg>` element. Every text goes through [`esc`].
#[derive(Debug)]
pub(super) struct Svg {
    out: String,
}

impl Svg {
    /// An SVG `width` x `height` units that scales to its container; `label` is read by screen
    /// readers. No `xmlns`: inline SVG in HTML does not need one, and the page links nowhere.
    pub fn new(width: f64, height: f64, label: &str) -> Self {
        Self {
            out: format!(
                "<svg class=\"plot\" viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" \
                 aria-label=\"{}\">",
                esc(label)
            ),
        }
    }

    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>");
        self.out
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, class: &str) {
        self.out.push_str(&format!(
            "<line class=\"{class}\" x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\"/>"
        ));
    }

    /// Text anchored `start`, `middle` or `end` at (x, y), baseline at y.
    pub fn text(&mut self, x: f64, y: f64, anchor: &str, class: &str, text: &str) {
        self.out.push_str(&format!(
            "<text class=\"{class}\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\">{}</text>",
            esc(text)
        ));
    }

    /// A filled rectangle with a hover tooltip.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, tooltip: &str) {
        self.out.push_str(&format!(
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\">\
             <title>{}</title></rect>",
            w.max(0.0),
            h.max(0.0),
            esc(tooltip)
        ));
    }

    /// A polyline through `points`, dashed with the SVG `dash` pattern if given.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str, dash: Option<&str>) {
        let d: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let dash = dash.map_or_else(String::new, |d| format!(" stroke-dasharray=\"{d}\""));
        self.out.push_str(&format!(
            "<polyline class=\"series\" points=\"{}\" stroke=\"{stroke}\"{dash}/>",
            d.join(" ")
        ));
    }

    /// Marker `shape` (0 circle, 1 square, 2 triangle, 3 diamond, then again) with a tooltip.
    pub fn marker(&mut self, shape: usize, x: f64, y: f64, fill: &str, tooltip: &str) {
        self.out.push_str(&format!(
            "<g class=\"marker\">{}<title>{}</title></g>",
            marker_shape(shape, x, y, fill),
            esc(tooltip)
        ));
    }

    /// An invisible hover target at (x, y) showing `tooltip`.
    pub fn hover(&mut self, x: f64, y: f64, tooltip: &str) {
        self.out.push_str(&format!(
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"9\" fill=\"transparent\"><title>{}</title></circle>",
            esc(tooltip)
        ));
    }

    /// Horizontal gridlines and labels for a value axis on the left of `plot`, and its title.
    pub fn y_axis(&mut self, plot: Plot, axis: &Axis, fmt: &dyn Fn(f64) -> String, title: &str) {
        let scale = axis.scale(plot.bottom, plot.top);
        for &tick in &axis.ticks {
            let y = scale.map(tick);
            let class = if tick == axis.lo { "baseline" } else { "grid" };
            self.line(plot.left, y, plot.right, y, class);
            self.text(plot.left - 8.0, y + 4.0, "end", "tick", &fmt(tick));
        }
        let (x, y) = (plot.left - 58.0, (plot.top + plot.bottom) / 2.0);
        self.out.push_str(&format!(
            "<text class=\"axis-title\" x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {x:.1} {y:.1})\">{}</text>",
            esc(title)
        ));
    }

    /// Tick marks and labels for a load axis under `plot`, and its title.
    pub fn x_axis(&mut self, plot: Plot, axis: &Axis, fmt: &dyn Fn(f64) -> String, title: &str) {
        let scale = axis.scale(plot.left, plot.right);
        for &tick in &axis.ticks {
            let x = scale.map(tick);
            self.line(x, plot.bottom, x, plot.bottom + 5.0, "baseline");
            self.text(x, plot.bottom + 19.0, "middle", "tick", &fmt(tick));
        }
        self.text(
            plot.mid_x(),
            plot.bottom + 40.0,
            "middle",
            "axis-title",
            title,
        );
    }
}

fn marker_shape(shape: usize, x: f64, y: f64, fill: &str) -> String {
    let stroke = "stroke=\"#fff\" stroke-width=\"1.5\"";
    match shape % 4 {
        0 => format!("<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"4.5\" fill=\"{fill}\" {stroke}/>"),
        1 => format!(
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"8.5\" height=\"8.5\" fill=\"{fill}\" {stroke}/>",
            x - 4.25,
            y - 4.25
        ),
        2 => format!(
            "<path d=\"M{x:.1} {:.1}L{:.1} {:.1}L{:.1} {:.1}Z\" fill=\"{fill}\" {stroke}/>",
            y - 5.5,
            x + 5.5,
            y + 4.0,
            x - 5.5,
            y + 4.0
        ),
        _ => format!(
            "<path d=\"M{x:.1} {:.1}L{:.1} {y:.1}L{x:.1} {:.1}L{:.1} {y:.1}Z\" fill=\"{fill}\" {stroke}/>",
            y - 5.5,
            x + 5.5,
            y + 5.5,
            x - 5.5
        ),
    }
}

/// A legend entry for a line series: a short stroke (dashed with `dash`) with its marker, then
/// the label.
pub(super) fn key_line(
    colour: &str,
    shape: Option<usize>,
    dash: Option<&str>,
    label: &str,
) -> String {
    let dash = dash.map_or_else(String::new, |d| format!(" stroke-dasharray=\"{d}\""));
    let marker = shape
        .map(|s| marker_shape(s, 17.0, 7.0, colour))
        .unwrap_or_default();
    format!(
        "<span class=\"key\"><svg width=\"34\" height=\"14\" viewBox=\"0 0 34 14\" aria-hidden=\"true\">\
         <line x1=\"1\" y1=\"7\" x2=\"33\" y2=\"7\" stroke=\"{colour}\" stroke-width=\"2.5\"{dash}/>\
         {marker}</svg>{}</span>",
        esc(label)
    )
}

/// A legend entry for a filled area: a small box, then the label.
pub(super) fn key_box(colour: &str, label: &str) -> String {
    format!(
        "<span class=\"key\"><svg width=\"14\" height=\"14\" viewBox=\"0 0 14 14\" aria-hidden=\"true\">\
         <rect x=\"1\" y=\"1\" width=\"12\" height=\"12\" rx=\"2\" fill=\"{colour}\"/></svg>{}</span>",
        esc(label)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_axis_goes_log_beyond_two_decades() {
        // 20 us .. 1.5 ms: 75x, linear from 0 to 1500 (raw step 300 -> 500).
        let linear = Axis::values([20.0, 1_500.0], true);
        assert!(!linear.log);
        assert_eq!(linear.lo, 0.0);
        assert_eq!(linear.ticks, vec![0.0, 500.0, 1_000.0, 1_500.0]);
        // 20 us .. 3 ms: 150x, log over the decades 10 .. 10,000.
        let log = Axis::values([20.0, 3_000.0], true);
        assert!(log.log);
        assert_eq!(log.ticks, vec![10.0, 100.0, 1_000.0, 10_000.0]);
        assert!(!Axis::values([20.0, 3_000.0], false).log);
    }

    #[test]
    fn nice_steps_are_round() {
        assert_eq!(nice_step(1_000.0, 5.0), 200.0); // raw 200
        assert_eq!(nice_step(1_100.0, 5.0), 250.0); // raw 220 -> 2.5
        assert_eq!(nice_step(7.0, 5.0), 2.0); // raw 1.4 -> 2
    }

    #[test]
    fn scales_map_ends_to_ends() {
        let axis = Axis {
            log: true,
            lo: 10.0,
            hi: 1_000.0,
            ticks: vec![],
        };
        let scale = axis.scale(300.0, 0.0);
        assert!((scale.map(10.0) - 300.0).abs() < 1e-9);
        assert!((scale.map(100.0) - 150.0).abs() < 1e-9);
        assert!((scale.map(1_000.0) - 0.0).abs() < 1e-9);
    }
}

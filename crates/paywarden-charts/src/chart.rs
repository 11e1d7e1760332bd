//! A line chart over seconds, as an SVG string: the one chart style of paywarden's reports.
//!
//! Lines are runs of (seconds, value) points (a missing value breaks a line, so gaps stay
//! visible); vertical marks (a step start, a rollback) are drawn across the plot with their
//! labels in a band above it, where they cannot cover the data, staggered in
//! [`MARK_LABEL_ROWS`] rows, shortened or left out where there is no room (the page lists
//! them all). The legend is HTML below the chart ([`crate::page::figure`]), not drawn over
//! the plot.
//!
//! Sizes are what the page shows, so fonts are drawn at the size they are read: plotters'
//! SVG backend writes `font-size` as the requested size ÷ 1.24, which is why every font here
//! goes through [`font_size`].

use std::ops::Range;

use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;

use crate::ticks;

/// Most points a line may hold; callers reduce longer series into buckets before drawing.
pub const POINTS_MAX: usize = 2_000;
/// Most lines drawn in one chart.
pub const LINES_MAX: usize = 32;
/// Most vertical marks drawn in one chart.
pub const MARKS_MAX: usize = 40;
/// A logarithmic axis is used (with [`Scale::LogIfWide`]) when the highest point is this many
/// times the lowest (one slow second would otherwise flatten every other).
pub const LOG_SCALE_RATIO: f64 = 20.0;
/// Rows of mark labels in the band above the plot.
pub const MARK_LABEL_ROWS: usize = 2;

/// Font family of every text in a chart.
pub const FONT_FAMILY: &str = "sans-serif";
/// Axis labels and descriptions, CSS pixels as shown.
pub const FONT_PX: f64 = 14.0;
/// Mark labels, CSS pixels as shown.
pub const MARK_FONT_PX: f64 = 13.0;
/// Width of one character of a chart's text, as a share of its font size: generous for
/// `sans-serif` (DejaVu Sans averages about 0.55), so labels laid out by it do not touch.
pub const CHAR_WIDTH_EM: f64 = 0.62;
/// Text and axis colour.
pub const TEXT: RGBColor = RGBColor(51, 51, 51);
const GRID_LIGHT: RGBColor = RGBColor(245, 245, 245);
const GRID_BOLD: RGBColor = RGBColor(218, 218, 218);
const MARK_LABEL_ROW_PX: i32 = 17;
const MARK_LABEL_GAP_PX: i32 = 8;
/// Share of the data's span left free above and below the lines.
const HEADROOM: f64 = 0.08;

/// plotters' SVG backend writes `font-size` as the size it is given ÷ 1.24; this is the size
/// to give it for `px` CSS pixels.
pub fn font_size(px: f64) -> f64 {
    px * 1.24
}

/// Estimated width of `text` at `px` CSS pixels.
pub fn text_width_px(text: &str, px: f64) -> i32 {
    (text.chars().count() as f64 * px * CHAR_WIDTH_EM).ceil() as i32
}

/// A chart's size in the page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// The page's width: 880 × 300 px.
    Full,
    /// One of a row of small charts (two or three side by side): 340 × 230 px.
    Small,
}

impl Size {
    /// (width, height) in pixels.
    pub fn px(self) -> (u32, u32) {
        match self {
            Size::Full => (880, 300),
            Size::Small => (340, 230),
        }
    }
    fn x_labels(self) -> usize {
        match self {
            Size::Full => 12,
            Size::Small => 5,
        }
    }
    fn y_labels(self) -> usize {
        match self {
            Size::Full => 8,
            Size::Small => 6,
        }
    }
}

/// How the y axis is fitted to the values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scale {
    /// From zero (or the lowest value, if negative) up.
    Zero,
    /// Around the values: memory, where the growth is small beside the size.
    Fit,
    /// Logarithmic when the values span [`LOG_SCALE_RATIO`], else [`Scale::Zero`].
    LogIfWide,
    /// Around zero and the values, spanning at least `span_min`, so noise of a few units
    /// does not fill the chart as if it were growth.
    Growth { span_min: f64 },
}

/// One line: runs of (seconds, value), split where values are missing.
#[derive(Debug, Clone)]
pub struct Line {
    /// For the legend.
    pub label: String,
    pub color: RGBColor,
    /// Drawn thin and pale (a median under its p99), under the others.
    pub thin: bool,
    pub runs: Vec<Vec<(f64, f64)>>,
}

/// A vertical mark: a step start, a rollback.
#[derive(Debug, Clone)]
pub struct Mark {
    /// Seconds.
    pub x: f64,
    /// Its label: `step 3 · 25 %`.
    pub label: String,
    /// Used where the label has no room: `25 %`.
    pub short_label: String,
    /// What the mark is, for the legend: `step start`, `rollback`.
    pub kind: String,
    pub color: RGBColor,
    /// A solid, thick line labelled first (a rollback); else thin and dashed.
    pub strong: bool,
}

/// A chart to draw.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub x_desc: &'a str,
    pub y_desc: &'a str,
    pub scale: Scale,
    pub size: Size,
    /// The x axis runs from 0 to this (at least 1), in seconds.
    pub x_max: f64,
    pub lines: Vec<Line>,
    pub marks: &'a [Mark],
}

/// Where a mark's label went: its row in the band, its left edge, and whether it is the
/// short label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placed {
    pub row: usize,
    pub left: i32,
    pub short: bool,
}

/// Lays out mark labels in `rows` rows so that none overlaps another: each label goes right of
/// its line (left of it where it would pass `right_edge`), in the first row with room; failing
/// that its short form; failing that nothing. `marks` are (line x, label width, short label
/// width) in pixels; strong marks (`strong[i]`) are placed first. Pure, for tests.
pub fn place_labels(marks: &[(i32, i32, i32)], strong: &[bool], right_edge: i32, rows: usize) -> Vec<Option<Placed>> {
    let mut taken: Vec<Vec<(i32, i32)>> = vec![Vec::new(); rows];
    let mut placed = vec![None; marks.len()];
    let mut order: Vec<usize> = (0..marks.len()).collect();
    order.sort_by_key(|i| (!strong.get(*i).copied().unwrap_or(false), marks[*i].0));
    for i in order {
        let (x, full, short) = marks[i];
        'try_label: for (width, is_short) in [(full, false), (short, true)] {
            if width <= 0 {
                continue;
            }
            let left = if x + 4 + width > right_edge { x - 4 - width } else { x + 4 };
            let right = left + width;
            for (row, spans) in taken.iter_mut().enumerate() {
                let free = spans.iter().all(|(l, r)| right + MARK_LABEL_GAP_PX <= *l || *r + MARK_LABEL_GAP_PX <= left);
                if free {
                    spans.push((left, right));
                    placed[i] = Some(Placed { row, left, short: is_short });
                    break 'try_label;
                }
            }
        }
    }
    placed
}

impl Chart<'_> {
    fn marks_drawn(&self) -> impl Iterator<Item = &Mark> {
        self.marks.iter().filter(|m| m.x.is_finite()).take(MARKS_MAX)
    }

    fn band_px(&self) -> u32 {
        if self.marks_drawn().next().is_some() {
            (MARK_LABEL_ROWS as i32 * MARK_LABEL_ROW_PX + 6) as u32
        } else {
            0
        }
    }

    /// The y range and whether it is logarithmic.
    fn y_range(&self) -> (Range<f64>, bool) {
        let ys: Vec<f64> = self.lines.iter().flat_map(|l| l.runs.iter().flatten()).map(|(_, y)| *y).filter(|y| y.is_finite()).collect();
        let (Some(lo), Some(hi)) = (ys.iter().copied().reduce(f64::min), ys.iter().copied().reduce(f64::max)) else {
            return (0.0..1.0, false);
        };
        let floor = lo.min(0.0);
        let (range, log) = match self.scale {
            Scale::LogIfWide => {
                let lo_pos = ys.iter().copied().filter(|y| *y > 0.0).reduce(f64::min);
                if let Some(lo_pos) = lo_pos.filter(|l| hi / l >= LOG_SCALE_RATIO) {
                    // Down to a power of ten, so the axis has its ticks.
                    let bottom = 10f64.powf(lo_pos.log10().floor());
                    let top = hi * (hi / bottom).powf(HEADROOM);
                    if bottom > 0.0 && top.is_finite() && top > bottom {
                        return (bottom..top, true);
                    }
                }
                (floor..(hi * (1.0 + HEADROOM)).max(1.0), false)
            }
            Scale::Zero => (floor..(hi * (1.0 + HEADROOM)).max(1.0), false),
            Scale::Fit => {
                let span = (hi - lo).max(hi.abs() * 0.001).max(0.01);
                (lo - span * HEADROOM..hi + span * HEADROOM, false)
            }
            Scale::Growth { span_min } => {
                let (mut bottom, mut top) = (lo.min(0.0), hi.max(0.0));
                let span_min = if span_min.is_finite() && span_min > 0.0 { span_min } else { 1.0 };
                if top - bottom < span_min {
                    // Widen away from zero on the side the values lean to.
                    if top >= -bottom {
                        top = bottom + span_min;
                    } else {
                        bottom = top - span_min;
                    }
                }
                let pad = (top - bottom) * HEADROOM;
                (bottom - pad..top + pad, false)
            }
        };
        // Values near the limits of f64 can overflow the headroom.
        if range.start.is_finite() && range.end.is_finite() && range.end > range.start {
            (range, log)
        } else {
            (0.0..1.0, false)
        }
    }

    /// Draws the chart as an SVG string (with `xmlns`; [`crate::page::figure`] inlines it).
    pub fn svg(&self) -> Result<String, String> {
        debug_assert!(self.lines.iter().all(|l| l.runs.iter().map(Vec::len).sum::<usize>() <= POINTS_MAX), "reduce lines to POINTS_MAX first");
        let x_range = 0.0..(if self.x_max.is_finite() { self.x_max * 1.02 } else { 0.0 }).max(1.0);
        let (y, log) = self.y_range();
        let (w, h) = self.size.px();
        let mut svg = String::new();
        {
            let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
            let root = SVGBackend::with_string(&mut svg, (w, h)).into_drawing_area();
            root.fill(&WHITE).map_err(|x| e(&x))?;
            let mut builder = ChartBuilder::on(&root);
            let small = self.size == Size::Small;
            builder
                .margin_top(10 + self.band_px())
                .margin_bottom(6)
                .margin_left(6)
                .margin_right(if small { 14 } else { 24 })
                .x_label_area_size(if small { 42 } else { 46 })
                .y_label_area_size(if small { 64 } else { 76 });
            let y_desc = if log { format!("{} (log scale)", self.y_desc) } else { self.y_desc.to_string() };
            if log {
                let mut chart = builder.build_cartesian_2d(x_range.clone(), y.clone().log_scale()).map_err(|x| e(&x))?;
                self.paint(&root, &mut chart, &y_desc, &x_range, &y, None)?;
            } else {
                let mut chart = builder.build_cartesian_2d(x_range.clone(), y.clone()).map_err(|x| e(&x))?;
                let decimals = ticks::decimals(&y, self.size.y_labels());
                self.paint(&root, &mut chart, &y_desc, &x_range, &y, Some(decimals))?;
            }
            root.present().map_err(|x| e(&x))?;
        }
        Ok(svg)
    }

    fn paint<'a, 'b, Y>(
        &self,
        root: &DrawingArea<SVGBackend<'b>, Shift>,
        chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
        y_desc: &str,
        x: &Range<f64>,
        y: &Range<f64>,
        y_decimals: Option<usize>,
    ) -> Result<(), String>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
        let x_decimals = ticks::decimals(x, self.size.x_labels());
        let x_fmt = |v: &f64| ticks::linear(*v, x_decimals);
        let y_fmt = |v: &f64| match y_decimals {
            Some(d) => ticks::linear(*v, d),
            None => ticks::log(*v),
        };
        let label_font = (FONT_FAMILY, font_size(FONT_PX)).into_font().color(&TEXT);
        chart
            .configure_mesh()
            .light_line_style(GRID_LIGHT)
            .bold_line_style(GRID_BOLD)
            .axis_style(TEXT.mix(0.6))
            .x_labels(self.size.x_labels())
            .y_labels(self.size.y_labels())
            .x_desc(self.x_desc)
            .y_desc(y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(label_font.clone())
            .axis_desc_style(label_font)
            .draw()
            .map_err(|x| e(&x))?;
        // Within the axis, always: a log axis has no zero, and a range that fell back to 0..1
        // must not send a line across the page.
        let inside = |&(px, v): &(f64, f64)| (px, v.max(y.start).min(y.end));
        // Thin lines first, so the others stay on top.
        let lines = self.lines.iter().take(LINES_MAX);
        for line in lines.clone().filter(|l| l.thin).chain(lines.filter(|l| !l.thin)) {
            let style = if line.thin { line.color.mix(0.55).stroke_width(1) } else { line.color.stroke_width(2) };
            for run in &line.runs {
                if run.len() == 1 {
                    chart.draw_series(run.iter().map(|p| Circle::new(inside(p), 3, style.filled()))).map_err(|x| e(&x))?;
                } else {
                    chart.draw_series(LineSeries::new(run.iter().map(inside), style)).map_err(|x| e(&x))?;
                }
            }
        }
        self.paint_marks(root, chart, y)
    }

    /// The marks across the plot, and their labels in the band above it (drawn on `root`, in
    /// pixels, since the band is outside the plot).
    fn paint_marks<'a, 'b, Y>(
        &self,
        root: &DrawingArea<SVGBackend<'b>, Shift>,
        chart: &mut ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>,
        y: &Range<f64>,
    ) -> Result<(), String>
    where
        Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
    {
        let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
        let marks: Vec<&Mark> = self.marks_drawn().collect();
        if marks.is_empty() {
            return Ok(());
        }
        // Weak marks first, so the strong ones are drawn over them.
        for m in marks.iter().filter(|m| !m.strong).chain(marks.iter().filter(|m| m.strong)) {
            let path = vec![(m.x, y.start), (m.x, y.end)];
            if m.strong {
                chart.draw_series(std::iter::once(PathElement::new(path, m.color.stroke_width(2)))).map_err(|x| e(&x))?;
            } else {
                chart
                    .draw_series(std::iter::once(DashedPathElement::new(path, 5, 4, m.color.mix(0.7).stroke_width(1))))
                    .map_err(|x| e(&x))?;
            }
        }
        let (plot_x, plot_y) = chart.plotting_area().get_pixel_range();
        let (w, _) = self.size.px();
        let geometry: Vec<(i32, i32, i32)> = marks
            .iter()
            .map(|m| (chart.backend_coord(&(m.x, y.end)).0, text_width_px(&m.label, MARK_FONT_PX), text_width_px(&m.short_label, MARK_FONT_PX)))
            .collect();
        let strong: Vec<bool> = marks.iter().map(|m| m.strong).collect();
        let placed = place_labels(&geometry, &strong, (w as i32 - 4).max(plot_x.end), MARK_LABEL_ROWS);
        let band_top = plot_y.start - self.band_px() as i32;
        for (m, (g, p)) in marks.iter().zip(geometry.iter().zip(&placed)) {
            let Some(p) = p else { continue };
            let row_top = band_top + p.row as i32 * MARK_LABEL_ROW_PX;
            // The line goes on up to its label's row.
            let stroke = if m.strong { m.color.stroke_width(2) } else { m.color.mix(0.7).stroke_width(1) };
            root.draw(&PathElement::new(vec![(g.0, row_top + 2), (g.0, plot_y.start)], stroke)).map_err(|x| e(&x))?;
            let text = if p.short { &m.short_label } else { &m.label };
            let font = (FONT_FAMILY, font_size(MARK_FONT_PX)).into_font().color(&m.color);
            root.draw(&Text::new(text.clone(), (p.left, row_top + 2), font)).map_err(|x| e(&x))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn overlap(a: &[(i32, i32, i32)], placed: &[Option<Placed>]) -> bool {
        let spans: Vec<(usize, i32, i32)> = placed
            .iter()
            .zip(a)
            .filter_map(|(p, (_, full, short))| p.map(|p| (p.row, p.left, p.left + if p.short { *short } else { *full })))
            .collect();
        spans.iter().enumerate().any(|(i, s)| spans[i + 1..].iter().any(|t| s.0 == t.0 && s.1 < t.2 && t.1 < s.2))
    }

    #[test]
    fn close_step_labels_are_staggered_shortened_or_left_out_never_overlapping() {
        // The promoted drill: steps at 0, 11, 14, 17 and 20 s on a 23 s axis, 780 px wide.
        let px = |s: f64| 76 + (s / 23.5 * 780.0) as i32;
        let w = |t: &str| text_width_px(t, MARK_FONT_PX);
        let labels = [(0.0, "step 1 · 1 %", "1 %"), (11.0, "step 2 · 5 %", "5 %"), (14.0, "step 3 · 25 %", "25 %"), (17.0, "step 4 · 50 %", "50 %"), (20.0, "step 5 · 100 %", "100 %")];
        let geometry: Vec<(i32, i32, i32)> = labels.iter().map(|(s, l, sh)| (px(*s), w(l), w(sh))).collect();
        let placed = place_labels(&geometry, &[false; 5], 870, MARK_LABEL_ROWS);
        assert!(!overlap(&geometry, &placed), "{placed:?}");
        assert!(placed.iter().all(Option::is_some), "room for all five here: {placed:?}");
        // Forty marks in 100 px: some are left out, none overlap.
        let crowded: Vec<(i32, i32, i32)> = (0..40).map(|i| (100 + i * 2, 90, 30)).collect();
        let placed = place_labels(&crowded, &[false; 40], 870, MARK_LABEL_ROWS);
        assert!(!overlap(&crowded, &placed));
        assert!(placed.iter().any(Option::is_none));
        // A strong mark (the rollback) is placed before the steps crowding it.
        let mut strong = [false; 40];
        strong[39] = true;
        let placed = place_labels(&crowded, &strong, 870, MARK_LABEL_ROWS);
        assert!(placed[39].is_some_and(|p| p.row == 0 && !p.short));
        // Near the right edge a label goes left of its line.
        let edge = place_labels(&[(860, 90, 30)], &[true], 870, 1);
        assert_eq!(edge[0], Some(Placed { row: 0, left: 860 - 4 - 90, short: false }));
    }

    #[test]
    fn growth_scale_keeps_zero_and_a_minimum_span() {
        let chart = |ys: &[f64]| Chart {
            x_desc: "s",
            y_desc: "KiB",
            scale: Scale::Growth { span_min: 256.0 },
            size: Size::Small,
            x_max: 10.0,
            lines: vec![Line { label: "a".into(), color: TEXT, thin: false, runs: vec![ys.iter().enumerate().map(|(i, y)| (i as f64, *y)).collect()] }],
            marks: &[],
        };
        let (r, log) = chart(&[0.0, 3.0, -2.0]).y_range();
        assert!(!log && r.start < -2.0 && r.end >= 254.0 && r.end - r.start >= 256.0, "{r:?}");
        let (r, _) = chart(&[0.0, 600.0]).y_range();
        assert!(r.start < 0.0 && r.end > 600.0 && r.end < 700.0, "{r:?}");
        let (r, _) = chart(&[0.0, -400.0]).y_range();
        assert!(r.start < -400.0 && r.end > 0.0, "{r:?}");
    }

    #[test]
    fn a_chart_draws_its_lines_marks_and_text_at_the_size_it_is_read() {
        let marks = [
            Mark { x: 1.0, label: "step 1 · 1 %".into(), short_label: "1 %".into(), kind: "step start".into(), color: TEXT, strong: false },
            Mark { x: 8.0, label: "rollback".into(), short_label: "rollback".into(), kind: "rollback".into(), color: RGBColor(176, 0, 32), strong: true },
        ];
        let chart = Chart {
            x_desc: "seconds",
            y_desc: "per second",
            scale: Scale::Zero,
            size: Size::Full,
            x_max: 10.0,
            lines: vec![Line { label: "requests/s".into(), color: RGBColor(31, 119, 180), thin: false, runs: vec![(0..10).map(|i| (i as f64, 1600.0)).collect()] }],
            marks: &marks,
        };
        let svg = chart.svg().unwrap();
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains(">\nrollback\n</text>") && svg.contains(">\nstep 1 · 1 %\n</text>"), "{svg}");
        let sizes: Vec<f64> = svg.split("font-size=\"").skip(1).filter_map(|s| s.split('"').next()?.parse().ok()).collect();
        assert!(!sizes.is_empty() && sizes.iter().all(|s| (s - FONT_PX).abs() < 0.01 || (s - MARK_FONT_PX).abs() < 0.01), "text at the size it is read: {sizes:?}");
        assert!(!svg.contains(".0\n</text>"), "no spurious decimals: {svg}");
    }
}

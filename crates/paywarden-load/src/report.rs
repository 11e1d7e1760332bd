//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched)
//! that can be attached to a CI run or a pull request and opened years later.
//!
//! Charts are drawn with plotters' SVG backend into strings: throughput and errors per
//! second, latency p50/p99 per second, and the target's memory when it was sampled. Every
//! string from the run (scenario name, error kinds, thresholds, memory detail) is escaped.

use std::fmt::Write as _;
use std::ops::Range;

use plotters::prelude::*;

use crate::summary::{SecondPoint, Summary, format_bytes};
use crate::threshold::format_actual;

/// Most points a chart line holds: longer timelines are averaged (throughput) or reduced to
/// their peak (latency, memory) per bucket, so a week-long run still makes a small file.
pub const CHART_POINTS_MAX: usize = 2_000;
/// Chart size in pixels.
pub const CHART_WIDTH_PX: u32 = 900;
/// Chart size in pixels.
pub const CHART_HEIGHT_PX: u32 = 320;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:1000px}\
h1{font-size:1.5em}h2{font-size:1.15em;margin-top:2em}\
table{border-collapse:collapse;margin:0.5em 0}\
td,th{border:1px solid #ccc;padding:4px 10px;text-align:right}\
td:first-child,th:first-child{text-align:left}\
.pass{color:#17702a;font-weight:bold}.fail{color:#b00020;font-weight:bold}\
.chart{margin:1em 0}";

/// The report for `summary` as one HTML document.
pub fn html(summary: &Summary) -> String {
    let mut out = String::new();
    let title = format!("paywarden load: {}", summary.scenario);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        escape(&title)
    );
    let verdict = if summary.passed {
        "<span class=\"pass\">passed</span>"
    } else {
        "<span class=\"fail\">FAILED</span>"
    };
    let _ = writeln!(
        out,
        "<p>{} — {:.1} s — {verdict}</p>",
        escape(&summary.executor),
        summary.duration_s
    );

    counts_table(&mut out, summary);
    latency_table(&mut out, summary);
    thresholds_table(&mut out, summary);
    memory_table(&mut out, summary);

    let _ = writeln!(out, "<h2>Throughput</h2>");
    push_chart(&mut out, throughput_chart(&summary.timeline));
    let _ = writeln!(out, "<h2>Latency per second</h2>");
    push_chart(&mut out, latency_chart(&summary.timeline));
    if has_memory(&summary.timeline) {
        let _ = writeln!(out, "<h2>Target memory</h2>");
        push_chart(&mut out, memory_chart(&summary.timeline));
    }
    out.push_str("</body>\n</html>\n");
    out
}

fn counts_table(out: &mut String, s: &Summary) {
    let pct = |x: f64| format!("{:.3} %", x * 100.0);
    let rows: Vec<(&str, String)> = vec![
        ("requests", s.requests_total.to_string()),
        (
            "requests per second",
            format!("{:.1}", s.requests_per_second),
        ),
        ("iterations scheduled", s.iterations_scheduled.to_string()),
        ("iterations started", s.iterations_started.to_string()),
        ("iterations completed", s.iterations_completed.to_string()),
        (
            "dropped iterations",
            format!("{} ({})", s.dropped_iterations, pct(s.dropped_rate)),
        ),
        (
            "errors",
            format!("{} ({})", s.errors_total, pct(s.error_rate)),
        ),
        ("checks verified", s.checks_verified.to_string()),
        ("checks mismatched", s.checks_mismatched.to_string()),
    ];
    let _ = writeln!(out, "<h2>Counts</h2>\n<table>");
    for (label, value) in rows {
        let _ = writeln!(out, "<tr><th>{label}</th><td>{}</td></tr>", escape(&value));
    }
    for (kind, count) in &s.errors {
        let _ = writeln!(
            out,
            "<tr><th>errors: {}</th><td>{count}</td></tr>",
            escape(kind)
        );
    }
    let _ = writeln!(out, "</table>");
}

fn latency_table(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "<h2>Latency (ms)</h2>\n<table>\n<tr><th>operation</th><th>count</th><th>p50</th>\
         <th>p90</th><th>p99</th><th>p99.9</th><th>max</th><th>mean</th></tr>"
    );
    for (name, p) in s.latency_rows() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td>\
             <td>{:.2}</td><td>{:.2}</td></tr>",
            escape(name),
            p.count,
            p.p50,
            p.p90,
            p.p99,
            p.p99_9,
            p.max,
            p.mean
        );
    }
    let _ = writeln!(out, "</table>");
}

fn thresholds_table(out: &mut String, s: &Summary) {
    if s.thresholds.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "<h2>Thresholds</h2>\n<table>\n<tr><th>threshold</th><th>actual</th><th>result</th></tr>"
    );
    for r in &s.thresholds {
        let result = if r.passed {
            "<span class=\"pass\">✓ pass</span>"
        } else {
            "<span class=\"fail\">✗ fail</span>"
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{result}</td></tr>",
            escape(&r.threshold),
            escape(&format_actual(&r.threshold, r.actual))
        );
    }
    let _ = writeln!(out, "</table>");
}

fn memory_table(out: &mut String, s: &Summary) {
    let Some(m) = &s.memory else { return };
    let _ = writeln!(out, "<h2>Target memory</h2>\n<table>");
    let mut rows = vec![
        ("verdict", m.verdict.clone()),
        ("RSS at start", format_bytes(m.rss_start_bytes)),
        ("RSS at end", format_bytes(m.rss_end_bytes)),
        ("RSS max", format_bytes(m.rss_max_bytes)),
    ];
    if let Some(b) = m.heap_start_bytes {
        rows.push(("heap at start", format_bytes(b)));
    }
    if let Some(b) = m.heap_end_bytes {
        rows.push(("heap at end", format_bytes(b)));
    }
    if let Some(b) = m.bytes_per_payment {
        rows.push(("heap bytes per payment", format!("{b:.1}")));
    }
    rows.push(("detail", m.detail.clone()));
    for (label, value) in rows {
        let _ = writeln!(out, "<tr><th>{label}</th><td>{}</td></tr>", escape(&value));
    }
    let _ = writeln!(out, "</table>");
}

fn push_chart(out: &mut String, chart: Result<String, String>) {
    match chart {
        // Inline SVG in HTML needs no namespace; dropping it keeps the file free of URLs.
        Ok(svg) => {
            let svg = svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", "");
            let _ = writeln!(out, "<div class=\"chart\">{svg}</div>");
        }
        Err(e) => {
            let _ = writeln!(out, "<p>chart unavailable: {}</p>", escape(&e));
        }
    }
}

fn has_memory(timeline: &[SecondPoint]) -> bool {
    timeline
        .iter()
        .any(|p| p.rss_bytes.is_some() || p.heap_bytes.is_some())
}

/// How a bucket of points is reduced when the timeline is longer than [`CHART_POINTS_MAX`].
#[derive(Clone, Copy)]
enum Reduce {
    Mean,
    Max,
}

/// One line: (seconds, value) runs, split where the value is missing so gaps stay visible.
fn line(
    timeline: &[SecondPoint],
    value: impl Fn(&SecondPoint) -> Option<f64>,
    reduce: Reduce,
) -> Vec<Vec<(f64, f64)>> {
    let bucket = timeline.len().div_ceil(CHART_POINTS_MAX).max(1);
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    for chunk in timeline.chunks(bucket) {
        let values: Vec<f64> = chunk
            .iter()
            .filter_map(&value)
            .filter(|v| v.is_finite())
            .collect();
        if values.is_empty() {
            if !current.is_empty() {
                runs.push(std::mem::take(&mut current));
            }
            continue;
        }
        let y = match reduce {
            Reduce::Mean => values.iter().sum::<f64>() / values.len() as f64,
            Reduce::Max => values.iter().copied().fold(f64::MIN, f64::max),
        };
        current.push((chunk[0].t as f64, y));
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

struct Series {
    label: &'static str,
    color: RGBColor,
    runs: Vec<Vec<(f64, f64)>>,
}

fn x_range(timeline: &[SecondPoint]) -> Range<f64> {
    let last = timeline.iter().map(|p| p.t).max().unwrap_or(0) as f64;
    0.0..last.max(1.0)
}

fn throughput_chart(timeline: &[SecondPoint]) -> Result<String, String> {
    chart(
        timeline,
        "per second",
        vec![
            Series {
                label: "requests/s",
                color: RGBColor(31, 119, 180),
                runs: line(timeline, |p| Some(p.requests as f64), Reduce::Mean),
            },
            Series {
                label: "errors/s",
                color: RGBColor(214, 39, 40),
                runs: line(timeline, |p| Some(p.errors as f64), Reduce::Mean),
            },
        ],
    )
}

fn latency_chart(timeline: &[SecondPoint]) -> Result<String, String> {
    chart(
        timeline,
        "milliseconds",
        vec![
            Series {
                label: "p50",
                color: RGBColor(44, 160, 44),
                runs: line(timeline, |p| p.p50_ms, Reduce::Max),
            },
            Series {
                label: "p99",
                color: RGBColor(255, 127, 14),
                runs: line(timeline, |p| p.p99_ms, Reduce::Max),
            },
        ],
    )
}

fn memory_chart(timeline: &[SecondPoint]) -> Result<String, String> {
    let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
    chart(
        timeline,
        "MiB",
        vec![
            Series {
                label: "RSS",
                color: RGBColor(148, 103, 189),
                runs: line(timeline, |p| mib(p.rss_bytes), Reduce::Max),
            },
            Series {
                label: "heap",
                color: RGBColor(140, 86, 75),
                runs: line(timeline, |p| mib(p.heap_bytes), Reduce::Max),
            },
        ],
    )
}

/// A line chart over the run's seconds, as an SVG string.
fn chart(timeline: &[SecondPoint], y_label: &str, series: Vec<Series>) -> Result<String, String> {
    let y_max = series
        .iter()
        .flat_map(|s| s.runs.iter().flatten())
        .map(|(_, y)| *y)
        .fold(0.0, f64::max);
    // Headroom above the highest point; at least 1 so an idle run still has an axis.
    let y_range = 0.0..(y_max * 1.1).max(1.0);
    let mut svg = String::new();
    {
        let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH_PX, CHART_HEIGHT_PX))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(60)
            .build_cartesian_2d(x_range(timeline), y_range)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .y_desc(y_label)
            .draw()
            .map_err(|x| e(&x))?;
        for s in series {
            let color = s.color;
            for (i, run) in s.runs.into_iter().enumerate() {
                let drawn = chart
                    .draw_series(LineSeries::new(run, color.stroke_width(2)))
                    .map_err(|x| e(&x))?;
                if i == 0 {
                    drawn.label(s.label).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

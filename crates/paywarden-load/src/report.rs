//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched)
//! that can be attached to a CI run or a pull request and opened years later.
//!
//! Charts are drawn in paywarden's one chart style (`paywarden-charts`, shared with the
//! post-deployment review): throughput and errors per second, latency p50/p99 per second, and
//! the target's memory when it was sampled, each with its legend below it. Every string from
//! the run (scenario name, error kinds, thresholds, memory detail) is escaped.

use std::fmt::Write as _;

use paywarden_charts::chart::{Chart, Line, Scale, Size};
use paywarden_charts::page;
use paywarden_charts::RGBColor;

use crate::summary::{SecondPoint, Summary, format_bytes};
use crate::threshold::format_actual;

pub use paywarden_charts::page::escape;

/// Most points a chart line holds: longer timelines are averaged (throughput) or reduced to
/// their peak (latency, memory) per bucket, so a week-long run still makes a small file.
pub const CHART_POINTS_MAX: usize = paywarden_charts::chart::POINTS_MAX;

const X_DESC: &str = "seconds since the start";

/// The report for `summary` as one HTML document.
pub fn html(summary: &Summary) -> String {
    let mut out = String::new();
    let title = format!("paywarden load: {}", summary.scenario);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        escape(&title),
        page::CSS,
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

    let _ = writeln!(out, "<h2>Throughput</h2>");
    out.push_str(&page::figure(&throughput_chart(&summary.timeline), None));
    let _ = writeln!(out, "<h2>Latency per second</h2>");
    out.push_str(&page::figure(&latency_chart(&summary.timeline), None));
    memory(&mut out, summary);
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
        let _ = writeln!(out, "<tr><th>{label}</th><td class=\"n\">{}</td></tr>", escape(&value));
    }
    for (kind, count) in &s.errors {
        let _ = writeln!(
            out,
            "<tr><th>errors: {}</th><td class=\"n\">{count}</td></tr>",
            escape(kind)
        );
    }
    let _ = writeln!(out, "</table>");
}

fn latency_table(out: &mut String, s: &Summary) {
    let _ = writeln!(
        out,
        "<h2>Latency (ms)</h2>\n<table>\n<tr><th>operation</th><th class=\"n\">count</th><th class=\"n\">p50</th>\
         <th class=\"n\">p90</th><th class=\"n\">p99</th><th class=\"n\">p99.9</th><th class=\"n\">max</th><th class=\"n\">mean</th></tr>"
    );
    for (name, p) in s.latency_rows() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td>\
             <td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td><td class=\"n\">{:.2}</td></tr>",
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
        "<h2>Thresholds</h2>\n<table>\n<tr><th>threshold</th><th class=\"n\">actual</th><th>result</th></tr>"
    );
    for r in &s.thresholds {
        let result = if r.passed {
            "<span class=\"pass\">✓ pass</span>"
        } else {
            "<span class=\"fail\">✗ fail</span>"
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td>{result}</td></tr>",
            escape(&r.threshold),
            escape(&format_actual(&r.threshold, r.actual))
        );
    }
    let _ = writeln!(out, "</table>");
}

/// The target's memory: one section, its figures and its chart.
fn memory(out: &mut String, s: &Summary) {
    let chart = has_memory(&s.timeline);
    if s.memory.is_none() && !chart {
        return;
    }
    let _ = writeln!(out, "<h2>Target memory</h2>");
    if let Some(m) = &s.memory {
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
            rows.push(("heap growth per payment", format!("{b:.1} B")));
        }
        rows.push(("detail", m.detail.clone()));
        let _ = writeln!(out, "<table>");
        for (label, value) in rows {
            let _ = writeln!(out, "<tr><th>{label}</th><td>{}</td></tr>", escape(&value));
        }
        let _ = writeln!(out, "</table>");
    }
    if chart {
        out.push_str(&page::figure(&memory_chart(&s.timeline), None));
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

fn x_max(timeline: &[SecondPoint]) -> f64 {
    timeline.iter().map(|p| p.t).max().unwrap_or(0) as f64
}

fn chart(timeline: &[SecondPoint], y_desc: &'static str, scale: Scale, lines: Vec<Line>) -> Chart<'static> {
    Chart { x_desc: X_DESC, y_desc, scale, size: Size::Full, x_max: x_max(timeline), lines, marks: &[] }
}

fn series(label: &str, color: RGBColor, runs: Vec<Vec<(f64, f64)>>) -> Line {
    Line { label: label.to_string(), color, thin: false, runs }
}

fn throughput_chart(timeline: &[SecondPoint]) -> Chart<'static> {
    chart(
        timeline,
        "per second",
        Scale::Zero,
        vec![
            series("requests/s", RGBColor(31, 119, 180), line(timeline, |p| Some(p.requests as f64), Reduce::Mean)),
            series("errors/s", RGBColor(214, 39, 40), line(timeline, |p| Some(p.errors as f64), Reduce::Mean)),
        ],
    )
}

fn latency_chart(timeline: &[SecondPoint]) -> Chart<'static> {
    chart(
        timeline,
        "milliseconds",
        Scale::LogIfWide,
        vec![
            series("p99", RGBColor(255, 127, 14), line(timeline, |p| p.p99_ms, Reduce::Max)),
            series("p50", RGBColor(44, 160, 44), line(timeline, |p| p.p50_ms, Reduce::Max)),
        ],
    )
}

fn memory_chart(timeline: &[SecondPoint]) -> Chart<'static> {
    let mib = |b: Option<u64>| b.map(|b| b as f64 / (1024.0 * 1024.0));
    chart(
        timeline,
        "MiB",
        Scale::Fit,
        vec![
            series("RSS", RGBColor(148, 103, 189), line(timeline, |p| mib(p.rss_bytes), Reduce::Max)),
            series("heap", RGBColor(140, 86, 75), line(timeline, |p| mib(p.heap_bytes), Reduce::Max)),
        ],
    )
}

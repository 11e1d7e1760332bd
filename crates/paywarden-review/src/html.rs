//! The review as one self-contained HTML file: inline CSS and inline SVG charts, no script,
//! nothing fetched, so it can be attached to a ticket and opened years later.
//!
//! Charts are drawn with plotters' SVG backend into strings, one line per instance (canary,
//! baseline, stable) over the seconds since the deployment started, with the step starts and
//! the rollback marked. Every string taken from the recorded data is escaped, and the
//! incident report's Markdown is converted with its raw HTML turned into text.

use std::fmt::Write as _;
use std::ops::Range;

use paywarden_rollout::samples::{InstanceSample, Sample};
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::element::DashedPathElement;
use plotters::prelude::*;
use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::Review;
use crate::model::{Diagnosis, MetricView, VerdictView, format_bytes, format_clock, format_time};

/// Most points a chart line holds: longer series are cut into buckets of consecutive
/// samples, each reduced to one point (its peak; for the error rate, errors over requests
/// across the bucket), so a ten-hour deployment still makes a small file.
pub const CHART_POINTS_MAX: usize = 2_000;
/// Most instances (role and version pairs) drawn in one chart; more are listed as not drawn.
pub const CHART_SERIES_MAX: usize = 12;
/// Most vertical marks (step starts, rollback) drawn in one chart.
pub const CHART_MARKS_MAX: usize = 40;
/// Chart size in pixels.
pub const CHART_WIDTH_PX: u32 = 1000;
/// Chart size in pixels.
pub const CHART_HEIGHT_PX: u32 = 330;
/// Most allocation sites of the heap diff shown.
pub const DIAGNOSIS_SITES_MAX: usize = 20;
/// A latency chart switches to a logarithmic axis when its highest point is this many times
/// its lowest (one slow second would otherwise flatten every other).
pub const LOG_SCALE_RATIO: f64 = 20.0;

/// Rows of mark labels stacked at the top of a chart before they are allowed to overlap.
const MARK_LABEL_ROWS: i32 = 4;
/// Height of one row of mark labels, pixels.
const MARK_LABEL_ROW_PX: i32 = 16;
/// Estimated width of one character of a mark label (13 px sans-serif), pixels.
const MARK_LABEL_CHAR_PX: i32 = 8;
const MIB: f64 = 1024.0 * 1024.0;
const KIB: f64 = 1024.0;

const STYLE: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;padding:0 1.5em;color:#222;max-width:1080px;line-height:1.4}\
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:0.2em}\
h3{font-size:1.02em;margin-top:1.4em}\
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em}\
td,th{border:1px solid #ccc;padding:3px 9px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}\
code,pre{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:0.9em}\
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;margin:0.3em 0}\
td code{word-break:break-all}\
.outcome{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:bold}\
.promoted{background:#17702a}.rolled_back{background:#b00020}.in_progress{background:#a86400}.other{background:#555}\
.pass{color:#17702a;font-weight:bold}.fail{color:#b00020;font-weight:bold}.warn{color:#a86400;font-weight:bold}.muted{color:#666}\
.reason{font-size:1.05em;margin:0.4em 0 1em}\
nav{font-size:0.9em;margin:0.8em 0}nav a{margin-right:0.9em}\
.chart{margin:0.6em 0 0.2em}.chart svg{max-width:100%;height:auto;display:block}\
ul.legend{list-style:none;padding:0;margin:0.2em 0 1em;font-size:0.9em}ul.legend li{display:inline-block;margin-right:1.3em}\
.sw{display:inline-block;width:22px;height:4px;vertical-align:middle;margin-right:5px}\
.sw.thin{height:2px;opacity:0.6}\
details summary{cursor:pointer}\
.incident{border-left:4px solid #b00020;padding-left:1em}\
.incident h3{font-size:1.15em}.incident h4{font-size:1.05em}.incident h5,.incident h6{font-size:1em}";

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

/// The review as one self-contained HTML document.
pub fn render(review: &Review) -> String {
    let mut out = String::new();
    let title = format!(
        "paywarden review: {} ({} vs {})",
        review.id, review.version, review.baseline_version
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    header(&mut out, review);
    versions(&mut out, review);
    plan(&mut out, review);
    schema(&mut out, review);
    steps(&mut out, review);
    verdicts(&mut out, review);
    charts(&mut out, review);
    per_version(&mut out, review);
    alerts(&mut out, review);
    diagnosis(&mut out, review);
    traffic(&mut out, review);
    timeline(&mut out, review);
    if review.is_incident() {
        incident(&mut out, review);
    }
    out.push_str("</body>\n</html>\n");
    out
}

// ---------------------------------------------------------------------------------------
// Formatting

/// A figure of unknown unit (a verdict's canary and baseline): `—` when missing or not a
/// number.
fn num(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            let a = v.abs();
            if a >= 100.0 || v == v.trunc() {
                format!("{v:.0}")
            } else if a >= 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.4}")
            }
        }
        _ => "—".to_string(),
    }
}

/// Milliseconds with two decimals, `—` when missing.
fn ms(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.2} ms"),
        _ => "—".to_string(),
    }
}

/// Bytes, `—` when missing.
fn bytes(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => format_bytes(v),
        _ => "—".to_string(),
    }
}

/// A percentage (of 100) with two decimals; `< 0.01 %` for a small one that is not zero.
fn percent(v: Option<f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v > 0.0 && v < 0.01 {
                "&lt; 0.01 %".to_string()
            } else {
                format!("{v:.2} %")
            }
        }
        _ => "—".to_string(),
    }
}

/// A traffic weight: `1 %`, `0.5 %`.
fn weight(v: f64) -> String {
    if !v.is_finite() {
        "—".to_string()
    } else if v == v.trunc() {
        format!("{v:.0} %")
    } else {
        format!("{v} %")
    }
}

/// An axis tick: no needless decimals.
fn tick(v: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    let a = v.abs();
    let s = if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// `12:01:02.345 (+12.1 s)`.
fn when(review: &Review, at_ms: u64) -> String {
    format!(
        "{} (+{:.1} s)",
        format_clock(at_ms),
        review.since_start_s(at_ms)
    )
}

/// The class of a judge's score or a step's result, from a fixed set.
fn score_class(score: &str) -> &'static str {
    match score {
        "pass" | "passed" | "promoted" | "ok" => "pass",
        "fail" | "failed" | "leaking" | "firing" | "aborted" => "fail",
        "marginal" | "passed (marginal)" | "held" | "inconclusive" | "suspect" | "running" => {
            "warn"
        }
        _ => "",
    }
}

fn scored(score: &str) -> String {
    format!(
        "<span class=\"{}\">{}</span>",
        score_class(score),
        escape(score)
    )
}

fn role_rank(role: &str) -> usize {
    match role {
        "canary" => 0,
        "baseline" => 1,
        "stable" => 2,
        _ => 3,
    }
}

// ---------------------------------------------------------------------------------------
// Sections

fn header(out: &mut String, r: &Review) {
    let (class, label) = match r.outcome.as_str() {
        "promoted" => ("promoted", "promoted".to_string()),
        "rolled_back" => ("rolled_back", "rolled back".to_string()),
        "in_progress" if r.held_ms.is_some() => ("in_progress", "held".to_string()),
        "in_progress" => ("in_progress", "in progress".to_string()),
        "" => ("other", "unknown outcome".to_string()),
        other => ("other", escape(other)),
    };
    let _ = writeln!(
        out,
        "<h1>Deployment <code>{}</code>: {} vs {}</h1>\n<p><span class=\"outcome {class}\">{label}</span></p>",
        escape(&r.id),
        escape(&r.version),
        escape(&r.baseline_version)
    );
    if let Some(reason) = r.reason.as_deref().filter(|x| !x.is_empty()) {
        let _ = writeln!(out, "<p class=\"reason\">{}</p>", escape(reason));
    }
    let mut when = format!("Started {}", format_time(r.started_ms));
    if let Some(end) = r.ended_ms {
        let _ = write!(
            when,
            ", ended {} after {:.1} s",
            format_time(end),
            r.since_start_s(end)
        );
    }
    let _ = writeln!(out, "<p class=\"muted\">{when}.</p>");
    out.push_str(
        "<nav><a href=\"#versions\">versions</a><a href=\"#plan\">plan</a><a href=\"#steps\">steps</a>\
         <a href=\"#verdict\">verdict</a><a href=\"#charts\">charts</a><a href=\"#per-version\">per version</a>\
         <a href=\"#alerts\">alerts</a><a href=\"#diagnosis\">diagnosis</a><a href=\"#traffic\">traffic</a>\
         <a href=\"#timeline\">timeline</a>",
    );
    if r.is_incident() {
        out.push_str("<a href=\"#incident\">incident report</a>");
    }
    out.push_str("</nav>\n");
}

fn versions(out: &mut String, r: &Review) {
    let code = |s: &str| {
        if s.is_empty() {
            "<span class=\"muted\">not recorded</span>".to_string()
        } else {
            format!("<code>{}</code>", escape(s))
        }
    };
    let args = if r.args.is_empty() {
        "<span class=\"muted\">none</span>".to_string()
    } else {
        let joined: Vec<String> = r.args.iter().map(|a| escape(a)).collect();
        format!("<code>{}</code>", joined.join(" "))
    };
    let _ = writeln!(
        out,
        "<h2 id=\"versions\">Versions and binaries</h2>\n<table>\n\
         <tr><th></th><th>version</th><th>binary</th><th>sha256</th><th>args</th></tr>\n\
         <tr><th>canary</th><td>{}</td><td>{}</td><td>{}</td><td>{args}</td></tr>\n\
         <tr><th>baseline</th><td>{}</td><td class=\"muted\">the stable binary</td><td>{}</td><td></td></tr>\n</table>",
        escape(&r.version),
        code(&r.binary),
        code(&r.sha256),
        escape(&r.baseline_version),
        code(r.baseline_sha256.as_deref().unwrap_or("")),
    );
}

fn plan(out: &mut String, r: &Review) {
    let steps: Vec<String> = r
        .plan_steps
        .iter()
        .enumerate()
        .map(|(i, (w, bake))| format!("{}. {} for {}", i + 1, weight(*w), escape(bake)))
        .collect();
    let steps = if steps.is_empty() {
        "<span class=\"muted\">none recorded</span>".to_string()
    } else {
        steps.join("<br>")
    };
    let _ = writeln!(
        out,
        "<h2 id=\"plan\">Plan</h2>\n<table>\n<tr><th>name</th><td>{}</td></tr>\n\
         <tr><th>steps (canary weight, bake)</th><td>{steps}</td></tr>\n\
         <tr><th>step timeout</th><td>{}</td></tr>\n<tr><th>automatic rollback</th><td>{}</td></tr>\n</table>",
        escape(&r.plan_name),
        escape(&r.step_timeout),
        if r.auto_rollback {
            "on"
        } else {
            "<span class=\"warn\">off</span>"
        },
    );
}

/// The schema gate's verdict and the schema's history.
fn schema(out: &mut String, r: &Review) {
    let Some(g) = &r.schema else { return };
    let class = match g.outcome {
        paywarden_rollout::schema::GateOutcome::Overridden | paywarden_rollout::schema::GateOutcome::Refused => "warn",
        _ => "ok",
    };
    let _ = writeln!(
        out,
        "<h2 id=\"schema\">Schema</h2>\n<p><span class=\"{class}\">schema gate {}</span>: {}</p>",
        escape(g.outcome.as_str()),
        escape(&g.reason)
    );
    if g.allow_contract {
        let _ = writeln!(out, "<p class=\"warn\">The plan set <code>allow_contract = true</code>: the operator overrode the gate.</p>");
    }
    if let Some(m) = r.verdict.as_ref().and_then(|v| v.metrics.iter().find(|m| m.metric == "schema")) {
        let _ = writeln!(out, "<p>The previous release on the new schema: {} {}</p>", scored(&m.score), escape(&m.detail));
    }
    if g.history.is_empty() && g.pending.is_empty() {
        return;
    }
    let _ = writeln!(out, "<table>\n<tr><th>migration</th><th>kind</th><th>applied by</th><th>at (UTC)</th></tr>");
    for m in &g.history {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&m.name),
            m.kind.as_str(),
            escape(m.release.as_deref().unwrap_or("?")),
            m.applied_unix_ms.map(|t| escape(&crate::model::format_time(t.max(0) as u64))).unwrap_or_default()
        );
    }
    for m in &g.pending {
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code></td><td>{}</td><td>{} (this deployment)</td><td>–</td></tr>",
            escape(&m.name),
            m.kind.as_str(),
            escape(&r.version)
        );
    }
    let _ = writeln!(out, "</table>");
}

fn steps(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"steps\">Steps as they ran</h2>");
    if r.steps.is_empty() {
        let _ = writeln!(out, "<p>No step started.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>step</th><th class=\"n\">canary weight</th><th class=\"n\">baseline weight</th>\
         <th>start</th><th>end</th><th class=\"n\">duration</th><th>result</th></tr>"
    );
    for s in &r.steps {
        let (end, duration) = match s.end_ms {
            Some(e) => (
                format_clock(e),
                format!("{:.1} s", e.saturating_sub(s.start_ms) as f64 / 1000.0),
            ),
            None => ("—".to_string(), "—".to_string()),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td><td>{end}</td>\
             <td class=\"n\">{duration}</td><td>{}</td></tr>",
            s.step,
            weight(s.weight_pct),
            weight(s.baseline_weight_pct),
            when(r, s.start_ms),
            scored(&s.result),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn metrics_table(out: &mut String, metrics: &[MetricView]) {
    if metrics.is_empty() {
        let _ = writeln!(out, "<p class=\"muted\">No metric recorded.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>metric</th><th>critical</th><th>score</th><th class=\"n\">canary</th>\
         <th class=\"n\">baseline</th><th>detail</th></tr>"
    );
    for m in metrics {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&m.metric),
            if m.critical { "yes" } else { "no" },
            scored(&m.score),
            num(m.canary),
            num(m.baseline),
            escape(&m.detail),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn verdict_line(v: &VerdictView) -> String {
    let pct = if v.score_pct.is_finite() {
        format!(" ({:.0} %)", v.score_pct)
    } else {
        String::new()
    };
    format!(
        "<p>Score {}{pct}: {}</p>",
        scored(&v.score),
        escape(&v.reason)
    )
}

fn verdicts(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"verdict\">Verdict</h2>");
    match &r.verdict {
        Some(v) => {
            let _ = writeln!(out, "<h3>The last verdict</h3>\n{}", verdict_line(v));
            metrics_table(out, &v.metrics);
        }
        None => {
            let _ = writeln!(out, "<p>The judge gave no verdict.</p>");
        }
    }
    match &r.first_failure {
        Some((at, v)) => {
            let _ = writeln!(
                out,
                "<h3>The first failing verdict, at {}</h3>",
                when(r, *at)
            );
            if r.verdict.as_ref() == Some(v) {
                let _ = writeln!(out, "<p>It is the last verdict above.</p>");
            } else {
                let _ = writeln!(out, "{}", verdict_line(v));
                metrics_table(out, &v.metrics);
            }
        }
        None => {
            let _ = writeln!(out, "<p>No verdict failed.</p>");
        }
    }
}

fn per_version(out: &mut String, r: &Review) {
    let _ = writeln!(
        out,
        "<h2 id=\"per-version\">Latency and error rate per version</h2>"
    );
    if r.instances.is_empty() {
        let _ = writeln!(
            out,
            "<p>No samples were recorded, so there are no per-instance figures.</p>"
        );
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>role</th><th>version</th><th class=\"n\">requests</th><th class=\"n\">errors</th>\
         <th class=\"n\">error rate</th><th class=\"n\">p50</th><th class=\"n\">worst-second p99</th>\
         <th class=\"n\">heap first → last</th><th class=\"n\">RSS first → last</th><th class=\"n\">RSS peak</th></tr>"
    );
    for i in &r.instances {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
             <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{} → {}</td><td class=\"n\">{} → {}</td>\
             <td class=\"n\">{}</td></tr>",
            escape(&i.role),
            escape(&i.version),
            i.requests,
            i.errors,
            percent(i.error_rate.map(|x| x * 100.0)),
            ms(i.latency_p50_ms),
            ms(i.latency_p99_ms),
            bytes(i.heap_first_bytes),
            bytes(i.heap_last_bytes),
            bytes(i.rss_first_bytes),
            bytes(i.rss_last_bytes),
            bytes(i.rss_peak_bytes),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn alerts(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"alerts\">Alerts</h2>");
    if r.alerts.is_empty() {
        let _ = writeln!(out, "<p>None fired.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>at</th><th>status</th><th>alert</th><th>instance</th><th>version</th><th>severity</th><th>summary</th></tr>"
    );
    for a in &r.alerts {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            when(r, a.at_ms),
            scored(&a.status),
            escape(&a.name),
            escape(&a.instance),
            escape(&a.version),
            escape(&a.severity),
            escape(&a.summary),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn diagnosis(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"diagnosis\">Diagnosis</h2>");
    match &r.diagnosis {
        Some(d) => heap_diff(out, r, d),
        None => {
            let _ = writeln!(out, "<p>No heap diff of the canary was taken.</p>");
        }
    }
    match &r.leak_report {
        Some(l) => {
            let summary = l
                .summary
                .as_deref()
                .map(|s| format!(": {}", escape(s)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "<p>The canary's memguard verdict at {}: {}{summary}</p>",
                when(r, l.at_ms),
                scored(&l.state)
            );
        }
        None => {
            let _ = writeln!(out, "<p>No memguard report of the canary was recorded.</p>");
        }
    }
}

fn heap_diff(out: &mut String, r: &Review, d: &Diagnosis) {
    let window = if d.window_s.is_finite() {
        format!("{:.0} s", d.window_s)
    } else {
        "—".to_string()
    };
    let _ = writeln!(
        out,
        "<p>Heap diff of the canary at {}, over {window}: the canary's heap grew {}, the baseline's {}.</p>",
        when(r, d.at_ms),
        bytes(d.heap_growth_bytes),
        bytes(d.baseline_heap_growth_bytes),
    );
    if let Some(err) = &d.error {
        let _ = writeln!(
            out,
            "<p class=\"fail\">The heap diff failed: {}</p>",
            escape(err)
        );
    }
    if d.sites.is_empty() {
        if d.error.is_none() {
            let _ = writeln!(
                out,
                "<p>No allocation site grew more on the canary than on the baseline.</p>"
            );
        }
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>allocation site</th><th class=\"n\">growth (net of baseline)</th>\
         <th class=\"n\">rate</th><th class=\"n\">share</th><th>evidence</th></tr>"
    );
    for s in d.sites.iter().take(DIAGNOSIS_SITES_MAX) {
        let stack = if s.stack.is_empty() {
            String::new()
        } else {
            let frames: Vec<String> = s.stack.iter().map(|f| escape(f)).collect();
            format!(
                "<details><summary>stack ({} frames)</summary><pre>{}</pre></details>",
                s.stack.len(),
                frames.join("\n")
            )
        };
        let _ = writeln!(
            out,
            "<tr><td><code>{}</code>{stack}</td><td class=\"n\">{}</td><td class=\"n\">{}/s</td><td class=\"n\">{}</td><td>{}</td></tr>",
            escape(&s.function),
            bytes(Some(s.growth_bytes)),
            bytes(Some(s.bytes_per_second)),
            percent(Some(s.share * 100.0)),
            escape(&crate::incident::evidence(s)),
        );
    }
    let _ = writeln!(out, "</table>");
    if d.sites.len() > DIAGNOSIS_SITES_MAX {
        let _ = writeln!(
            out,
            "<p class=\"muted\">{} more sites not shown.</p>",
            d.sites.len() - DIAGNOSIS_SITES_MAX
        );
    }
}

fn traffic(out: &mut String, r: &Review) {
    let t = &r.traffic;
    let _ = writeln!(
        out,
        "<h2 id=\"traffic\">Traffic</h2>\n<table>\n<tr><th>requests</th><td class=\"n\">{}</td></tr>\n\
         <tr><th>to the canary</th><td class=\"n\">{}</td></tr>\n<tr><th>to the baseline</th><td class=\"n\">{}</td></tr>\n\
         <tr><th>exposed (canary share)</th><td class=\"n\">{}</td></tr>\n\
         <tr><th>failed</th><td class=\"n\">{}</td></tr>\n<tr><th>failed on the canary</th><td class=\"n\">{}</td></tr>\n\
         <tr><th>merchants the canary served</th><td class=\"n\">{}</td></tr>\n</table>",
        t.requests_total,
        t.requests_to_canary,
        t.requests_to_baseline,
        percent(t.exposed_pct()),
        t.failed_requests,
        t.failed_canary_requests,
        t.merchants_to_canary,
    );
}

fn timeline(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"timeline\">Timeline</h2>");
    if r.timeline.is_empty() {
        let _ = writeln!(out, "<p>No event was recorded.</p>");
        return;
    }
    let _ = writeln!(
        out,
        "<table>\n<tr><th>time (UTC)</th><th class=\"n\">since start</th><th>event</th></tr>"
    );
    for e in &r.timeline {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"n\">+{:.1} s</td><td>{}</td></tr>",
            format_clock(e.at_ms),
            r.since_start_s(e.at_ms),
            escape(&e.text),
        );
    }
    let _ = writeln!(out, "</table>");
}

fn incident(out: &mut String, r: &Review) {
    let _ = writeln!(
        out,
        "<h2 id=\"incident\">Incident report</h2>\n<div class=\"incident\">"
    );
    // Its headings go below this section's.
    out.push_str(&markdown_to_html(&crate::incident::render(r), 2));
    let _ = writeln!(out, "</div>");
}

/// Markdown to HTML with no raw HTML passing through: HTML blocks and inline HTML become
/// text (escaped), images become their alt text (nothing is fetched), and links keep their
/// target only when it is `http(s)`, `mailto` or an anchor. Headings are demoted by
/// `heading_shift` levels (at most to `<h6>`), for Markdown shown inside a section.
pub fn markdown_to_html(markdown: &str, heading_shift: usize) -> String {
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH;
    let mut in_dropped_link = false;
    let events = Parser::new_ext(markdown, options).filter_map(|e| match e {
        Event::Html(s) | Event::InlineHtml(s) => Some(Event::Text(s)),
        Event::Start(Tag::HtmlBlock) => Some(Event::Start(Tag::Paragraph)),
        Event::End(TagEnd::HtmlBlock) => Some(Event::End(TagEnd::Paragraph)),
        Event::Start(Tag::Image { .. }) | Event::End(TagEnd::Image) => None,
        Event::Start(Tag::Link { ref dest_url, .. }) if !safe_link(dest_url) => {
            in_dropped_link = true;
            None
        }
        Event::End(TagEnd::Link) if in_dropped_link => {
            in_dropped_link = false;
            None
        }
        Event::Start(Tag::Heading {
            level,
            id,
            classes,
            attrs,
        }) => Some(Event::Start(Tag::Heading {
            level: shifted(level, heading_shift),
            id,
            classes,
            attrs,
        })),
        Event::End(TagEnd::Heading(level)) => {
            Some(Event::End(TagEnd::Heading(shifted(level, heading_shift))))
        }
        e => Some(e),
    });
    let mut html = String::new();
    pulldown_cmark::html::push_html(&mut html, events);
    html
}

fn shifted(level: HeadingLevel, by: usize) -> HeadingLevel {
    HeadingLevel::try_from((level as usize).saturating_add(by).min(6)).unwrap_or(HeadingLevel::H6)
}

fn safe_link(url: &CowStr<'_>) -> bool {
    let u = url.trim_start().to_ascii_lowercase();
    u.starts_with("https://")
        || u.starts_with("http://")
        || u.starts_with("mailto:")
        || u.starts_with('#')
}

// ---------------------------------------------------------------------------------------
// Charts

/// One instance of the deployment as the samples name it.
struct Key {
    role: String,
    version: String,
    color: RGBColor,
}

impl Key {
    fn of<'s>(&self, sample: &'s Sample) -> Option<&'s InstanceSample> {
        sample
            .instances
            .iter()
            .find(|i| i.role == self.role && i.version == self.version)
    }
    fn label(&self) -> String {
        format!("{} {}", self.role, self.version)
    }
}

const CANARY: RGBColor = RGBColor(214, 39, 40);
const BASELINE: RGBColor = RGBColor(31, 119, 180);
const STABLE: RGBColor = RGBColor(110, 110, 110);
const OTHERS: [RGBColor; 6] = [
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const STEP_MARK: RGBColor = RGBColor(85, 85, 85);
const ROLLBACK_MARK: RGBColor = RGBColor(176, 0, 32);
const HELD_MARK: RGBColor = RGBColor(168, 100, 0);

/// The instances in the samples, canary first, each with its colour.
fn keys(samples: &[Sample]) -> Vec<Key> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    for s in samples {
        for i in &s.instances {
            if !pairs.iter().any(|(r, v)| *r == i.role && *v == i.version) {
                pairs.push((i.role.clone(), i.version.clone()));
            }
        }
    }
    pairs.sort_by_key(|(r, _)| role_rank(r));
    let mut others = OTHERS.iter().cycle();
    let mut used_roles: Vec<String> = Vec::new();
    pairs
        .into_iter()
        .map(|(role, version)| {
            let own = match role.as_str() {
                "canary" => Some(CANARY),
                "baseline" => Some(BASELINE),
                "stable" => Some(STABLE),
                _ => None,
            };
            let color = match own.filter(|_| !used_roles.contains(&role)) {
                Some(c) => c,
                None => *others.next().unwrap_or(&STABLE),
            };
            used_roles.push(role.clone());
            Key {
                role,
                version,
                color,
            }
        })
        .collect()
}

/// A vertical mark: a step start, the rollback.
struct Mark {
    x: f64,
    label: String,
    color: RGBColor,
    strong: bool,
}

fn marks(r: &Review) -> Vec<Mark> {
    let mut marks: Vec<Mark> = r
        .steps
        .iter()
        .take(CHART_MARKS_MAX.saturating_sub(2))
        .map(|s| Mark {
            x: r.since_start_s(s.start_ms),
            label: format!("step {} · {}", s.step, weight(s.weight_pct)),
            color: STEP_MARK,
            strong: false,
        })
        .collect();
    if let Some(at) = r.held_ms {
        marks.push(Mark {
            x: r.since_start_s(at),
            label: "held".into(),
            color: HELD_MARK,
            strong: true,
        });
    }
    if let Some(at) = r.rollback_started_ms {
        marks.push(Mark {
            x: r.since_start_s(at),
            label: "rollback".into(),
            color: ROLLBACK_MARK,
            strong: true,
        });
    }
    marks
}

/// One drawn line: runs of (seconds, value), split where values are missing.
struct Line {
    color: RGBColor,
    thin: bool,
    runs: Vec<Vec<(f64, f64)>>,
}

#[derive(Clone, Copy, PartialEq)]
enum Scale {
    /// From zero up.
    Zero,
    /// Around the values (memory, where the growth is small beside the size).
    Fit,
    /// Logarithmic when the values span [`LOG_SCALE_RATIO`], else from zero.
    LogIfWide,
}

struct ChartSpec<'a> {
    y_desc: &'a str,
    scale: Scale,
    lines: Vec<Line>,
    marks: &'a [Mark],
    x_max: f64,
}

/// Cuts per-sample values (aligned with the samples) into at most [`CHART_POINTS_MAX`]
/// buckets, reduced by `reduce` (None: no point, the line breaks there).
fn bucketed<T: Copy>(
    xs: &[f64],
    values: &[Option<T>],
    reduce: impl Fn(&[T]) -> Option<f64>,
) -> Vec<Vec<(f64, f64)>> {
    let n = xs.len().min(values.len());
    let bucket = n.div_ceil(CHART_POINTS_MAX).max(1);
    let mut runs: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut current: Vec<(f64, f64)> = Vec::new();
    let mut start = 0;
    while start < n {
        let end = (start + bucket).min(n);
        let present: Vec<T> = values[start..end].iter().filter_map(|v| *v).collect();
        match reduce(&present).filter(|y| y.is_finite()) {
            Some(y) if !present.is_empty() && xs[start].is_finite() => current.push((xs[start], y)),
            _ => {
                if !current.is_empty() {
                    runs.push(std::mem::take(&mut current));
                }
            }
        }
        start = end;
    }
    if !current.is_empty() {
        runs.push(current);
    }
    runs
}

fn peak(values: &[f64]) -> Option<f64> {
    values
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

/// A per-instance value at every sample, reduced to its peak per bucket.
fn peak_line(
    xs: &[f64],
    samples: &[Sample],
    key: &Key,
    thin: bool,
    value: impl Fn(&InstanceSample) -> Option<f64>,
) -> Line {
    let values: Vec<Option<f64>> = samples
        .iter()
        .map(|s| key.of(s).and_then(&value).filter(|v| v.is_finite()))
        .collect();
    Line {
        color: key.color,
        thin,
        runs: bucketed(xs, &values, peak),
    }
}

/// The instance's error rate (percent) from the deltas of its cumulative counters between
/// consecutive samples; 0 in a second without requests. A counter that went down (the
/// instance restarted) counts from zero.
fn error_rate_line(xs: &[f64], samples: &[Sample], key: &Key) -> Line {
    let mut previous: Option<(u64, u64)> = None;
    let deltas: Vec<Option<(u64, u64)>> = samples
        .iter()
        .map(|s| {
            let i = key.of(s)?;
            let now = (i.requests, i.errors);
            let delta = previous.map(|(pr, pe)| {
                if now.0 < pr || now.1 < pe {
                    now
                } else {
                    (now.0 - pr, now.1 - pe)
                }
            });
            previous = Some(now);
            delta
        })
        .collect();
    let rate = |d: &[(u64, u64)]| {
        let (req, err) = d.iter().fold((0u64, 0u64), |(a, b), (r, e)| {
            (a.saturating_add(*r), b.saturating_add(*e))
        });
        Some(if req == 0 {
            0.0
        } else {
            (err as f64 / req as f64).min(1.0) * 100.0
        })
    };
    Line {
        color: key.color,
        thin: false,
        runs: bucketed(xs, &deltas, rate),
    }
}

fn charts(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"charts\">Charts</h2>");
    if r.samples.is_empty() {
        let _ = writeln!(
            out,
            "<p>No samples were recorded for this deployment, so there are no charts.</p>"
        );
        return;
    }
    let all = keys(&r.samples);
    let drawn = &all[..all.len().min(CHART_SERIES_MAX)];
    let xs: Vec<f64> = r
        .samples
        .iter()
        .map(|s| r.since_start_s(s.unix_ms))
        .collect();
    let marks = marks(r);
    let x_max = xs
        .iter()
        .chain(marks.iter().map(|m| &m.x))
        .copied()
        .filter(|x| x.is_finite())
        .fold(0.0, f64::max);
    let _ = writeln!(
        out,
        "<p class=\"muted\">x axis: seconds since the deployment started; grey dashed lines: step starts; red line: rollback. \
         {} samples{}.</p>",
        r.samples.len(),
        if r.samples.len() > CHART_POINTS_MAX {
            format!(
                ", drawn as at most {CHART_POINTS_MAX} points per line (each the peak of its bucket)"
            )
        } else {
            String::new()
        },
    );
    if all.len() > drawn.len() {
        let _ = writeln!(
            out,
            "<p class=\"muted\">{} more instances are not drawn.</p>",
            all.len() - drawn.len()
        );
    }
    let spec = |y_desc, scale, lines| ChartSpec {
        y_desc,
        scale,
        lines,
        marks: &marks,
        x_max,
    };

    let _ = writeln!(out, "<h3>Heap allocated per instance</h3>");
    let heap = drawn
        .iter()
        .map(|k| {
            peak_line(&xs, &r.samples, k, false, |i| {
                i.heap_allocated_bytes.map(|b| b / MIB)
            })
        })
        .collect();
    push_chart(out, draw(&spec("MiB", Scale::Fit, heap)));
    legend(out, drawn, false);

    let _ = writeln!(
        out,
        "<h3>Heap growth per instance, since its first sample</h3>"
    );
    let growth = drawn
        .iter()
        .map(|k| {
            let first = r
                .samples
                .iter()
                .filter_map(|s| k.of(s)?.heap_allocated_bytes)
                .find(|b| b.is_finite());
            peak_line(&xs, &r.samples, k, false, |i| {
                Some((i.heap_allocated_bytes? - first?) / KIB)
            })
        })
        .collect();
    push_chart(out, draw(&spec("KiB", Scale::Fit, growth)));
    legend(out, drawn, false);

    let _ = writeln!(out, "<h3>Resident memory (RSS) per instance</h3>");
    let rss = drawn
        .iter()
        .map(|k| {
            peak_line(&xs, &r.samples, k, false, |i| {
                i.resident_bytes.map(|b| b / MIB)
            })
        })
        .collect();
    push_chart(out, draw(&spec("MiB", Scale::Fit, rss)));
    legend(out, drawn, false);

    let _ = writeln!(out, "<h3>Latency per instance and second</h3>");
    let mut latency: Vec<Line> = drawn
        .iter()
        .map(|k| peak_line(&xs, &r.samples, k, false, |i| i.latency_p99_ms))
        .collect();
    latency.extend(
        drawn
            .iter()
            .map(|k| peak_line(&xs, &r.samples, k, true, |i| i.latency_p50_ms)),
    );
    push_chart(out, draw(&spec("milliseconds", Scale::LogIfWide, latency)));
    legend(out, drawn, true);

    let _ = writeln!(out, "<h3>Error rate per instance and second</h3>");
    let errors: Vec<Line> = drawn
        .iter()
        .map(|k| error_rate_line(&xs, &r.samples, k))
        .collect();
    let none = errors
        .iter()
        .flat_map(|l| l.runs.iter().flatten())
        .all(|(_, y)| *y == 0.0);
    push_chart(out, draw(&spec("% of requests", Scale::Zero, errors)));
    legend(out, drawn, false);
    if none {
        let _ = writeln!(
            out,
            "<p>No instance answered with an error in any sampled second.</p>"
        );
    }
}

fn css_color(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

fn legend(out: &mut String, keys: &[Key], p50: bool) {
    out.push_str("<ul class=\"legend\">");
    for k in keys {
        let color = css_color(k.color);
        let _ = write!(
            out,
            "<li><span class=\"sw\" style=\"background:{color}\"></span>{}",
            escape(&k.label())
        );
        if p50 {
            let _ = write!(
                out,
                " p99 <span class=\"sw thin\" style=\"background:{color}\"></span>p50"
            );
        }
        out.push_str("</li>");
    }
    out.push_str("</ul>\n");
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

/// The y range for `scale` and whether it is logarithmic; room is left at the top for the
/// mark labels.
fn y_range(spec: &ChartSpec<'_>) -> (Range<f64>, bool) {
    let ys: Vec<f64> = spec
        .lines
        .iter()
        .flat_map(|l| l.runs.iter().flatten())
        .map(|(_, y)| *y)
        .filter(|y| y.is_finite())
        .collect();
    let headroom = if spec.marks.is_empty() {
        0.08
    } else {
        0.08 + 0.07 * MARK_LABEL_ROWS as f64
    };
    let (Some(lo), Some(hi)) = (
        ys.iter().copied().reduce(f64::min),
        ys.iter().copied().reduce(f64::max),
    ) else {
        return (0.0..1.0, false);
    };
    let floor = lo.min(0.0);
    let (range, log) = match spec.scale {
        Scale::LogIfWide => {
            let lo_pos = ys.iter().copied().filter(|y| *y > 0.0).reduce(f64::min);
            if let Some(lo_pos) = lo_pos.filter(|l| hi / l >= LOG_SCALE_RATIO) {
                // Down to a power of ten, so the axis has its ticks.
                let bottom = 10f64.powf(lo_pos.log10().floor());
                let top = hi * (hi / bottom).powf(headroom);
                if bottom > 0.0 && top.is_finite() && top > bottom {
                    return (bottom..top, true);
                }
            }
            (floor..(hi * (1.0 + headroom)).max(1.0), false)
        }
        Scale::Zero => (floor..(hi * (1.0 + headroom)).max(1.0), false),
        Scale::Fit => {
            let span = (hi - lo).max(hi.abs() * 0.001).max(0.01);
            let bottom = lo - span * 0.08;
            (bottom..hi + span * headroom, false)
        }
    };
    // Values near the limits of f64 can overflow the headroom.
    if range.start.is_finite() && range.end.is_finite() && range.end > range.start {
        (range, log)
    } else {
        (0.0..1.0, false)
    }
}

/// Draws a chart as an SVG string.
fn draw(spec: &ChartSpec<'_>) -> Result<String, String> {
    let x_range = 0.0..(spec.x_max * 1.02).max(1.0);
    let (y, log) = y_range(spec);
    let mut svg = String::new();
    {
        let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH_PX, CHART_HEIGHT_PX))
            .into_drawing_area();
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(10)
            .margin_right(24)
            .x_label_area_size(38)
            .y_label_area_size(64);
        let y_desc = if log {
            format!("{} (log scale)", spec.y_desc)
        } else {
            spec.y_desc.to_string()
        };
        if log {
            let mut chart = builder
                .build_cartesian_2d(x_range, y.clone().log_scale())
                .map_err(|x| e(&x))?;
            paint(&mut chart, spec, &y_desc, y)?;
        } else {
            let mut chart = builder
                .build_cartesian_2d(x_range, y.clone())
                .map_err(|x| e(&x))?;
            paint(&mut chart, spec, &y_desc, y)?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(svg)
}

fn paint<'a, Y>(
    chart: &mut ChartContext<'a, SVGBackend<'a>, Cartesian2d<RangedCoordf64, Y>>,
    spec: &ChartSpec<'_>,
    y_desc: &str,
    y: Range<f64>,
) -> Result<(), String>
where
    Y: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let e = |err: &dyn std::fmt::Display| format!("drawing failed: {err}");
    chart
        .configure_mesh()
        .light_line_style(RGBColor(246, 246, 246))
        .bold_line_style(RGBColor(215, 215, 215))
        .x_desc("seconds since the deployment started")
        .y_desc(y_desc)
        .x_label_formatter(&|v| tick(*v))
        .y_label_formatter(&|v| tick(*v))
        .label_style(("sans-serif", 13))
        .axis_desc_style(("sans-serif", 13))
        .draw()
        .map_err(|x| e(&x))?;
    // Within the axis, always: a log axis has no zero, and a range that fell back to 0..1
    // must not send a line across the page.
    let inside = |&(x, v): &(f64, f64)| (x, v.max(y.start).min(y.end));
    // Thin lines (p50) first, so the p99 lines stay on top.
    for line in spec
        .lines
        .iter()
        .filter(|l| l.thin)
        .chain(spec.lines.iter().filter(|l| !l.thin))
    {
        let style = if line.thin {
            line.color.mix(0.55).stroke_width(1)
        } else {
            line.color.stroke_width(2)
        };
        for run in &line.runs {
            if run.len() == 1 {
                chart
                    .draw_series(
                        run.iter()
                            .map(|p| Circle::new(inside(p), 2, style.filled())),
                    )
                    .map_err(|x| e(&x))?;
            } else {
                chart
                    .draw_series(LineSeries::new(run.iter().map(inside), style))
                    .map_err(|x| e(&x))?;
            }
        }
    }
    // Marks, with labels stacked in rows at the top so close ones do not overlap.
    let (plot_x, _) = chart.plotting_area().get_pixel_range();
    let mut row_ends: Vec<i32> = vec![i32::MIN; MARK_LABEL_ROWS as usize];
    for m in spec
        .marks
        .iter()
        .filter(|m| m.x.is_finite())
        .take(CHART_MARKS_MAX)
    {
        let style = if m.strong {
            m.color.stroke_width(2)
        } else {
            m.color.mix(0.7).stroke_width(1)
        };
        if m.strong {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(m.x, y.start), (m.x, y.end)],
                    style,
                )))
                .map_err(|x| e(&x))?;
        } else {
            chart
                .draw_series(std::iter::once(DashedPathElement::new(
                    vec![(m.x, y.start), (m.x, y.end)],
                    5,
                    4,
                    style,
                )))
                .map_err(|x| e(&x))?;
        }
        let px = chart.backend_coord(&(m.x, y.end)).0;
        let width = m.label.chars().count() as i32 * MARK_LABEL_CHAR_PX;
        // Right of the line, or left of it near the right edge.
        let dx = if px + 4 + width > plot_x.end {
            -4 - width
        } else {
            4
        };
        let (left, right) = (px + dx, px + dx + width);
        let row = row_ends
            .iter()
            .position(|end| *end + 6 < left)
            .unwrap_or_else(|| {
                // Every row is taken there: the row that ends first.
                row_ends
                    .iter()
                    .enumerate()
                    .min_by_key(|(_, end)| **end)
                    .map_or(0, |(i, _)| i)
            });
        if let Some(end) = row_ends.get_mut(row) {
            *end = right;
        }
        let font = ("sans-serif", 13).into_font().color(&m.color);
        let label = EmptyElement::at((m.x, y.end))
            + Text::new(
                m.label.clone(),
                (dx, 3 + row as i32 * MARK_LABEL_ROW_PX),
                font,
            );
        chart
            .draw_series(std::iter::once(label))
            .map_err(|x| e(&x))?;
    }
    Ok(())
}

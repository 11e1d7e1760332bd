//! The review as one self-contained HTML file: inline CSS and inline SVG charts, no script,
//! nothing fetched, so it can be attached to a ticket and opened years later.
//!
//! Charts are drawn in paywarden's one chart style (`paywarden-charts`, shared with the load
//! report): one line per instance (canary, baseline, stable) over the seconds since the
//! deployment started, with the step starts and, when they happened, the hold and the rollback
//! marked; the heap also per instance as growth since the deployment started, each on its own
//! scale. Every string taken from the recorded data is escaped, and the incident report's
//! Markdown is converted with its raw HTML turned into text.

use std::fmt::Write as _;

use paywarden_charts::chart::{Chart, Line, Mark, Scale, Size};
use paywarden_charts::page;
use paywarden_charts::RGBColor;
use paywarden_rollout::samples::{InstanceSample, Sample};
use pulldown_cmark::{CowStr, Event, HeadingLevel, Options, Parser, Tag, TagEnd};

use crate::Review;
use crate::model::{Diagnosis, MetricView, VerdictView, format_bytes, format_clock, format_time};

pub use paywarden_charts::page::escape;

/// Most points a chart line holds: longer series are cut into buckets of consecutive
/// samples, each reduced to one point (its peak; for the error rate, errors over requests
/// across the bucket), so a ten-hour deployment still makes a small file.
pub const CHART_POINTS_MAX: usize = paywarden_charts::chart::POINTS_MAX;
/// Most instances (role and version pairs) drawn in one chart; more are listed as not drawn.
pub const CHART_SERIES_MAX: usize = 12;
/// Most vertical marks (step starts, hold, rollback) drawn in one chart.
pub const CHART_MARKS_MAX: usize = paywarden_charts::chart::MARKS_MAX;
/// Most allocation sites of the heap diff shown.
pub const DIAGNOSIS_SITES_MAX: usize = 20;
/// The least a heap growth chart spans, bytes: allocator noise of a few KiB must not fill a
/// chart as a leak would.
pub const GROWTH_SPAN_MIN_BYTES: f64 = 256.0 * 1024.0;
/// Characters of a SHA-256 shown; the whole hash is the element's title.
pub const HASH_SHOWN_CHARS: usize = 12;

const MIB: f64 = 1024.0 * 1024.0;
const KIB: f64 = 1024.0;

/// The review's own classes, after the shared CSS.
const STYLE: &str = ".outcome{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:bold}\
.promoted{background:#17702a}.rolled_back{background:#b00020}.in_progress{background:#a86400}.other{background:#555}\
.reason{font-size:1.05em;margin:0.4em 0 1em}\
nav{font-size:0.9em;margin:0.8em 0}nav a{margin-right:0.9em}\
details summary{cursor:pointer}\
.incident{border-left:4px solid #b00020;padding-left:1em}\
.incident h3{font-size:1.15em}.incident h4{font-size:1.05em}.incident h5,.incident h6{font-size:1em}";

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
         <title>{}</title>\n<style>{}{STYLE}</style>\n</head>\n<body>\n",
        escape(&title),
        page::CSS
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

/// `12:01:02.345 UTC (+12.1 s)`, for prose.
fn when(review: &Review, at_ms: u64) -> String {
    format!("{} UTC (+{:.1} s)", format_clock(at_ms), review.since_start_s(at_ms))
}

/// `12:01:02.345 (+12.1 s)`, for a table whose heading says UTC.
fn clock_since(review: &Review, at_ms: u64) -> String {
    format!("{} (+{:.1} s)", format_clock(at_ms), review.since_start_s(at_ms))
}

/// A SHA-256 on one line: its first [`HASH_SHOWN_CHARS`] characters, the whole as the title
/// (hover, copy from the source); `not recorded` when empty.
fn hash(h: &str) -> String {
    if h.is_empty() {
        return "<span class=\"muted\">not recorded</span>".to_string();
    }
    let shown: String = h.chars().take(HASH_SHOWN_CHARS).collect();
    let more = if h.chars().count() > HASH_SHOWN_CHARS { "…" } else { "" };
    format!("<code class=\"hash\" title=\"{}\">{}{more}</code>", escape(h), escape(&shown))
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
        hash(&r.sha256),
        escape(&r.baseline_version),
        hash(r.baseline_sha256.as_deref().unwrap_or("")),
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
    let _ = writeln!(out, "<table>\n<tr><th>migration</th><th>kind</th><th>applied by</th><th>applied at</th></tr>");
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
         <th>start (UTC)</th><th>end (UTC)</th><th class=\"n\">duration</th><th>result</th></tr>"
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
            clock_since(r, s.start_ms),
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

/// `Score fail: 2 of 4 metrics passed (50 %, Kayenta's score). Why.`
fn verdict_line(v: &VerdictView) -> String {
    format!(
        "<p>Score {}: {} <span class=\"muted\">(Kayenta's score: the share of metrics that passed)</span>. {}</p>",
        scored(&v.score),
        escape(&crate::words::score(v)),
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
        "<table>\n<tr><th>at (UTC)</th><th>status</th><th>alert</th><th>instance</th><th>version</th><th>severity</th><th>summary</th></tr>"
    );
    for a in &r.alerts {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            clock_since(r, a.at_ms),
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
    if !r.samples.is_empty() {
        let _ = writeln!(out, "<p>{}</p>", escape(&crate::words::heap_growth(r)));
    }
    match &r.diagnosis {
        Some(d) => heap_diff(out, r, d),
        None => {
            let _ = writeln!(out, "<p>No heap diff of the canary was taken.</p>");
        }
    }
    if let Some(why) = crate::words::signals(r) {
        let _ = writeln!(out, "<p><strong>Which signal caught it.</strong> {}</p>", escape(&why));
        return;
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
    // The diff's own totals (a profile estimate, with the symbolizer's allocations in it) are
    // not put in words: the instances' growth is the samples' (above), as the charts show.
    let _ = writeln!(
        out,
        "<p>Heap diff of the canary at {}, over {window}: the allocation sites that grew, net of the baseline's growth at the same site.</p>",
        when(r, d.at_ms),
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
/// target only when it is `http(s)`, `mailto` or an anchor. Task list items (`- [ ]`,
/// `- [x]`) become disabled checkboxes. Headings are demoted by
/// `heading_shift` levels (at most to `<h6>`), for Markdown shown inside a section.
pub fn markdown_to_html(markdown: &str, heading_shift: usize) -> String {
    // Task lists: `- [ ]` becomes a disabled checkbox, not literal brackets.
    let options = Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS;
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
        sample.instances.iter().find(|i| i.role == self.role && i.version == self.version)
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
            Key { role, version, color }
        })
        .collect()
}

/// The marks of what happened: each step's start, and the hold and the rollback only when
/// they happened.
fn marks(r: &Review) -> Vec<Mark> {
    let mut marks: Vec<Mark> = r
        .steps
        .iter()
        .take(CHART_MARKS_MAX.saturating_sub(2))
        .map(|s| Mark {
            x: r.since_start_s(s.start_ms),
            label: format!("step {} · {}", s.step, weight(s.weight_pct)),
            short_label: weight(s.weight_pct),
            kind: "step start".into(),
            color: STEP_MARK,
            strong: false,
        })
        .collect();
    if let Some(at) = r.held_ms {
        marks.push(Mark {
            x: r.since_start_s(at),
            label: "held".into(),
            short_label: "held".into(),
            kind: "held (analysis failed, automatic rollback off)".into(),
            color: HELD_MARK,
            strong: true,
        });
    }
    if let Some(at) = r.rollback_started_ms {
        marks.push(Mark {
            x: r.since_start_s(at),
            label: "rollback".into(),
            short_label: "rollback".into(),
            kind: "rollback".into(),
            color: ROLLBACK_MARK,
            strong: true,
        });
    }
    marks
}

/// The marks in words, for the line under the charts' heading: only those drawn.
fn marks_in_words(r: &Review, marks: &[Mark]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let steps = marks.iter().filter(|m| !m.strong).count();
    if steps > 0 {
        parts.push(format!(
            "grey dashed lines: the {} step start{} (labelled where there is room; the steps table lists them all)",
            steps,
            if steps == 1 { "" } else { "s" }
        ));
    }
    if let Some(at) = r.held_ms {
        parts.push(format!("amber line: the hold at +{:.1} s", r.since_start_s(at)));
    }
    if let Some(at) = r.rollback_started_ms {
        parts.push(format!("red line: the rollback at +{:.1} s", r.since_start_s(at)));
    }
    parts.join("; ")
}

/// Cuts per-sample values (aligned with the samples) into at most [`CHART_POINTS_MAX`]
/// buckets, reduced by `reduce` (None: no point, the line breaks there).
fn bucketed<T: Copy>(xs: &[f64], values: &[Option<T>], reduce: impl Fn(&[T]) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
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
    values.iter().copied().filter(|v| v.is_finite()).reduce(f64::max)
}

/// A per-instance value at every sample, reduced to its peak per bucket.
fn peak_line(xs: &[f64], samples: &[Sample], key: &Key, label: String, thin: bool, value: impl Fn(&InstanceSample) -> Option<f64>) -> Line {
    let values: Vec<Option<f64>> = samples.iter().map(|s| key.of(s).and_then(&value).filter(|v| v.is_finite())).collect();
    Line { label, color: key.color, thin, runs: bucketed(xs, &values, peak) }
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
            let delta = previous.map(|(pr, pe)| if now.0 < pr || now.1 < pe { now } else { (now.0 - pr, now.1 - pe) });
            previous = Some(now);
            delta
        })
        .collect();
    let rate = |d: &[(u64, u64)]| {
        let (req, err) = d.iter().fold((0u64, 0u64), |(a, b), (r, e)| (a.saturating_add(*r), b.saturating_add(*e)));
        Some(if req == 0 { 0.0 } else { (err as f64 / req as f64).min(1.0) * 100.0 })
    };
    Line { label: key.label(), color: key.color, thin: false, runs: bucketed(xs, &deltas, rate) }
}

/// The unit a growth chart is drawn in: MiB from 1 MiB of growth (or shrinkage) up, else KiB.
fn growth_unit(samples: &[Sample], key: &Key, first: f64) -> (f64, &'static str) {
    let widest = samples
        .iter()
        .filter_map(|s| key.of(s)?.heap_allocated_bytes)
        .filter(|b| b.is_finite())
        .map(|b| (b - first).abs())
        .fold(0.0, f64::max);
    if widest >= MIB { (MIB, "MiB") } else { (KIB, "KiB") }
}

/// One small chart per instance: its heap's growth since its first sample of the deployment,
/// each on its own scale, captioned with the judged window's growth (the figure the
/// diagnosis states).
fn growth_charts(out: &mut String, r: &Review, drawn: &[Key], xs: &[f64], marks: &[Mark], x_max: f64) {
    let growth = r.heap_growth();
    out.push_str("<div class=\"multiples\">\n");
    for k in drawn {
        let first = r.samples.iter().filter_map(|s| k.of(s)?.heap_allocated_bytes).find(|b| b.is_finite());
        let swatch = format!("<span class=\"sw\" style=\"background:{}\"></span>", page::css_color(k.color));
        let Some(first) = first else {
            let _ = writeln!(out, "<figure class=\"chart\"><figcaption>{swatch}{}: no heap sample</figcaption></figure>", escape(&k.label()));
            continue;
        };
        let (unit, unit_name) = growth_unit(&r.samples, k, first);
        let line = peak_line(xs, &r.samples, k, k.label(), false, |i| Some((i.heap_allocated_bytes? - first) / unit));
        let figure = growth
            .iter()
            .find(|g| g.role == k.role && g.version == k.version && g.samples >= 2)
            .map(|g| {
                let d = g.growth_bytes();
                format!("{}{} over the judged window", if d < 0.0 { "−" } else { "+" }, format_bytes(d.abs()))
            })
            .unwrap_or_else(|| "too few samples for a growth".to_string());
        let y_desc = format!("{unit_name} grown");
        let chart = Chart {
            x_desc: "seconds since the start",
            y_desc: &y_desc,
            scale: Scale::Growth { span_min: GROWTH_SPAN_MIN_BYTES / unit },
            size: Size::Small,
            x_max,
            lines: vec![line],
            marks,
        };
        out.push_str(&page::figure_bare(&chart, &format!("{swatch}{}: {}", escape(&k.label()), escape(&figure))));
    }
    out.push_str("</div>\n");
    let _ = writeln!(out, "{}", page::legend(&[], marks));
}

fn charts(out: &mut String, r: &Review) {
    let _ = writeln!(out, "<h2 id=\"charts\">Charts</h2>");
    if r.samples.is_empty() {
        let _ = writeln!(out, "<p>No samples were recorded for this deployment, so there are no charts.</p>");
        return;
    }
    let all = keys(&r.samples);
    let drawn = &all[..all.len().min(CHART_SERIES_MAX)];
    let xs: Vec<f64> = r.samples.iter().map(|s| r.since_start_s(s.unix_ms)).collect();
    let marks = marks(r);
    let x_max = xs.iter().chain(marks.iter().map(|m| &m.x)).copied().filter(|x| x.is_finite()).fold(0.0, f64::max);
    let marks_words = marks_in_words(r, &marks);
    let _ = writeln!(
        out,
        "<p class=\"muted\">x axis: seconds since the deployment started{}. {} samples{}.</p>",
        if marks_words.is_empty() { String::new() } else { format!("; {marks_words}") },
        r.samples.len(),
        if r.samples.len() > CHART_POINTS_MAX {
            format!(", drawn as at most {CHART_POINTS_MAX} points per line (each the peak of its bucket)")
        } else {
            String::new()
        },
    );
    if all.len() > drawn.len() {
        let _ = writeln!(out, "<p class=\"muted\">{} more instances are not drawn.</p>", all.len() - drawn.len());
    }
    let chart = |y_desc: &'static str, scale: Scale, lines: Vec<Line>| Chart {
        x_desc: "seconds since the deployment started",
        y_desc,
        scale,
        size: Size::Full,
        x_max,
        lines,
        marks: &marks,
    };

    let _ = writeln!(out, "<h3>Heap allocated per instance</h3>");
    let heap = drawn.iter().map(|k| peak_line(&xs, &r.samples, k, k.label(), false, |i| i.heap_allocated_bytes.map(|b| b / MIB))).collect();
    out.push_str(&page::figure(&chart("MiB", Scale::Fit, heap), None));

    let _ = writeln!(
        out,
        "<h3>Heap growth per instance, since the deployment started</h3>\n\
         <p class=\"muted\">Each on its own scale (at least {} tall, so allocator noise does not look like growth): read the axis and the caption, not the slope alone.</p>",
        format_bytes(GROWTH_SPAN_MIN_BYTES)
    );
    growth_charts(out, r, drawn, &xs, &marks, x_max);

    let _ = writeln!(out, "<h3>Resident memory (RSS) per instance</h3>");
    let rss = drawn.iter().map(|k| peak_line(&xs, &r.samples, k, k.label(), false, |i| i.resident_bytes.map(|b| b / MIB))).collect();
    out.push_str(&page::figure(&chart("MiB", Scale::Fit, rss), None));

    let _ = writeln!(out, "<h3>Latency per instance and second</h3>");
    let mut latency: Vec<Line> = drawn.iter().map(|k| peak_line(&xs, &r.samples, k, format!("{} p99", k.label()), false, |i| i.latency_p99_ms)).collect();
    latency.extend(drawn.iter().map(|k| peak_line(&xs, &r.samples, k, format!("{} p50", k.label()), true, |i| i.latency_p50_ms)));
    out.push_str(&page::figure(&chart("milliseconds", Scale::LogIfWide, latency), None));

    let _ = writeln!(out, "<h3>Error rate per instance and second</h3>");
    let errors: Vec<Line> = drawn.iter().map(|k| error_rate_line(&xs, &r.samples, k)).collect();
    let none = errors.iter().flat_map(|l| l.runs.iter().flatten()).all(|(_, y)| *y == 0.0);
    out.push_str(&page::figure(&chart("% of requests", Scale::Zero, errors), None));
    if none {
        let _ = writeln!(out, "<p>No instance answered with an error in any sampled second.</p>");
    }
}

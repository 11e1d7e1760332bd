//! What both reports' pages share: the CSS they start from, escaping, and a chart as HTML (the
//! inline SVG, its legend below it).

use std::fmt::Write as _;

use plotters::style::RGBColor;

use crate::chart::{Chart, Line, Mark, LINES_MAX, MARKS_MAX};

/// The CSS both reports start from (a report appends its own classes). Tables are as wide as
/// their content and scroll inside themselves when that is wider than the page, so the page
/// never scrolls sideways; charts shrink with the page, never grow past the size they were
/// drawn at; hashes stay on one line.
pub const CSS: &str = "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;padding:0 1.5em;color:#222;max-width:1080px;line-height:1.4}\
h1{font-size:1.5em;margin-bottom:0.2em}h2{font-size:1.2em;margin-top:2.2em;border-bottom:1px solid #ddd;padding-bottom:0.2em}\
h3{font-size:1.02em;margin-top:1.4em}\
table{border-collapse:collapse;margin:0.5em 0;font-size:0.92em;display:block;width:max-content;max-width:100%;overflow-x:auto}\
td,th{border:1px solid #ccc;padding:3px 9px;text-align:left;vertical-align:top}\
th{background:#f4f4f4}td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}td.n{white-space:nowrap}\
code,pre{font-family:ui-monospace,'DejaVu Sans Mono',monospace;font-size:0.9em}\
code{overflow-wrap:anywhere}code.hash{white-space:nowrap;overflow-wrap:normal}\
pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;margin:0.3em 0}\
.pass{color:#17702a;font-weight:bold}.fail{color:#b00020;font-weight:bold}.warn{color:#a86400;font-weight:bold}.muted{color:#666}\
figure.chart{margin:0.6em 0 1.4em}.chart svg{max-width:100%;height:auto;display:block}\
figure.chart figcaption{font-size:0.92em;margin:0 0 0.2em}\
.multiples{display:flex;flex-wrap:wrap;gap:0 18px}.multiples figure.chart{margin:0.4em 0 0.6em}\
ul.legend{list-style:none;padding:0;margin:0.3em 0 0;font-size:0.9em}ul.legend li{display:inline-block;margin-right:1.3em}\
.sw{display:inline-block;width:22px;height:4px;vertical-align:middle;margin-right:5px}\
.sw.thin{height:2px;opacity:0.6}.sw.mark{width:3px;height:14px}.sw.mark.dash{width:0;background:none;border-left:2px dashed}\
ul:has(> li > input[type=checkbox]){list-style:none;padding-left:1.2em}\
li > input[type=checkbox]{margin:0 0.5em 0 0;vertical-align:-0.1em}\
@media (max-width:640px){body{padding:0 0.8em}}";

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

/// `#d62728`.
pub fn css_color(c: RGBColor) -> String {
    format!("#{:02x}{:02x}{:02x}", c.0, c.1, c.2)
}

/// A drawn chart as inline SVG (the namespace dropped: inline SVG in HTML needs none, and the
/// file stays free of URLs), or a line saying why there is none.
pub fn inline_svg(chart: &Chart<'_>) -> String {
    match chart.svg() {
        Ok(svg) => svg.replace(" xmlns=\"http://www.w3.org/2000/svg\"", ""),
        Err(e) => format!("<p class=\"muted\">chart unavailable: {}</p>", escape(&e)),
    }
}

/// The legend: one entry per line label, then one per kind of mark the chart shows (a kind
/// absent from the chart is absent from its legend).
pub fn legend(lines: &[Line], marks: &[Mark]) -> String {
    let mut out = String::from("<ul class=\"legend\">");
    let mut seen: Vec<&str> = Vec::new();
    for l in lines.iter().take(LINES_MAX) {
        if seen.contains(&l.label.as_str()) {
            continue;
        }
        seen.push(&l.label);
        let _ = write!(
            out,
            "<li><span class=\"sw{}\" style=\"background:{}\"></span>{}</li>",
            if l.thin { " thin" } else { "" },
            css_color(l.color),
            escape(&l.label)
        );
    }
    let mut kinds: Vec<&str> = Vec::new();
    for m in marks.iter().filter(|m| m.x.is_finite()).take(MARKS_MAX) {
        if kinds.contains(&m.kind.as_str()) {
            continue;
        }
        kinds.push(&m.kind);
        let color = css_color(m.color);
        let swatch = if m.strong {
            format!("<span class=\"sw mark\" style=\"background:{color}\"></span>")
        } else {
            format!("<span class=\"sw mark dash\" style=\"border-color:{color}\"></span>")
        };
        let _ = write!(out, "<li>{swatch}{}</li>", escape(&m.kind));
    }
    out.push_str("</ul>");
    out
}

/// A chart with its legend below it, as a `<figure>`; `caption` is HTML (escape what it
/// quotes).
pub fn figure(chart: &Chart<'_>, caption: Option<&str>) -> String {
    let caption = caption.map(|c| format!("<figcaption>{c}</figcaption>")).unwrap_or_default();
    format!("<figure class=\"chart\">{caption}{}{}</figure>\n", inline_svg(chart), legend(&chart.lines, chart.marks))
}

/// A chart without a legend (one of a row of small charts sharing one), as a `<figure>`.
pub fn figure_bare(chart: &Chart<'_>, caption: &str) -> String {
    format!("<figure class=\"chart\"><figcaption>{caption}</figcaption>{}</figure>\n", inline_svg(chart))
}

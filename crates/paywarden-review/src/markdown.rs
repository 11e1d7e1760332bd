//! The review as Markdown: the same facts as the HTML review, with tables where the HTML has
//! charts (memory per instance at each step's start and at the end).

use std::fmt::Write as _;

use crate::model::{format_bytes, format_clock, format_time, Review};

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.filter(|x| x.is_finite()).map(f).unwrap_or_else(|| "–".into())
}

/// Escapes `|` (table cells) and line breaks.
fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// The review as a Markdown document.
pub fn render(r: &Review) -> String {
    let mut o = String::new();
    let outcome = match r.outcome.as_str() {
        "promoted" => "promoted",
        "rolled_back" => "rolled back",
        _ => "in progress",
    };
    let _ = writeln!(o, "# Post-deployment review: {} ({})\n", r.version, r.id);
    let _ = writeln!(
        o,
        "**Outcome: {outcome}.** {}\n",
        r.reason.as_deref().map(cell).unwrap_or_default()
    );
    let _ = writeln!(
        o,
        "Started {}{}.\n",
        format_time(r.started_ms),
        r.ended_ms.map(|e| format!(", ended after {:.1} s", r.since_start_s(e))).unwrap_or_default()
    );

    let _ = writeln!(o, "## Versions\n");
    let _ = writeln!(o, "| role | version | binary SHA-256 |\n|---|---|---|");
    let _ = writeln!(o, "| canary | {} | `{}` |", cell(&r.version), r.sha256);
    let _ = writeln!(o, "| baseline (the stable release) | {} | `{}` |", cell(&r.baseline_version), r.baseline_sha256.as_deref().unwrap_or("–"));
    let _ = writeln!(o, "\nCanary binary `{}`, arguments `{}`.\n", r.binary, cell(&r.args.join(" ")));

    let _ = writeln!(o, "## Plan\n");
    let steps: Vec<String> = r.plan_steps.iter().map(|(w, b)| format!("{w} % for {b}")).collect();
    let _ = writeln!(
        o,
        "Plan `{}`: {}; step timeout {}; automatic rollback {}.\n",
        cell(&r.plan_name),
        steps.join(", "),
        r.step_timeout,
        if r.auto_rollback { "on" } else { "OFF (training)" }
    );

    schema(&mut o, r);

    let _ = writeln!(o, "## Steps\n");
    let _ = writeln!(o, "| step | canary weight | baseline weight | start (UTC) | end (UTC) | duration | result |\n|---|---|---|---|---|---|---|");
    for s in &r.steps {
        let _ = writeln!(
            o,
            "| {} | {} % | {} % | {} | {} | {} | {} |",
            s.step,
            s.weight_pct,
            s.baseline_weight_pct,
            format_clock(s.start_ms),
            s.end_ms.map(format_clock).unwrap_or_else(|| "–".into()),
            s.end_ms.map(|e| format!("{:.1} s", e.saturating_sub(s.start_ms) as f64 / 1000.0)).unwrap_or_else(|| "–".into()),
            s.result
        );
    }
    if r.steps.is_empty() {
        let _ = writeln!(o, "| – | – | – | – | – | – | no step ran |");
    }

    let _ = writeln!(o, "\n## Verdict per metric\n");
    match &r.verdict {
        Some(v) => {
            let _ = writeln!(o, "Last verdict: **{}**, {}: {}\n", v.score, crate::words::score(v), cell(&v.reason));
            let _ = writeln!(o, "| metric | critical | score | canary | baseline | figures |\n|---|---|---|---|---|---|");
            for m in &v.metrics {
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} |",
                    m.metric,
                    if m.critical { "yes" } else { "no" },
                    m.score,
                    opt(m.canary, |x| format!("{x:.4}")),
                    opt(m.baseline, |x| format!("{x:.4}")),
                    cell(&m.detail)
                );
            }
        }
        None => {
            let _ = writeln!(o, "The judge gave no verdict.");
        }
    }
    if let Some((at, v)) = &r.first_failure {
        let _ = writeln!(o, "\nFirst failing verdict {:.1} s after the start: {}", r.since_start_s(*at), cell(&v.reason));
    }

    let _ = writeln!(o, "\n## Traffic, latency and errors per version\n");
    let t = &r.traffic;
    let _ = writeln!(
        o,
        "{} requests through the proxy during the deployment; {} to the canary ({}), {} to the baseline; {} failed ({} payment requests); {} merchant key(s) reached the canary.\n",
        t.requests_total,
        t.requests_to_canary,
        opt(t.exposed_pct(), |p| format!("{p:.2} %")),
        t.requests_to_baseline,
        t.failed_requests,
        t.failed_payment_requests,
        t.merchants_to_canary
    );
    let _ = writeln!(o, "| instance | version | requests | errors | error rate | p50 (median second) | p99 (worst second) |\n|---|---|---|---|---|---|---|");
    for i in &r.instances {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} | {} |",
            i.role,
            cell(&i.version),
            i.requests,
            i.errors,
            opt(i.error_rate, |x| format!("{:.2} %", x * 100.0)),
            opt(i.latency_p50_ms, |x| format!("{x:.2} ms")),
            opt(i.latency_p99_ms, |x| format!("{x:.2} ms"))
        );
    }

    let _ = writeln!(o, "\n## Memory per instance\n");
    if r.samples.is_empty() {
        let _ = writeln!(o, "No samples were recorded.");
    } else {
        let _ = writeln!(o, "| instance | version | heap first | heap last | RSS first | RSS last | RSS peak |\n|---|---|---|---|---|---|---|");
        for i in &r.instances {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} |",
                i.role,
                cell(&i.version),
                opt(i.heap_first_bytes, format_bytes),
                opt(i.heap_last_bytes, format_bytes),
                opt(i.rss_first_bytes, format_bytes),
                opt(i.rss_last_bytes, format_bytes),
                opt(i.rss_peak_bytes, format_bytes)
            );
        }
        // Heap at each step's first sample, per instance: the chart's points, as a table.
        let roles: Vec<(String, String)> = r.instances.iter().map(|i| (i.role.clone(), i.version.clone())).collect();
        let _ = write!(o, "\nHeap allocated at the start of each step:\n\n| step | +s |");
        for (role, v) in &roles {
            let _ = write!(o, " {role} ({}) |", cell(v));
        }
        let _ = write!(o, "\n|---|---|");
        for _ in &roles {
            let _ = write!(o, "---|");
        }
        let _ = writeln!(o);
        for s in &r.steps {
            let Some(smp) = r.samples.iter().find(|x| x.unix_ms >= s.start_ms) else { continue };
            let _ = write!(o, "| {} | {:.0} |", s.step, r.since_start_s(smp.unix_ms));
            for (role, v) in &roles {
                let h = smp.instances.iter().find(|i| i.role == *role && i.version == *v).and_then(|i| i.heap_allocated_bytes);
                let _ = write!(o, " {} |", opt(h, format_bytes));
            }
            let _ = writeln!(o);
        }
    }

    let _ = writeln!(o, "\n## Alerts\n");
    if r.alerts.is_empty() {
        let _ = writeln!(o, "No alert fired.");
    } else {
        let _ = writeln!(o, "| time (UTC) | +s | alert | status | instance | summary |\n|---|---|---|---|---|---|");
        for a in &r.alerts {
            let _ = writeln!(
                o,
                "| {} | {:.1} | {} | {} | {} ({}) | {} |",
                format_clock(a.at_ms),
                r.since_start_s(a.at_ms),
                cell(&a.name),
                a.status,
                a.instance,
                cell(&a.version),
                cell(&a.summary)
            );
        }
    }

    let _ = writeln!(o, "\n## Diagnosis\n");
    if !r.samples.is_empty() {
        let _ = writeln!(o, "{}\n", cell(&crate::words::heap_growth(r)));
    }
    match &r.diagnosis {
        None => {
            let _ = writeln!(o, "No heap diff was taken (the canary was not rolled back or held).");
        }
        Some(d) if d.error.is_some() => {
            let _ = writeln!(o, "The canary's heap diff failed: {}", cell(d.error.as_deref().unwrap_or("")));
        }
        Some(d) if d.sites.is_empty() => {
            let _ = writeln!(o, "No allocation site grew more on the canary than on the baseline over {:.0} s.", d.window_s);
        }
        Some(d) => {
            let _ = writeln!(o, "Allocation sites that grew on the canary over {:.0} s, net of the baseline:\n", d.window_s);
            let _ = writeln!(o, "| site | kept | rate | share | evidence |\n|---|---|---|---|---|");
            for s in &d.sites {
                let _ = writeln!(
                    o,
                    "| `{}` | {} | {}/s | {:.0} % | {} |",
                    cell(&s.function),
                    format_bytes(s.growth_bytes),
                    format_bytes(s.bytes_per_second),
                    s.share * 100.0,
                    crate::incident::evidence(s)
                );
            }
        }
    }
    match (crate::words::signals(r), &r.leak_report) {
        (Some(why), _) => {
            let _ = writeln!(o, "\n{}", cell(&why));
        }
        (None, Some(l)) => {
            let _ = writeln!(o, "\nmemguard on the canary: {}{}", l.state, l.summary.as_deref().map(|s| format!(" ({})", cell(s))).unwrap_or_default());
        }
        (None, None) => {}
    }

    let _ = writeln!(o, "\n## Timeline (UTC)\n");
    for e in &r.timeline {
        let _ = writeln!(o, "- {} (+{:.1} s): {}", format_clock(e.at_ms), r.since_start_s(e.at_ms), e.text.replace('\n', " "));
    }
    o
}

/// The schema gate's verdict and the schema's history.
fn schema(o: &mut String, r: &Review) {
    let Some(g) = &r.schema else { return };
    let _ = writeln!(o, "## Schema\n");
    let _ = writeln!(o, "**Schema gate: {}.** {}\n", g.outcome.as_str(), cell(&g.reason));
    if g.allow_contract {
        let _ = writeln!(o, "The plan set `allow_contract = true`: the operator overrode the gate.\n");
    }
    if g.changes_schema() {
        let _ = writeln!(o, "Applied by this release when its canary started: {}.\n", cell(&g.pending_names()));
        let schema_line = r.verdict.as_ref().and_then(|v| v.metrics.iter().find(|m| m.metric == "schema"));
        if let Some(m) = schema_line {
            let _ = writeln!(o, "The previous release on the new schema (the verdict's `schema` line): {}, {}.\n", m.score, cell(&m.detail));
        }
    }
    if !g.history.is_empty() {
        let _ = writeln!(o, "| migration | kind | applied by | applied at |\n|---|---|---|---|");
        for m in &g.history {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} |",
                cell(&m.name),
                m.kind.as_str(),
                cell(m.release.as_deref().unwrap_or("?")),
                m.applied_unix_ms.map(|t| format_time(t.max(0) as u64)).unwrap_or_default()
            );
        }
        for m in &g.pending {
            let _ = writeln!(o, "| {} | {} | {} (this deployment) | – |", cell(&m.name), m.kind.as_str(), cell(&r.version));
        }
        let _ = writeln!(o);
    }
}

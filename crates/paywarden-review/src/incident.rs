//! The incident report: a postmortem draft in the shape of the 2024-08-12 report (issue
//! summary with duration, impact and root cause; a timeline to the second; root cause and
//! resolution; corrective and preventative measures as a checklist), filled from recorded
//! data only. What paywarden cannot know (why the code leaked, who fixes it) is left as a
//! marked question for the team.

use std::fmt::Write as _;

use crate::model::{format_bytes, format_clock, format_date, format_time, Review};

/// Stack frames of the leak site shown in the report.
pub const STACK_FRAMES_SHOWN: usize = 4;

fn secs(s: f64) -> String {
    if s >= 3600.0 {
        format!("{} h {} min", (s / 3600.0).floor(), ((s % 3600.0) / 60.0).round())
    } else if s >= 120.0 {
        format!("{} min {:.0} s", (s / 60.0).floor(), s % 60.0)
    } else {
        format!("{s:.1} s")
    }
}

/// What failed first, in words: the failing metrics of the first failing verdict.
fn detection(review: &Review) -> Option<(u64, String)> {
    let (at, v) = review.first_failure.as_ref()?;
    let failed: Vec<String> = v.metrics.iter().filter(|m| m.score == "fail").map(|m| format!("{} ({})", m.metric, m.detail)).collect();
    Some((*at, if failed.is_empty() { v.reason.clone() } else { failed.join("; ") }))
}

/// The postmortem draft as Markdown.
pub fn render(review: &Review) -> String {
    let mut o = String::new();
    let t = &review.traffic;
    let _ = writeln!(o, "# Incident report (draft): release {} ({})\n", review.version, review.id);
    let _ = writeln!(
        o,
        "_Drafted by paywarden from what it recorded ({} events, {} one-second samples). Sections marked **[team]** need people._\n",
        review.timeline.len(),
        review.samples.len()
    );

    // --- Issue summary
    let _ = writeln!(o, "## Issue Summary\n");
    let exposure_end = review.rollback_started_ms.or(review.ended_ms);
    let first_traffic = review.steps.first().map(|s| s.start_ms).unwrap_or(review.started_ms);
    match exposure_end {
        Some(end) => {
            let _ = writeln!(
                o,
                "**Duration:** the release {} served traffic for {}, from {} to {} UTC on {}; the rollback completed at {} UTC.\n",
                review.version,
                secs(end.saturating_sub(first_traffic) as f64 / 1000.0),
                format_clock(first_traffic),
                format_clock(end),
                format_date(first_traffic),
                review.rollback_completed_ms.or(review.ended_ms).map(format_clock).unwrap_or_else(|| "(not yet)".into())
            );
        }
        None => {
            let _ = writeln!(o, "**Duration:** ongoing: release {} still serves traffic (started {}).\n", review.version, format_time(first_traffic));
        }
    }
    let _ = writeln!(
        o,
        "**Impact:** {} of {} requests ({}) reached the release, from {} merchant key(s); {} requests failed (5xx), {} of them payment requests; {} failed at the release itself. Every other request was served by the stable release {}.\n",
        t.requests_to_canary,
        t.requests_total,
        t.exposed_pct().map(|p| format!("{p:.2} % of traffic")).unwrap_or_else(|| "no traffic".into()),
        t.merchants_to_canary,
        t.failed_requests,
        t.failed_payment_requests,
        t.failed_canary_requests,
        review.baseline_version
    );
    let root = root_cause(review);
    let _ = writeln!(o, "**Root Cause:** {root}\n");

    // --- Timeline
    let _ = writeln!(o, "## Timeline (UTC)\n");
    for e in &review.timeline {
        let _ = writeln!(o, "- {} (+{:.1} s): {}", format_clock(e.at_ms), review.since_start_s(e.at_ms), e.text.replace('\n', " "));
    }
    let _ = writeln!(o);

    // --- Root cause and resolution
    let _ = writeln!(o, "## Root Cause and Resolution\n");
    let _ = writeln!(o, "### Root Cause\n");
    let _ = writeln!(o, "{root}\n");
    if let Some((at, what)) = detection(review) {
        let _ = writeln!(o, "Detected {:.1} s after the deployment started by the canary judge (canary against a baseline started with it): {what}.\n", review.since_start_s(at));
    }
    if let Some(d) = review.diagnosis.as_ref().filter(|_| memory_cause(review))
        && let Some(top) = d.cause() {
            let _ = writeln!(o, "Heap diff of the canary over {:.0} s (sites net of the baseline's growth):\n", d.window_s);
            let _ = writeln!(o, "| allocation site | kept | rate | share | evidence |\n|---|---|---|---|---|");
            for site in &d.sites {
                let _ = writeln!(
                    o,
                    "| `{}` | {} | {}/s | {:.0} % | {} |",
                    site.function,
                    format_bytes(site.growth_bytes),
                    format_bytes(site.bytes_per_second),
                    site.share * 100.0,
                    evidence(site)
                );
            }
            let _ = writeln!(o, "\nCalled from:\n");
            for f in top.stack.iter().skip(1).take(STACK_FRAMES_SHOWN) {
                let _ = writeln!(o, "- `{f}`");
            }
            let _ = writeln!(o);
        }
    if memory_cause(review) && !review.samples.is_empty() {
        let _ = writeln!(o, "{}\n", crate::words::heap_growth(review));
    }
    match (crate::words::signals(review), &review.leak_report) {
        (Some(why), _) => {
            let _ = writeln!(o, "**Which signal caught it.** {why}\n");
        }
        (None, Some(l)) => {
            let _ = writeln!(o, "memguard's verdict on the canary at rollback: **{}**{}.\n", l.state, l.summary.as_ref().map(|s| format!(" ({s})")).unwrap_or_default());
        }
        (None, None) => {}
    }
    let _ = writeln!(o, "**[team]** Why did this code keep memory (or fail), and why did review and tests not catch it?\n");
    let _ = writeln!(o, "### Resolution\n");
    match (review.rollback_started_ms, review.rollback_completed_ms) {
        (Some(s), done) => {
            let how = if review.held_ms.is_some() { "rolled back by hand (automatic rollback was off)" } else if review.reason.as_deref().is_some_and(|r| r.starts_with("manual")) { "rolled back by hand" } else { "rolled back automatically" };
            let _ = writeln!(
                o,
                "The release was {how}: its weight went to 0 at {} UTC, {:.1} s after the deployment started{}; the stable release {} served all traffic from then on. Canary and baseline drained and stopped{}.\n",
                format_clock(s),
                review.since_start_s(s),
                detection(review).map(|(at, _)| format!(" and {:.1} s after detection", s.saturating_sub(at) as f64 / 1000.0)).unwrap_or_default(),
                review.baseline_version,
                done.map(|d| format!(" by {} UTC", format_clock(d))).unwrap_or_default()
            );
        }
        (None, _) if review.outcome == "promoted" => {
            let _ = writeln!(o, "The release was promoted; alerts fired during the rollout (see the timeline).\n");
        }
        _ => {
            let _ = writeln!(o, "Not resolved when this draft was written: the deployment is {}.\n", review.outcome.replace('_', " "));
        }
    }

    // --- Measures
    let _ = writeln!(o, "## Corrective and Preventative Measures\n");
    let _ = writeln!(o, "### Improvements/Fixes\n");
    match review.diagnosis.as_ref().filter(|_| memory_cause(review)).and_then(|d| d.cause()) {
        Some(top) => {
            let _ = writeln!(o, "- [ ] Fix `{}` in release {} (it kept {}/s on the canary) and add a test that bytes retained per payment stay at zero.", top.function, review.version, format_bytes(top.bytes_per_second));
        }
        None => {
            let _ = writeln!(o, "- [ ] Fix the regression in release {} named above and add a test for it.", review.version);
        }
    }
    let _ = writeln!(o, "- [ ] Code review of release {} with the heap diff and the verdict above.", review.version);
    let _ = writeln!(
        o,
        "- [{}] Staged rollout: the release met {} of traffic before the judge acted.",
        if t.exposed_pct().is_some_and(|p| p <= 5.0) { "x" } else { " " },
        t.exposed_pct().map(|p| format!("{p:.2} %")).unwrap_or_else(|| "none".into())
    );
    let _ = writeln!(
        o,
        "- [{}] Rollback plan: {}.",
        if review.rollback_started_ms.is_some() { "x" } else { " " },
        if review.auto_rollback { "automatic rollback on a failed analysis" } else { "automatic rollback was OFF for this deployment" }
    );
    let _ = writeln!(o, "- [x] Memory monitoring: heap and RSS per instance were recorded every second (see the review).");
    let _ = writeln!(o, "\n### TODO List\n");
    let _ = writeln!(o, "- [ ] Redeploy the fixed release through `paywarden deploy` (the same plan).");
    let _ = writeln!(o, "- [ ] Load-test the fix for memory under payment volume: `paywarden load --rate N --duration 10m --out DIR` (soak verdict in the report).");
    let _ = writeln!(o, "- [ ] Train on it: `paywarden drill --scenario aug12 --manual`.");
    let _ = writeln!(o, "- [ ] Post-deployment review of {}: `paywarden review {} --out DIR`.", review.id, review.id);
    let _ = writeln!(o, "- [ ] **[team]** Owners and dates for the items above.");
    o
}

/// A site's evidence in words: its samples, and whether that is enough to blame it.
pub fn evidence(site: &crate::model::SiteView) -> String {
    let n = site.evidence_samples.map(|e| format!("{e:.0} samples")).unwrap_or_else(|| "–".into());
    if site.confident { n } else { format!("{n}, too few to blame") }
}

/// Metrics whose failure is about memory: the heap diff explains them.
pub const MEMORY_METRICS: &[&str] = &["heap_growth_per_request", "leak"];

/// Whether the first failure was about memory (or nothing failed, e.g. a manual rollback),
/// so the heap diff's top site is the cause; a latency or error regression is not explained
/// by whatever the diff happened to sample.
pub fn memory_cause(review: &Review) -> bool {
    match &review.first_failure {
        None => true,
        Some((_, v)) => v.metrics.iter().any(|m| m.score == "fail" && MEMORY_METRICS.contains(&m.metric.as_str())),
    }
}

/// The root cause in one paragraph: from the heap diff when memory failed and it names a
/// site, else from the failing metrics, else the recorded reason.
pub fn root_cause(review: &Review) -> String {
    if let Some(top) = review.diagnosis.as_ref().filter(|_| memory_cause(review)).and_then(|d| d.cause()) {
        let caller = top.stack.get(1).map(|c| format!(", called from `{c}`")).unwrap_or_default();
        return format!(
            "release {} keeps memory at `{}`{caller}: {} kept over {:.0} s on the canary, {}/s, {:.0} % of the growth the baseline did not show.",
            review.version,
            top.function,
            format_bytes(top.growth_bytes),
            review.diagnosis.as_ref().map(|d| d.window_s).unwrap_or(0.0),
            format_bytes(top.bytes_per_second),
            top.share * 100.0
        );
    }
    if let Some((_, what)) = detection(review) {
        return format!("release {} regressed against the baseline: {what}.", review.version);
    }
    match &review.reason {
        Some(r) => format!("{r}."),
        None => "not determined from the recorded data.".into(),
    }
}

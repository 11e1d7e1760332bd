//! The sentences the Markdown review, the HTML review and the incident draft share, so a figure
//! in words is the same in all three and is what the charts show. Plain text: each renderer
//! escapes it for its format.

use memguard::leak::LeakConfig;

use crate::model::{format_bytes, HeapGrowth, MetricView, Review, VerdictView};

/// The judge's metric for heap kept per request, canary against baseline.
pub const HEAP_METRIC: &str = "heap_growth_per_request";

/// `1,000`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `2 of 4 metrics passed (50 %)`: Kayenta's score, the share of metrics that passed, with
/// what it is a share of. Counted from the metrics shown beside it; the recorded percentage
/// stands alone only when no metric was recorded.
pub fn score(v: &VerdictView) -> String {
    let n = v.metrics.len();
    if n == 0 {
        return if v.score_pct.is_finite() { format!("{:.0} % of metrics passed", v.score_pct) } else { "no metric recorded".to_string() };
    }
    let passed = v.metrics.iter().filter(|m| m.score == "pass").count();
    format!("{passed} of {n} metric{} passed ({:.0} %)", if n == 1 { "" } else { "s" }, 100.0 * passed as f64 / n as f64)
}

/// `grew 589 KiB (85.6 MiB → 86.2 MiB)`, `shrank 12 KiB (…)`.
fn growth(g: &HeapGrowth) -> String {
    let d = g.growth_bytes();
    let verb = if d < 0.0 { "shrank" } else { "grew" };
    format!("{verb} {} ({} → {})", format_bytes(d.abs()), format_bytes(g.first_bytes), format_bytes(g.last_bytes))
}

/// Canary against baseline over the judged window, from the samples: what the heap charts
/// show, in one sentence. Says so when an instance has no samples to tell.
pub fn heap_growth(r: &Review) -> String {
    let until = r.judged_until_ms().map(|t| format!(" to +{:.1} s", r.since_start_s(t))).unwrap_or_default();
    let side = |role: &str| -> (String, Option<HeapGrowth>) {
        match r.heap_growth_of(role) {
            Some(g) if g.samples >= 2 => (format!("the {role}'s heap ({}) {}", g.version, growth(&g)), Some(g)),
            Some(g) => (format!("the {role}'s heap ({}) has one sample only, so no growth to tell", g.version), None),
            None => (format!("the {role}'s heap was not sampled"), None),
        }
    };
    let (c_words, c) = side("canary");
    let (b_words, b) = side("baseline");
    let mut s = format!("Over the judged window (the deployment's samples{until}), {c_words}; {b_words}");
    if let (Some(c), Some(b)) = (c, b) {
        let more = c.growth_bytes() - b.growth_bytes();
        let (who, by) = if more >= 0.0 { ("canary", more) } else { ("baseline", -more) };
        s.push_str(&format!(": the {who} grew {} more", format_bytes(by)));
    }
    s.push('.');
    s
}

fn failing_heap_metric(v: &VerdictView) -> Option<&MetricView> {
    v.metrics.iter().find(|m| m.metric == HEAP_METRIC && m.score == "fail")
}

/// When the judge failed the canary on heap kept per request while memguard's detector on the
/// canary did not call it leaking: which signal caught it, and why the other did not, with the
/// record's figures. None otherwise.
pub fn signals(r: &Review) -> Option<String> {
    let (at, verdict) = r.first_failure.as_ref()?;
    let metric = failing_heap_metric(verdict)?;
    let leak = r.leak_report.as_ref().filter(|l| l.state != "leaking")?;
    let weight = r.steps.iter().rev().find(|s| s.start_ms <= *at).map(|s| s.weight_pct);
    let canary = r.heap_growth_of("canary");
    let requests = canary.as_ref().map(|g| g.requests).unwrap_or(r.traffic.requests_to_canary);
    let per_request = |x: Option<f64>| x.filter(|x| x.is_finite()).map(|x| format!("{x:.0} B/request")).unwrap_or_else(|| "unknown".into());
    let threshold = r.heap_growth_fail_bytes.map(|t| format!("; it fails the canary at {t:.0} B/request more than the baseline")).unwrap_or_default();
    let share = weight.map(|w| format!(" with {} % of traffic", crate::model::format_weight(w))).unwrap_or_default();
    let mut s = format!(
        "The judge caught it on {HEAP_METRIC}: it compares the canary's heap growth per request with the baseline's over the same window (canary {}, baseline {}{threshold}), so growth per request stands out{share}, after {} requests to the canary. ",
        per_request(metric.canary),
        per_request(metric.baseline),
        thousands(requests),
    );
    // What memguard's detector needs before it says more than ok (its defaults, which `paywarden
    // serve` runs with), and what the canary gave it.
    let cfg = LeakConfig::default();
    s.push_str(&format!(
        "memguard's verdict on the canary was {}: its detector judges one instance alone, its own heap against its own requests over windows of {} to {} one-second samples, and calls even suspect only a trend of {:.0} B/request at {:.0} % confidence adding up to {}.",
        leak.state,
        cfg.shortest_window_samples,
        thousands(cfg.window_samples as u64),
        cfg.suspect_bytes_per_work,
        cfg.suspect_confidence * 100.0,
        format_bytes(cfg.suspect_growth_bytes as f64),
    ));
    let mut had: Vec<String> = Vec::new();
    if let Some(n) = leak.samples {
        had.push(format!("{n} samples ({} needed before any verdict)", cfg.min_samples));
    }
    had.push(format!("{} requests ({} needed in a window)", thousands(requests), thousands(cfg.min_work_per_window)));
    match canary.as_ref().filter(|g| g.samples >= 2) {
        Some(g) if g.growth_bytes() >= 0.0 => had.push(format!("a heap that grew {}", format_bytes(g.growth_bytes()))),
        Some(g) => had.push(format!("a heap that shrank {}", format_bytes(-g.growth_bytes()))),
        None => had.push("no heap samples in the review".to_string()),
    }
    s.push_str(&format!(" Here it had {}", join_and(&had)));
    match &leak.reason {
        Some(why) => s.push_str(&format!(" (memguard: {why}).")),
        None => s.push('.'),
    }
    Some(s)
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [first, second] => format!("{first} and {second}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_and_lists_read_as_prose() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(join_and(&["a".into()]), "a");
        assert_eq!(join_and(&["a".into(), "b".into()]), "a and b");
        assert_eq!(join_and(&["a".into(), "b".into(), "c".into()]), "a, b, and c");
    }
}

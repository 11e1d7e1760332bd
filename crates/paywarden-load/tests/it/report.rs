use std::time::Duration;

use paywarden_load::report::html;
use paywarden_load::scenario::{Operation, builtin};
use paywarden_load::summary::{MemorySummary, Recorder, Summary, TargetSample};
use paywarden_load::threshold::Threshold;

fn summary(name: &str, with_memory: bool) -> Summary {
    let mut r = Recorder::new();
    for second in 0..30u64 {
        for i in 0..(50 + second) {
            let ok = i % 25 != 0;
            r.record(
                Operation::Create,
                Duration::from_micros(800 + 37 * i),
                ok,
                Some("status_5xx"),
            );
            r.record(
                Operation::Confirm,
                Duration::from_micros(1500 + 11 * i),
                true,
                None,
            );
        }
        let sample = with_memory.then(|| TargetSample {
            rss_bytes: Some((100 << 20) + second * 4096),
            heap_bytes: Some((40 << 20) + second * 1024),
            leak_state: Some(0),
        });
        r.tick(second, sample);
    }
    let mut scenario = builtin("payments", 50.0, Duration::from_secs(30)).expect("known");
    scenario.name = name.to_string();
    scenario.thresholds = vec![
        "p99<50ms".parse::<Threshold>().expect("valid"),
        "error_rate<1%".parse().expect("valid"),
    ];
    let memory = with_memory.then(|| MemorySummary {
        rss_start_bytes: 100 << 20,
        rss_end_bytes: (100 << 20) + 29 * 4096,
        rss_max_bytes: (100 << 20) + 29 * 4096,
        heap_start_bytes: Some(40 << 20),
        heap_end_bytes: Some((40 << 20) + 29 * 1024),
        bytes_per_payment: Some(0.6),
        verdict: "ok".into(),
        detail: "heap <flat> & steady".into(),
    });
    let mut s = r.summary(&scenario, Duration::from_secs(30), memory);
    s.apply_thresholds(&scenario.thresholds);
    s
}

fn assert_self_contained(page: &str) {
    assert!(page.starts_with("<!DOCTYPE html>"));
    assert!(page.trim_end().ends_with("</html>"));
    let lower = page.to_lowercase();
    for forbidden in [
        "<script", "http://", "https://", "src=", "<link", "@import", "url(",
    ] {
        assert!(!lower.contains(forbidden), "report contains {forbidden:?}");
    }
}

#[test]
fn report_with_memory_has_three_charts() {
    let page = html(&summary("payments", true));
    assert_self_contained(&page);
    assert_eq!(page.matches("<svg").count(), 3);
    assert_eq!(page.matches("</svg>").count(), 3);
    for needle in [
        "Throughput",
        "Latency per second",
        "Target memory",
        "p99&lt;50ms",
        "error_rate&lt;1%",
        "status_5xx",
        "confirm",
        "heap &lt;flat&gt; &amp; steady",
        "FAILED",
    ] {
        assert!(page.contains(needle), "missing {needle:?}");
    }
}

#[test]
fn report_without_memory_has_two_charts() {
    let page = html(&summary("payments", false));
    assert_self_contained(&page);
    assert_eq!(page.matches("<svg").count(), 2);
    assert!(!page.contains("Target memory"));
}

#[test]
fn report_escapes_the_scenario_name() {
    let page = html(&summary("<b>\"x\" & 'y'</b>", false));
    assert!(!page.contains("<b>"), "unescaped name");
    assert!(page.contains("&lt;b&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/b&gt;"));
}

#[test]
fn report_of_an_empty_run_still_renders() {
    let scenario = builtin("noop", 1.0, Duration::from_secs(1)).expect("known");
    let s = Recorder::new().summary(&scenario, Duration::ZERO, None);
    let page = html(&s);
    assert_self_contained(&page);
    assert_eq!(page.matches("<svg").count(), 2);
}

#[test]
fn long_runs_make_small_reports() {
    let mut r = Recorder::new();
    for second in 0..20_000u64 {
        r.record(
            Operation::Healthz,
            Duration::from_micros(100 + second % 97),
            true,
            None,
        );
        r.tick(
            second,
            Some(TargetSample {
                rss_bytes: Some(1 << 26),
                heap_bytes: None,
                leak_state: None,
            }),
        );
    }
    let scenario = builtin("noop", 1.0, Duration::from_secs(20_000)).expect("known");
    let page = html(&r.summary(&scenario, Duration::from_secs(20_000), None));
    assert!(page.len() < 2_000_000, "{} bytes", page.len());
    assert_eq!(page.matches("<svg").count(), 3);
}

#[test]
fn every_heading_appears_once() {
    let page = html(&summary("payments", true));
    let headings: Vec<&str> = page.split("<h2>").skip(1).filter_map(|h| h.split("</h2>").next()).collect();
    let mut unique = headings.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), headings.len(), "{headings:?}");
    assert_eq!(page.matches("Target memory").count(), 1);
    // The memory figures and the memory chart are one section.
    let memory = page.split("<h2>Target memory</h2>").nth(1).unwrap();
    assert!(memory.contains("heap at start") && memory.contains("<svg"));
}

#[test]
fn charts_share_the_reviews_style() {
    let page = html(&summary("payments", true));
    assert!(page.contains(paywarden_charts::page::CSS), "the shared CSS");
    // Legends are HTML below each chart, never drawn over the plot.
    assert_eq!(page.matches("<ul class=\"legend\">").count(), 3);
    for label in ["requests/s", "errors/s", "p50", "p99", "RSS", "heap"] {
        assert!(page.contains(&format!("</span>{label}</li>")), "{label} in a legend");
        assert!(!page.contains(&format!(">\n{label}\n</text>")), "{label} drawn in a chart");
    }
    let ticks: Vec<&str> = page.split("</text>").filter_map(|t| t.rsplit(">\n").next()).map(str::trim).collect();
    assert!(ticks.iter().any(|t| *t == "0"), "tick labels found: {ticks:?}");
    assert_eq!(paywarden_charts::ticks::spurious_decimals(&page), Vec::<Vec<String>>::new(), "a decimal no tick needs");
    let sizes: Vec<f64> = page.split("font-size=\"").skip(1).filter_map(|s| s.split('"').next()?.parse().ok()).collect();
    assert!(!sizes.is_empty() && sizes.iter().all(|s| *s >= 13.0), "chart text at 13 px or more: {sizes:?}");
}

#[test]
fn headless_chromium_shows_the_report_readably_at_1400_and_800_px() {
    let out = paywarden_charts::browser::output_dir(env!("CARGO_TARGET_TMPDIR"), "paywarden-load");
    let report = out.join("report.html");
    std::fs::write(&report, html(&summary("payments", true))).unwrap();
    let rendered = paywarden_charts::browser::render(&report, &out, "report", &[1400, 800]);
    let problems = rendered.problems(3);
    assert!(problems.is_empty(), "{problems:#?}");
    for shot in &rendered.shots {
        println!("screenshot: {}", shot.png.display());
    }
}

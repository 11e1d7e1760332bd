//! The HTML review of the recorded 2026-11-24 deployment (a leaking canary rolled back at the
//! 1 % step) and of a promoted one: what it shows, that recorded strings cannot inject markup,
//! that odd or missing samples do not break it, and how headless Chromium shows it at 1,400
//! and 800 px (screenshots kept in `target/test-output/paywarden-review/`).

use std::path::Path;

use paywarden_review::Review;
use paywarden_review::html::{CHART_POINTS_MAX, markdown_to_html, render};
use paywarden_review::model::instance_stats;

const ID: &str = "dep_17955233586369dycksm93a";
const GOOD: &str = "dep_17955233789820j2ijreycz";
/// Heap, RSS, latency and error rate, and one heap growth chart per instance.
const CHARTS_BESIDE_GROWTH: usize = 4;

fn fixture() -> Review {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aug12");
    Review::load(&dir, ID).expect("the fixture loads")
}

fn good() -> Review {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/good");
    Review::load(&dir, GOOD).expect("the fixture loads")
}

/// The charts a review of these instances draws.
fn charts(r: &Review) -> usize {
    CHARTS_BESIDE_GROWTH + r.instances.len()
}

/// The charts section of a review.
fn charts_section(html: &str) -> &str {
    let start = html.find("<h2 id=\"charts\">").expect("a charts section");
    let end = html[start..].find("<h2 id=\"per-version\">").map_or(html.len(), |e| start + e);
    &html[start..end]
}

/// Every `<svg` has its `</svg>`, in order.
fn svgs_closed(html: &str) -> usize {
    let (mut open, mut count) = (false, 0);
    let mut rest = html;
    while let Some(i) = rest
        .find("<svg")
        .into_iter()
        .chain(rest.find("</svg>"))
        .min()
    {
        if rest[i..].starts_with("<svg") {
            assert!(!open, "an <svg opened inside another");
            open = true;
            count += 1;
        } else {
            assert!(open, "a </svg> without its <svg");
            open = false;
        }
        rest = &rest[i + 4..];
    }
    assert!(!open, "an <svg is not closed");
    count
}

#[test]
fn the_rolled_back_canary_review_shows_versions_hashes_charts_and_the_leak_site() {
    let review = fixture();
    let html = render(&review);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains(ID));
    // Outcome and reason.
    assert!(html.contains("rolled back"), "outcome");
    assert!(html.contains("heap_growth_per_request failed"), "reason");
    // Versions and hashes.
    assert!(
        html.contains("canary aug12-drill")
            && html.contains("baseline v0.1.0")
            && html.contains("stable v0.1.0"),
        "instance labels"
    );
    for sha in [review.sha256.as_str(), review.baseline_sha256.as_deref().unwrap()] {
        assert!(
            html.contains(&format!("<code class=\"hash\" title=\"{sha}\">{}…</code>", &sha[..12])),
            "each sha256 on one line, the whole in its title: {sha}"
        );
    }
    assert!(html.contains("--fault leak=16384"), "args");
    // Plan, steps and verdicts.
    assert!(html.contains("1m 30s"), "step timeout");
    assert!(
        html.contains("heap_growth_per_request"),
        "the failing metric"
    );
    assert!(html.contains("The first failing verdict, at "));
    // The diagnosis names the leak.
    assert!(
        html.contains("paywarden_api::faults::leak_on_confirmed_payment"),
        "leak site"
    );
    assert!(html.contains("<details><summary>stack"), "its stack");
    // Charts: memory (heap, growth per instance, RSS), latency and error rate, with the marks.
    assert_eq!(svgs_closed(&html), charts(&review), "seven charts");
    assert!(
        html.contains(">\nstep 1 · 1 %\n</text>") && html.contains(">\nrollback\n</text>"),
        "step and rollback marks"
    );
    assert!(
        html.contains("Incident report"),
        "a rollback is an incident"
    );
    // Self-contained: no script, nothing fetched.
    assert!(!html.to_ascii_lowercase().contains("<script"));
    assert!(
        !html.contains("http://")
            && !html.contains("https://")
            && !html.contains("<img")
            && !html.contains("<link")
    );
}

#[test]
fn strings_from_the_recorded_data_are_escaped() {
    let mut review = fixture();
    let evil = "<script>alert(1)</script>";
    review.reason = Some(evil.into());
    review.version = format!("v2{evil}");
    review.baseline_version = format!("\"'><b>{evil}");
    review.args.push(evil.into());
    review.plan_name = evil.into();
    review.timeline[0].text = evil.into();
    if let Some(d) = review.diagnosis.as_mut() {
        d.sites[0].function = evil.into();
        d.sites[0].stack.push(evil.into());
    }
    for s in &mut review.samples {
        for i in &mut s.instances {
            i.version = format!("{}{evil}", i.version);
        }
    }
    review.instances = instance_stats(&review.samples);
    let html = render(&review);
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "raw markup from the data"
    );
    assert!(!html.contains("<b>"));
    assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(svgs_closed(&html), charts(&review));
}

#[test]
fn the_incident_markdown_passes_no_raw_html_or_fetch() {
    let md = "# Title\n\n<script>alert(1)</script>\n\ntext <img src=x onerror=alert(1)> and ![pic](https://example.invalid/x.png)\n\n\
              [bad](javascript:alert(1)) [ok](https://example.invalid/) [anchor](#timeline)\n\n| a | b |\n|---|---|\n| 1 | <i>2</i> |\n";
    let html = markdown_to_html(md, 0);
    assert!(html.contains("<h1>Title</h1>"));
    assert!(
        !html.contains("<script") && !html.contains("<img") && !html.contains("<i>"),
        "{html}"
    );
    assert!(html.contains("&lt;script&gt;"), "{html}");
    assert!(!html.contains("javascript:"), "{html}");
    assert!(
        html.contains("<a href=\"https://example.invalid/\">ok</a>")
            && html.contains("<a href=\"#timeline\">"),
        "{html}"
    );
    assert!(
        html.contains("pic"),
        "an image becomes its alt text: {html}"
    );
    assert!(html.contains("<table>"), "tables: {html}");
    // Inside a section, its headings go down.
    let inside = markdown_to_html("# a\n\n## b\n\n###### c\n", 2);
    assert!(
        inside.contains("<h3>a</h3>")
            && inside.contains("<h4>b</h4>")
            && inside.contains("<h6>c</h6>"),
        "{inside}"
    );
}

#[test]
fn a_review_without_samples_says_so_instead_of_charting() {
    let mut review = fixture();
    review.samples.clear();
    review.instances.clear();
    let html = render(&review);
    assert!(html.contains("No samples were recorded"));
    assert!(!html.contains("<svg"));
    assert!(
        html.contains("paywarden_api::faults::leak_on_confirmed_payment"),
        "the rest is still there"
    );
}

#[test]
fn odd_and_long_sample_series_render_bounded() {
    let mut review = fixture();
    let base = review.samples.clone();
    // 10 000 seconds: the recorded pattern over and over, with holes, NaN, a counter reset
    // and an instance that vanishes.
    review.samples = (0..10_000u64)
        .map(|n| {
            let mut s = base[(n as usize) % base.len()].clone();
            s.unix_ms = review.started_ms + 1_000 * (n + 1);
            for i in &mut s.instances {
                i.requests += n * 10;
                if n == 5_000 {
                    i.requests = 0;
                    i.errors = 3;
                }
                if n % 97 == 0 {
                    i.heap_allocated_bytes = Some(f64::NAN);
                    i.latency_p99_ms = Some(f64::INFINITY);
                }
                if n == 1_234 {
                    i.heap_allocated_bytes = Some(f64::MAX);
                    i.resident_bytes = Some(-1.0);
                    i.latency_p50_ms = Some(0.0);
                }
                if n % 89 == 0 {
                    i.resident_bytes = None;
                    i.latency_p50_ms = None;
                }
            }
            if n > 9_000 {
                s.instances.retain(|i| i.role != "canary");
            }
            s
        })
        .collect();
    review.instances = instance_stats(&review.samples);
    review.verdict = None;
    review.first_failure = None;
    review.diagnosis = None;
    let html = render(&review);
    assert_eq!(svgs_closed(&html), charts(&review));
    assert!(!html.contains("NaN"), "no non-number drawn or printed");
    let longest = html
        .split("points=\"")
        .skip(1)
        .map(|p| p.split('"').next().unwrap_or("").split_whitespace().count())
        .max()
        .unwrap_or(0);
    assert!(
        longest > 100 && longest <= CHART_POINTS_MAX,
        "longest line: {longest} points"
    );

    // A review with no step, no verdict and no events renders too.
    let mut empty = fixture();
    empty.steps.clear();
    empty.timeline.clear();
    empty.alerts.clear();
    empty.rollback_started_ms = None;
    empty.outcome = "in_progress".into();
    empty.samples.truncate(1);
    empty.instances = instance_stats(&empty.samples);
    let html = render(&empty);
    assert!(html.contains("in progress"));
    assert_eq!(svgs_closed(&html), charts(&empty));
}

#[test]
fn the_score_says_what_its_percentage_is() {
    let html = render(&fixture());
    assert!(
        html.contains("2 of 4 metrics passed (50 %) <span class=\"muted\">(Kayenta's score: the share of metrics that passed)</span>"),
        "{}",
        html.split("<h3>The last verdict</h3>").nth(1).unwrap_or("").get(..400).unwrap_or("")
    );
}

#[test]
fn a_promoted_deployment_marks_only_what_happened() {
    let good = render(&good());
    let section = charts_section(&good);
    assert!(section.contains(">\nstep 5 · 100 %\n</text>") || section.contains(">\n100 %\n</text>"), "the last step is marked");
    for absent in ["rollback", "held", "red line", "amber line"] {
        assert!(!section.contains(absent), "{absent:?} in a promoted deployment's charts");
    }
    let rolled_back = render(&fixture());
    let section = charts_section(&rolled_back);
    assert!(section.contains("red line: the rollback at +13.2 s") && section.contains("<li><span class=\"sw mark\" style=\"background:#b00020\"></span>rollback</li>"));
    assert!(!section.contains("held"), "no hold happened");
}

#[test]
fn the_heap_gets_a_growth_chart_per_instance_captioned_with_the_samples_growth() {
    let review = fixture();
    let html = render(&review);
    let section = charts_section(&html);
    let growth = section.split("<div class=\"multiples\">").nth(1).expect("the growth charts").split("</div>").next().unwrap();
    assert_eq!(growth.matches("<svg").count(), review.instances.len(), "one per instance");
    for role in ["canary", "baseline", "stable"] {
        let heaps: Vec<f64> = review.samples.iter().filter_map(|s| s.instances.iter().find(|i| i.role == role)?.heap_allocated_bytes).collect();
        let grew = heaps.last().unwrap() - heaps.first().unwrap();
        let caption = format!(": +{} over the judged window</figcaption>", paywarden_review::model::format_bytes(grew));
        assert!(growth.contains(&caption), "{role}: {caption} in {growth}");
    }
    assert!(growth.contains(">\nKiB grown\n</text>"), "the growth in KiB, its own unit");
}

#[test]
fn the_incident_checklist_renders_as_checkboxes() {
    let html = render(&fixture());
    let incident = html.split("<h2 id=\"incident\">").nth(1).expect("an incident section");
    assert!(incident.contains("<input disabled=\"\" type=\"checkbox\"/>"), "open items");
    assert!(incident.contains("<input disabled=\"\" type=\"checkbox\" checked=\"\"/>"), "done items");
    assert!(!incident.contains("[ ]") && !incident.contains("[x]"), "no literal brackets");
    let md = markdown_to_html("- [ ] open <b>x</b>\n- [x] done\n", 0);
    assert!(md.contains("<li><input disabled=\"\" type=\"checkbox\"/>\nopen &lt;b&gt;x&lt;/b&gt;</li>"), "{md}");
    assert!(!md.contains("<b>"), "{md}");
}

#[test]
fn the_growth_in_words_is_the_samples_not_the_heap_profiles_estimate() {
    let mut review = fixture();
    // The drill of the issue: the heap diff's totals (profile estimates, with the symbolizer's
    // own allocations) far from what the samples show, and the baseline "growing more".
    let d = review.diagnosis.as_mut().unwrap();
    d.heap_growth_bytes = Some(122.9 * 1024.0 * 1024.0);
    d.baseline_heap_growth_bytes = Some(134.4 * 1024.0 * 1024.0);
    let html = render(&review);
    let md = paywarden_review::markdown::render(&review);
    let incident = paywarden_review::incident::render(&review);
    let growth = |role: &str| {
        let heaps: Vec<f64> = review.samples.iter().filter_map(|s| s.instances.iter().find(|i| i.role == role)?.heap_allocated_bytes).collect();
        paywarden_review::model::format_bytes(heaps.last().unwrap() - heaps.first().unwrap())
    };
    let (canary, baseline) = (growth("canary"), growth("baseline"));
    let plain = |s: &str| s.replace("&#39;", "'");
    for (name, text) in [("html", plain(&html)), ("markdown", md.clone()), ("incident", incident)] {
        assert!(!text.contains("122.9 MiB") && !text.contains("134.4 MiB"), "{name} states the profile's estimate");
        assert!(text.contains(&format!("the canary's heap (aug12-drill) grew {canary} (")), "{name}: canary {canary}");
        assert!(text.contains(&format!("the baseline's heap (v0.1.0) grew {baseline} (")), "{name}: baseline {baseline}");
        assert!(text.contains(": the canary grew "), "{name}: the leaking canary grew more");
    }
    // The sites keep their own figures.
    assert!(html.contains("paywarden_api::faults::leak_on_confirmed_payment") && md.contains("| 251 KiB |"));

    // Missing samples are said, not guessed.
    for s in &mut review.samples {
        s.instances.retain(|i| i.role != "baseline");
    }
    let md = paywarden_review::markdown::render(&review);
    assert!(md.contains("the baseline's heap was not sampled."), "{md}");
}

#[test]
fn a_leak_memguard_missed_is_explained_with_the_records_figures() {
    let review = fixture();
    let why = paywarden_review::words::signals(&review).expect("the judge failed the heap, memguard said ok");
    for want in [
        "The judge caught it on heap_growth_per_request",
        "canary 6136 B/request, baseline 36 B/request; it fails the canary at 512 B/request more than the baseline",
        "with 1 % of traffic, after 54 requests to the canary",
        "memguard's verdict on the canary was ok: its detector judges one instance alone",
        "13 samples (30 needed before any verdict)",
        "54 requests (1,000 needed in a window)",
        "(memguard: warming up: 13 of 30 samples)",
    ] {
        assert!(why.contains(want), "{want:?} in {why}");
    }
    let html = render(&review);
    assert!(html.contains("<strong>Which signal caught it.</strong> The judge caught it"));
    assert!(paywarden_review::incident::render(&review).contains("**Which signal caught it.** The judge caught it"));
    // A promoted deployment has nothing to explain.
    assert!(paywarden_review::words::signals(&good()).is_none());
}

#[test]
fn every_page_shares_the_chart_style() {
    let html = render(&fixture());
    assert!(html.contains(paywarden_charts::page::CSS), "the shared CSS");
    let sizes: Vec<f64> = html.split("font-size=\"").skip(1).filter_map(|s| s.split('"').next()?.parse().ok()).collect();
    assert!(sizes.iter().all(|s| *s >= 13.0 - 0.01), "chart text at 13 px or more: {sizes:?}");
    assert_eq!(paywarden_charts::ticks::spurious_decimals(&html), Vec::<Vec<String>>::new(), "a decimal no tick needs");
}

#[test]
fn headless_chromium_shows_both_reviews_readably_at_1400_and_800_px() {
    let out = paywarden_charts::browser::output_dir(env!("CARGO_TARGET_TMPDIR"), "paywarden-review");
    for (name, fixture, id) in [("aug12", "aug12", ID), ("good", "good", GOOD)] {
        let dir = out.join(name);
        let (review, written) =
            paywarden_review::write_review(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(fixture), id, &dir).unwrap();
        let rendered = paywarden_charts::browser::render(&written.html, &dir, "review", &[1400, 800]);
        let problems = rendered.problems(charts(&review));
        assert!(problems.is_empty(), "{name}: {problems:#?}");
        for shot in &rendered.shots {
            println!("screenshot: {}", shot.png.display());
        }
    }
}

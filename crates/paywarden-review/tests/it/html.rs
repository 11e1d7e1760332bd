//! The HTML review of the recorded 2026-11-24 deployment (a leaking canary rolled back at the
//! 1 % step): what it shows, that recorded strings cannot inject markup, that odd or missing
//! samples do not break it, and that headless Chromium renders it without a console message.

use std::path::{Path, PathBuf};
use std::process::Command;

use paywarden_review::Review;
use paywarden_review::html::{CHART_POINTS_MAX, markdown_to_html, render};
use paywarden_review::model::instance_stats;

const ID: &str = "dep_17955233586369dycksm93a";

fn fixture() -> Review {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aug12");
    Review::load(&dir, ID).expect("the fixture loads")
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
    assert!(
        html.contains(&review.sha256) && html.contains(review.baseline_sha256.as_deref().unwrap()),
        "sha256 of both"
    );
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
    // Charts: memory (heap, growth, RSS), latency and error rate, with the marks.
    assert_eq!(svgs_closed(&html), 5, "five charts");
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
    assert_eq!(svgs_closed(&html), 5);
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
    assert_eq!(svgs_closed(&html), 5);
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
    assert_eq!(svgs_closed(&html), 5);
}

fn chromium() -> &'static str {
    ["chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
        .unwrap_or_else(|| panic!("chromium is missing: apt-get install chromium"))
}

fn run_chromium(profile: &Path, args: &[String]) -> std::process::Output {
    Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
        ])
        .args([
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .output()
        .expect("run chromium")
}

#[test]
fn headless_chromium_renders_the_review_without_console_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (_, written) = paywarden_review::write_review(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/aug12"),
        ID,
        dir.path(),
    )
    .unwrap();
    let url = format!("file://{}", written.html.display());
    // Kept beside the screenshot, to look at.
    let _ = std::fs::copy(
        &written.html,
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("review.html"),
    );

    let profile = tempfile::tempdir().unwrap();
    let b = run_chromium(profile.path(), &["--dump-dom".into(), url.clone()]);
    let dom = String::from_utf8_lossy(&b.stdout);
    let log = String::from_utf8_lossy(&b.stderr);
    assert!(dom.contains("<svg"), "Chromium rendered the review: {log}");
    assert!(dom.contains("leak_on_confirmed_payment"));
    let console: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(":CONSOLE(") || l.contains("Uncaught"))
        .collect();
    assert!(console.is_empty(), "console messages: {console:?}");

    let png: PathBuf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("review.png");
    let _ = std::fs::remove_file(&png);
    let profile = tempfile::tempdir().unwrap();
    let b = run_chromium(
        profile.path(),
        &[
            format!("--screenshot={}", png.display()),
            "--window-size=1280,3000".into(),
            url,
        ],
    );
    let bytes = std::fs::read(&png).unwrap_or_else(|e| {
        panic!(
            "no screenshot at {} ({e}): {}",
            png.display(),
            String::from_utf8_lossy(&b.stderr)
        )
    });
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        bytes.len() > 20 * 1024,
        "a screenshot with content: {} bytes",
        bytes.len()
    );
    println!("screenshot: {}", png.display());
}

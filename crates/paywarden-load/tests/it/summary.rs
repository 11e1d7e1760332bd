use std::time::Duration;

use paywarden_load::scenario::{Operation, builtin};
use paywarden_load::summary::{
    ERROR_KINDS, ERROR_KINDS_MAX, MemorySummary, Recorder, TargetSample, format_bytes,
};
use paywarden_load::threshold::Threshold;

fn close(actual: f64, expected: f64, relative: f64) -> bool {
    (actual - expected).abs() <= expected.abs() * relative
}

#[test]
fn percentiles_per_operation_and_all() {
    let mut r = Recorder::new();
    for ms in 1..=1000u64 {
        r.record(Operation::Create, Duration::from_millis(ms), true, None);
    }
    for _ in 0..10 {
        r.record(Operation::Healthz, Duration::from_micros(250), true, None);
    }
    let scenario = builtin("payments", 100.0, Duration::from_secs(10)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(10), None);
    let create = &s.latency_ms["create"];
    assert_eq!(create.count, 1000);
    assert!(close(create.p50, 500.0, 0.002), "{create:?}");
    assert!(close(create.p90, 900.0, 0.002), "{create:?}");
    assert!(close(create.p99, 990.0, 0.002), "{create:?}");
    assert!(close(create.p99_9, 999.0, 0.002), "{create:?}");
    assert!(close(create.max, 1000.0, 0.002), "{create:?}");
    assert!(close(create.mean, 500.5, 0.002), "{create:?}");
    assert!(close(s.latency_ms["healthz"].p50, 0.25, 0.002));
    assert_eq!(s.latency_ms["all"].count, 1010);
    assert!(
        !s.latency_ms.contains_key("capture"),
        "operations without data are left out"
    );
    assert_eq!(s.requests_total, 1010);
    assert!(close(s.requests_per_second, 101.0, 1e-12));
    assert_eq!(s.scenario, "payments");
    assert_eq!(s.executor, "constant-arrival-rate 100/s for 10s");
}

#[test]
fn extreme_latencies_are_clamped_not_lost() {
    let mut r = Recorder::new();
    r.record(Operation::Create, Duration::ZERO, true, None);
    r.record(
        Operation::Create,
        Duration::from_secs(10 * 3600),
        true,
        None,
    );
    r.record(Operation::Create, Duration::MAX, true, None);
    let scenario = builtin("noop", 1.0, Duration::from_secs(1)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(1), None);
    assert_eq!(s.latency_ms["create"].count, 3);
    assert!(close(s.latency_ms["create"].max, 3_600_000.0, 0.002));
}

#[test]
fn error_kinds_are_bounded() {
    let mut r = Recorder::new();
    for kind in ERROR_KINDS {
        r.record(
            Operation::Confirm,
            Duration::from_millis(1),
            false,
            Some(kind),
        );
    }
    r.record(Operation::Confirm, Duration::from_millis(1), false, None);
    for i in 0..100 {
        r.record(
            Operation::Confirm,
            Duration::from_millis(1),
            false,
            Some(&format!("kind{i}")),
        );
    }
    r.record(
        Operation::Confirm,
        Duration::from_millis(1),
        true,
        Some("ignored"),
    );
    let scenario = builtin("payments", 1.0, Duration::from_secs(1)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(1), None);
    assert_eq!(s.errors_total, 108);
    assert_eq!(s.requests_total, 109);
    assert!(s.errors.len() <= ERROR_KINDS_MAX + 1, "{:?}", s.errors);
    assert_eq!(s.errors.values().sum::<u64>(), 108);
    assert_eq!(s.errors["timeout"], 1);
    assert!(s.errors["other"] >= 100 - (ERROR_KINDS_MAX as u64 - 8));
    assert!(!s.errors.contains_key("ignored"));
}

#[test]
fn timeline_rolls_each_second() {
    let mut r = Recorder::new();
    for ms in 1..=100 {
        r.record(
            Operation::Create,
            Duration::from_millis(ms),
            ms % 10 != 0,
            Some("status_5xx"),
        );
    }
    r.tick(
        0,
        Some(TargetSample {
            rss_bytes: Some(100 << 20),
            heap_bytes: Some(50 << 20),
            leak_state: Some(0),
        }),
    );
    r.tick(1, None);
    r.record(Operation::Create, Duration::from_millis(7), true, None);
    r.tick(2, None);
    let scenario = builtin("payments", 1.0, Duration::from_secs(3)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(3), None);
    assert_eq!(s.timeline.len(), 3);
    let first = &s.timeline[0];
    assert_eq!((first.t, first.requests, first.errors), (0, 100, 10));
    assert!(close(first.p50_ms.expect("data"), 50.0, 0.01));
    assert!(close(first.p99_ms.expect("data"), 99.0, 0.01));
    assert_eq!(first.rss_bytes, Some(100 << 20));
    assert_eq!(first.heap_bytes, Some(50 << 20));
    assert_eq!(s.timeline[1].requests, 0);
    assert_eq!(s.timeline[1].p50_ms, None);
    assert!(close(s.timeline[2].p50_ms.expect("data"), 7.0, 0.01));
    assert_eq!(s.timeline[2].rss_bytes, None);
    assert!(!r.progress_line().is_empty());
}

#[test]
fn counters_and_rates() {
    let mut r = Recorder::new();
    r.set_scheduled(200);
    for _ in 0..190 {
        r.iteration_started();
        r.iteration_completed();
    }
    for _ in 0..10 {
        r.iteration_dropped();
    }
    r.checks(150, 2);
    r.checks(40, 0);
    let scenario = builtin("payments", 20.0, Duration::from_secs(10)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(10), None);
    assert_eq!(s.iterations_scheduled, 200);
    assert_eq!(s.iterations_started, 190);
    assert_eq!(s.iterations_completed, 190);
    assert_eq!(s.dropped_iterations, 10);
    assert_eq!(s.dropped_rate, 0.05);
    assert_eq!((s.checks_verified, s.checks_mismatched), (190, 2));
    assert_eq!(s.error_rate, 0.0);
    assert_eq!(s.requests_per_second, 0.0);
}

#[test]
fn text_summary_shows_everything() {
    let mut r = Recorder::new();
    for op in [Operation::Create, Operation::Capture] {
        r.record(op, Duration::from_millis(12), true, None);
    }
    r.record(
        Operation::Create,
        Duration::from_millis(3),
        false,
        Some("timeout"),
    );
    let mut scenario = builtin("payments", 1.0, Duration::from_secs(3)).expect("known");
    scenario.thresholds = vec![
        "p99<50ms".parse::<Threshold>().expect("valid"),
        "error_rate<1%".parse().expect("valid"),
    ];
    let memory = MemorySummary {
        rss_start_bytes: 100 << 20,
        rss_end_bytes: 101 << 20,
        rss_max_bytes: 110 << 20,
        heap_start_bytes: Some(40 << 20),
        heap_end_bytes: Some(41 << 20),
        bytes_per_payment: Some(12.5),
        verdict: "ok".into(),
        detail: "heap flat against work".into(),
    };
    let mut s = r.summary(&scenario, Duration::from_secs(3), Some(memory));
    s.apply_thresholds(&scenario.thresholds);
    assert!(!s.passed);
    let text = s.text();
    for needle in [
        "payments",
        "constant-arrival-rate 1/s for 3s",
        "create",
        "capture",
        "p99.9",
        "timeout",
        "dropped_iterations",
        "✓ p99<50ms",
        "✗ error_rate<1%",
        "33.333%",
        "100.0 MiB -> 101.0 MiB (max 110.0 MiB)",
        "heap flat against work",
        "FAILED",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in\n{text}");
    }
    // Aligned: every latency row has the same width.
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.starts_with("  all ") || l.starts_with("  create ") || l.starts_with("  capture ")
        })
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    assert!(
        rows.iter()
            .all(|l| l.chars().count() == rows[0].chars().count()),
        "{rows:#?}"
    );
}

#[test]
fn summary_round_trips_through_json() {
    let mut r = Recorder::new();
    r.record(Operation::Refund, Duration::from_millis(5), true, None);
    r.tick(0, None);
    let scenario = builtin("payments", 1.0, Duration::from_secs(1)).expect("known");
    let s = r.summary(&scenario, Duration::from_secs(1), None);
    let json = serde_json::to_string(&s).expect("serializes");
    let back: paywarden_load::summary::Summary = serde_json::from_str(&json).expect("reads back");
    assert_eq!(back, s);
}

#[test]
fn bytes_for_humans() {
    assert_eq!(format_bytes(512), "512 B");
    assert_eq!(format_bytes(1536), "1.5 KiB");
    assert_eq!(format_bytes(100 << 20), "100.0 MiB");
}

#[test]
fn the_final_verification_is_not_load() {
    let scenario = builtin("payments", 100.0, Duration::from_secs(10)).expect("known");
    let mut r = Recorder::new();
    for _ in 0..1000 {
        r.record(Operation::Create, Duration::from_millis(2), true, None);
    }
    r.tick(0, None);
    r.end_of_load();
    for _ in 0..500 {
        r.record(Operation::Retrieve, Duration::from_millis(1), true, None);
    }
    r.tick(1, None);
    let s = r.summary(&scenario, Duration::from_secs(10), None);
    // A run of 10 s with 1,000 requests reads 1,000 requests at 100/s, and the verification
    // apart (the issue: `requests 19105 435.9/s` over 30.1 s mixed the two).
    assert_eq!(s.requests_total, 1000, "the scenario's requests only");
    assert_eq!(s.requests_per_second, 100.0);
    assert_eq!(s.verification.requests, 500);
    assert_eq!(s.verification.latency_ms.as_ref().map(|p| p.count), Some(500));
    assert_eq!(s.timeline.len(), 1, "and the timeline ends with the load");
    assert!(!s.latency_ms.contains_key("retrieve"), "no retrieval was load");
    let text = s.text();
    assert!(text.contains("1000       100.0/s"), "{text}");
    assert!(text.contains("500 retrievals after the load, 0 failed"), "{text}");
}

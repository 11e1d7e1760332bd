use std::collections::BTreeMap;
use std::time::Duration;

use paywarden_load::scenario::{Operation, builtin};
use paywarden_load::summary::{Percentiles, Recorder, Summary};
use paywarden_load::threshold::{Cmp, Metric, Threshold, ThresholdResult, evaluate};

fn parse(s: &str) -> Threshold {
    s.parse()
        .unwrap_or_else(|e| panic!("{s:?} must parse: {e}"))
}

#[test]
fn parses_the_documented_forms() {
    let cases: &[(&str, Option<Operation>, Metric, Cmp, f64)] = &[
        ("p99<50ms", None, Metric::Percentile(99.0), Cmp::Lt, 50.0),
        ("p99.9<=1s", None, Metric::Percentile(99.9), Cmp::Le, 1000.0),
        ("p50<800us", None, Metric::Percentile(50.0), Cmp::Lt, 0.8),
        ("p90 < 2.5ms", None, Metric::Percentile(90.0), Cmp::Lt, 2.5),
        ("max<2s", None, Metric::Max, Cmp::Lt, 2000.0),
        ("mean<10ms", None, Metric::Mean, Cmp::Lt, 10.0),
        ("error_rate<0.1%", None, Metric::ErrorRate, Cmp::Lt, 0.001),
        ("error_rate<0.001", None, Metric::ErrorRate, Cmp::Lt, 0.001),
        ("dropped<1%", None, Metric::Dropped, Cmp::Lt, 0.01),
        ("rps>=950", None, Metric::Rps, Cmp::Ge, 950.0),
        ("rps>10", None, Metric::Rps, Cmp::Gt, 10.0),
        (
            "confirm.p99<80ms",
            Some(Operation::Confirm),
            Metric::Percentile(99.0),
            Cmp::Lt,
            80.0,
        ),
        (
            "capture.p99.9<200ms",
            Some(Operation::Capture),
            Metric::Percentile(99.9),
            Cmp::Lt,
            200.0,
        ),
        (
            "refund.max<1s",
            Some(Operation::Refund),
            Metric::Max,
            Cmp::Lt,
            1000.0,
        ),
    ];
    for &(text, operation, metric, cmp, value) in cases {
        let t = parse(text);
        assert_eq!(t.source, text.trim(), "{text}");
        assert_eq!(t.operation, operation, "{text}");
        assert_eq!(t.metric, metric, "{text}");
        assert_eq!(t.cmp, cmp, "{text}");
        assert!(
            (t.value - value).abs() < 1e-12,
            "{text}: {} vs {value}",
            t.value
        );
    }
}

#[test]
fn errors_say_what_is_allowed() {
    let cases = [
        ("p99<50", "p99<50: give a unit, e.g. p99<50ms"),
        ("p99", "no comparison"),
        ("p99=50ms", "no comparison"),
        ("p95<50ms", "use p50, p90, p99, p99.9 or max"),
        ("latency<50ms", "unknown metric"),
        ("p99<fast", "not a latency"),
        ("p99<-1ms", "0 or more"),
        ("error_rate<2", "above 1"),
        ("error_rate<150%", "above 1"),
        ("checkout.p99<5ms", "unknown operation"),
        ("confirm.error_rate<1%", "drop the \"confirm.\" prefix"),
        ("rps>", "no value"),
    ];
    for (text, needle) in cases {
        let error = text.parse::<Threshold>().expect_err(text);
        assert!(error.contains(needle), "{text}: {error:?} lacks {needle:?}");
    }
    assert!("x".repeat(500).parse::<Threshold>().is_err());
}

fn summary_with(latency: &[(Operation, u64)], errors: u64) -> Summary {
    let mut r = Recorder::new();
    for &(op, ms) in latency {
        r.record(op, Duration::from_millis(ms), true, None);
    }
    for _ in 0..errors {
        r.record(
            Operation::Create,
            Duration::from_millis(1),
            false,
            Some("status_5xx"),
        );
    }
    r.set_scheduled(100);
    for _ in 0..99 {
        r.iteration_started();
    }
    r.iteration_dropped();
    let scenario = builtin("payments", 10.0, Duration::from_secs(10)).expect("known");
    r.summary(&scenario, Duration::from_secs(10), None)
}

fn results(thresholds: &[&str], summary: &Summary) -> Vec<ThresholdResult> {
    let parsed: Vec<Threshold> = thresholds.iter().map(|t| parse(t)).collect();
    evaluate(&parsed, summary)
}

#[test]
fn evaluates_against_the_summary() {
    let mut latency: Vec<(Operation, u64)> = (1..=100).map(|ms| (Operation::Create, ms)).collect();
    latency.extend((1..=10).map(|_| (Operation::Confirm, 300)));
    let summary = summary_with(&latency, 0);
    let r = results(
        &[
            "p50<60ms",
            "create.p99<=100ms",
            "create.max<50ms",
            "confirm.p99<200ms",
            "error_rate<0.1%",
            "dropped<=1%",
            "rps>=11",
            "rps>12",
            "capture.p99<1s",
        ],
        &summary,
    );
    let passed: Vec<bool> = r.iter().map(|r| r.passed).collect();
    assert_eq!(
        passed,
        [true, true, false, false, true, true, true, false, false],
        "{r:#?}"
    );
    assert_eq!(r[0].threshold, "p50<60ms");
    assert_eq!(r[6].actual, Some(11.0));
    assert!((r[5].actual.expect("data") - 0.01).abs() < 1e-12);
    // No capture was recorded: no data is a failure, never a pass.
    assert_eq!(r[8].actual, None);
}

#[test]
fn no_data_fails() {
    let summary = Summary {
        scenario: "empty".into(),
        executor: "x".into(),
        duration_s: 0.0,
        requests_total: 0,
        requests_per_second: 0.0,
        iterations_scheduled: 0,
        iterations_started: 0,
        iterations_completed: 0,
        dropped_iterations: 0,
        dropped_rate: 0.0,
        errors_total: 0,
        error_rate: 0.0,
        errors: BTreeMap::new(),
        latency_ms: BTreeMap::from([(
            "all".to_string(),
            Percentiles {
                count: 0,
                p50: 0.0,
                p90: 0.0,
                p99: 0.0,
                p99_9: 0.0,
                max: 0.0,
                mean: 0.0,
            },
        )]),
        verification: Default::default(),
        checks_verified: 0,
        checks_mismatched: 0,
        memory: None,
        timeline: Vec::new(),
        thresholds: Vec::new(),
        passed: true,
    };
    for r in results(
        &[
            "p99<1s",
            "error_rate<100%",
            "dropped<100%",
            "rps>=0",
            "max<1s",
        ],
        &summary,
    ) {
        assert_eq!(r.actual, None, "{r:?}");
        assert!(!r.passed, "{r:?}");
    }
}

#[test]
fn error_rate_counts_failures() {
    let latency: Vec<(Operation, u64)> = (0..98).map(|_| (Operation::Create, 5)).collect();
    let summary = summary_with(&latency, 2);
    let r = results(
        &["error_rate<1%", "error_rate<=2%", "error_rate<0.03"],
        &summary,
    );
    assert_eq!(
        r.iter().map(|r| r.passed).collect::<Vec<_>>(),
        [false, true, true]
    );
    assert_eq!(r[0].actual, Some(0.02));
}

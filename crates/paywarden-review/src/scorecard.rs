//! Drill scenarios and scorecards: how fast paywarden detected, diagnosed and mitigated a bad
//! release, beside the 2024-08-12 incident's figures. Pure: the drill passes in the review and
//! the load generator's figures.

use std::fmt::Write as _;

use serde::Serialize;

use crate::model::Review;

/// A drill scenario: the release the drill deploys and what must happen to it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Scenario {
    pub name: &'static str,
    /// `--fault` for the bad release's instances; None deploys a good build.
    pub fault: Option<&'static str>,
    pub description: &'static str,
    /// Rolled back (true) or promoted (false).
    pub expect_rollback: bool,
    /// The heap diff must name an allocation site.
    pub expect_site: bool,
    /// Most payments the load may see fail.
    pub payments_failed_max: Option<u64>,
    /// Most share of traffic the bad release may serve, percent.
    pub exposed_pct_max: Option<f64>,
    /// Longest from the deploy to traffic leaving the release, seconds.
    pub mitigate_s_max: Option<f64>,
}

/// The built-in scenarios.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "aug12",
        fault: Some("leak=16384"),
        description: "the 2024-08-12 update: 16 KiB kept for ever on every confirmed payment",
        expect_rollback: true,
        expect_site: true,
        payments_failed_max: Some(0),
        exposed_pct_max: Some(2.0),
        mitigate_s_max: Some(120.0),
    },
    Scenario {
        name: "slow-leak",
        fault: Some("leak=2048"),
        description: "an eight times slower leak: 2 KiB kept per confirmed payment",
        expect_rollback: true,
        expect_site: false,
        payments_failed_max: Some(0),
        exposed_pct_max: None,
        mitigate_s_max: None,
    },
    Scenario {
        name: "error-spike",
        fault: Some("errors=0.2"),
        description: "a release that fails 20 % of payment requests with a 500",
        expect_rollback: true,
        expect_site: false,
        payments_failed_max: None,
        exposed_pct_max: Some(2.0),
        mitigate_s_max: Some(120.0),
    },
    Scenario {
        name: "latency",
        fault: Some("latency=100ms"),
        description: "a release that answers payment requests 100 ms later",
        expect_rollback: true,
        expect_site: false,
        payments_failed_max: Some(0),
        exposed_pct_max: None,
        mitigate_s_max: Some(120.0),
    },
    Scenario {
        name: "good",
        fault: None,
        description: "a good release: it must be promoted with no alert",
        expect_rollback: false,
        expect_site: false,
        payments_failed_max: Some(0),
        exposed_pct_max: None,
        mitigate_s_max: None,
    },
];

/// The scenario called `name`.
pub fn scenario(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// The 2024-08-12 incident's figures (incident-2024-08-12.txt): alert at 11:35 for an outage
/// from 11:30, cause found at 14:30, rollback at 14:45, restored at 15:15, ~80 % of users.
pub mod aug12_2024 {
    pub const TIME_TO_DETECT_S: f64 = 5.0 * 60.0;
    pub const TIME_TO_ROOT_CAUSE_S: f64 = 3.0 * 3600.0;
    pub const TIME_TO_MITIGATE_S: f64 = 3.0 * 3600.0 + 15.0 * 60.0;
    pub const OUTAGE_S: f64 = 3.0 * 3600.0 + 45.0 * 60.0;
    pub const USERS_AFFECTED_PCT: f64 = 80.0;
}

/// What the drill's load generator saw.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LoadFigures {
    /// Payment flows started per second (the drill's rate).
    pub rate: f64,
    pub duration_s: f64,
    pub requests: u64,
    pub requests_per_second: f64,
    /// Requests that failed (5xx, timeouts, answers of the wrong shape; declines are answers).
    pub errors: u64,
    /// Payments whose final state did not match what their flow expected.
    pub checks_mismatched: u64,
    /// The reads that checked each payment's final state after the run: not part of the
    /// offered load, so neither in `requests` nor in its rate.
    pub verification_requests: u64,
    pub verification_errors: u64,
}

/// One pass/fail line of the scorecard.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

/// The drill's result (`scorecard.json`).
#[derive(Debug, Clone, Serialize)]
pub struct Scorecard {
    pub scenario: String,
    pub description: String,
    pub deployment: String,
    pub outcome: String,
    /// Training mode: automatic rollback was off and a person (or script) rolled back.
    pub manual: bool,
    /// Seconds from the deploy to the first failing verdict (or analysis failure, or a firing
    /// alert); None when nothing was wrong.
    pub time_to_detect_s: Option<f64>,
    /// Seconds from the deploy to the cause being named: the heap diff naming an allocation
    /// site, or, for a regression that is not memory, the failing metric's verdict.
    pub time_to_root_cause_s: Option<f64>,
    /// Seconds from the deploy to traffic leaving the bad release.
    pub time_to_mitigate_s: Option<f64>,
    /// Seconds from the deploy to the rollback's end (canary and baseline stopped).
    pub time_to_rollback_complete_s: Option<f64>,
    /// Payment requests that failed, as the load generator saw them.
    pub payments_failed: u64,
    /// Requests the proxy answered 5xx during the deployment.
    pub requests_failed: u64,
    /// Share of requests the new release served, percent.
    pub traffic_exposed_pct: f64,
    pub merchants_exposed: u64,
    /// The allocation site (function) or the failing metric; None when nothing was wrong.
    pub root_cause: Option<String>,
    pub root_cause_detail: String,
    pub alerts_fired: usize,
    pub load: LoadFigures,
    pub checks: Vec<Check>,
    pub passed: bool,
}

/// Scores a drill's deployment.
pub fn score(sc: &Scenario, review: &Review, load: LoadFigures, manual: bool) -> Scorecard {
    let since = |ms: u64| review.since_start_s(ms);
    let firing: Vec<u64> = review.alerts.iter().filter(|a| a.status == "firing").map(|a| a.at_ms).collect();
    let detect = [review.first_failure.as_ref().map(|(at, _)| *at), review.held_ms, firing.iter().min().copied()].into_iter().flatten().min();
    let site = review
        .diagnosis
        .as_ref()
        .filter(|_| crate::incident::memory_cause(review))
        .and_then(|d| d.cause().map(|s| (d.at_ms, s.function.clone())));
    let failing_metric = review.first_failure.as_ref().and_then(|(at, v)| v.metrics.iter().find(|m| m.score == "fail").map(|m| (*at, m.metric.clone())));
    let (root_at, root) = match (&site, &failing_metric) {
        (Some((at, f)), _) => (Some(*at), Some(f.clone())),
        (None, Some((at, m))) => (Some(*at), Some(m.clone())),
        (None, None) => (None, None),
    };
    let exposed = review.traffic.exposed_pct().unwrap_or(0.0);
    let mitigate = review.rollback_started_ms.map(since);
    let mut checks = Vec::new();
    let mut check = |name: &str, passed: bool, detail: String| checks.push(Check { name: name.into(), passed, detail });
    let want = if sc.expect_rollback { "rolled_back" } else { "promoted" };
    check("outcome", review.outcome == want, format!("{} (expected {want})", review.outcome));
    if !sc.expect_rollback {
        check("no alert", firing.is_empty(), format!("{} alert(s) fired", firing.len()));
    }
    if sc.expect_site {
        check("allocation site named", site.is_some(), site.as_ref().map(|(_, f)| f.clone()).unwrap_or_else(|| "the heap diff named no site".into()));
    }
    if let Some(max) = sc.payments_failed_max {
        check("payments failed", load.errors <= max, format!("{} (at most {max})", load.errors));
    }
    if let Some(max) = sc.exposed_pct_max {
        check("traffic exposed", exposed <= max, format!("{exposed:.2} % (at most {max} %)"));
    }
    if let (Some(max), false) = (sc.mitigate_s_max, manual) {
        check("rolled back in time", mitigate.is_some_and(|m| m <= max), format!("{} (at most {max} s)", mitigate.map(|m| format!("{m:.1} s")).unwrap_or_else(|| "never".into())));
    }
    check("payments as expected", load.checks_mismatched == 0, format!("{} payment(s) not in their expected state", load.checks_mismatched));
    let passed = checks.iter().all(|c| c.passed);
    Scorecard {
        scenario: sc.name.into(),
        description: sc.description.into(),
        deployment: review.id.clone(),
        outcome: review.outcome.clone(),
        manual,
        time_to_detect_s: detect.map(since),
        time_to_root_cause_s: root_at.map(since),
        time_to_mitigate_s: mitigate,
        time_to_rollback_complete_s: review.rollback_completed_ms.map(since),
        payments_failed: load.errors,
        requests_failed: review.traffic.failed_requests,
        traffic_exposed_pct: exposed,
        merchants_exposed: review.traffic.merchants_to_canary,
        root_cause: root,
        root_cause_detail: if detect.is_some() { crate::incident::root_cause(review) } else { "nothing went wrong".into() },
        alerts_fired: firing.len(),
        load,
        checks,
        passed,
    }
}

fn dur(s: Option<f64>) -> String {
    match s {
        None => "–".into(),
        Some(s) if s >= 3600.0 => format!("{} h {:02} min", (s / 3600.0).floor(), ((s % 3600.0) / 60.0).round()),
        Some(s) if s >= 60.0 => format!("{} min {:02.0} s", (s / 60.0).floor(), s % 60.0),
        Some(s) => format!("{s:.1} s"),
    }
}

/// The scorecard as a text table beside the 2024 figures.
pub fn render_text(s: &Scorecard) -> String {
    use aug12_2024 as y;
    let mut o = String::new();
    let _ = writeln!(o, "drill {}{}: {}", s.scenario, if s.manual { " (manual)" } else { "" }, s.description);
    let _ = writeln!(o, "deployment {}: {}\n", s.deployment, s.outcome.replace('_', " "));
    let _ = writeln!(o, "{:<24} {:>18} {:>18}", "", "2024-08-12", "this drill");
    let row = |o: &mut String, k: &str, a: String, b: String| {
        let _ = writeln!(o, "{k:<24} {a:>18} {b:>18}");
    };
    row(&mut o, "time to detect", dur(Some(y::TIME_TO_DETECT_S)), dur(s.time_to_detect_s));
    row(&mut o, "time to root cause", format!("about {}", dur(Some(y::TIME_TO_ROOT_CAUSE_S))), dur(s.time_to_root_cause_s));
    row(&mut o, "time to mitigate", dur(Some(y::TIME_TO_MITIGATE_S)), dur(s.time_to_mitigate_s));
    row(&mut o, "outage", dur(Some(y::OUTAGE_S)), if s.payments_failed == 0 { "none".into() } else { format!("{} failed", s.payments_failed) });
    row(&mut o, "traffic exposed", format!("about {:.0} %", y::USERS_AFFECTED_PCT), format!("{:.2} %", s.traffic_exposed_pct));
    row(&mut o, "payments failed", "most, for 3 h 45 min".into(), s.payments_failed.to_string());
    let _ = writeln!(o, "\nroot cause: {}", s.root_cause_detail);
    let l = &s.load;
    let _ = writeln!(o, "load: {:.0} payments/s offered, {} requests ({:.0}/s), {} errors", l.rate, l.requests, l.requests_per_second, l.errors);
    let _ = writeln!(o, "verification: {} reads of the payments' final state, {} errors", l.verification_requests, l.verification_errors);
    for c in &s.checks {
        let _ = writeln!(o, "  [{}] {}: {}", if c.passed { "pass" } else { "FAIL" }, c.name, c.detail);
    }
    let _ = writeln!(o, "{}", if s.passed { "drill passed" } else { "drill FAILED" });
    o
}

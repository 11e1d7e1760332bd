//! Recording a run and summarising it: HDR latency histograms per operation, counters, a
//! per-second timeline, and the summary that thresholds, the text output and the HTML report
//! read.
//!
//! The recorder's memory is bounded whatever the run's length or rate: histograms have fixed
//! bounds, error kinds are capped, and the timeline holds at most one point a second for
//! [`TIMELINE_SECONDS_MAX`] seconds. Nothing is stored per request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use crate::scenario::{Operation, Scenario};
use crate::threshold::{Threshold, ThresholdResult, evaluate, format_actual};

/// Longest timeline kept, in seconds (seven days, the longest run): later ticks are counted
/// in the totals but add no point.
pub const TIMELINE_SECONDS_MAX: usize = 7 * 86_400;
/// Most distinct error kinds kept; further kinds are counted as `other`.
pub const ERROR_KINDS_MAX: usize = 32;
/// Longest error kind kept, in bytes; longer kinds are counted as `other`.
pub const ERROR_KIND_BYTES_MAX: usize = 64;
/// Lowest latency the histograms distinguish, in microseconds.
pub const LATENCY_US_MIN: u64 = 1;
/// Highest latency the histograms hold, in microseconds (one hour); slower requests are
/// recorded as one hour rather than lost.
pub const LATENCY_US_MAX: u64 = 3_600_000_000;
/// Significant digits of the run's histograms: 0.1 % relative error.
pub const SIGNIFICANT_DIGITS: u8 = 3;
/// Significant digits of the per-second histogram: 1 % error is plenty for a chart, at a
/// tenth of the memory.
pub const SECOND_SIGNIFICANT_DIGITS: u8 = 2;

/// The error kinds the runtime reports.
pub const ERROR_KINDS: [&str; 7] = [
    "status_5xx",
    "status_4xx",
    "unexpected_status",
    "timeout",
    "connect",
    "body",
    "check",
];

/// The target's memory, sampled from its `/metrics` once a second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TargetSample {
    /// Resident set size.
    pub rss_bytes: Option<u64>,
    /// Allocated heap (jemalloc's `allocated`).
    pub heap_bytes: Option<u64>,
    /// memguard's leak state as the target reports it (0 ok, 1 suspect, 2 leaking).
    pub leak_state: Option<u8>,
}

/// Latency statistics, in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Requests measured.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p99_9: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

/// One second of the run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SecondPoint {
    /// Seconds since the start (0-based).
    pub t: u64,
    /// Requests completed in the second.
    pub requests: u64,
    /// Failed requests in the second.
    pub errors: u64,
    /// Median latency of the second's requests, in milliseconds; `None` without requests.
    pub p50_ms: Option<f64>,
    /// 99th percentile of the second's requests, in milliseconds.
    pub p99_ms: Option<f64>,
    /// The target's RSS at the end of the second.
    pub rss_bytes: Option<u64>,
    /// The target's heap at the end of the second.
    pub heap_bytes: Option<u64>,
}

/// The target's memory over the run, judged by the caller (memguard's leak detector).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySummary {
    /// RSS at the first sample.
    pub rss_start_bytes: u64,
    /// RSS at the last sample.
    pub rss_end_bytes: u64,
    /// Highest RSS sampled.
    pub rss_max_bytes: u64,
    /// Heap at the first sample.
    pub heap_start_bytes: Option<u64>,
    /// Heap at the last sample.
    pub heap_end_bytes: Option<u64>,
    /// Heap growth per completed payment.
    pub bytes_per_payment: Option<f64>,
    /// `ok`, `suspect`, `leaking` or `insufficient data`.
    pub verdict: String,
    /// The detector's explanation.
    pub detail: String,
}

/// Everything a run measured; thresholds, the text summary and the HTML report read it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// The scenario's name.
    pub scenario: String,
    /// The executor, described.
    pub executor: String,
    /// Wall time of the run, in seconds.
    pub duration_s: f64,
    /// The scenario's requests completed (each retry counts), the final verification's not.
    pub requests_total: u64,
    /// `requests_total` per second of the run.
    pub requests_per_second: f64,
    /// Iterations the schedule planned (0 for a closed-loop executor).
    pub iterations_scheduled: u64,
    /// Iterations started.
    pub iterations_started: u64,
    /// Iterations finished, whatever their outcome.
    pub iterations_completed: u64,
    /// Iterations not started because `max_in_flight` was reached.
    pub dropped_iterations: u64,
    /// `dropped_iterations / iterations_scheduled` (or over started + dropped when nothing
    /// was scheduled).
    pub dropped_rate: f64,
    /// The scenario's failed requests.
    pub errors_total: u64,
    /// `errors_total / requests_total`.
    pub error_rate: f64,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency per operation name, plus `all`.
    pub latency_ms: BTreeMap<String, Percentiles>,
    /// The end-of-run verification: every payment the flows created, retrieved once more and
    /// compared with the state its flow left. Not load: counted apart from the scenario's
    /// requests, errors and latencies.
    pub verification: Verification,
    /// Flow checks that matched the expected state.
    pub checks_verified: u64,
    /// Flow checks that did not.
    pub checks_mismatched: u64,
    /// The target's memory, when it was sampled.
    pub memory: Option<MemorySummary>,
    /// One point per second.
    pub timeline: Vec<SecondPoint>,
    /// Threshold outcomes, filled by [`Summary::apply_thresholds`] (or the caller via
    /// [`evaluate`]).
    pub thresholds: Vec<ThresholdResult>,
    /// Whether every threshold passed.
    pub passed: bool,
}

/// The end-of-run verification's own figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Verification {
    /// Retrievals made.
    pub requests: u64,
    /// Retrievals that failed (a mismatched state is a check, not an error).
    pub errors: u64,
    /// Their latency.
    pub latency_ms: Option<Percentiles>,
}

/// Collects a run's measurements in bounded memory.
#[derive(Debug, Clone)]
pub struct Recorder {
    all: Histogram<u64>,
    per_operation: [Histogram<u64>; 6],
    second: Histogram<u64>,
    second_requests: u64,
    second_errors: u64,
    requests_total: u64,
    errors_total: u64,
    errors: BTreeMap<String, u64>,
    iterations_scheduled: u64,
    iterations_started: u64,
    iterations_completed: u64,
    iterations_dropped: u64,
    checks_verified: u64,
    checks_mismatched: u64,
    timeline: Vec<SecondPoint>,
    /// Whether the load ended ([`Recorder::end_of_load`]): later requests are the end-of-run
    /// verification's, counted in `verification_*`, not as load.
    load_ended: bool,
    verification: Histogram<u64>,
    verification_requests: u64,
    verification_errors: u64,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn histogram(digits: u8) -> Histogram<u64> {
    // Constant bounds that satisfy hdrhistogram's rules (1 ≤ low, high ≥ 2·low, digits ≤ 5):
    // this never depends on input, so it cannot fail at run time.
    Histogram::new_with_bounds(LATENCY_US_MIN, LATENCY_US_MAX, digits)
        .expect("constant histogram bounds are valid")
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            all: histogram(SIGNIFICANT_DIGITS),
            per_operation: std::array::from_fn(|_| histogram(SIGNIFICANT_DIGITS)),
            second: histogram(SECOND_SIGNIFICANT_DIGITS),
            second_requests: 0,
            second_errors: 0,
            requests_total: 0,
            errors_total: 0,
            errors: BTreeMap::new(),
            iterations_scheduled: 0,
            iterations_started: 0,
            iterations_completed: 0,
            iterations_dropped: 0,
            checks_verified: 0,
            checks_mismatched: 0,
            timeline: Vec::new(),
            load_ended: false,
            verification: histogram(SECOND_SIGNIFICANT_DIGITS),
            verification_requests: 0,
            verification_errors: 0,
        }
    }

    /// Marks the end of the load: later requests are the final verification's, reported
    /// apart ([`Summary::verification`]), and add no point to the timeline.
    pub fn end_of_load(&mut self) {
        self.load_ended = true;
    }

    /// Records one request: its latency (measured from the scheduled start), whether it
    /// succeeded and, if not, its kind (one of [`ERROR_KINDS`]; `None` counts as `other`).
    pub fn record(&mut self, op: Operation, latency: Duration, ok: bool, error_kind: Option<&str>) {
        let micros = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(LATENCY_US_MIN, LATENCY_US_MAX);
        if self.load_ended {
            self.verification.saturating_record(micros);
            self.verification_requests += 1;
            self.verification_errors += u64::from(!ok);
            return;
        }
        self.all.saturating_record(micros);
        self.per_operation[op.index()].saturating_record(micros);
        self.second.saturating_record(micros);
        self.requests_total += 1;
        self.second_requests += 1;
        if !ok {
            self.errors_total += 1;
            self.second_errors += 1;
            let kind = error_kind.unwrap_or("other");
            let known = self.errors.contains_key(kind);
            let room = self.errors.len() < ERROR_KINDS_MAX;
            let kind = if known || (room && kind.len() <= ERROR_KIND_BYTES_MAX && !kind.is_empty())
            {
                kind
            } else {
                "other"
            };
            *self.errors.entry(kind.to_string()).or_insert(0) += 1;
        }
    }

    /// Sets the number of iterations the schedule planned.
    pub fn set_scheduled(&mut self, n: u64) {
        self.iterations_scheduled = n;
    }

    /// Counts an iteration started.
    pub fn iteration_started(&mut self) {
        self.iterations_started += 1;
    }

    /// Counts an iteration finished.
    pub fn iteration_completed(&mut self) {
        self.iterations_completed += 1;
    }

    /// Counts an iteration not started because `max_in_flight` was reached.
    pub fn iteration_dropped(&mut self) {
        self.iterations_dropped += 1;
    }

    /// Adds flow checks: how many observed states matched, how many did not.
    pub fn checks(&mut self, verified: u64, mismatched: u64) {
        self.checks_verified = self.checks_verified.saturating_add(verified);
        self.checks_mismatched = self.checks_mismatched.saturating_add(mismatched);
    }

    /// Closes second `second` (0-based) into the timeline with the target's memory sample,
    /// and starts the next one. Call once a second, in order.
    pub fn tick(&mut self, second: u64, target: Option<TargetSample>) {
        let quantile = |h: &Histogram<u64>, q: f64| {
            (!h.is_empty()).then(|| h.value_at_quantile(q) as f64 / 1000.0)
        };
        let point = SecondPoint {
            t: second,
            requests: self.second_requests,
            errors: self.second_errors,
            p50_ms: quantile(&self.second, 0.5),
            p99_ms: quantile(&self.second, 0.99),
            rss_bytes: target.and_then(|s| s.rss_bytes),
            heap_bytes: target.and_then(|s| s.heap_bytes),
        };
        if self.timeline.len() < TIMELINE_SECONDS_MAX && !self.load_ended {
            self.timeline.push(point);
        }
        self.second.reset();
        self.second_requests = 0;
        self.second_errors = 0;
    }

    /// One line for a progress bar: totals so far and the last closed second.
    pub fn progress_line(&self) -> String {
        let mut line = format!(
            "{} requests, {} errors, {} dropped",
            self.requests_total, self.errors_total, self.iterations_dropped
        );
        if let Some(last) = self.timeline.last() {
            let _ = write!(line, "; last second {} req/s", last.requests);
            if let Some(p99) = last.p99_ms {
                let _ = write!(line, ", p99 {p99:.1}ms");
            }
        }
        line
    }

    /// The summary so far. `thresholds` is left empty and `passed` true: call
    /// [`Summary::apply_thresholds`] with the scenario's thresholds.
    pub fn summary(
        &self,
        scenario: &Scenario,
        elapsed: Duration,
        memory: Option<MemorySummary>,
    ) -> Summary {
        let duration_s = elapsed.as_secs_f64();
        let ratio = |part: u64, whole: u64| {
            if whole == 0 {
                0.0
            } else {
                part as f64 / whole as f64
            }
        };
        let mut latency_ms = BTreeMap::new();
        latency_ms.insert("all".to_string(), percentiles(&self.all));
        for op in Operation::ALL {
            let h = &self.per_operation[op.index()];
            if !h.is_empty() {
                latency_ms.insert(op.as_str().to_string(), percentiles(h));
            }
        }
        let dropped_rate = if self.iterations_scheduled > 0 {
            ratio(self.iterations_dropped, self.iterations_scheduled)
        } else {
            ratio(
                self.iterations_dropped,
                self.iterations_started + self.iterations_dropped,
            )
        };
        Summary {
            scenario: scenario.name.clone(),
            executor: scenario.executor.describe(),
            duration_s,
            requests_total: self.requests_total,
            requests_per_second: if duration_s > 0.0 {
                self.requests_total as f64 / duration_s
            } else {
                0.0
            },
            iterations_scheduled: self.iterations_scheduled,
            iterations_started: self.iterations_started,
            iterations_completed: self.iterations_completed,
            dropped_iterations: self.iterations_dropped,
            dropped_rate,
            errors_total: self.errors_total,
            error_rate: ratio(self.errors_total, self.requests_total),
            errors: self.errors.clone(),
            latency_ms,
            verification: Verification {
                requests: self.verification_requests,
                errors: self.verification_errors,
                latency_ms: (!self.verification.is_empty()).then(|| percentiles(&self.verification)),
            },
            checks_verified: self.checks_verified,
            checks_mismatched: self.checks_mismatched,
            memory,
            timeline: self.timeline.clone(),
            thresholds: Vec::new(),
            passed: true,
        }
    }
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let count = h.len();
    if count == 0 {
        return Percentiles {
            count,
            p50: 0.0,
            p90: 0.0,
            p99: 0.0,
            p99_9: 0.0,
            max: 0.0,
            mean: 0.0,
        };
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    Percentiles {
        count,
        p50: ms(h.value_at_quantile(0.5)),
        p90: ms(h.value_at_quantile(0.9)),
        p99: ms(h.value_at_quantile(0.99)),
        p99_9: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
        mean: h.mean() / 1000.0,
    }
}

impl Summary {
    /// Evaluates `thresholds` into `self.thresholds` and sets `passed` to whether all held.
    pub fn apply_thresholds(&mut self, thresholds: &[Threshold]) {
        self.thresholds = evaluate(thresholds, self);
        self.passed = self.thresholds.iter().all(|r| r.passed);
    }

    /// The human summary printed at the end of a run, k6-like and aligned.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let pct = |x: f64| format!("{:.2}%", x * 100.0);
        let row = |out: &mut String, label: &str, value: String| {
            let dots = ".".repeat(22usize.saturating_sub(label.chars().count() + 1));
            let _ = writeln!(out, "  {label} {dots}: {value}");
        };
        let _ = writeln!(out);
        row(&mut out, "scenario", self.scenario.clone());
        row(&mut out, "executor", self.executor.clone());
        row(&mut out, "duration", format!("{:.1}s", self.duration_s));
        let _ = writeln!(out);
        row(
            &mut out,
            "requests",
            format!(
                "{:<10} {:.1}/s",
                self.requests_total, self.requests_per_second
            ),
        );
        row(
            &mut out,
            "iterations",
            format!(
                "{} started, {} completed, {} scheduled",
                self.iterations_started, self.iterations_completed, self.iterations_scheduled
            ),
        );
        row(
            &mut out,
            "dropped_iterations",
            format!("{:<10} {}", self.dropped_iterations, pct(self.dropped_rate)),
        );
        row(
            &mut out,
            "errors",
            format!("{:<10} {}", self.errors_total, pct(self.error_rate)),
        );
        for (kind, count) in &self.errors {
            row(&mut out, &format!("  {kind}"), count.to_string());
        }
        row(
            &mut out,
            "verification",
            format!(
                "{} retrievals after the load, {} failed; {} states verified, {} mismatched",
                self.verification.requests,
                self.verification.errors,
                self.checks_verified,
                self.checks_mismatched
            ),
        );

        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  {:<10} {:>9} {:>10} {:>10} {:>10} {:>10} {:>10} {:>10}",
            "latency ms", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        for (name, p) in self.latency_rows() {
            let _ = writeln!(
                out,
                "  {:<10} {:>9} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2} {:>10.2}",
                name, p.count, p.p50, p.p90, p.p99, p.p99_9, p.max, p.mean
            );
        }

        if let Some(m) = &self.memory {
            let _ = writeln!(out);
            row(&mut out, "memory", m.verdict.clone());
            row(
                &mut out,
                "  rss",
                format!(
                    "{} -> {} (max {})",
                    format_bytes(m.rss_start_bytes),
                    format_bytes(m.rss_end_bytes),
                    format_bytes(m.rss_max_bytes)
                ),
            );
            if let (Some(start), Some(end)) = (m.heap_start_bytes, m.heap_end_bytes) {
                row(
                    &mut out,
                    "  heap",
                    format!("{} -> {}", format_bytes(start), format_bytes(end)),
                );
            }
            if let Some(b) = m.bytes_per_payment {
                row(&mut out, "  bytes/payment", format!("{b:.1}"));
            }
            if !m.detail.is_empty() {
                row(&mut out, "  detail", m.detail.clone());
            }
        }

        if !self.thresholds.is_empty() {
            let _ = writeln!(out);
            let _ = writeln!(out, "  thresholds");
            let width = self
                .thresholds
                .iter()
                .map(|r| r.threshold.chars().count())
                .max()
                .unwrap_or(0);
            for r in &self.thresholds {
                let mark = if r.passed { '✓' } else { '✗' };
                let _ = writeln!(
                    out,
                    "    {mark} {:<width$}  actual {}",
                    r.threshold,
                    format_actual(&r.threshold, r.actual)
                );
            }
        }
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  result: {}",
            if self.passed { "passed" } else { "FAILED" }
        );
        out
    }

    /// Latency rows in report order: `all`, then operations in [`Operation::ALL`] order.
    pub fn latency_rows(&self) -> Vec<(&str, &Percentiles)> {
        let mut rows = Vec::new();
        if let Some(p) = self.latency_ms.get("all") {
            rows.push(("all", p));
        }
        for op in Operation::ALL {
            if let Some(p) = self.latency_ms.get(op.as_str()) {
                rows.push((op.as_str(), p));
            }
        }
        rows
    }
}

/// Bytes for humans, in binary units: `118.3 MiB`.
pub fn format_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

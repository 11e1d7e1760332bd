//! Thresholds: k6-style pass/fail conditions on a run's summary (`p99<50ms`,
//! `error_rate<0.1%`, `confirm.p99.9<200ms`), so a load test can gate CI.
//!
//! The grammar is `[operation.]metric cmp value`:
//! - metric: `p50`, `p90`, `p99`, `p99.9` (the percentiles the summary keeps), `max`, `mean`
//!   (latency, value with a unit `us`, `ms` or `s`, stored in milliseconds); `error_rate`,
//!   `dropped` (a fraction `0.001` or a percentage `0.1%`); `rps` (requests per second);
//! - operation: one of the [`Operation`] names, for latency metrics only;
//! - cmp: `<`, `<=`, `>`, `>=`.
//!
//! A threshold without data (no request of that operation) fails: silence is not success.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::scenario::Operation;
use crate::summary::Summary;

/// Longest threshold text accepted, in bytes.
pub const THRESHOLD_BYTES_MAX: usize = 200;

/// The percentiles a summary keeps, hence the ones a threshold may name.
pub const PERCENTILES: [f64; 4] = [50.0, 90.0, 99.0, 99.9];

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub enum Metric {
    /// A latency percentile, e.g. 99.9, in milliseconds.
    Percentile(f64),
    /// The slowest request, in milliseconds.
    Max,
    /// Mean latency, in milliseconds.
    Mean,
    /// Failed requests over all requests, as a fraction.
    ErrorRate,
    /// Dropped iterations over scheduled iterations, as a fraction.
    Dropped,
    /// Requests per second over the run.
    Rps,
}

impl Metric {
    fn is_latency(self) -> bool {
        matches!(self, Self::Percentile(_) | Self::Max | Self::Mean)
    }

    fn is_fraction(self) -> bool {
        matches!(self, Self::ErrorRate | Self::Dropped)
    }
}

/// How the actual value compares with the threshold's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Cmp {
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

impl Cmp {
    /// Whether `actual cmp limit` holds; never for NaN.
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Self::Lt => actual < limit,
            Self::Le => actual <= limit,
            Self::Gt => actual > limit,
            Self::Ge => actual >= limit,
        }
    }

    /// The operator as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lt => "<",
            Self::Le => "<=",
            Self::Gt => ">",
            Self::Ge => ">=",
        }
    }
}

/// A parsed threshold; `source` keeps the text as written for reports.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    /// The text it was parsed from, trimmed.
    pub source: String,
    /// Restricts a latency metric to one operation; `None` means all requests.
    pub operation: Option<Operation>,
    /// What is measured.
    pub metric: Metric,
    /// How it is compared.
    pub cmp: Cmp,
    /// The limit: milliseconds for latency, a fraction for rates, per second for `rps`.
    pub value: f64,
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

const METRICS_ALLOWED: &str = "p50, p90, p99, p99.9, max, mean, error_rate, dropped or rps";

impl FromStr for Threshold {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let source = s.trim();
        if source.len() > THRESHOLD_BYTES_MAX {
            return Err(format!(
                "threshold is longer than THRESHOLD_BYTES_MAX ({THRESHOLD_BYTES_MAX} bytes): shorten it"
            ));
        }
        let Some(at) = source.find(['<', '>']) else {
            return Err(format!(
                "{source:?}: no comparison; write metric, operator (<, <=, >, >=) and value, \
                 e.g. p99<50ms"
            ));
        };
        let (lhs, rest) = source.split_at(at);
        let (cmp, rhs) = if let Some(r) = rest.strip_prefix("<=") {
            (Cmp::Le, r)
        } else if let Some(r) = rest.strip_prefix(">=") {
            (Cmp::Ge, r)
        } else if let Some(r) = rest.strip_prefix('<') {
            (Cmp::Lt, r)
        } else if let Some(r) = rest.strip_prefix('>') {
            (Cmp::Gt, r)
        } else {
            return Err(format!("{source}: unknown operator; use <, <=, > or >="));
        };
        let (lhs, rhs) = (lhs.trim(), rhs.trim());

        // "confirm.p99.9": an operation prefix only if the part before the first dot names one.
        let (operation, metric_text) = match lhs.split_once('.') {
            Some((prefix, metric)) if Operation::from_str(prefix).is_ok() => {
                (Operation::from_str(prefix).ok(), metric)
            }
            Some((prefix, _)) if !prefix.starts_with('p') => {
                return Err(format!(
                    "{source}: unknown operation {prefix:?}; use one of {}",
                    Operation::ALL.map(Operation::as_str).join(", ")
                ));
            }
            _ => (None, lhs),
        };
        let metric = parse_metric(metric_text).map_err(|m| format!("{source}: {m}"))?;
        if let (Some(op), false) = (operation, metric.is_latency()) {
            return Err(format!(
                "{source}: {metric_text} is measured over all requests, not per operation; \
                 drop the \"{op}.\" prefix"
            ));
        }
        let example = format!("{lhs}{}{rhs}ms", cmp.as_str());
        let value = parse_value(metric, rhs, &example).map_err(|m| format!("{source}: {m}"))?;
        Ok(Threshold {
            source: source.to_string(),
            operation,
            metric,
            cmp,
            value,
        })
    }
}

fn parse_metric(text: &str) -> Result<Metric, String> {
    match text {
        "max" => return Ok(Metric::Max),
        "mean" | "avg" => return Ok(Metric::Mean),
        "error_rate" | "errors" => return Ok(Metric::ErrorRate),
        "dropped" | "dropped_rate" => return Ok(Metric::Dropped),
        "rps" => return Ok(Metric::Rps),
        _ => {}
    }
    let Some(number) = text.strip_prefix('p') else {
        return Err(format!("unknown metric {text:?}; use {METRICS_ALLOWED}"));
    };
    let p: f64 = number
        .parse()
        .map_err(|_| format!("unknown metric {text:?}; use {METRICS_ALLOWED}"))?;
    if p == 100.0 {
        return Ok(Metric::Max);
    }
    if !PERCENTILES.contains(&p) {
        return Err(format!(
            "percentile {number} is not kept by the summary; use p50, p90, p99, p99.9 or max"
        ));
    }
    Ok(Metric::Percentile(p))
}

fn parse_number(text: &str) -> Result<f64, String> {
    let x: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if !x.is_finite() || x < 0.0 {
        return Err(format!("{text:?} must be a finite number of 0 or more"));
    }
    Ok(x)
}

/// `example` is the threshold rewritten with a unit, for the error when the unit is missing.
fn parse_value(metric: Metric, text: &str, example: &str) -> Result<f64, String> {
    if text.is_empty() {
        return Err("no value after the operator, e.g. p99<50ms".to_string());
    }
    if metric.is_latency() {
        // Longest suffix first: "ms" and "us" both end in "s".
        const UNITS: [(&str, f64); 4] = [("us", 0.001), ("µs", 0.001), ("ms", 1.0), ("s", 1000.0)];
        for (unit, to_ms) in UNITS {
            if let Some(number) = text.strip_suffix(unit) {
                return Ok(parse_number(number)? * to_ms);
            }
        }
        if text.parse::<f64>().is_ok() {
            return Err(format!("give a unit, e.g. {example} (us, ms or s)"));
        }
        return Err(format!(
            "{text:?} is not a latency; write e.g. 50ms, 800us or 1s"
        ));
    }
    if metric.is_fraction() {
        let fraction = match text.strip_suffix('%') {
            Some(number) => parse_number(number)? / 100.0,
            None => parse_number(text)?,
        };
        if fraction > 1.0 {
            return Err(format!(
                "{text} is above 1; give a fraction (0.001) or a percentage (0.1%)"
            ));
        }
        return Ok(fraction);
    }
    parse_number(text.strip_suffix("/s").unwrap_or(text))
}

/// One threshold's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The threshold as written.
    pub threshold: String,
    /// The measured value in the threshold's unit; `None` when there was no data.
    pub actual: Option<f64>,
    /// Whether it held; always false without data.
    pub passed: bool,
}

/// Evaluates each threshold against the summary, in order.
pub fn evaluate(thresholds: &[Threshold], summary: &Summary) -> Vec<ThresholdResult> {
    thresholds
        .iter()
        .map(|t| {
            let actual = actual(t, summary).filter(|x| x.is_finite());
            ThresholdResult {
                threshold: t.source.clone(),
                actual,
                passed: actual.is_some_and(|a| t.cmp.holds(a, t.value)),
            }
        })
        .collect()
}

fn actual(t: &Threshold, summary: &Summary) -> Option<f64> {
    if t.metric.is_latency() {
        let key = t.operation.map_or("all", Operation::as_str);
        let p = summary.latency_ms.get(key).filter(|p| p.count > 0)?;
        return Some(match t.metric {
            Metric::Percentile(50.0) => p.p50,
            Metric::Percentile(90.0) => p.p90,
            Metric::Percentile(99.0) => p.p99,
            Metric::Percentile(99.9) => p.p99_9,
            Metric::Percentile(_) => return None,
            Metric::Mean => p.mean,
            _ => p.max,
        });
    }
    match t.metric {
        Metric::ErrorRate => (summary.requests_total > 0).then_some(summary.error_rate),
        Metric::Dropped => {
            let any = summary.iterations_scheduled
                + summary.iterations_started
                + summary.dropped_iterations;
            (any > 0).then_some(summary.dropped_rate)
        }
        Metric::Rps => (summary.duration_s > 0.0).then_some(summary.requests_per_second),
        _ => None,
    }
}

/// The actual value in the threshold's own unit, for reports: `12.3ms`, `0.15%`, `950.0/s`.
pub fn format_actual(threshold: &str, actual: Option<f64>) -> String {
    let Some(x) = actual else {
        return "no data".to_string();
    };
    match threshold.parse::<Threshold>().map(|t| t.metric) {
        Ok(m) if m.is_latency() => format!("{x:.2}ms"),
        Ok(m) if m.is_fraction() => format!("{:.3}%", x * 100.0),
        Ok(_) => format!("{x:.1}/s"),
        Err(_) => format!("{x}"),
    }
}

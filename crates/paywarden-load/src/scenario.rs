//! What a load run does: the mix of payment flows, how iterations arrive (the executor), the
//! share of deliberate idempotent retries, the thresholds that gate CI, and the bound on
//! requests in flight. Scenarios are built in (`payments`, `noop`) or read from TOML.
//!
//! # The TOML format
//!
//! ```toml
//! name = "checkout-peak"          # optional; default the file's stem, or "custom"
//! max_in_flight = 1000            # optional; 1..=100000, default 1024
//! retry_share = 0.02              # optional; 0..=0.5, default 0.02
//! thresholds = ["p99<50ms", "error_rate<0.1%", "confirm.p99.9<200ms"]   # optional
//!
//! [mix]                           # optional; default the payments mix (80/10/5/5)
//! auto_capture = 80               # keys are flows, values integer weights
//! manual_capture = 10
//! decline = 5
//! partial_refund = 5
//!
//! [executor]                      # required
//! kind = "ramping-arrival-rate"   # or "constant-arrival-rate" (rate, duration)
//! start_rate = 10                 #    or "constant-vus" (vus, duration)
//! stages = [{ target = 200, duration = "30s" }, { target = 200, duration = "5m" }]
//! ```
//!
//! Durations are humantime strings (`"30s"`, `"5m"`, `"1h30m"`). Unknown keys are errors, and
//! every error — syntax, type, unknown key, invalid value — names the line and column of the
//! offending key or value, so a CI log points straight at what to change.

use std::fmt;
use std::ops::Range;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::schedule::{Executor, Field, Stage};
use crate::threshold::Threshold;

/// One HTTP call a flow makes; latency is recorded per operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// `POST /v1/payment_intents`.
    Create,
    /// `POST /v1/payment_intents/{id}/confirm`.
    Confirm,
    /// `POST /v1/payment_intents/{id}/capture`.
    Capture,
    /// `POST /v1/refunds`.
    Refund,
    /// `GET /v1/payment_intents/{id}` (or another object).
    Retrieve,
    /// `GET /healthz`.
    Healthz,
}

impl Operation {
    /// Every operation, in the order reports list them.
    pub const ALL: [Operation; 6] = [
        Self::Create,
        Self::Confirm,
        Self::Capture,
        Self::Refund,
        Self::Retrieve,
        Self::Healthz,
    ];

    /// The name used in thresholds (`confirm.p99<80ms`), reports and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Confirm => "confirm",
            Self::Capture => "capture",
            Self::Refund => "refund",
            Self::Retrieve => "retrieve",
            Self::Healthz => "healthz",
        }
    }

    /// Position in [`Operation::ALL`], for per-operation arrays.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Operation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown operation {s:?}: use one of {}",
                    Self::ALL.map(Operation::as_str).join(", ")
                )
            })
    }
}

/// One iteration's sequence of calls and what it must observe.
///
/// - `AutoCapture`: create with `confirm=true` and `pm_card_visa`; expect `succeeded`.
/// - `ManualCapture`: create with `capture_method=manual`, `confirm=true`, then capture;
///   expect `succeeded`.
/// - `Decline`: create with `confirm=true` and `pm_card_chargeDeclined`; expect 402
///   `card_declined` and the intent in `requires_payment_method`.
/// - `PartialRefund`: `AutoCapture`, then refund half; expect the refund `succeeded`, the
///   intent's `amount_received` unchanged and the charge's `amount_refunded` the half.
/// - `Noop`: `GET /healthz`, to measure the harness and the HTTP stack alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Create and confirm with automatic capture.
    AutoCapture,
    /// Create and confirm with manual capture, then capture.
    ManualCapture,
    /// A declined card.
    Decline,
    /// An automatic capture, then a refund of half the amount.
    PartialRefund,
    /// `GET /healthz` only.
    Noop,
}

impl Flow {
    /// Every flow, in the order mixes list them.
    pub const ALL: [Flow; 5] = [
        Self::AutoCapture,
        Self::ManualCapture,
        Self::Decline,
        Self::PartialRefund,
        Self::Noop,
    ];

    /// The name used in the TOML `[mix]` table and in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AutoCapture => "auto_capture",
            Self::ManualCapture => "manual_capture",
            Self::Decline => "decline",
            Self::PartialRefund => "partial_refund",
            Self::Noop => "noop",
        }
    }
}

impl fmt::Display for Flow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Largest sum of weights a mix accepts: far beyond any useful precision, and keeps
/// `pick`'s arithmetic exact in an `f64`.
pub const MIX_WEIGHT_TOTAL_MAX: u64 = 1_000_000;

/// Weighted choice of flows. Holds at least one positive weight and no flow twice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mix {
    entries: Vec<(Flow, u32)>,
}

impl Mix {
    /// A mix from `(flow, weight)` pairs; refuses an empty or all-zero mix, a flow listed
    /// twice, and weights summing above [`MIX_WEIGHT_TOTAL_MAX`].
    pub fn new(entries: Vec<(Flow, u32)>) -> Result<Mix, String> {
        for (i, (flow, _)) in entries.iter().enumerate() {
            if entries[..i].iter().any(|(f, _)| f == flow) {
                return Err(format!(
                    "flow {flow} is listed twice: keep one weight for it"
                ));
            }
        }
        let total: u64 = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        if total == 0 {
            return Err(
                "every weight is 0: give at least one flow a positive weight, e.g. auto_capture = 1"
                    .to_string(),
            );
        }
        if total > MIX_WEIGHT_TOTAL_MAX {
            return Err(format!(
                "weights sum to {total}, above MIX_WEIGHT_TOTAL_MAX ({MIX_WEIGHT_TOTAL_MAX}): \
                 scale them down (they are relative)"
            ));
        }
        Ok(Mix { entries })
    }

    /// The flow for a uniform draw `u` in [0, 1): each flow gets a share of the interval in
    /// proportion to its weight. Out-of-range or NaN draws are clamped, never a panic.
    pub fn pick(&self, u: f64) -> Flow {
        let total = self.total();
        let u = if u.is_finite() {
            u.clamp(0.0, 1.0)
        } else {
            0.0
        };
        // floor(u × total) is in 0..total for u < 1; u = 1 is clamped to the last slot.
        let slot = ((u * total as f64).floor() as u64).min(total.saturating_sub(1));
        let mut cumulative = 0u64;
        for (flow, weight) in &self.entries {
            cumulative += u64::from(*weight);
            if slot < cumulative {
                return *flow;
            }
        }
        // Unreachable while the invariant (a positive total) holds; the last positive
        // weight is the honest answer anyway.
        self.entries
            .iter()
            .rev()
            .find(|(_, w)| *w > 0)
            .map_or(Flow::Noop, |(f, _)| *f)
    }

    /// The `(flow, weight)` pairs as given.
    pub fn entries(&self) -> &[(Flow, u32)] {
        &self.entries
    }

    /// The fraction of iterations that run `f`, in [0, 1].
    pub fn share(&self, f: Flow) -> f64 {
        let weight: u64 = self
            .entries
            .iter()
            .filter(|(flow, _)| *flow == f)
            .map(|(_, w)| u64::from(*w))
            .sum();
        weight as f64 / self.total().max(1) as f64
    }

    fn total(&self) -> u64 {
        self.entries.iter().map(|(_, w)| u64::from(*w)).sum()
    }

    /// The built-in payments mix: 80 % auto capture, 10 % manual capture, 5 % declines,
    /// 5 % partial refunds.
    pub fn payments() -> Mix {
        Mix {
            entries: vec![
                (Flow::AutoCapture, 80),
                (Flow::ManualCapture, 10),
                (Flow::Decline, 5),
                (Flow::PartialRefund, 5),
            ],
        }
    }
}

/// Default bound on requests in flight: past it the runtime drops iterations (and counts
/// them) rather than queueing without limit.
pub const MAX_IN_FLIGHT_DEFAULT: usize = 1024;
/// Highest `max_in_flight` accepted.
pub const MAX_IN_FLIGHT_MAX: usize = 100_000;
/// Default share of POSTs deliberately sent twice with the same Idempotency-Key.
pub const RETRY_SHARE_DEFAULT: f64 = 0.02;
/// Highest `retry_share` accepted: beyond half, the run measures retries, not payments.
pub const RETRY_SHARE_MAX: f64 = 0.5;
/// Longest scenario name, in characters: it ends up in reports and file names.
pub const NAME_CHARS_MAX: usize = 100;
/// Most thresholds a scenario accepts.
pub const THRESHOLDS_MAX: usize = 64;

/// Everything a run needs besides the target's address.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Scenario {
    /// Shown in reports.
    pub name: String,
    /// Which flows iterations run.
    pub mix: Mix,
    /// Share of POSTs sent twice with the same Idempotency-Key, in [0, 0.5].
    pub retry_share: f64,
    /// How iterations arrive.
    pub executor: Executor,
    /// Conditions the run must meet to pass.
    pub thresholds: Vec<Threshold>,
    /// Bound on requests in flight.
    pub max_in_flight: usize,
}

impl Scenario {
    /// Checks every limit: the executor's, `retry_share`, `max_in_flight` and the name.
    pub fn validate(&self) -> Result<(), String> {
        check_name(&self.name)?;
        self.executor.validate()?;
        check_retry_share(self.retry_share)?;
        check_max_in_flight(self.max_in_flight as u64)?;
        if self.thresholds.len() > THRESHOLDS_MAX {
            return Err(format!(
                "{} thresholds exceed THRESHOLDS_MAX ({THRESHOLDS_MAX})",
                self.thresholds.len()
            ));
        }
        Ok(())
    }
}

/// A built-in scenario at a constant arrival rate: `payments` (the 80/10/5/5 mix) or `noop`
/// (`GET /healthz` only, no retries since there are no POSTs). `None` for another name.
/// The rate and duration are not validated here: call [`Scenario::validate`].
pub fn builtin(name: &str, rate: f64, duration: Duration) -> Option<Scenario> {
    let (mix, retry_share) = match name {
        "payments" => (Mix::payments(), RETRY_SHARE_DEFAULT),
        "noop" => (
            Mix {
                entries: vec![(Flow::Noop, 1)],
            },
            0.0,
        ),
        _ => return None,
    };
    Some(Scenario {
        name: name.to_string(),
        mix,
        retry_share,
        executor: Executor::ConstantArrivalRate { rate, duration },
        thresholds: Vec::new(),
        max_in_flight: MAX_IN_FLIGHT_DEFAULT,
    })
}

/// The names [`builtin`] knows.
pub const BUILTIN_NAMES: [&str; 2] = ["payments", "noop"];

/// A scenario file that cannot be used, with the 1-based line and column of the offending
/// key or value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {message}")]
pub struct ScenarioError {
    /// The file name as given to [`from_toml`].
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// What is wrong and what to change.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<Spanned<String>>,
    max_in_flight: Option<Spanned<i64>>,
    retry_share: Option<Spanned<f64>>,
    thresholds: Option<Spanned<Vec<Spanned<String>>>>,
    mix: Option<Spanned<RawMix>>,
    executor: Spanned<RawExecutor>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMix {
    auto_capture: Option<Spanned<i64>>,
    manual_capture: Option<Spanned<i64>>,
    decline: Option<Spanned<i64>>,
    partial_refund: Option<Spanned<i64>>,
    noop: Option<Spanned<i64>>,
}

/// Flat rather than a tagged enum: serde buffers a tagged enum's content, which loses the
/// spans every error needs. Fields that do not fit the kind are refused afterwards.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExecutor {
    kind: Spanned<String>,
    rate: Option<Spanned<f64>>,
    duration: Option<Spanned<String>>,
    start_rate: Option<Spanned<f64>>,
    stages: Option<Spanned<Vec<Spanned<RawStage>>>>,
    vus: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStage {
    target: Spanned<f64>,
    duration: Spanned<String>,
}

const EXECUTOR_KINDS: &str =
    "\"constant-arrival-rate\", \"ramping-arrival-rate\" or \"constant-vus\"";

/// Reads a scenario from TOML text (see the module docs for the format). `file` names the
/// source in errors and gives the default name (its stem); nothing is read from disk.
pub fn from_toml(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let fail = |span: Range<usize>, message: String| {
        let (line, column) = line_column(text, span.start);
        ScenarioError {
            file: file.to_string(),
            line,
            column,
            message,
        }
    };
    let raw: RawScenario = toml::from_str(text).map_err(|e| {
        fail(
            e.span().unwrap_or(0..0),
            plain_types(e.message().trim_end()),
        )
    })?;

    let name = match raw.name {
        Some(name) => {
            check_name(name.get_ref()).map_err(|m| fail(name.span(), m))?;
            name.into_inner()
        }
        None => default_name(file),
    };

    let max_in_flight = match raw.max_in_flight {
        Some(value) => {
            let n = *value.get_ref();
            let n = u64::try_from(n)
                .map_err(|_| format!("max_in_flight {n} is negative: give at least 1"))
                .and_then(|n| check_max_in_flight(n).map(|()| n))
                .map_err(|m| fail(value.span(), m))?;
            // check_max_in_flight bounded it to MAX_IN_FLIGHT_MAX.
            usize::try_from(n).unwrap_or(MAX_IN_FLIGHT_MAX)
        }
        None => MAX_IN_FLIGHT_DEFAULT,
    };

    let retry_share = match raw.retry_share {
        Some(value) => {
            check_retry_share(*value.get_ref()).map_err(|m| fail(value.span(), m))?;
            value.into_inner()
        }
        None => RETRY_SHARE_DEFAULT,
    };

    let mut thresholds = Vec::new();
    if let Some(list) = raw.thresholds {
        if list.get_ref().len() > THRESHOLDS_MAX {
            return Err(fail(
                list.span(),
                format!(
                    "{} thresholds exceed THRESHOLDS_MAX ({THRESHOLDS_MAX}): keep the ones that gate",
                    list.get_ref().len()
                ),
            ));
        }
        for item in list.into_inner() {
            let threshold: Threshold = item
                .get_ref()
                .parse()
                .map_err(|m: String| fail(item.span(), m))?;
            thresholds.push(threshold);
        }
    }

    let mix = match raw.mix {
        Some(table) => {
            let span = table.span();
            let table = table.into_inner();
            let mut entries = Vec::new();
            let fields = [
                (Flow::AutoCapture, table.auto_capture),
                (Flow::ManualCapture, table.manual_capture),
                (Flow::Decline, table.decline),
                (Flow::PartialRefund, table.partial_refund),
                (Flow::Noop, table.noop),
            ];
            for (flow, weight) in fields {
                let Some(weight) = weight else { continue };
                let w = u32::try_from(*weight.get_ref()).map_err(|_| {
                    fail(
                        weight.span(),
                        format!(
                            "mix.{flow} = {}: a weight is a whole number from 0 to {}",
                            weight.get_ref(),
                            u32::MAX
                        ),
                    )
                })?;
                entries.push((flow, w));
            }
            Mix::new(entries).map_err(|m| fail(span, format!("[mix]: {m}")))?
        }
        None => Mix::payments(),
    };

    let executor = executor_from_raw(raw.executor, &fail)?;

    Ok(Scenario {
        name,
        mix,
        retry_share,
        executor,
        thresholds,
        max_in_flight,
    })
}

fn executor_from_raw(
    raw: Spanned<RawExecutor>,
    fail: &dyn Fn(Range<usize>, String) -> ScenarioError,
) -> Result<Executor, ScenarioError> {
    let table_span = raw.span();
    let raw = raw.into_inner();
    let kind = raw.kind.get_ref().as_str();
    let kind_span = raw.kind.span();

    // Refuse keys that belong to another kind, at the key's value.
    let allowed: &[&str] = match kind {
        "constant-arrival-rate" => &["rate", "duration"],
        "ramping-arrival-rate" => &["start_rate", "stages"],
        "constant-vus" => &["vus", "duration"],
        other => {
            return Err(fail(
                kind_span,
                format!("unknown executor kind {other:?}: use {EXECUTOR_KINDS}"),
            ));
        }
    };
    let present = [
        ("rate", raw.rate.as_ref().map(Spanned::span)),
        ("duration", raw.duration.as_ref().map(Spanned::span)),
        ("start_rate", raw.start_rate.as_ref().map(Spanned::span)),
        ("stages", raw.stages.as_ref().map(Spanned::span)),
        ("vus", raw.vus.as_ref().map(Spanned::span)),
    ];
    for (key, span) in present {
        if let Some(span) = span
            && !allowed.contains(&key)
        {
            return Err(fail(
                span,
                format!(
                    "{key} does not apply to {kind}, which takes {}: remove it",
                    allowed.join(" and ")
                ),
            ));
        }
    }
    let missing = |key: &str, example: &str| {
        fail(
            table_span.clone(),
            format!("[executor] of kind {kind} needs {key}, e.g. {example}"),
        )
    };
    let parse_duration = |value: &Spanned<String>, name: &str| {
        humantime::parse_duration(value.get_ref().trim()).map_err(|e| {
            fail(
                value.span(),
                format!(
                    "{name} {:?} is not a duration ({e}): write e.g. \"30s\", \"5m\" or \"1h30m\"",
                    value.get_ref()
                ),
            )
        })
    };

    // Spans per field, for the executor's own validation below.
    let mut spans: Vec<(Field, Range<usize>)> = Vec::new();
    let executor = match kind {
        "constant-arrival-rate" => {
            let rate = raw.rate.ok_or_else(|| missing("rate", "rate = 200"))?;
            let duration = raw
                .duration
                .ok_or_else(|| missing("duration", "duration = \"1m\""))?;
            spans.push((Field::Rate, rate.span()));
            spans.push((Field::Duration, duration.span()));
            Executor::ConstantArrivalRate {
                rate: *rate.get_ref(),
                duration: parse_duration(&duration, "duration")?,
            }
        }
        "ramping-arrival-rate" => {
            let stages = raw.stages.ok_or_else(|| {
                missing("stages", "stages = [{ target = 200, duration = \"30s\" }]")
            })?;
            let start_rate = match raw.start_rate {
                Some(value) => {
                    spans.push((Field::StartRate, value.span()));
                    *value.get_ref()
                }
                None => 0.0,
            };
            spans.push((Field::Stages, stages.span()));
            let mut parsed = Vec::with_capacity(stages.get_ref().len());
            for (i, stage) in stages.into_inner().into_iter().enumerate() {
                let stage = stage.into_inner();
                spans.push((Field::StageTarget(i), stage.target.span()));
                spans.push((Field::StageDuration(i), stage.duration.span()));
                parsed.push(Stage {
                    target: *stage.target.get_ref(),
                    duration: parse_duration(&stage.duration, &format!("stages[{i}].duration"))?,
                });
            }
            Executor::RampingArrivalRate {
                start_rate,
                stages: parsed,
            }
        }
        _ => {
            let vus = raw.vus.ok_or_else(|| missing("vus", "vus = 50"))?;
            let duration = raw
                .duration
                .ok_or_else(|| missing("duration", "duration = \"1m\""))?;
            spans.push((Field::Vus, vus.span()));
            spans.push((Field::Duration, duration.span()));
            let count = u32::try_from(*vus.get_ref()).map_err(|_| {
                fail(
                    vus.span(),
                    format!(
                        "vus {} is out of range: give 1 to {}",
                        vus.get_ref(),
                        crate::schedule::VUS_MAX
                    ),
                )
            })?;
            Executor::ConstantVus {
                vus: count,
                duration: parse_duration(&duration, "duration")?,
            }
        }
    };
    executor.check().map_err(|(field, message)| {
        let span = spans
            .iter()
            .find(|(f, _)| *f == field)
            .map_or(table_span.clone(), |(_, s)| s.clone());
        fail(span, message)
    })?;
    Ok(executor)
}

/// serde names Rust types (`expected i64`); a scenario's author thinks in TOML's.
fn plain_types(message: &str) -> String {
    if message.contains("missing field `executor`") {
        return "no [executor] table: add one, e.g. [executor] with kind = \"constant-arrival-rate\", \
                rate = 100 and duration = \"1m\""
            .to_string();
    }
    message
        .replace("expected i64", "expected an integer")
        .replace("expected u32", "expected an integer")
        .replace("expected f64", "expected a number")
        .replace("expected a string", "expected a string in quotes")
}

fn check_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("name is empty: give the scenario a name, or leave the key out".to_string());
    }
    if name.chars().count() > NAME_CHARS_MAX {
        return Err(format!(
            "name is longer than NAME_CHARS_MAX ({NAME_CHARS_MAX} characters): shorten it"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("name contains control characters: use printable text".to_string());
    }
    Ok(())
}

fn check_retry_share(share: f64) -> Result<(), String> {
    if !(share.is_finite() && (0.0..=RETRY_SHARE_MAX).contains(&share)) {
        return Err(format!(
            "retry_share {share} is outside 0..={RETRY_SHARE_MAX}: give a fraction, e.g. 0.02"
        ));
    }
    Ok(())
}

fn check_max_in_flight(n: u64) -> Result<(), String> {
    if n == 0 {
        return Err("max_in_flight is 0: give at least 1".to_string());
    }
    if n > MAX_IN_FLIGHT_MAX as u64 {
        return Err(format!(
            "max_in_flight {n} exceeds MAX_IN_FLIGHT_MAX ({MAX_IN_FLIGHT_MAX}): lower it"
        ));
    }
    Ok(())
}

/// The file's stem, if it makes a valid name; else `custom`.
fn default_name(file: &str) -> String {
    Path::new(file)
        .file_stem()
        .and_then(|s| s.to_str())
        .filter(|s| check_name(s).is_ok())
        .map_or_else(|| "custom".to_string(), str::to_string)
}

/// 1-based line and column (in characters) of byte `offset` in `text`; an offset past the
/// end or inside a character is moved back to the nearest character boundary.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

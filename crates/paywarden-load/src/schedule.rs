//! k6's executors and the arrival schedule they imply: when each iteration of an open-loop
//! run is due, computed from the configured rate alone so the runtime never lets the
//! target's slowness delay the next arrival (no coordinated omission).
//!
//! The schedule is pure arithmetic over the stages: iteration `n` (0-based) starts at the time
//! `t` where the integral of the rate from 0 to `t` equals `n`, as in k6. Iteration 0 starts
//! at 0. A run schedules `floor(∫rate)` iterations: every started iteration has its whole unit
//! of rate inside the run, so the achieved rate never exceeds the configured one.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Serialize, Serializer};

/// Most stages a ramping executor accepts: enough for any realistic profile, and bounds the
/// schedule's precomputed table.
pub const STAGES_MAX: usize = 100;
/// Highest rate accepted, in iterations per second.
pub const RATE_MAX: f64 = 1_000_000.0;
/// Longest run accepted (seven days): bounds the timeline and the schedule's arithmetic.
pub const DURATION_MAX: Duration = Duration::from_secs(7 * 86_400);
/// Most virtual users a closed-loop executor accepts.
pub const VUS_MAX: u32 = 10_000;

/// One stage of a ramping executor: the rate moves linearly from the previous stage's target
/// (or the start rate) to `target` over `duration`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stage {
    /// Iterations per second at the end of the stage (or VUs for VU-based executors).
    pub target: f64,
    /// How long the stage lasts. A zero-length stage is an instant jump to `target`.
    #[serde(serialize_with = "serialize_duration")]
    pub duration: Duration,
}

/// How iterations are started: k6's executors of the same names.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Executor {
    /// Open loop: `rate` iterations per second for `duration`, whatever the target's latency.
    ConstantArrivalRate {
        /// Iterations per second.
        rate: f64,
        /// Length of the run.
        #[serde(serialize_with = "serialize_duration")]
        duration: Duration,
    },
    /// Open loop: the rate moves linearly from the previous target to each stage's target
    /// over the stage's duration (k6's semantics).
    RampingArrivalRate {
        /// Iterations per second at time 0.
        start_rate: f64,
        /// The stages, in order.
        stages: Vec<Stage>,
    },
    /// Closed loop: `vus` users each start their next iteration when the previous one ends.
    ConstantVus {
        /// Number of virtual users.
        vus: u32,
        /// Length of the run.
        #[serde(serialize_with = "serialize_duration")]
        duration: Duration,
    },
}

/// Which field of an executor a validation error is about, so the scenario parser can point
/// at the offending TOML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Field {
    Rate,
    Duration,
    StartRate,
    Stages,
    StageTarget(usize),
    StageDuration(usize),
    Vus,
}

impl Executor {
    /// Length of the run: the sum of the stages for a ramping executor.
    pub fn duration(&self) -> Duration {
        match self {
            Self::ConstantArrivalRate { duration, .. } | Self::ConstantVus { duration, .. } => {
                *duration
            }
            Self::RampingArrivalRate { stages, .. } => stages
                .iter()
                .fold(Duration::ZERO, |sum, s| sum.saturating_add(s.duration)),
        }
    }

    /// Checks every limit; the message names the field, the limit and what to change.
    pub fn validate(&self) -> Result<(), String> {
        self.check().map_err(|(_, message)| message)
    }

    /// [`Executor::validate`] plus the field at fault.
    pub(crate) fn check(&self) -> Result<(), (Field, String)> {
        match self {
            Self::ConstantArrivalRate { rate, duration } => {
                check_rate(*rate, "rate", true).map_err(|m| (Field::Rate, m))?;
                check_duration(*duration, "duration").map_err(|m| (Field::Duration, m))?;
            }
            Self::RampingArrivalRate { start_rate, stages } => {
                check_rate(*start_rate, "start_rate", false).map_err(|m| (Field::StartRate, m))?;
                if stages.is_empty() {
                    return Err((
                        Field::Stages,
                        "stages is empty: give at least one stage, e.g. \
                         stages = [{ target = 100, duration = \"1m\" }]"
                            .to_string(),
                    ));
                }
                if stages.len() > STAGES_MAX {
                    return Err((
                        Field::Stages,
                        format!(
                            "{} stages exceed STAGES_MAX ({STAGES_MAX}): merge stages",
                            stages.len()
                        ),
                    ));
                }
                for (i, stage) in stages.iter().enumerate() {
                    check_rate(stage.target, &format!("stages[{i}].target"), false)
                        .map_err(|m| (Field::StageTarget(i), m))?;
                    if stage.duration > DURATION_MAX {
                        return Err((
                            Field::StageDuration(i),
                            format!(
                                "stages[{i}].duration {} exceeds DURATION_MAX (7d): shorten it",
                                humantime::format_duration(stage.duration)
                            ),
                        ));
                    }
                }
                check_duration(self.duration(), "the stages' total duration")
                    .map_err(|m| (Field::Stages, m))?;
                if *start_rate == 0.0 && stages.iter().all(|s| s.target == 0.0) {
                    return Err((
                        Field::Stages,
                        "every rate is 0, so no iteration would start: \
                         give a stage a target above 0"
                            .to_string(),
                    ));
                }
            }
            Self::ConstantVus { vus, duration } => {
                if *vus == 0 {
                    return Err((Field::Vus, "vus is 0: give at least 1".to_string()));
                }
                if *vus > VUS_MAX {
                    return Err((
                        Field::Vus,
                        format!("vus {vus} exceeds VUS_MAX ({VUS_MAX}): lower it"),
                    ));
                }
                check_duration(*duration, "duration").map_err(|m| (Field::Duration, m))?;
            }
        }
        Ok(())
    }

    /// Whether iterations arrive on a schedule (open loop) rather than when a user is free.
    pub fn is_open_loop(&self) -> bool {
        !matches!(self, Self::ConstantVus { .. })
    }

    /// One line for humans, e.g. `constant-arrival-rate 200/s for 1m`.
    pub fn describe(&self) -> String {
        match self {
            Self::ConstantArrivalRate { rate, duration } => format!(
                "constant-arrival-rate {}/s for {}",
                format_number(*rate),
                humantime::format_duration(*duration)
            ),
            Self::RampingArrivalRate { start_rate, stages } => {
                let mut out = format!("ramping-arrival-rate from {}/s", format_number(*start_rate));
                // Long profiles are summarised: the line must stay a line.
                const STAGES_SHOWN_MAX: usize = 6;
                for stage in stages.iter().take(STAGES_SHOWN_MAX) {
                    let _ = write!(
                        out,
                        ", {}/s over {}",
                        format_number(stage.target),
                        humantime::format_duration(stage.duration)
                    );
                }
                if stages.len() > STAGES_SHOWN_MAX {
                    let _ = write!(out, ", … ({} stages)", stages.len());
                }
                let _ = write!(
                    out,
                    " ({} total)",
                    humantime::format_duration(self.duration())
                );
                out
            }
            Self::ConstantVus { vus, duration } => format!(
                "constant-vus {vus} VUs for {}",
                humantime::format_duration(*duration)
            ),
        }
    }
}

fn check_rate(rate: f64, name: &str, must_be_positive: bool) -> Result<(), String> {
    if !rate.is_finite() {
        return Err(format!(
            "{name} is not a number: give iterations per second, e.g. 100"
        ));
    }
    if must_be_positive && rate <= 0.0 {
        return Err(format!(
            "{name} is {}: give a rate above 0 iterations per second",
            format_number(rate)
        ));
    }
    if rate < 0.0 {
        return Err(format!(
            "{name} is {}: a rate cannot be negative, give 0 or more",
            format_number(rate)
        ));
    }
    if rate > RATE_MAX {
        return Err(format!(
            "{name} {} exceeds RATE_MAX ({}/s): lower it",
            format_number(rate),
            format_number(RATE_MAX)
        ));
    }
    Ok(())
}

fn check_duration(duration: Duration, name: &str) -> Result<(), String> {
    if duration.is_zero() {
        return Err(format!(
            "{name} is 0: give a positive duration, e.g. \"1m\""
        ));
    }
    if duration > DURATION_MAX {
        return Err(format!(
            "{name} {} exceeds DURATION_MAX (7d): shorten it",
            humantime::format_duration(duration)
        ));
    }
    Ok(())
}

/// A number without trailing zeros: `200`, `12.5`.
pub(crate) fn format_number(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{x:.0}")
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn serialize_duration<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// One piece of the rate profile, on which the rate is linear.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Segment {
    /// Start of the segment since the start of the run, in nanoseconds (exact).
    start_ns: u64,
    /// Length in nanoseconds (exact).
    length_ns: u64,
    /// Length in seconds.
    length_s: f64,
    /// Rate at the start and at the end, per second.
    rate_start: f64,
    rate_end: f64,
    /// Integral of the rate from 0 to the start, and to the end of the segment.
    before: f64,
    after: f64,
}

/// When each iteration of an arrival-rate executor is due: the rate profile and the
/// cumulative number of iterations at each stage boundary, precomputed once.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    segments: Vec<Segment>,
    total_ns: u64,
    expected: u64,
}

/// Slack for floating-point sums: an integral within this of an integer counts as that integer,
/// so 100/s for 10 s schedules 1000 iterations, not 999.
const INTEGRAL_EPSILON: f64 = 1e-9;

impl Schedule {
    /// The schedule of an arrival-rate executor; `None` for a closed-loop executor.
    /// Call [`Executor::validate`] first: an invalid rate (NaN, negative) is treated as 0.
    pub fn new(e: &Executor) -> Option<Schedule> {
        let pieces: Vec<(f64, f64, Duration)> = match e {
            Executor::ConstantArrivalRate { rate, duration } => vec![(*rate, *rate, *duration)],
            Executor::RampingArrivalRate { start_rate, stages } => {
                let mut previous = *start_rate;
                stages
                    .iter()
                    .take(STAGES_MAX)
                    .map(|s| {
                        let piece = (previous, s.target, s.duration);
                        previous = s.target;
                        piece
                    })
                    .collect()
            }
            Executor::ConstantVus { .. } => return None,
        };
        let sane = |r: f64| {
            if r.is_finite() && r > 0.0 {
                r.min(RATE_MAX)
            } else {
                0.0
            }
        };
        let mut segments = Vec::with_capacity(pieces.len());
        let mut start_ns: u64 = 0;
        let mut integral = 0.0;
        for (rate_start, rate_end, duration) in pieces {
            let duration = duration.min(DURATION_MAX);
            let length_ns = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
            let length_s = duration.as_secs_f64();
            let (rate_start, rate_end) = (sane(rate_start), sane(rate_end));
            let before = integral;
            integral += (rate_start + rate_end) / 2.0 * length_s;
            segments.push(Segment {
                start_ns,
                length_ns,
                length_s,
                rate_start,
                rate_end,
                before,
                after: integral,
            });
            start_ns = start_ns.saturating_add(length_ns);
        }
        // Both factors are bounded (RATE_MAX × DURATION_MAX ≈ 6e11), so the cast is exact.
        let expected = (integral + INTEGRAL_EPSILON).floor().max(0.0) as u64;
        Some(Schedule {
            segments,
            total_ns: start_ns,
            expected,
        })
    }

    /// When iteration `n` (0-based) is due, since the start of the run; `None` once `n` is
    /// past the end (`n >= expected_iterations()`).
    pub fn offset(&self, n: u64) -> Option<Duration> {
        if n >= self.expected {
            return None;
        }
        let target = n as f64;
        // The first segment whose end integral exceeds n: a zero-rate segment has
        // after == before and is never chosen.
        let index = self.segments.partition_point(|s| s.after <= target);
        let segment = match self.segments.get(index) {
            Some(s) => s,
            // n is within the epsilon of the total: it belongs at the very end.
            None => return Some(Duration::from_nanos(self.total_ns)),
        };
        let within = (target - segment.before).max(0.0);
        let tau_s = solve(segment, within);
        // Rounded to the nanosecond, so n / rate lands exactly on whole milliseconds.
        let tau_ns = (tau_s * 1e9).round().clamp(0.0, segment.length_ns as f64) as u64;
        Some(Duration::from_nanos(
            segment.start_ns.saturating_add(tau_ns),
        ))
    }

    /// Iterations the schedule starts: the floor of the rate's integral over the run.
    pub fn expected_iterations(&self) -> u64 {
        self.expected
    }

    /// The configured rate at `t`, in iterations per second; 0 after the end.
    pub fn rate_at(&self, t: Duration) -> f64 {
        let t_ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        // The last segment starting at or before t that also contains it; at a boundary the
        // later segment wins, so a zero-length stage's jump takes effect at once.
        let index = self.segments.partition_point(|s| s.start_ns <= t_ns);
        let Some(i) = index.checked_sub(1) else {
            return 0.0;
        };
        let segment = &self.segments[i];
        let into_ns = t_ns - segment.start_ns;
        if into_ns >= segment.length_ns {
            return 0.0;
        }
        let fraction = into_ns as f64 / segment.length_ns as f64;
        segment.rate_start + (segment.rate_end - segment.rate_start) * fraction
    }
}

/// Seconds into `segment` at which the integral of its rate reaches `m`.
///
/// With r(τ) = r0 + aτ the integral is r0·τ + aτ²/2 = m, whose root is written as
/// 2m / (r0 + √(r0² + 2am)): the same value as the textbook formula without its cancellation
/// when `a` is small, and valid for a falling rate (a < 0) as well.
fn solve(segment: &Segment, m: f64) -> f64 {
    if m <= 0.0 {
        return 0.0;
    }
    let r0 = segment.rate_start;
    let slope = if segment.length_s > 0.0 {
        (segment.rate_end - r0) / segment.length_s
    } else {
        0.0
    };
    let discriminant = (r0 * r0 + 2.0 * slope * m).max(0.0);
    let denominator = r0 + discriminant.sqrt();
    if denominator <= 0.0 {
        return segment.length_s;
    }
    (2.0 * m / denominator).min(segment.length_s)
}

//! The leak detector: heap bytes against work done, over several nested windows.
//!
//! See the crate documentation for the statistics, the thresholds and the measured
//! false-positive behaviour.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::ring::Ring;
use crate::stats;

/// Longest window the detector accepts, in samples (one day at one sample a second): the
/// sample ring is allocated up front, so this bounds its memory (40 bytes a sample).
pub const WINDOW_SAMPLES_MAX: usize = 86_400;

/// Most points a window may be subsampled to. Theil–Sen and Mann–Kendall are O(points²), and
/// the two slope scratch buffers hold points·(points−1)/2 values each (2 MiB at 512 points).
pub const MAX_POINTS_MAX: usize = 512;

/// Fewest samples a window may be evaluated on (the Mann–Kendall normal approximation is poor
/// below about 10).
pub const MIN_SAMPLES_MIN: usize = 8;

/// Normal score of the one-sided upper confidence bound of each window's slope (95 %).
pub const SLOPE_UPPER_Z: f64 = 1.645;

/// One reading of the process, taken by the caller (every second by default).
///
/// Counters are cumulative since the process started. A counter or the clock going backwards
/// means the process restarted: the detector clears its window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Sample {
    /// When the sample was taken, in milliseconds on any clock that does not go backwards.
    pub at_ms: u64,
    /// Bytes the allocator has handed out and not had back (jemalloc's `stats.allocated`).
    pub heap_allocated_bytes: u64,
    /// Resident set size, in bytes (what a container's memory limit counts).
    pub resident_bytes: u64,
    /// Requests served so far.
    pub requests_total: u64,
    /// Payments processed so far.
    pub payments_total: u64,
}

/// Which counter of [`Sample`] measures work: the detector's rates are bytes per unit of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkCounter {
    /// `requests_total`: bytes per request. Fits any service.
    #[default]
    Requests,
    /// `payments_total`: bytes per payment. Fits a leak tied to payments, as on 2024-08-12.
    Payments,
}

impl WorkCounter {
    /// The counter's value in `sample`.
    pub fn of(self, sample: &Sample) -> u64 {
        match self {
            Self::Requests => sample.requests_total,
            Self::Payments => sample.payments_total,
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Self::Requests => "request",
            Self::Payments => "payment",
        }
    }
}

/// The detector's verdict, ordered by severity.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LeakState {
    /// No sustained growth per unit of work.
    #[default]
    Ok,
    /// Growth that passes the lower thresholds: worth a look, not yet a page.
    Suspect,
    /// Sustained, significant growth per unit of work, for `leaking_after` assessments.
    Leaking,
}

impl LeakState {
    /// 0 (ok), 1 (suspect) or 2 (leaking): the `memguard_leak_state` gauge's value.
    pub fn level(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Suspect => 1,
            Self::Leaking => 2,
        }
    }

    /// `ok`, `suspect` or `leaking`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Suspect => "suspect",
            Self::Leaking => "leaking",
        }
    }
}

impl fmt::Display for LeakState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The detector's limits. Every field has a unit in its name or its doc; [`Default`] is tuned
/// for one sample a second and is what the crate documentation's numbers were measured with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeakConfig {
    /// Which counter is work. Default: requests.
    pub work_counter: WorkCounter,
    /// Samples kept, and the longest window evaluated. Default 3600 (1 h at 1 s).
    pub window_samples: usize,
    /// The shortest window evaluated, in samples. Default 60 (1 min at 1 s).
    pub shortest_window_samples: usize,
    /// Each window is this many times the previous one, up to `window_samples`.
    /// Default 4: windows of 60, 240, 960 and 3600 samples.
    pub scale_factor: usize,
    /// Fewest samples a window is evaluated on. Default 30.
    pub min_samples: usize,
    /// A window of more samples is reduced to at most this many points (medians of equal
    /// consecutive blocks) before the O(n²) statistics. Default 120.
    pub max_points: usize,
    /// A window with less work than this (units of `work_counter`), or whose last third has
    /// less than a third of it, gives no verdict. Default 1000.
    pub min_work_per_window: u64,
    /// Theil–Sen bytes per unit of work to be `suspect`. Default 16.
    pub suspect_bytes_per_work: f64,
    /// Theil–Sen bytes per unit of work to be `leaking`. Default 32.
    pub leaking_bytes_per_work: f64,
    /// Mann–Kendall confidence (1 − one-sided p) of an upward trend to be `suspect`.
    /// Default 0.99.
    pub suspect_confidence: f64,
    /// Mann–Kendall confidence to be `leaking`. Default 0.999.
    pub leaking_confidence: f64,
    /// Fitted growth over the window (bytes per work × work), in bytes, to be `suspect`; it
    /// must also exceed the largest fall of the heap in the window. Default 8 MiB.
    pub suspect_growth_bytes: u64,
    /// Fitted growth over the window, in bytes, to be `leaking`. Default 16 MiB.
    pub leaking_growth_bytes: u64,
    /// The slope over the last third of the window must be at least this fraction of the
    /// slope over the whole window, or the growth has levelled off (warm-up, a one-time
    /// step). Default 0.5.
    pub plateau_ratio: f64,
    /// If a shorter window's 95 % upper bound on its slope is below this fraction of a longer
    /// window's slope, the growth the longer window sees has stopped. Default 0.75.
    pub stopped_ratio: f64,
    /// The floor (minimum) of the last third of the window must be above the floor of the
    /// first third by at least this fraction of the fitted growth, or the heap is oscillating
    /// (sawtooth) rather than rising. Default 0.25.
    pub floor_rise_ratio: f64,
    /// Consecutive `suspect`-or-worse assessments to enter `suspect`. Default 3.
    pub suspect_after: u32,
    /// Consecutive `leaking` assessments to enter `leaking`. Default 10.
    pub leaking_after: u32,
    /// Consecutive `ok` assessments to go back to `ok` from `suspect` or `leaking`.
    /// Default 30.
    pub clear_after: u32,
    /// The memory limit, in bytes, that time to exhaustion is computed against (a container
    /// limit, say). `None`: no time to exhaustion.
    pub memory_limit_bytes: Option<u64>,
}

impl Default for LeakConfig {
    fn default() -> Self {
        Self {
            work_counter: WorkCounter::Requests,
            window_samples: 3600,
            shortest_window_samples: 60,
            scale_factor: 4,
            min_samples: 30,
            max_points: 120,
            min_work_per_window: 1000,
            suspect_bytes_per_work: 16.0,
            leaking_bytes_per_work: 32.0,
            suspect_confidence: 0.99,
            leaking_confidence: 0.999,
            suspect_growth_bytes: 8 << 20,
            leaking_growth_bytes: 16 << 20,
            plateau_ratio: 0.5,
            stopped_ratio: 0.75,
            floor_rise_ratio: 0.25,
            suspect_after: 3,
            leaking_after: 10,
            clear_after: 30,
            memory_limit_bytes: None,
        }
    }
}

impl LeakConfig {
    /// Checks every limit; the detector is built only from a valid configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        if self.window_samples > WINDOW_SAMPLES_MAX {
            return bad("window_samples", "exceeds WINDOW_SAMPLES_MAX (86400)");
        }
        if self.min_samples < MIN_SAMPLES_MIN {
            return bad("min_samples", "below MIN_SAMPLES_MIN (8)");
        }
        if self.shortest_window_samples < self.min_samples {
            return bad("shortest_window_samples", "below min_samples");
        }
        if self.window_samples < self.shortest_window_samples {
            return bad("window_samples", "below shortest_window_samples");
        }
        if self.scale_factor < 2 {
            return bad("scale_factor", "must be at least 2");
        }
        if self.max_points < MIN_SAMPLES_MIN || self.max_points > MAX_POINTS_MAX {
            return bad(
                "max_points",
                "must be within MIN_SAMPLES_MIN..=MAX_POINTS_MAX (8..=512)",
            );
        }
        for (field, v) in [
            ("suspect_bytes_per_work", self.suspect_bytes_per_work),
            ("leaking_bytes_per_work", self.leaking_bytes_per_work),
        ] {
            if !v.is_finite() || v < 0.0 {
                return bad(field, "must be a finite number of bytes, at least 0");
            }
        }
        for (field, v) in [
            ("suspect_confidence", self.suspect_confidence),
            ("leaking_confidence", self.leaking_confidence),
            ("plateau_ratio", self.plateau_ratio),
            ("stopped_ratio", self.stopped_ratio),
            ("floor_rise_ratio", self.floor_rise_ratio),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return bad(field, "must be within 0..=1");
            }
        }
        if self.leaking_bytes_per_work < self.suspect_bytes_per_work {
            return bad("leaking_bytes_per_work", "below suspect_bytes_per_work");
        }
        if self.leaking_confidence < self.suspect_confidence {
            return bad("leaking_confidence", "below suspect_confidence");
        }
        if self.leaking_growth_bytes < self.suspect_growth_bytes {
            return bad("leaking_growth_bytes", "below suspect_growth_bytes");
        }
        if self.suspect_after == 0 || self.leaking_after == 0 || self.clear_after == 0 {
            return bad(
                "suspect_after/leaking_after/clear_after",
                "must be at least 1",
            );
        }
        if self.memory_limit_bytes == Some(0) {
            return bad("memory_limit_bytes", "must be positive when set");
        }
        Ok(())
    }

    /// The nominal lengths of the windows evaluated, shortest first.
    pub fn windows(&self) -> Vec<usize> {
        let mut out = Vec::new();
        let mut n = self.shortest_window_samples.max(1);
        while n < self.window_samples {
            out.push(n);
            n = n.saturating_mul(self.scale_factor.max(2));
        }
        out.push(self.window_samples);
        out
    }
}

/// Why an assessment came out as it did: the first check that failed, or the growth found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reason {
    /// Fewer samples than `min_samples` since start or reset; no verdict yet.
    Warming { samples: usize, needed: usize },
    /// Less work than `min_work_per_window` in every window; the previous state is kept.
    Idle { work: u64, needed: u64 },
    /// A counter or the clock went backwards (a restart); the window was cleared.
    Reset,
    /// No significant upward trend (Mann–Kendall confidence below the threshold).
    NoTrend { confidence: f64, needed: f64 },
    /// Growing, but by fewer bytes per unit of work than the threshold.
    SlowGrowth { bytes_per_work: f64, needed: f64 },
    /// The fitted growth is smaller than the threshold or than what the heap gave back in the
    /// same window (sawtooth, noise).
    SmallGrowth {
        growth_bytes: f64,
        needed_bytes: f64,
    },
    /// The recent slope is well below the window's: growth has levelled off (warm-up, step).
    Plateau {
        recent_bytes_per_work: f64,
        bytes_per_work: f64,
    },
    /// A shorter, more recent window is confident (95 %) that the heap now grows by less than
    /// `stopped_ratio` of this window's slope: the growth has stopped.
    Stopped {
        window_samples: usize,
        upper_bytes_per_work: f64,
        bytes_per_work: f64,
    },
    /// The heap's floor is not rising with its average (sawtooth, noise, one-off spike).
    FloorFlat {
        floor_rise_bytes: f64,
        needed_bytes: f64,
    },
    /// Sustained growth that passed every check of the reported state.
    Growing {
        bytes_per_work: f64,
        growth_bytes: f64,
    },
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Warming { samples, needed } => {
                write!(f, "warming up: {samples} of {needed} samples")
            }
            Self::Idle { work, needed } => {
                write!(
                    f,
                    "idle: {work} units of work in the window, {needed} needed; state kept"
                )
            }
            Self::Reset => {
                f.write_str("counters or clock went backwards (restart); window cleared")
            }
            Self::NoTrend { confidence, needed } => {
                write!(
                    f,
                    "no significant upward trend (confidence {confidence:.4} < {needed})"
                )
            }
            Self::SlowGrowth {
                bytes_per_work,
                needed,
            } => {
                write!(f, "growth {bytes_per_work:.1} B/work below {needed} B/work")
            }
            Self::SmallGrowth {
                growth_bytes,
                needed_bytes,
            } => write!(
                f,
                "growth {} smaller than {} (threshold or largest fall in the window)",
                Bytes(growth_bytes),
                Bytes(needed_bytes)
            ),
            Self::Plateau {
                recent_bytes_per_work,
                bytes_per_work,
            } => write!(
                f,
                "levelled off: recent {recent_bytes_per_work:.1} B/work vs {bytes_per_work:.1} B/work over the window (warm-up or step)"
            ),
            Self::Stopped {
                window_samples,
                upper_bytes_per_work,
                bytes_per_work,
            } => write!(
                f,
                "stopped: the last {window_samples} samples grow at most {upper_bytes_per_work:.1} B/work (95 %) vs {bytes_per_work:.1} B/work over the window"
            ),
            Self::FloorFlat {
                floor_rise_bytes,
                needed_bytes,
            } => write!(
                f,
                "floor rose {} of {} needed (sawtooth or noise)",
                Bytes(floor_rise_bytes),
                Bytes(needed_bytes)
            ),
            Self::Growing {
                bytes_per_work,
                growth_bytes,
            } => write!(
                f,
                "heap grows {bytes_per_work:.1} B/work, {} over the window, floor rising",
                Bytes(growth_bytes)
            ),
        }
    }
}

/// Formats a byte count as B, KiB, MiB or GiB.
#[derive(Debug, Clone, Copy)]
pub struct Bytes(pub f64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        let a = v.abs();
        if a >= (1u64 << 30) as f64 {
            write!(f, "{:.2} GiB", v / (1u64 << 30) as f64)
        } else if a >= (1u64 << 20) as f64 {
            write!(f, "{:.1} MiB", v / (1u64 << 20) as f64)
        } else if a >= 1024.0 {
            write!(f, "{:.1} KiB", v / 1024.0)
        } else {
            write!(f, "{v:.0} B")
        }
    }
}

/// The statistics of one window, as last evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowReport {
    /// Samples in the window.
    pub samples: usize,
    /// Points the statistics ran on (block medians when `samples > max_points`).
    pub points: usize,
    /// Seconds from the window's first sample to its last.
    pub span_s: f64,
    /// Units of work done in the window.
    pub work: u64,
    /// Theil–Sen slope of heap bytes against cumulative work.
    pub bytes_per_work: f64,
    /// One-sided 95 % upper confidence bound of `bytes_per_work`.
    pub bytes_per_work_upper: f64,
    /// Theil–Sen slope of heap bytes against work over the last third of the window.
    pub recent_bytes_per_work: f64,
    /// Theil–Sen slope of heap bytes against work over the middle third of the window.
    pub middle_bytes_per_work: f64,
    /// Theil–Sen slope of heap bytes against time.
    pub bytes_per_second: f64,
    /// Mann–Kendall confidence of an upward trend, in [0, 1].
    pub confidence: f64,
    /// `bytes_per_work × work`: the growth the fit attributes to the window.
    pub growth_bytes: f64,
    /// Floor (minimum) of the last third minus floor of the first third.
    pub floor_rise_bytes: f64,
    /// Floor of the last third minus floor of the middle third.
    pub recent_floor_rise_bytes: f64,
    /// Largest fall of the heap within the window (maximum drawdown of its points).
    pub released_bytes: f64,
    /// The larger of `released_bytes` and the next longer window's: growth must exceed it.
    pub context_released_bytes: f64,
    /// The shorter window with the lowest `bytes_per_work_upper`, as (samples, bound): if it
    /// is below `stopped_ratio × bytes_per_work`, the growth this window sees has stopped.
    pub shorter: Option<(usize, f64)>,
    /// This window's instantaneous verdict; `None` when it had too little work.
    pub verdict: Option<LeakState>,
    /// Why.
    pub reason: Reason,
}

/// What the detector concluded after a sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Assessment {
    /// The sample's time.
    pub at_ms: u64,
    /// The state after hysteresis: what to alert on.
    pub state: LeakState,
    /// The verdict of this sample alone (worst window), before hysteresis; `None` when no
    /// window had enough samples and work to judge.
    pub instant: Option<LeakState>,
    /// Theil–Sen bytes per unit of work in the reported window.
    pub bytes_per_work: f64,
    /// Theil–Sen bytes per second in the reported window.
    pub bytes_per_second: f64,
    /// Mann–Kendall confidence of an upward trend in the reported window, in [0, 1]; 0 when
    /// there is no verdict.
    pub confidence: f64,
    /// Seconds until `memory_limit_bytes` at `bytes_per_second`, from the larger of resident
    /// and allocated bytes; only when the state is not `ok` and the heap grows.
    pub time_to_exhaustion_s: Option<f64>,
    /// Samples in the reported window: the window with the worst verdict (the fastest-growing
    /// one among equals), or the longest window when all are `ok`.
    pub window_samples: usize,
    /// Fitted growth over the reported window, in bytes.
    pub growth_bytes: f64,
    /// Why, in a few words (its `Display` is the human text).
    pub reason: Reason,
}

impl Assessment {
    fn empty(at_ms: u64, state: LeakState, reason: Reason) -> Self {
        Self {
            at_ms,
            state,
            instant: None,
            bytes_per_work: 0.0,
            bytes_per_second: 0.0,
            confidence: 0.0,
            time_to_exhaustion_s: None,
            window_samples: 0,
            growth_bytes: 0.0,
            reason,
        }
    }
}

impl fmt::Display for Assessment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.state)?;
        if let Some(instant) = self.instant.filter(|i| *i != self.state) {
            write!(f, " (now {instant})")?;
        }
        write!(
            f,
            ": {:.1} B/work, {}/s, confidence {:.4} over {} samples",
            self.bytes_per_work,
            Bytes(self.bytes_per_second),
            self.confidence,
            self.window_samples
        )?;
        if let Some(t) = self.time_to_exhaustion_s {
            write!(f, ", limit in {t:.0} s")?;
        }
        write!(f, " — {}", self.reason)
    }
}

/// One nested window: its nominal length and its last evaluation.
#[derive(Debug, Clone)]
struct Window {
    nominal: usize,
    block: usize,
    report: Option<WindowReport>,
}

/// Preallocated buffers for the statistics, so that `observe` allocates nothing.
#[derive(Debug, Clone)]
struct Scratch {
    xs: Vec<f64>,
    ts: Vec<f64>,
    ys: Vec<f64>,
    trend: stats::TrendScratch,
    block: Vec<f64>,
}

/// Hysteresis counters: consecutive instantaneous verdicts.
#[derive(Debug, Clone, Copy, Default)]
struct Streaks {
    suspect: u32,
    leaking: u32,
    ok: u32,
}

/// The on-line leak detector. Feed it one [`Sample`] at a time with
/// [`observe`](Self::observe); it keeps the last `window_samples` samples in a fixed ring
/// and allocates nothing after construction.
#[derive(Debug, Clone)]
pub struct LeakDetector {
    config: LeakConfig,
    samples: Ring<Sample>,
    /// Samples observed since start or reset; sets when each window is re-evaluated.
    seq: u64,
    windows: Vec<Window>,
    scratch: Scratch,
    state: LeakState,
    streaks: Streaks,
    last: Assessment,
}

impl LeakDetector {
    /// A detector with `config`, or the first limit that is out of range.
    pub fn new(config: LeakConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let points = config.max_points;
        let block = config.window_samples.div_ceil(points).max(1);
        Ok(Self {
            samples: Ring::new(config.window_samples),
            seq: 0,
            windows: config
                .windows()
                .into_iter()
                .map(|nominal| Window {
                    nominal,
                    block: 1,
                    report: None,
                })
                .collect(),
            scratch: Scratch {
                xs: Vec::with_capacity(points),
                ts: Vec::with_capacity(points),
                ys: Vec::with_capacity(points),
                trend: stats::TrendScratch::with_points(points),
                block: Vec::with_capacity(block),
            },
            state: LeakState::Ok,
            streaks: Streaks::default(),
            last: Assessment::empty(
                0,
                LeakState::Ok,
                Reason::Warming {
                    samples: 0,
                    needed: config.min_samples,
                },
            ),
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LeakConfig {
        &self.config
    }

    /// The current state (after hysteresis).
    pub fn state(&self) -> LeakState {
        self.state
    }

    /// The last assessment (before any sample: `ok`, warming up).
    pub fn assessment(&self) -> &Assessment {
        &self.last
    }

    /// The samples held, oldest first.
    pub fn samples(&self) -> &Ring<Sample> {
        &self.samples
    }

    /// Each window's last evaluation, shortest window first (`None`: not evaluated, too few
    /// samples).
    pub fn windows(&self) -> impl Iterator<Item = Option<&WindowReport>> + '_ {
        self.windows.iter().map(|w| w.report.as_ref())
    }

    /// Forgets every sample and streak; keeps the state (there is no evidence either way).
    pub fn clear(&mut self) {
        self.samples.clear();
        self.seq = 0;
        self.streaks = Streaks::default();
        for w in &mut self.windows {
            w.report = None;
            w.block = 1;
        }
    }

    /// Takes one sample and returns the assessment after it. Never panics; O(windows ×
    /// max_points²) at worst, and each window longer than `max_points` samples is only
    /// re-evaluated when a new block of samples completes.
    pub fn observe(&mut self, sample: Sample) -> Assessment {
        let mut reset = false;
        if let Some(prev) = self.samples.last()
            && (sample.at_ms < prev.at_ms
                || sample.requests_total < prev.requests_total
                || sample.payments_total < prev.payments_total)
        {
            self.clear();
            reset = true;
        }
        self.samples.push(sample);
        self.seq = self.seq.wrapping_add(1);
        self.evaluate_windows();

        let mut best: Option<WindowReport> = None;
        let mut idle: Option<WindowReport> = None;
        for report in self.windows.iter().filter_map(|w| w.report) {
            let Some(verdict) = report.verdict else {
                idle = idle.or(Some(report));
                continue;
            };
            let better = match best {
                None => true,
                Some(ref b) => {
                    let bv = b.verdict.unwrap_or(LeakState::Ok);
                    verdict > bv
                        || (verdict == bv
                            && if verdict == LeakState::Ok {
                                report.samples >= b.samples
                            } else {
                                report.bytes_per_work > b.bytes_per_work
                            })
                }
            };
            if better {
                best = Some(report);
            }
        }

        let instant = best.and_then(|b| b.verdict);
        if let Some(v) = instant {
            self.step_hysteresis(v);
        }
        let state = self.state;
        let mut a = match best {
            Some(b) => Assessment {
                at_ms: sample.at_ms,
                state,
                instant,
                bytes_per_work: b.bytes_per_work,
                bytes_per_second: b.bytes_per_second,
                confidence: b.confidence,
                time_to_exhaustion_s: None,
                window_samples: b.samples,
                growth_bytes: b.growth_bytes,
                reason: b.reason,
            },
            None => {
                let reason = if reset {
                    Reason::Reset
                } else if let Some(i) = idle {
                    i.reason
                } else {
                    Reason::Warming {
                        samples: self.samples.len(),
                        needed: self.config.min_samples,
                    }
                };
                Assessment::empty(sample.at_ms, state, reason)
            }
        };
        if state != LeakState::Ok
            && a.bytes_per_second > 0.0
            && let Some(limit) = self.config.memory_limit_bytes
        {
            let used = sample.resident_bytes.max(sample.heap_allocated_bytes);
            let left = limit.saturating_sub(used) as f64;
            let t = left / a.bytes_per_second;
            a.time_to_exhaustion_s = t.is_finite().then_some(t);
        }
        self.last = a;
        a
    }

    fn step_hysteresis(&mut self, v: LeakState) {
        let s = &mut self.streaks;
        let bump = |c: u32, on: bool| if on { c.saturating_add(1) } else { 0 };
        s.leaking = bump(s.leaking, v == LeakState::Leaking);
        s.suspect = bump(s.suspect, v >= LeakState::Suspect);
        s.ok = bump(s.ok, v == LeakState::Ok);
        let c = &self.config;
        self.state = match self.state {
            LeakState::Ok | LeakState::Suspect if s.leaking >= c.leaking_after => {
                LeakState::Leaking
            }
            LeakState::Ok if s.suspect >= c.suspect_after => LeakState::Suspect,
            LeakState::Suspect | LeakState::Leaking if s.ok >= c.clear_after => LeakState::Ok,
            unchanged => unchanged,
        };
    }

    fn evaluate_windows(&mut self) {
        let len = self.samples.len();
        let mut previous_nominal = 0;
        for w in &mut self.windows {
            let active = len > previous_nominal;
            previous_nominal = w.nominal;
            let n = w.nominal.min(len);
            if !active || n < self.config.min_samples {
                w.report = None;
                continue;
            }
            let block = n.div_ceil(self.config.max_points).max(1);
            let due =
                w.report.is_none() || w.block != block || self.seq.is_multiple_of(block as u64);
            if due {
                w.block = block;
                w.report = Some(evaluate(
                    &self.samples,
                    &self.config,
                    (n / block) * block,
                    block,
                    &mut self.scratch,
                ));
            }
        }
        // Shortest first: the lowest upper bound of the slope among shorter windows.
        let mut shorter: Option<(usize, f64)> = None;
        for w in &mut self.windows {
            if let Some(r) = w.report.as_mut() {
                r.shorter = shorter;
                if r.verdict.is_some() && shorter.is_none_or(|(_, u)| r.bytes_per_work_upper < u) {
                    shorter = Some((r.samples, r.bytes_per_work_upper));
                }
            }
        }
        // Longest first: each window's growth must exceed the next longer one's falls.
        let mut longer_released = 0.0_f64;
        for w in self.windows.iter_mut().rev() {
            if let Some(r) = w.report.as_mut() {
                judge(r, &self.config, longer_released);
                longer_released = r.released_bytes;
            }
        }
    }
}

/// Evaluates the last `n` samples (`n` a multiple of `block`, at most the ring's length).
fn evaluate(
    samples: &Ring<Sample>,
    cfg: &LeakConfig,
    n: usize,
    block: usize,
    sc: &mut Scratch,
) -> WindowReport {
    let work_of = |s: &Sample| cfg.work_counter.of(s);
    let len = samples.len();
    let start = len.saturating_sub(n);
    let (Some(first), Some(last)) = (samples.get(start), samples.get(len.saturating_sub(1))) else {
        return idle_report(0, 0, 0.0, cfg);
    };
    let work = work_of(last).saturating_sub(work_of(first));
    let span_s = last.at_ms.saturating_sub(first.at_ms) as f64 / 1000.0;
    // The verdict is about now: the last third of the window needs its share of work too.
    let recent_work = samples
        .get(len.saturating_sub(n / 3 + 1))
        .map_or(0, |s| work_of(last).saturating_sub(work_of(s)));
    if work < cfg.min_work_per_window || recent_work < cfg.min_work_per_window / 3 {
        return idle_report(n, work, span_s, cfg);
    }

    sc.xs.clear();
    sc.ts.clear();
    sc.ys.clear();
    let points = n / block.max(1);
    for i in 0..points {
        let b0 = start + i * block;
        sc.block.clear();
        sc.block.extend(
            (b0..b0 + block)
                .filter_map(|k| samples.get(k))
                .map(|s| s.heap_allocated_bytes as f64),
        );
        let (Some(y), Some(mid)) = (
            stats::median_in_place(&mut sc.block),
            samples.get(b0 + block / 2),
        ) else {
            continue;
        };
        sc.xs
            .push(work_of(mid).saturating_sub(work_of(first)) as f64);
        sc.ts
            .push(mid.at_ms.saturating_sub(first.at_ms) as f64 / 1000.0);
        sc.ys.push(y);
    }
    let p = sc.ys.len();
    let trend = stats::trend(&sc.xs, &sc.ts, &sc.ys, SLOPE_UPPER_Z, &mut sc.trend);
    let Some(bytes_per_work) = trend.slope_x else {
        return idle_report(n, work, span_s, cfg);
    };
    let bytes_per_work_upper = trend.slope_x_upper.unwrap_or(bytes_per_work);
    let bytes_per_second = trend.slope_t.unwrap_or(0.0);
    let confidence = trend.mk.upward_confidence();
    let recent = (p / 3).max(3).min(p);
    let recent_bytes_per_work = stats::theil_sen(
        &sc.xs[p - recent..],
        &sc.ys[p - recent..],
        sc.trend.slopes(),
    )
    .unwrap_or(0.0);
    let middle = (p.saturating_sub(2 * recent))..(p - recent);
    let middle_bytes_per_work =
        stats::theil_sen(&sc.xs[middle.clone()], &sc.ys[middle], sc.trend.slopes()).unwrap_or(0.0);
    let third = (p / 3).max(1).min(p);
    let floor = |ys: &[f64]| ys.iter().copied().fold(f64::INFINITY, f64::min);
    let last_floor = floor(&sc.ys[p - third..]);
    let floor_rise_bytes = last_floor - floor(&sc.ys[..third]);
    let recent_floor_rise_bytes = last_floor - floor(&sc.ys[third.min(p - third)..p - third]);
    let released_bytes = stats::max_drawdown(&sc.ys);
    let growth_bytes = bytes_per_work * work as f64;

    WindowReport {
        samples: n,
        points: p,
        span_s,
        work,
        bytes_per_work,
        bytes_per_work_upper,
        recent_bytes_per_work,
        middle_bytes_per_work,
        bytes_per_second,
        confidence,
        growth_bytes,
        floor_rise_bytes,
        recent_floor_rise_bytes,
        released_bytes,
        context_released_bytes: released_bytes,
        shorter: None,
        verdict: Some(LeakState::Ok),
        reason: Reason::NoTrend {
            confidence,
            needed: cfg.suspect_confidence,
        },
    }
}

/// Sets `r.verdict` and `r.reason` from its statistics; `context_released` is the largest fall
/// of the heap in the next longer window (growth smaller than what the process has recently
/// given back is not yet a leak).
fn judge(r: &mut WindowReport, cfg: &LeakConfig, context_released: f64) {
    if r.verdict.is_none() {
        return;
    }
    r.context_released_bytes = r.released_bytes.max(context_released);
    let r0 = *r;
    let check =
        |bpw_needed: f64, confidence_needed: f64, growth_needed: u64| -> Result<(), Reason> {
            if r0.confidence < confidence_needed {
                return Err(Reason::NoTrend {
                    confidence: r0.confidence,
                    needed: confidence_needed,
                });
            }
            if r0.bytes_per_work < bpw_needed {
                return Err(Reason::SlowGrowth {
                    bytes_per_work: r0.bytes_per_work,
                    needed: bpw_needed,
                });
            }
            let needed_bytes = (growth_needed as f64).max(r0.context_released_bytes);
            if r0.growth_bytes < needed_bytes {
                return Err(Reason::SmallGrowth {
                    growth_bytes: r0.growth_bytes,
                    needed_bytes,
                });
            }
            let earlier = r0.bytes_per_work.max(r0.middle_bytes_per_work);
            if r0.recent_bytes_per_work < cfg.plateau_ratio * earlier {
                return Err(Reason::Plateau {
                    recent_bytes_per_work: r0.recent_bytes_per_work,
                    bytes_per_work: earlier,
                });
            }
            if let Some((window_samples, upper_bytes_per_work)) = r0.shorter
                && upper_bytes_per_work < cfg.stopped_ratio * r0.bytes_per_work
            {
                return Err(Reason::Stopped {
                    window_samples,
                    upper_bytes_per_work,
                    bytes_per_work: r0.bytes_per_work,
                });
            }
            // A linear rise lifts the floor by 2/3 of the growth from the first third to the last,
            // and by 1/3 from the middle third to the last; ask for `floor_rise_ratio` of each.
            let floor_needed = cfg.floor_rise_ratio * r0.growth_bytes;
            if r0.floor_rise_bytes < floor_needed {
                return Err(Reason::FloorFlat {
                    floor_rise_bytes: r0.floor_rise_bytes,
                    needed_bytes: floor_needed,
                });
            }
            if r0.recent_floor_rise_bytes < floor_needed / 2.0 {
                return Err(Reason::FloorFlat {
                    floor_rise_bytes: r0.recent_floor_rise_bytes,
                    needed_bytes: floor_needed / 2.0,
                });
            }
            Ok(())
        };
    let growing = Reason::Growing {
        bytes_per_work: r0.bytes_per_work,
        growth_bytes: r0.growth_bytes,
    };
    let (verdict, reason) = match check(
        cfg.leaking_bytes_per_work,
        cfg.leaking_confidence,
        cfg.leaking_growth_bytes,
    ) {
        Ok(()) => (LeakState::Leaking, growing),
        Err(_) => match check(
            cfg.suspect_bytes_per_work,
            cfg.suspect_confidence,
            cfg.suspect_growth_bytes,
        ) {
            Ok(()) => (LeakState::Suspect, growing),
            Err(why) => (LeakState::Ok, why),
        },
    };
    r.verdict = Some(verdict);
    r.reason = reason;
}

fn idle_report(samples: usize, work: u64, span_s: f64, cfg: &LeakConfig) -> WindowReport {
    WindowReport {
        samples,
        points: 0,
        span_s,
        work,
        bytes_per_work: 0.0,
        bytes_per_work_upper: 0.0,
        recent_bytes_per_work: 0.0,
        middle_bytes_per_work: 0.0,
        bytes_per_second: 0.0,
        confidence: 0.0,
        growth_bytes: 0.0,
        floor_rise_bytes: 0.0,
        recent_floor_rise_bytes: 0.0,
        released_bytes: 0.0,
        context_released_bytes: 0.0,
        shorter: None,
        verdict: None,
        reason: Reason::Idle {
            work,
            needed: cfg.min_work_per_window,
        },
    }
}

impl LeakConfig {
    /// The unit of work, for messages: `request` or `payment`.
    pub fn work_unit(&self) -> &'static str {
        self.work_counter.unit()
    }
}

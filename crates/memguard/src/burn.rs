//! The failure-rate alert: Google SRE's multiwindow burn-rate rule on cumulative counters.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::ConfigError;
use crate::ring::Ring;

/// Longest window the alert accepts, in seconds (one day): its ring holds one bucket a second.
pub const LONG_WINDOW_S_MAX: u32 = 86_400;

/// The burn-rate alert's limits.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BurnRateConfig {
    /// The success objective, as a fraction: the error budget is `1 − slo_target`.
    /// Default 0.999 (one failed payment in a thousand).
    pub slo_target: f64,
    /// Fire when both windows burn the budget at least this many times faster than
    /// sustainable. Default 14.4 (Google's page-now rate: 2 % of a 30-day budget in an hour).
    pub burn_rate_threshold: f64,
    /// The short window, in seconds: makes the alert fire and resolve quickly. Default 60.
    pub short_window_s: u32,
    /// The long window, in seconds: makes a brief blip not fire. Default 600.
    pub long_window_s: u32,
    /// Fewest events (successes + failures) in the short window for it to count as evidence;
    /// below, the state is kept. Default 100.
    pub min_events: u64,
    /// Seconds the short window must stay below the threshold before a firing alert
    /// resolves. Default 60.
    pub resolve_after_s: u32,
}

impl Default for BurnRateConfig {
    fn default() -> Self {
        Self {
            slo_target: 0.999,
            burn_rate_threshold: 14.4,
            short_window_s: 60,
            long_window_s: 600,
            min_events: 100,
            resolve_after_s: 60,
        }
    }
}

impl BurnRateConfig {
    /// Checks every limit.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        if !(self.slo_target > 0.0 && self.slo_target < 1.0) {
            return bad("slo_target", "must be strictly between 0 and 1");
        }
        if !(self.burn_rate_threshold.is_finite() && self.burn_rate_threshold > 0.0) {
            return bad("burn_rate_threshold", "must be a positive number");
        }
        if self.short_window_s == 0 {
            return bad("short_window_s", "must be at least 1");
        }
        if self.long_window_s < self.short_window_s {
            return bad("long_window_s", "below short_window_s");
        }
        if self.long_window_s > LONG_WINDOW_S_MAX {
            return bad("long_window_s", "exceeds LONG_WINDOW_S_MAX (86400)");
        }
        Ok(())
    }

    /// The failure ratio at which a window fires: `burn_rate_threshold × (1 − slo_target)`.
    pub fn failure_ratio_threshold(&self) -> f64 {
        self.burn_rate_threshold * (1.0 - self.slo_target)
    }
}

/// Whether the alert is firing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AlertState {
    /// Not firing.
    #[default]
    Ok,
    /// Both windows burn faster than the threshold (or did, and the short window has not yet
    /// been below it for `resolve_after_s`).
    Firing,
}

impl fmt::Display for AlertState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ok => "ok",
            Self::Firing => "firing",
        })
    }
}

/// Counts and rates over one window.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct WindowRate {
    /// The window, in seconds.
    pub window_s: u32,
    /// Successes plus failures in the window.
    pub events: u64,
    /// Failures in the window.
    pub failures: u64,
    /// `failures / events`, 0 with no events.
    pub failure_ratio: f64,
    /// `failure_ratio / (1 − slo_target)`: 1 spends the budget exactly over the SLO period.
    pub burn_rate: f64,
}

/// The alert's state after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct BurnRateStatus {
    /// The observation's time.
    pub at_ms: u64,
    /// Firing or not, after hysteresis.
    pub state: AlertState,
    /// Whether this observation changed `state`.
    pub changed: bool,
    /// The short window.
    pub short: WindowRate,
    /// The long window.
    pub long: WindowRate,
}

impl fmt::Display for BurnRateStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {:.2} % failed over {} s ({:.1}x burn), {:.2} % over {} s ({:.1}x burn)",
            self.state,
            self.short.failure_ratio * 100.0,
            self.short.window_s,
            self.short.burn_rate,
            self.long.failure_ratio * 100.0,
            self.long.window_s,
            self.long.burn_rate,
        )
    }
}

/// Events counted in one second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bucket {
    second: u64,
    successes: u64,
    failures: u64,
}

/// The multiwindow burn-rate alert. Feed it cumulative success and failure counters with
/// [`observe`](Self::observe), as often as you like (once a second is the design point); it
/// keeps one bucket per second of the long window and nothing else.
#[derive(Debug, Clone)]
pub struct BurnRateAlert {
    config: BurnRateConfig,
    buckets: Ring<Bucket>,
    previous: Option<(u64, u64)>,
    state: AlertState,
    /// When the short window first went below the threshold while firing (ms).
    below_since_ms: Option<u64>,
    last: BurnRateStatus,
}

impl BurnRateAlert {
    /// An alert with `config`, or the first limit out of range.
    pub fn new(config: BurnRateConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let window = |window_s| WindowRate {
            window_s,
            ..WindowRate::default()
        };
        Ok(Self {
            buckets: Ring::new(config.long_window_s as usize),
            previous: None,
            state: AlertState::Ok,
            below_since_ms: None,
            last: BurnRateStatus {
                at_ms: 0,
                state: AlertState::Ok,
                changed: false,
                short: window(config.short_window_s),
                long: window(config.long_window_s),
            },
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BurnRateConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> AlertState {
        self.state
    }

    /// The last status.
    pub fn status(&self) -> &BurnRateStatus {
        &self.last
    }

    /// Takes the cumulative `successes_total` and `failures_total` at `at_ms`. A counter that
    /// goes down is taken as a restart (its new value is the increase, as Prometheus'
    /// `increase()` does); the first observation only sets the starting point. Never panics.
    pub fn observe(
        &mut self,
        at_ms: u64,
        successes_total: u64,
        failures_total: u64,
    ) -> BurnRateStatus {
        let (ds, df) = match self.previous {
            None => (0, 0),
            Some((ps, pf)) => (
                successes_total.checked_sub(ps).unwrap_or(successes_total),
                failures_total.checked_sub(pf).unwrap_or(failures_total),
            ),
        };
        self.previous = Some((successes_total, failures_total));
        let second = at_ms / 1000;
        match self.buckets.last_mut() {
            // Same second, or the clock went back: add to the newest bucket.
            Some(b) if b.second >= second => {
                b.successes = b.successes.saturating_add(ds);
                b.failures = b.failures.saturating_add(df);
            }
            _ => {
                self.buckets.push(Bucket {
                    second,
                    successes: ds,
                    failures: df,
                });
            }
        }
        let now = self.buckets.last().map_or(second, |b| b.second);
        let short = self.window(now, self.config.short_window_s);
        let long = self.window(now, self.config.long_window_s);

        let threshold = self.config.burn_rate_threshold;
        let evidence = short.events >= self.config.min_events;
        let before = self.state;
        match self.state {
            AlertState::Ok => {
                if evidence && short.burn_rate >= threshold && long.burn_rate >= threshold {
                    self.state = AlertState::Firing;
                    self.below_since_ms = None;
                }
            }
            AlertState::Firing => {
                if !evidence {
                    // No traffic is no evidence of recovery: keep firing, restart the clock.
                    self.below_since_ms = None;
                } else if short.burn_rate >= threshold {
                    self.below_since_ms = None;
                } else {
                    let since = *self.below_since_ms.get_or_insert(at_ms);
                    if at_ms.saturating_sub(since) >= u64::from(self.config.resolve_after_s) * 1000
                    {
                        self.state = AlertState::Ok;
                        self.below_since_ms = None;
                    }
                }
            }
        }
        self.last = BurnRateStatus {
            at_ms,
            state: self.state,
            changed: self.state != before,
            short,
            long,
        };
        self.last
    }

    fn window(&self, now: u64, window_s: u32) -> WindowRate {
        // The window is the seconds (now − window_s, now]; written without a subtraction so
        // that second 0 is in it while now < window_s.
        let (mut successes, mut failures) = (0u64, 0u64);
        for b in self.buckets.iter().rev().take_while(|b| b.second.saturating_add(u64::from(window_s)) > now) {
            successes = successes.saturating_add(b.successes);
            failures = failures.saturating_add(b.failures);
        }
        let events = successes.saturating_add(failures);
        let failure_ratio = if events == 0 {
            0.0
        } else {
            failures as f64 / events as f64
        };
        WindowRate {
            window_s,
            events,
            failures,
            failure_ratio,
            burn_rate: failure_ratio / (1.0 - self.config.slo_target),
        }
    }
}

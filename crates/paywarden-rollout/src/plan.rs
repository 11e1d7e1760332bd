//! Rollout plans: the steps a canary walks, their bake times, and the judge's settings.
//!
//! A step sets the canary's share of traffic (Argo's `setWeight`) and holds it for a bake time
//! (Argo's `pause`) while the judge compares canary and baseline (Argo's `analysis`). Built-in
//! plans:
//!
//! | plan | steps (weight %) | bake per step | step timeout | min requests per side |
//! |---|---|---|---|---|
//! | `default` | 1, 5, 25, 50, 100 | 30 s | 5 min | 200 |
//! | `fast` (tests, drills) | 1, 5, 25, 50, 100 | 3 s | 90 s | 50 |
//!
//! A plan file is TOML:
//!
//! ```toml
//! name = "cautious"
//! step_timeout = "10m"     # how long a step may wait for a conclusive verdict
//! ready_timeout = "30s"    # canary and baseline must answer /readyz within this
//! drain_timeout = "10s"    # in-flight requests to a stopping instance get this long
//! auto_rollback = true     # false (training): a failed analysis holds the step for an operator
//! allow_contract = false   # true: deploy even if the release applies a contract migration
//! [[steps]]
//! weight = 1
//! bake = "2m"
//! [[steps]]
//! weight = 100
//! bake = "5m"
//! [judge]                  # any field of JudgeConfig
//! min_requests = 500
//! ```
//!
//! Rules, each checked with an error that says what to change: 1 to [`STEPS_MAX`] steps;
//! weights strictly increasing, above 0, the last exactly 100; bake times 0 to
//! [`BAKE_MAX`]; the step timeout at least the longest bake and at most [`BAKE_MAX`]; ready and
//! drain timeouts 1 s to 10 min; judge tolerances finite and positive; the latency allowance 0
//! to [`LATENCY_ALLOWED_INCREASE_PCT_MAX`] % and 0 to [`LATENCY_ALLOWED_INCREASE_MS_MAX`] ms.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::judge::JudgeConfig;

/// Most steps in a plan.
pub const STEPS_MAX: usize = 20;
/// Longest bake time and step timeout.
pub const BAKE_MAX: Duration = Duration::from_secs(24 * 3600);
/// Bounds of the ready and drain timeouts.
pub const TIMEOUT_MIN: Duration = Duration::from_secs(1);
pub const TIMEOUT_MAX: Duration = Duration::from_secs(600);
/// Largest plan file, bytes.
pub const PLAN_BYTES_MAX: usize = 64 * 1024;
/// Largest latency allowance a plan may set: 1000 % (eleven times the baseline) and 60 s. Past
/// these the latency metric could never fail.
pub const LATENCY_ALLOWED_INCREASE_PCT_MAX: f64 = 1000.0;
pub const LATENCY_ALLOWED_INCREASE_MS_MAX: f64 = 60_000.0;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Step {
    /// The canary's share of requests, percent (0 < weight <= 100).
    pub weight_pct: f64,
    /// How long the step holds before its verdict is taken.
    #[serde(with = "humantime_serde_like")]
    pub bake: Duration,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub name: String,
    pub steps: Vec<Step>,
    /// How long a step may extend its bake while the verdict is inconclusive or marginal. At
    /// the timeout, marginal advances and inconclusive rolls back (no data is never a pass).
    #[serde(with = "humantime_serde_like")]
    pub step_timeout: Duration,
    #[serde(with = "humantime_serde_like")]
    pub ready_timeout: Duration,
    #[serde(with = "humantime_serde_like")]
    pub drain_timeout: Duration,
    /// How often the judge runs during a step (critical failures act at once).
    #[serde(with = "humantime_serde_like")]
    pub judge_interval: Duration,
    pub judge: JudgeConfig,
    /// Roll back on its own when the analysis fails (the default). Off for training: the
    /// deployment is held at its step (event `analysis_failed`) until an operator rolls back.
    pub auto_rollback: bool,
    /// Deploy a release whose pending migrations include a contract (drops, renames) although
    /// the stable release, its rollback target, cannot run on the contracted schema: the
    /// operator's explicit override of the schema gate ([`crate::schema`]), recorded in the
    /// event log and the review. Default false.
    pub allow_contract: bool,
}

mod humantime_serde_like {
    use std::time::Duration;
    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }
}

const WEIGHTS: [f64; 5] = [1.0, 5.0, 25.0, 50.0, 100.0];

impl Plan {
    /// The default plan: 1, 5, 25, 50, 100 %, 30 s each.
    pub fn default_plan() -> Plan {
        Plan {
            name: "default".into(),
            steps: WEIGHTS.iter().map(|w| Step { weight_pct: *w, bake: Duration::from_secs(30) }).collect(),
            step_timeout: Duration::from_secs(300),
            ready_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(10),
            judge_interval: Duration::from_secs(1),
            judge: JudgeConfig { min_requests: 200, ..JudgeConfig::default() },
            auto_rollback: true,
            allow_contract: false,
        }
    }

    /// The fast plan, for tests and drills: the same steps, 3 s each.
    pub fn fast() -> Plan {
        Plan {
            name: "fast".into(),
            steps: WEIGHTS.iter().map(|w| Step { weight_pct: *w, bake: Duration::from_secs(3) }).collect(),
            step_timeout: Duration::from_secs(90),
            ready_timeout: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(5),
            judge_interval: Duration::from_secs(1),
            judge: JudgeConfig { min_requests: 50, min_latency_samples: 30, ..JudgeConfig::default() },
            auto_rollback: true,
            allow_contract: false,
        }
    }

    /// `default`, `fast`, or None.
    pub fn builtin(name: &str) -> Option<Plan> {
        match name {
            "default" => Some(Plan::default_plan()),
            "fast" => Some(Plan::fast()),
            _ => None,
        }
    }

    /// Reads a plan file's text; `origin` names it in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Plan, PlanError> {
        if text.len() > PLAN_BYTES_MAX {
            return Err(PlanError(format!("{origin}: a plan file is at most {PLAN_BYTES_MAX} bytes")));
        }
        let file: PlanFile = toml::from_str(text).map_err(|e| PlanError(format!("{origin}: {e}")))?;
        let base = Plan::default_plan();
        let dur = |v: Option<String>, field: &str, default: Duration| -> Result<Duration, PlanError> {
            match v {
                None => Ok(default),
                Some(s) => humantime::parse_duration(&s)
                    .map_err(|e| PlanError(format!("{origin}: {field} = {s:?} is not a duration ({e}); write e.g. \"30s\" or \"5m\""))),
            }
        };
        let mut steps = Vec::with_capacity(file.steps.len());
        for (i, s) in file.steps.into_iter().enumerate() {
            let bake = dur(Some(s.bake), &format!("steps[{i}].bake"), Duration::ZERO)?;
            steps.push(Step { weight_pct: s.weight, bake });
        }
        let mut judge = base.judge;
        if let Some(j) = file.judge {
            judge.min_requests = j.min_requests.unwrap_or(judge.min_requests);
            judge.min_latency_samples = j.min_latency_samples.unwrap_or(judge.min_latency_samples);
            judge.error_rate_tolerance = j.error_rate_tolerance.unwrap_or(judge.error_rate_tolerance);
            judge.latency_effect_fail = j.latency_effect_fail.unwrap_or(judge.latency_effect_fail);
            judge.latency_effect_marginal = j.latency_effect_marginal.unwrap_or(judge.latency_effect_marginal);
            judge.latency_allowed_increase_pct = j.latency_allowed_increase_pct.unwrap_or(judge.latency_allowed_increase_pct);
            judge.latency_allowed_increase_ms = j.latency_allowed_increase_ms.unwrap_or(judge.latency_allowed_increase_ms);
            judge.heap_growth_fail = j.heap_growth_fail.unwrap_or(judge.heap_growth_fail);
            judge.heap_growth_marginal = j.heap_growth_marginal.unwrap_or(judge.heap_growth_marginal);
        }
        let longest = steps.iter().map(|s| s.bake).max().unwrap_or_default();
        let plan = Plan {
            name: file.name.unwrap_or_else(|| origin.to_string()),
            steps,
            step_timeout: dur(file.step_timeout, "step_timeout", base.step_timeout.max(longest))?,
            ready_timeout: dur(file.ready_timeout, "ready_timeout", base.ready_timeout)?,
            drain_timeout: dur(file.drain_timeout, "drain_timeout", base.drain_timeout)?,
            judge_interval: base.judge_interval,
            judge,
            auto_rollback: file.auto_rollback.unwrap_or(true),
            allow_contract: file.allow_contract.unwrap_or(false),
        };
        plan.validate().map_err(|e| PlanError(format!("{origin}: {}", e.0)))?;
        Ok(plan)
    }

    /// Checks the rules in the module docs.
    pub fn validate(&self) -> Result<(), PlanError> {
        let err = |m: String| Err(PlanError(m));
        if self.name.is_empty() || self.name.chars().count() > 64 || self.name.chars().any(char::is_control) {
            return err("name must be 1 to 64 printable characters".into());
        }
        if self.steps.is_empty() || self.steps.len() > STEPS_MAX {
            return err(format!("a plan has 1 to {STEPS_MAX} steps; this one has {}", self.steps.len()));
        }
        let mut last = 0.0;
        for (i, s) in self.steps.iter().enumerate() {
            if !s.weight_pct.is_finite() || s.weight_pct <= 0.0 || s.weight_pct > 100.0 {
                return err(format!("steps[{i}].weight = {} must be above 0 and at most 100", s.weight_pct));
            }
            if s.weight_pct <= last {
                return err(format!("steps[{i}].weight = {} must be above the previous step's {last}", s.weight_pct));
            }
            if s.bake > BAKE_MAX {
                return err(format!("steps[{i}].bake must be at most {}", humantime::format_duration(BAKE_MAX)));
            }
            last = s.weight_pct;
        }
        if last != 100.0 {
            return err(format!("the last step's weight must be 100 (the canary takes all traffic before promotion); it is {last}"));
        }
        let longest = self.steps.iter().map(|s| s.bake).max().unwrap_or_default();
        if self.step_timeout < longest || self.step_timeout > BAKE_MAX || self.step_timeout.is_zero() {
            return err(format!(
                "step_timeout must be at least the longest bake ({}) and at most {}",
                humantime::format_duration(longest),
                humantime::format_duration(BAKE_MAX)
            ));
        }
        for (name, d) in [("ready_timeout", self.ready_timeout), ("drain_timeout", self.drain_timeout)] {
            if d < TIMEOUT_MIN || d > TIMEOUT_MAX {
                return err(format!("{name} must be 1s to 10m"));
            }
        }
        let j = &self.judge;
        if j.min_requests == 0 || j.min_latency_samples == 0 {
            return err("judge.min_requests and judge.min_latency_samples must be at least 1 (no data is never a pass)".into());
        }
        for (name, v) in [
            ("error_rate_tolerance", j.error_rate_tolerance),
            ("latency_effect_fail", j.latency_effect_fail),
            ("latency_effect_marginal", j.latency_effect_marginal),
            ("heap_growth_fail", j.heap_growth_fail),
            ("heap_growth_marginal", j.heap_growth_marginal),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return err(format!("judge.{name} must be a positive number"));
            }
        }
        if j.latency_effect_fail > 1.0 || j.latency_effect_marginal > j.latency_effect_fail || j.latency_effect_marginal < 0.5 {
            return err("judge: 0.5 <= latency_effect_marginal <= latency_effect_fail <= 1".into());
        }
        for (name, v, max) in [
            ("latency_allowed_increase_pct", j.latency_allowed_increase_pct, LATENCY_ALLOWED_INCREASE_PCT_MAX),
            ("latency_allowed_increase_ms", j.latency_allowed_increase_ms, LATENCY_ALLOWED_INCREASE_MS_MAX),
        ] {
            if !v.is_finite() || !(0.0..=max).contains(&v) {
                return err(format!("judge.{name} must be 0 to {max} (0 is the strict test)"));
            }
        }
        if j.error_rate_tolerance >= 1.0 {
            return err("judge.error_rate_tolerance is a fraction below 1 (0.01 = 1 %)".into());
        }
        if j.heap_growth_marginal > j.heap_growth_fail {
            return err("judge.heap_growth_marginal must not exceed judge.heap_growth_fail".into());
        }
        Ok(())
    }

    /// Traffic shares in basis points (of 10 000) for the canary, the baseline and the stable at
    /// a step's weight. The baseline gets the canary's share while that fits beside it
    /// (Kayenta: equal traffic makes a fair comparison), and the stable the rest.
    pub fn split(weight_pct: f64) -> (u32, u32, u32) {
        let canary = (weight_pct * 100.0).round().clamp(0.0, 10_000.0) as u32;
        let baseline = canary.min(10_000 - canary);
        (canary, baseline, 10_000 - canary - baseline)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PlanError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    name: Option<String>,
    step_timeout: Option<String>,
    ready_timeout: Option<String>,
    drain_timeout: Option<String>,
    auto_rollback: Option<bool>,
    allow_contract: Option<bool>,
    #[serde(default)]
    steps: Vec<StepFile>,
    judge: Option<JudgeFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    weight: f64,
    bake: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JudgeFile {
    min_requests: Option<u64>,
    min_latency_samples: Option<usize>,
    error_rate_tolerance: Option<f64>,
    latency_effect_fail: Option<f64>,
    latency_effect_marginal: Option<f64>,
    latency_allowed_increase_pct: Option<f64>,
    latency_allowed_increase_ms: Option<f64>,
    heap_growth_fail: Option<f64>,
    heap_growth_marginal: Option<f64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtins_are_valid_and_end_at_100() {
        for p in [Plan::default_plan(), Plan::fast()] {
            p.validate().unwrap();
            assert_eq!(p.steps.iter().map(|s| s.weight_pct).collect::<Vec<_>>(), WEIGHTS);
        }
    }

    #[test]
    fn split_gives_the_baseline_the_canary_share_while_it_fits() {
        assert_eq!(Plan::split(1.0), (100, 100, 9_800));
        assert_eq!(Plan::split(25.0), (2_500, 2_500, 5_000));
        assert_eq!(Plan::split(50.0), (5_000, 5_000, 0));
        assert_eq!(Plan::split(75.0), (7_500, 2_500, 0));
        assert_eq!(Plan::split(100.0), (10_000, 0, 0));
        assert_eq!(Plan::split(0.0), (0, 0, 10_000));
    }

    #[test]
    fn a_file_sets_steps_and_judge_and_keeps_defaults() {
        let p = Plan::from_toml(
            "name = \"two\"\n[[steps]]\nweight = 10\nbake = \"2s\"\n[[steps]]\nweight = 100\nbake = \"1s\"\n[judge]\nmin_requests = 7\n",
            "two.toml",
        )
        .unwrap();
        assert_eq!(p.name, "two");
        assert_eq!(p.steps.len(), 2);
        assert_eq!(p.steps[0].bake, Duration::from_secs(2));
        assert_eq!(p.judge.min_requests, 7);
        assert_eq!(p.judge.error_rate_tolerance, 0.01);
        assert_eq!(p.ready_timeout, Plan::default_plan().ready_timeout);
    }

    #[test]
    fn bad_files_say_what_to_change() {
        let cases = [
            ("[[steps]]\nweight = 50\nbake = \"1s\"\n", "must be 100"),
            ("[[steps]]\nweight = 50\nbake = \"1s\"\n[[steps]]\nweight = 20\nbake = \"1s\"\n", "above the previous"),
            ("[[steps]]\nweight = 0\nbake = \"1s\"\n", "above 0"),
            ("[[steps]]\nweight = 100\nbake = \"soon\"\n", "not a duration"),
            ("[[steps]]\nweight = 100\nbake = \"1s\"\nwieght = 3\n", "unknown field"),
            ("steps = 3", "invalid type"),
            ("", "1 to 20 steps"),
            ("[[steps]]\nweight = 100\nbake = \"1s\"\n[judge]\nmin_requests = 0\n", "at least 1"),
            ("ready_timeout = \"0s\"\n[[steps]]\nweight = 100\nbake = \"1s\"\n", "ready_timeout must be"),
            ("step_timeout = \"1s\"\n[[steps]]\nweight = 100\nbake = \"10s\"\n", "step_timeout must be"),
        ];
        for (text, want) in cases {
            let e = Plan::from_toml(text, "p.toml").unwrap_err().0;
            assert!(e.contains(want), "{text:?}: {e}");
            assert!(e.starts_with("p.toml"), "{e}");
        }
        // TOML syntax errors carry the line and column.
        let e = Plan::from_toml("[[steps]]\nweight = = 1\n", "p.toml").unwrap_err().0;
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn the_latency_allowance_is_0_to_its_maximum() {
        let plan = |pct: &str, ms: &str| {
            let t = format!("[[steps]]\nweight = 100\nbake = \"1s\"\n[judge]\nlatency_allowed_increase_pct = {pct}\nlatency_allowed_increase_ms = {ms}\n");
            Plan::from_toml(&t, "p.toml")
        };
        let strict = plan("0", "0").unwrap();
        assert_eq!((strict.judge.latency_allowed_increase_pct, strict.judge.latency_allowed_increase_ms), (0.0, 0.0));
        let widest = plan("1000", "60000").unwrap();
        assert_eq!((widest.judge.latency_allowed_increase_pct, widest.judge.latency_allowed_increase_ms), (1000.0, 60000.0));
        for (pct, ms, name) in [("1000.5", "1", "pct"), ("-1", "1", "pct"), ("nan", "1", "pct"), ("25", "60000.5", "ms"), ("25", "-0.1", "ms"), ("25", "inf", "ms")] {
            let e = plan(pct, ms).unwrap_err().0;
            assert!(e.contains(&format!("judge.latency_allowed_increase_{name} must be 0 to")), "{pct} {ms}: {e}");
        }
        assert_eq!(Plan::fast().judge.latency_allowed_increase_pct, 25.0);
        assert_eq!(Plan::default_plan().judge.latency_allowed_increase_ms, 1.0);
    }

    #[test]
    fn twenty_steps_is_the_limit() {
        let mk = |n: usize| {
            let mut t = String::new();
            for i in 1..=n {
                t.push_str(&format!("[[steps]]\nweight = {}\nbake = \"0s\"\n", 100.0 * i as f64 / n as f64));
            }
            t
        };
        Plan::from_toml(&mk(STEPS_MAX), "p").unwrap();
        assert!(Plan::from_toml(&mk(STEPS_MAX + 1), "p").unwrap_err().0.contains("1 to 20 steps"));
    }
}

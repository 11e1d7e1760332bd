//! The canary judge: canary against a baseline started at the same time, metric by metric.
//!
//! Pure: the caller gathers one [`Window`] per version over the same step (requests, errors,
//! a bounded sample of latencies, heap growth per request, memguard's leak state) and gets a
//! [`Verdict`]. Kayenta's vocabulary: each metric scores `pass`, `marginal` or `fail`, or is
//! `inconclusive` when there is too little data; the step's score follows.
//!
//! | metric | critical | fail | marginal | test |
//! |---|---|---|---|---|
//! | `error_rate` | yes | canary − baseline ≥ `error_rate_tolerance` (1 %) and one-sided z ≥ 2.33 (p ≤ 0.01) | half the tolerance and z ≥ 1.64 | two-proportion z-test |
//! | `latency` | no | p ≤ 0.01 and the canary is slower than the allowance in ≥ 60 % of pairs | p ≤ 0.05 and ≥ 55 % | Mann–Whitney U of the canary's latencies against the baseline's plus the allowance (each baseline latency `y` becomes `y + max(y × 25 %, 1 ms)`), normal approximation with tie correction; effect size = U ÷ (n₁n₂) |
//! | `heap_growth_per_request` | no | the canary's rate, at its 99.9 % lower confidence bound, − max(baseline, 0) ≥ 512 B per request | its estimate ≥ 192 B above, or its 99 % upper bound ≥ 512 B above (a leak that size is not ruled out yet) | Theil–Sen slopes of heap against requests, Sen's bounds (a shrinking baseline counts as flat) |
//! | `leak` | yes | canary `leaking` | canary `suspect` | memguard's state |
//! | `schema` (a deployment that migrates) | yes | baseline − canary ≥ `error_rate_tolerance` and z ≥ 2.33 | half the tolerance and z ≥ 1.64 | `error_rate` mirrored: the previous release (the baseline, the rollback target) serving on the migrated schema errs more than the new one |
//!
//! **The step**: a critical metric that fails fails the step at once; otherwise any failure
//! fails it; otherwise any inconclusive metric makes the step inconclusive (**no data is never
//! a pass**); otherwise any marginal makes it marginal; else it passes. Fewer than
//! `min_requests` requests on either side makes the traffic-based metrics inconclusive.
//!
//! **The latency allowance** (`latency_allowed_increase_pct`, `latency_allowed_increase_ms`):
//! with thousands of samples a rank test finds a difference of a fraction of a millisecond
//! significant, and two fresh processes on a shared machine differ by that much for reasons that
//! are not the build's (which core they share, what else runs). A CI run rolled back a good
//! build on a median of 2.70 ms against 2.23 ms (p = 0.002). The judge therefore asks whether the
//! canary is slower *by more than the allowance*, not whether it is slower at all. Set both to 0
//! for the strict test.
//!
//! **Latencies from the same time only.** A rank test assumes both samples were drawn under
//! the same conditions. At a step that routes the baseline nothing (the last one, 100 %) the
//! controller judges the latencies of the last moment both sides were routed traffic: a CI run
//! rolled back a good build at 100 % on a canary median of 5.90 ms (that step, all the load,
//! other tests running) against the baseline's 2.47 ms from the step before. Error rate and
//! heap growth per request are rates of each side's own traffic and are judged throughout.
//!
//! Bounds: latencies beyond [`LATENCY_SAMPLES_MAX`] per window are ignored (the caller should
//! reservoir-sample); the judge allocates two vectors of that size at most.

use memguard::stats::{median_in_place, normal_cdf};
use serde::Serialize;

/// Latency samples per window the judge reads.
pub const LATENCY_SAMPLES_MAX: usize = 5_000;

/// One version's figures over a step.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Window {
    pub requests: u64,
    /// Requests that failed on the server's side (5xx, connection errors).
    pub errors: u64,
    /// A sample of request latencies, in milliseconds.
    pub latencies_ms: Vec<f64>,
    /// Heap growth per request over the step, bytes (from `/metrics`); `None` if unknown.
    pub heap_growth_per_request: Option<f64>,
    /// Its one-sided lower confidence bound (Sen's; the controller's is 99.9 %); `None` if
    /// unknown or too few points.
    pub heap_growth_per_request_low: Option<f64>,
    /// Its one-sided 99 % upper confidence bound; `None` if unknown or too few points.
    pub heap_growth_per_request_high: Option<f64>,
    /// memguard's leak state: 0 ok, 1 suspect, 2 leaking; `None` if unknown.
    pub leak_state: Option<u8>,
}

/// Tolerances and evidence thresholds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct JudgeConfig {
    /// Fewest requests on each side before traffic-based metrics are judged. Default 100.
    pub min_requests: u64,
    /// Fewest latency samples on each side. Default 50.
    pub min_latency_samples: usize,
    /// Absolute error-rate increase that fails the canary. Default 0.01.
    pub error_rate_tolerance: f64,
    /// Share of (canary, baseline) pairs in which the canary is slower that fails it. Default 0.60.
    pub latency_effect_fail: f64,
    /// ... that makes it marginal. Default 0.55.
    pub latency_effect_marginal: f64,
    /// A canary latency counts as slower than a baseline latency `y` only past
    /// `y + max(y × pct ÷ 100, ms)`. Default 25 %.
    pub latency_allowed_increase_pct: f64,
    /// ... Default 1 ms.
    pub latency_allowed_increase_ms: f64,
    /// Extra heap per request that fails the canary, bytes. Default 512 (a good build
    /// measures within ±60 B per request of its baseline under `up`, BENCHMARKS.md).
    pub heap_growth_fail: f64,
    /// ... that makes it marginal. Default 192.
    pub heap_growth_marginal: f64,
}

impl Default for JudgeConfig {
    fn default() -> Self {
        JudgeConfig {
            min_requests: 100,
            min_latency_samples: 50,
            error_rate_tolerance: 0.01,
            latency_effect_fail: 0.60,
            latency_effect_marginal: 0.55,
            latency_allowed_increase_pct: 25.0,
            latency_allowed_increase_ms: 1.0,
            heap_growth_fail: 512.0,
            heap_growth_marginal: 192.0,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Score {
    Pass,
    Marginal,
    Inconclusive,
    Fail,
}

impl Score {
    pub fn as_str(self) -> &'static str {
        match self {
            Score::Pass => "pass",
            Score::Marginal => "marginal",
            Score::Inconclusive => "inconclusive",
            Score::Fail => "fail",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricVerdict {
    pub metric: &'static str,
    pub critical: bool,
    pub score: Score,
    pub canary: Option<f64>,
    pub baseline: Option<f64>,
    /// The test's figures in words.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verdict {
    pub score: Score,
    /// Share of metrics that passed, 0 to 100 (Kayenta's score).
    pub score_pct: f64,
    /// Why, in a few words.
    pub reason: String,
    pub metrics: Vec<MetricVerdict>,
}

/// Judges a canary against its baseline.
pub fn judge(canary: &Window, baseline: &Window, config: &JudgeConfig) -> Verdict {
    Verdict::of(metrics(canary, baseline, config))
}

/// Judges a canary whose start migrated the shared database (`change` names the migrations):
/// the metrics of [`judge`] and the `schema` line, which shows the previous release serving on
/// the migrated schema. A promotion therefore means the rollback target was proven on it.
pub fn judge_schema_change(canary: &Window, baseline: &Window, config: &JudgeConfig, change: &str) -> Verdict {
    let mut m = metrics(canary, baseline, config);
    m.push(schema(canary, baseline, config, change));
    Verdict::of(m)
}

fn metrics(canary: &Window, baseline: &Window, config: &JudgeConfig) -> Vec<MetricVerdict> {
    vec![leak(canary, baseline), error_rate(canary, baseline, config), latency(canary, baseline, config), heap_growth(canary, baseline, config)]
}

impl Verdict {
    /// The step's verdict from its metrics' (the rule in the module docs).
    pub fn of(metrics: Vec<MetricVerdict>) -> Verdict {
        let passed = metrics.iter().filter(|m| m.score == Score::Pass).count();
        let score_pct = if metrics.is_empty() { 0.0 } else { 100.0 * passed as f64 / metrics.len() as f64 };
        let critical_fail = metrics.iter().find(|m| m.critical && m.score == Score::Fail);
        let (score, reason) = if let Some(m) = critical_fail {
            (Score::Fail, format!("critical metric {} failed: {}", m.metric, m.detail))
        } else if let Some(m) = metrics.iter().find(|m| m.score == Score::Fail) {
            (Score::Fail, format!("{} failed: {}", m.metric, m.detail))
        } else if let Some(m) = metrics.iter().find(|m| m.score == Score::Inconclusive) {
            (Score::Inconclusive, format!("{} is inconclusive: {}", m.metric, m.detail))
        } else if let Some(m) = metrics.iter().find(|m| m.score == Score::Marginal) {
            (Score::Marginal, format!("{} is marginal: {}", m.metric, m.detail))
        } else if metrics.is_empty() {
            (Score::Inconclusive, "no metric".to_string())
        } else {
            (Score::Pass, "every metric passed".to_string())
        };
        Verdict { score, score_pct, reason, metrics }
    }
}

fn verdict(metric: &'static str, critical: bool, score: Score, canary: Option<f64>, baseline: Option<f64>, detail: String) -> MetricVerdict {
    MetricVerdict { metric, critical, score, canary, baseline, detail }
}

fn leak(c: &Window, b: &Window) -> MetricVerdict {
    let (cs, bs) = (c.leak_state.map(f64::from), b.leak_state.map(f64::from));
    match c.leak_state {
        None => verdict("leak", true, Score::Inconclusive, cs, bs, "no leak state from the canary".into()),
        Some(s) if s >= 2 => verdict("leak", true, Score::Fail, cs, bs, "memguard says the canary is leaking".into()),
        Some(1) => verdict("leak", true, Score::Marginal, cs, bs, "memguard suspects a leak in the canary".into()),
        Some(_) => verdict("leak", true, Score::Pass, cs, bs, "memguard: ok".into()),
    }
}

fn rate(w: &Window) -> Option<f64> {
    if w.requests == 0 { None } else { Some(w.errors.min(w.requests) as f64 / w.requests as f64) }
}

/// Two-proportion z-test of "x errs more than y": the score by the tolerance, and z.
fn errs_more(x: &Window, y: &Window, cfg: &JudgeConfig) -> (Score, f64) {
    let (p1, p2) = (rate(x).unwrap_or(0.0), rate(y).unwrap_or(0.0));
    let (n1, n2) = (x.requests as f64, y.requests as f64);
    let pooled = (x.errors.min(x.requests) + y.errors.min(y.requests)) as f64 / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let diff = p1 - p2;
    // With no errors on either side there is no variance and nothing to test.
    let z = if se > 0.0 { diff / se } else { 0.0 };
    let score = if diff >= cfg.error_rate_tolerance && z >= 2.326 {
        Score::Fail
    } else if diff >= cfg.error_rate_tolerance / 2.0 && z >= 1.645 {
        Score::Marginal
    } else {
        Score::Pass
    };
    (score, z)
}

fn error_rate(c: &Window, b: &Window, cfg: &JudgeConfig) -> MetricVerdict {
    let (cr, br) = (rate(c), rate(b));
    if c.requests < cfg.min_requests || b.requests < cfg.min_requests {
        let d = format!("{} canary and {} baseline requests; {} each needed", c.requests, b.requests, cfg.min_requests);
        return verdict("error_rate", true, Score::Inconclusive, cr, br, d);
    }
    let (score, z) = errs_more(c, b, cfg);
    let detail = format!("canary {:.2} %, baseline {:.2} %, z = {z:.2}", cr.unwrap_or(0.0) * 100.0, br.unwrap_or(0.0) * 100.0);
    verdict("error_rate", true, score, cr, br, detail)
}

/// The previous release on the migrated schema: `error_rate` the other way round. The canary
/// is the reference here (new code on its own schema); a baseline that errs more means the old
/// code cannot live with the migration, which then was no expand.
fn schema(c: &Window, b: &Window, cfg: &JudgeConfig, change: &str) -> MetricVerdict {
    let (cr, br) = (rate(c), rate(b));
    if c.requests < cfg.min_requests || b.requests < cfg.min_requests {
        let d = format!("the previous release serves on the schema {change} migrated: {} baseline requests so far, {} needed", b.requests, cfg.min_requests);
        return verdict("schema", true, Score::Inconclusive, cr, br, d);
    }
    let (score, z) = errs_more(b, c, cfg);
    let detail = format!(
        "the previous release serves on the schema {change} migrated: baseline {:.2} % errors over {} requests, canary {:.2} %, z = {z:.2}",
        br.unwrap_or(0.0) * 100.0,
        b.requests,
        cr.unwrap_or(0.0) * 100.0
    );
    verdict("schema", true, score, cr, br, detail)
}

fn latency(c: &Window, b: &Window, cfg: &JudgeConfig) -> MetricVerdict {
    let take = |w: &Window| -> Vec<f64> { w.latencies_ms.iter().copied().filter(|x| x.is_finite()).take(LATENCY_SAMPLES_MAX).collect() };
    let (xs, ys) = (take(c), take(b));
    let (cm, bm) = (median(&xs), median(&ys));
    if xs.len() < cfg.min_latency_samples || ys.len() < cfg.min_latency_samples {
        let d = format!("{} canary and {} baseline latencies; {} each needed", xs.len(), ys.len(), cfg.min_latency_samples);
        return verdict("latency", false, Score::Inconclusive, cm, bm, d);
    }
    let (pct, ms) = (cfg.latency_allowed_increase_pct, cfg.latency_allowed_increase_ms);
    let allowed: Vec<f64> = ys.iter().map(|y| y + (y * pct / 100.0).max(ms)).collect();
    let (effect, p) = mann_whitney_greater(&xs, &allowed);
    let detail = format!(
        "median canary {:.2} ms, baseline {:.2} ms; canary slower by more than {pct} % or {ms} ms in {:.0} % of pairs, one-sided p = {p:.4}",
        cm.unwrap_or(0.0),
        bm.unwrap_or(0.0),
        effect * 100.0
    );
    let score = if p <= 0.01 && effect >= cfg.latency_effect_fail {
        Score::Fail
    } else if p <= 0.05 && effect >= cfg.latency_effect_marginal {
        Score::Marginal
    } else {
        Score::Pass
    };
    verdict("latency", false, score, cm, bm, detail)
}

fn heap_growth(c: &Window, b: &Window, cfg: &JudgeConfig) -> MetricVerdict {
    let (cg, bg) = (c.heap_growth_per_request.filter(|x| x.is_finite()), b.heap_growth_per_request.filter(|x| x.is_finite()));
    let (Some(x), Some(y)) = (cg, bg) else {
        return verdict("heap_growth_per_request", false, Score::Inconclusive, cg, bg, "heap growth unknown for a version".into());
    };
    if c.requests < cfg.min_requests || b.requests < cfg.min_requests {
        return verdict("heap_growth_per_request", false, Score::Inconclusive, cg, bg, "too few requests to divide by".into());
    }
    // A baseline that shrank (warm-up freed) is no evidence against the canary: compare with
    // zero then. Failing needs the canary's lower bound past the threshold: a few tens of
    // requests into a step, a page cache filling or a buffer growing once moves the estimate
    // by hundreds of bytes per request (a good build measured 541 B/request at 1 %), but a
    // leak moves every pair of points alike and lifts the bound with the estimate. Passing
    // needs the upper bound below it: early in a step, a few noisy points can put the estimate
    // of a 1 KiB-per-request leak under the baseline's (a CI run promoted a 2 KiB-per-payment
    // leak that way); until more requests narrow the interval, such a step is held, marginal.
    let extra = x - y.max(0.0);
    let low = c.heap_growth_per_request_low.filter(|l| l.is_finite());
    let high = c.heap_growth_per_request_high.filter(|h| h.is_finite());
    let extra_low = low.map_or(f64::NEG_INFINITY, |l| l.min(x) - y.max(0.0));
    let extra_high = high.map_or(f64::INFINITY, |h| h.max(x) - y.max(0.0));
    let bound = match (low, high) {
        (Some(l), Some(h)) => format!("at least {l:.0}, at most {h:.0}"),
        (Some(l), None) => format!("at least {l:.0}"),
        _ => "too few points for a bound".to_string(),
    };
    let detail = format!("canary {x:.0} B/request ({bound}), baseline {y:.0} B/request");
    let score = if extra_low >= cfg.heap_growth_fail {
        Score::Fail
    } else if extra >= cfg.heap_growth_marginal || extra_high >= cfg.heap_growth_fail {
        Score::Marginal
    } else {
        Score::Pass
    };
    verdict("heap_growth_per_request", false, score, cg, bg, detail)
}

fn median(v: &[f64]) -> Option<f64> {
    median_in_place(&mut v.to_vec())
}

/// Mann–Whitney U for "x tends to be greater than y": returns the effect size U ÷ (n₁n₂)
/// (the share of pairs with x > y, ties counting half) and the one-sided p-value from the
/// normal approximation with tie correction and continuity correction.
pub fn mann_whitney_greater(x: &[f64], y: &[f64]) -> (f64, f64) {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return (0.5, 1.0);
    }
    let mut all: Vec<(f64, bool)> = x.iter().map(|v| (*v, true)).chain(y.iter().map(|v| (*v, false))).collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let (mut rank_sum_x, mut tie_term) = (0.0, 0.0);
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && all[j + 1].0 == all[i].0 {
            j += 1;
        }
        let t = (j - i + 1) as f64;
        let avg_rank = (i + j) as f64 / 2.0 + 1.0;
        rank_sum_x += avg_rank * all[i..=j].iter().filter(|e| e.1).count() as f64;
        tie_term += t * t * t - t;
        i = j + 1;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u = rank_sum_x - n1f * (n1f + 1.0) / 2.0;
    let effect = u / (n1f * n2f);
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - tie_term / (nf * (nf - 1.0)));
    if var <= 0.0 {
        return (effect, 1.0);
    }
    let z = (u - mean - 0.5) / var.sqrt();
    (effect, 1.0 - normal_cdf(z))
}

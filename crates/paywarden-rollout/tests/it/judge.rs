//! The canary judge on synthetic windows: a healthy canary passes, each kind of regression
//! fails (critical ones at once), and too little data is inconclusive, never a pass.

use paywarden_rollout::judge::mann_whitney_greater;
use paywarden_rollout::{judge, JudgeConfig, Score, Window};

/// SplitMix64, for reproducible latencies.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Log-normal-ish latencies around `median_ms`.
fn latencies(rng: &mut Rng, n: usize, median_ms: f64) -> Vec<f64> {
    (0..n).map(|_| median_ms * (1.0 + 0.5 * (rng.unit() - 0.5)).exp2().max(0.01)).collect()
}

fn healthy(rng: &mut Rng) -> Window {
    Window { requests: 2000, errors: 2, latencies_ms: latencies(rng, 1000, 5.0), heap_growth_per_request: Some(3.0), heap_growth_per_request_low: Some(1.0), heap_growth_per_request_high: Some(5.0), leak_state: Some(0) }
}

fn score_of(v: &paywarden_rollout::Verdict, metric: &str) -> Score {
    v.metrics.iter().find(|m| m.metric == metric).unwrap().score
}

#[test]
fn a_healthy_canary_passes() {
    let mut rng = Rng(1);
    for _ in 0..20 {
        let (c, b) = (healthy(&mut rng), healthy(&mut rng));
        let v = judge(&c, &b, &JudgeConfig::default());
        assert_eq!(v.score, Score::Pass, "{v:#?}");
        assert_eq!(v.score_pct, 100.0);
    }
}

#[test]
fn a_leaking_canary_fails_at_once_whatever_else_says() {
    let mut rng = Rng(2);
    let b = healthy(&mut rng);
    // Even with too little traffic for the other metrics, a leak is a leak.
    let c = Window { requests: 10, errors: 0, latencies_ms: vec![], heap_growth_per_request: None, heap_growth_per_request_low: None, heap_growth_per_request_high: None, leak_state: Some(2) };
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(v.score, Score::Fail);
    assert!(v.reason.contains("critical metric leak"), "{}", v.reason);
    let c = Window { leak_state: Some(1), ..healthy(&mut rng) };
    assert_eq!(judge(&c, &b, &JudgeConfig::default()).score, Score::Marginal);
}

#[test]
fn an_error_spike_fails_and_a_blip_does_not() {
    let mut rng = Rng(3);
    let b = healthy(&mut rng);
    let c = Window { errors: 400, ..healthy(&mut rng) }; // 20 %
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(v.score, Score::Fail);
    assert_eq!(score_of(&v, "error_rate"), Score::Fail);
    assert!(v.reason.contains("critical metric error_rate"));
    // 3 errors in 2000 against 2: noise.
    let c = Window { errors: 3, ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "error_rate"), Score::Pass);
}

#[test]
fn slower_latency_fails_and_equal_latency_passes() {
    let mut rng = Rng(4);
    let b = healthy(&mut rng);
    let c = Window { latencies_ms: latencies(&mut rng, 1000, 7.5), ..healthy(&mut rng) }; // +50 %
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(score_of(&v, "latency"), Score::Fail, "{v:#?}");
    assert_eq!(v.score, Score::Fail);
    // Faster is never a failure.
    let c = Window { latencies_ms: latencies(&mut rng, 1000, 2.5), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "latency"), Score::Pass);
}

#[test]
fn a_slowdown_within_the_allowance_passes_and_the_strict_test_fails_it() {
    // A CI run's good build: every request about 0.45 ms slower at a 2.2-ms median, with
    // thousands of samples, so the difference is highly significant.
    let mut rng = Rng(7);
    let b = Window { latencies_ms: latencies(&mut rng, 3000, 2.23), ..healthy(&mut rng) };
    let c = Window { latencies_ms: latencies(&mut rng, 3000, 2.70), ..healthy(&mut rng) };
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(score_of(&v, "latency"), Score::Pass, "{v:#?}");
    let strict = JudgeConfig { latency_allowed_increase_pct: 0.0, latency_allowed_increase_ms: 0.0, ..JudgeConfig::default() };
    let v = judge(&c, &b, &strict);
    assert_eq!(score_of(&v, "latency"), Score::Fail, "{v:#?}");
    // Past the allowance: 2.2 ms to 4 ms (+1.8 ms, +80 %) fails under the defaults.
    let c = Window { latencies_ms: latencies(&mut rng, 3000, 4.0), ..healthy(&mut rng) };
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(score_of(&v, "latency"), Score::Fail, "{v:#?}");
    let detail = &v.metrics.iter().find(|m| m.metric == "latency").unwrap().detail;
    assert!(detail.contains("slower by more than 25 % or 1 ms"), "{detail}");
    // The percentage rules for slow services: 200 ms to 240 ms (+20 %) passes, to 300 ms fails.
    let b = Window { latencies_ms: latencies(&mut rng, 3000, 200.0), ..healthy(&mut rng) };
    let c = Window { latencies_ms: latencies(&mut rng, 3000, 240.0), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "latency"), Score::Pass);
    let c = Window { latencies_ms: latencies(&mut rng, 3000, 300.0), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "latency"), Score::Fail);
}

#[test]
fn extra_heap_per_request_fails() {
    let mut rng = Rng(5);
    let b = healthy(&mut rng);
    // A steady leak: the bounds are close to the estimate (here symmetric around it).
    let leak = |g: f64, low: f64, rng: &mut Rng| Window {
        heap_growth_per_request: Some(g),
        heap_growth_per_request_low: Some(low),
        heap_growth_per_request_high: Some(2.0 * g - low),
        ..healthy(rng)
    };
    let c = leak(4096.0, 3900.0, &mut rng);
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Fail);
    let c = leak(400.0, 380.0, &mut rng);
    assert_eq!(judge(&c, &b, &JudgeConfig::default()).score, Score::Marginal);
    // The edges, against the baseline's 3 B per request: a lower bound 512 B more fails, an
    // estimate 192 B more is marginal, a byte less passes.
    let cfg = JudgeConfig::default();
    for (canary, low, want) in [(600.0, 515.0, Score::Fail), (600.0, 514.0, Score::Marginal), (195.0, 150.0, Score::Marginal), (194.0, 150.0, Score::Pass)] {
        let c = leak(canary, low, &mut rng);
        assert_eq!(score_of(&judge(&c, &b, &cfg), "heap_growth_per_request"), want, "canary {canary} B/request, at least {low}");
    }
}

#[test]
fn a_noisy_estimate_past_the_threshold_is_marginal_until_its_bound_is() {
    // A CI run: a good build, 50 requests into the first step, estimated at 541 B per request
    // against a baseline that shrank. Its jitter leaves the lower bound far below.
    let mut rng = Rng(8);
    let b = Window { heap_growth_per_request: Some(-20.0), heap_growth_per_request_low: Some(-400.0), ..healthy(&mut rng) };
    let c = Window { heap_growth_per_request: Some(541.0), heap_growth_per_request_low: Some(90.0), heap_growth_per_request_high: Some(992.0), ..healthy(&mut rng) };
    let v = judge(&c, &b, &JudgeConfig::default());
    assert_eq!(score_of(&v, "heap_growth_per_request"), Score::Marginal, "{v:#?}");
    let m = v.metrics.iter().find(|m| m.metric == "heap_growth_per_request").unwrap();
    assert_eq!(m.detail, "canary 541 B/request (at least 90, at most 992), baseline -20 B/request");
    // Too few points for a bound: never a failure on the estimate alone.
    let c = Window { heap_growth_per_request: Some(5000.0), heap_growth_per_request_low: None, ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Marginal);
    // A bound above the estimate (it cannot be; a caller's mistake) counts as the estimate.
    let c = Window { heap_growth_per_request: Some(300.0), heap_growth_per_request_low: Some(900.0), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Marginal);
}

#[test]
fn a_leak_not_yet_ruled_out_holds_the_step_instead_of_passing_it() {
    // A CI run: a 2 KiB-per-payment leak (about 930 B per request), 50 requests into the
    // first step, its estimate under a warming baseline's; the interval still reaches far up.
    let mut rng = Rng(9);
    let b = Window { heap_growth_per_request: Some(900.0), heap_growth_per_request_low: Some(300.0), heap_growth_per_request_high: Some(1500.0), ..healthy(&mut rng) };
    let wide = Window { heap_growth_per_request: Some(800.0), heap_growth_per_request_low: Some(100.0), heap_growth_per_request_high: Some(1600.0), ..healthy(&mut rng) };
    let v = judge(&wide, &b, &JudgeConfig::default());
    assert_eq!(score_of(&v, "heap_growth_per_request"), Score::Marginal, "{v:#?}");
    // The edge: an upper bound 512 B above the baseline holds the step, a byte less passes.
    for (high, want) in [(1412.0, Score::Marginal), (1411.0, Score::Pass)] {
        let c = Window { heap_growth_per_request_high: Some(high), ..wide.clone() };
        assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), want, "upper bound {high}");
    }
    // No upper bound (too few points) is never a pass either.
    let c = Window { heap_growth_per_request_high: None, ..wide.clone() };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Marginal);
}

#[test]
fn a_shrinking_baseline_is_no_evidence_against_a_flat_canary() {
    let mut rng = Rng(6);
    // Seen on real instances: both freed warm-up memory, the baseline more.
    let b = Window { heap_growth_per_request: Some(-4460.0), heap_growth_per_request_low: Some(-5000.0), heap_growth_per_request_high: Some(-3900.0), ..healthy(&mut rng) };
    let c = Window { heap_growth_per_request: Some(-1558.0), heap_growth_per_request_low: Some(-2000.0), heap_growth_per_request_high: Some(-1100.0), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Pass);
    // ... but a canary that grows is judged against zero, not against the shrinking baseline.
    let c = Window { heap_growth_per_request: Some(1500.0), heap_growth_per_request_low: Some(1200.0), heap_growth_per_request_high: Some(1800.0), ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &b, &JudgeConfig::default()), "heap_growth_per_request"), Score::Fail);
}

#[test]
fn no_data_is_inconclusive_never_a_pass() {
    let mut rng = Rng(6);
    let empty = Window::default();
    let v = judge(&empty, &empty, &JudgeConfig::default());
    assert_eq!(v.score, Score::Inconclusive, "{v:#?}");
    assert_eq!(v.score_pct, 0.0);
    // Just under the minimum traffic on one side.
    let c = Window { requests: 99, ..healthy(&mut rng) };
    let v = judge(&c, &healthy(&mut rng), &JudgeConfig::default());
    assert_eq!(v.score, Score::Inconclusive);
    assert!(v.reason.contains("100 each needed"), "{}", v.reason);
    // At the minimum it is judged.
    let c = Window { requests: 100, errors: 0, ..healthy(&mut rng) };
    assert_eq!(score_of(&judge(&c, &healthy(&mut rng), &JudgeConfig::default()), "error_rate"), Score::Pass);
}

#[test]
fn mann_whitney_matches_hand_computed_values() {
    // x all above y: U = n1 n2, effect 1, tiny p.
    let (e, p) = mann_whitney_greater(&[4.0, 5.0, 6.0, 7.0, 8.0, 9.0], &[1.0, 2.0, 3.0, 1.5, 2.5, 0.5]);
    assert_eq!(e, 1.0);
    assert!(p < 0.01, "{p}");
    // Identical samples: effect one half, p about one half.
    let same = [1.0, 2.0, 3.0, 4.0, 5.0];
    let (e, p) = mann_whitney_greater(&same, &same);
    assert_eq!(e, 0.5);
    assert!(p > 0.4, "{p}");
    // Ties count half: x = [2, 2], y = [2, 1] -> pairs (2>2: ½, 2>1: 1) x2 = 3 of 4.
    let (e, _) = mann_whitney_greater(&[2.0, 2.0], &[2.0, 1.0]);
    assert_eq!(e, 0.75);
    // NaN-free and bounded on degenerate input.
    let (e, p) = mann_whitney_greater(&[], &[1.0]);
    assert_eq!((e, p), (0.5, 1.0));
}

#[test]
fn the_schema_line_fails_when_the_previous_release_errs_on_the_migrated_schema() {
    use paywarden_rollout::judge::judge_schema_change;
    let mut rng = Rng(9);
    let cfg = JudgeConfig::default();
    let change = "v2 (9001_loyalty_accounts, expand)";
    // Both healthy on the new schema: the line passes and says what it shows.
    let (c, b) = (healthy(&mut rng), healthy(&mut rng));
    let v = judge_schema_change(&c, &b, &cfg, change);
    assert_eq!(v.score, Score::Pass, "{v:#?}");
    let line = v.metrics.iter().find(|m| m.metric == "schema").expect("a schema line");
    assert!(line.critical && line.detail.contains("previous release serves on the schema v2 (9001_loyalty_accounts, expand) migrated"), "{}", line.detail);
    assert_eq!(v.metrics.len(), 5);
    assert_eq!(judge(&c, &b, &cfg).metrics.len(), 4, "no schema line when nothing migrated");
    // The old code fails on the new schema (the migration was no expand): a critical failure,
    // although the canary itself is fine.
    let b = Window { errors: 300, ..healthy(&mut rng) };
    let v = judge_schema_change(&c, &b, &cfg, change);
    assert_eq!(v.score, Score::Fail);
    assert!(v.reason.contains("critical metric schema"), "{}", v.reason);
    assert_eq!(score_of(&v, "error_rate"), Score::Pass, "the canary errs less, not more");
    // Too little baseline traffic is inconclusive, never a pass.
    let b = Window { requests: 20, errors: 0, ..healthy(&mut rng) };
    assert_eq!(score_of(&judge_schema_change(&c, &b, &cfg, change), "schema"), Score::Inconclusive);
}

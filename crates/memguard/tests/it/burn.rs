//! The burn-rate alert on synthetic payment traffic: 200 payments/s, failures as a fraction.

use memguard::{AlertState, BurnRateAlert, BurnRateConfig, BurnRateStatus};

use crate::support::Rng;

/// Feeds `alert` one observation a second from `from_s` to `to_s` with `rate` payments a
/// second of which `failure_ratio` fail (drawn from `rng`), continuing the counters in
/// `totals`. Returns every status.
fn feed(
    alert: &mut BurnRateAlert,
    totals: &mut (u64, u64),
    rng: &mut Rng,
    (from_s, to_s): (u64, u64),
    rate: u64,
    failure_ratio: f64,
) -> Vec<BurnRateStatus> {
    (from_s..to_s)
        .map(|t| {
            for _ in 0..rate {
                if rng.unit() < failure_ratio {
                    totals.1 += 1;
                } else {
                    totals.0 += 1;
                }
            }
            alert.observe(t * 1000, totals.0, totals.1)
        })
        .collect()
}

fn alert() -> BurnRateAlert {
    BurnRateAlert::new(BurnRateConfig::default()).expect("valid")
}

#[test]
fn fires_on_a_20_percent_spike_within_the_short_window_and_resolves_after_recovery() {
    let (mut a, mut totals, mut rng) = (alert(), (0, 0), Rng::new(1));
    // 15 minutes at the 0.1 % baseline (the SLO's budget rate): never fires.
    let calm = feed(&mut a, &mut totals, &mut rng, (0, 900), 200, 0.001);
    assert!(
        calm.iter().all(|s| s.state == AlertState::Ok),
        "fired at baseline"
    );
    // 20 % of payments fail from 900 s.
    let spike = feed(&mut a, &mut totals, &mut rng, (900, 1020), 200, 0.20);
    let fired = spike
        .iter()
        .position(|s| s.state == AlertState::Firing)
        .expect("fires");
    let at = &spike[fired];
    println!("20 % failures: firing after {fired} s: {at}");
    assert!(fired <= 60, "fired after {fired} s");
    assert!(at.changed);
    assert!(at.short.burn_rate >= 14.4 && at.long.burn_rate >= 14.4);
    assert!(spike[fired..].iter().all(|s| s.state == AlertState::Firing));
    // Back to 0.1 %: the short window clears after about a minute, then `resolve_after_s`.
    let after = feed(&mut a, &mut totals, &mut rng, (1020, 1400), 200, 0.001);
    let resolved = after
        .iter()
        .position(|s| s.state == AlertState::Ok)
        .expect("resolves");
    println!("recovery: resolved after {resolved} s: {}", after[resolved]);
    assert!(
        (60..=150).contains(&resolved),
        "resolved after {resolved} s"
    );
    assert!(after[resolved].changed);
    assert!(after[resolved..].iter().all(|s| s.state == AlertState::Ok));
}

#[test]
fn does_not_fire_on_baseline_or_moderate_failure_rates_or_a_blip() {
    for ratio in [0.001, 0.005, 0.01] {
        let (mut a, mut totals, mut rng) = (alert(), (0, 0), Rng::new(2));
        let statuses = feed(&mut a, &mut totals, &mut rng, (0, 1800), 200, ratio);
        assert!(
            statuses.iter().all(|s| s.state == AlertState::Ok),
            "fired at {ratio}"
        );
        let last = statuses.last().expect("statuses");
        assert!(
            (last.long.failure_ratio - ratio).abs() < 0.5 * ratio + 0.001,
            "{last}"
        );
    }
    // Every payment fails for 5 s: the short window burns, the long one does not reach 14.4x.
    let (mut a, mut totals, mut rng) = (alert(), (0, 0), Rng::new(3));
    feed(&mut a, &mut totals, &mut rng, (0, 600), 200, 0.001);
    let blip = feed(&mut a, &mut totals, &mut rng, (600, 605), 200, 1.0);
    let rest = feed(&mut a, &mut totals, &mut rng, (605, 900), 200, 0.001);
    assert!(
        blip.iter().chain(&rest).all(|s| s.state == AlertState::Ok),
        "fired on a blip"
    );
}

#[test]
fn low_traffic_is_no_evidence() {
    // One payment a second and every one failing: fewer than `min_events` in the short
    // window, so never fires; and once firing, a lull does not resolve it.
    let (mut a, mut totals, mut rng) = (alert(), (0, 0), Rng::new(4));
    let low = feed(&mut a, &mut totals, &mut rng, (0, 600), 1, 1.0);
    assert!(low.iter().all(|s| s.state == AlertState::Ok));

    let (mut a, mut totals, mut rng) = (alert(), (0, 0), Rng::new(5));
    feed(&mut a, &mut totals, &mut rng, (0, 300), 200, 0.5);
    assert_eq!(a.state(), AlertState::Firing);
    let lull = feed(&mut a, &mut totals, &mut rng, (300, 900), 0, 0.0);
    assert!(
        lull.iter().all(|s| s.state == AlertState::Firing),
        "no traffic resolved the alert"
    );
}

#[test]
fn counters_that_restart_are_taken_as_increases() {
    let mut a = alert();
    let mut t = 0;
    // 200 payments/s at 50 % failures, then the process restarts and counts from zero.
    for i in 1..=120u64 {
        t += 1000;
        a.observe(t, i * 100, i * 100);
    }
    assert_eq!(a.state(), AlertState::Firing);
    let s = a.observe(t + 1000, 150, 50);
    // The increase after the restart is the new value itself (200 events, 50 failures).
    assert!(s.short.events >= 200, "{s}");
    // Several observations in one second add up; a clock that steps back adds to the newest.
    let mut b = alert();
    b.observe(1_000, 0, 0);
    b.observe(2_100, 100, 0);
    let s = b.observe(2_900, 150, 50);
    assert_eq!((s.short.events, s.short.failures), (200, 50));
    let s = b.observe(1_500, 160, 50);
    assert_eq!((s.short.events, s.short.failures), (210, 50));
}

#[test]
fn config_limits_are_checked() {
    let bad = [
        BurnRateConfig {
            slo_target: 1.0,
            ..BurnRateConfig::default()
        },
        BurnRateConfig {
            slo_target: 0.0,
            ..BurnRateConfig::default()
        },
        BurnRateConfig {
            burn_rate_threshold: f64::NAN,
            ..BurnRateConfig::default()
        },
        BurnRateConfig {
            short_window_s: 0,
            ..BurnRateConfig::default()
        },
        BurnRateConfig {
            long_window_s: 30,
            ..BurnRateConfig::default()
        },
        BurnRateConfig {
            long_window_s: 100_000,
            ..BurnRateConfig::default()
        },
    ];
    for c in bad {
        assert!(BurnRateAlert::new(c).is_err(), "{c:?}");
    }
    let c = BurnRateConfig::default();
    assert!((c.failure_ratio_threshold() - 0.0144).abs() < 1e-9);
}

#[test]
fn failures_in_the_first_second_count() {
    // A service that fails at once, before its first full second: the baseline is taken at
    // 0 ms and the failures land in second 0, which is inside every window at second 0.
    let mut a = alert();
    a.observe(0, 0, 0);
    let s = a.observe(500, 150, 150);
    assert_eq!(s.short.events, 300);
    assert_eq!(s.long.failures, 150);
    assert_eq!(s.state, AlertState::Firing);
}

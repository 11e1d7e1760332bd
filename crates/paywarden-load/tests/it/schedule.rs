use std::time::Duration;

use paywarden_load::schedule::{
    DURATION_MAX, Executor, RATE_MAX, STAGES_MAX, Schedule, Stage, VUS_MAX,
};

fn constant(rate: f64, secs: u64) -> Executor {
    Executor::ConstantArrivalRate {
        rate,
        duration: Duration::from_secs(secs),
    }
}

fn ramp(start_rate: f64, stages: &[(f64, u64)]) -> Executor {
    Executor::RampingArrivalRate {
        start_rate,
        stages: stages
            .iter()
            .map(|&(target, secs)| Stage {
                target,
                duration: Duration::from_secs(secs),
            })
            .collect(),
    }
}

fn offsets(s: &Schedule) -> Vec<Duration> {
    (0..s.expected_iterations())
        .map(|n| s.offset(n).expect("within the run"))
        .collect()
}

fn assert_non_decreasing(offsets: &[Duration]) {
    for w in offsets.windows(2) {
        assert!(w[0] <= w[1], "offsets decrease: {:?} then {:?}", w[0], w[1]);
    }
}

#[test]
fn constant_rate_is_evenly_spaced() {
    let s = Schedule::new(&constant(100.0, 10)).expect("open loop");
    assert_eq!(s.expected_iterations(), 1000);
    for n in 0..1000 {
        assert_eq!(
            s.offset(n),
            Some(Duration::from_millis(n * 10)),
            "iteration {n}"
        );
    }
    assert_eq!(s.offset(1000), None);
    assert_eq!(s.offset(u64::MAX), None);
    assert_eq!(s.rate_at(Duration::from_secs(5)), 100.0);
    assert_eq!(s.rate_at(Duration::from_secs(10)), 0.0);
}

#[test]
fn linear_ramp_solves_the_quadratic() {
    // rate(t) = 10 t, so ∫ = 5 t² = n  =>  t = sqrt(2n / 10).
    let s = Schedule::new(&ramp(0.0, &[(100.0, 10)])).expect("open loop");
    assert_eq!(s.expected_iterations(), 500);
    for n in 0..500u64 {
        let expected = (2.0 * n as f64 / 10.0).sqrt();
        let actual = s.offset(n).expect("within the run").as_secs_f64();
        assert!(
            (actual - expected).abs() < 1e-9,
            "iteration {n}: {actual} vs {expected}"
        );
    }
    assert_eq!(s.offset(0), Some(Duration::ZERO));
    assert_eq!(s.offset(5), Some(Duration::from_secs(1)));
    assert_eq!(s.offset(125), Some(Duration::from_secs(5)));
    assert_eq!(s.offset(500), None);
    assert!((s.rate_at(Duration::from_millis(2500)) - 25.0).abs() < 1e-9);
}

#[test]
fn falling_ramp_and_stages_join_up() {
    // 100/s -> 0 over 10 s: ∫ = 100 t − 5 t²; then constant 50/s for 2 s.
    let s = Schedule::new(&ramp(100.0, &[(0.0, 10), (50.0, 0), (50.0, 2)])).expect("open loop");
    assert_eq!(s.expected_iterations(), 500 + 100);
    let all = offsets(&s);
    assert_non_decreasing(&all);
    for (n, t) in all.iter().enumerate().take(500) {
        // Solve 5 t² − 100 t + n = 0, the smaller root.
        let expected = (100.0 - (10_000.0 - 20.0 * n as f64).sqrt()) / 10.0;
        assert!((t.as_secs_f64() - expected).abs() < 1e-6, "iteration {n}");
    }
    // The constant stage starts right at 10 s and spaces by 20 ms.
    assert_eq!(all[500], Duration::from_secs(10));
    assert_eq!(all[501], Duration::from_millis(10_020));
    assert_eq!(all[599], Duration::from_millis(11_980));
    // The zero-length stage is a jump: at 10 s the rate is already 50.
    assert_eq!(s.rate_at(Duration::from_secs(10)), 50.0);
}

#[test]
fn zero_rate_stage_schedules_nothing() {
    let s = Schedule::new(&ramp(
        10.0,
        &[(10.0, 1), (0.0, 0), (0.0, 5), (10.0, 0), (10.0, 1)],
    ))
    .expect("open loop");
    assert_eq!(s.expected_iterations(), 20);
    let all = offsets(&s);
    assert_non_decreasing(&all);
    let in_pause = all
        .iter()
        .filter(|t| **t > Duration::from_secs(1) && **t < Duration::from_secs(6))
        .count();
    assert_eq!(in_pause, 0, "{all:?}");
    assert_eq!(all[10], Duration::from_secs(6));
    assert_eq!(s.rate_at(Duration::from_secs(3)), 0.0);
}

#[test]
fn constant_rates_hold_within_one_percent_per_second() {
    for rate in [1.0, 7.0, 100.0, 333.0, 1000.0, 2500.5] {
        let secs = 20;
        let s = Schedule::new(&constant(rate, secs)).expect("open loop");
        let mut per_second = vec![0u64; secs as usize];
        for t in offsets(&s) {
            per_second[t.as_secs() as usize] += 1;
        }
        for (second, count) in per_second.iter().enumerate() {
            // A fractional rate alternates between floor and ceil; allow that one iteration.
            let tolerance = (rate * 0.01).max(1.0);
            assert!(
                (*count as f64 - rate).abs() <= tolerance,
                "rate {rate}: second {second} has {count}"
            );
        }
    }
}

#[test]
fn fractional_integral_rounds_down() {
    let s = Schedule::new(&Executor::ConstantArrivalRate {
        rate: 3.0,
        duration: Duration::from_millis(1500),
    })
    .expect("open loop");
    assert_eq!(s.expected_iterations(), 4);
    assert_eq!(s.offset(3), Some(Duration::from_secs(1)));
    assert_eq!(s.offset(4), None);
}

#[test]
fn closed_loop_has_no_schedule() {
    let e = Executor::ConstantVus {
        vus: 10,
        duration: Duration::from_secs(5),
    };
    assert!(Schedule::new(&e).is_none());
    assert!(!e.is_open_loop());
    assert!(constant(1.0, 1).is_open_loop());
}

#[test]
fn describe_and_duration() {
    assert_eq!(
        constant(200.0, 60).describe(),
        "constant-arrival-rate 200/s for 1m"
    );
    assert_eq!(
        Executor::ConstantVus {
            vus: 5,
            duration: Duration::from_secs(90)
        }
        .describe(),
        "constant-vus 5 VUs for 1m 30s"
    );
    let r = ramp(10.0, &[(200.0, 30), (200.0, 300)]);
    assert_eq!(r.duration(), Duration::from_secs(330));
    assert_eq!(
        r.describe(),
        "ramping-arrival-rate from 10/s, 200/s over 30s, 200/s over 5m (5m 30s total)"
    );
    assert_eq!(
        constant(12.5, 1).describe(),
        "constant-arrival-rate 12.5/s for 1s"
    );
}

#[test]
fn validate_refuses_bad_executors() {
    let cases: Vec<(Executor, &str)> = vec![
        (constant(0.0, 10), "rate is 0"),
        (constant(-1.0, 10), "rate is -1"),
        (constant(f64::NAN, 10), "rate is not a number"),
        (constant(f64::INFINITY, 10), "rate is not a number"),
        (constant(RATE_MAX * 2.0, 10), "RATE_MAX"),
        (constant(10.0, 0), "duration is 0"),
        (
            Executor::ConstantArrivalRate {
                rate: 1.0,
                duration: DURATION_MAX + Duration::from_secs(1),
            },
            "DURATION_MAX",
        ),
        (ramp(0.0, &[]), "stages is empty"),
        (ramp(0.0, &vec![(1.0, 1); STAGES_MAX + 1]), "STAGES_MAX"),
        (ramp(-5.0, &[(1.0, 1)]), "start_rate is -5"),
        (
            ramp(0.0, &[(1.0, 1), (f64::NAN, 1)]),
            "stages[1].target is not a number",
        ),
        (ramp(0.0, &[(0.0, 10)]), "every rate is 0"),
        (ramp(1.0, &[(1.0, 0)]), "total duration is 0"),
        (
            ramp(1.0, &[(1.0, 4 * 86_400), (1.0, 4 * 86_400)]),
            "DURATION_MAX",
        ),
        (
            Executor::ConstantVus {
                vus: 0,
                duration: Duration::from_secs(1),
            },
            "vus is 0",
        ),
        (
            Executor::ConstantVus {
                vus: VUS_MAX + 1,
                duration: Duration::from_secs(1),
            },
            "VUS_MAX",
        ),
        (
            Executor::ConstantVus {
                vus: 1,
                duration: Duration::ZERO,
            },
            "duration is 0",
        ),
    ];
    for (executor, expected) in cases {
        let message = executor
            .validate()
            .expect_err(&format!("{executor:?} must be refused"));
        assert!(
            message.contains(expected),
            "{executor:?}: {message:?} lacks {expected:?}"
        );
    }
    assert_eq!(constant(RATE_MAX, 1).validate(), Ok(()));
    assert_eq!(ramp(0.0, &[(100.0, 10), (0.0, 10)]).validate(), Ok(()));
    assert_eq!(
        Executor::ConstantVus {
            vus: VUS_MAX,
            duration: DURATION_MAX
        }
        .validate(),
        Ok(())
    );
}

#[test]
fn serializes_with_kebab_kind_and_readable_durations() {
    let json = serde_json::to_value(constant(200.0, 60)).expect("serializes");
    assert_eq!(
        json,
        serde_json::json!({ "kind": "constant-arrival-rate", "rate": 200.0, "duration": "1m" })
    );
}

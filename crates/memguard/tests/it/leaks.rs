//! Leaks must be found: time to `suspect` and `leaking` for 4 KiB, 1 KiB, 256 B and 64 B per
//! request at 200 requests/s on a 128 MiB heap with ±5 % noise, and what the detector reports
//! about them. Latencies are printed (`--nocapture`) and bounded.

use memguard::{LeakConfig, LeakDetector, LeakState, Reason, Sample};

use crate::support::*;

/// Runs a leak of `per_work` bytes per request starting at `from_s` for `seeds`, prints the
/// time from the leak's start to `suspect` and to `leaking`, and returns the worst of each.
fn latencies(
    per_work: f64,
    from_s: u64,
    run_for_s: u64,
    seeds: std::ops::RangeInclusive<u64>,
) -> (usize, usize) {
    let (mut worst_suspect, mut worst_leaking) = (0, 0);
    for seed in seeds {
        let samples = Process::clean(seed)
            .with(Shape::Leak { per_work, from_s })
            .samples(from_s + run_for_s);
        let run = Run::default_over(&samples);
        let from = from_s as usize;
        let suspect = run
            .first_at_least(LeakState::Suspect, from)
            .map(|t| t - from);
        let leaking = run
            .first_at_least(LeakState::Leaking, from)
            .map(|t| t - from);
        println!(
            "leak {per_work} B/request from {from_s} s, seed {seed}: suspect after {suspect:?} s, leaking after {leaking:?} s"
        );
        // Nothing before the leak starts.
        assert_eq!(
            run.seconds_at_least(LeakState::Suspect)
                - run.seconds_at_least_from(LeakState::Suspect, from),
            0
        );
        let (Some(suspect), Some(leaking)) = (suspect, leaking) else {
            panic!(
                "leak of {per_work} B/request not found in {run_for_s} s (seed {seed}): {}",
                run.worst()
            );
        };
        assert!(suspect <= leaking, "suspect comes first");
        worst_suspect = worst_suspect.max(suspect);
        worst_leaking = worst_leaking.max(leaking);
    }
    (worst_suspect, worst_leaking)
}

#[test]
fn leak_of_4_kib_per_request_is_leaking_within_60_s() {
    // From process start (a deploy that leaks) and after 5 minutes of clean running.
    for from_s in [0, 300] {
        let (suspect, leaking) = latencies(4096.0, from_s, 90, 1..=5);
        assert!(
            leaking <= 60,
            "4 KiB/request: leaking after {leaking} s (> 60 s)"
        );
        assert!(suspect <= 45, "4 KiB/request: suspect after {suspect} s");
    }
}

#[test]
fn leak_of_1_kib_per_request_is_leaking_within_150_s() {
    let (suspect, leaking) = latencies(1024.0, 300, 200, 1..=3);
    assert!(leaking <= 150, "1 KiB/request: leaking after {leaking} s");
    assert!(suspect <= 120, "1 KiB/request: suspect after {suspect} s");
}

#[test]
fn leak_of_256_b_per_request_is_leaking_within_500_s() {
    let (suspect, leaking) = latencies(256.0, 300, 520, 1..=2);
    assert!(leaking <= 500, "256 B/request: leaking after {leaking} s");
    assert!(suspect <= 360, "256 B/request: suspect after {suspect} s");
}

#[test]
fn leak_of_64_b_per_request_is_eventually_found() {
    // 12.8 KiB/s: 16 MiB (leaking_growth_bytes) takes 21 minutes to accumulate.
    let (suspect, leaking) = latencies(64.0, 600, 1500, 1..=1);
    assert!(leaking <= 1500, "64 B/request: leaking after {leaking} s");
    assert!(suspect <= 900, "64 B/request: suspect after {suspect} s");
}

#[test]
fn a_leak_is_reported_with_its_rate_confidence_and_time_to_exhaustion() {
    let limit: u64 = 2 << 30;
    let config = LeakConfig {
        memory_limit_bytes: Some(limit),
        ..LeakConfig::default()
    };
    let samples = Process::clean(7)
        .with(Shape::Leak {
            per_work: 4096.0,
            from_s: 300,
        })
        .samples(420);
    let run = Run::new(config, &samples);
    let a = run.assessments[419];
    assert_eq!(a.state, LeakState::Leaking, "{a}");
    assert!(
        (a.bytes_per_work - 4096.0).abs() < 0.1 * 4096.0,
        "bytes/work {}",
        a.bytes_per_work
    );
    let per_second = 4096.0 * 200.0;
    assert!(
        (a.bytes_per_second - per_second).abs() < 0.15 * per_second,
        "bytes/s {}",
        a.bytes_per_second
    );
    assert!(a.confidence > 0.999, "confidence {}", a.confidence);
    assert!(matches!(a.reason, Reason::Growing { .. }), "{}", a.reason);
    let last = samples[419];
    let expected = (limit - last.resident_bytes) as f64 / per_second;
    let tte = a.time_to_exhaustion_s.unwrap_or(f64::NAN);
    assert!(
        (tte - expected).abs() < 0.2 * expected,
        "time to exhaustion {tte} s, expected about {expected} s"
    );
    assert!(a.to_string().starts_with("leaking: "), "{a}");

    // No limit, no time to exhaustion; ok, no time to exhaustion.
    let run = Run::default_over(&samples);
    assert_eq!(run.assessments[419].time_to_exhaustion_s, None);
    let clean = Run::new(config, &Process::clean(7).samples(300));
    assert!(
        clean
            .assessments
            .iter()
            .all(|a| a.time_to_exhaustion_s.is_none())
    );
}

#[test]
fn a_leak_is_found_through_a_sawtooth_and_through_swinging_traffic() {
    // 1 KiB/request under a 2 MiB allocate/free cycle every 30 s.
    let p = Process::clean(3)
        .with(Shape::SquareSawtooth {
            amp: 2.0 * MIB,
            period_s: 30,
            duty: 0.5,
        })
        .with(Shape::Leak {
            per_work: 1024.0,
            from_s: 300,
        });
    let run = Run::default_over(&p.samples(600));
    let leaking = run.first_at_least(LeakState::Leaking, 0);
    println!("1 KiB/request under a sawtooth: leaking at {leaking:?} (leak from 300 s)");
    assert!(
        leaking.is_some_and(|t| (300..=450).contains(&t)),
        "{}",
        run.worst()
    );

    // 1 KiB/request while traffic swings between 50 and 350 requests/s every 2 minutes: the
    // heap follows work, not time.
    let mut p = Process::clean(4).with(Shape::Leak {
        per_work: 1024.0,
        from_s: 300,
    });
    p.rate_wave = Some((50, 350, 120));
    let run = Run::default_over(&p.samples(900));
    let leaking = run.first_at_least(LeakState::Leaking, 0);
    println!("1 KiB/request under swinging traffic: leaking at {leaking:?} (leak from 300 s)");
    assert!(
        leaking.is_some_and(|t| (300..=600).contains(&t)),
        "{}",
        run.worst()
    );
    let a = run.assessments[899];
    assert!(
        (a.bytes_per_work - 1024.0).abs() < 0.15 * 1024.0,
        "bytes/work {}",
        a.bytes_per_work
    );
}

#[test]
fn the_state_clears_after_the_leak_stops_and_stays_clear() {
    // 4 KiB/request from 300 s to 600 s; the leaked memory stays.
    let p = Process::clean(5)
        .with(Shape::Leak {
            per_work: 4096.0,
            from_s: 300,
        })
        .with(Shape::Leak {
            per_work: -4096.0,
            from_s: 600,
        });
    let run = Run::default_over(&p.samples(2400));
    assert_eq!(run.assessments[599].state, LeakState::Leaking);
    let ok = run.first_ok(600).unwrap_or(usize::MAX);
    println!("leak stopped at 600 s: ok again at {ok} s");
    assert!(
        ok <= 600 + 120,
        "still not ok at {ok} s: {}",
        run.assessments[720]
    );
    assert_eq!(
        run.seconds_at_least_from(LeakState::Suspect, ok),
        0,
        "relapsed: {}",
        run.worst()
    );
}

#[test]
fn no_work_keeps_the_state() {
    // Leaks at 4 KiB/request until 120 s, then the process is idle for 10 minutes (the
    // leaked memory stays), then serves again without leaking.
    let mut p = Process::clean(6)
        .with(Shape::Leak {
            per_work: 4096.0,
            from_s: 0,
        })
        .with(Shape::Leak {
            per_work: -4096.0,
            from_s: 120,
        });
    p.idle = vec![(120, 720)];
    let run = Run::default_over(&p.samples(1200));
    assert_eq!(
        run.assessments[119].state,
        LeakState::Leaking,
        "{}",
        run.assessments[119]
    );
    for a in &run.assessments[250..720] {
        assert_eq!(
            a.state,
            LeakState::Leaking,
            "idle must not clear the state: {a}"
        );
        assert_eq!(a.instant, None, "{a}");
        assert!(matches!(a.reason, Reason::Idle { .. }), "{a}");
    }
    let ok = run.first_ok(720);
    println!("idle until 720 s, then clean work: ok again at {ok:?}");
    assert!(
        ok.is_some_and(|t| t <= 720 + 120),
        "{}",
        run.assessments[1199]
    );
}

#[test]
fn a_restart_clears_the_window_but_not_the_state() {
    let leak = Process::clean(8)
        .with(Shape::Leak {
            per_work: 4096.0,
            from_s: 0,
        })
        .samples(120);
    let clean = Process::clean(9).samples(200);
    let mut d = LeakDetector::new(LeakConfig::default()).expect("valid");
    for s in &leak {
        d.observe(*s);
    }
    assert_eq!(d.state(), LeakState::Leaking);
    // The new process: counters from zero, the clock carries on.
    let offset = leak[119].at_ms + 1000;
    let mut states = Vec::new();
    for (i, s) in clean.iter().enumerate() {
        let a = d.observe(Sample {
            at_ms: s.at_ms + offset,
            ..*s
        });
        if i == 0 {
            assert_eq!(a.reason, Reason::Reset);
            assert_eq!(d.samples().len(), 1);
        }
        states.push(a.state);
    }
    // Held while the new window fills (no evidence), then cleared by `clear_after` ok verdicts.
    assert!(states[..29].iter().all(|s| *s == LeakState::Leaking));
    let ok = states.iter().position(|s| *s == LeakState::Ok);
    println!("restart: ok again {ok:?} samples after the restart");
    assert!(ok.is_some_and(|t| t <= 30 + 30 + 5), "{states:?}");
}

#[test]
fn windows_nest_and_report_their_statistics() {
    let mut d = LeakDetector::new(LeakConfig::default()).expect("valid");
    assert_eq!(d.assessment().state, LeakState::Ok);
    assert!(matches!(
        d.assessment().reason,
        Reason::Warming { samples: 0, .. }
    ));
    for s in Process::clean(10).samples(3700) {
        d.observe(s);
    }
    let sizes: Vec<usize> = d.windows().map(|w| w.map_or(0, |w| w.samples)).collect();
    assert_eq!(sizes, vec![60, 240, 960, 3600]);
    for w in d.windows().flatten() {
        assert!(w.points <= 120 && w.points >= 60, "{w:?}");
        assert!((0.0..=1.0).contains(&w.confidence));
        assert_eq!(w.verdict, Some(LeakState::Ok));
    }
    assert_eq!(d.samples().len(), 3600);
    assert_eq!(
        d.assessment().window_samples,
        3600,
        "ok reports the longest window"
    );
}

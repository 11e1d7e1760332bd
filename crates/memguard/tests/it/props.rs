//! Properties: no input makes the detector or the alert panic or report nonsense, and the ring
//! behaves as a bounded queue.

use std::collections::VecDeque;

use memguard::{BurnRateAlert, BurnRateConfig, LeakConfig, LeakDetector, Ring, Sample};
use proptest::prelude::*;

/// Small windows so that every code path (partial windows, subsampling, idle, reset) runs
/// within a short sequence.
fn small_config() -> LeakConfig {
    LeakConfig {
        window_samples: 64,
        shortest_window_samples: 12,
        min_samples: 8,
        max_points: 16,
        min_work_per_window: 10,
        leaking_after: 2,
        suspect_after: 1,
        clear_after: 2,
        memory_limit_bytes: Some(1 << 30),
        ..LeakConfig::default()
    }
}

/// Either anything at all, or a plausible step from the previous sample (so that runs are
/// long enough to be judged), mixed.
fn samples() -> impl Strategy<Value = Vec<Sample>> {
    let step = (
        0u64..3000,
        any::<u64>(),
        any::<u64>(),
        0u64..1000,
        0u64..1000,
        0u8..8,
    );
    prop::collection::vec(step, 0..200).prop_map(|steps| {
        let mut out: Vec<Sample> = Vec::with_capacity(steps.len());
        let mut prev = Sample::default();
        for (dt, heap, rss, dreq, dpay, kind) in steps {
            let s = match kind {
                // Wild values, including counters and clocks going backwards.
                0 => Sample {
                    at_ms: heap,
                    heap_allocated_bytes: rss,
                    resident_bytes: heap ^ rss,
                    requests_total: rss,
                    payments_total: heap,
                },
                // Extremes.
                1 => Sample {
                    at_ms: u64::MAX,
                    heap_allocated_bytes: u64::MAX,
                    resident_bytes: u64::MAX,
                    requests_total: u64::MAX,
                    payments_total: u64::MAX,
                },
                // A well-behaved step with a heap anywhere.
                _ => Sample {
                    at_ms: prev.at_ms.saturating_add(dt),
                    heap_allocated_bytes: heap >> (kind * 7),
                    resident_bytes: rss >> (kind * 7),
                    requests_total: prev.requests_total.saturating_add(dreq),
                    payments_total: prev.payments_total.saturating_add(dpay),
                },
            };
            out.push(s);
            prev = s;
        }
        out
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_detector_never_panics_and_reports_sane_numbers(seq in samples()) {
        let mut d = LeakDetector::new(small_config()).expect("valid");
        for s in seq {
            let a = d.observe(s);
            prop_assert!((0.0..=1.0).contains(&a.confidence), "confidence {}", a.confidence);
            prop_assert!(a.bytes_per_work.is_finite() && a.bytes_per_second.is_finite(), "{a:?}");
            prop_assert!(a.growth_bytes.is_finite(), "{a:?}");
            if let Some(t) = a.time_to_exhaustion_s {
                prop_assert!(t.is_finite() && t >= 0.0, "{a:?}");
            }
            prop_assert_eq!(a.at_ms, s.at_ms);
            prop_assert!(d.samples().len() <= 64);
            let _ = a.to_string();
            for w in d.windows().flatten() {
                prop_assert!((0.0..=1.0).contains(&w.confidence));
                prop_assert!(w.points <= 16);
            }
        }
    }

    #[test]
    fn the_default_detector_never_panics(seq in samples()) {
        let mut d = LeakDetector::new(LeakConfig::default()).expect("valid");
        for s in seq {
            let a = d.observe(s);
            prop_assert!((0.0..=1.0).contains(&a.confidence));
        }
    }

    #[test]
    fn the_alert_never_panics_and_ratios_are_fractions(
        obs in prop::collection::vec((any::<u64>(), any::<u64>(), any::<u64>(), any::<bool>()), 0..200)
    ) {
        let config = BurnRateConfig { short_window_s: 5, long_window_s: 20, min_events: 1, resolve_after_s: 3, ..BurnRateConfig::default() };
        let mut a = BurnRateAlert::new(config).expect("valid");
        let (mut t, mut ok, mut failed) = (0u64, 0u64, 0u64);
        for (x, y, z, wild) in obs {
            if wild {
                (t, ok, failed) = (x, y, z);
            } else {
                t = t.saturating_add(x % 3000);
                ok = ok.saturating_add(y % 500);
                failed = failed.saturating_add(z % 50);
            }
            let s = a.observe(t, ok, failed);
            for w in [s.short, s.long] {
                prop_assert!((0.0..=1.0).contains(&w.failure_ratio), "{s:?}");
                prop_assert!(w.burn_rate.is_finite() && w.burn_rate >= 0.0);
                prop_assert!(w.failures <= w.events);
            }
            prop_assert!(s.short.events <= s.long.events);
        }
    }

    #[test]
    fn the_ring_is_a_bounded_queue(capacity in 0usize..20, items in prop::collection::vec(any::<u32>(), 0..100)) {
        let mut ring = Ring::new(capacity);
        let mut model: VecDeque<u32> = VecDeque::new();
        let cap = capacity.max(1);
        for x in items {
            let evicted = ring.push(x);
            model.push_back(x);
            let expected = if model.len() > cap { model.pop_front() } else { None };
            prop_assert_eq!(evicted, expected);
            prop_assert_eq!(ring.len(), model.len());
            prop_assert!(ring.iter().eq(model.iter()));
            prop_assert!(ring.iter().rev().eq(model.iter().rev()));
            prop_assert_eq!(ring.first(), model.front());
            prop_assert_eq!(ring.last(), model.back());
            let (a, b) = ring.as_slices();
            prop_assert!(a.iter().chain(b).eq(model.iter()));
        }
    }
}

#[test]
fn config_limits_are_checked() {
    let bad = [
        LeakConfig {
            min_samples: 4,
            ..LeakConfig::default()
        },
        LeakConfig {
            shortest_window_samples: 10,
            ..LeakConfig::default()
        },
        LeakConfig {
            window_samples: 30,
            ..LeakConfig::default()
        },
        LeakConfig {
            window_samples: 100_000,
            ..LeakConfig::default()
        },
        LeakConfig {
            scale_factor: 1,
            ..LeakConfig::default()
        },
        LeakConfig {
            max_points: 4,
            ..LeakConfig::default()
        },
        LeakConfig {
            max_points: 1000,
            ..LeakConfig::default()
        },
        LeakConfig {
            leaking_bytes_per_work: 8.0,
            ..LeakConfig::default()
        },
        LeakConfig {
            suspect_bytes_per_work: f64::NAN,
            ..LeakConfig::default()
        },
        LeakConfig {
            leaking_confidence: 0.9,
            ..LeakConfig::default()
        },
        LeakConfig {
            plateau_ratio: 1.5,
            ..LeakConfig::default()
        },
        LeakConfig {
            leaking_growth_bytes: 1,
            ..LeakConfig::default()
        },
        LeakConfig {
            clear_after: 0,
            ..LeakConfig::default()
        },
        LeakConfig {
            memory_limit_bytes: Some(0),
            ..LeakConfig::default()
        },
    ];
    for c in bad {
        let err = LeakDetector::new(c).err();
        assert!(err.is_some(), "{c:?}");
        assert!(err.is_some_and(|e| {
            e.to_string()
                .starts_with("invalid memguard configuration: ")
        }));
    }
    assert!(LeakDetector::new(LeakConfig::default()).is_ok());
    assert_eq!(LeakConfig::default().windows(), vec![60, 240, 960, 3600]);
}

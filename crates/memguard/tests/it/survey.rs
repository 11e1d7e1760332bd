//! The survey behind the numbers in the crate documentation: every scenario over many seeds,
//! printed as a table. Slow in a debug build; run it with
//! `cargo test -p memguard --release --test it survey -- --ignored --nocapture`.

use memguard::LeakState;

use crate::support::*;

const SEEDS: u64 = 20;

/// Runs `make(seed)` for every seed and prints latencies (from `from_s`) and time in states.
fn row(name: &str, secs: u64, from_s: usize, make: impl Fn(u64) -> Process) {
    let (mut sus, mut leak, mut sus_total, mut sus_longest, mut leak_total) =
        (vec![], vec![], 0, 0, 0);
    let mut misses = 0;
    for seed in 1..=SEEDS {
        let run = Run::default_over(&make(seed).samples(secs));
        match run.first_at_least(LeakState::Suspect, from_s) {
            Some(t) => sus.push(t - from_s),
            None => misses += 1,
        }
        if let Some(t) = run.first_at_least(LeakState::Leaking, from_s) {
            leak.push(t - from_s);
        }
        sus_total += run.seconds_at_least(LeakState::Suspect);
        sus_longest = sus_longest.max(run.longest_at_least(LeakState::Suspect));
        leak_total += run.seconds_at_least(LeakState::Leaking);
    }
    let stats = |v: &mut Vec<usize>| {
        v.sort_unstable();
        match (v.first(), v.get(v.len() / 2), v.last()) {
            (Some(a), Some(m), Some(b)) => format!("{a:>5} {m:>5} {b:>5}"),
            _ => format!("{:>17}", "-"),
        }
    };
    println!(
        "{name:<44} | suspect min/med/max {} | leaking min/med/max {} ({}/{SEEDS}) | never suspect {misses} | s suspect+ total {sus_total} longest {sus_longest} | s leaking {leak_total}",
        stats(&mut sus),
        stats(&mut leak),
        leak.len(),
    );
}

/// A 4 KiB/request leak from 600 s to 900 s (the memory stays): seconds from the stop to
/// `ok`, and seconds not `ok` after that.
fn stop_row() {
    let (mut back, mut relapse) = (vec![], 0);
    for seed in 1..=SEEDS {
        let p = Process::clean(seed)
            .with(Shape::Leak {
                per_work: 4096.0,
                from_s: 600,
            })
            .with(Shape::Leak {
                per_work: -4096.0,
                from_s: 900,
            });
        let run = Run::default_over(&p.samples(3600));
        let ok = run.first_ok(900).unwrap_or(3600);
        back.push(ok - 900);
        relapse += run.seconds_at_least_from(LeakState::Suspect, ok);
    }
    back.sort_unstable();
    println!(
        "{:<44} | ok again min/med/max {:?} {:?} {:?} s after the stop | s not ok afterwards {relapse}",
        "leak 4096 B/request stops after 5 min",
        back.first(),
        back.get(back.len() / 2),
        back.last()
    );
}

#[test]
#[ignore]
fn survey() {
    for (b, secs) in [(4096.0, 300), (1024.0, 600), (256.0, 1200), (64.0, 3000)] {
        row(&format!("leak {b} B/request from start"), secs, 0, |seed| {
            Process::clean(seed).with(Shape::Leak {
                per_work: b,
                from_s: 0,
            })
        });
        row(
            &format!("leak {b} B/request after 10 min clean"),
            secs + 600,
            600,
            |seed| {
                Process::clean(seed).with(Shape::Leak {
                    per_work: b,
                    from_s: 600,
                })
            },
        );
    }
    row(
        "leak 4096 B/request from start, 100 requests/s",
        300,
        0,
        |seed| {
            Process {
                rate_per_s: 100,
                ..Process::clean(seed)
            }
            .with(Shape::Leak {
                per_work: 4096.0,
                from_s: 0,
            })
        },
    );
    row(
        "leak 4096 B/request after 10 min, 100 requests/s",
        900,
        600,
        |seed| {
            Process {
                rate_per_s: 100,
                ..Process::clean(seed)
            }
            .with(Shape::Leak {
                per_work: 4096.0,
                from_s: 600,
            })
        },
    );
    stop_row();
    row("flat, noise ±5 %, 2 h", 7200, 0, Process::clean);
    for tau in [10.0, 20.0, 30.0, 45.0, 60.0] {
        row(
            &format!("warm-up 64 MiB, tau {tau} s, at start"),
            900,
            0,
            |seed| {
                Process::clean(seed).with(Shape::WarmupExp {
                    cap: 64.0 * MIB,
                    tau_s: tau,
                    from_s: 0,
                })
            },
        );
        row(
            &format!("warm-up 64 MiB, tau {tau} s, after 10 min"),
            1500,
            0,
            |seed| {
                Process::clean(seed).with(Shape::WarmupExp {
                    cap: 64.0 * MIB,
                    tau_s: tau,
                    from_s: 600,
                })
            },
        );
    }
    for cap in [8.0, 12.0, 16.0, 32.0] {
        row(
            &format!("linear fill 1 KiB/request to {cap} MiB"),
            900,
            0,
            |seed| {
                Process::clean(seed).with(Shape::WarmupLinear {
                    per_work: 1024.0,
                    cap: cap * MIB,
                    from_s: 0,
                })
            },
        );
    }
    row("square sawtooth 2 MiB, 30 s", 3600, 0, |seed| {
        Process::clean(seed).with(Shape::SquareSawtooth {
            amp: 2.0 * MIB,
            period_s: 30,
            duty: 0.5,
        })
    });
    row("ramp sawtooth 2 MiB, 60 s", 3600, 0, |seed| {
        Process::clean(seed).with(Shape::RampSawtooth {
            amp: 2.0 * MIB,
            period_s: 60,
        })
    });
    row("ramp sawtooth 32 MiB, 120 s", 3600, 0, |seed| {
        Process::clean(seed).with(Shape::RampSawtooth {
            amp: 32.0 * MIB,
            period_s: 120,
        })
    });
    row(
        "ramp sawtooth 32 MiB, 120 s, after 1st drop",
        3600,
        240,
        |seed| {
            Process::clean(seed).with(Shape::RampSawtooth {
                amp: 32.0 * MIB,
                period_s: 120,
            })
        },
    );
    row("step 50 MiB at 15 min", 3600, 0, |seed| {
        Process::clean(seed).with(Shape::Step {
            bytes: 50.0 * MIB,
            at_s: 900,
        })
    });
    for sd in [1.0, 2.0, 4.0] {
        row(
            &format!("AR(1) phi 0.99, sd {sd} MiB, 2 h"),
            7200,
            0,
            |seed| {
                Process::clean(seed).with(Shape::Ar1 {
                    phi: 0.99,
                    sd: sd * MIB,
                })
            },
        );
    }
    row("idle, 1 h", 3600, 0, |seed| Process {
        rate_per_s: 0,
        ..Process::clean(seed)
    });
}

//! Runs the leak detector on a synthetic process and prints the timeline.
//!
//! ```sh
//! cargo run -p memguard --release --example detect                 # 4096 B/request, 200 requests/s
//! cargo run -p memguard --release --example detect -- 64 200 3600  # bytes/request, rate, seconds of leak
//! ```
//!
//! The process serves `rate` requests a second (±10 %) on a 128 MiB heap with ±5 % uniform
//! noise and a 2 MiB allocate/free sawtooth; after 5 clean minutes every request starts to
//! keep `bytes` bytes. One sample a second, as in production.

use std::time::Instant;

use memguard::{Bytes, LeakConfig, LeakDetector, LeakState, Sample};

/// SplitMix64, for reproducible noise.
struct Rng(u64);

impl Rng {
    fn symmetric(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        2.0 * ((z >> 11) as f64 / (1u64 << 53) as f64) - 1.0
    }
}

fn main() {
    let args: Vec<f64> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let leak_per_request = args.first().copied().unwrap_or(4096.0);
    let rate = args.get(1).copied().unwrap_or(200.0);
    let leak_seconds = args.get(2).copied().unwrap_or(120.0) as u64;
    let clean_seconds = 300;
    let base = 128.0 * 1024.0 * 1024.0;
    let limit: u64 = 2 << 30;

    let config = LeakConfig {
        memory_limit_bytes: Some(limit),
        ..LeakConfig::default()
    };
    let mut detector = match LeakDetector::new(config) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    println!(
        "synthetic process: {rate} requests/s, 128 MiB heap ±5 %, 2 MiB sawtooth; leak of {} per request from t = {clean_seconds} s; memory limit {}",
        Bytes(leak_per_request),
        Bytes(limit as f64)
    );

    let mut rng = Rng(42);
    let (mut requests, mut leaked) = (0u64, 0.0);
    let mut previous = LeakState::Ok;
    let mut spent = std::time::Duration::ZERO;
    let total = clean_seconds + leak_seconds;
    for t in 0..total {
        let served = (rate * (1.0 + 0.1 * rng.symmetric())).round().max(0.0) as u64;
        requests += served;
        if t >= clean_seconds {
            leaked += leak_per_request * served as f64;
        }
        let sawtooth = if t % 30 < 15 {
            2.0 * 1024.0 * 1024.0
        } else {
            0.0
        };
        let heap = (base * (1.0 + 0.05 * rng.symmetric()) + sawtooth + leaked).max(0.0) as u64;
        let sample = Sample {
            at_ms: t * 1000,
            heap_allocated_bytes: heap,
            resident_bytes: heap + heap / 5,
            requests_total: requests,
            payments_total: requests / 2,
        };
        let started = Instant::now();
        let a = detector.observe(sample);
        spent += started.elapsed();
        if a.state != previous || t % 30 == 0 || t + 1 == total {
            let since = if t >= clean_seconds {
                format!("leak +{:>4} s", t - clean_seconds)
            } else {
                "clean".to_string()
            };
            println!(
                "t={t:>5} s  {since:<12} heap {:>10}  {a}",
                Bytes(heap as f64).to_string()
            );
            previous = a.state;
        }
    }
    println!("\nwindows at the end (shortest first):");
    for w in detector.windows().flatten() {
        println!(
            "  {:>5} samples ({:>3} points): {:>8.1} B/request (95 % upper {:>8.1}), confidence {:.4}, growth {}, {}: {}",
            w.samples,
            w.points,
            w.bytes_per_work,
            w.bytes_per_work_upper,
            w.confidence,
            Bytes(w.growth_bytes),
            w.verdict.map_or("no verdict", LeakState::as_str),
            w.reason
        );
    }
    println!(
        "\n{} observations, {:.1} µs each on average",
        total,
        spent.as_secs_f64() * 1e6 / total as f64
    );
}

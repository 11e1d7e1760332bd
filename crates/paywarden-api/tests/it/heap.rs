//! Memory hygiene: after warm-up, a payment leaves nothing on the heap. jemalloc's
//! `stats.allocated` (the bytes the program holds) is read every [`STEP`] confirmed payments
//! through the API, and the Theil–Sen slope of those readings against the payments made is the
//! heap each payment keeps: robust to the sawtooth of caches that fill and flush, and to
//! what noise is left. It measures in a process of its own with jemalloc's thread caches off,
//! so the readings are the program's own allocations. A fault that keeps 64 B per payment
//! shows that the measurement sees a leak that small.

use std::time::Duration;

use paywarden_api::faults::Fault;
use paywarden_api::ApiConfig;

use crate::support::*;

const PAY: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";
/// Payments before measuring: the bounded caches fill, the pools open their connections.
const WARMUP: usize = 1_500;
/// Payments measured, and how often the heap is read.
const MEASURED: usize = 2_500;
const STEP: usize = 50;
/// Most heap a payment may keep, by the slope.
const RETAINED_PER_PAYMENT_MAX: f64 = 8.0;

fn allocated() -> f64 {
    tikv_jemalloc_ctl::epoch::advance().expect("jemalloc epoch");
    tikv_jemalloc_ctl::stats::allocated::read().expect("jemalloc stats.allocated") as f64
}

/// Bytes each payment keeps on the heap after warm-up (the slope), for an API with `faults`.
async fn retained_per_payment(faults: Vec<Fault>, tag: &str) -> f64 {
    let h = Harness::with(Duration::ZERO, ApiConfig { faults, ..ApiConfig::default() }).await;
    // Sized up front: the readings' own growth would be read as heap kept.
    let readings = MEASURED / STEP + 1;
    let (mut xs, mut ys) = (Vec::with_capacity(readings), Vec::with_capacity(readings));
    for i in 0..WARMUP + MEASURED {
        if i >= WARMUP && (i - WARMUP).is_multiple_of(STEP) {
            xs.push((i - WARMUP) as f64);
            ys.push(allocated());
        }
        let r = h.post_idem("/v1/payment_intents", &format!("heap-{tag}-{i}"), PAY).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let mut scratch = Vec::with_capacity(xs.len() * xs.len() / 2);
    memguard::stats::theil_sen(&xs, &ys, &mut scratch).expect("readings")
}

/// Set in the process that measures (see below).
const ALONE: &str = "PAYWARDEN_HEAP_TEST_ALONE";

#[tokio::test]
async fn a_payment_leaves_nothing_on_the_heap_after_warm_up() {
    if postgres_mode() {
        // The same code above the store; a second run would add time, not coverage.
        return;
    }
    // jemalloc's statistics are the whole process's: with the other tests of this binary
    // running beside it, their allocations would be counted (a CI run read 587 B "per
    // payment"). So this test runs itself again, alone in a process of its own.
    if std::env::var_os(ALONE).is_none() {
        let out = tokio::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "heap::a_payment_leaves_nothing_on_the_heap_after_warm_up", "--test-threads", "1", "--nocapture"])
            .env(ALONE, "1")
            // Without thread caches, `stats.allocated` moves only when the program allocates
            // or frees: a thread cache's fill and flush (hundreds of KiB) is no longer read
            // as heap (with them, clean runs read -12 to +8.7 B "per payment").
            .env("_RJEM_MALLOC_CONF", "tcache:false")
            .output()
            .await
            .unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success() && stdout.contains("1 passed"), "alone:\n{stdout}\n{stderr}");
        eprintln!("{}", stderr.lines().filter(|l| l.starts_with("heap kept")).collect::<Vec<_>>().join("\n"));
        return;
    }
    let clean = retained_per_payment(Vec::new(), "clean").await;
    let leaking = retained_per_payment(vec![Fault::Leak { bytes: 64 }], "leak").await;
    eprintln!("heap kept per payment after {WARMUP} warm-up payments, over {MEASURED}: {clean:.1} B; with a 64-B leak: {leaking:.1} B");
    assert!(clean <= RETAINED_PER_PAYMENT_MAX, "a payment keeps {clean:.1} B on the heap");
    assert!(leaking >= 48.0, "the measurement must see a 64-B leak: {leaking:.1} B");
}

//! memguard in a tokio service: the sampler on jemalloc, a work counter, the alert hook.
//!
//! ```sh
//! cargo run -p memguard --release --features profiler --example service            # leaks 4 KiB/request
//! cargo run -p memguard --release --features profiler --example service -- 0       # clean
//! _RJEM_MALLOC_CONF=prof:true,prof_active:true,lg_prof_sample:19 \
//!   cargo run -p memguard --release --features profiler --example service          # with leak sites
//! ```
//!
//! A stand-in "service" handles 500 requests a second on a tokio task and keeps
//! `BYTES_PER_REQUEST` (first argument, default 4096) of every request forever. The guard
//! samples once a second and prints its verdict; within about 40 s it says `leaking`, and with
//! heap profiling on (the environment variable above) it names `keep_for_later` as the site.
//! A service does the same: set jemalloc as the global allocator, read the shared-object
//! mappings before starting threads, count its work, spawn the guard, and read [`MemoryGuard::snapshot`] and [`MemoryGuard::alerts`] where it needs them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use memguard::sampler::{MemoryGuard, SamplerConfig, Work};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[inline(never)]
fn keep_for_later(kept: &Mutex<Vec<Box<[u8]>>>, bytes: usize) {
    if bytes > 0 {
        kept.lock().unwrap().push(std::hint::black_box(vec![1u8; bytes].into_boxed_slice()));
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Before the runtime's threads exist (see `read_mappings_before_threads`).
    memguard::profiler::read_mappings_before_threads();
    tokio::runtime::Runtime::new()?.block_on(service())
}

async fn service() -> Result<(), Box<dyn std::error::Error>> {
    let bytes: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(4096);
    let served = Arc::new(AtomicU64::new(0));

    // The service: 500 requests a second, each keeping `bytes`.
    let counter = served.clone();
    tokio::spawn(async move {
        let kept = Mutex::new(Vec::new());
        let mut tick = tokio::time::interval(Duration::from_millis(2));
        loop {
            tick.tick().await;
            let scratch = vec![0u8; 16 * 1024]; // per-request garbage, freed at once
            std::hint::black_box(&scratch);
            keep_for_later(&kept, bytes);
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });

    // The guard: jemalloc's statistics once a second, the service's work counter, and (if
    // jemalloc was started with prof:true) heap profiles diffed while a leak is suspected.
    let config = SamplerConfig {
        profiler: memguard::profiler::HeapProfiler::get(),
        alert_labels: vec![("service".into(), "example".into())],
        ..SamplerConfig::default()
    };
    let work = served.clone();
    let guard = MemoryGuard::spawn(
        config,
        Arc::new(move || {
            let n = work.load(Ordering::Relaxed);
            Work { requests_total: n, payments_total: n, successes_total: n, failures_total: 0 }
        }),
        |_reading, _assessment| {},
        |event| println!("ALERT {} {}: {:?}", event.alert.name, event.status, event.alert.annotations.get("leak_site")),
    )?;

    for _ in 0..90 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let Some(s) = guard.snapshot() else { continue };
        let site = s.sites.as_ref().and_then(|v| v.report.sites.first()).map(|x| x.function.clone());
        if let Some(a) = s.assessment {
            println!("{:>3} s  heap {:>6.1} MiB  {a}  site: {}", s.samples, s.reading.allocated_bytes as f64 / 1048576.0, site.unwrap_or_default());
        }
    }
    Ok(())
}

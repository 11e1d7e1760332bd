//! The I/O half of the memory guard: reads the allocator and the process every
//! [`SamplerConfig::interval`], feeds the pure [`LeakDetector`], and keeps the latest reading
//! and assessment for `/metrics` and the admin API. One tokio task; memory bounded by the
//! detector's ring.
//!
//! Heap figures come from jemalloc (`stats.allocated`, `active`, `resident`, `mapped`,
//! `retained`, read after advancing `epoch`, without which jemalloc serves cached values);
//! they are zero unless the process uses jemalloc as its global allocator
//! (`tikv_jemallocator::Jemalloc`). The resident set size comes from `/proc/self/status`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::leak::{Assessment, LeakConfig, LeakDetector, Sample};
use crate::ConfigError;

/// One reading of the allocator and the process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct MemoryReading {
    /// Bytes handed out by the allocator and not returned.
    pub allocated_bytes: u64,
    /// Bytes in active pages (allocated plus fragmentation within them).
    pub active_bytes: u64,
    /// Bytes in physically resident allocator pages.
    pub resident_bytes: u64,
    /// Bytes in mapped allocator chunks.
    pub mapped_bytes: u64,
    /// Bytes retained by the allocator (unmapped from use but kept in the address space).
    pub retained_bytes: u64,
    /// The process's resident set size.
    pub process_resident_bytes: u64,
}

/// Reads jemalloc's statistics (after advancing the epoch) and the process RSS. Errors from
/// jemalloc (not the global allocator, statistics compiled out) leave its figures at zero.
pub fn read_memory() -> MemoryReading {
    let mut r = MemoryReading { process_resident_bytes: process_resident_bytes(), ..MemoryReading::default() };
    if tikv_jemalloc_ctl::epoch::advance().is_ok() {
        let get = |v: Result<usize, tikv_jemalloc_ctl::Error>| v.map(|b| b as u64).unwrap_or(0);
        r.allocated_bytes = get(tikv_jemalloc_ctl::stats::allocated::read());
        r.active_bytes = get(tikv_jemalloc_ctl::stats::active::read());
        r.resident_bytes = get(tikv_jemalloc_ctl::stats::resident::read());
        r.mapped_bytes = get(tikv_jemalloc_ctl::stats::mapped::read());
        r.retained_bytes = get(tikv_jemalloc_ctl::stats::retained::read());
    }
    r
}

/// The resident set size from `/proc/self/status` (Linux); 0 where unavailable.
pub fn process_resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

/// The memory limit to judge exhaustion against: the cgroup's (v2, then v1), else physical
/// memory from `/proc/meminfo`; `None` if neither can be read.
pub fn default_memory_limit_bytes() -> Option<u64> {
    let read = |p: &str| std::fs::read_to_string(p).ok().and_then(|s| s.trim().parse::<u64>().ok());
    // "max" (no limit) does not parse; v1 reports a huge number for "no limit".
    let cgroup = read("/sys/fs/cgroup/memory.max").or_else(|| read("/sys/fs/cgroup/memory/memory.limit_in_bytes"));
    let physical = std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
        s.lines().find(|l| l.starts_with("MemTotal:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).map(|k| k * 1024)
    });
    match (cgroup, physical) {
        (Some(c), Some(p)) => Some(c.min(p)),
        (c, p) => c.or(p),
    }
}

#[derive(Debug, Clone)]
pub struct SamplerConfig {
    /// Time between samples. Default 1 s.
    pub interval: Duration,
    pub detector: LeakConfig,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig { interval: Duration::from_secs(1), detector: LeakConfig::default() }
    }
}

/// What the sampler last saw and concluded.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Snapshot {
    pub reading: MemoryReading,
    pub assessment: Option<Assessment>,
    pub samples: u64,
}

/// Cumulative work counters the service exposes to the sampler: (requests, payments).
pub type WorkCounters = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// Handle to a running sampler; cheap to clone. The task stops when every handle is dropped.
#[derive(Clone)]
pub struct MemoryGuard {
    state: Arc<Mutex<Snapshot>>,
}

impl MemoryGuard {
    /// Starts sampling on the current tokio runtime. `on_sample` runs after every sample
    /// (set gauges there); it must be quick.
    pub fn spawn(
        config: SamplerConfig,
        work: WorkCounters,
        on_sample: impl Fn(&MemoryReading, &Assessment) + Send + 'static,
    ) -> Result<MemoryGuard, ConfigError> {
        let mut detector = LeakDetector::new(config.detector)?;
        let state = Arc::new(Mutex::new(Snapshot { reading: read_memory(), assessment: None, samples: 0 }));
        let weak = Arc::downgrade(&state);
        let started = Instant::now();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(state) = weak.upgrade() else { break };
                let reading = read_memory();
                let (requests_total, payments_total) = work();
                let sample = Sample {
                    at_ms: started.elapsed().as_millis() as u64,
                    heap_allocated_bytes: reading.allocated_bytes,
                    resident_bytes: reading.process_resident_bytes,
                    requests_total,
                    payments_total,
                };
                let assessment = detector.observe(sample);
                on_sample(&reading, &assessment);
                if let Ok(mut s) = state.lock() {
                    s.reading = reading;
                    s.assessment = Some(assessment);
                    s.samples += 1;
                }
            }
        });
        Ok(MemoryGuard { state })
    }

    pub fn snapshot(&self) -> Option<Snapshot> {
        self.state.lock().ok().map(|s| *s)
    }
}

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

use crate::leak::{Assessment, LeakConfig, LeakDetector, LeakState, Sample};
use crate::sites::{SiteConfig, SiteReport};
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
    /// Time between the two heap profiles whose diff names the growing allocation sites.
    /// Profiles are taken only while the detector's verdict is not `ok`. Default 10 s.
    pub profile_window: Duration,
    pub sites: SiteConfig,
    /// The heap profiler; without one, the leak report has no sites.
    #[cfg(feature = "profiler")]
    pub profiler: Option<crate::profiler::HeapProfiler>,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        SamplerConfig {
            interval: Duration::from_secs(1),
            detector: LeakConfig::default(),
            profile_window: Duration::from_secs(10),
            sites: SiteConfig::default(),
            #[cfg(feature = "profiler")]
            profiler: None,
        }
    }
}

/// The latest growing-sites report and when it was made.
#[derive(Debug, Clone, Serialize)]
pub struct SitesView {
    /// Milliseconds since the guard started, at the second profile.
    pub at_ms: u64,
    /// The detector's state when the report was made.
    pub state: LeakState,
    #[serde(flatten)]
    pub report: SiteReport,
}

/// What the sampler last saw and concluded.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub reading: MemoryReading,
    pub assessment: Option<Assessment>,
    pub samples: u64,
    /// Milliseconds since the guard started.
    pub at_ms: u64,
    /// The last diff of heap profiles, if the detector ever suspected a leak.
    pub sites: Option<Arc<SitesView>>,
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
        if config.interval.is_zero() {
            return Err(ConfigError { field: "interval", problem: "must be above zero" });
        }
        if config.profile_window < config.interval {
            return Err(ConfigError { field: "profile_window", problem: "must be at least one sampling interval" });
        }
        let mut detector = LeakDetector::new(config.detector)?;
        let state = Arc::new(Mutex::new(Snapshot { reading: read_memory(), assessment: None, samples: 0, at_ms: 0, sites: None }));
        let weak = Arc::downgrade(&state);
        let started = Instant::now();
        #[cfg(feature = "profiler")]
        let mut profiles = Profiles { profiler: config.profiler.clone(), baseline: None, window: config.profile_window, sites: config.sites.clone() };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    break;
                }
                let reading = read_memory();
                let (requests_total, payments_total) = work();
                let at_ms = started.elapsed().as_millis() as u64;
                let sample = Sample {
                    at_ms,
                    heap_allocated_bytes: reading.allocated_bytes,
                    resident_bytes: reading.process_resident_bytes,
                    requests_total,
                    payments_total,
                };
                let assessment = detector.observe(sample);
                on_sample(&reading, &assessment);
                #[cfg(feature = "profiler")]
                let sites = profiles.step(&assessment).await;
                #[cfg(not(feature = "profiler"))]
                let sites: Option<SitesView> = None;
                let Some(state) = weak.upgrade() else { break };
                if let Ok(mut s) = state.lock() {
                    s.reading = reading;
                    s.assessment = Some(assessment);
                    s.samples += 1;
                    s.at_ms = at_ms;
                    if let Some(v) = sites {
                        s.sites = Some(Arc::new(v));
                    }
                }
            }
        });
        Ok(MemoryGuard { state })
    }

    pub fn snapshot(&self) -> Option<Snapshot> {
        self.state.lock().ok().map(|s| s.clone())
    }
}

/// Heap profiles while a leak is suspected: one every `window`, each diffed with the one
/// before. Holds at most one parsed profile.
#[cfg(feature = "profiler")]
struct Profiles {
    profiler: Option<crate::profiler::HeapProfiler>,
    baseline: Option<crate::sites::HeapProfile>,
    window: Duration,
    sites: SiteConfig,
}

#[cfg(feature = "profiler")]
impl Profiles {
    async fn step(&mut self, a: &Assessment) -> Option<SitesView> {
        let profiler = self.profiler.as_ref()?;
        let quiet = a.state == LeakState::Ok && a.instant.is_none_or(|i| i == LeakState::Ok);
        if quiet {
            self.baseline = None;
            return None;
        }
        let due = self.baseline.as_ref().is_none_or(|b| a.at_ms.saturating_sub(b.at_ms) >= self.window.as_millis() as u64);
        if !due {
            return None;
        }
        let now = profiler.profile(a.at_ms).await.ok()?;
        let Some(before) = self.baseline.replace(now) else { return None };
        let after = self.baseline.clone()?;
        let config = self.sites.clone();
        let p = profiler.clone();
        let report = tokio::task::spawn_blocking(move || crate::sites::growing_sites(&before, &after, &config, &mut |addr| p.symbolize(addr)))
            .await
            .ok()?;
        Some(SitesView { at_ms: a.at_ms, state: a.state, report })
    }
}

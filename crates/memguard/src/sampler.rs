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

use crate::alerts::{AlertBook, AlertEvent, AlertStatus, AlertsView, WebhookMessage, EVENTS_MAX_DEFAULT};
use crate::burn::{AlertState, BurnRateAlert, BurnRateConfig, BurnRateStatus};
use crate::leak::{Assessment, LeakConfig, LeakDetector, LeakState, Sample};
use crate::notify::{NotifierStats, WebhookConfig, WebhookNotifier};
use crate::Bytes;
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
    /// The failure-rate alert on [`Work::successes_total`] and [`Work::failures_total`];
    /// `None` turns it off. Default on, with [`BurnRateConfig::default`].
    pub burn_rate: Option<BurnRateConfig>,
    /// Labels on every alert (e.g. `instance`, `version`); `alertname` and `severity` are
    /// set by the guard.
    pub alert_labels: Vec<(String, String)>,
    /// Firing and resolved events recorded (oldest dropped first). Default 256.
    pub alert_events_max: usize,
    /// Where to POST alert events in Alertmanager's webhook format; `None`: none.
    pub webhook: Option<WebhookConfig>,
    /// `externalURL` and `generatorURL` of webhook messages: where an operator looks next.
    pub external_url: String,
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
            burn_rate: Some(BurnRateConfig::default()),
            alert_labels: Vec::new(),
            alert_events_max: EVENTS_MAX_DEFAULT,
            webhook: None,
            external_url: String::new(),
        }
    }
}

/// The alert raised while the detector's state is `leaking`.
pub const ALERT_MEMORY_LEAK: &str = "MemoryLeak";
/// The alert raised while the failure-rate alert fires.
pub const ALERT_FAILURE_BURN_RATE: &str = "PaymentFailureBurnRate";

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
    /// The failure-rate alert's last status, if it runs.
    pub burn_rate: Option<BurnRateStatus>,
    /// The webhook's delivery counters, if one is configured.
    pub webhook: Option<NotifierStats>,
}

/// Cumulative counters of the work a service has done, read once a sample.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// Requests served: the leak detector's default unit of work.
    pub requests_total: u64,
    /// Payments (or whatever the service's unit is) served: [`WorkCounter::Payments`].
    ///
    /// [`WorkCounter::Payments`]: crate::WorkCounter::Payments
    pub payments_total: u64,
    /// Operations that succeeded, for the failure-rate alert.
    pub successes_total: u64,
    /// Operations that failed on the service's side, for the failure-rate alert.
    pub failures_total: u64,
}

/// Reads the service's [`Work`] counters.
pub type WorkCounters = Arc<dyn Fn() -> Work + Send + Sync>;

/// Handle to a running sampler; cheap to clone. The task stops when every handle is dropped.
#[derive(Clone)]
pub struct MemoryGuard {
    state: Arc<Mutex<Snapshot>>,
    alerts: Arc<Mutex<AlertBook>>,
}

impl MemoryGuard {
    /// Starts sampling on the current tokio runtime. `on_sample` runs after every sample
    /// (set gauges there) and `on_alert` after every firing or resolved event (log it
    /// there); both must be quick.
    pub fn spawn(
        config: SamplerConfig,
        work: WorkCounters,
        on_sample: impl Fn(&MemoryReading, &Assessment) + Send + 'static,
        on_alert: impl Fn(&AlertEvent) + Send + 'static,
    ) -> Result<MemoryGuard, ConfigError> {
        if config.interval.is_zero() {
            return Err(ConfigError { field: "interval", problem: "must be above zero" });
        }
        if config.profile_window < config.interval {
            return Err(ConfigError { field: "profile_window", problem: "must be at least one sampling interval" });
        }
        let mut detector = LeakDetector::new(config.detector)?;
        let mut burn = config.burn_rate.map(BurnRateAlert::new).transpose()?;
        let started = Instant::now();
        // The counters' values now are the baseline: what happens from here on counts, even
        // if it all happens before the first tick.
        if let Some(b) = burn.as_mut() {
            let w = work();
            b.observe(0, w.successes_total, w.failures_total);
        }
        let notifier = config.webhook.clone().map(WebhookNotifier::spawn).transpose()?;
        let state = Arc::new(Mutex::new(Snapshot {
            reading: read_memory(),
            assessment: None,
            samples: 0,
            at_ms: 0,
            sites: None,
            burn_rate: None,
            webhook: None,
        }));
        let alerts = Arc::new(Mutex::new(AlertBook::new(config.alert_events_max)));
        let weak = Arc::downgrade(&state);
        let book = alerts.clone();
        #[cfg(feature = "profiler")]
        let mut profiles = Profiles { profiler: config.profiler.clone(), baseline: None, window: config.profile_window, sites: config.sites.clone() };
        let mut raiser = Raiser {
            labels: config.alert_labels.clone(),
            receiver: config.webhook.as_ref().map(|w| w.receiver.clone()).unwrap_or_default(),
            external_url: config.external_url.clone(),
            notifier,
            on_alert,
            notified_site: None,
        };
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(config.interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_sites: Option<Arc<SitesView>> = None;
            loop {
                tick.tick().await;
                if weak.strong_count() == 0 {
                    break;
                }
                let reading = read_memory();
                let w = work();
                let at_ms = started.elapsed().as_millis() as u64;
                let sample = Sample {
                    at_ms,
                    heap_allocated_bytes: reading.allocated_bytes,
                    resident_bytes: reading.process_resident_bytes,
                    requests_total: w.requests_total,
                    payments_total: w.payments_total,
                };
                let assessment = detector.observe(sample);
                on_sample(&reading, &assessment);
                let burn_status = burn.as_mut().map(|b| b.observe(at_ms, w.successes_total, w.failures_total));
                #[cfg(feature = "profiler")]
                if let Some(v) = profiles.step(&assessment).await {
                    last_sites = Some(Arc::new(v));
                }
                // A report from before the current episode names nothing about it.
                if assessment.state == LeakState::Ok && assessment.instant.is_none_or(|i| i == LeakState::Ok) {
                    raiser.notified_site = None;
                }
                if let Ok(mut book) = book.lock() {
                    raiser.raise(&mut book, &assessment, last_sites.as_deref(), burn_status.as_ref());
                }
                let Some(state) = weak.upgrade() else { break };
                if let Ok(mut s) = state.lock() {
                    s.reading = reading;
                    s.assessment = Some(assessment);
                    s.samples += 1;
                    s.at_ms = at_ms;
                    s.sites = last_sites.clone();
                    s.burn_rate = burn_status;
                    s.webhook = raiser.notifier.as_ref().map(WebhookNotifier::stats);
                }
            }
        });
        Ok(MemoryGuard { state, alerts })
    }

    pub fn snapshot(&self) -> Option<Snapshot> {
        self.state.lock().ok().map(|s| s.clone())
    }

    /// Active alerts and the recent firing/resolved events.
    pub fn alerts(&self) -> Option<AlertsView> {
        self.alerts.lock().ok().map(|b| b.view())
    }

    /// (events recorded, alerts active), without copying them.
    pub fn alert_counts(&self) -> Option<(usize, usize)> {
        self.alerts.lock().ok().map(|b| (b.events().count(), b.active().len()))
    }
}

/// Turns the detector's and the failure-rate alert's states into alerts: an event on every
/// transition (de-duplicated by the book), sent to the log hook and the webhook.
struct Raiser<F> {
    labels: Vec<(String, String)>,
    receiver: String,
    external_url: String,
    notifier: Option<WebhookNotifier>,
    on_alert: F,
    /// The leak site the last webhook message named, within the current episode.
    notified_site: Option<String>,
}

impl<F: Fn(&AlertEvent)> Raiser<F> {
    fn raise(&mut self, book: &mut AlertBook, a: &Assessment, sites: Option<&SitesView>, burn: Option<&BurnRateStatus>) {
        let now_ms = unix_ms();
        let mut labels: Vec<(&str, &str)> = self.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        labels.push(("severity", "critical"));

        let leaking = a.state == LeakState::Leaking;
        let mut notes: Vec<(&str, String)> = vec![
            ("summary", format!("Heap growing at {}/s ({:.0} B per unit of work)", Bytes(a.bytes_per_second), a.bytes_per_work)),
            ("description", a.to_string()),
        ];
        if let Some(t) = a.time_to_exhaustion_s {
            notes.push(("time_to_exhaustion", format!("{t:.0} s")));
        }
        let top = sites.and_then(|v| v.report.sites.first());
        if let Some(site) = top {
            notes.push(("leak_site", site.function.clone()));
            let list: Vec<String> = sites
                .into_iter()
                .flat_map(|v| v.report.sites.iter().take(3))
                .map(|s| format!("{} ({}/s, {:.0} %)", s.function, Bytes(s.bytes_per_second), s.share * 100.0))
                .collect();
            notes.push(("leak_sites", list.join("; ")));
        }
        let refs: Vec<(&str, &str)> = notes.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let event = book.set(now_ms, ALERT_MEMORY_LEAK, &labels, &refs, leaking);
        match event {
            Some(e) => {
                self.notified_site = top.map(|s| s.function.clone());
                self.emit(&e);
            }
            // Firing already, and the heap diff now names a (new) site: tell the receiver
            // again, with the same fingerprint and start (Alertmanager's repeat).
            None if leaking && top.is_some() && top.map(|s| &s.function) != self.notified_site.as_ref() => {
                if let Some(alert) = book.active().find(|x| x.name == ALERT_MEMORY_LEAK).cloned() {
                    self.notified_site = top.map(|s| s.function.clone());
                    let e = AlertEvent { seq: book.last_seq(), at_ms: now_ms, status: AlertStatus::Firing, alert };
                    self.send(&e);
                }
            }
            None => {}
        }

        if let Some(b) = burn {
            let firing = b.state == AlertState::Firing;
            let notes = [
                ("summary", format!("Payment failure rate {:.2} % over {} s ({:.1}x the error budget's burn rate)", b.short.failure_ratio * 100.0, b.short.window_s, b.short.burn_rate)),
                ("description", b.to_string()),
            ];
            let refs: Vec<(&str, &str)> = notes.iter().map(|(k, v)| (*k, v.as_str())).collect();
            if let Some(e) = book.set(now_ms, ALERT_FAILURE_BURN_RATE, &labels, &refs, firing) {
                self.emit(&e);
            }
        }
    }

    fn emit(&self, e: &AlertEvent) {
        (self.on_alert)(e);
        self.send(e);
    }

    fn send(&self, e: &AlertEvent) {
        if let Some(n) = &self.notifier {
            n.notify(WebhookMessage::from_event(e, &self.receiver, &self.external_url));
        }
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
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
        let before = self.baseline.replace(now)?;
        let after = self.baseline.clone()?;
        let report = profiler.growing_sites(before, after, self.sites.clone()).await.ok()?;
        Some(SitesView { at_ms: a.at_ms, state: a.state, report })
    }
}

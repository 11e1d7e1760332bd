//! `serve`'s memory guard: memguard's sampler on jemalloc, its verdict on `/metrics`, and the
//! admin endpoints (leak report with allocation sites, alerts, heap profile).

use std::sync::Arc;
use std::time::Duration;

use memguard::alerts::{AlertEvent, AlertStatus, ACTIVE_MAX};
use memguard::notify::WebhookConfig;
use memguard::profiler::HeapProfiler;
use memguard::sites::{HeapProfile, SiteConfig};
use memguard::sampler::{default_memory_limit_bytes, MemoryGuard, SamplerConfig, Work};
use paywarden_api::metrics::VERSION;
use paywarden_api::{AdminHooks, App};

/// What `serve` tells its memory guard.
pub struct GuardOptions {
    /// `--memory-limit`; default: the cgroup's limit, else physical memory.
    pub limit: Option<u64>,
    /// `--memory-sample-interval`.
    pub interval: Duration,
    /// `--alert-webhook`: an Alertmanager-compatible receiver.
    pub webhook: Option<String>,
    /// This instance's address, the `instance` label of its alerts.
    pub instance: String,
}

/// Samples jemalloc and the RSS, feeds memguard's leak detector, and publishes the verdict on
/// `/metrics` and at the admin endpoints.
pub async fn start(app: &Arc<App>, opts: GuardOptions) -> anyhow::Result<()> {
    let GuardOptions { limit, interval, webhook, instance } = opts;
    let limit = limit.or_else(default_memory_limit_bytes);
    let profiler = HeapProfiler::get();
    match &profiler {
        Some(p) => {
            let (active, lg_sample) = p.status().await;
            tracing::info!(active, lg_sample, "jemalloc heap profiling");
        }
        None => tracing::warn!("jemalloc heap profiling is off: leak reports will have no allocation sites"),
    }
    let webhook = webhook.map(|url| WebhookConfig { receiver: "paywarden".into(), ..WebhookConfig::new(url) });
    let mut config = SamplerConfig {
        interval,
        profiler: profiler.clone(),
        alert_labels: vec![("instance".into(), instance.clone()), ("version".into(), VERSION.into()), ("service".into(), "paywarden".into())],
        external_url: format!("http://{instance}/admin/alerts"),
        webhook,
        ..SamplerConfig::default()
    };
    config.detector.memory_limit_bytes = limit;
    let events_max = config.alert_events_max;
    let queue_max = config.webhook.as_ref().map(|w| w.queue_max);
    if let Some(l) = limit {
        app.metrics().memory_limit.set(i64::try_from(l).unwrap_or(i64::MAX));
    }
    let counters = app.clone();
    let gauges = app.clone();
    let guard = MemoryGuard::spawn(
        config,
        Arc::new(move || {
            let w = counters.work_counters();
            Work {
                requests_total: w.requests_total,
                payments_total: w.payments_total,
                successes_total: w.payment_requests_total.saturating_sub(w.payment_failures_total),
                failures_total: w.payment_failures_total,
            }
        }),
        move |reading, a| {
            let m = gauges.metrics();
            m.heap_allocated.set(i64::try_from(reading.allocated_bytes).unwrap_or(i64::MAX));
            m.heap_resident.set(i64::try_from(reading.resident_bytes).unwrap_or(i64::MAX));
            m.leak_state.set(i64::from(a.state.level()));
            m.heap_growth.set(a.bytes_per_second);
        },
        |e: &AlertEvent| {
            let a = &e.alert;
            let summary = a.annotations.get("summary").map(String::as_str).unwrap_or("");
            let site = a.annotations.get("leak_site").map(String::as_str);
            match e.status {
                AlertStatus::Firing => tracing::error!(alert = %a.name, fingerprint = %a.fingerprint, leak_site = site, "ALERT FIRING: {summary}"),
                AlertStatus::Resolved => tracing::warn!(alert = %a.name, fingerprint = %a.fingerprint, "alert resolved: {summary}"),
            }
        },
    )
    .map_err(|e| anyhow::anyhow!("memory guard: {e}"))?;
    // The guard's own bounded structures, on /metrics with the others.
    let (watched, m) = (guard.clone(), app.clone());
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            if let Some((events, active)) = watched.alert_counts() {
                m.metrics().component("alert_events", events, events_max);
                m.metrics().component("alerts_active", active, ACTIVE_MAX);
            }
            if let (Some(w), Some(max)) = (watched.snapshot().and_then(|s| s.webhook), queue_max) {
                m.metrics().component("alert_webhook_queue", w.queued.saturating_sub(w.sent + w.failed) as usize, max);
            }
        }
    });
    app.set_admin_hooks(Arc::new(Hooks { guard, profiler, limit, reference: tokio::sync::Mutex::new(None), started: std::time::Instant::now() }));
    tracing::info!(memory_limit_bytes = ?limit, interval_ms = interval.as_millis() as u64, "memory guard sampling");
    Ok(())
}

struct Hooks {
    guard: MemoryGuard,
    profiler: Option<HeapProfiler>,
    limit: Option<u64>,
    /// The reference heap profile of `POST /admin/memory/profile/reference` (one, replaced).
    reference: tokio::sync::Mutex<Option<HeapProfile>>,
    started: std::time::Instant,
}

impl Hooks {
    fn profiler(&self) -> Result<&HeapProfiler, String> {
        self.profiler.as_ref().ok_or_else(|| "jemalloc heap profiling is off in this process (started without prof:true)".to_string())
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

#[async_trait::async_trait]
impl AdminHooks for Hooks {
    fn leak_report(&self) -> serde_json::Value {
        let Some(s) = self.guard.snapshot() else {
            return serde_json::json!({"state": "ok", "samples": 0});
        };
        serde_json::json!({
            "state": s.assessment.map(|a| a.state.as_str()).unwrap_or("ok"),
            "assessment": s.assessment.map(|a| serde_json::json!({
                "state": a.state.as_str(),
                "summary": a.to_string(),
                "bytes_per_work": a.bytes_per_work,
                "bytes_per_second": a.bytes_per_second,
                "confidence": a.confidence,
                "time_to_exhaustion_s": a.time_to_exhaustion_s,
                "window_samples": a.window_samples,
            })),
            "memory": s.reading,
            "memory_limit_bytes": self.limit,
            "samples": s.samples,
            "uptime_s": s.at_ms / 1000,
            "heap_profiling": self.profiler.is_some(),
            // The last diff of two heap profiles taken while a leak was suspected: the
            // allocation sites that grew, largest first.
            "sites": s.sites.as_ref().map(|v| &v.report.sites),
            "sites_report": s.sites.as_ref().map(|v| serde_json::json!({
                "at_uptime_s": v.at_ms / 1000,
                "state": v.state.as_str(),
                "window_s": v.report.window_s,
                "heap_growth_bytes": v.report.heap_growth_bytes,
            })),
        })
    }

    fn alerts(&self) -> serde_json::Value {
        let view = self.guard.alerts();
        let snap = self.guard.snapshot();
        serde_json::json!({
            "active": view.as_ref().map(|v| &v.active),
            "events": view.as_ref().map(|v| &v.events),
            "dropped": view.as_ref().map(|v| v.dropped),
            "failure_rate": snap.as_ref().and_then(|s| s.burn_rate),
            "webhook": snap.as_ref().and_then(|s| s.webhook),
        })
    }

    async fn mark_heap(&self) -> Result<serde_json::Value, String> {
        let p = self.profiler()?;
        let profile = p.profile(self.now_ms()).await.map_err(|e| e.to_string())?;
        let out = serde_json::json!({
            "at_uptime_s": profile.at_ms as f64 / 1000.0,
            "stacks": profile.stacks.len(),
            "profiled_bytes": profile.total_bytes(),
        });
        *self.reference.lock().await = Some(profile);
        Ok(out)
    }

    async fn heap_diff(&self) -> Result<serde_json::Value, String> {
        let p = self.profiler()?;
        // One diff at a time: the reference stays put while it is compared.
        let reference = self.reference.lock().await;
        let Some(before) = reference.clone() else {
            return Err("no reference profile yet; POST /admin/memory/profile/reference first".into());
        };
        let after = p.profile(self.now_ms()).await.map_err(|e| e.to_string())?;
        // Below two sampling intervals of growth a site is sampling noise.
        let (_, lg_sample) = p.status().await;
        // The diff's own work (dumping and parsing the profile) is not the program's growth.
        let mut config = SiteConfig { min_growth_bytes: 2.0 * (1u64 << lg_sample.min(40)) as f64, ..SiteConfig::default() };
        config.skip_prefixes.extend(["paywarden::guard::".into(), "paywarden_api::heap_diff".into()]);
        let report = p.growing_sites(before, after, config).await.map_err(|e| e.to_string())?;
        drop(reference);
        let mut v = serde_json::to_value(report).map_err(|e| e.to_string())?;
        // What one sample stands for: a reader weighs a site's growth in samples.
        v["sample_interval_bytes"] = serde_json::json!(1u64 << lg_sample.min(40));
        Ok(v)
    }

    async fn heap_profile(&self) -> Result<Vec<u8>, String> {
        match &self.profiler {
            Some(p) => p.pprof().await.map_err(|e| e.to_string()),
            None => Err("jemalloc heap profiling is off in this process (started without prof:true)".into()),
        }
    }
}

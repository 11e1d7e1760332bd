//! `/metrics` in the Prometheus (OpenMetrics) text format, with Prometheus' naming: units last
//! (`_bytes`, `_seconds`), counters ending in `_total`. Every series carries the instance's
//! `version` label, so a canary and its baseline can be told apart on one dashboard.
//!
//! Bounded by construction: label values come from fixed sets (route templates, status codes,
//! outcomes, component names), never from request data.

use std::borrow::Cow;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub route: String,
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// `ok`, `declined`, `rejected` (other 4xx) or `error` (5xx).
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComponentLabels {
    pub component: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FaultLabels {
    pub fault: String,
}

pub struct Metrics {
    registry: Registry,
    pub http_requests: Family<HttpLabels, Counter>,
    pub http_duration: Family<RouteLabels, Histogram>,
    pub payments: Family<OutcomeLabels, Counter>,
    pub resident: Gauge,
    /// Set by the memory guard's sampler (see `paywarden serve`).
    pub heap_allocated: Gauge,
    pub heap_resident: Gauge,
    pub memory_limit: Gauge,
    pub leak_state: Gauge,
    pub heap_growth: Gauge<f64, AtomicU64>,
    pub component_length: Family<ComponentLabels, Gauge>,
    pub component_limit: Family<ComponentLabels, Gauge>,
    pub faults: Family<FaultLabels, Gauge<f64, AtomicU64>>,
    pub webhook_attempts: Family<OutcomeLabels, Counter>,
    /// Deliveries queued on disk (the outbox's backlog), set by the delivery loop.
    pub webhook_pending: Gauge,
    /// The store's own counters, copied in at scrape time.
    pub store_commits: Counter,
    pub store_batches: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 s.
    Histogram::new(exponential_buckets(0.000_25, 2.0, 15))
}

impl Metrics {
    /// `memory`: register the heap and leak gauges (only when a memory guard sets them, so
    /// no series reports a zero that means "not measured").
    pub fn new(memory: bool) -> Metrics {
        let mut registry = Registry::with_labels([(Cow::Borrowed("version"), Cow::Borrowed(VERSION))].into_iter());
        let m = Metrics {
            http_requests: Family::default(),
            http_duration: Family::new_with_constructor(latency_histogram),
            payments: Family::default(),
            resident: Gauge::default(),
            heap_allocated: Gauge::default(),
            heap_resident: Gauge::default(),
            memory_limit: Gauge::default(),
            leak_state: Gauge::default(),
            heap_growth: Gauge::default(),
            component_length: Family::default(),
            component_limit: Family::default(),
            faults: Family::default(),
            webhook_attempts: Family::default(),
            webhook_pending: Gauge::default(),
            store_commits: Counter::default(),
            store_batches: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("http_requests", "HTTP requests answered, by route template and status", m.http_requests.clone());
        registry.register(
            "http_request_duration_seconds",
            "Time from request to response, by route template",
            m.http_duration.clone(),
        );
        registry.register(
            "paywarden_payments",
            "PaymentIntent requests by outcome: ok, declined (402), rejected (other 4xx), error (5xx)",
            m.payments.clone(),
        );
        registry.register("process_resident_memory_bytes", "Resident set size of the process", m.resident.clone());
        if memory {
            registry.register("paywarden_heap_allocated_bytes", "Bytes allocated by the application (jemalloc stats.allocated)", m.heap_allocated.clone());
            registry.register("paywarden_heap_resident_bytes", "Bytes in physically resident allocator pages (jemalloc stats.resident)", m.heap_resident.clone());
            registry.register("memguard_leak_state", "Leak detector state: 0 ok, 1 suspect, 2 leaking", m.leak_state.clone());
            registry.register(
                "memguard_heap_growth_bytes_per_second",
                "Robust (Theil-Sen) trend of allocated heap over the detector's window",
                m.heap_growth.clone(),
            );
            registry.register("paywarden_memory_limit_bytes", "The memory limit leak forecasts are judged against (--memory-limit)", m.memory_limit.clone());
        }
        registry.register(
            "paywarden_webhook_attempts",
            "Webhook delivery attempts by outcome: delivered, retry, gave_up (past the retry horizon)",
            m.webhook_attempts.clone(),
        );
        registry.register("paywarden_webhook_pending", "Webhook deliveries queued on disk, not yet delivered", m.webhook_pending.clone());
        registry.register(
            "paywarden_store_commits",
            "Write transactions the store committed: on SQLite one group commit (one fsync) for every batch queued meanwhile, on PostgreSQL one per batch",
            m.store_commits.clone(),
        );
        registry.register(
            "paywarden_store_batches_committed",
            "Write batches (one per request that changes something) the store committed; divided by paywarden_store_commits_total, the mean group size",
            m.store_batches.clone(),
        );
        registry.register("paywarden_component_length", "Items held by a bounded structure", m.component_length.clone());
        registry.register("paywarden_component_limit", "The limit of that bounded structure", m.component_limit.clone());
        registry.register("paywarden_fault_injected", "Faults injected with serve --fault (value: bytes per payment, error rate, or seconds of latency)", m.faults.clone());
        let build = Gauge::<i64>::default();
        build.set(1);
        registry.register("paywarden_build_info", "Always 1; the version label names the build", build);
        Metrics { registry, ..m }
    }

    /// Counts a PaymentIntent request by its response status.
    pub fn payment(&self, status: u16) {
        let outcome = match status {
            200..=299 => "ok",
            402 => "declined",
            400..=499 => "rejected",
            _ => "error",
        };
        self.payments.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Counts a webhook delivery attempt.
    pub fn webhook_attempt(&self, outcome: &'static str) {
        self.webhook_attempts.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    pub fn component(&self, component: &'static str, length: usize, limit: usize) {
        let l = ComponentLabels { component };
        self.component_length.get_or_create(&l).set(length as i64);
        self.component_limit.get_or_create(&l).set(limit as i64);
    }

    /// Mirrors the store's monotonic counters (read at scrape time, never decremented).
    pub fn store(&self, commits: u64, batches: u64) {
        self.store_commits.inner().fetch_max(commits, std::sync::atomic::Ordering::Relaxed);
        self.store_batches.inner().fetch_max(batches, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(false)
    }
}

/// The process's resident set size, from `/proc/self/status` (Linux); 0 where unavailable.
pub fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map(|kib| kib * 1024)
        .unwrap_or(0)
}

//! The target's memory during a run: its `/metrics` read once a second, and memguard's leak
//! detector (the same one `paywarden serve` runs) judging the heap against the work this run
//! has done: the soak verdict.

use memguard::{LeakConfig, LeakDetector, LeakState, Sample, WorkCounter};

use crate::summary::{MemorySummary, TargetSample};

/// Largest `/metrics` body read; a larger one is not a paywarden instance's.
pub const METRICS_BYTES_MAX: usize = 4 << 20;

/// Reads the figures a run reports from a Prometheus text exposition: the sum over series of
/// `process_resident_memory_bytes`, `paywarden_heap_allocated_bytes` and the largest
/// `memguard_leak_state`.
pub fn parse_metrics(text: &str) -> TargetSample {
    let mut s = TargetSample { rss_bytes: None, heap_bytes: None, leak_state: None };
    for line in text.lines() {
        let Some((name, v)) = memguard::exposition::sample(line) else { continue };
        if v < 0.0 {
            continue;
        }
        match name {
            "process_resident_memory_bytes" => s.rss_bytes = Some(s.rss_bytes.unwrap_or(0) + v as u64),
            "paywarden_heap_allocated_bytes" => s.heap_bytes = Some(s.heap_bytes.unwrap_or(0) + v as u64),
            "memguard_leak_state" => s.leak_state = Some(s.leak_state.unwrap_or(0).max(v as u8)),
            _ => {}
        }
    }
    s
}

/// Memory over the run and the detector's verdict on it.
pub struct MemoryWatch {
    detector: LeakDetector,
    first: Option<TargetSample>,
    last: Option<TargetSample>,
    rss_max: u64,
    payments_at_first: u64,
    payments_at_last: u64,
    state: Option<LeakState>,
    detail: String,
    samples: u64,
}

impl Default for MemoryWatch {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryWatch {
    pub fn new() -> MemoryWatch {
        // Work is this run's completed payments; the target's own leak state is reported too.
        let config = LeakConfig { work_counter: WorkCounter::Payments, ..LeakConfig::default() };
        MemoryWatch {
            detector: LeakDetector::new(config).expect("the default leak configuration is valid"),
            first: None,
            last: None,
            rss_max: 0,
            payments_at_first: 0,
            payments_at_last: 0,
            state: None,
            detail: String::new(),
            samples: 0,
        }
    }

    /// One reading, `at_ms` into the run, after `requests` requests and `payments` payments.
    pub fn observe(&mut self, at_ms: u64, s: TargetSample, requests: u64, payments: u64) {
        let Some(rss) = s.rss_bytes else { return };
        if self.first.is_none() {
            self.first = Some(s);
            self.payments_at_first = payments;
        }
        self.last = Some(s);
        self.payments_at_last = payments;
        self.rss_max = self.rss_max.max(rss);
        self.samples += 1;
        let a = self.detector.observe(Sample {
            at_ms,
            heap_allocated_bytes: s.heap_bytes.unwrap_or(rss),
            resident_bytes: rss,
            requests_total: requests,
            payments_total: payments,
        });
        if a.instant.is_some() {
            self.state = Some(a.state);
        }
        self.detail = a.to_string();
    }

    pub fn summary(&self) -> Option<MemorySummary> {
        let (first, last) = (self.first?, self.last?);
        let payments = self.payments_at_last.saturating_sub(self.payments_at_first);
        let growth = match (first.heap_bytes, last.heap_bytes) {
            (Some(a), Some(b)) => b as f64 - a as f64,
            _ => last.rss_bytes.unwrap_or(0) as f64 - first.rss_bytes.unwrap_or(0) as f64,
        };
        Some(MemorySummary {
            rss_start_bytes: first.rss_bytes.unwrap_or(0),
            rss_end_bytes: last.rss_bytes.unwrap_or(0),
            rss_max_bytes: self.rss_max,
            heap_start_bytes: first.heap_bytes,
            heap_end_bytes: last.heap_bytes,
            bytes_per_payment: (payments > 0).then(|| growth / payments as f64),
            verdict: match self.state {
                Some(s) => s.as_str().to_string(),
                None => "insufficient data".to_string(),
            },
            detail: format!("{} samples; {}", self.samples, self.detail),
        })
    }
}

//! The canary judge for gateways something else runs (`paywarden judge`, Kubernetes): the
//! same [`judge`](crate::judge) as `paywarden up`'s, fed by scraping the canary's and the
//! stable's pods instead of by a proxy.
//!
//! Argo Rollouts steps the traffic and asks `GET /admin/canary/verdict` through its Web metric
//! provider; this module finds the pods, reads their `/metrics`, keeps one window per side
//! and answers with a [`Verdict`].
//!
//! - **Which pods.** A target is `host:port`, resolved at every tick: a headless Service's name
//!   resolves to the addresses of its ready pods (deploy/kubernetes selects them by the labels
//!   Argo Rollouts' `canaryMetadata`/`stableMetadata` put on them), an address is one pod.
//! - **What is read.** From each pod's `/metrics`: `http_requests_total` and the
//!   `http_request_duration_seconds` histogram on the payments API's routes (`/v1/...`; probes
//!   and scrapes are left out, they come at the same rate to both sides), 5xx answers as
//!   errors, `paywarden_heap_allocated_bytes` and `memguard_leak_state`.
//! - **The window.** It opens when canary pods appear (none before, or none of the previous
//!   canary's left) and closes when none are left (promoted or aborted). A canary pod counts
//!   from zero: everything it served is the new release's. A stable pod counts from its first
//!   scrape in the window, so both sides cover the same time. A counter that goes down is a
//!   restarted process, which counts from zero again; a pod that disappears keeps what it
//!   served.
//! - **Per side.** Requests and errors are summed over the pods; latencies are the summed
//!   histogram's growth over the last `latency_window` only (a fresh canary's first requests
//!   are slower than a warm stable's: cold caches, first-seen stacks in the heap profiler;
//!   counted since the window opened, that warm-up failed a good canary in a test), its buckets each observation at its bucket's upper bound (Mann–Whitney's tie
//!   correction handles the ties; the buckets double from 0.25 ms, so a shift of a bucket is a
//!   factor of two), at most [`LATENCY_SAMPLES_MAX`] in proportion; heap growth per request
//!   is the median over the pods of each pod's Theil–Sen slope of heap against its requests,
//!   its lower bound the median of theirs; the leak state is the worst pod's.
//!
//! Differences from `up`: the baseline is the stable pods, which run longer than the canary
//! (Kayenta's fresh baseline needs an Argo `Experiment`); heap growth is compared per request
//! after each pod's warm-up, so an old stable's flat heap is a fair reference. Latencies have
//! the histogram's resolution instead of the proxy's exact figures.
//!
//! Bounds: at most [`PODS_MAX`] pods a side (more are left out and counted), a `/metrics`
//! body of at most [`METRICS_BYTES_MAX`], [`HEAP_POINTS_MAX`] heap points a pod.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};

use crate::controller::Points;
pub use crate::controller::HEAP_POINTS_MAX;
use crate::instance::{fetch_bounded, Fetch, LEAK_REPORT_BYTES_MAX, METRICS_BYTES_MAX};
use crate::judge::{judge, JudgeConfig, Score, Verdict, Window, LATENCY_SAMPLES_MAX};

/// Most pods per side; more are left out of the window (and counted in the verdict).
pub const PODS_MAX: usize = 256;
/// Most targets per side on the command line.
pub const TARGETS_MAX: usize = 16;
/// How often the canary's leak report is fetched again while it is suspected or leaking.
pub const LEAK_REPORT_EVERY: Duration = Duration::from_secs(15);
/// Allocation sites kept from the canary's leak report.
pub const LEAK_SITES_MAX: usize = 5;
/// Most ticks of latency kept per pod (an hour at 5 s).
pub const LATENCY_TICKS_MAX: usize = 720;
/// Routes whose requests are judged: the payments API's.
const JUDGED_ROUTE_PREFIX: &str = "/v1/";

/// What the judge reads from one pod's `/metrics` (counters cumulative since it started).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodMetrics {
    /// `http_requests_total` on `/v1/` routes.
    pub requests: f64,
    /// Of those, 5xx answers.
    pub errors: f64,
    /// `http_request_duration_seconds` on `/v1/` routes: (upper bound in seconds, cumulative
    /// count), by increasing bound; the last bound may be `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    pub heap_allocated_bytes: Option<f64>,
    pub leak_state: Option<u8>,
}

/// Reads a pod's `/metrics` text. An error says what is missing: a body with no
/// `http_requests_total` is not a paywarden gateway's.
pub fn parse_pod_metrics(text: &str) -> Result<PodMetrics, String> {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).map_err(|e| format!("not Prometheus text: {e}"))?;
    let mut m = PodMetrics::default();
    let mut saw_requests = false;
    let mut buckets: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
    for s in &scrape.samples {
        let judged = s.labels.get("route").is_some_and(|r| r.starts_with(JUDGED_ROUTE_PREFIX));
        let scalar = match &s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => Some(*v),
            _ => None,
        };
        match (s.metric.as_str(), scalar) {
            ("http_requests_total" | "http_requests", Some(v)) if v.is_finite() && v >= 0.0 => {
                saw_requests = true;
                if judged {
                    m.requests += v;
                    if s.labels.get("status").is_some_and(|st| st.starts_with('5')) {
                        m.errors += v;
                    }
                }
            }
            ("paywarden_heap_allocated_bytes", Some(v)) if v.is_finite() && v >= 0.0 => m.heap_allocated_bytes = Some(v),
            ("memguard_leak_state", Some(v)) if v.fract() == 0.0 && (0.0..=255.0).contains(&v) => m.leak_state = Some(v as u8),
            ("http_request_duration_seconds", None) if judged => {
                if let prometheus_parse::Value::Histogram(counts) = &s.value {
                    for c in counts {
                        if c.less_than.is_nan() || !c.count.is_finite() || c.count < 0.0 {
                            continue;
                        }
                        // Keyed by the bound's bits: the bounds are the same numbers on every route.
                        let e = buckets.entry(order_key(c.less_than)).or_insert((c.less_than, 0.0));
                        e.1 += c.count;
                    }
                }
            }
            _ => {}
        }
    }
    if !saw_requests {
        return Err("no http_requests_total series: is this a paywarden gateway's /metrics?".into());
    }
    m.buckets = buckets.into_values().collect();
    Ok(m)
}

/// A key that sorts finite and infinite non-NaN floats in their numeric order.
fn order_key(x: f64) -> u64 {
    let b = x.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Growth of a cumulative counter between two scrapes; a counter that went down belongs to a
/// restarted process and counts from zero.
fn grew(now: f64, before: f64) -> f64 {
    if now >= before { now - before } else { now }
}

/// One pod's figures inside the window.
#[derive(Default)]
struct Pod {
    last: PodMetrics,
    requests: f64,
    errors: f64,
    /// Per-bucket (not cumulative) growth at each tick, by the bounds of `last.buckets`,
    /// oldest first: the latency window slides over it. At most [`LATENCY_TICKS_MAX`].
    recent: VecDeque<(u64, Vec<f64>)>,
    heap: Points,
    leak_state: Option<u8>,
    scrape_errors: u64,
}

impl Pod {
    /// A pod first seen: `from_zero` counts what it served before (a canary's), else only
    /// what comes after this scrape.
    fn new(now_ms: u64, m: PodMetrics, from_zero: bool) -> Pod {
        let mut pod = Pod::default();
        if from_zero {
            pod.observe(now_ms, m);
        } else {
            pod.leak_state = m.leak_state;
            if let Some(h) = m.heap_allocated_bytes {
                pod.heap.push(0.0, h);
            }
            pod.last = m;
        }
        pod
    }

    fn observe(&mut self, now_ms: u64, m: PodMetrics) {
        let restarted = m.requests < self.last.requests;
        self.requests += grew(m.requests, self.last.requests);
        self.errors += grew(m.errors, self.last.errors);
        let same_bounds = m.buckets.len() == self.last.buckets.len() && m.buckets.iter().zip(&self.last.buckets).all(|(a, b)| a.0 == b.0);
        if !same_bounds {
            // Another build with other buckets: what was counted stays out of the latencies.
            self.recent.clear();
            self.last.buckets = m.buckets.iter().map(|(le, _)| (*le, 0.0)).collect();
        }
        let mut tick = vec![0.0; m.buckets.len()];
        let mut below_now = 0.0;
        let mut below_before = 0.0;
        for (i, ((_, now), (_, before))) in m.buckets.iter().zip(&self.last.buckets).enumerate() {
            // Cumulative counts to this bucket's own, then its growth.
            let (own_now, own_before) = (now - below_now, before - below_before);
            below_now = *now;
            below_before = *before;
            tick[i] = if restarted { own_now.max(0.0) } else { grew(own_now.max(0.0), own_before.max(0.0)) };
        }
        if self.recent.len() == LATENCY_TICKS_MAX {
            self.recent.pop_front();
        }
        self.recent.push_back((now_ms, tick));
        if restarted {
            // The heap of a new process is another series.
            self.heap = Points::default();
        }
        if let Some(h) = m.heap_allocated_bytes {
            self.heap.push(self.requests, h);
        }
        self.leak_state = m.leak_state.or(self.leak_state);
        self.last = m;
    }
}

/// One side (canary or stable) of the window.
#[derive(Default)]
struct Side {
    pods: BTreeMap<SocketAddr, Pod>,
    /// Addresses the last tick resolved to.
    current: Vec<SocketAddr>,
    /// Pods left out past [`PODS_MAX`].
    pods_ignored: u64,
    resolve_error: Option<String>,
    last_scrape_error: Option<String>,
}

impl Side {
    fn observe(&mut self, now_ms: u64, scrapes: Vec<(SocketAddr, Result<PodMetrics, String>)>, from_zero: bool) {
        self.current = scrapes.iter().map(|(a, _)| *a).collect();
        for (addr, result) in scrapes {
            let room = self.pods.len() < PODS_MAX;
            match (self.pods.get_mut(&addr), result) {
                (Some(pod), Ok(m)) => pod.observe(now_ms, m),
                (Some(pod), Err(e)) => {
                    pod.scrape_errors += 1;
                    self.last_scrape_error = Some(format!("{addr}: {e}"));
                }
                (None, Ok(m)) if room => {
                    self.pods.insert(addr, Pod::new(now_ms, m, from_zero));
                }
                (None, Ok(_)) => self.pods_ignored += 1,
                (None, Err(e)) => self.last_scrape_error = Some(format!("{addr}: {e}")),
            }
        }
    }

    /// The side's window; latencies from the ticks after `latency_since_ms` only.
    fn window(&self, latency_since_ms: u64) -> Window {
        let requests: f64 = self.pods.values().map(|p| p.requests).sum();
        let errors: f64 = self.pods.values().map(|p| p.errors).sum();
        // The pods' buckets, summed by bound.
        let mut counts: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for p in self.pods.values() {
            for (_, tick) in p.recent.iter().filter(|(t, _)| *t > latency_since_ms) {
                for ((le, _), c) in p.last.buckets.iter().zip(tick) {
                    counts.entry(order_key(*le)).or_insert((*le, 0.0)).1 += c;
                }
            }
        }
        let largest_finite = counts.values().map(|(le, _)| *le).filter(|le| le.is_finite()).fold(0.0, f64::max);
        let total: f64 = counts.values().map(|(_, c)| c).sum();
        let scale = if total > LATENCY_SAMPLES_MAX as f64 { LATENCY_SAMPLES_MAX as f64 / total } else { 1.0 };
        let mut latencies_ms = Vec::new();
        for (le, c) in counts.values() {
            let n = (c * scale).round() as usize;
            // Past the largest bound: twice it, the next bucket it would have had.
            let at = if le.is_finite() { *le } else { largest_finite * 2.0 };
            latencies_ms.extend(std::iter::repeat_n(at * 1000.0, n.min(LATENCY_SAMPLES_MAX - latencies_ms.len())));
        }
        let growths: Vec<memguard::stats::SenSlope> = self.pods.values().filter_map(|p| p.heap.growth_with_bounds()).collect();
        let mut growth: Vec<f64> = growths.iter().map(|g| g.estimate).collect();
        let mut lows: Vec<f64> = growths.iter().filter_map(|g| g.low).collect();
        let mut highs: Vec<f64> = growths.iter().filter_map(|g| g.high).collect();
        Window {
            requests: requests.round() as u64,
            errors: errors.round() as u64,
            latencies_ms,
            heap_growth_per_request: memguard::stats::median_in_place(&mut growth),
            // The median pod's bound; none unless every pod with a rate has one.
            heap_growth_per_request_low: if lows.len() == growths.len() { memguard::stats::median_in_place(&mut lows) } else { None },
            heap_growth_per_request_high: if highs.len() == growths.len() { memguard::stats::median_in_place(&mut highs) } else { None },
            leak_state: self.pods.values().filter_map(|p| p.leak_state).max(),
        }
    }

    fn summary(&self, targets: &[String], w: &Window) -> Value {
        json!({
            "targets": targets,
            "pods": self.current.len(),
            "pods_in_window": self.pods.len(),
            "pods_ignored": self.pods_ignored,
            "requests": w.requests,
            "errors": w.errors,
            "scrape_errors": self.pods.values().map(|p| p.scrape_errors).sum::<u64>(),
            "last_scrape_error": self.last_scrape_error,
            "resolve_error": self.resolve_error,
        })
    }
}

/// The judge's state: the window and the last verdict. No I/O; [`run`] feeds it.
pub struct PodJudge {
    config: JudgeConfig,
    canary_targets: Vec<String>,
    stable_targets: Vec<String>,
    canary: Side,
    stable: Side,
    window_started_unix_ms: Option<u64>,
    verdict: Option<Verdict>,
    leak_report: Option<(SocketAddr, Value)>,
    latency_window: Duration,
    now_unix_ms: u64,
}

impl PodJudge {
    /// `latency_window`: latencies are compared over the last this long (a fresh canary's
    /// warm-up is forgotten after it); the other metrics over the whole window.
    pub fn new(config: JudgeConfig, latency_window: Duration, canary_targets: Vec<String>, stable_targets: Vec<String>) -> PodJudge {
        PodJudge {
            latency_window,
            now_unix_ms: 0,
            config,
            canary_targets,
            stable_targets,
            canary: Side::default(),
            stable: Side::default(),
            window_started_unix_ms: None,
            verdict: None,
            leak_report: None,
        }
    }

    /// One tick: what each side's targets resolved to and their scrapes.
    pub fn observe(&mut self, now_unix_ms: u64, canary: Resolved, stable: Resolved) {
        self.canary.resolve_error = canary.error;
        self.stable.resolve_error = stable.error;
        if canary.scrapes.is_empty() {
            // No canary (promoted, aborted, or none yet): the window closes.
            if self.window_started_unix_ms.take().is_some() {
                tracing::info!("no canary pods are left; the window is closed");
            }
            self.canary.pods.clear();
            self.stable.pods.clear();
            self.canary.current.clear();
            self.stable.current = stable.scrapes.iter().map(|(a, _)| *a).collect();
            self.verdict = None;
            self.leak_report = None;
            return;
        }
        let same_canary = canary.scrapes.iter().any(|(a, _)| self.canary.pods.contains_key(a));
        if self.window_started_unix_ms.is_none() || !same_canary {
            tracing::info!(pods = canary.scrapes.len(), "canary pods appeared; a new window opens");
            self.canary = Side { resolve_error: self.canary.resolve_error.take(), ..Side::default() };
            self.stable = Side { resolve_error: self.stable.resolve_error.take(), ..Side::default() };
            self.window_started_unix_ms = Some(now_unix_ms);
            self.leak_report = None;
        }
        self.canary.observe(now_unix_ms, canary.scrapes, true);
        self.stable.observe(now_unix_ms, stable.scrapes, false);
        self.now_unix_ms = now_unix_ms;
        let since = self.latency_since();
        self.verdict = Some(judge(&self.canary.window(since), &self.stable.window(since), &self.config));
    }

    fn latency_since(&self) -> u64 {
        self.now_unix_ms.saturating_sub(self.latency_window.as_millis() as u64)
    }

    /// The canary pod to ask for a leak report: the one in the worst leak state, if any is
    /// suspected or leaking.
    pub fn leaking_canary_pod(&self) -> Option<SocketAddr> {
        self.canary
            .pods
            .iter()
            .filter(|(a, p)| p.leak_state.unwrap_or(0) >= 1 && self.canary.current.contains(a))
            .max_by_key(|(_, p)| p.leak_state)
            .map(|(a, _)| *a)
    }

    /// Keeps a canary pod's leak report (`GET /admin/memory/leak-report`) for the verdict.
    pub fn set_leak_report(&mut self, pod: SocketAddr, report: Value) {
        if self.window_started_unix_ms.is_some() {
            self.leak_report = Some((pod, report));
        }
    }

    /// `GET /admin/canary/verdict`: `score` in Kayenta's words, as `paywarden up` answers it.
    pub fn verdict_json(&self) -> Value {
        let since = self.latency_since();
        let (cw, sw) = (self.canary.window(since), self.stable.window(since));
        let sides = json!({"canary": self.canary.summary(&self.canary_targets, &cw), "stable": self.stable.summary(&self.stable_targets, &sw)});
        let leak = self.leak_report.as_ref().map(|(pod, r)| {
            let sites: Vec<Value> = r.get("sites").and_then(Value::as_array).map(|s| s.iter().take(LEAK_SITES_MAX).cloned().collect()).unwrap_or_default();
            json!({"pod": pod.to_string(), "state": r.get("state"), "sites": sites})
        });
        match (&self.window_started_unix_ms, &self.verdict) {
            (Some(started), Some(v)) => json!({
                "mode": "pods", "phase": "judging", "window_started_unix_ms": started,
                "score": v.score.as_str(), "score_pct": v.score_pct, "reason": v.reason, "metrics": v.metrics,
                "canary": sides["canary"], "stable": sides["stable"], "canary_leak_report": leak,
            }),
            _ => json!({
                "mode": "pods", "phase": "no canary pods", "window_started_unix_ms": null,
                "score": Score::Inconclusive.as_str(), "score_pct": 0.0,
                "reason": format!("no canary pods behind {}", self.canary_targets.join(", ")),
                "metrics": [], "canary": sides["canary"], "stable": sides["stable"], "canary_leak_report": null,
            }),
        }
    }
}

/// One side's targets at one tick.
#[derive(Default)]
pub struct Resolved {
    pub scrapes: Vec<(SocketAddr, Result<PodMetrics, String>)>,
    /// A target that did not resolve (the others still count).
    pub error: Option<String>,
}

/// Checks a target (`host:port`) without resolving it.
pub fn check_target(t: &str) -> Result<(), String> {
    let ok = t.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok { Ok(()) } else { Err(format!("{t:?} is not host:port (e.g. paywarden-canary-pods:4242 or 10.0.0.7:4242)")) }
}

/// The addresses of a side's targets now, at most [`PODS_MAX`] (sorted, without duplicates).
async fn resolve(targets: &[String]) -> (Vec<SocketAddr>, Option<String>) {
    let mut addrs = Vec::new();
    let mut error = None;
    for t in targets {
        match tokio::time::timeout(Duration::from_secs(2), tokio::net::lookup_host(t.as_str())).await {
            Ok(Ok(found)) => addrs.extend(found),
            Ok(Err(e)) => error = Some(format!("{t}: {e}")),
            Err(_) => error = Some(format!("{t}: no answer from DNS within 2 s")),
        }
    }
    addrs.sort();
    addrs.dedup();
    addrs.truncate(PODS_MAX);
    (addrs, error)
}

async fn scrape(client: &reqwest::Client, addr: SocketAddr) -> Result<PodMetrics, String> {
    let url = format!("http://{addr}/metrics");
    let body = match fetch_bounded(client, reqwest::Method::GET, &url, None, METRICS_BYTES_MAX).await {
        Ok(b) => b,
        Err(Fetch::TooLarge) => return Err(format!("/metrics is over {METRICS_BYTES_MAX} bytes")),
        Err(Fetch::Failed(reason)) => return Err(reason),
    };
    parse_pod_metrics(std::str::from_utf8(&body).map_err(|e| format!("/metrics is not UTF-8: {e}"))?)
}

async fn side(client: &reqwest::Client, targets: &[String]) -> Resolved {
    let (addrs, error) = resolve(targets).await;
    let results = futures::future::join_all(addrs.iter().map(|a| scrape(client, *a))).await;
    Resolved { scrapes: addrs.into_iter().zip(results).collect(), error }
}

/// Scrapes both sides every `interval` and feeds `judge`, until the task is dropped.
/// `admin_token` is sent to a leaking canary pod for its leak report.
pub async fn run(judge: Arc<Mutex<PodJudge>>, interval: Duration, client: reqwest::Client, admin_token: String) {
    let (canary_targets, stable_targets) = {
        let j = lock(&judge);
        (j.canary_targets.clone(), j.stable_targets.clone())
    };
    let mut last_report: Option<tokio::time::Instant> = None;
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (c, s) = tokio::join!(side(&client, &canary_targets), side(&client, &stable_targets));
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
        let leaking = {
            let mut j = lock(&judge);
            let before = j.verdict.as_ref().map(|v| v.score);
            j.observe(now, c, s);
            if let Some(v) = &j.verdict
                && before != Some(v.score)
            {
                tracing::info!(score = v.score.as_str(), reason = %v.reason, "verdict");
            }
            j.leaking_canary_pod()
        };
        let due = last_report.is_none_or(|t| t.elapsed() >= LEAK_REPORT_EVERY);
        if let (Some(pod), true) = (leaking, due) {
            last_report = Some(tokio::time::Instant::now());
            let url = format!("http://{pod}/admin/memory/leak-report");
            match fetch_bounded(&client, reqwest::Method::GET, &url, Some(&admin_token), LEAK_REPORT_BYTES_MAX).await {
                Ok(body) => match serde_json::from_slice::<Value>(&body) {
                    Ok(report) => lock(&judge).set_leak_report(pod, report),
                    Err(e) => tracing::warn!(%pod, error = %e, "the canary's leak report is not JSON"),
                },
                Err(Fetch::TooLarge) => tracing::warn!(%pod, "the canary's leak report is over {LEAK_REPORT_BYTES_MAX} bytes"),
                Err(Fetch::Failed(reason)) => tracing::warn!(%pod, %reason, "cannot read the canary's leak report (is the judge's admin token the gateway's?)"),
            }
        }
    }
}

pub fn lock(j: &Mutex<PodJudge>) -> std::sync::MutexGuard<'_, PodJudge> {
    j.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metrics(requests: f64, errors: f64, fast: f64, slow: f64, heap: f64, leak: u8) -> PodMetrics {
        // Two buckets and +Inf: `fast` at or below 1 ms, `slow` between 1 ms and 256 ms.
        PodMetrics {
            requests,
            errors,
            buckets: vec![(0.001, fast), (0.256, fast + slow), (f64::INFINITY, fast + slow)],
            heap_allocated_bytes: Some(heap),
            leak_state: Some(leak),
        }
    }

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 4242))
    }

    fn tick(j: &mut PodJudge, t: u64, canary: Vec<(u8, PodMetrics)>, stable: Vec<(u8, PodMetrics)>) {
        let side = |v: Vec<(u8, PodMetrics)>| Resolved { scrapes: v.into_iter().map(|(a, m)| (addr(a), Ok(m))).collect(), error: None };
        j.observe(t, side(canary), side(stable));
    }

    fn score(j: &PodJudge) -> String {
        j.verdict_json()["score"].as_str().unwrap().to_string()
    }

    const EXPOSITION: &str = r#"# HELP http_requests HTTP requests answered, by route template and status.
# TYPE http_requests counter
http_requests_total{route="/v1/payment_intents",status="200",version="0.1.0"} 90
http_requests_total{route="/v1/payment_intents",status="500",version="0.1.0"} 10
http_requests_total{route="/healthz",status="200",version="0.1.0"} 1000
http_requests_total{route="/metrics",status="500",version="0.1.0"} 7
# HELP http_request_duration_seconds Time from request to response, by route template.
# TYPE http_request_duration_seconds histogram
http_request_duration_seconds_sum{route="/v1/payment_intents",version="0.1.0"} 0.5
http_request_duration_seconds_count{route="/v1/payment_intents",version="0.1.0"} 100
http_request_duration_seconds_bucket{le="0.001",route="/v1/payment_intents",version="0.1.0"} 60
http_request_duration_seconds_bucket{le="0.002",route="/v1/payment_intents",version="0.1.0"} 100
http_request_duration_seconds_bucket{le="+Inf",route="/v1/payment_intents",version="0.1.0"} 100
http_request_duration_seconds_sum{route="/healthz",version="0.1.0"} 0.1
http_request_duration_seconds_count{route="/healthz",version="0.1.0"} 1000
http_request_duration_seconds_bucket{le="0.001",route="/healthz",version="0.1.0"} 1000
http_request_duration_seconds_bucket{le="0.002",route="/healthz",version="0.1.0"} 1000
http_request_duration_seconds_bucket{le="+Inf",route="/healthz",version="0.1.0"} 1000
# TYPE paywarden_heap_allocated_bytes gauge
paywarden_heap_allocated_bytes{version="0.1.0"} 123456
# TYPE memguard_leak_state gauge
memguard_leak_state{version="0.1.0"} 1
# EOF
"#;

    #[test]
    fn reads_the_payments_routes_only() {
        let m = parse_pod_metrics(EXPOSITION).unwrap();
        assert_eq!((m.requests, m.errors), (100.0, 10.0), "probes and scrapes are not judged");
        assert_eq!(m.buckets, vec![(0.001, 60.0), (0.002, 100.0), (f64::INFINITY, 100.0)]);
        assert_eq!(m.heap_allocated_bytes, Some(123456.0));
        assert_eq!(m.leak_state, Some(1));
        let e = parse_pod_metrics("# TYPE x gauge\nx 1\n").unwrap_err();
        assert!(e.contains("http_requests_total"), "{e}");
    }

    #[test]
    fn no_canary_is_inconclusive_never_a_pass() {
        let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_secs(3600), vec!["c:4242".into()], vec!["s:4242".into()]);
        assert_eq!(score(&j), "inconclusive");
        tick(&mut j, 1, vec![], vec![(1, metrics(1e6, 0.0, 1e6, 0.0, 1e6, 0))]);
        let v = j.verdict_json();
        assert_eq!(v["score"], "inconclusive");
        assert_eq!(v["phase"], "no canary pods");
        assert!(v["reason"].as_str().unwrap().contains("c:4242"), "{v}");
    }

    /// Canary and stable serve alike for `ticks` seconds; `canary` changes the canary's
    /// figures per tick (errors, slow requests, heap per request).
    fn run_pair(ticks: u64, canary_errors: f64, canary_slow: f64, canary_heap: f64) -> PodJudge {
        let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_secs(3600), vec!["c:4242".into()], vec!["s:4242".into()]);
        // The stable pods have served for a long time before the canary appears.
        let old = 1e6;
        for t in 0..ticks {
            let n = (t + 1) as f64 * 20.0;
            let c = metrics(n, n * canary_errors, n * (1.0 - canary_slow), n * canary_slow, 5e6 + n * canary_heap, 0);
            let s1 = metrics(old + n, 0.0, old + n, 0.0, 9e6 + (t % 3) as f64 * 100.0, 0);
            let s2 = metrics(old + 2.0 * n, 0.0, old + 2.0 * n, 0.0, 9e6, 0);
            tick(&mut j, t, vec![(100, c)], vec![(1, s1), (2, s2)]);
        }
        j
    }

    #[test]
    fn a_good_canary_passes_once_both_sides_have_traffic() {
        let early = run_pair(3, 0.0, 0.0, 0.0);
        assert_eq!(score(&early), "inconclusive", "{}", early.verdict_json());
        let j = run_pair(20, 0.0, 0.0, 0.0);
        let v = j.verdict_json();
        assert_eq!(v["score"], "pass", "{v}");
        // The stable counts from the window's start, not its whole life.
        assert_eq!(v["stable"]["requests"], 19 * 20 + 19 * 40);
        assert_eq!(v["canary"]["requests"], 400, "a canary counts from zero");
        assert_eq!(v["canary"]["pods"], 1);
    }

    #[test]
    fn errors_latency_and_heap_fail_the_canary() {
        let v = run_pair(20, 0.2, 0.0, 0.0).verdict_json();
        assert_eq!(v["score"], "fail", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("error_rate"), "{v}");
        let v = run_pair(20, 0.0, 0.9, 0.0).verdict_json();
        assert_eq!(v["score"], "fail", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("latency"), "{v}");
        let v = run_pair(20, 0.0, 0.0, 4096.0).verdict_json();
        assert_eq!(v["score"], "fail", "{v}");
        assert!(v["reason"].as_str().unwrap().contains("heap_growth_per_request"), "{v}");
    }

    #[test]
    fn a_canarys_warm_up_is_forgotten_after_the_latency_window() {
        // The canary's first 30 ticks are slow, then it is as fast as the stable.
        let run = |window_ms: u64| {
            let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_millis(window_ms), vec!["c:4242".into()], vec!["s:4242".into()]);
            let (mut fast, mut slow) = (0.0, 0.0);
            for t in 0..40u64 {
                if t < 30 { slow += 20.0 } else { fast += 20.0 }
                let n = (t + 1) as f64 * 20.0;
                let c = metrics(n, 0.0, fast, slow, 1e6, 0);
                let s = metrics(n, 0.0, n, 0.0, 1e6, 0);
                tick(&mut j, t * 1000, vec![(100, c)], vec![(1, s)]);
            }
            j.verdict_json()
        };
        let whole = run(3_600_000);
        assert_eq!(whole["score"], "fail", "{whole}");
        let recent = run(10_000);
        assert_eq!(recent["score"], "pass", "{recent}");
    }

    #[test]
    fn restarts_count_from_zero_and_windows_follow_the_canary() {
        let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_secs(3600), vec!["c:4242".into()], vec!["s:4242".into()]);
        tick(&mut j, 0, vec![(100, metrics(50.0, 0.0, 50.0, 0.0, 1.0, 0))], vec![(1, metrics(10.0, 0.0, 10.0, 0.0, 1.0, 0))]);
        // The canary restarts (its counters fall) and serves 30 more; the stable serves 25.
        tick(&mut j, 1, vec![(100, metrics(30.0, 0.0, 30.0, 0.0, 1.0, 0))], vec![(1, metrics(35.0, 0.0, 35.0, 0.0, 1.0, 0))]);
        let v = j.verdict_json();
        assert_eq!((v["canary"]["requests"].as_u64(), v["stable"]["requests"].as_u64()), (Some(80), Some(25)), "{v}");
        // A scrape that fails is counted and the pod keeps what it served.
        j.observe(2, Resolved { scrapes: vec![(addr(100), Err("connection refused".into()))], error: None }, Resolved::default());
        let v = j.verdict_json();
        assert_eq!(v["canary"]["scrape_errors"], 1);
        assert_eq!(v["canary"]["requests"], 80);
        // Another canary (none of the old pods): a new window.
        tick(&mut j, 3, vec![(101, metrics(5.0, 0.0, 5.0, 0.0, 1.0, 0))], vec![(1, metrics(40.0, 0.0, 40.0, 0.0, 1.0, 0))]);
        let v = j.verdict_json();
        assert_eq!((v["canary"]["requests"].as_u64(), v["stable"]["requests"].as_u64()), (Some(5), Some(0)), "{v}");
        assert_eq!(v["window_started_unix_ms"], 3);
        // No canary: the window closes.
        tick(&mut j, 4, vec![], vec![(1, metrics(41.0, 0.0, 41.0, 0.0, 1.0, 0))]);
        assert_eq!(j.verdict_json()["phase"], "no canary pods");
    }

    #[test]
    fn pods_past_the_limit_are_left_out_and_counted() {
        let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_secs(3600), vec!["c:4242".into()], vec!["s:4242".into()]);
        let many: Vec<(SocketAddr, Result<PodMetrics, String>)> =
            (0..PODS_MAX as u32 + 3).map(|i| (SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 4242)), Ok(metrics(1.0, 0.0, 1.0, 0.0, 1.0, 0)))).collect();
        j.observe(0, Resolved { scrapes: many, error: None }, Resolved::default());
        let v = j.verdict_json();
        assert_eq!(v["canary"]["pods_in_window"], PODS_MAX);
        assert_eq!(v["canary"]["pods_ignored"], 3);
    }

    #[test]
    fn leak_reports_come_from_the_worst_canary_pod() {
        let mut j = PodJudge::new(JudgeConfig::default(), Duration::from_secs(3600), vec!["c:4242".into()], vec!["s:4242".into()]);
        tick(&mut j, 0, vec![(100, metrics(1.0, 0.0, 1.0, 0.0, 1.0, 0)), (101, metrics(1.0, 0.0, 1.0, 0.0, 1.0, 2))], vec![]);
        assert_eq!(j.leaking_canary_pod(), Some(addr(101)));
        let sites: Vec<Value> = (0..9).map(|i| json!({"function": format!("f{i}")})).collect();
        j.set_leak_report(addr(101), json!({"state": "leaking", "sites": sites}));
        let v = j.verdict_json();
        assert_eq!(v["canary_leak_report"]["sites"].as_array().unwrap().len(), LEAK_SITES_MAX);
        assert_eq!(v["canary_leak_report"]["pod"], "10.0.0.101:4242");
    }

    #[test]
    fn targets_are_host_and_port() {
        for good in ["paywarden-canary-pods:4242", "10.0.0.7:4242", "[::1]:4242", "a.b.svc.cluster.local:1"] {
            assert!(check_target(good).is_ok(), "{good}");
        }
        for bad in ["", "host", "host:", ":4242", "host:0", "host:65536", "host:http"] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
    }
}

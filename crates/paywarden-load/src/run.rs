//! The runtime: executors on tokio, the in-flight cap, the per-second tick (timeline, target
//! memory, progress line) and the end-of-run verification.
//!
//! **Open loop** (the arrival-rate executors): iteration n starts at its scheduled time
//! whether or not earlier ones have returned (k6). An iteration that finds `max_in_flight`
//! iterations running is not started and is counted as dropped: the generator never queues
//! work it cannot do, so a slow target shows up as dropped iterations and latency, never as a
//! quietly lower rate. **Closed loop** (`constant-vus`): each virtual user starts its next
//! iteration when the last one ends.
//!
//! **Bounded**: the recorder holds histograms and one point per second; the pool of created
//! payments to verify holds at most [`VERIFY_POOL_MAX`] (reservoir-sampled past it); nothing
//! is kept per request.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use crate::flows::{Expected, Target, Timed};
use crate::scenario::{Flow, Scenario};
use crate::schedule::{Executor, Schedule};
use crate::summary::{Recorder, Summary};
use crate::target::{parse_metrics, MemoryWatch, METRICS_BYTES_MAX};

/// Created payments remembered for the final check.
pub const VERIFY_POOL_MAX: usize = 10_000;
/// Concurrent retrievals during the final check.
pub const VERIFY_CONCURRENCY: usize = 32;
/// How long to wait for in-flight iterations after the schedule ends.
pub const DRAIN_MAX: Duration = Duration::from_secs(30);

/// Connections to the target by default: enough for tens of thousands of requests a second
/// at loopback latencies, few enough that the kernel's cost per request stays low.
pub const CONNECTIONS_DEFAULT: usize = 256;
/// Most connections a run may open.
pub const CONNECTIONS_MAX: usize = 10_000;

/// What to run against what.
#[derive(Clone)]
pub struct LoadConfig {
    /// The target's base URL, e.g. `http://127.0.0.1:4242`.
    pub target: String,
    /// A merchant's secret key.
    pub key: String,
    pub scenario: Scenario,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Sample the target's `/metrics` each second.
    pub sample_memory: bool,
    /// Show the live progress line (on a terminal).
    pub progress: bool,
    /// Most connections to the target at once (requests in flight beyond it wait for one);
    /// at most the scenario's in-flight cap. [`CONNECTIONS_DEFAULT`], 1 to [`CONNECTIONS_MAX`].
    pub connections: usize,
    /// Set to end the run early: no iteration starts after it is seen (the run then drains
    /// and verifies as at its scheduled end). A drill stops its load once the rollout ends.
    pub stop: Option<Arc<AtomicBool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}")]
    Config(String),
    #[error("the target does not answer at {url}: {reason}; start it (e.g. `paywarden serve`) or pass --target")]
    Unreachable { url: String, reason: String },
}

struct Shared {
    recorder: Mutex<Recorder>,
    pool: Mutex<Pool>,
    completed_payments: AtomicU64,
    completed_requests: AtomicU64,
}

/// A bounded reservoir of created payments (Algorithm R).
struct Pool {
    seen: u64,
    items: Vec<Expected>,
}

impl Pool {
    fn offer(&mut self, e: Expected, rng: &mut impl Rng) {
        self.seen += 1;
        if self.items.len() < VERIFY_POOL_MAX {
            self.items.push(e);
        } else {
            let j = rng.random_range(0..self.seen);
            if (j as usize) < VERIFY_POOL_MAX {
                self.items[j as usize] = e;
            }
        }
    }
}

/// Runs the scenario and returns its summary (thresholds evaluated). Fails only when the
/// target cannot be reached at all or the configuration is invalid.
pub async fn run(cfg: LoadConfig) -> Result<Summary, LoadError> {
    let sc = &cfg.scenario;
    sc.executor.validate().map_err(LoadError::Config)?;
    let client = reqwest::Client::builder()
        .timeout(cfg.timeout)
        .pool_max_idle_per_host(sc.max_in_flight.min(4096))
        .tcp_nodelay(true)
        .no_proxy()
        .build()
        .map_err(|e| LoadError::Config(format!("HTTP client: {e}")))?;
    let base = cfg.target.trim_end_matches('/').to_string();
    client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .map_err(|e| LoadError::Unreachable { url: base.clone(), reason: e.to_string() })?;
    // A refused key would turn the whole run into 401s; say so at once instead.
    if sc.mix.entries().iter().any(|(f, w)| *f != Flow::Noop && *w > 0) {
        let res = client
            .get(format!("{base}/v1/payment_intents?limit=1"))
            .bearer_auth(&cfg.key)
            .send()
            .await
            .map_err(|e| LoadError::Unreachable { url: base.clone(), reason: e.to_string() })?;
        if res.status().as_u16() == 401 {
            return Err(LoadError::Config("the target refused --key (401): pass a merchant's secret key (sk_test_...), e.g. from `paywarden keys create`".into()));
        }
    }
    let run_id = format!("load-{:016x}", rand::rng().random::<u64>());
    // Shared, not cloned, by every iteration: a clone per iteration would copy strings and
    // vectors at tens of thousands a second.
    if !(1..=CONNECTIONS_MAX).contains(&cfg.connections) {
        return Err(LoadError::Config(format!("--connections must be 1 to {CONNECTIONS_MAX}, got {}", cfg.connections)));
    }
    let fast = crate::http::Client::new(&base, &cfg.key, cfg.timeout, cfg.connections.min(sc.max_in_flight)).await.map_err(LoadError::Config)?;
    let target = Arc::new(Target { client: fast, base: base.clone(), key: cfg.key.clone(), run_id });
    let sc = &Arc::new(sc.clone());

    let shared = Arc::new(Shared {
        recorder: Mutex::new(Recorder::new()),
        pool: Mutex::new(Pool { seen: 0, items: Vec::new() }),
        completed_payments: AtomicU64::new(0),
        completed_requests: AtomicU64::new(0),
    });
    let total = sc.executor.duration();
    let started = Instant::now();
    let done = Arc::new(AtomicBool::new(false));

    // Once a second: close the second in the recorder, sample the target, draw progress.
    let ticker = {
        let (shared, done, client) = (shared.clone(), done.clone(), client.clone());
        let metrics_url = format!("{base}/metrics");
        let sample = cfg.sample_memory;
        let bar = progress_bar(cfg.progress, total);
        tokio::spawn(async move {
            let mut watch = MemoryWatch::new();
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + Duration::from_secs(1), Duration::from_secs(1));
            let mut second = 0u64;
            loop {
                tick.tick().await;
                let t = if sample { read_target(&client, &metrics_url).await } else { None };
                let (requests, payments) =
                    (shared.completed_requests.load(Ordering::Relaxed), shared.completed_payments.load(Ordering::Relaxed));
                if let Some(t) = t {
                    watch.observe(second * 1000 + 1000, t, requests, payments);
                }
                let line = {
                    let mut r = shared.recorder.lock().unwrap_or_else(|p| p.into_inner());
                    r.tick(second, t);
                    r.progress_line()
                };
                if let Some(b) = &bar {
                    b.set_position(started.elapsed().as_secs().min(total.as_secs()));
                    let rss = t.and_then(|t| t.rss_bytes).map(|b| format!(", target RSS {} MiB", b >> 20)).unwrap_or_default();
                    b.set_message(format!("{line}{rss}"));
                }
                second += 1;
                if done.load(Ordering::Relaxed) {
                    if let Some(b) = &bar {
                        b.finish_and_clear();
                    }
                    return watch;
                }
            }
        })
    };

    let in_flight = Arc::new(tokio::sync::Semaphore::new(sc.max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    match &sc.executor {
        Executor::ConstantVus { vus, duration } => {
            let end = started + *duration;
            let counter = Arc::new(AtomicU64::new(0));
            for _ in 0..*vus {
                let (shared, target, sc, counter, stop) = (shared.clone(), target.clone(), sc.clone(), counter.clone(), cfg.stop.clone());
                tasks.spawn(async move {
                    while Instant::now() < end && !stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                        let n = counter.fetch_add(1, Ordering::Relaxed);
                        lock(&shared.recorder).iteration_started();
                        iteration(&shared, &target, &sc, n, Instant::now()).await;
                    }
                });
            }
            lock(&shared.recorder).set_scheduled(0);
        }
        open => {
            let schedule = Schedule::new(open).ok_or_else(|| LoadError::Config("not an arrival-rate executor".into()))?;
            lock(&shared.recorder).set_scheduled(schedule.expected_iterations());
            let mut n = 0u64;
            // A mix of `noop` alone (the generator's own ceiling) takes the small future.
            let only_noop = sc.mix.entries().iter().all(|(f, w)| *f == Flow::Noop || *w == 0);
            while let Some(offset) = schedule.offset(n) {
                let at = started + offset;
                if at > Instant::now() {
                    tokio::time::sleep_until(at.into()).await;
                }
                if cfg.stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
                    break;
                }
                match in_flight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        lock(&shared.recorder).iteration_started();
                        let (shared, target, sc) = (shared.clone(), target.clone(), sc.clone());
                        if only_noop {
                            tasks.spawn(async move {
                                noop_iteration(&shared, &target, at).await;
                                drop(permit);
                            });
                        } else {
                            tasks.spawn(async move {
                                iteration(&shared, &target, &sc, n, at).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(_) => lock(&shared.recorder).iteration_dropped(),
                }
                // Reap finished tasks as we go: the JoinSet holds only what is in flight.
                while tasks.try_join_next().is_some() {}
                n += 1;
            }
        }
    }
    let _ = tokio::time::timeout(DRAIN_MAX, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
    let elapsed = started.elapsed();
    lock(&shared.recorder).end_of_load();

    // Every created payment remembered is retrieved and compared with its expected state.
    let items = std::mem::take(&mut lock(&shared.pool).items);
    let (verified, mismatched) = verify_all(&shared, &target, items).await;
    lock(&shared.recorder).checks(verified, mismatched);

    done.store(true, Ordering::Relaxed);
    let watch = ticker.await.unwrap_or_default();
    let memory = if cfg.sample_memory { watch.summary() } else { None };
    let mut summary = lock(&shared.recorder).summary(sc, elapsed, memory);
    summary.apply_thresholds(&sc.thresholds);
    Ok(summary)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Which flow an iteration runs, and whether its POSTs are retried.
fn pick(sc: &Scenario) -> (Flow, bool) {
    let mut rng = rand::rng();
    (sc.mix.pick(rng.random::<f64>()), rng.random_bool(sc.retry_share.clamp(0.0, 1.0)))
}

/// A `noop` iteration: one `GET /healthz`, in a small future of its own.
async fn noop_iteration(shared: &Shared, target: &Target, scheduled: Instant) {
    let t = target.noop(scheduled).await;
    {
        let mut r = lock(&shared.recorder);
        r.record(t.op, t.latency, t.error.is_none(), t.error);
        r.iteration_completed();
    }
    shared.completed_requests.fetch_add(1, Ordering::Relaxed);
}

async fn iteration(shared: &Shared, target: &Target, sc: &Scenario, n: u64, scheduled: Instant) {
    let (flow, retry) = pick(sc);
    let mut out: Vec<Timed> = Vec::with_capacity(4);
    let expected = target.run(flow, n, scheduled, retry, &mut out).await;
    let ok = out.iter().all(|t| t.error.is_none());
    {
        let mut r = lock(&shared.recorder);
        for t in &out {
            r.record(t.op, t.latency, t.error.is_none(), t.error);
        }
        r.iteration_completed();
    }
    shared.completed_requests.fetch_add(out.len() as u64, Ordering::Relaxed);
    if flow != Flow::Noop && ok {
        shared.completed_payments.fetch_add(1, Ordering::Relaxed);
    }
    if let Some(e) = expected.filter(|_| ok) {
        lock(&shared.pool).offer(e, &mut rand::rng());
    }
}

async fn verify_all(shared: &Arc<Shared>, target: &Arc<Target>, items: Vec<Expected>) -> (u64, u64) {
    let items = Arc::new(Mutex::new(items));
    let (verified, mismatched) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..VERIFY_CONCURRENCY {
        let (items, target, shared, verified, mismatched) = (items.clone(), target.clone(), shared.clone(), verified.clone(), mismatched.clone());
        workers.spawn(async move {
            loop {
                let Some(e) = lock(&items).pop() else { return };
                let mut out = Vec::with_capacity(1);
                match target.verify(&e, &mut out).await {
                    Some(true) => verified.fetch_add(1, Ordering::Relaxed),
                    Some(false) => mismatched.fetch_add(1, Ordering::Relaxed),
                    None => 0,
                };
                let mut r = lock(&shared.recorder);
                for t in &out {
                    r.record(t.op, t.latency, t.error.is_none(), t.error);
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    (verified.load(Ordering::Relaxed), mismatched.load(Ordering::Relaxed))
}

async fn read_target(client: &reqwest::Client, url: &str) -> Option<crate::summary::TargetSample> {
    let res = client.get(url).timeout(Duration::from_millis(900)).send().await.ok()?;
    if !res.status().is_success() || res.content_length().is_some_and(|l| l as usize > METRICS_BYTES_MAX) {
        return None;
    }
    let bytes = res.bytes().await.ok()?;
    if bytes.len() > METRICS_BYTES_MAX {
        return None;
    }
    Some(parse_metrics(&String::from_utf8_lossy(&bytes)))
}

fn progress_bar(show: bool, total: Duration) -> Option<indicatif::ProgressBar> {
    if !show {
        return None;
    }
    let bar = indicatif::ProgressBar::new(total.as_secs().max(1));
    bar.set_style(
        indicatif::ProgressStyle::with_template("{pos}/{len} s [{bar:20}] {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}

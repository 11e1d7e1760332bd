//! Webhook delivery of alert events (the I/O half of [`alerts`](crate::alerts)): POSTs each
//! [`WebhookMessage`] as JSON to an Alertmanager-compatible webhook receiver.
//!
//! One tokio task reads a bounded queue and delivers one message at a time, in the order they
//! were queued, so a receiver never sees an alert's resolution before its firing.
//! [`WebhookNotifier::notify`] never blocks and never waits for the network: it puts the
//! message in the queue or, if the queue is full, drops it and counts it.
//!
//! **At most `attempts_max` attempts per message.** An attempt succeeds on a 2xx answer. A
//! 4xx other than 408 and 429 refuses the message itself: it is given up at once, as
//! Alertmanager does. Anything else (5xx, 408, 429, a refused connection, no answer within
//! `timeout`) is retried after a backoff that doubles from `backoff_initial` up to `backoff_max`, each wait
//! drawn between half and all of that (so many instances do not retry a recovering receiver
//! in step). After `attempts_max` failed attempts the message is given up and counted as
//! failed. So a message reaches the receiver at most `attempts_max` times: once, as a rule,
//! and more than once only when the receiver took it but its answer was lost or came after
//! `timeout`. Alertmanager's receivers expect repeats (the `fingerprint` and `groupKey`
//! identify them).
//!
//! **Bounded**: the queue holds `queue_max` messages (64); one message is in flight. A
//! message holds the ones behind it for at most `attempts_max × timeout` plus the backoffs
//! (with the defaults 5 × 5 s + 0.5 + 1 + 2 + 4 s ≈ 33 s); a message that arrives while the
//! queue is full is dropped (not one already queued) and counted. Nothing is logged (memguard has no logging
//! dependency): [`WebhookNotifier::stats`] exposes the counters for `/metrics`.
//!
//! **Plain HTTP only.** memguard is built without TLS, so `https://` URLs are refused. The
//! client ignores the `HTTP_PROXY` environment variables (as Prometheus' and Alertmanager's
//! HTTP clients do by default) and does not follow redirects (a redirected POST would arrive
//! as a GET without its body): a 3xx answer is a failed attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::ConfigError;
use crate::alerts::WebhookMessage;

/// Most messages the queue may be configured to hold (each a few hundred bytes to a few KiB).
pub const QUEUE_MAX_LIMIT: usize = 65_536;

/// Most attempts per message: one message holds every message behind it while it is retried,
/// and 20 attempts at the default timeout and backoff already hold the queue for about 4
/// minutes.
pub const ATTEMPTS_MAX_LIMIT: u32 = 20;

/// Where and how to deliver webhook messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookConfig {
    /// The receiver's URL; must be `http://` (this build has no TLS). No default.
    pub url: String,
    /// The receiver name put in each message's `receiver` field. Default "paywarden".
    pub receiver: String,
    /// Limit on one attempt, from connecting to the end of the answer. Default 5 s.
    pub timeout: Duration,
    /// Attempts per message, the first included (1 = no retry). Default 5.
    pub attempts_max: u32,
    /// Wait before the second attempt; it doubles for each next one. Default 500 ms.
    pub backoff_initial: Duration,
    /// Longest wait between two attempts. Default 8 s.
    pub backoff_max: Duration,
    /// Messages the queue holds while one is being delivered. Default 64.
    pub queue_max: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            receiver: "paywarden".to_owned(),
            timeout: Duration::from_secs(5),
            attempts_max: 5,
            backoff_initial: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            queue_max: 64,
        }
    }
}

impl WebhookConfig {
    /// The default configuration for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ..Self::default()
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError { field, problem });
        let Ok(url) = reqwest::Url::parse(&self.url) else {
            return bad("url", "is not a URL");
        };
        match url.scheme() {
            "http" => {}
            "https" => {
                return bad(
                    "url",
                    "is https://, which needs a TLS build (this one has none): use http://",
                );
            }
            _ => return bad("url", "must be an http:// URL"),
        }
        if url.host().is_none() {
            return bad("url", "has no host");
        }
        if self.timeout.is_zero() {
            return bad("timeout", "must be positive");
        }
        if self.attempts_max == 0 {
            return bad("attempts_max", "must be at least 1");
        }
        if self.attempts_max > ATTEMPTS_MAX_LIMIT {
            return bad("attempts_max", "exceeds ATTEMPTS_MAX_LIMIT (20)");
        }
        if self.backoff_max < self.backoff_initial {
            return bad("backoff_max", "below backoff_initial");
        }
        if self.queue_max == 0 {
            return bad("queue_max", "must be at least 1");
        }
        if self.queue_max > QUEUE_MAX_LIMIT {
            return bad("queue_max", "exceeds QUEUE_MAX_LIMIT (65536)");
        }
        Ok(())
    }

    /// The wait after failed attempt `failed` (1 for the first) before the next, before
    /// jitter: `backoff_initial × 2^(failed − 1)`, at most `backoff_max`.
    pub fn backoff(&self, failed: u32) -> Duration {
        let factor = 1u32
            .checked_shl(failed.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }
}

/// What the notifier has done, cumulative since it was spawned. Messages accepted and not yet
/// finished (queued or in flight) are `queued − sent − failed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct NotifierStats {
    /// Messages accepted by [`WebhookNotifier::notify`].
    pub queued: u64,
    /// Messages a receiver answered with 2xx.
    pub sent: u64,
    /// Messages given up after `attempts_max` failed attempts (or that could not be
    /// serialized).
    pub failed: u64,
    /// Messages refused by [`WebhookNotifier::notify`]: the queue was full (or the task had
    /// stopped).
    pub dropped: u64,
    /// HTTP requests made, retries included.
    pub attempts: u64,
}

/// The counters behind [`NotifierStats`]. Increments are `Release` and reads `Acquire`, so
/// whoever reads `sent` (or `failed`) sees at least the `attempts` that led to it.
#[derive(Debug, Default)]
struct Counters {
    queued: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    attempts: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Release);
}

/// Handle to a running webhook delivery task. The task ends once the handle is dropped (or
/// [`shutdown`](Self::shutdown) is called) and the queue is drained.
#[derive(Debug)]
pub struct WebhookNotifier {
    tx: mpsc::Sender<WebhookMessage>,
    counters: Arc<Counters>,
    task: tokio::task::JoinHandle<()>,
}

impl WebhookNotifier {
    /// Checks `config` and starts the delivery task on the current tokio runtime. Fails on
    /// the first field out of range, or (field `runtime`) when called outside a runtime.
    pub fn spawn(config: WebhookConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ConfigError {
            field: "runtime",
            problem: "is missing: spawn must be called within a tokio runtime",
        })?;
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| ConfigError {
                field: "url",
                problem: "could not get an HTTP client",
            })?;
        let (tx, rx) = mpsc::channel(config.queue_max);
        let counters = Arc::new(Counters::default());
        let task = runtime.spawn(deliver_all(rx, client, config, Arc::clone(&counters)));
        Ok(Self { tx, counters, task })
    }

    /// Queues `msg` for delivery and returns `true`, or drops it (counted in `dropped`) and
    /// returns `false` if the queue is full. Never blocks; callable from any thread.
    pub fn notify(&self, msg: WebhookMessage) -> bool {
        match self.tx.try_reserve() {
            Ok(permit) => {
                // Counted before the task can see it, so `sent + failed ≤ queued` always.
                bump(&self.counters.queued);
                permit.send(msg);
                true
            }
            Err(_) => {
                bump(&self.counters.dropped);
                false
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> NotifierStats {
        let c = &self.counters;
        NotifierStats {
            queued: c.queued.load(Ordering::Acquire),
            sent: c.sent.load(Ordering::Acquire),
            failed: c.failed.load(Ordering::Acquire),
            dropped: c.dropped.load(Ordering::Acquire),
            attempts: c.attempts.load(Ordering::Acquire),
        }
    }

    /// Stops taking messages and waits until those queued are delivered or given up (which
    /// may take `attempts_max` attempts each: bound it with `tokio::time::timeout`).
    pub async fn shutdown(self) {
        let Self { tx, task, .. } = self;
        drop(tx);
        // An error means the task panicked or was cancelled: there is nothing left to wait for.
        let _ = task.await;
    }
}

/// The delivery task: one message at a time until every sender is gone and the queue empty.
async fn deliver_all(
    mut rx: mpsc::Receiver<WebhookMessage>,
    client: reqwest::Client,
    config: WebhookConfig,
    counters: Arc<Counters>,
) {
    let mut jitter = Jitter::seeded();
    while let Some(msg) = rx.recv().await {
        let delivered = deliver(&client, &config, &counters, &mut jitter, &msg).await;
        bump(if delivered {
            &counters.sent
        } else {
            &counters.failed
        });
    }
}

/// Up to `attempts_max` attempts at POSTing `msg`; whether one got a 2xx answer.
async fn deliver(
    client: &reqwest::Client,
    config: &WebhookConfig,
    counters: &Counters,
    jitter: &mut Jitter,
    msg: &WebhookMessage,
) -> bool {
    let Ok(body) = serde_json::to_vec(msg) else {
        return false;
    };
    for attempt in 1..=config.attempts_max {
        if attempt > 1 {
            tokio::time::sleep(jitter.apply(config.backoff(attempt - 1))).await;
        }
        bump(&counters.attempts);
        let answer = client
            .post(&config.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await;
        // The answer's body is not read: only its status matters, and a receiver's body
        // could be of any size. As Alertmanager: a 4xx other than 408 and 429 says the
        // message itself is refused, and sending it again will not change that.
        match &answer {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) if r.status().is_client_error() && !matches!(r.status().as_u16(), 408 | 429) => return false,
            _ => {}
        }
    }
    false
}

/// A cheap pseudo-random source for backoff jitter (splitmix64), seeded from the clock and
/// the process id: it only has to differ between processes, not resist prediction.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self(nanos ^ (u64::from(std::process::id()) << 32))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A wait between half of `d` and `d` ("equal jitter": never much shorter than the
    /// backoff, never longer).
    fn apply(&mut self, d: Duration) -> Duration {
        let half = d / 2;
        // 53 random bits as a fraction in [0, 1): the product is at most `half`.
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        half + half.mul_f64(unit)
    }
}

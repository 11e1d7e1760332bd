//! paywarden's HTTP API in Stripe's wire format, so Stripe's SDKs work unchanged.
//!
//! One module per resource (`payment_methods`, `payment_intents`, `charges`, `refunds`,
//! `webhook_endpoints`, `events`), each holding its operations' typed parameters (parsed at
//! the door, [`params::FromParams`], and documented from the same types), its handlers and
//! their OpenAPI annotations. What every request shares has a module of its own: `auth`
//! (keys and the admin token), `idempotency`, and `pipeline` (the one path every write
//! takes: authenticate, read, parse, idempotency, run, one durable [`paywarden_store::WriteBatch`]
//! with the events and the idempotent response, then answer). `ops` serves probes, metrics and
//! the memory guard's admin routes. This file keeps the app state and the router.
//!
//! This crate is the only one that knows Stripe's wire format. It sees a card number only
//! while handing it, as a [`paywarden_acquirer::Pan`], to the acquirer.

// ApiError is Stripe's whole error object (with the objects a card error carries); it is built
// only on the error path, so its size costs nothing on the happy path.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::routing::{get, post};
use axum::Router;
use paywarden_acquirer::Connector;
use paywarden_store::{Merchant, Store};
use rand::distr::Alphanumeric;
use rand::Rng;

mod auth;
mod charges;
mod client_secret;
pub mod error;
mod events;
mod expand;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
mod idempotency;
pub mod metrics;
pub mod openapi;
mod ops;
pub mod params;
mod payment_intents;
mod payment_methods;
mod pipeline;
mod refunds;
mod schema;
mod webhook_endpoints;
pub mod webhooks;
pub mod wire;

pub use auth::{hash_key, new_publishable_key, new_secret_key};
pub use error::{ApiError, ErrorType};
pub use idempotency::IDEMPOTENCY_KEY_CHARS_MAX;

/// Limits of the API layer. Every one is named with its unit and enforced at its edge.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Largest request body accepted; past it, 413.
    pub body_bytes_max: usize,
    /// Requests to `/v1/*` and `/admin/*` handled at once; past it, 429 with Retry-After
    /// (admission control: overload is refused at once instead of queued in memory). Probes
    /// and `/metrics` are never refused.
    pub requests_in_flight_max: usize,
    /// Longest wait for a request's body once its head is in; past it, 408 and nothing
    /// written (a client that trickles its body holds no more than this).
    pub body_read_timeout: Duration,
    /// How long an idempotent response is kept and replayed (Stripe: 24 h).
    pub idempotency_ttl_s: i64,
    /// Idempotency keys being processed at once in this process; past it, 503.
    pub idempotency_in_flight_max: usize,
    /// Longest accepted Idempotency-Key (default [`IDEMPOTENCY_KEY_CHARS_MAX`]).
    pub idempotency_key_chars_max: usize,
    /// Authenticated keys cached in memory, and for how long.
    pub api_key_cache_max: usize,
    pub api_key_cache_ttl: Duration,
    /// Stripes of the per-intent lock.
    pub intent_lock_stripes: usize,
    /// Re-runs of an operation that lost a write race to another process.
    pub write_conflict_retries_max: u32,
    /// Injected faults (`serve --fault`); none by default.
    pub faults: Vec<faults::Fault>,
    /// A memory guard sets the heap and leak gauges: register them on `/metrics`.
    pub memory_metrics: bool,
    /// Bearer token for `/admin/*`; with none, the admin endpoints are off (404).
    pub admin_token: Option<String>,
    /// The key the secrets paywarden hands out are derived from: webhook endpoints' signing
    /// secrets and PaymentIntents' client secrets, so neither is stored (`serve` keeps one per
    /// data dir, `webhook.key`; replicas share copies; the default is random, for tests).
    pub webhook_key: [u8; 32],
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            body_bytes_max: 64 * 1024,
            requests_in_flight_max: 1024,
            body_read_timeout: Duration::from_secs(10),
            idempotency_ttl_s: 24 * 3600,
            idempotency_in_flight_max: 4096,
            idempotency_key_chars_max: IDEMPOTENCY_KEY_CHARS_MAX,
            api_key_cache_max: 10_000,
            api_key_cache_ttl: Duration::from_secs(60),
            intent_lock_stripes: 1024,
            write_conflict_retries_max: 3,
            faults: Vec::new(),
            memory_metrics: false,
            admin_token: None,
            webhook_key: rand::random(),
        }
    }
}

pub struct App {
    store: Arc<dyn Store>,
    acquirer: Arc<dyn Connector>,
    cfg: ApiConfig,
    keys: Mutex<HashMap<[u8; 32], (Merchant, Instant)>>,
    in_flight: Mutex<HashSet<(String, String)>>,
    locks: Vec<tokio::sync::Mutex<()>>,
    faults: faults::Faults,
    metrics: metrics::Metrics,
    /// Work done, for the memory guard's bytes-per-request and bytes-per-payment.
    requests_total: AtomicU64,
    /// API requests being handled (admission control).
    admitted: std::sync::atomic::AtomicUsize,
    payments_total: AtomicU64,
    payment_requests_total: AtomicU64,
    payment_failures_total: AtomicU64,
    admin_hooks: std::sync::OnceLock<Arc<dyn AdminHooks>>,
}

/// What the memory guard serves on the admin and debug endpoints. The API authenticates and
/// routes; the binary that runs the guard answers. The API knows nothing of the guard.
#[async_trait::async_trait]
pub trait AdminHooks: Send + Sync {
    /// `GET /admin/memory/leak-report`: JSON with a `state` field (ok, suspect, leaking).
    fn leak_report(&self) -> serde_json::Value;
    /// `GET /admin/alerts`: active alerts and recent firing/resolved events.
    fn alerts(&self) -> serde_json::Value;
    /// `GET /debug/pprof/heap`: the live heap profile, pprof format (gzipped protobuf).
    /// `Err` says why there is none (profiling off).
    async fn heap_profile(&self) -> Result<Vec<u8>, String>;
    /// `POST /admin/memory/profile/reference`: takes a heap profile now and keeps it (one) as
    /// the reference that [`AdminHooks::heap_diff`] compares with. A rollout controller marks
    /// a canary once it is warm, so a later diff names what the new build keeps.
    async fn mark_heap(&self) -> Result<serde_json::Value, String> {
        Err("this instance cannot take heap profiles".into())
    }
    /// `GET /admin/memory/profile/diff`: a heap profile now, diffed with the reference: the
    /// allocation sites that grew since, largest first (memguard's `SiteReport`).
    async fn heap_diff(&self) -> Result<serde_json::Value, String> {
        Err("this instance cannot take heap profiles".into())
    }
}

/// Cumulative work counters, read by the memory guard once a second.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkCounters {
    /// Requests answered (any route).
    pub requests_total: u64,
    /// Payments confirmed (authorized or captured).
    pub payments_total: u64,
    /// PaymentIntent requests answered (any outcome).
    pub payment_requests_total: u64,
    /// PaymentIntent requests that failed on our side (5xx): the burn-rate alert's failures.
    /// Declines and bad input are answers, not failures.
    pub payment_failures_total: u64,
}

/// Unix seconds now; the API is the edge where wall-clock time enters.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// `prefix_` and 24 alphanumerics, as Stripe's ids: 8 that encode the time in milliseconds,
/// then 16 random ones (~95 bits). Ids made later sort later, so every index on an id grows at
/// its right edge: a group commit dirties a handful of pages instead of one random page per
/// row per index.
pub fn new_id(prefix: &str) -> String {
    const DIGITS: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut ms = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let mut head = [b'0'; 8];
    for slot in head.iter_mut().rev() {
        *slot = DIGITS[(ms % 62) as usize];
        ms /= 62;
    }
    let mut id = String::with_capacity(prefix.len() + 25);
    id.push_str(prefix);
    id.push('_');
    id.extend(head.iter().map(|&b| b as char));
    id.extend(rand::rng().sample_iter(&Alphanumeric).take(16).map(char::from));
    id
}

impl App {
    pub fn new(store: Arc<dyn Store>, acquirer: Arc<dyn Connector>, cfg: ApiConfig) -> Arc<App> {
        let locks = (0..cfg.intent_lock_stripes.max(1)).map(|_| tokio::sync::Mutex::new(())).collect();
        let faults = faults::Faults::new(&cfg.faults);
        let metrics = metrics::Metrics::new(cfg.memory_metrics);
        for f in faults.active() {
            let (name, value) = match f {
                faults::Fault::Leak { bytes } => ("leak", bytes as f64),
                faults::Fault::Errors { rate } => ("errors", rate),
                faults::Fault::Latency { delay } => ("latency", delay.as_secs_f64()),
                faults::Fault::Cache { bytes } => ("cache", bytes as f64),
                faults::Fault::Sawtooth { bytes } => ("sawtooth", bytes as f64),
            };
            metrics.faults.get_or_create(&metrics::FaultLabels { fault: name.to_string() }).set(value);
        }
        Arc::new(App {
            store,
            acquirer,
            faults,
            metrics,
            requests_total: AtomicU64::new(0),
            admitted: std::sync::atomic::AtomicUsize::new(0),
            payments_total: AtomicU64::new(0),
            payment_requests_total: AtomicU64::new(0),
            payment_failures_total: AtomicU64::new(0),
            admin_hooks: std::sync::OnceLock::new(),
            cfg,
            keys: Mutex::new(HashMap::new()),
            in_flight: Mutex::new(HashSet::new()),
            locks,
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn faults(&self) -> &faults::Faults {
        &self.faults
    }

    pub fn metrics(&self) -> &metrics::Metrics {
        &self.metrics
    }

    /// Cumulative work served: the memory guard's work counters.
    pub fn work_counters(&self) -> WorkCounters {
        WorkCounters {
            requests_total: self.requests_total.load(Ordering::Relaxed),
            payments_total: self.payments_total.load(Ordering::Relaxed),
            payment_requests_total: self.payment_requests_total.load(Ordering::Relaxed),
            payment_failures_total: self.payment_failures_total.load(Ordering::Relaxed),
        }
    }

    /// Installs what answers the admin and debug endpoints (once; later calls are ignored).
    pub fn set_admin_hooks(&self, hooks: Arc<dyn AdminHooks>) {
        let _ = self.admin_hooks.set(hooks);
    }

    /// Refreshes the gauges read at scrape time and renders every metric.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.resident.set(metrics::resident_bytes() as i64);
        let st = self.store.stats();
        m.component("writer_queue", st.writer_queue_len, st.writer_queue_max);
        m.store(st.commits, st.batches_committed);
        m.component("store_readers", st.readers_busy, st.readers_max);
        let in_flight = self.in_flight.lock().map(|s| s.len()).unwrap_or(0);
        m.component("idempotency_in_flight", in_flight, self.cfg.idempotency_in_flight_max);
        let keys = self.keys.lock().map(|k| k.len()).unwrap_or(0);
        m.component("api_key_cache", keys, self.cfg.api_key_cache_max);
        m.component("requests_in_flight", self.admitted.load(Ordering::Relaxed), self.cfg.requests_in_flight_max);
        m.encode()
    }

    /// The stripe of the per-intent lock `id` falls in.
    pub(crate) fn lock_for(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.locks[(h.finish() % self.locks.len() as u64) as usize]
    }
}

/// What a browser may call with the publishable key gets CORS headers: any origin (the key,
/// not a cookie, authenticates), the methods and headers Stripe.js sends. Nothing else does.
fn cors() -> tower_http::cors::CorsLayer {
    use axum::http::{header, HeaderName, Method};
    tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("idempotency-key"), HeaderName::from_static("stripe-version")])
        .max_age(Duration::from_secs(600))
}

/// The whole API as an axum router.
pub fn router(app: Arc<App>) -> Router {
    // The operations a publishable key may call, each with its CORS headers.
    let browser = Router::new()
        .route("/v1/payment_methods", post(payment_methods::create).get(payment_methods::list))
        .route("/v1/payment_intents/{id}", post(payment_intents::update).get(payment_intents::retrieve))
        .route("/v1/payment_intents/{id}/confirm", post(payment_intents::confirm))
        // Set here, under the CORS layer, so a preflight (OPTIONS) reaches it.
        .method_not_allowed_fallback(pipeline::fallback)
        .layer(cors());
    Router::new()
        .merge(browser)
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/admin/memory/leak-report", get(ops::leak_report))
        .route("/admin/alerts", get(ops::alerts))
        .route("/debug/pprof/heap", get(ops::pprof_heap))
        .route("/admin/memory/profile/reference", post(ops::mark_heap))
        .route("/admin/memory/profile/diff", get(ops::heap_diff))
        .route("/v1/openapi.json", get(openapi::serve))
        .route("/v1/payment_methods/{id}", get(payment_methods::retrieve))
        .route("/v1/payment_intents", post(payment_intents::create).get(payment_intents::list))
        .route("/v1/payment_intents/{id}/capture", post(payment_intents::capture))
        .route("/v1/payment_intents/{id}/cancel", post(payment_intents::cancel))
        .route("/v1/charges/{id}", get(charges::retrieve))
        .route("/v1/refunds", post(refunds::create).get(refunds::list))
        .route("/v1/refunds/{id}", get(refunds::retrieve))
        .route("/v1/events", get(events::list))
        .route("/v1/events/{id}", get(events::retrieve))
        .route("/v1/webhook_endpoints", post(webhook_endpoints::create).get(webhook_endpoints::list))
        .route(
            "/v1/webhook_endpoints/{id}",
            post(webhook_endpoints::update).get(webhook_endpoints::retrieve).delete(webhook_endpoints::delete),
        )
        .route("/v1/webhook_endpoints/{id}/deliveries", get(webhook_endpoints::deliveries))
        .fallback(pipeline::fallback)
        .method_not_allowed_fallback(pipeline::fallback)
        .layer(axum::middleware::map_response(pipeline::request_id))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), pipeline::track))
        .with_state(app)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_sort_by_creation_time_and_differ() {
        let a = super::new_id("pi");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = super::new_id("pi");
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), "pi_".len() + 24);
        assert_ne!(super::new_id("pi"), super::new_id("pi"));
    }
}

//! paywarden's HTTP API in Stripe's wire format, so Stripe's SDKs work unchanged.
//!
//! A POST goes through one path, [`App::post`]: authenticate the key, read the body within
//! [`ApiConfig::body_bytes_max`], parse parameters, check the `Idempotency-Key` (replay,
//! conflict or in flight), run the operation (validate everything, then call the acquirer,
//! then compute the new state in the core), and hand one [`WriteBatch`] — the objects, the
//! ledger postings and the idempotent response together — to the store's group-commit
//! writer. The response is sent only after that batch is durable. Operations on one
//! PaymentIntent are serialised by a striped lock in this process and by the intent's
//! version in the store across processes.
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

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use paywarden_acquirer::{AuthorizeRequest, CardInput, Connector, Tokenized};
use paywarden_core::payment::{IntentUpdate, NewIntent};
use paywarden_core::{
    CancellationReason, CaptureMethod, Charge, Metadata, MetadataError, PaymentIntent, PaymentMethod, StateError,
};
use paywarden_store::{
    ConflictKind, IdempotencyRecord, Merchant, Page, Store, StoreError, Write, WriteBatch, WriteError,
};
use rand::distr::Alphanumeric;
use rand::Rng;
use serde::Serialize;
use sha2::{Digest, Sha256};

pub mod error;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod openapi;
pub mod params;
pub mod wire;
pub mod webhooks;

pub use error::{ApiError, ErrorType};
use params::{Params, DESCRIPTION_CHARS_MAX};

/// Stripe's limit on an Idempotency-Key, and the default of [`ApiConfig::idempotency_key_chars_max`].
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

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
    /// The key webhook endpoints' signing secrets are derived from (`serve` keeps one per data
    /// dir; the default is random, for tests).
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

/// SHA-256 of an API key: what is stored and looked up, never the key itself.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new secret key for the test mode: `sk_test_` and 48 random alphanumerics (~285 bits).
pub fn new_secret_key() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect();
    format!("sk_test_{tail}")
}

/// What an operation produced: the response and everything to write with it.
struct Outcome {
    status: StatusCode,
    body: Vec<u8>,
    batch: WriteBatch,
    /// The acquirer approved a payment (it is authorized or captured once this is durable).
    confirmed: bool,
}

impl Outcome {
    fn ok(object: &impl Serialize, batch: WriteBatch) -> Outcome {
        Outcome { status: StatusCode::OK, body: json(object), batch, confirmed: false }
    }
}

fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

enum PostOp {
    CreatePaymentMethod,
    CreateIntent,
    UpdateIntent(String),
    ConfirmIntent(String),
    CaptureIntent(String),
    CancelIntent(String),
    CreateRefund,
    CreateWebhookEndpoint,
    UpdateWebhookEndpoint(String),
}

impl PostOp {
    /// A request on a PaymentIntent: what `--fault errors` and `--fault latency` act on.
    fn is_payment(&self) -> bool {
        matches!(
            self,
            PostOp::CreateIntent | PostOp::UpdateIntent(_) | PostOp::ConfirmIntent(_) | PostOp::CaptureIntent(_) | PostOp::CancelIntent(_)
        )
    }
}

enum GetOp {
    PaymentMethod(String),
    PaymentMethods,
    Intent(String),
    Intents,
    Charge(String),
    Refund(String),
    Refunds,
    Event(String),
    Events,
    WebhookEndpoint(String),
    WebhookEndpoints,
    EndpointDeliveries(String),
}

struct InFlight<'a> {
    app: &'a App,
    key: Option<(String, String)>,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take()
            && let Ok(mut set) = self.app.in_flight.lock() {
                set.remove(&k);
            }
    }
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

    /// Admin endpoints take the admin token, never a merchant key; without a configured
    /// token they do not exist.
    fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.cfg.admin_token else {
            return Err(ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, Some("resource_missing"), "Admin endpoints are off: start serve with --admin-token or PAYWARDEN_ADMIN_TOKEN."));
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if given.is_empty() || !bool::from(subtle::ConstantTimeEq::ct_eq(given.as_bytes(), token.as_bytes())) {
            return Err(ApiError::unauthorized("Admin endpoints need 'Authorization: Bearer ADMIN_TOKEN' (the admin token, not a merchant key)."));
        }
        Ok(())
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

    fn lock_for(&self, id: &str) -> &tokio::sync::Mutex<()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut h);
        &self.locks[(h.finish() % self.locks.len() as u64) as usize]
    }

    async fn authenticate(&self, headers: &HeaderMap) -> Result<Merchant, ApiError> {
        let key = extract_key(headers)?;
        let redacted = redact_key(&key);
        if !key.starts_with("sk_test_") || key.len() > 255 {
            return Err(ApiError::unauthorized(format!("Invalid API Key provided: {redacted}")));
        }
        let hash = hash_key(&key);
        if let Ok(cache) = self.keys.lock()
            && let Some((m, at)) = cache.get(&hash)
                && at.elapsed() < self.cfg.api_key_cache_ttl {
                    return Ok(m.clone());
                }
        let merchant = self
            .store
            .merchant_by_key_hash(&hash)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::unauthorized(format!("Invalid API Key provided: {redacted}")))?;
        if let Ok(mut cache) = self.keys.lock() {
            if cache.len() >= self.cfg.api_key_cache_max {
                // Bounded by construction: drop everything rather than grow; keys re-warm in one lookup.
                cache.clear();
            }
            cache.insert(hash, (merchant.clone(), Instant::now()));
        }
        Ok(merchant)
    }

    async fn post(self: Arc<Self>, op: PostOp, req: Request) -> Response {
        let payment = op.is_payment();
        let res = match self.post_inner(op, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if payment {
            let status = res.status().as_u16();
            self.metrics.payment(status);
            self.payment_requests_total.fetch_add(1, Ordering::Relaxed);
            if status >= 500 {
                self.payment_failures_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    async fn post_inner(&self, op: PostOp, req: Request) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let merchant = self.authenticate(&parts.headers).await?;
        if op.is_payment() && self.faults.before_payment_request().await {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorType::ApiError,
                Some("injected_fault"),
                "paywarden answered with an injected fault (serve --fault errors=RATE); nothing was read or written.",
            ));
        }
        let bytes = read_body(body, self.cfg.body_bytes_max, self.cfg.body_read_timeout).await?;
        let params = parse_body(&parts.headers, &bytes)?;
        let idem_key = idempotency_key(&parts.headers, self.cfg.idempotency_key_chars_max)?;
        let mut fingerprint = Sha256::new();
        fingerprint.update(parts.method.as_str().as_bytes());
        fingerprint.update(b" ");
        fingerprint.update(parts.uri.path().as_bytes());
        fingerprint.update(b"\n");
        fingerprint.update(params.canonical());
        let fingerprint: [u8; 32] = fingerprint.finalize().into();

        let _guard = match &idem_key {
            Some(key) => {
                let guard = self.enter(&merchant.id, key)?;
                if let Some(replay) = self.replay(&merchant.id, key, &fingerprint).await? {
                    return Ok(replay);
                }
                guard
            }
            None => InFlight { app: self, key: None },
        };

        let now = now();
        let mut attempt = 0;
        loop {
            let mut out = self.exec(&merchant, &op, params.clone(), now).await?;
            // The events this change makes, in its own transaction (the outbox).
            let source = match op {
                PostOp::ConfirmIntent(_) | PostOp::CaptureIntent(_) | PostOp::CancelIntent(_) => webhooks::EventSource::IntentChange,
                PostOp::CreateRefund => webhooks::EventSource::Refund,
                _ => webhooks::EventSource::Other,
            };
            let events = webhooks::events_of(source, &out.batch);
            for e in webhooks::records(&merchant.id, now, idem_key.as_deref(), events) {
                out.batch.push(Write::Event(e));
            }
            if let Some(key) = &idem_key {
                out.batch.push(Write::Idempotency {
                    record: IdempotencyRecord {
                        merchant: merchant.id.clone(),
                        key: key.clone(),
                        request_hash: fingerprint,
                        status: out.status.as_u16(),
                        // A new endpoint's secret is never stored: a replay derives it again.
                        body: if matches!(op, PostOp::CreateWebhookEndpoint) { webhooks::without_secret(&out.body) } else { out.body.clone() },
                        created: now,
                    },
                    replaces_before: now - self.cfg.idempotency_ttl_s,
                });
            }
            match self.store.write(out.batch).await {
                Ok(()) => {
                    if out.confirmed {
                        self.payments_total.fetch_add(1, Ordering::Relaxed);
                        self.faults.after_confirmed_payment();
                    }
                    return Ok(respond(out.status, out.body, false));
                }
                Err(WriteError::Conflict(ConflictKind::IntentVersion)) if attempt < self.cfg.write_conflict_retries_max => {
                    attempt += 1;
                    continue;
                }
                Err(WriteError::Conflict(ConflictKind::IntentVersion)) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorType::InvalidRequestError,
                        Some("lock_timeout"),
                        "This object is being changed by other requests right now; retry the request.",
                    ));
                }
                Err(WriteError::Conflict(ConflictKind::IdempotencyKey)) => {
                    // Another process finished a request with this key first: answer as it did.
                    let key = idem_key.as_deref().unwrap_or_default();
                    return match self.replay(&merchant.id, key, &fingerprint).await? {
                        Some(r) => Ok(r),
                        None => Err(ApiError::internal("idempotency conflict without a stored record")),
                    };
                }
                Err(WriteError::QueueFull { limit }) => {
                    return Err(ApiError::unavailable(
                        "writer_queue_full",
                        format!("paywarden is at its write capacity ({limit} batches queued); retry after a second with the same Idempotency-Key."),
                    ));
                }
                Err(e) => return Err(ApiError::internal(e)),
            }
        }
    }

    /// Marks an idempotency key as in flight, or refuses a concurrent duplicate.
    fn enter(&self, merchant: &str, key: &str) -> Result<InFlight<'_>, ApiError> {
        let mut set = self.in_flight.lock().map_err(|_| ApiError::internal("in-flight set poisoned"))?;
        if set.len() >= self.cfg.idempotency_in_flight_max {
            return Err(ApiError::unavailable(
                "too_many_requests_in_flight",
                format!("paywarden is processing {} idempotent requests already; retry shortly.", set.len()),
            ));
        }
        let k = (merchant.to_string(), key.to_string());
        if !set.insert(k.clone()) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorType::IdempotencyError,
                Some("idempotency_key_in_use"),
                "There is currently another in-progress request using this Idempotency-Key (that probably means you submitted twice). Retry after it has finished.",
            ));
        }
        Ok(InFlight { app: self, key: Some(k) })
    }

    async fn replay(&self, merchant: &str, key: &str, fingerprint: &[u8; 32]) -> Result<Option<Response>, ApiError> {
        let Some(rec) = self.store.idempotency(merchant, key).await.map_err(ApiError::internal)? else {
            return Ok(None);
        };
        if rec.created < now() - self.cfg.idempotency_ttl_s {
            return Ok(None);
        }
        if &rec.request_hash != fingerprint {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                ErrorType::IdempotencyError,
                Some("idempotency_key_reused"),
                format!(
                    "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{}' if you meant to execute a different request.",
                    error::truncate(key, 64)
                ),
            ));
        }
        let status = StatusCode::from_u16(rec.status).map_err(ApiError::internal)?;
        let body = webhooks::with_secret(rec.body, &self.cfg.webhook_key);
        Ok(Some(respond(status, body, true)))
    }

    async fn exec(&self, m: &Merchant, op: &PostOp, p: Params, now: i64) -> Result<Outcome, ApiError> {
        match op {
            PostOp::CreatePaymentMethod => self.create_payment_method(m, p, now).await,
            PostOp::CreateIntent => self.create_intent(m, p, now).await,
            PostOp::UpdateIntent(id) => self.update_intent(m, id, p).await,
            PostOp::ConfirmIntent(id) => self.confirm_intent(m, id, p, now).await,
            PostOp::CaptureIntent(id) => self.capture_intent(m, id, p, now).await,
            PostOp::CancelIntent(id) => self.cancel_intent(m, id, p, now).await,
            PostOp::CreateRefund => self.create_refund(m, p, now).await,
            PostOp::CreateWebhookEndpoint => self.create_endpoint(m, p, now).await,
            PostOp::UpdateWebhookEndpoint(id) => self.update_endpoint(m, id, p).await,
        }
    }

    async fn create_payment_method(&self, m: &Merchant, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        p.one_of("type", &["card"])?.ok_or_else(|| ApiError::missing("type"))?;
        let mut card = p.object("card")?.ok_or_else(|| ApiError::missing("card"))?;
        let number = card.required_str("number")?;
        let exp_month = card.required_str("exp_month")?;
        let exp_year = card.required_str("exp_year")?;
        let cvc = card.str("cvc")?;
        card.finish()?;
        let metadata = metadata_new(&mut p)?;
        p.finish()?;
        let input = CardInput::parse(&number, &exp_month, &exp_year, cvc.as_deref()).map_err(card_error)?;
        drop((number, cvc));
        let tokenized = self.acquirer.tokenize(input, now).await.map_err(card_error)?;
        let pm = payment_method_from(m, tokenized, metadata, now);
        let mut batch = WriteBatch::new();
        batch.push(Write::PaymentMethod(pm.clone()));
        Ok(Outcome::ok(&wire::payment_method(&pm), batch))
    }

    /// A stored payment method, or one of Stripe's test ids made into a new one.
    async fn resolve_payment_method(&self, m: &Merchant, id: &str, now: i64, batch: &mut WriteBatch) -> Result<PaymentMethod, ApiError> {
        if let Some(t) = self.acquirer.test_payment_method(id, now).await {
            let pm = payment_method_from(m, t, Metadata::default(), now);
            batch.push(Write::PaymentMethod(pm.clone()));
            return Ok(pm);
        }
        self.store
            .payment_method(&m.id, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("PaymentMethod", id, Some("payment_method")))
    }

    async fn create_intent(&self, m: &Merchant, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let amount = p.required_amount("amount")?;
        let currency = p.currency("currency")?.ok_or_else(|| ApiError::missing("currency"))?;
        let capture_method = capture_method(&mut p)?.unwrap_or(CaptureMethod::Automatic);
        let confirm = p.bool("confirm")?.unwrap_or(false);
        let pm_id = p.id("payment_method", "pm_")?;
        let description = description(&mut p)?;
        let metadata = metadata_new(&mut p)?;
        payment_method_types(&mut p)?;
        if let Some(mut apm) = p.object("automatic_payment_methods")? {
            apm.bool("enabled")?;
            apm.one_of("allow_redirects", &["always", "never"])?;
            apm.finish()?;
        }
        p.finish()?;
        if confirm && pm_id.is_none() {
            return Err(ApiError::invalid(
                "parameter_missing",
                "payment_method",
                "You passed confirm=true without a payment_method. Pass payment_method (e.g. pm_card_visa) or leave confirm out and confirm later.",
            ));
        }
        let mut batch = WriteBatch::new();
        let pm = match &pm_id {
            Some(id) => Some(self.resolve_payment_method(m, id, now, &mut batch).await?),
            None => None,
        };
        let intent = PaymentIntent::new(NewIntent {
            id: new_id("pi"),
            merchant: m.id.clone(),
            amount,
            currency,
            capture_method,
            payment_method: pm.as_ref().map(|pm| pm.id.clone()),
            description,
            metadata,
            created: now,
        });
        match (confirm, pm) {
            (true, Some(pm)) => self.authorize(intent, &pm, now, batch, true).await,
            _ => {
                batch.push(Write::InsertIntent(intent.clone()));
                Ok(Outcome::ok(&wire::payment_intent(&intent), batch))
            }
        }
    }

    /// Authorizes with the acquirer and records the result, approved or declined.
    async fn authorize(&self, pi: PaymentIntent, pm: &PaymentMethod, now: i64, mut batch: WriteBatch, insert: bool) -> Result<Outcome, ApiError> {
        pi.confirm_target(Some(&pm.id)).map_err(state_error)?;
        let charge_id = new_id("ch");
        let outcome = self
            .acquirer
            .authorize(AuthorizeRequest { token: &pm.acquirer_token, amount: pi.amount.get(), currency: pi.currency, reference: &charge_id })
            .await
            .map_err(acquirer_error)?;
        let confirmed = pi.confirm(&pm.id, outcome, charge_id, now).map_err(state_error)?;
        let object = wire::payment_intent(&confirmed.intent);
        let declined = confirmed.declined().cloned();
        batch.push(if insert { Write::InsertIntent(confirmed.intent.clone()) } else { Write::UpdateIntent(confirmed.intent.clone()) });
        batch.push(Write::Charge(confirmed.charge.clone()));
        if !confirmed.postings.is_empty() {
            batch.push(Write::Postings(confirmed.postings));
        }
        match declined {
            None => Ok(Outcome { confirmed: true, ..Outcome::ok(&object, batch) }),
            Some(d) => {
                let mut e = ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorType::CardError, Some(&d.code), d.message.clone());
                e.decline_code = d.decline_code.clone();
                e.charge = Some(d.charge.clone());
                e.payment_method = Some(serde_json::json!({"id": d.payment_method, "object": "payment_method"}));
                e.payment_intent = serde_json::to_value(&object).ok();
                Ok(Outcome { status: e.status, body: e.body(), batch, confirmed: false })
            }
        }
    }

    async fn load_intent(&self, m: &Merchant, id: &str) -> Result<PaymentIntent, ApiError> {
        self.store
            .payment_intent(&m.id, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("payment_intent", id, None))
    }

    async fn load_latest_charge(&self, m: &Merchant, pi: &PaymentIntent) -> Result<Option<Charge>, ApiError> {
        match &pi.latest_charge {
            None => Ok(None),
            Some(id) => self.store.charge(&m.id, id).await.map_err(ApiError::internal),
        }
    }

    /// The charge of an authorized or succeeded intent, which always has one.
    async fn latest_charge_of_settled(&self, m: &Merchant, pi: &PaymentIntent) -> Result<Charge, ApiError> {
        self.load_latest_charge(m, pi)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{} is {} but its charge is missing", pi.id, pi.status.as_str())))
    }

    async fn update_intent(&self, m: &Merchant, id: &str, mut p: Params) -> Result<Outcome, ApiError> {
        let amount = p.amount("amount")?;
        let currency = p.currency("currency")?;
        let capture_method = capture_method(&mut p)?;
        let pm_id = p.id("payment_method", "pm_")?;
        let description = p.str("description")?;
        check_description(description.as_deref())?;
        let _lock = self.lock_for(id).lock().await;
        let pi = self.load_intent(m, id).await?;
        let metadata = p.metadata(&pi.metadata)?;
        payment_method_types(&mut p)?;
        p.finish()?;
        let mut batch = WriteBatch::new();
        let payment_method = match pm_id {
            Some(pm) => Some(self.resolve_payment_method(m, &pm, now(), &mut batch).await?.id),
            None => None,
        };
        let next = pi
            .update(IntentUpdate { amount, currency, capture_method, payment_method, description, metadata })
            .map_err(state_error)?;
        batch.push(Write::UpdateIntent(next.clone()));
        Ok(Outcome::ok(&wire::payment_intent(&next), batch))
    }

    async fn confirm_intent(&self, m: &Merchant, id: &str, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let pm_id = p.id("payment_method", "pm_")?;
        p.finish()?;
        let _lock = self.lock_for(id).lock().await;
        let pi = self.load_intent(m, id).await?;
        let target = pi.confirm_target(pm_id.as_deref()).map_err(state_error)?.to_string();
        let mut batch = WriteBatch::new();
        let pm = self.resolve_payment_method(m, &target, now, &mut batch).await?;
        self.authorize(pi, &pm, now, batch, false).await
    }

    async fn capture_intent(&self, m: &Merchant, id: &str, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let amount = p.amount("amount_to_capture")?;
        p.finish()?;
        let _lock = self.lock_for(id).lock().await;
        let pi = self.load_intent(m, id).await?;
        pi.can_capture().map_err(state_error)?;
        let charge = self.latest_charge_of_settled(m, &pi).await?;
        let (next, charge, postings) = pi.capture(amount, &charge, now).map_err(state_error)?;
        let auth = charge.authorization.clone().unwrap_or_default();
        self.acquirer.capture(&auth, charge.amount_captured, pi.currency).await.map_err(acquirer_error)?;
        let mut batch = WriteBatch::new();
        batch.push(Write::UpdateIntent(next.clone())).push(Write::Charge(charge)).push(Write::Postings(postings));
        Ok(Outcome::ok(&wire::payment_intent(&next), batch))
    }

    async fn cancel_intent(&self, m: &Merchant, id: &str, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let reason = p.one_of("cancellation_reason", CancellationReason::ALL)?.and_then(|r| CancellationReason::parse(&r));
        p.finish()?;
        let _lock = self.lock_for(id).lock().await;
        let pi = self.load_intent(m, id).await?;
        let charge = self.load_latest_charge(m, &pi).await?;
        let (next, released, postings) = pi.cancel(reason, charge.as_ref(), now).map_err(state_error)?;
        let mut batch = WriteBatch::new();
        if let Some(c) = released {
            self.acquirer.void(c.authorization.as_deref().unwrap_or_default()).await.map_err(acquirer_error)?;
            batch.push(Write::Charge(c));
        }
        batch.push(Write::UpdateIntent(next.clone()));
        if !postings.is_empty() {
            batch.push(Write::Postings(postings));
        }
        Ok(Outcome::ok(&wire::payment_intent(&next), batch))
    }

    async fn create_refund(&self, m: &Merchant, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let pi_id = p.id("payment_intent", "pi_")?;
        let ch_id = p.id("charge", "ch_")?;
        let amount = p.amount("amount")?;
        let reason = p.one_of("reason", paywarden_core::Refund::REASONS)?;
        let metadata = metadata_new(&mut p)?;
        p.finish()?;
        let named_charge = ch_id.clone();
        let pi_id = match (pi_id, ch_id) {
            (Some(pi), None) => pi,
            (None, Some(ch)) => {
                self.store
                    .charge(&m.id, &ch)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::no_such("charge", &ch, Some("charge")))?
                    .payment_intent
            }
            (None, None) => {
                return Err(ApiError::invalid("parameter_missing", "payment_intent", "Missing required param: payment_intent (or charge)."));
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid("parameter_invalid", "charge", "Pass payment_intent or charge, not both."));
            }
        };
        let _lock = self.lock_for(&pi_id).lock().await;
        let pi = self
            .store
            .payment_intent(&m.id, &pi_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("payment_intent", &pi_id, Some("payment_intent")))?;
        // Only the intent's latest charge can have succeeded; an earlier attempt failed and
        // has nothing to refund (refunding the latest one instead would not be what was asked).
        if let Some(ch) = named_charge.filter(|ch| pi.latest_charge.as_deref() != Some(ch.as_str())) {
            return Err(ApiError::invalid(
                "charge_not_refundable",
                "charge",
                format!("Charge {ch} is a failed attempt with nothing to refund; refund payment_intent={pi_id} (its latest charge) instead."),
            ));
        }
        pi.can_refund().map_err(state_error)?;
        let charge = self.latest_charge_of_settled(m, &pi).await?;
        let (next, charge, refund, posting) =
            pi.refund(&charge, amount, new_id("re"), reason, metadata, now).map_err(state_error)?;
        let auth = charge.authorization.clone().unwrap_or_default();
        self.acquirer.refund(&auth, refund.amount, pi.currency).await.map_err(acquirer_error)?;
        let object = wire::refund(&refund);
        let mut batch = WriteBatch::new();
        batch
            .push(Write::UpdateIntent(next))
            .push(Write::Charge(charge))
            .push(Write::InsertRefund(refund))
            .push(Write::Postings(vec![posting]));
        Ok(Outcome::ok(&object, batch))
    }

    async fn create_endpoint(&self, m: &Merchant, mut p: Params, now: i64) -> Result<Outcome, ApiError> {
        let url = p.required_str("url")?;
        let enabled = p.list("enabled_events")?.ok_or_else(|| ApiError::missing("enabled_events"))?;
        let description = description(&mut p)?;
        p.finish()?;
        webhooks::check_url(&url).map_err(|why| ApiError::invalid("url_invalid", "url", format!("Invalid url: {why}.")))?;
        let enabled_events = webhooks::check_events(&enabled).map_err(|why| ApiError::invalid("parameter_invalid", "enabled_events", why))?;
        let existing = self.store.list_webhook_endpoints(&m.id, &Page { limit: 100, starting_after: None, ending_before: None }).await.map_err(ApiError::internal)?;
        if existing.data.len() >= webhooks::ENDPOINTS_PER_MERCHANT_MAX {
            return Err(ApiError::invalid(
                "webhook_endpoints_limit",
                "url",
                format!("An account has at most {} webhook endpoints; delete one first.", webhooks::ENDPOINTS_PER_MERCHANT_MAX),
            ));
        }
        let ep = paywarden_store::WebhookEndpointRecord {
            id: new_id("we"),
            merchant: m.id.clone(),
            url,
            enabled_events,
            description,
            status: paywarden_store::EndpointStatus::Enabled,
            disabled_reason: None,
            failing_since_ms: None,
            created: now,
        };
        let secret = webhooks::endpoint_secret(&self.cfg.webhook_key, &ep.id);
        let object = webhooks::endpoint_object(&ep, Some(secret));
        let mut batch = WriteBatch::new();
        batch.push(Write::WebhookEndpoint(ep));
        Ok(Outcome::ok(&object, batch))
    }

    async fn update_endpoint(&self, m: &Merchant, id: &str, mut p: Params) -> Result<Outcome, ApiError> {
        let url = p.str("url")?;
        let enabled = p.list("enabled_events")?;
        let description = p.str("description")?;
        check_description(description.as_deref())?;
        let disabled = p.bool("disabled")?;
        p.finish()?;
        let mut ep = self.store.webhook_endpoint(&m.id, id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("webhook_endpoint", id, None))?;
        if let Some(url) = url {
            webhooks::check_url(&url).map_err(|why| ApiError::invalid("url_invalid", "url", format!("Invalid url: {why}.")))?;
            ep.url = url;
        }
        if let Some(events) = enabled {
            ep.enabled_events = webhooks::check_events(&events).map_err(|why| ApiError::invalid("parameter_invalid", "enabled_events", why))?;
        }
        if description.is_some() {
            ep.description = description.filter(|d| !d.is_empty());
        }
        match disabled {
            Some(true) => {
                ep.status = paywarden_store::EndpointStatus::Disabled;
                ep.disabled_reason = Some("disabled through the API".into());
            }
            Some(false) => {
                ep.status = paywarden_store::EndpointStatus::Enabled;
                ep.disabled_reason = None;
                ep.failing_since_ms = None;
            }
            None => {}
        }
        let object = webhooks::endpoint_object(&ep, None);
        let mut batch = WriteBatch::new();
        batch.push(Write::WebhookEndpoint(ep));
        Ok(Outcome::ok(&object, batch))
    }

    async fn delete_endpoint(self: Arc<Self>, id: String, req: Request) -> Response {
        let run = async {
            let (parts, _) = req.into_parts();
            let m = self.authenticate(&parts.headers).await?;
            self.store.webhook_endpoint(&m.id, &id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("webhook_endpoint", &id, None))?;
            let mut batch = WriteBatch::new();
            batch.push(Write::DeleteWebhookEndpoint { merchant: m.id.clone(), id: id.clone() });
            match self.store.write(batch).await {
                Ok(()) => Ok(respond(StatusCode::OK, json(&serde_json::json!({"id": id, "object": "webhook_endpoint", "deleted": true})), false)),
                Err(WriteError::QueueFull { limit }) => Err(ApiError::unavailable(
                    "writer_queue_full",
                    format!("paywarden is at its write capacity ({limit} batches queued); retry after a second."),
                )),
                Err(e) => Err(ApiError::internal(e)),
            }
        };
        match run.await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn get(self: Arc<Self>, op: GetOp, req: Request) -> Response {
        match self.get_inner(op, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        }
    }

    async fn get_inner(&self, op: GetOp, req: Request) -> Result<Response, ApiError> {
        let (parts, _) = req.into_parts();
        let m = self.authenticate(&parts.headers).await?;
        let mut q = Params::from_form(parts.uri.query().unwrap_or_default().as_bytes())?;
        let path = parts.uri.path().to_string();
        let body = match op {
            GetOp::Intent(id) => {
                q.finish()?;
                json(&wire::payment_intent(&self.load_intent(&m, &id).await?))
            }
            GetOp::PaymentMethod(id) => {
                q.finish()?;
                let pm = self.store.payment_method(&m.id, &id).await.map_err(ApiError::internal)?;
                json(&wire::payment_method(&pm.ok_or_else(|| ApiError::no_such("PaymentMethod", &id, None))?))
            }
            GetOp::Charge(id) => {
                q.finish()?;
                let c = self.store.charge(&m.id, &id).await.map_err(ApiError::internal)?;
                json(&wire::charge(&c.ok_or_else(|| ApiError::no_such("charge", &id, None))?))
            }
            GetOp::Refund(id) => {
                q.finish()?;
                let r = self.store.refund(&m.id, &id).await.map_err(ApiError::internal)?;
                json(&wire::refund(&r.ok_or_else(|| ApiError::no_such("refund", &id, None))?))
            }
            GetOp::Intents => {
                let page = page(&mut q, "pi_")?;
                q.finish()?;
                let r = self.store.list_payment_intents(&m.id, &page).await.map_err(list_error(&page))?;
                json(&wire::ListObject { object: "list", data: r.data.iter().map(wire::payment_intent).collect(), has_more: r.has_more, url: path })
            }
            GetOp::PaymentMethods => {
                q.one_of("type", &["card"])?;
                let page = page(&mut q, "pm_")?;
                q.finish()?;
                let r = self.store.list_payment_methods(&m.id, &page).await.map_err(list_error(&page))?;
                json(&wire::ListObject { object: "list", data: r.data.iter().map(wire::payment_method).collect(), has_more: r.has_more, url: path })
            }
            GetOp::Event(id) => {
                q.finish()?;
                let e = self.store.event(&m.id, &id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("event", &id, None))?;
                let attempts = self.store.deliveries(&m.id, Some(&id), None, 100).await.map_err(ApiError::internal)?;
                let pending = self.store.pending_webhooks(&m.id, &id).await.map_err(ApiError::internal)?;
                let mut v: serde_json::Value = serde_json::from_str(&e.json).map_err(ApiError::internal)?;
                v["pending_webhooks"] = serde_json::json!(pending);
                v["delivery_attempts"] = serde_json::json!(attempts.iter().map(webhooks::delivery_object).collect::<Vec<_>>());
                json(&v)
            }
            GetOp::Events => {
                let kind = q.one_of("type", webhooks::EVENT_TYPES)?;
                let page = page(&mut q, "evt_")?;
                q.finish()?;
                let r = self.store.list_events(&m.id, kind.as_deref(), &page).await.map_err(list_error(&page))?;
                let data: Vec<serde_json::Value> = r.data.iter().filter_map(|e| serde_json::from_str(&e.json).ok()).collect();
                json(&serde_json::json!({"object": "list", "data": data, "has_more": r.has_more, "url": path}))
            }
            GetOp::WebhookEndpoint(id) => {
                q.finish()?;
                let ep = self.store.webhook_endpoint(&m.id, &id).await.map_err(ApiError::internal)?;
                json(&webhooks::endpoint_object(&ep.ok_or_else(|| ApiError::no_such("webhook_endpoint", &id, None))?, None))
            }
            GetOp::WebhookEndpoints => {
                let page = page(&mut q, "we_")?;
                q.finish()?;
                let r = self.store.list_webhook_endpoints(&m.id, &page).await.map_err(list_error(&page))?;
                let data: Vec<serde_json::Value> = r.data.iter().map(|e| webhooks::endpoint_object(e, None)).collect();
                json(&serde_json::json!({"object": "list", "data": data, "has_more": r.has_more, "url": path}))
            }
            GetOp::EndpointDeliveries(id) => {
                let limit = q.integer("limit", 1, 100)?.unwrap_or(10) as u32;
                q.finish()?;
                self.store.webhook_endpoint(&m.id, &id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("webhook_endpoint", &id, None))?;
                let d = self.store.deliveries(&m.id, None, Some(&id), limit).await.map_err(ApiError::internal)?;
                let data: Vec<serde_json::Value> = d.iter().map(webhooks::delivery_object).collect();
                json(&serde_json::json!({"object": "list", "data": data, "has_more": false, "url": path}))
            }
            GetOp::Refunds => {
                let pi = q.id("payment_intent", "pi_")?;
                let page = page(&mut q, "re_")?;
                q.finish()?;
                let r = self.store.list_refunds(&m.id, pi.as_deref(), &page).await.map_err(list_error(&page))?;
                json(&wire::ListObject { object: "list", data: r.data.iter().map(wire::refund).collect(), has_more: r.has_more, url: path })
            }
        };
        Ok(respond(StatusCode::OK, body, false))
    }
}

fn payment_method_from(m: &Merchant, t: Tokenized, metadata: Metadata, now: i64) -> PaymentMethod {
    PaymentMethod { id: new_id("pm"), merchant: m.id.clone(), card: t.summary, acquirer_token: t.token, metadata, created: now }
}

fn capture_method(p: &mut Params) -> Result<Option<CaptureMethod>, ApiError> {
    Ok(p.one_of("capture_method", &["automatic", "automatic_async", "manual"])?.and_then(|s| CaptureMethod::parse(&s)))
}

fn payment_method_types(p: &mut Params) -> Result<(), ApiError> {
    if let Some(types) = p.list("payment_method_types")?
        && (types.is_empty() || types.iter().any(|t| t != "card")) {
            return Err(ApiError::invalid(
                "parameter_invalid",
                "payment_method_types",
                "paywarden accepts only card payments: payment_method_types must be [\"card\"] (only \"card\", at least once).",
            ));
        }
    Ok(())
}

fn description(p: &mut Params) -> Result<Option<String>, ApiError> {
    let d = p.str("description")?;
    check_description(d.as_deref())?;
    Ok(d.filter(|d| !d.is_empty()))
}

fn check_description(d: Option<&str>) -> Result<(), ApiError> {
    match d {
        Some(d) if d.chars().count() > DESCRIPTION_CHARS_MAX => Err(ApiError::invalid(
            "parameter_invalid_string",
            "description",
            format!("description is too long: at most {DESCRIPTION_CHARS_MAX} characters."),
        )),
        _ => Ok(()),
    }
}

fn metadata_new(p: &mut Params) -> Result<Metadata, ApiError> {
    let pairs = p.metadata(&Metadata::default())?;
    Metadata::from_pairs(pairs).map_err(metadata_error)
}

fn metadata_error(e: MetadataError) -> ApiError {
    ApiError::invalid("parameter_invalid", "metadata", e.to_string())
}

fn page(q: &mut Params, prefix: &str) -> Result<Page, ApiError> {
    let limit = q.integer("limit", 1, 100)?.unwrap_or(10) as u32;
    let starting_after = q.id("starting_after", prefix)?;
    let ending_before = q.id("ending_before", prefix)?;
    if starting_after.is_some() && ending_before.is_some() {
        return Err(ApiError::invalid(
            "parameter_invalid",
            "ending_before",
            "You may only specify one of these parameters: starting_after, ending_before.",
        ));
    }
    Ok(Page { limit, starting_after, ending_before })
}

/// Maps a list's store error; an unknown cursor names the parameter that carried it.
fn list_error(page: &Page) -> impl Fn(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::CursorNotFound { object, id } => {
            let param = if page.ending_before.as_deref() == Some(id.as_str()) { "ending_before" } else { "starting_after" };
            ApiError::no_such(object, &id, Some(param))
        }
        e => ApiError::internal(e),
    }
}

fn state_error(e: StateError) -> ApiError {
    match &e {
        StateError::UnexpectedState { .. } => ApiError::unexpected_state(e.to_string()),
        StateError::MissingPaymentMethod => ApiError::invalid("parameter_missing", "payment_method", e.to_string()),
        StateError::CaptureTooLarge { .. } => ApiError::invalid("amount_too_large", "amount_to_capture", e.to_string()),
        StateError::RefundTooLarge { .. } => ApiError::invalid("amount_too_large", "amount", e.to_string()),
        StateError::AlreadyRefunded { .. } => ApiError::invalid("charge_already_refunded", "payment_intent", e.to_string()),
        StateError::NothingToRefund { .. } => ApiError::invalid("charge_not_refundable", "payment_intent", e.to_string()),
        StateError::Metadata(m) => metadata_error(m.clone()),
        StateError::Overflow => ApiError::internal(e),
    }
}

fn card_error(e: paywarden_acquirer::CardError) -> ApiError {
    ApiError::new(StatusCode::PAYMENT_REQUIRED, ErrorType::CardError, Some(e.code()), e.to_string()).param(e.param())
}

fn acquirer_error(e: paywarden_acquirer::ConnectorError) -> ApiError {
    tracing::warn!(error = %e, "acquirer call failed");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        ErrorType::ApiError,
        Some("acquirer_unavailable"),
        format!("The acquirer could not be reached ({e}); nothing was charged. Retry with the same Idempotency-Key."),
    )
}

fn extract_key(headers: &HeaderMap) -> Result<String, ApiError> {
    let missing = || {
        ApiError::unauthorized(
            "You did not provide an API key. You need to provide your API key in the Authorization header, using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY').",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| ApiError::unauthorized("The Authorization header is not valid ASCII."))?;
    if let Some(k) = value.strip_prefix("Bearer ") {
        return Ok(k.trim().to_string());
    }
    if let Some(b64) = value.strip_prefix("Basic ") {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|_| ApiError::unauthorized("Invalid Basic authorization: send base64 of 'YOUR_SECRET_KEY:'."))?;
        let text = String::from_utf8(raw).map_err(|_| ApiError::unauthorized("Invalid Basic authorization: the key is not UTF-8."))?;
        return Ok(text.split(':').next().unwrap_or_default().to_string());
    }
    Err(ApiError::unauthorized(
        "Invalid Authorization header: use 'Bearer YOUR_SECRET_KEY' or HTTP Basic with the key as the user name.",
    ))
}

fn redact_key(key: &str) -> String {
    let tail: String = key.chars().rev().take(4).collect::<Vec<_>>().into_iter().rev().collect();
    let head = if key.starts_with("sk_test_") { "sk_test_" } else { "" };
    format!("{head}****{tail}")
}

fn idempotency_key(headers: &HeaderMap, max: usize) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let invalid = |why: String| ApiError::invalid("idempotency_key_invalid", "Idempotency-Key", why);
    let s = v
        .to_str()
        .ok()
        .filter(|s| s.bytes().all(|b| (b' '..=b'~').contains(&b)))
        .ok_or_else(|| invalid("The Idempotency-Key header must be printable ASCII (no tabs or control characters).".into()))?;
    if s.is_empty() {
        return Err(invalid("The Idempotency-Key header is empty; send a unique value per operation, e.g. a UUID.".into()));
    }
    if s.chars().count() > max {
        return Err(invalid(format!("The Idempotency-Key header is {} characters long; the limit is {max}.", s.chars().count())));
    }
    Ok(Some(s.to_string()))
}

async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            Some("body_too_large"),
            format!("The request body is larger than body_bytes_max ({limit} bytes); send fewer or shorter parameters."),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::InvalidRequestError,
            Some("body_timeout"),
            format!("The request body did not arrive within body_read_timeout ({} s); send it whole, at once.", timeout.as_secs_f64()),
        )),
    }
}

fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Params, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => Params::from_form(bytes),
        "application/json" => Params::from_json(bytes),
        _ if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Params::empty()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::InvalidRequestError,
            Some("unsupported_content_type"),
            format!(
                "Content-Type '{}' is not supported; send application/x-www-form-urlencoded (as Stripe's SDKs do) or application/json.",
                error::truncate(ct, 64)
            ),
        )),
    }
}

fn respond(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

async fn request_id(mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&new_id("req")) {
        res.headers_mut().insert("request-id", v);
    }
    res
}

async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::InvalidRequestError,
        None,
        format!("Unrecognized request URL ({method}: {}). See /v1/openapi.json for the endpoints paywarden serves.", error::truncate(uri.path(), 128)),
    );
    e.code = Some("resource_missing".into());
    e
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// Readiness: the store answers a read and the writer's queue has room. A rollout controller
/// sends traffic to an instance only after this says 200.
async fn readyz(State(app): State<Arc<App>>) -> Response {
    let stats = app.store.stats();
    if stats.writer_queue_len >= stats.writer_queue_max {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: the writer's queue is full\n").into_response();
    }
    match app.store.merchants_count().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the store did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer\n").into_response()
        }
    }
}

/// The admin hooks, after the admin token is checked.
fn admin_hooks(app: &App, headers: &HeaderMap) -> Result<Arc<dyn AdminHooks>, ApiError> {
    app.admin(headers)?;
    app.admin_hooks.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, Some("resource_missing"), "This instance runs no memory guard.")
    })
}

async fn leak_report(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match admin_hooks(&app, &headers) {
        Ok(h) => axum::Json(h.leak_report()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn alerts(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match admin_hooks(&app, &headers) {
        Ok(h) => axum::Json(h.alerts()).into_response(),
        Err(e) => e.into_response(),
    }
}

async fn pprof_heap(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.heap_profile().await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"heap.pb.gz\""),
            ],
            bytes,
        )
            .into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("heap_profiling_off"), format!("No heap profile: {why}.")).into_response(),
    }
}

async fn mark_heap(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.mark_heap().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("heap_profiling_off"), format!("No heap profile: {why}.")).into_response(),
    }
}

async fn heap_diff(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.heap_diff().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("no_heap_reference"), format!("No heap diff: {why}.")).into_response(),
    }
}

async fn metrics_endpoint(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.render_metrics()).into_response()
}

/// Counts and times every request by its route template (never the raw path: bounded labels).
/// One API request admitted: counted while it lives.
struct Admitted<'a>(&'a App);

impl<'a> Admitted<'a> {
    fn enter(app: &'a App) -> Option<Admitted<'a>> {
        let max = app.cfg.requests_in_flight_max;
        app.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok().map(|_| Admitted(app))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

async fn track(State(app): State<Arc<App>>, req: Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let res = if route.starts_with("/v1/") || route.starts_with("/admin/") || route == "unmatched" {
        match Admitted::enter(&app) {
            Some(_admitted) => next.run(req).await,
            None => {
                let max = app.cfg.requests_in_flight_max;
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorType::InvalidRequestError,
                    Some("rate_limit"),
                    format!("paywarden is handling requests_in_flight_max ({max}) requests already; retry after a second, with the same Idempotency-Key for a POST."),
                );
                e.retry_after = Some(1);
                e.into_response()
            }
        }
    } else {
        next.run(req).await
    };
    app.requests_total.fetch_add(1, Ordering::Relaxed);
    let m = &app.metrics;
    m.http_duration.get_or_create(&metrics::RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    m.http_requests.get_or_create(&metrics::HttpLabels { route, status: res.status().as_str().to_string() }).inc();
    res
}

/// An id in the URL that axum cannot decode (not UTF-8): Stripe's 404, not axum's plain-text 400.
fn bad_path_id(e: PathRejection) -> Response {
    ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::InvalidRequestError,
        Some("resource_missing"),
        format!("{}. Use an id as paywarden returned it (e.g. pi_...).", error::truncate(&e.body_text(), 128)),
    )
    .param("id")
    .into_response()
}

macro_rules! post_route {
    ($op:expr) => {
        axum::routing::post(|State(app): State<Arc<App>>, req: Request| async move { app.post($op, req).await })
    };
    ($op:path, id) => {
        axum::routing::post(|State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request| async move {
            match id {
                Ok(Path(id)) => app.post($op(id), req).await,
                Err(e) => bad_path_id(e),
            }
        })
    };
}

macro_rules! get_by_id {
    ($op:path) => {
        |State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request| async move {
            match id {
                Ok(Path(id)) => app.get($op(id), req).await,
                Err(e) => bad_path_id(e),
            }
        }
    };
}

/// The whole API as an axum router.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_endpoint))
        .route("/admin/memory/leak-report", get(leak_report))
        .route("/admin/alerts", get(alerts))
        .route("/debug/pprof/heap", get(pprof_heap))
        .route("/admin/memory/profile/reference", post(mark_heap))
        .route("/admin/memory/profile/diff", get(heap_diff))
        .route("/v1/openapi.json", get(openapi::serve))
        .route(
            "/v1/payment_methods",
            post_route!(PostOp::CreatePaymentMethod)
                .get(|State(app): State<Arc<App>>, req: Request| async move { app.get(GetOp::PaymentMethods, req).await }),
        )
        .route("/v1/payment_methods/{id}", get(get_by_id!(GetOp::PaymentMethod)))
        .route(
            "/v1/payment_intents",
            post_route!(PostOp::CreateIntent)
                .get(|State(app): State<Arc<App>>, req: Request| async move { app.get(GetOp::Intents, req).await }),
        )
        .route("/v1/payment_intents/{id}", post_route!(PostOp::UpdateIntent, id).get(get_by_id!(GetOp::Intent)))
        .route("/v1/payment_intents/{id}/confirm", post_route!(PostOp::ConfirmIntent, id))
        .route("/v1/payment_intents/{id}/capture", post_route!(PostOp::CaptureIntent, id))
        .route("/v1/payment_intents/{id}/cancel", post_route!(PostOp::CancelIntent, id))
        .route("/v1/charges/{id}", get(get_by_id!(GetOp::Charge)))
        .route(
            "/v1/refunds",
            post_route!(PostOp::CreateRefund)
                .get(|State(app): State<Arc<App>>, req: Request| async move { app.get(GetOp::Refunds, req).await }),
        )
        .route("/v1/refunds/{id}", get(get_by_id!(GetOp::Refund)))
        .route("/v1/events", get(|State(app): State<Arc<App>>, req: Request| async move { app.get(GetOp::Events, req).await }))
        .route("/v1/events/{id}", get(get_by_id!(GetOp::Event)))
        .route(
            "/v1/webhook_endpoints",
            post_route!(PostOp::CreateWebhookEndpoint)
                .get(|State(app): State<Arc<App>>, req: Request| async move { app.get(GetOp::WebhookEndpoints, req).await }),
        )
        .route(
            "/v1/webhook_endpoints/{id}",
            post_route!(PostOp::UpdateWebhookEndpoint, id).get(get_by_id!(GetOp::WebhookEndpoint)).delete(
                |State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request| async move {
                    match id {
                        Ok(Path(id)) => app.delete_endpoint(id, req).await,
                        Err(e) => bad_path_id(e),
                    }
                },
            ),
        )
        .route("/v1/webhook_endpoints/{id}/deliveries", get(get_by_id!(GetOp::EndpointDeliveries)))
        .fallback(fallback)
        .method_not_allowed_fallback(fallback)
        .layer(axum::middleware::map_response(request_id))
        .route_layer(axum::middleware::from_fn_with_state(app.clone(), track))
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

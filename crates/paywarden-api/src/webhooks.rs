//! Events and signed webhooks, delivered at least once from a durable outbox.
//!
//! **Events** are made from a request's write batch, before it is written, and go into the
//! same batch: the store commits the change, its events and their deliveries (one per enabled
//! endpoint of the merchant that wants the type) in one transaction. An acknowledged change
//! therefore always has its webhooks queued on disk.
//!
//! **Delivery** ([`spawn_delivery`]): a loop reads due deliveries from the store (at most
//! [`WebhookConfig::concurrency`] at a time, which also bounds the in-memory batch), POSTs
//! each event's JSON to its endpoint with a `Stripe-Signature` header, and records the
//! outcome. A 2xx is delivered; anything else (non-2xx, timeout, refused connection) is
//! retried with exponential backoff and full jitter, from [`WebhookConfig::backoff_base`]
//! doubling up to [`WebhookConfig::backoff_max`], until [`WebhookConfig::retry_horizon`]
//! after the event (3 days, as Stripe), when the delivery is marked `failed`. An endpoint that
//! has failed without a success for [`WebhookConfig::disable_after`] (checked at each attempt)
//! is disabled: deliveries already queued for it wait, and events made while it is disabled
//! are not queued for it, as with Stripe; re-enable it with `POST /v1/webhook_endpoints/{id}`
//! `disabled=false`.
//! After a crash, whatever was pending is still in the table and is sent again: at least once.
//!
//! **Signature** (Stripe's scheme): `Stripe-Signature: t=UNIX_SECONDS,v1=HEX` with
//! `HEX = HMAC-SHA256(secret, "{t}.{body}")`. Receivers should reject a timestamp more than
//! five minutes from their clock (the Stripe SDKs' default tolerance, 300 s), which bounds
//! replays. The endpoint's `whsec_` secret is not stored: it is derived from the data dir's
//! webhook key and the endpoint id ([`endpoint_secret`]), and shown once, at creation.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use paywarden_store::{Delivery, DeliveryState, EndpointStatus, EventRecord, Write, WriteBatch};
use rand::Rng;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::wire;

/// The Stripe API version events are rendered in.
pub const API_VERSION: &str = "2024-06-20";

/// The event types paywarden emits (and `enabled_events` accepts, besides `*`).
pub const EVENT_TYPES: &[&str] = &[
    "payment_intent.created",
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "payment_intent.canceled",
    "payment_intent.amount_capturable_updated",
    "charge.refunded",
    "refund.created",
];

/// Longest endpoint URL.
pub const URL_CHARS_MAX: usize = 2048;
/// Most webhook endpoints per merchant.
pub const ENDPOINTS_PER_MERCHANT_MAX: usize = 16;
/// How often the backlog gauge is refreshed.
const PENDING_GAUGE_EVERY: Duration = Duration::from_secs(5);
/// Longest error text kept for a delivery attempt.
pub const ERROR_CHARS_MAX: usize = 300;

/// How deliveries are made.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Attempts in flight at once (and due deliveries read per poll).
    pub concurrency: usize,
    /// Per-attempt timeout, connect to last byte of the answer.
    pub timeout: Duration,
    /// First retry delay; doubled per attempt (with full jitter) up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// After this long since the event, a delivery still failing is given up (`failed`).
    pub retry_horizon: Duration,
    /// An endpoint failing without a success this long is disabled.
    pub disable_after: Duration,
    /// How often the outbox is read for due deliveries.
    pub poll_interval: Duration,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            concurrency: 16,
            timeout: Duration::from_secs(10),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(3600),
            retry_horizon: Duration::from_secs(3 * 24 * 3600),
            disable_after: Duration::from_secs(3 * 24 * 3600),
            poll_interval: Duration::from_millis(200),
        }
    }
}

/// The delay before attempt `attempts + 1` (after `attempts` failures): a uniform draw from
/// `[d/2, d]` with `d = min(base * 2^(attempts-1), max)`: exponential, jittered so that many
/// failing deliveries do not retry in lockstep.
pub fn backoff(cfg: &WebhookConfig, attempts: u32, unit: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let d = cfg.backoff_base.saturating_mul(1u32 << exp).min(cfg.backoff_max);
    d.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

type HmacSha256 = Hmac<Sha256>;

/// An endpoint's signing secret: `whsec_` and the hex HMAC-SHA256 of its id under the data
/// dir's webhook key.
pub fn endpoint_secret(key: &[u8; 32], endpoint_id: &str) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(b"paywarden webhook endpoint secret\0");
    mac.update(endpoint_id.as_bytes());
    format!("whsec_{}", hex::encode(mac.finalize().into_bytes()))
}

/// `t=...,v1=...` for `body` signed with `secret` at `t` (unix seconds).
pub fn signature_header(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

/// Largest `Stripe-Signature` header [`verify_signature`] reads.
pub const SIGNATURE_HEADER_BYTES_MAX: usize = 4096;
/// The receivers' default tolerance (the Stripe SDKs'): a signature more than this many
/// seconds from the receiver's clock is refused.
pub const SIGNATURE_TOLERANCE_S: i64 = 300;

/// Why [`verify_signature`] refused a delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is longer than {SIGNATURE_HEADER_BYTES_MAX} bytes")]
    TooLong,
    #[error("the Stripe-Signature header has no t=UNIX_SECONDS timestamp")]
    NoTimestamp,
    #[error("the Stripe-Signature header has no v1= signature")]
    NoSignature,
    #[error("the signature's timestamp is {0} s from now, more than the tolerance")]
    OutsideTolerance(i64),
    #[error("no v1 signature matches the body and the secret")]
    Mismatch,
}

/// Checks a delivery as a receiver must (Stripe's `Webhook.construct_event`): the header's
/// `t=` is within `tolerance_s` of `now`, and one of its `v1=` signatures (several during a
/// secret's rotation) is the HMAC-SHA256 of `"{t}.{body}"` under `secret`, compared in
/// constant time. Other schemes (`v0=`) and unknown items are ignored. Pure; any input is
/// answered (no panic), which a fuzz target checks.
pub fn verify_signature(header: &str, secret: &str, body: &[u8], now: i64, tolerance_s: i64) -> Result<(), SignatureError> {
    if header.len() > SIGNATURE_HEADER_BYTES_MAX {
        return Err(SignatureError::TooLong);
    }
    let mut t: Option<i64> = None;
    let mut signatures: Vec<[u8; 32]> = Vec::new();
    for item in header.split(',') {
        let Some((k, v)) = item.trim().split_once('=') else { continue };
        match k {
            "t" if t.is_none() => t = v.parse::<i64>().ok(),
            "v1" => {
                let mut sig = [0u8; 32];
                if hex::decode_to_slice(v, &mut sig).is_ok() {
                    signatures.push(sig);
                }
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    let skew = now.saturating_sub(t);
    if skew.saturating_abs() > tolerance_s {
        return Err(SignatureError::OutsideTolerance(skew));
    }
    let mut mac = <HmacSha256 as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = mac.finalize().into_bytes();
    let mut any = subtle::Choice::from(0);
    for sig in &signatures {
        any |= subtle::ConstantTimeEq::ct_eq(expected.as_slice(), sig.as_slice());
    }
    if bool::from(any) { Ok(()) } else { Err(SignatureError::Mismatch) }
}

/// The events a write batch makes, in order: `(type, object)`.
pub(crate) fn events_of(op: EventSource, batch: &WriteBatch) -> Vec<(&'static str, Value)> {
    let mut out = Vec::new();
    for w in &batch.ops {
        match w {
            Write::InsertIntent(pi) => {
                let obj = wire::payment_intent(pi);
                let status = obj.status;
                let has_error = obj.last_payment_error.is_some();
                let v = serde_json::to_value(&obj).unwrap_or_default();
                out.push(("payment_intent.created", v.clone()));
                if let Some(t) = status_event(status, has_error) {
                    out.push((t, v));
                }
            }
            Write::UpdateIntent(pi) if op == EventSource::IntentChange => {
                let obj = wire::payment_intent(pi);
                if let Some(t) = status_event(obj.status, obj.last_payment_error.is_some()) {
                    out.push((t, serde_json::to_value(&obj).unwrap_or_default()));
                }
            }
            Write::Charge(c) if op == EventSource::Refund => {
                out.push(("charge.refunded", serde_json::to_value(wire::charge(c)).unwrap_or_default()));
            }
            Write::InsertRefund(r) => out.push(("refund.created", serde_json::to_value(wire::refund(r)).unwrap_or_default())),
            _ => {}
        }
    }
    out
}

/// What a request did, for [`events_of`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EventSource {
    /// Confirm, capture, cancel: the intent's new status is news.
    IntentChange,
    Refund,
    /// Create (the insert says it all) or an update of fields (no event).
    Other,
}

fn status_event(status: &str, has_error: bool) -> Option<&'static str> {
    match status {
        "succeeded" => Some("payment_intent.succeeded"),
        "requires_capture" => Some("payment_intent.amount_capturable_updated"),
        "canceled" => Some("payment_intent.canceled"),
        "requires_payment_method" if has_error => Some("payment_intent.payment_failed"),
        _ => None,
    }
}

/// The event records for `events`, in Stripe's shape.
pub(crate) fn records(merchant: &str, now: i64, idempotency_key: Option<&str>, events: Vec<(&'static str, Value)>) -> Vec<EventRecord> {
    events
        .into_iter()
        .map(|(kind, object)| {
            let id = crate::new_id("evt");
            let event = json!({
                "id": id,
                "object": "event",
                "api_version": API_VERSION,
                "created": now,
                "data": {"object": object},
                "livemode": false,
                "request": {"id": null, "idempotency_key": idempotency_key},
                "type": kind,
            });
            EventRecord { id, merchant: merchant.to_string(), kind: kind.to_string(), created: now, json: event.to_string() }
        })
        .collect()
}

/// The outbox's in-flight deliveries (bounded by the concurrency).
#[derive(Default)]
struct InFlight(Mutex<HashSet<(String, String)>>);

impl InFlight {
    fn claim(&self, key: &(String, String)) -> bool {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(key.clone())
    }
    fn release(&self, key: &(String, String)) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// Starts the delivery loop (for the life of the process). `key` is the data dir's webhook key.
pub fn spawn_delivery(app: Arc<crate::App>, key: [u8; 32], cfg: WebhookConfig) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("paywarden/", env!("CARGO_PKG_VERSION"), " (webhooks)"))
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhook delivery is off: cannot build its HTTP client");
                return;
            }
        };
        let inflight = Arc::new(InFlight::default());
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.concurrency.max(1)));
        let mut tick = tokio::time::interval(cfg.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // A finished attempt wakes the loop at once, so a fast receiver is limited by the
        // concurrency and its own latency, not by the poll interval.
        let wake = Arc::new(tokio::sync::Notify::new());
        let mut gauge_at = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = wake.notified() => {}
            }
            // The backlog on disk, for /metrics, every few seconds (a count over an index).
            if gauge_at.elapsed() >= PENDING_GAUGE_EVERY {
                gauge_at = tokio::time::Instant::now();
                if let Ok(n) = app.store().pending_deliveries().await {
                    app.metrics().webhook_pending.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            app.metrics().component("webhook_deliveries_in_flight", inflight.len(), cfg.concurrency);
            let sender = Sender { app: &app, client: &client, key, cfg: &cfg, inflight: &inflight, slots: &slots, wake: &wake };
            // Retries that are due first, then events not yet claimed.
            if slots.available_permits() > 0 {
                match app.store().due_deliveries(now_ms(), (slots.available_permits() + inflight.len()) as u32).await {
                    Ok(due) => {
                        for d in due {
                            if !sender.send(d) {
                                break;
                            }
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "reading due webhook deliveries"),
                }
            }
            if slots.available_permits() > 0 {
                claim_and_send(&sender).await;
            }
        }
    })
}

/// How far past an endpoint's cursor one claim looks for events of a type it wants.
const CLAIM_SCAN_MAX: u32 = 1000;

/// What starting an attempt needs.
struct Sender<'a> {
    app: &'a Arc<crate::App>,
    client: &'a reqwest::Client,
    key: [u8; 32],
    cfg: &'a WebhookConfig,
    inflight: &'a Arc<InFlight>,
    slots: &'a Arc<tokio::sync::Semaphore>,
    wake: &'a Arc<tokio::sync::Notify>,
}

impl Sender<'_> {
    /// Starts one attempt unless it is in flight already; false when no slot is free.
    fn send(&self, d: paywarden_store::DueDelivery) -> bool {
        let k = (d.delivery.endpoint.clone(), d.delivery.event.clone());
        if !self.inflight.claim(&k) {
            return true;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.inflight.release(&k);
            return false;
        };
        let (app, client, key, cfg, inflight, wake) =
            (self.app.clone(), self.client.clone(), self.key, self.cfg.clone(), self.inflight.clone(), self.wake.clone());
        tokio::spawn(async move {
            attempt(&app, &client, &key, &cfg, d).await;
            inflight.release(&k);
            drop(permit);
            wake.notify_one();
        });
        true
    }
}

/// Claims the next events of endpoints that have some after their cursor, as many as there are
/// free slots (shared out between the endpoints), and sends them. The claim is written first:
/// the rows are due when the lease (one attempt's timeout and a margin) has passed, so a crash
/// mid-attempt only delays them, and an attempt whose outcome is lost is made again.
async fn claim_and_send(s: &Sender<'_>) {
    let free = s.slots.available_permits();
    let backlog = match s.app.store().unclaimed(free as u32, CLAIM_SCAN_MAX).await {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!(error = %e, "reading events not yet claimed for webhooks");
            return;
        }
    };
    if backlog.is_empty() {
        return;
    }
    let share = (free / backlog.len()).max(1);
    let now = now_ms();
    let lease_end = now.saturating_add((s.cfg.timeout + CLAIM_LEASE_MARGIN).as_millis() as i64);
    for u in backlog {
        let taken = u.events.len().min(share);
        let through_seq = if taken < u.events.len() { u.events[taken - 1].0 } else { u.through_seq };
        let mut rows = Vec::with_capacity(taken);
        let mut sends = Vec::with_capacity(taken);
        for (_, e) in u.events.into_iter().take(taken) {
            let d = Delivery {
                endpoint: u.endpoint.clone(),
                event: e.id,
                merchant: u.merchant.clone(),
                state: DeliveryState::Pending,
                attempts: 0,
                next_attempt_ms: lease_end,
                created_ms: e.created.saturating_mul(1000),
                last_attempt_ms: None,
                last_status: None,
                last_error: None,
            };
            sends.push(paywarden_store::DueDelivery { delivery: d.clone(), url: u.url.clone(), body: e.json });
            rows.push(d);
        }
        let mut batch = WriteBatch::new();
        batch.push(Write::ClaimDeliveries { endpoint: u.endpoint, merchant: u.merchant, after_seq: u.cursor_seq, through_seq, deliveries: rows });
        match s.app.store().write(batch).await {
            Ok(()) => {}
            // Another instance's loop (under `up`, or a replica) claimed them: it sends them.
            Err(paywarden_store::WriteError::Conflict(paywarden_store::ConflictKind::Claimed)) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "could not claim events for webhooks");
                return;
            }
        }
        for d in sends {
            if !s.send(d) {
                // Claimed but no slot: due when the lease ends.
                return;
            }
        }
    }
}

/// How long past one attempt's timeout a claimed delivery waits before it is due again.
const CLAIM_LEASE_MARGIN: Duration = Duration::from_secs(5);

/// One attempt and its recorded outcome.
async fn attempt(app: &crate::App, client: &reqwest::Client, key: &[u8; 32], cfg: &WebhookConfig, due: paywarden_store::DueDelivery) {
    let mut d: Delivery = due.delivery;
    let secret = endpoint_secret(key, &d.endpoint);
    let t = crate::now();
    let sig = signature_header(&secret, t, due.body.as_bytes());
    let res = client
        .post(&due.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json; charset=utf-8")
        .header("Stripe-Signature", sig)
        .body(due.body)
        .send()
        .await;
    let at = now_ms();
    let (ok, status, error) = match res {
        Ok(r) if r.status().is_success() => (true, Some(r.status().as_u16()), None),
        Ok(r) => (false, Some(r.status().as_u16()), Some(format!("the endpoint answered {}", r.status()))),
        Err(e) if e.is_timeout() => (false, None, Some(format!("no answer within {}", humantime::format_duration(cfg.timeout)))),
        Err(e) => (false, None, Some(error_chain(&e))),
    };
    d.attempts = d.attempts.saturating_add(1);
    d.last_attempt_ms = Some(at);
    d.last_status = status;
    d.last_error = error.map(|e| e.chars().take(ERROR_CHARS_MAX).collect());
    let horizon_end = d.created_ms.saturating_add(cfg.retry_horizon.as_millis() as i64);
    if ok {
        d.state = DeliveryState::Delivered;
    } else {
        let next = at.saturating_add(backoff(cfg, d.attempts, rand::rng().random::<f64>()).as_millis() as i64);
        if next > horizon_end {
            d.state = DeliveryState::Failed;
        } else {
            d.next_attempt_ms = next;
        }
    }
    app.metrics().webhook_attempt(if ok { "delivered" } else if d.state == DeliveryState::Failed { "gave_up" } else { "retry" });
    let mut batch = WriteBatch::new();
    batch.push(Write::Delivery(d.clone()));
    // The endpoint's health: failing since when, disabled past the limit, healed by a success.
    if let Ok(Some(mut ep)) = app.store().webhook_endpoint(&d.merchant, &d.endpoint).await {
        let before = ep.clone();
        if ok {
            ep.failing_since_ms = None;
        } else {
            let since = *ep.failing_since_ms.get_or_insert(at);
            if ep.status == EndpointStatus::Enabled && at.saturating_sub(since) >= cfg.disable_after.as_millis() as i64 {
                ep.status = EndpointStatus::Disabled;
                ep.disabled_reason = Some(format!(
                    "every delivery failed for {} (last: {})",
                    humantime::format_duration(cfg.disable_after),
                    d.last_error.as_deref().unwrap_or("?")
                ));
                tracing::warn!(endpoint = %ep.id, url = %ep.url, "webhook endpoint disabled: it kept failing");
            }
        }
        if ep != before {
            batch.push(Write::WebhookEndpoint(ep));
        }
    }
    if let Err(e) = app.store().write(batch).await {
        // Not recorded: the delivery stays due and is attempted again (at least once).
        tracing::warn!(error = %e, event = %d.event, "could not record a webhook attempt");
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The webhook endpoint object (Stripe's shape); `secret` only at creation.
pub(crate) fn endpoint_object(ep: &paywarden_store::WebhookEndpointRecord, secret: Option<String>) -> Value {
    json!({
        "id": ep.id,
        "object": "webhook_endpoint",
        "api_version": API_VERSION,
        "created": ep.created,
        "description": ep.description,
        "enabled_events": ep.enabled_events,
        "livemode": false,
        "metadata": {},
        "secret": secret,
        "status": ep.status.as_str(),
        "disabled_reason": ep.disabled_reason,
        "url": ep.url,
    })
}

/// A delivery as the API shows it (paywarden's extension: Stripe keeps these in its dashboard).
pub(crate) fn delivery_object(d: &Delivery) -> Value {
    json!({
        "object": "webhook_delivery",
        "event": d.event,
        "webhook_endpoint": d.endpoint,
        "state": d.state.as_str(),
        "attempts": d.attempts,
        "next_attempt_at": (d.state == DeliveryState::Pending).then_some(d.next_attempt_ms / 1000),
        "last_attempt_at": d.last_attempt_ms.map(|m| m / 1000),
        "last_status": d.last_status,
        "last_error": d.last_error,
        "created": d.created_ms / 1000,
    })
}

/// Checks `enabled_events`: 1 to [`EVENT_TYPES`]`.len()` known types, or `*` alone; returns
/// them without duplicates.
pub(crate) fn check_events(events: &[String]) -> Result<Vec<String>, String> {
    if events.is_empty() {
        return Err("enabled_events must name at least one event type, or `*` for all".into());
    }
    if events.iter().any(|e| e == "*") {
        return if events.len() == 1 { Ok(vec!["*".into()]) } else { Err("`*` already means every event type; send it alone".into()) };
    }
    let mut out: Vec<String> = Vec::new();
    for e in events {
        if !EVENT_TYPES.contains(&e.as_str()) {
            return Err(format!("{e:?} is not an event type paywarden sends; use one of {} or `*`", EVENT_TYPES.join(", ")));
        }
        if !out.contains(e) {
            out.push(e.clone());
        }
    }
    Ok(out)
}

/// A creation response as the idempotency record keeps it: without the secret.
pub(crate) fn without_secret(body: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(body) {
        Ok(mut v) if v.get("object").and_then(Value::as_str) == Some("webhook_endpoint") => {
            v["secret"] = Value::Null;
            serde_json::to_vec(&v).unwrap_or_default()
        }
        _ => body.to_vec(),
    }
}

/// A replayed creation response: the secret derived again (it was never stored).
pub(crate) fn with_secret(body: Vec<u8>, key: &[u8; 32]) -> Vec<u8> {
    // Cheap test first: most replays are payments.
    if !body.windows(18).any(|w| w == b"\"webhook_endpoint\"") {
        return body;
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(mut v) if v.get("object").and_then(Value::as_str) == Some("webhook_endpoint") && v["secret"].is_null() => {
            if let Some(id) = v.get("id").and_then(Value::as_str).map(String::from) {
                v["secret"] = json!(endpoint_secret(key, &id));
            }
            serde_json::to_vec(&v).unwrap_or(body)
        }
        _ => body,
    }
}

/// Checks an endpoint URL: http(s), a host, no credentials, at most [`URL_CHARS_MAX`].
pub(crate) fn check_url(url: &str) -> Result<(), String> {
    if url.chars().count() > URL_CHARS_MAX {
        return Err(format!("url is longer than {URL_CHARS_MAX} characters"));
    }
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://")).ok_or("url must start with https:// (or http://)")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err("url has no host".into());
    }
    if authority.contains('@') {
        return Err("url must not carry credentials (user:password@)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("url must not contain spaces or control characters".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_as_a_receiver_checks_them() {
        let (secret, body, t) = ("whsec_abc", br#"{"id":"evt_1"}"#.as_slice(), 1_700_000_000);
        let h = signature_header(secret, t, body);
        assert_eq!(verify_signature(&h, secret, body, t + 10, SIGNATURE_TOLERANCE_S), Ok(()));
        // Rotation: an old signature beside the right one, and a v0 scheme, are fine.
        let rotated = format!("t={t},v1={},v0=zz,{}", "00".repeat(32), h.split(',').nth(1).unwrap());
        assert_eq!(verify_signature(&rotated, secret, body, t, 300), Ok(()));
        assert_eq!(verify_signature(&h, "whsec_other", body, t, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(&h, secret, b"{}", t, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify_signature(&h, secret, body, t + 301, 300), Err(SignatureError::OutsideTolerance(301)));
        assert_eq!(verify_signature(&h, secret, body, t - 301, 300), Err(SignatureError::OutsideTolerance(-301)));
        assert_eq!(verify_signature(&h, secret, body, t + 300, 300), Ok(()), "the tolerance's edge is inside");
        assert_eq!(verify_signature("v1=00", secret, body, t, 300), Err(SignatureError::NoTimestamp));
        assert_eq!(verify_signature(&format!("t={t}"), secret, body, t, 300), Err(SignatureError::NoSignature));
        assert_eq!(verify_signature(&format!("t={t},v1=xyz"), secret, body, t, 300), Err(SignatureError::NoSignature));
        assert_eq!(verify_signature(&"a".repeat(SIGNATURE_HEADER_BYTES_MAX + 1), secret, body, t, 300), Err(SignatureError::TooLong));
        // Extreme numbers neither panic nor pass.
        assert!(verify_signature(&format!("t={},v1={}", i64::MIN, "00".repeat(32)), secret, body, i64::MAX, 300).is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_its_cap() {
        let cfg = WebhookConfig { backoff_base: Duration::from_secs(5), backoff_max: Duration::from_secs(3600), ..WebhookConfig::default() };
        assert_eq!(backoff(&cfg, 1, 1.0), Duration::from_secs(5));
        assert_eq!(backoff(&cfg, 1, 0.0), Duration::from_millis(2500));
        assert_eq!(backoff(&cfg, 2, 1.0), Duration::from_secs(10));
        assert_eq!(backoff(&cfg, 4, 1.0), Duration::from_secs(40));
        assert_eq!(backoff(&cfg, 12, 1.0), Duration::from_secs(3600), "capped");
        assert_eq!(backoff(&cfg, u32::MAX, 1.0), Duration::from_secs(3600), "no overflow");
        assert_eq!(backoff(&cfg, 0, 1.0), Duration::from_secs(5));
    }

    #[test]
    fn signatures_follow_stripes_scheme() {
        // HMAC-SHA256("whsec_test", "1700000000.{}"), computed independently with Python's hmac.
        let h = signature_header("whsec_test", 1_700_000_000, b"{}");
        assert_eq!(h, "t=1700000000,v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91");
    }

    #[test]
    fn endpoint_secrets_differ_per_endpoint_and_key() {
        let a = endpoint_secret(&[1; 32], "we_a");
        assert!(a.starts_with("whsec_") && a.len() == 6 + 64);
        assert_ne!(a, endpoint_secret(&[1; 32], "we_b"));
        assert_ne!(a, endpoint_secret(&[2; 32], "we_a"));
        assert_eq!(a, endpoint_secret(&[1; 32], "we_a"));
    }

    #[test]
    fn urls_are_checked() {
        for ok in ["https://example.com/hook", "http://127.0.0.1:9000/", "https://h"] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in ["ftp://x", "https://", "example.com", "https://u:p@h/", "https://h/ x", &format!("https://h/{}", "a".repeat(URL_CHARS_MAX))] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }
}

//! Stripe's idempotency: a POST with an `Idempotency-Key` is applied once. While it runs, the
//! key is in an in-process set (a concurrent duplicate is a 409); its response is stored in the
//! same transaction as its effects and replayed byte for byte for
//! [`crate::ApiConfig::idempotency_ttl_s`]; the same key with other parameters (another
//! fingerprint of method, path and parameters) is a 400.

use axum::http::{HeaderMap, Method, StatusCode};
use sha2::{Digest, Sha256};

use crate::params::Params;
use crate::{error, now, webhooks, ApiError, App, ErrorType};

/// Stripe's limit on an Idempotency-Key, and the default of [`crate::ApiConfig::idempotency_key_chars_max`].
pub const IDEMPOTENCY_KEY_CHARS_MAX: usize = 255;

/// A key marked in flight; unmarked when dropped, however the request ends.
pub(crate) struct InFlight<'a> {
    app: &'a App,
    key: Option<(String, String)>,
}

impl InFlight<'_> {
    /// A request without a key: nothing to unmark.
    pub(crate) fn none(app: &App) -> InFlight<'_> {
        InFlight { app, key: None }
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if let Some(k) = self.key.take()
            && let Ok(mut set) = self.app.in_flight.lock() {
                set.remove(&k);
            }
    }
}

/// What a stored response is checked against: method, path and the canonical parameters.
pub(crate) fn fingerprint(method: &Method, path: &str, params: &Params) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(method.as_str().as_bytes());
    h.update(b" ");
    h.update(path.as_bytes());
    h.update(b"\n");
    h.update(params.canonical());
    h.finalize().into()
}

/// The request's `Idempotency-Key`, checked: printable ASCII, 1 to `max` characters.
pub(crate) fn idempotency_key(headers: &HeaderMap, max: usize) -> Result<Option<String>, ApiError> {
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

impl App {
    /// Marks an idempotency key as in flight, or refuses a concurrent duplicate.
    pub(crate) fn enter(&self, merchant: &str, key: &str) -> Result<InFlight<'_>, ApiError> {
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

    /// The stored response to `key` (status and body, to be sent as a replay), if one is
    /// live, or a 400 if it was made with other parameters.
    pub(crate) async fn replay(&self, merchant: &str, key: &str, fingerprint: &[u8; 32]) -> Result<Option<(StatusCode, Vec<u8>)>, ApiError> {
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
        let body = crate::client_secret::restore(&self.cfg.webhook_key, webhooks::with_secret(rec.body, &self.cfg.webhook_key));
        Ok(Some((status, body)))
    }
}

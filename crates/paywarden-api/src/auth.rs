//! Who is calling: a merchant by its secret key (stored only as its SHA-256, looked up through
//! a bounded cache), or the operator by the admin token (compared in constant time).
//!
//! A merchant also has a publishable key (`pk_test_...`), for a browser: it can do only what
//! Stripe.js does, and an operation says whether it takes one ([`crate::pipeline::WriteOp::PUBLISHABLE`]):
//! create a PaymentMethod from card fields, and retrieve or confirm one PaymentIntent given its
//! client secret. Anything else with it is a 401 with Stripe's message.

use std::time::Instant;

use axum::http::{header, HeaderMap, StatusCode};
use base64::Engine;
use paywarden_store::Merchant;
use rand::distr::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};

use crate::{ApiError, App, ErrorType};

/// Longest key looked up; a longer one is refused without a lookup.
pub const KEY_CHARS_MAX: usize = 255;

/// SHA-256 of an API key: what is stored and looked up, never the key itself.
pub fn hash_key(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// A new secret key for the test mode: `sk_test_` and 48 random alphanumerics (~285 bits).
pub fn new_secret_key() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect();
    format!("sk_test_{tail}")
}

/// A new publishable key for the test mode: `pk_test_` and 48 random alphanumerics. Not a
/// secret (it goes into a web page), stored only as its hash all the same.
pub fn new_publishable_key() -> String {
    let tail: String = rand::rng().sample_iter(&Alphanumeric).take(48).map(char::from).collect();
    format!("pk_test_{tail}")
}

/// The merchant a request acts for, and whether it came with the publishable key.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) merchant: Merchant,
    pub(crate) publishable: bool,
}

impl std::ops::Deref for Caller {
    type Target = Merchant;

    fn deref(&self) -> &Merchant {
        &self.merchant
    }
}

impl App {
    /// The merchant whose key the request carries, or a 401: a secret key, or the publishable
    /// key where `publishable_ok` (the operation is one a browser makes).
    pub(crate) async fn authenticate(&self, headers: &HeaderMap, publishable_ok: bool) -> Result<Caller, ApiError> {
        let key = extract_key(headers)?;
        let redacted = redact_key(&key);
        let publishable = key.starts_with("pk_test_");
        if !(key.starts_with("sk_test_") || publishable) || key.len() > KEY_CHARS_MAX {
            return Err(ApiError::unauthorized(format!("Invalid API Key provided: {redacted}")));
        }
        let merchant = self.merchant_by_key(&key, &redacted).await?;
        if publishable && !publishable_ok {
            return Err(ApiError::unauthorized(
                "This API call cannot be made with a publishable API key. Please use a secret API key (sk_test_...): a publishable key can only create PaymentMethods and retrieve or confirm a PaymentIntent with its client_secret.",
            ));
        }
        Ok(Caller { merchant, publishable })
    }

    async fn merchant_by_key(&self, key: &str, redacted: &str) -> Result<Merchant, ApiError> {
        let hash = hash_key(key);
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

    /// Admin endpoints take the admin token, never a merchant key; without a configured
    /// token they do not exist.
    pub(crate) fn admin(&self, headers: &HeaderMap) -> Result<(), ApiError> {
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
    let head = ["sk_test_", "pk_test_"].into_iter().find(|p| key.starts_with(p)).unwrap_or("");
    format!("{head}****{tail}")
}

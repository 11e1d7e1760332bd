//! Acquirer connectors. This crate is the only place a full card number (PAN) or CVC
//! exists as data: [`Pan`] and [`Cvc`] have a redacted `Debug`, no `Display`, no
//! `Serialize`, and are zeroed on drop. A card is turned into a [`Tokenized`] card (brand,
//! last 4, expiry, keyed fingerprint and the acquirer's token) the moment it arrives;
//! only that is stored.
//!
//! The PAN rule: a full card number and CVC never leave this crate. They enter only as a
//! [`CardInput`] passed to [`Connector::tokenize`], are never logged, serialized, stored or
//! put in a token (the sandbox's tokens are random), and what comes out is a [`Tokenized`]
//! card holding only brand, last 4, expiry, an HMAC fingerprint and the token. A number is
//! accepted when, after removing spaces and dashes, it has 12 to 19 ASCII digits and a valid
//! Luhn checksum; anything else is [`CardError::IncorrectNumber`].

use std::time::Duration;

use async_trait::async_trait;
use paywarden_core::{AuthOutcome, CardSummary, Currency, Timestamp};

pub mod card;
pub mod sandbox;

pub use card::{CardError, CardInput, Cvc, Pan};
pub use sandbox::{SandboxAcquirer, SandboxConfig};

/// A card as the acquirer knows it after tokenization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tokenized {
    pub summary: CardSummary,
    /// The acquirer's reference for the card, safe to store.
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    pub token: &'a str,
    pub amount: u64,
    pub currency: Currency,
    /// Our charge id, sent as the acquirer's reference.
    pub reference: &'a str,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("the acquirer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the acquirer refused the request: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Connector: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Checks a card (number, expiry, CVC format) and returns its token: the only call that
    /// sees a PAN.
    async fn tokenize(&self, card: CardInput, now: Timestamp) -> Result<Tokenized, CardError>;

    /// Stripe's test payment method ids (`pm_card_visa`, `pm_card_chargeDeclined`, ...)
    /// resolved to a tokenized card, or `None` when the id is not one of them.
    async fn test_payment_method(&self, id: &str, now: Timestamp) -> Option<Tokenized>;

    async fn authorize(&self, req: AuthorizeRequest<'_>) -> Result<AuthOutcome, ConnectorError>;

    async fn capture(&self, authorization: &str, amount: u64, currency: Currency) -> Result<(), ConnectorError>;

    /// Releases an authorization without capture.
    async fn void(&self, authorization: &str) -> Result<(), ConnectorError>;

    async fn refund(&self, authorization: &str, amount: u64, currency: Currency) -> Result<(), ConnectorError>;
}

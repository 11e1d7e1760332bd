//! The sandbox acquirer: answers like Stripe's test mode, from Stripe's test card numbers.
//!
//! | number             | outcome at `authorize`                                  |
//! |--------------------|---------------------------------------------------------|
//! | `4000000000000002` | `card_declined` / `generic_decline`                      |
//! | `4000000000009995` | `card_declined` / `insufficient_funds`                   |
//! | `4000000000000069` | `expired_card` / `expired_card`                          |
//! | `4000000000000127` | `incorrect_cvc` / `incorrect_cvc`                        |
//! | `4000000000000119` | `processing_error` / `processing_error`                  |
//! | any other valid    | approved (`4242424242424242`, `5555555555554444`, ...)  |
//!
//! Tokenization succeeds for all of them; the outcome is carried by the token
//! (`sbxtok_<outcome>_<16 random hex>`), which holds nothing derived from the number.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use hmac::{Hmac, Mac};
use paywarden_core::{AuthOutcome, CardSummary, Currency, Decline, Timestamp};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::card::{year_month, CardError, CardInput};
use crate::{AuthorizeRequest, Connector, ConnectorError, Tokenized};

const TOKEN_PREFIX: &str = "sbxtok_";
const AUTH_PREFIX: &str = "sbxauth_";
/// Random bytes in a token (hex-encoded: twice as many characters).
const TOKEN_RANDOM_BYTES: usize = 8;

/// The sandbox's settings.
#[derive(Clone)]
pub struct SandboxConfig {
    /// Delay applied to every authorize, capture, void and refund.
    pub latency: Duration,
    /// Key of the card fingerprint (HMAC-SHA256 of the number).
    pub fingerprint_key: [u8; 32],
}

impl fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("latency", &self.latency)
            .field("fingerprint_key", &"<redacted>")
            .finish()
    }
}

/// What a sandbox card does when authorized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    Approve,
    GenericDecline,
    InsufficientFunds,
    ExpiredCard,
    IncorrectCvc,
    ProcessingError,
}

impl Behaviour {
    const ALL: [Behaviour; 6] = [
        Behaviour::Approve,
        Behaviour::GenericDecline,
        Behaviour::InsufficientFunds,
        Behaviour::ExpiredCard,
        Behaviour::IncorrectCvc,
        Behaviour::ProcessingError,
    ];

    fn of_number(digits: &str) -> Behaviour {
        match digits {
            "4000000000000002" => Behaviour::GenericDecline,
            "4000000000009995" => Behaviour::InsufficientFunds,
            "4000000000000069" => Behaviour::ExpiredCard,
            "4000000000000127" => Behaviour::IncorrectCvc,
            "4000000000000119" => Behaviour::ProcessingError,
            _ => Behaviour::Approve,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Behaviour::Approve => "approve",
            Behaviour::GenericDecline => "generic_decline",
            Behaviour::InsufficientFunds => "insufficient_funds",
            Behaviour::ExpiredCard => "expired_card",
            Behaviour::IncorrectCvc => "incorrect_cvc",
            Behaviour::ProcessingError => "processing_error",
        }
    }

    /// Reads a token `sbxtok_<tag>_<16 lowercase hex>`; `None` if it is not one.
    fn of_token(token: &str) -> Option<Behaviour> {
        let (tag, random) = token.strip_prefix(TOKEN_PREFIX)?.rsplit_once('_')?;
        if random.len() != TOKEN_RANDOM_BYTES * 2 || !random.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        Behaviour::ALL.into_iter().find(|b| b.tag() == tag)
    }

    fn decline(self) -> Option<Decline> {
        let (code, decline_code, message) = match self {
            Behaviour::Approve => return None,
            Behaviour::GenericDecline => ("card_declined", "generic_decline", "Your card was declined."),
            Behaviour::InsufficientFunds => ("card_declined", "insufficient_funds", "Your card has insufficient funds."),
            Behaviour::ExpiredCard => ("expired_card", "expired_card", "Your card has expired."),
            Behaviour::IncorrectCvc => ("incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
            Behaviour::ProcessingError => (
                "processing_error",
                "processing_error",
                "An error occurred while processing your card. Try again in a little bit.",
            ),
        };
        Some(Decline { code: code.into(), decline_code: Some(decline_code.into()), message: message.into() })
    }
}

/// Stripe's test payment method ids and the numbers behind them.
const TEST_PAYMENT_METHODS: &[(&str, &str)] = &[
    ("pm_card_visa", "4242424242424242"),
    ("pm_card_mastercard", "5555555555554444"),
    ("pm_card_amex", "378282246310005"),
    ("pm_card_chargeDeclined", "4000000000000002"),
    ("pm_card_chargeDeclinedInsufficientFunds", "4000000000009995"),
    ("pm_card_chargeDeclinedExpiredCard", "4000000000000069"),
    ("pm_card_chargeDeclinedIncorrectCvc", "4000000000000127"),
    ("pm_card_chargeDeclinedProcessingError", "4000000000000119"),
];

/// An in-process acquirer with Stripe's test-card behaviour. See the module docs.
pub struct SandboxAcquirer {
    latency: Duration,
    /// HMAC keyed with the fingerprint key, cloned for each fingerprint.
    fingerprinter: Hmac<Sha256>,
}

impl fmt::Debug for SandboxAcquirer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SandboxAcquirer")
            .field("latency", &self.latency)
            .finish_non_exhaustive()
    }
}

impl SandboxAcquirer {
    pub fn new(cfg: SandboxConfig) -> SandboxAcquirer {
        // HMAC pads a key shorter than the hash's block size with zeros, so the 32-byte key
        // zero-padded to SHA-256's 64-byte block is the same key, and `KeyInit::new` on a
        // block-sized key cannot fail (unlike `new_from_slice`, which returns a `Result`).
        let mut block = Zeroizing::new([0u8; 64]);
        block[..32].copy_from_slice(&cfg.fingerprint_key);
        let fingerprinter = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&(*block).into());
        SandboxAcquirer { latency: cfg.latency, fingerprinter }
    }

    /// Keyed fingerprint of a card number: first 16 hex characters of HMAC-SHA256.
    fn fingerprint(&self, digits: &str) -> String {
        let mut mac = self.fingerprinter.clone();
        mac.update(digits.as_bytes());
        let mut hex = hex::encode(mac.finalize().into_bytes());
        hex.truncate(16);
        hex
    }

    async fn delay(&self) {
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    fn check_authorization(authorization: &str) -> Result<(), ConnectorError> {
        match authorization.strip_prefix(AUTH_PREFIX) {
            Some(rest) if !rest.is_empty() => Ok(()),
            _ => Err(ConnectorError::Refused("no such sandbox authorization".into())),
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[async_trait]
impl Connector for SandboxAcquirer {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn tokenize(&self, card: CardInput, now: Timestamp) -> Result<Tokenized, CardError> {
        card.check_not_expired(now)?;
        let pan = &card.number;
        let behaviour = Behaviour::of_number(pan.digits());
        let summary = CardSummary {
            brand: pan.brand().to_string(),
            last4: pan.last4().to_string(),
            exp_month: card.exp_month,
            exp_year: card.exp_year,
            funding: "credit".to_string(),
            fingerprint: self.fingerprint(pan.digits()),
        };
        let token = format!("{TOKEN_PREFIX}{}_{}", behaviour.tag(), random_hex(TOKEN_RANDOM_BYTES));
        Ok(Tokenized { summary, token })
    }

    async fn test_payment_method(&self, id: &str, now: Timestamp) -> Option<Tokenized> {
        let &(_, number) = TEST_PAYMENT_METHODS.iter().find(|(pm, _)| *pm == id)?;
        let (year, _) = year_month(now);
        let exp_year = u16::try_from(year.checked_add(1)?).ok()?;
        let card = CardInput { number: crate::Pan::parse(number).ok()?, exp_month: 12, exp_year, cvc: None };
        self.tokenize(card, now).await.ok()
    }

    async fn authorize(&self, req: AuthorizeRequest<'_>) -> Result<AuthOutcome, ConnectorError> {
        self.delay().await;
        let behaviour = Behaviour::of_token(req.token)
            .ok_or_else(|| ConnectorError::Refused("no such sandbox card token".into()))?;
        Ok(match behaviour.decline() {
            Some(decline) => AuthOutcome::Declined(decline),
            None => AuthOutcome::Approved { authorization: format!("{AUTH_PREFIX}{}", random_hex(12)) },
        })
    }

    async fn capture(&self, authorization: &str, _amount: u64, _currency: Currency) -> Result<(), ConnectorError> {
        self.delay().await;
        Self::check_authorization(authorization)
    }

    async fn void(&self, authorization: &str) -> Result<(), ConnectorError> {
        self.delay().await;
        Self::check_authorization(authorization)
    }

    async fn refund(&self, authorization: &str, _amount: u64, _currency: Currency) -> Result<(), ConnectorError> {
        self.delay().await;
        Self::check_authorization(authorization)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_garbage_is_rejected() {
        for b in Behaviour::ALL {
            let token = format!("{TOKEN_PREFIX}{}_{}", b.tag(), random_hex(TOKEN_RANDOM_BYTES));
            assert_eq!(Behaviour::of_token(&token), Some(b), "{token}");
        }
        for bad in [
            "",
            "sbxtok_",
            "sbxtok_approve",
            "sbxtok_approve_",
            "sbxtok_approve_0123456789abcdeg",
            "sbxtok_approve_0123456789ABCDEF",
            "sbxtok_approve_0123456789abcdef0",
            "sbxtok_nope_0123456789abcdef",
            "tok_approve_0123456789abcdef",
            "4242424242424242",
        ] {
            assert_eq!(Behaviour::of_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn padded_key_equals_slice_key() {
        let key = [7u8; 32];
        let sandbox = SandboxAcquirer::new(SandboxConfig { latency: Duration::ZERO, fingerprint_key: key });
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(b"4242424242424242");
        let expected = hex::encode(mac.finalize().into_bytes());
        assert_eq!(sandbox.fingerprint("4242424242424242"), expected[..16]);
    }
}

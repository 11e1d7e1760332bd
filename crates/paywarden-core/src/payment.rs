//! The PaymentIntent state machine, charges and refunds, with Stripe's statuses.
//!
//! ```text
//!  requires_payment_method ──(attach pm)──> requires_confirmation
//!        ^    │                                   │
//!        │    └──────────(confirm)────────────────┤
//!  decline                                        v
//!        └──────────────────────────── authorize ─┬─ automatic ─> succeeded ──(refund)*
//!                                                 └─ manual ────> requires_capture ─(capture)─> succeeded
//!  any state before succeeded ──(cancel)──> canceled
//! ```
//!
//! `requires_action` and `processing` are reserved for asynchronous methods (3-D Secure, bank
//! debits); the sandbox acquirer answers synchronously, so no transition enters them yet.
//! Every transition that moves money returns the balanced [`Posting`]s that record it; a
//! transition either returns the whole new state or an error and changes nothing.

use serde::{Deserialize, Serialize};

use crate::ledger::{Account, Posting, PostingKind};
use crate::metadata::{Metadata, MetadataError};
use crate::money::{Amount, Currency};
use crate::Timestamp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    RequiresPaymentMethod,
    RequiresConfirmation,
    RequiresAction,
    Processing,
    RequiresCapture,
    Succeeded,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::RequiresPaymentMethod => "requires_payment_method",
            Status::RequiresConfirmation => "requires_confirmation",
            Status::RequiresAction => "requires_action",
            Status::Processing => "processing",
            Status::RequiresCapture => "requires_capture",
            Status::Succeeded => "succeeded",
            Status::Canceled => "canceled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Succeeded | Status::Canceled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    Automatic,
    Manual,
}

impl CaptureMethod {
    /// Stripe's `automatic_async` behaves as `automatic` against a synchronous acquirer.
    pub fn parse(s: &str) -> Option<CaptureMethod> {
        match s {
            "automatic" | "automatic_async" => Some(CaptureMethod::Automatic),
            "manual" => Some(CaptureMethod::Manual),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMethod::Automatic => "automatic",
            CaptureMethod::Manual => "manual",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
}

impl CancellationReason {
    pub const ALL: &'static [&'static str] = &["duplicate", "fraudulent", "requested_by_customer", "abandoned"];

    pub fn parse(s: &str) -> Option<CancellationReason> {
        match s {
            "duplicate" => Some(CancellationReason::Duplicate),
            "fraudulent" => Some(CancellationReason::Fraudulent),
            "requested_by_customer" => Some(CancellationReason::RequestedByCustomer),
            "abandoned" => Some(CancellationReason::Abandoned),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CancellationReason::Duplicate => "duplicate",
            CancellationReason::Fraudulent => "fraudulent",
            CancellationReason::RequestedByCustomer => "requested_by_customer",
            CancellationReason::Abandoned => "abandoned",
        }
    }
}

/// What may be stored about a card: never the number or the CVC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardSummary {
    pub brand: String,
    pub last4: String,
    pub exp_month: u8,
    pub exp_year: u16,
    pub funding: String,
    /// Keyed hash of the card number: equal for the same card, useless to anyone without the key.
    pub fingerprint: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub id: String,
    pub merchant: String,
    pub card: CardSummary,
    /// The acquirer's reference for the card (a token, never the number).
    pub acquirer_token: String,
    pub metadata: Metadata,
    pub created: Timestamp,
}

/// An acquirer's refusal, as Stripe reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decline {
    /// Stripe error code: `card_declined`, `expired_card`, `incorrect_cvc`, `processing_error`.
    pub code: String,
    /// Stripe decline code: `generic_decline`, `insufficient_funds`, ...
    pub decline_code: Option<String>,
    pub message: String,
}

/// The acquirer's answer to an authorization request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthOutcome {
    Approved { authorization: String },
    Declined(Decline),
}

/// Stripe's `last_payment_error`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentError {
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
    pub charge: String,
    pub payment_method: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChargeStatus {
    Succeeded,
    Failed,
}

impl ChargeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ChargeStatus::Succeeded => "succeeded",
            ChargeStatus::Failed => "failed",
        }
    }
}

/// One attempt to move money for an intent: Stripe's `ch_` object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Charge {
    pub id: String,
    pub merchant: String,
    pub payment_intent: String,
    pub payment_method: String,
    pub amount: u64,
    pub currency: Currency,
    pub status: ChargeStatus,
    pub captured: bool,
    pub amount_captured: u64,
    pub amount_refunded: u64,
    /// The authorization was released without capture (cancel).
    pub released: bool,
    pub authorization: Option<String>,
    pub failure: Option<Decline>,
    pub created: Timestamp,
}

impl Charge {
    pub fn refunded(&self) -> bool {
        (self.captured && self.amount_refunded == self.amount_captured) || self.released
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: String,
    pub merchant: String,
    pub payment_intent: String,
    pub charge: String,
    pub amount: u64,
    pub currency: Currency,
    pub reason: Option<String>,
    pub metadata: Metadata,
    pub created: Timestamp,
}

impl Refund {
    pub const REASONS: &'static [&'static str] = &["duplicate", "fraudulent", "requested_by_customer"];
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentIntent {
    pub id: String,
    pub merchant: String,
    pub amount: Amount,
    pub currency: Currency,
    pub status: Status,
    pub capture_method: CaptureMethod,
    pub payment_method: Option<String>,
    pub amount_capturable: u64,
    pub amount_received: u64,
    pub amount_refunded: u64,
    pub latest_charge: Option<String>,
    pub last_payment_error: Option<PaymentError>,
    pub cancellation_reason: Option<CancellationReason>,
    pub canceled_at: Option<Timestamp>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub created: Timestamp,
    /// Bumped by every change; the store refuses a write whose expected version is stale.
    pub version: u64,
    /// Postings written for this intent so far; names the next posting (`{id}:{n}`).
    pub postings: u32,
}

/// A request that the intent's current state does not allow. Maps to a 400 naming the state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    #[error("You cannot {action} this PaymentIntent because it has a status of {}. Only a PaymentIntent with one of the following statuses may be {done}: {}.", .status.as_str(), list(.allowed))]
    UnexpectedState { action: &'static str, done: &'static str, status: Status, allowed: &'static [Status] },
    #[error("You cannot confirm this PaymentIntent because it's missing a payment method. Update the PaymentIntent with a payment method, or pass `payment_method` when confirming.")]
    MissingPaymentMethod,
    #[error("The amount_to_capture ({requested}) is greater than the amount capturable ({capturable}) on this PaymentIntent.")]
    CaptureTooLarge { requested: u64, capturable: u64 },
    #[error("Refund amount ({requested}) is greater than the unrefunded amount on the charge ({refundable}).")]
    RefundTooLarge { requested: u64, refundable: u64 },
    #[error("Charge {charge} has already been refunded.")]
    AlreadyRefunded { charge: String },
    #[error("This PaymentIntent has no successful charge to refund; its status is {}.", .status.as_str())]
    NothingToRefund { status: Status },
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error("amount arithmetic overflowed")]
    Overflow,
}

fn list(statuses: &[Status]) -> String {
    statuses.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
}

/// The fields of a new intent, already parsed.
#[derive(Debug, Clone)]
pub struct NewIntent {
    pub id: String,
    pub merchant: String,
    pub amount: Amount,
    pub currency: Currency,
    pub capture_method: CaptureMethod,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    pub metadata: Metadata,
    pub created: Timestamp,
}

/// An update to an unconfirmed intent; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct IntentUpdate {
    pub amount: Option<Amount>,
    pub currency: Option<Currency>,
    pub capture_method: Option<CaptureMethod>,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    pub metadata: Vec<(String, String)>,
}

/// The result of a confirmation: the new intent, the charge attempt and its postings.
#[derive(Debug, Clone)]
pub struct Confirmed {
    pub intent: PaymentIntent,
    pub charge: Charge,
    pub postings: Vec<Posting>,
}

impl Confirmed {
    pub fn declined(&self) -> Option<&PaymentError> {
        self.intent.last_payment_error.as_ref().filter(|_| self.charge.status == ChargeStatus::Failed)
    }
}

const UNCONFIRMED: &[Status] = &[Status::RequiresPaymentMethod, Status::RequiresConfirmation, Status::RequiresAction];
const CONFIRMABLE: &[Status] = &[Status::RequiresPaymentMethod, Status::RequiresConfirmation];
const CANCELABLE: &[Status] = &[
    Status::RequiresPaymentMethod,
    Status::RequiresConfirmation,
    Status::RequiresAction,
    Status::Processing,
    Status::RequiresCapture,
];

impl PaymentIntent {
    pub fn new(n: NewIntent) -> PaymentIntent {
        let status = if n.payment_method.is_some() { Status::RequiresConfirmation } else { Status::RequiresPaymentMethod };
        PaymentIntent {
            id: n.id,
            merchant: n.merchant,
            amount: n.amount,
            currency: n.currency,
            status,
            capture_method: n.capture_method,
            payment_method: n.payment_method,
            amount_capturable: 0,
            amount_received: 0,
            amount_refunded: 0,
            latest_charge: None,
            last_payment_error: None,
            cancellation_reason: None,
            canceled_at: None,
            description: n.description,
            metadata: n.metadata,
            created: n.created,
            version: 0,
            postings: 0,
        }
    }

    fn expect(&self, action: &'static str, done: &'static str, allowed: &'static [Status]) -> Result<(), StateError> {
        if allowed.contains(&self.status) {
            Ok(())
        } else {
            Err(StateError::UnexpectedState { action, done, status: self.status, allowed })
        }
    }

    fn next_version(&self) -> PaymentIntent {
        let mut next = self.clone();
        next.version += 1;
        next
    }

    fn posting(&mut self, kind: PostingKind, legs: &[(Account, i64)], now: Timestamp) -> Posting {
        let id = format!("{}:{}", self.id, self.postings);
        self.postings += 1;
        Posting::new(id, &self.merchant, self.currency, &self.id, kind, legs, now)
    }

    pub fn update(&self, u: IntentUpdate) -> Result<PaymentIntent, StateError> {
        self.expect("update", "updated", UNCONFIRMED)?;
        let mut next = self.next_version();
        next.metadata = self.metadata.merged(u.metadata)?;
        if let Some(a) = u.amount {
            next.amount = a;
        }
        if let Some(c) = u.currency {
            next.currency = c;
        }
        if let Some(m) = u.capture_method {
            next.capture_method = m;
        }
        if let Some(d) = u.description {
            next.description = if d.is_empty() { None } else { Some(d) };
        }
        if let Some(pm) = u.payment_method {
            next.payment_method = Some(pm);
            next.status = Status::RequiresConfirmation;
        }
        Ok(next)
    }

    /// Checks that the intent may be confirmed and names the payment method to authorize.
    pub fn confirm_target<'a>(&'a self, payment_method: Option<&'a str>) -> Result<&'a str, StateError> {
        self.expect("confirm", "confirmed", CONFIRMABLE)?;
        payment_method.or(self.payment_method.as_deref()).ok_or(StateError::MissingPaymentMethod)
    }

    /// Applies the acquirer's answer to a confirmation. A decline is not an error of the
    /// state machine: the intent returns to `requires_payment_method` with
    /// `last_payment_error`, and the failed charge is recorded.
    pub fn confirm(
        &self,
        payment_method: &str,
        outcome: AuthOutcome,
        charge_id: String,
        now: Timestamp,
    ) -> Result<Confirmed, StateError> {
        self.expect("confirm", "confirmed", CONFIRMABLE)?;
        let mut next = self.next_version();
        let amount = self.amount.get();
        let mut charge = Charge {
            id: charge_id.clone(),
            merchant: self.merchant.clone(),
            payment_intent: self.id.clone(),
            payment_method: payment_method.to_string(),
            amount,
            currency: self.currency,
            status: ChargeStatus::Succeeded,
            captured: false,
            amount_captured: 0,
            amount_refunded: 0,
            released: false,
            authorization: None,
            failure: None,
            created: now,
        };
        next.latest_charge = Some(charge_id.clone());
        let mut postings = Vec::new();
        match outcome {
            AuthOutcome::Declined(decline) => {
                charge.status = ChargeStatus::Failed;
                next.status = Status::RequiresPaymentMethod;
                next.payment_method = None;
                next.last_payment_error = Some(PaymentError {
                    code: decline.code.clone(),
                    decline_code: decline.decline_code.clone(),
                    message: decline.message.clone(),
                    charge: charge_id,
                    payment_method: payment_method.to_string(),
                });
                charge.failure = Some(decline);
            }
            AuthOutcome::Approved { authorization } => {
                charge.authorization = Some(authorization);
                next.payment_method = Some(payment_method.to_string());
                next.last_payment_error = None;
                let a = amount as i64;
                postings.push(next.posting(PostingKind::Authorize, &hold(a), now));
                match self.capture_method {
                    CaptureMethod::Manual => {
                        next.status = Status::RequiresCapture;
                        next.amount_capturable = amount;
                    }
                    CaptureMethod::Automatic => {
                        postings.push(next.posting(PostingKind::Capture, &capture(a), now));
                        next.status = Status::Succeeded;
                        next.amount_received = amount;
                        charge.captured = true;
                        charge.amount_captured = amount;
                    }
                }
            }
        }
        Ok(Confirmed { intent: next, charge, postings })
    }

    /// Whether the intent may be captured now (before anyone loads its charge).
    pub fn can_capture(&self) -> Result<(), StateError> {
        self.expect("capture", "captured", &[Status::RequiresCapture])
    }

    /// Whether anything of the intent may be refunded now (before anyone loads its charge).
    pub fn can_refund(&self) -> Result<(), StateError> {
        if self.status != Status::Succeeded {
            return Err(StateError::NothingToRefund { status: self.status });
        }
        if self.amount_received <= self.amount_refunded {
            return Err(StateError::AlreadyRefunded { charge: self.latest_charge.clone().unwrap_or_default() });
        }
        Ok(())
    }

    /// Captures `amount` (default: all) of an authorized intent; the uncaptured rest is
    /// released, as Stripe does: an intent is captured once.
    pub fn capture(
        &self,
        amount: Option<Amount>,
        charge: &Charge,
        now: Timestamp,
    ) -> Result<(PaymentIntent, Charge, Vec<Posting>), StateError> {
        self.can_capture()?;
        let capturable = self.amount_capturable;
        let take = amount.map(Amount::get).unwrap_or(capturable);
        if take > capturable {
            return Err(StateError::CaptureTooLarge { requested: take, capturable });
        }
        let rest = capturable - take;
        let mut next = self.next_version();
        let mut postings = vec![next.posting(PostingKind::Capture, &capture(take as i64), now)];
        if rest > 0 {
            postings.push(next.posting(PostingKind::Release, &release(rest as i64), now));
        }
        next.status = Status::Succeeded;
        next.amount_capturable = 0;
        next.amount_received = take;
        let mut charge = charge.clone();
        charge.captured = true;
        charge.amount_captured = take;
        Ok((next, charge, postings))
    }

    /// Cancels an intent that has not succeeded; an authorization hold is released.
    pub fn cancel(
        &self,
        reason: Option<CancellationReason>,
        charge: Option<&Charge>,
        now: Timestamp,
    ) -> Result<(PaymentIntent, Option<Charge>, Vec<Posting>), StateError> {
        self.expect("cancel", "canceled", CANCELABLE)?;
        let mut next = self.next_version();
        let mut postings = Vec::new();
        let mut released = None;
        if self.amount_capturable > 0 {
            postings.push(next.posting(PostingKind::Release, &release(self.amount_capturable as i64), now));
            if let Some(c) = charge {
                let mut c = c.clone();
                c.released = true;
                released = Some(c);
            }
        }
        next.status = Status::Canceled;
        next.amount_capturable = 0;
        next.cancellation_reason = reason;
        next.canceled_at = Some(now);
        Ok((next, released, postings))
    }

    /// Refunds part or all (default: the rest) of what was captured. Several refunds may
    /// follow one another; together they never pass the captured amount.
    pub fn refund(
        &self,
        charge: &Charge,
        amount: Option<Amount>,
        refund_id: String,
        reason: Option<String>,
        metadata: Metadata,
        now: Timestamp,
    ) -> Result<(PaymentIntent, Charge, Refund, Posting), StateError> {
        self.can_refund()?;
        let refundable = self.amount_received.checked_sub(self.amount_refunded).ok_or(StateError::Overflow)?;
        let take = amount.map(Amount::get).unwrap_or(refundable);
        if take > refundable {
            return Err(StateError::RefundTooLarge { requested: take, refundable });
        }
        let mut next = self.next_version();
        next.amount_refunded = self.amount_refunded.checked_add(take).ok_or(StateError::Overflow)?;
        let posting = next.posting(PostingKind::Refund, &refund(take as i64), now);
        let mut charge = charge.clone();
        charge.amount_refunded = next.amount_refunded;
        let refund = Refund {
            id: refund_id,
            merchant: self.merchant.clone(),
            payment_intent: self.id.clone(),
            charge: charge.id.clone(),
            amount: take,
            currency: self.currency,
            reason,
            metadata,
            created: now,
        };
        Ok((next, charge, refund, posting))
    }
}

// The four movements, as legs (debit positive). See `ledger` for the chart of accounts.
fn hold(a: i64) -> [(Account, i64); 2] {
    [(Account::AuthorizationHolds, a), (Account::MerchantPending, -a)]
}
fn release(a: i64) -> [(Account, i64); 2] {
    [(Account::AuthorizationHolds, -a), (Account::MerchantPending, a)]
}
fn capture(a: i64) -> [(Account, i64); 4] {
    [
        (Account::AuthorizationHolds, -a),
        (Account::MerchantPending, a),
        (Account::AcquirerReceivable, a),
        (Account::MerchantBalance, -a),
    ]
}
fn refund(a: i64) -> [(Account, i64); 2] {
    [(Account::MerchantBalance, a), (Account::AcquirerReceivable, -a)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn intent(capture_method: CaptureMethod) -> PaymentIntent {
        PaymentIntent::new(NewIntent {
            id: "pi_1".into(),
            merchant: "acct_1".into(),
            amount: Amount::new(1000).unwrap(),
            currency: Currency::USD,
            capture_method,
            payment_method: Some("pm_1".into()),
            description: None,
            metadata: Metadata::default(),
            created: 1,
        })
    }

    fn approved() -> AuthOutcome {
        AuthOutcome::Approved { authorization: "auth_1".into() }
    }

    #[test]
    fn automatic_capture_succeeds_with_balanced_postings() {
        let pi = intent(CaptureMethod::Automatic);
        assert_eq!(pi.status, Status::RequiresConfirmation);
        let c = pi.confirm("pm_1", approved(), "ch_1".into(), 2).unwrap();
        assert_eq!(c.intent.status, Status::Succeeded);
        assert_eq!(c.intent.amount_received, 1000);
        assert_eq!(c.postings.len(), 2);
        assert!(c.postings.iter().all(|p| p.legs.iter().map(|l| l.amount).sum::<i64>() == 0));
        assert_eq!(c.postings[1].id, "pi_1:1");
    }

    #[test]
    fn decline_returns_to_requires_payment_method() {
        let pi = intent(CaptureMethod::Automatic);
        let decline = Decline { code: "card_declined".into(), decline_code: Some("generic_decline".into()), message: "Your card was declined.".into() };
        let c = pi.confirm("pm_1", AuthOutcome::Declined(decline), "ch_1".into(), 2).unwrap();
        assert_eq!(c.intent.status, Status::RequiresPaymentMethod);
        assert_eq!(c.intent.payment_method, None);
        let err = c.declined().unwrap();
        assert_eq!(err.decline_code.as_deref(), Some("generic_decline"));
        assert_eq!(err.charge, "ch_1");
        assert!(c.postings.is_empty());
        assert_eq!(c.charge.status, ChargeStatus::Failed);
    }

    #[test]
    fn partial_capture_releases_the_rest_and_refunds_stop_at_captured() {
        let pi = intent(CaptureMethod::Manual);
        let c = pi.confirm("pm_1", approved(), "ch_1".into(), 2).unwrap();
        assert_eq!(c.intent.status, Status::RequiresCapture);
        assert_eq!(c.intent.amount_capturable, 1000);
        let (pi, ch, postings) = c.intent.capture(Some(Amount::new(600).unwrap()), &c.charge, 3).unwrap();
        assert_eq!((pi.status, pi.amount_received, pi.amount_capturable), (Status::Succeeded, 600, 0));
        assert_eq!(postings.len(), 2);
        assert_eq!(postings[1].kind, PostingKind::Release);
        let err = pi.capture(None, &ch, 4).unwrap_err();
        assert!(err.to_string().contains("status of succeeded"), "{err}");
        let (pi, ch, _, _) = pi.refund(&ch, Some(Amount::new(200).unwrap()), "re_1".into(), None, Metadata::default(), 5).unwrap();
        let over = pi.refund(&ch, Some(Amount::new(401).unwrap()), "re_2".into(), None, Metadata::default(), 5).unwrap_err();
        assert_eq!(over, StateError::RefundTooLarge { requested: 401, refundable: 400 });
        let (pi, ch, re, _) = pi.refund(&ch, None, "re_2".into(), None, Metadata::default(), 6).unwrap();
        assert_eq!(re.amount, 400);
        assert!(ch.refunded());
        assert!(matches!(pi.refund(&ch, None, "re_3".into(), None, Metadata::default(), 7), Err(StateError::AlreadyRefunded { .. })));
    }

    #[test]
    fn capture_more_than_authorized_is_refused() {
        let pi = intent(CaptureMethod::Manual);
        let c = pi.confirm("pm_1", approved(), "ch_1".into(), 2).unwrap();
        let err = c.intent.capture(Some(Amount::new(1001).unwrap()), &c.charge, 3).unwrap_err();
        assert_eq!(err, StateError::CaptureTooLarge { requested: 1001, capturable: 1000 });
    }

    #[test]
    fn cancel_releases_hold_and_is_final() {
        let pi = intent(CaptureMethod::Manual);
        let c = pi.confirm("pm_1", approved(), "ch_1".into(), 2).unwrap();
        let (pi, ch, postings) = c.intent.cancel(Some(CancellationReason::Abandoned), Some(&c.charge), 3).unwrap();
        assert_eq!(pi.status, Status::Canceled);
        assert_eq!(postings[0].kind, PostingKind::Release);
        assert!(ch.unwrap().refunded());
        assert!(pi.cancel(None, None, 4).is_err());
        assert!(pi.confirm_target(None).is_err());
    }

    #[test]
    fn confirm_without_payment_method_is_refused() {
        let mut pi = intent(CaptureMethod::Automatic);
        pi.payment_method = None;
        pi.status = Status::RequiresPaymentMethod;
        assert_eq!(pi.confirm_target(None), Err(StateError::MissingPaymentMethod));
        assert_eq!(pi.confirm_target(Some("pm_2")), Ok("pm_2"));
    }
}

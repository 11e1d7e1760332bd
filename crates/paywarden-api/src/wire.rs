//! Stripe's wire format for paywarden's objects. Only this crate knows it: the core's types
//! are rendered here, field by field, so a change to the core cannot change the API by
//! accident.

use std::collections::BTreeMap;

use paywarden_core::{Charge, PaymentIntent, PaymentMethod, Refund};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentIntentObject {
    /// `pi_...`
    pub id: String,
    /// Always `payment_intent`.
    pub object: &'static str,
    /// Minor units of `currency` (1099 = $10.99; 500 = ¥500).
    pub amount: u64,
    pub amount_capturable: u64,
    pub amount_received: u64,
    pub canceled_at: Option<i64>,
    /// duplicate, fraudulent, requested_by_customer or abandoned.
    pub cancellation_reason: Option<&'static str>,
    /// automatic or manual.
    pub capture_method: &'static str,
    pub client_secret: Option<String>,
    pub confirmation_method: &'static str,
    pub created: i64,
    /// Three-letter ISO code, lower case.
    pub currency: &'static str,
    pub description: Option<String>,
    pub last_payment_error: Option<LastPaymentError>,
    /// `ch_...` of the latest charge attempt (the charge, with `expand[]=latest_charge`).
    #[schema(schema_with = crate::schema::charge_or_id_nullable)]
    pub latest_charge: Option<String>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    /// `pm_...` (the PaymentMethod, with `expand[]=payment_method`).
    #[schema(schema_with = crate::schema::payment_method_or_id_nullable)]
    pub payment_method: Option<String>,
    pub payment_method_types: Vec<&'static str>,
    /// requires_payment_method, requires_confirmation, requires_action, processing,
    /// requires_capture, succeeded or canceled.
    pub status: &'static str,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LastPaymentError {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub code: String,
    pub decline_code: Option<String>,
    pub message: String,
    pub charge: String,
    pub payment_method: PaymentMethodRef,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodRef {
    pub id: String,
    pub object: &'static str,
}

pub fn payment_intent(pi: &PaymentIntent) -> PaymentIntentObject {
    PaymentIntentObject {
        id: pi.id.clone(),
        object: "payment_intent",
        amount: pi.amount.get(),
        amount_capturable: pi.amount_capturable,
        amount_received: pi.amount_received,
        canceled_at: pi.canceled_at,
        cancellation_reason: pi.cancellation_reason.map(|r| r.as_str()),
        capture_method: pi.capture_method.as_str(),
        client_secret: None,
        confirmation_method: "automatic",
        created: pi.created,
        currency: pi.currency.code(),
        description: pi.description.clone(),
        last_payment_error: pi.last_payment_error.as_ref().map(|e| LastPaymentError {
            kind: "card_error",
            code: e.code.clone(),
            decline_code: e.decline_code.clone(),
            message: e.message.clone(),
            charge: e.charge.clone(),
            payment_method: PaymentMethodRef { id: e.payment_method.clone(), object: "payment_method" },
        }),
        latest_charge: pi.latest_charge.clone(),
        livemode: false,
        metadata: metadata(&pi.metadata),
        payment_method: pi.payment_method.clone(),
        payment_method_types: vec!["card"],
        status: pi.status.as_str(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodObject {
    /// `pm_...`
    pub id: String,
    /// Always `payment_method`.
    pub object: &'static str,
    pub billing_details: BillingDetails,
    pub card: CardObject,
    pub created: i64,
    pub customer: Option<String>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    /// Always `card`.
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct BillingDetails {
    pub address: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub phone: Option<String>,
}

/// What is kept of a card: never its number or security code.
#[derive(Debug, Serialize, ToSchema)]
pub struct CardObject {
    pub brand: String,
    pub country: Option<String>,
    pub exp_month: u8,
    pub exp_year: u16,
    /// Equal for the same card number under one paywarden installation.
    pub fingerprint: String,
    pub funding: String,
    pub last4: String,
}

pub fn payment_method(pm: &PaymentMethod) -> PaymentMethodObject {
    PaymentMethodObject {
        id: pm.id.clone(),
        object: "payment_method",
        billing_details: BillingDetails::default(),
        card: CardObject {
            brand: pm.card.brand.clone(),
            country: None,
            exp_month: pm.card.exp_month,
            exp_year: pm.card.exp_year,
            fingerprint: pm.card.fingerprint.clone(),
            funding: pm.card.funding.clone(),
            last4: pm.card.last4.clone(),
        },
        created: pm.created,
        customer: None,
        livemode: false,
        metadata: metadata(&pm.metadata),
        kind: "card",
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChargeObject {
    /// `ch_...`
    pub id: String,
    /// Always `charge`.
    pub object: &'static str,
    pub amount: u64,
    pub amount_captured: u64,
    pub amount_refunded: u64,
    pub captured: bool,
    pub created: i64,
    pub currency: &'static str,
    pub failure_code: Option<String>,
    pub failure_message: Option<String>,
    pub livemode: bool,
    pub paid: bool,
    /// `pi_...` (the PaymentIntent, with `expand[]=payment_intent`).
    #[schema(schema_with = crate::schema::payment_intent_or_id)]
    pub payment_intent: String,
    pub payment_method: String,
    pub refunded: bool,
    /// succeeded or failed.
    pub status: &'static str,
}

pub fn charge(c: &Charge) -> ChargeObject {
    ChargeObject {
        id: c.id.clone(),
        object: "charge",
        amount: c.amount,
        amount_captured: c.amount_captured,
        amount_refunded: c.amount_refunded,
        captured: c.captured,
        created: c.created,
        currency: c.currency.code(),
        failure_code: c.failure.as_ref().map(|f| f.code.clone()),
        failure_message: c.failure.as_ref().map(|f| f.message.clone()),
        livemode: false,
        paid: c.status == paywarden_core::ChargeStatus::Succeeded,
        payment_intent: c.payment_intent.clone(),
        payment_method: c.payment_method.clone(),
        refunded: c.refunded(),
        status: c.status.as_str(),
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RefundObject {
    /// `re_...`
    pub id: String,
    /// Always `refund`.
    pub object: &'static str,
    pub amount: u64,
    /// `ch_...` (the charge, with `expand[]=charge`).
    #[schema(schema_with = crate::schema::charge_or_id)]
    pub charge: String,
    pub created: i64,
    pub currency: &'static str,
    pub metadata: BTreeMap<String, String>,
    /// `pi_...` (the PaymentIntent, with `expand[]=payment_intent`).
    #[schema(schema_with = crate::schema::payment_intent_or_id)]
    pub payment_intent: String,
    pub reason: Option<String>,
    /// Always `succeeded` with the sandbox acquirer.
    pub status: &'static str,
}

pub fn refund(r: &Refund) -> RefundObject {
    RefundObject {
        id: r.id.clone(),
        object: "refund",
        amount: r.amount,
        charge: r.charge.clone(),
        created: r.created,
        currency: r.currency.code(),
        metadata: metadata(&r.metadata),
        payment_intent: r.payment_intent.clone(),
        reason: r.reason.clone(),
        status: "succeeded",
    }
}

/// Stripe's list envelope.
#[derive(Debug, Serialize, ToSchema)]
pub struct ListObject<T: ToSchema> {
    /// Always `list`.
    pub object: &'static str,
    pub data: Vec<T>,
    pub has_more: bool,
    pub url: String,
}

fn metadata(m: &paywarden_core::Metadata) -> BTreeMap<String, String> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

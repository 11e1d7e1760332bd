//! The OpenAPI 3 document at `/v1/openapi.json`, generated from the wire types in
//! [`crate::wire`] and the parameter schemas below. Request bodies are documented as
//! `application/x-www-form-urlencoded` (Stripe's format); JSON bodies with the same fields
//! are accepted too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use paywarden_core::{Currency, Metadata};
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Ref, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{RefOr, Required};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::wire::{
    ChargeObject, LastPaymentError, ListObject, PaymentIntentObject, PaymentMethodObject, PaymentMethodRef, RefundObject,
};

/// Stripe's error envelope.
#[derive(Serialize, ToSchema)]
pub struct ErrorEnvelope {
    pub error: ErrorObject,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorObject {
    /// api_error, card_error, idempotency_error, invalid_request_error.
    #[serde(rename = "type")]
    pub kind: String,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: String,
    /// The parameter to change.
    pub param: Option<String>,
}

// Request parameters. Every optional field is `nullable = false`: a form cannot send a null,
// and an absent field is what "not given" means. The bounds are the ones the handlers
// enforce (crate::params, paywarden_core), so a request the schema allows is never refused
// for its shape, and one it forbids is always refused with a 4xx.

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardParams {
    /// The card number (12 to 19 digits; spaces and dashes between them are ignored); sent
    /// to the acquirer and never stored. Stripe's test numbers work, e.g. 4242424242424242.
    #[schema(min_length = 1, max_length = 64, example = "4242424242424242")]
    pub number: String,
    /// 1 to 12.
    #[schema(minimum = 1, maximum = 12, example = 12)]
    pub exp_month: u8,
    /// Four digits, or two (34 is 2034); a past month is refused (402 expired_card).
    #[schema(minimum = 0, maximum = 9999, example = 2034)]
    pub exp_year: u16,
    /// 3 or 4 digits. Never stored.
    #[schema(nullable = false, pattern = "^[0-9]{3,4}$", example = "123")]
    pub cvc: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentMethodParams {
    #[serde(rename = "type")]
    pub kind: PaymentMethodType,
    pub card: CardParams,
    #[schema(nullable = false, schema_with = metadata_param)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// Only `card`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethodType {
    Card,
}

/// When the funds move: at confirmation (automatic, automatic_async) or on a later capture (manual).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethodParam {
    Automatic,
    AutomaticAsync,
    Manual,
}

/// Accepted and checked for Stripe compatibility; paywarden takes cards only.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutomaticPaymentMethodsParams {
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    #[schema(nullable = false)]
    pub allow_redirects: Option<AllowRedirects>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllowRedirects {
    Always,
    Never,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentIntentParams {
    /// Positive integer in the currency's smallest unit (1099 = $10.99, 500 = ¥500).
    #[schema(minimum = 1, maximum = 99_999_999, example = 2000)]
    pub amount: u64,
    #[schema(schema_with = currency_param)]
    pub currency: String,
    /// Default automatic.
    #[schema(nullable = false)]
    pub capture_method: Option<CaptureMethodParam>,
    /// Confirm at once; needs payment_method (400 without one).
    #[schema(nullable = false)]
    pub confirm: Option<bool>,
    /// `pm_...`, or one of Stripe's test ids such as pm_card_visa; "" is the same as leaving it out.
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(nullable = false, schema_with = metadata_param)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(nullable = false, min_items = 1)]
    pub payment_method_types: Option<Vec<PaymentMethodType>>,
    #[schema(nullable = false)]
    pub automatic_payment_methods: Option<AutomaticPaymentMethodsParams>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePaymentIntentParams {
    /// Only before confirmation.
    #[schema(nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount: Option<u64>,
    #[schema(nullable = false, schema_with = currency_param)]
    pub currency: Option<String>,
    #[schema(nullable = false)]
    pub capture_method: Option<CaptureMethodParam>,
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// "" removes it.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(nullable = false, schema_with = metadata_param)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[schema(nullable = false, min_items = 1)]
    pub payment_method_types: Option<Vec<PaymentMethodType>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPaymentIntentParams {
    /// Needed unless the intent already has one.
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePaymentIntentParams {
    /// At most amount_capturable; the rest is released. Default: all.
    #[schema(nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount_to_capture: Option<u64>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReasonParam {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPaymentIntentParams {
    #[schema(nullable = false)]
    pub cancellation_reason: Option<CancellationReasonParam>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundReasonParam {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundParams {
    /// `pi_...` (or pass charge); one of the two is needed.
    #[schema(nullable = false, pattern = "^(pi_[A-Za-z0-9_]*)?$", max_length = 255)]
    pub payment_intent: Option<String>,
    /// `ch_...` (or pass payment_intent).
    #[schema(nullable = false, pattern = "^(ch_[A-Za-z0-9_]*)?$", max_length = 255)]
    pub charge: Option<String>,
    /// Default: everything not yet refunded.
    #[schema(nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount: Option<u64>,
    #[schema(nullable = false)]
    pub reason: Option<RefundReasonParam>,
    #[schema(nullable = false, schema_with = metadata_param)]
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhookEndpointParams {
    /// Where events are POSTed: https:// (or http://) with a host and no credentials, at
    /// most 2048 characters.
    #[schema(min_length = 1, max_length = 2048, example = "https://example.com/hooks/paywarden")]
    pub url: String,
    #[schema(schema_with = enabled_events_param)]
    pub enabled_events: Vec<String>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpointParams {
    #[schema(nullable = false, min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[schema(nullable = false, schema_with = enabled_events_param)]
    pub enabled_events: Option<Vec<String>>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    /// true stops deliveries; false re-enables an endpoint (also one paywarden disabled).
    #[schema(nullable = false)]
    pub disabled: Option<bool>,
}

/// Metadata as sent: Stripe's limits ([`Metadata`]).
fn metadata_param() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .description(Some(format!(
            "Up to {} keys of 1 to {} characters (no square brackets: the form encoding nests on them), values of at most {}; on update a value \"\" removes its key.",
            Metadata::KEYS_MAX,
            Metadata::KEY_CHARS_MAX,
            Metadata::VALUE_CHARS_MAX
        )))
        .max_properties(Some(Metadata::KEYS_MAX))
        .property_names(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(Metadata::KEY_CHARS_MAX))
                .pattern(Some(r"^[^\[\]]*$")),
        ))
        .additional_properties(Some(ObjectBuilder::new().schema_type(Type::String).max_length(Some(Metadata::VALUE_CHARS_MAX))))
        .build()
}

/// The event types an endpoint receives ([`crate::webhooks::EVENT_TYPES`]), or `*` alone for all.
fn enabled_events_param() -> Array {
    ArrayBuilder::new()
        .description(Some("Event types (see EventObject.type), or `*` alone for all; sent indexed: enabled_events[0]=..."))
        .min_items(Some(1))
        .items(ObjectBuilder::new().schema_type(Type::String).enum_values(Some(crate::webhooks::EVENT_TYPES.iter().copied().chain(["*"]))))
        .build()
}

/// The currencies paywarden knows ([`Currency`]), as Stripe writes them; upper case is accepted too.
fn currency_param() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some("Three-letter ISO 4217 code, lower case."))
        .enum_values(Some(Currency::all().map(Currency::code)))
        .examples([serde_json::json!("usd")])
        .build()
}

#[derive(Serialize, ToSchema)]
pub struct WebhookEndpointObject {
    /// `we_...`
    pub id: String,
    /// Always `webhook_endpoint`.
    pub object: String,
    pub api_version: String,
    pub created: i64,
    pub description: Option<String>,
    pub enabled_events: Vec<String>,
    pub livemode: bool,
    pub metadata: BTreeMap<String, String>,
    /// The `whsec_` signing secret: only in the response that created the endpoint.
    pub secret: Option<String>,
    /// enabled or disabled.
    pub status: String,
    /// Why paywarden (or the API) disabled it.
    pub disabled_reason: Option<String>,
    pub url: String,
}

#[derive(Serialize, ToSchema)]
pub struct EventData {
    /// The object as it was after the change (a payment_intent, charge or refund).
    #[schema(value_type = Object)]
    pub object: serde_json::Value,
}

#[derive(Serialize, ToSchema)]
pub struct EventRequest {
    pub id: Option<String>,
    pub idempotency_key: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct EventObject {
    /// `evt_...`
    pub id: String,
    /// Always `event`.
    pub object: String,
    pub api_version: String,
    pub created: i64,
    pub data: EventData,
    pub livemode: bool,
    pub request: EventRequest,
    /// payment_intent.created, .succeeded, .payment_failed, .canceled,
    /// .amount_capturable_updated, charge.refunded or refund.created.
    #[serde(rename = "type")]
    pub kind: String,
    /// Retrieve only: deliveries not yet made.
    pub pending_webhooks: Option<u64>,
    /// Retrieve only: each endpoint's delivery of this event.
    pub delivery_attempts: Option<Vec<WebhookDeliveryObject>>,
}

#[derive(Serialize, ToSchema)]
pub struct WebhookDeliveryObject {
    /// Always `webhook_delivery`.
    pub object: String,
    /// `evt_...`
    pub event: String,
    /// `we_...`
    pub webhook_endpoint: String,
    /// pending, delivered or failed (given up at the retry horizon).
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: Option<i64>,
    pub last_attempt_at: Option<i64>,
    /// The endpoint's HTTP status on the last attempt.
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created: i64,
}

#[derive(Serialize, ToSchema)]
pub struct DeletedObject {
    pub id: String,
    pub object: String,
    pub deleted: bool,
}

const FORM: &str = "application/x-www-form-urlencoded";

#[utoipa::path(post, path = "/v1/webhook_endpoints", request_body(content = CreateWebhookEndpointParams, content_type = FORM),
    responses((status = 200, description = "The endpoint, with its secret (shown this once)", body = WebhookEndpointObject, links(("RetrieveEndpoint" = (operation_id = "retrieve_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("UpdateEndpoint" = (operation_id = "update_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("DeleteEndpoint" = (operation_id = "delete_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("ListEndpointDeliveries" = (operation_id = "list_webhook_deliveries", parameters(("id" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn create_webhook_endpoint() {}

#[utoipa::path(get, path = "/v1/webhook_endpoints", params(ListQuery),
    responses((status = 200, body = ListObject<WebhookEndpointObject>, links(("RetrieveNewestEndpoint" = (operation_id = "retrieve_webhook_endpoint", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn list_webhook_endpoints() {}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", params(("id" = String, Path)),
    responses((status = 200, body = WebhookEndpointObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_webhook_endpoint() {}

#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}", params(("id" = String, Path)), request_body(content = UpdateWebhookEndpointParams, content_type = FORM),
    responses((status = 200, body = WebhookEndpointObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn update_webhook_endpoint() {}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", params(("id" = String, Path)),
    responses((status = 200, body = DeletedObject), (status = 404, body = ErrorEnvelope)))]
pub fn delete_webhook_endpoint() {}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", params(("id" = String, Path), ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 100, description = "1 to 100, default 10")),
    responses((status = 200, description = "The endpoint's deliveries, newest first", body = ListObject<WebhookDeliveryObject>), (status = 404, body = ErrorEnvelope)))]
pub fn list_webhook_deliveries() {}

#[utoipa::path(get, path = "/v1/events", params(ListQuery, ("type" = Option<String>, Query, nullable = false, description = "Only events of this type")),
    responses((status = 200, body = ListObject<EventObject>, links(("RetrieveNewestEvent" = (operation_id = "retrieve_event", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn list_events() {}

#[utoipa::path(get, path = "/v1/events/{id}", params(("id" = String, Path)),
    responses((status = 200, body = EventObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_event() {}

#[utoipa::path(post, path = "/v1/payment_methods", request_body(content = CreatePaymentMethodParams, content_type = FORM),
    responses((status = 200, body = PaymentMethodObject, links(("RetrievePaymentMethod" = (operation_id = "retrieve_payment_method", parameters(("id" = "$response.body#/id")))), ("PayWithPaymentMethod" = (operation_id = "create_payment_intent", request_body = json!({"payment_method": "$response.body#/id", "confirm": true}))), ("AuthorizeWithPaymentMethod" = (operation_id = "create_payment_intent", request_body = json!({"payment_method": "$response.body#/id", "confirm": true, "capture_method": "manual"}))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Card refused", body = ErrorEnvelope)))]
pub fn create_payment_method() {}

#[utoipa::path(get, path = "/v1/payment_methods/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PaymentMethodObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_payment_method() {}

#[utoipa::path(get, path = "/v1/payment_methods", params(ListQuery),
    responses((status = 200, body = ListObject<PaymentMethodObject>, links(("RetrieveNewestPaymentMethod" = (operation_id = "retrieve_payment_method", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn list_payment_methods() {}

#[utoipa::path(post, path = "/v1/payment_intents", request_body(content = CreatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("UpdateIntent" = (operation_id = "update_payment_intent", parameters(("id" = "$response.body#/id")))), ("ConfirmIntent" = (operation_id = "confirm_payment_intent", parameters(("id" = "$response.body#/id")), request_body = json!({"payment_method": "pm_card_visa"}))), ("CaptureIntent" = (operation_id = "capture_payment_intent", parameters(("id" = "$response.body#/id")))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))), ("ListIntentRefunds" = (operation_id = "list_refunds", parameters(("payment_intent" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Declined; the intent is in requires_payment_method", body = ErrorEnvelope)))]
pub fn create_payment_intent() {}

#[utoipa::path(get, path = "/v1/payment_intents/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PaymentIntentObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}", params(("id" = String, Path)), request_body(content = UpdatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("ConfirmIntent" = (operation_id = "confirm_payment_intent", parameters(("id" = "$response.body#/id")), request_body = json!({"payment_method": "pm_card_visa"}))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn update_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/confirm", params(("id" = String, Path)), request_body(content = ConfirmPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("CaptureIntent" = (operation_id = "capture_payment_intent", parameters(("id" = "$response.body#/id")))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Declined; the intent is back in requires_payment_method", body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn confirm_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/capture", params(("id" = String, Path)), request_body(content = CapturePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))), ("ListIntentRefunds" = (operation_id = "list_refunds", parameters(("payment_intent" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn capture_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/cancel", params(("id" = String, Path)), request_body(content = CancelPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn cancel_payment_intent() {}

#[utoipa::path(get, path = "/v1/payment_intents", params(ListQuery),
    responses((status = 200, body = ListObject<PaymentIntentObject>, links(("RetrieveNewestIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn list_payment_intents() {}

#[utoipa::path(get, path = "/v1/charges/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ChargeObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_charge() {}

#[utoipa::path(post, path = "/v1/refunds", request_body(content = CreateRefundParams, content_type = FORM),
    responses((status = 200, body = RefundObject, links(("RetrieveRefund" = (operation_id = "retrieve_refund", parameters(("id" = "$response.body#/id")))), ("RetrieveRefundedIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/payment_intent")))), ("RetrieveRefundedCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/charge")))), ("RefundAgain" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/payment_intent"}))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn create_refund() {}

#[utoipa::path(get, path = "/v1/refunds/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RefundObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_refund() {}

#[utoipa::path(get, path = "/v1/refunds", params(ListQuery, ("payment_intent" = Option<String>, Query, nullable = false, pattern = "^(pi_[A-Za-z0-9_]*)?$", max_length = 255, description = "Only refunds of this PaymentIntent")),
    responses((status = 200, body = ListObject<RefundObject>, links(("RetrieveNewestRefund" = (operation_id = "retrieve_refund", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub fn list_refunds() {}

#[utoipa::path(get, path = "/v1/openapi.json", responses((status = 200, description = "This OpenAPI 3 document", content_type = "application/json")))]
pub fn openapi_document() {}

#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "The process is alive (no I/O)", body = String)))]
pub fn healthz() {}

#[utoipa::path(get, path = "/readyz", responses(
    (status = 200, description = "Ready for traffic: the store answers and the writer's queue has room", body = String),
    (status = 503, description = "Not ready", body = String)
))]
pub fn readyz() {}

#[utoipa::path(get, path = "/metrics", responses((status = 200, description = "Prometheus metrics (OpenMetrics text); every series has a version label", content_type = "application/openmetrics-text", body = String)))]
pub fn metrics() {}

#[utoipa::path(get, path = "/admin/memory/leak-report", responses(
    (status = 200, description = "The memory guard's verdict: JSON with state (ok, suspect or leaking), rates, confidence, time to exhaustion", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope)))]
pub fn leak_report() {}

#[utoipa::path(post, path = "/admin/memory/profile/reference", responses(
    (status = 200, description = "A heap profile was taken and kept as the reference for /admin/memory/profile/diff", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "jemalloc heap profiling is off in this process", body = ErrorEnvelope)))]
pub fn mark_heap() {}

#[utoipa::path(get, path = "/admin/memory/profile/diff", responses(
    (status = 200, description = "The allocation sites that grew since the reference profile, largest first: function, growth bytes and rate, share, stack", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "No reference profile yet (POST /admin/memory/profile/reference first), or heap profiling is off", body = ErrorEnvelope)))]
pub fn heap_diff() {}

#[utoipa::path(get, path = "/admin/alerts", responses(
    (status = 200, description = "Active alerts (memory leak, payment failure burn rate) and the recent firing/resolved events, in Alertmanager's alert shape", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope)))]
pub fn alerts() {}

#[utoipa::path(get, path = "/debug/pprof/heap", responses(
    (status = 200, description = "The live heap profile from jemalloc's sampler, pprof format (gzipped protobuf, inuse_space in bytes), not symbolized: its mappings carry the binary's path and build ID and its locations file-relative addresses; read it with `go tool pprof ./paywarden heap.pb.gz` next to the same binary", content_type = "application/octet-stream"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "Heap profiling is off in this process (jemalloc started without prof:true)", body = ErrorEnvelope)))]
pub fn pprof_heap() {}

/// Stripe's cursor pagination; newest first.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100, default 10.
    #[param(nullable = false, minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// An object id of the listed kind: return objects older than it (not with ending_before).
    #[param(nullable = false, max_length = 255)]
    pub starting_after: Option<String>,
    /// An object id of the listed kind: return objects newer than it (not with starting_after).
    #[param(nullable = false, max_length = 255)]
    pub ending_before: Option<String>,
}

/// What every operation of one audience shares, added in one place rather than on each path:
/// how it authenticates, the errors any request may meet before its handler runs, and the
/// Idempotency-Key header on a merchant's POSTs.
struct Conventions;

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            SECRET_KEY,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("A merchant's secret key: Authorization: Bearer sk_test_...")).build(),
            ),
        );
        components.add_security_scheme(
            SECRET_KEY_BASIC,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Basic).description(Some("The secret key as the user name and an empty password, as curl -u sk_test_...: sends it")).build(),
            ),
        );
        components.add_security_scheme(
            ADMIN_TOKEN,
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some("The token given to serve --admin-token (or PAYWARDEN_ADMIN_TOKEN); merchant keys never work here")).build(),
            ),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let merchant = path.starts_with("/v1/") && path != "/v1/openapi.json";
            let admin = path.starts_with("/admin/") || path.starts_with("/debug/");
            let by_id = path.contains('{');
            for (method, op) in [("get", &mut item.get), ("post", &mut item.post), ("delete", &mut item.delete)] {
                let Some(op) = op.as_mut() else { continue };
                if admin {
                    op.security = Some(vec![SecurityRequirement::new(ADMIN_TOKEN, Vec::<String>::new())]);
                }
                if !merchant {
                    continue;
                }
                op.security = Some(vec![
                    SecurityRequirement::new(SECRET_KEY, Vec::<String>::new()),
                    SecurityRequirement::new(SECRET_KEY_BASIC, Vec::<String>::new()),
                ]);
                let mut errors = vec![
                    ("400", "Invalid parameters: the error names the one to change"),
                    ("401", "No key, or not a valid secret key"),
                    ("429", "Too many requests in flight (Retry-After says when to try again)"),
                    ("503", "Not ready, or the store's writer queue is full (Retry-After)"),
                ];
                if by_id {
                    errors.push(("404", "No such object for this merchant"));
                }
                if method == "post" {
                    errors.extend([
                        ("408", "The body took longer than the body read timeout to arrive"),
                        ("409", "A request with the same Idempotency-Key is still being handled"),
                        ("413", "The body is larger than the server's --body-bytes-max"),
                        ("415", "The body is neither form-encoded nor JSON"),
                    ]);
                    op.parameters.get_or_insert_with(Vec::new).push(
                        ParameterBuilder::new()
                            .name("Idempotency-Key")
                            .parameter_in(ParameterIn::Header)
                            .required(Required::False)
                            .description(Some("Makes a retry safe: the first response to this key is replayed (Idempotent-Replayed: true) for 24 h; reused with other parameters, 400 idempotency_error"))
                            .schema(Some(ObjectBuilder::new().schema_type(Type::String).min_length(Some(1)).max_length(Some(crate::IDEMPOTENCY_KEY_CHARS_MAX)).pattern(Some("^[ -~]+$"))))
                            .build(),
                    );
                }
                for (status, description) in errors {
                    op.responses.responses.entry(status.to_string()).or_insert_with(|| {
                        RefOr::T(
                            ResponseBuilder::new()
                                .description(description)
                                .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorEnvelope"))).build())
                                .build(),
                        )
                    });
                }
            }
        }
    }
}

const SECRET_KEY: &str = "secret_key";
const SECRET_KEY_BASIC: &str = "secret_key_basic";
const ADMIN_TOKEN: &str = "admin_token";

#[derive(OpenApi)]
#[openapi(
    modifiers(&Conventions),
    info(title = "paywarden", description = "A Stripe-compatible payments API: payment methods, payment intents, charges and refunds. Authenticate with `Authorization: Bearer sk_test_...`; send an `Idempotency-Key` header with every POST. Bodies are form-encoded as Stripe's: nested objects in brackets (card[number]=..., the deepObject style), lists indexed (enabled_events[0]=...); a JSON object with the same fields is accepted too."),
    paths(
        create_payment_method, retrieve_payment_method, list_payment_methods,
        create_payment_intent, retrieve_payment_intent, update_payment_intent, confirm_payment_intent,
        capture_payment_intent, cancel_payment_intent, list_payment_intents,
        retrieve_charge, create_refund, retrieve_refund, list_refunds,
        create_webhook_endpoint, list_webhook_endpoints, retrieve_webhook_endpoint, update_webhook_endpoint, delete_webhook_endpoint,
        list_webhook_deliveries, list_events, retrieve_event, openapi_document, healthz, readyz, metrics, leak_report, mark_heap, heap_diff, alerts, pprof_heap
    ),
    components(schemas(ErrorEnvelope, ErrorObject, PaymentIntentObject, PaymentMethodObject, ChargeObject, RefundObject, LastPaymentError, PaymentMethodRef,
        WebhookEndpointObject, EventObject, EventData, EventRequest, WebhookDeliveryObject, DeletedObject))
)]
pub struct ApiDoc;

/// The document, rendered once.
pub fn document() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}));
        camel_case_links(&mut doc);
        bracket_encoding(&mut doc);
        serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"))
    })
}

/// Stripe's form bodies nest with brackets (`card[number]=...`, `metadata[order]=...`); in
/// OpenAPI that is the `deepObject` style, which a form body declares per property in its
/// media type's `encoding`. Without it a tool would flatten `card`'s fields to the top level.
/// Lists are sent indexed (`enabled_events[0]=...`), which OpenAPI has no style for; the
/// document's description says so. A body none of whose fields is required is marked optional.
fn bracket_encoding(doc: &mut serde_json::Value) {
    let schemas = doc.pointer("/components/schemas").cloned().unwrap_or_default();
    let resolve = |schema: &serde_json::Value| -> serde_json::Value {
        match schema.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/components/schemas/")) {
            Some(name) => schemas.get(name).cloned().unwrap_or_default(),
            None => schema.clone(),
        }
    };
    let is_object = |schema: &serde_json::Value| match schema.get("type") {
        Some(serde_json::Value::String(t)) => t == "object",
        Some(serde_json::Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    for op in paths.values_mut().filter_map(|item| item.as_object_mut()).flat_map(|item| item.values_mut()) {
        let Some(form) = op.pointer_mut("/requestBody/content/application~1x-www-form-urlencoded") else { continue };
        let body = resolve(form.get("schema").unwrap_or(&serde_json::Value::Null));
        let Some(properties) = body.get("properties").and_then(|p| p.as_object()) else { continue };
        let encoding: serde_json::Map<String, serde_json::Value> = properties
            .iter()
            .filter(|(_, schema)| is_object(&resolve(schema)))
            .map(|(name, _)| (name.clone(), serde_json::json!({"style": "deepObject", "explode": true})))
            .collect();
        if !encoding.is_empty() {
            form["encoding"] = serde_json::Value::Object(encoding);
        }
        // A body with no required field may be left out altogether (POST .../capture captures all).
        let required = body.get("required").and_then(|r| r.as_array()).is_some_and(|r| !r.is_empty());
        if let Some(request_body) = op.get_mut("requestBody") {
            request_body["required"] = serde_json::Value::Bool(required);
        }
    }
}

/// utoipa 5.5 writes a Link Object's fields in snake case (`operation_id`, `request_body`);
/// OpenAPI names them `operationId`, `operationRef` and `requestBody`, and tools that follow
/// links (schemathesis' stateful phase) ignore the others.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else { return };
    let operations = paths.values_mut().filter_map(|item| item.as_object_mut()).flat_map(|item| item.values_mut());
    let responses = operations.filter_map(|op| op.get_mut("responses")?.as_object_mut()).flat_map(|r| r.values_mut());
    for link in responses.filter_map(|r| r.get_mut("links")?.as_object_mut()).flat_map(|l| l.values_mut()) {
        let Some(link) = link.as_object_mut() else { continue };
        for (snake, camel) in [("operation_id", "operationId"), ("operation_ref", "operationRef"), ("request_body", "requestBody")] {
            if let Some(v) = link.remove(snake) {
                link.insert(camel.to_string(), v);
            }
        }
    }
}

pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

//! The OpenAPI 3 document at `/v1/openapi.json`, generated from the wire types in
//! [`crate::wire`] and the parameter schemas below. Request bodies are documented as
//! `application/x-www-form-urlencoded` (Stripe's format); JSON bodies with the same fields
//! are accepted too.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::{OpenApi, ToSchema};

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

#[derive(Serialize, ToSchema)]
pub struct CardParams {
    /// The card number; sent to the acquirer and never stored.
    pub number: String,
    pub exp_month: String,
    pub exp_year: String,
    /// Never stored.
    pub cvc: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatePaymentMethodParams {
    /// Only `card`.
    #[serde(rename = "type")]
    pub kind: String,
    pub card: CardParams,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreatePaymentIntentParams {
    /// Positive integer in the currency's smallest unit, at most 99999999.
    pub amount: u64,
    /// Three-letter ISO code.
    pub currency: String,
    /// automatic (default), automatic_async or manual.
    pub capture_method: Option<String>,
    /// Confirm at once (needs payment_method).
    pub confirm: Option<bool>,
    /// `pm_...`, or a test id such as pm_card_visa.
    pub payment_method: Option<String>,
    pub description: Option<String>,
    /// Up to 50 keys of 40 characters, values of 500.
    pub metadata: Option<BTreeMap<String, String>>,
    /// Only `card`.
    pub payment_method_types: Option<Vec<String>>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdatePaymentIntentParams {
    pub amount: Option<u64>,
    pub currency: Option<String>,
    pub capture_method: Option<String>,
    pub payment_method: Option<String>,
    pub description: Option<String>,
    /// A key set to "" is removed.
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
pub struct ConfirmPaymentIntentParams {
    pub payment_method: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CapturePaymentIntentParams {
    /// At most amount_capturable; the rest is released. Default: all.
    pub amount_to_capture: Option<u64>,
}

#[derive(Serialize, ToSchema)]
pub struct CancelPaymentIntentParams {
    /// duplicate, fraudulent, requested_by_customer or abandoned.
    pub cancellation_reason: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateRefundParams {
    /// `pi_...` (or pass charge).
    pub payment_intent: Option<String>,
    /// `ch_...` (or pass payment_intent).
    pub charge: Option<String>,
    /// Default: everything not yet refunded.
    pub amount: Option<u64>,
    /// duplicate, fraudulent or requested_by_customer.
    pub reason: Option<String>,
    pub metadata: Option<BTreeMap<String, String>>,
}

#[derive(Serialize, ToSchema)]
pub struct CreateWebhookEndpointParams {
    /// Where events are POSTed: https:// (or http://), at most 2048 characters.
    pub url: String,
    /// Event types, or `*` for all (see `EventObject.type`).
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct UpdateWebhookEndpointParams {
    pub url: Option<String>,
    pub enabled_events: Option<Vec<String>>,
    pub description: Option<String>,
    /// true stops deliveries; false re-enables an endpoint (also one paywarden disabled).
    pub disabled: Option<bool>,
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
    responses((status = 200, description = "The endpoint, with its secret (shown this once)", body = WebhookEndpointObject), (status = 400, body = ErrorEnvelope)))]
pub fn create_webhook_endpoint() {}

#[utoipa::path(get, path = "/v1/webhook_endpoints", params(ListQuery),
    responses((status = 200, body = ListObject<WebhookEndpointObject>), (status = 400, body = ErrorEnvelope)))]
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

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", params(("id" = String, Path), ("limit" = Option<u32>, Query, description = "1 to 100, default 10")),
    responses((status = 200, description = "The endpoint's deliveries, newest first", body = ListObject<WebhookDeliveryObject>), (status = 404, body = ErrorEnvelope)))]
pub fn list_webhook_deliveries() {}

#[utoipa::path(get, path = "/v1/events", params(ListQuery, ("type" = Option<String>, Query, description = "Only events of this type")),
    responses((status = 200, body = ListObject<EventObject>), (status = 400, body = ErrorEnvelope)))]
pub fn list_events() {}

#[utoipa::path(get, path = "/v1/events/{id}", params(("id" = String, Path)),
    responses((status = 200, body = EventObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_event() {}

#[utoipa::path(post, path = "/v1/payment_methods", request_body(content = CreatePaymentMethodParams, content_type = FORM),
    responses((status = 200, body = PaymentMethodObject), (status = 400, body = ErrorEnvelope), (status = 402, description = "Card refused", body = ErrorEnvelope)))]
pub fn create_payment_method() {}

#[utoipa::path(get, path = "/v1/payment_methods/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PaymentMethodObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_payment_method() {}

#[utoipa::path(get, path = "/v1/payment_methods", params(ListQuery),
    responses((status = 200, body = ListObject<PaymentMethodObject>), (status = 400, body = ErrorEnvelope)))]
pub fn list_payment_methods() {}

#[utoipa::path(post, path = "/v1/payment_intents", request_body(content = CreatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject), (status = 400, body = ErrorEnvelope), (status = 402, description = "Declined; the intent is in requires_payment_method", body = ErrorEnvelope)))]
pub fn create_payment_intent() {}

#[utoipa::path(get, path = "/v1/payment_intents/{id}", params(("id" = String, Path)),
    responses((status = 200, body = PaymentIntentObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}", params(("id" = String, Path)), request_body(content = UpdatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn update_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/confirm", params(("id" = String, Path)), request_body(content = ConfirmPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject), (status = 400, body = ErrorEnvelope), (status = 402, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn confirm_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/capture", params(("id" = String, Path)), request_body(content = CapturePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn capture_payment_intent() {}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/cancel", params(("id" = String, Path)), request_body(content = CancelPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn cancel_payment_intent() {}

#[utoipa::path(get, path = "/v1/payment_intents", params(ListQuery),
    responses((status = 200, body = ListObject<PaymentIntentObject>), (status = 400, body = ErrorEnvelope)))]
pub fn list_payment_intents() {}

#[utoipa::path(get, path = "/v1/charges/{id}", params(("id" = String, Path)),
    responses((status = 200, body = ChargeObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_charge() {}

#[utoipa::path(post, path = "/v1/refunds", request_body(content = CreateRefundParams, content_type = FORM),
    responses((status = 200, body = RefundObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub fn create_refund() {}

#[utoipa::path(get, path = "/v1/refunds/{id}", params(("id" = String, Path)),
    responses((status = 200, body = RefundObject), (status = 404, body = ErrorEnvelope)))]
pub fn retrieve_refund() {}

#[utoipa::path(get, path = "/v1/refunds", params(ListQuery, ("payment_intent" = Option<String>, Query, description = "Only refunds of this PaymentIntent")),
    responses((status = 200, body = ListObject<RefundObject>), (status = 400, body = ErrorEnvelope)))]
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
    (status = 200, description = "The live heap profile from jemalloc's sampler, pprof format (gzipped protobuf, inuse_space in bytes), symbolized; read it with `go tool pprof`", content_type = "application/octet-stream"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "Heap profiling is off in this process (jemalloc started without prof:true)", body = ErrorEnvelope)))]
pub fn pprof_heap() {}

/// Stripe's cursor pagination; newest first.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1 to 100, default 10.
    pub limit: Option<u32>,
    /// An object id: return objects older than it.
    pub starting_after: Option<String>,
    /// An object id: return objects newer than it.
    pub ending_before: Option<String>,
}

#[derive(OpenApi)]
#[openapi(
    info(title = "paywarden", description = "A Stripe-compatible payments API: payment methods, payment intents, charges and refunds. Authenticate with `Authorization: Bearer sk_test_...`; send an `Idempotency-Key` header with every POST."),
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
    DOC.get_or_init(|| ApiDoc::openapi().to_pretty_json().unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}")))
}

pub async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], document())
}

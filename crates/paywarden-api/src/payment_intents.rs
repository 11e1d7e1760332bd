//! PaymentIntents: create (and confirm at once), update, confirm, capture, cancel, retrieve,
//! list. Operations on one intent are serialised by the striped lock in this process and by
//! the intent's version in the store across processes; the state machine is the core's.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use paywarden_acquirer::AuthorizeRequest;
use paywarden_core::payment::{IntentUpdate, NewIntent};
use paywarden_core::{Amount, CancellationReason, CaptureMethod, Charge, Currency, Metadata, PaymentIntent, PaymentMethod};
use paywarden_store::{Merchant, Write, WriteBatch};
use utoipa::ToSchema;

use crate::error::{acquirer_error, state_error};
use crate::expand::{Expand, ExpandPaymentIntent, ExpandPaymentIntents, Kind};
use crate::schema::{currency_param, metadata_param, ErrorEnvelope, FORM};
use crate::params::{FromParams, ListQuery, MetadataPatch, Params};
use crate::payment_methods::PaymentMethodType;
use crate::auth::Caller;
use crate::client_secret;
use crate::pipeline::{with_id, Outcome, ReadOp, WriteOp};
use crate::webhooks::EventSource;
use crate::wire::{self, ListObject, PaymentIntentObject};
use crate::{new_id, ApiError, App, ErrorType};

/// When the funds move: at confirmation (automatic, automatic_async) or on a later capture (manual).
// Documents the values; the parsed value is the core's own type.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethodParam {
    Automatic,
    AutomaticAsync,
    Manual,
}

fn capture_method(p: &mut Params) -> Result<Option<CaptureMethod>, ApiError> {
    Ok(p.one_of("capture_method", &["automatic", "automatic_async", "manual"])?.and_then(|s| CaptureMethod::parse(&s)))
}

/// Only `["card"]`: checked, and nothing else to keep.
fn payment_method_types(p: &mut Params) -> Result<Option<Vec<PaymentMethodType>>, ApiError> {
    match p.list("payment_method_types")? {
        None => Ok(None),
        Some(types) if !types.is_empty() && types.iter().all(|t| t == "card") => Ok(Some(types.iter().map(|_| PaymentMethodType::Card).collect())),
        Some(_) => Err(ApiError::invalid(
            "parameter_invalid",
            "payment_method_types",
            "paywarden accepts only card payments: payment_method_types must be [\"card\"] (only \"card\", at least once).",
        )),
    }
}

/// Accepted and checked for Stripe compatibility; paywarden takes cards only.
// Checked and kept for Stripe compatibility; paywarden takes cards whatever they say.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutomaticPaymentMethodsParams {
    #[schema(nullable = false)]
    pub enabled: Option<bool>,
    #[schema(value_type = Option<AllowRedirects>, nullable = false)]
    pub allow_redirects: Option<String>,
}

impl FromParams for AutomaticPaymentMethodsParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(AutomaticPaymentMethodsParams { enabled: p.bool("enabled")?, allow_redirects: p.one_of("allow_redirects", &["always", "never"])? })
    }
}

// Documents the values; the parsed value is the core's own type.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AllowRedirects {
    Always,
    Never,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentIntentParams {
    /// Positive integer in the currency's smallest unit (1099 = $10.99, 500 = ¥500).
    #[schema(value_type = u64, minimum = 1, maximum = 99_999_999, example = 2000)]
    pub amount: Amount,
    #[schema(value_type = String, schema_with = currency_param)]
    pub currency: Currency,
    /// Default automatic.
    #[schema(value_type = Option<CaptureMethodParam>, nullable = false)]
    pub capture_method: Option<CaptureMethod>,
    /// Confirm at once; needs payment_method (400 without one).
    #[schema(nullable = false)]
    pub confirm: Option<bool>,
    /// `pm_...`, or one of Stripe's test ids such as pm_card_visa; "" is the same as leaving it out.
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false, schema_with = metadata_param)]
    pub metadata: Metadata,
    // Only `card`: checked, nothing else to keep.
    #[allow(dead_code)]
    #[schema(nullable = false, min_items = 1)]
    pub payment_method_types: Option<Vec<PaymentMethodType>>,
    #[allow(dead_code)]
    #[schema(nullable = false)]
    pub automatic_payment_methods: Option<AutomaticPaymentMethodsParams>,
}

impl FromParams for CreatePaymentIntentParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let amount = p.required_amount("amount")?;
        let currency = p.currency("currency")?.ok_or_else(|| ApiError::missing("currency"))?;
        let capture_method = capture_method(p)?;
        let confirm = p.bool("confirm")?;
        let payment_method = p.id("payment_method", "pm_")?;
        let description = p.description()?.filter(|d| !d.is_empty());
        let metadata = p.metadata_new()?;
        let payment_method_types = payment_method_types(p)?;
        let automatic_payment_methods = match p.object("automatic_payment_methods")? {
            None => None,
            Some(mut apm) => {
                let parsed = AutomaticPaymentMethodsParams::from_params(&mut apm)?;
                apm.finish()?;
                Some(parsed)
            }
        };
        if confirm == Some(true) && payment_method.is_none() {
            return Err(ApiError::invalid(
                "parameter_missing",
                "payment_method",
                "You passed confirm=true without a payment_method. Pass payment_method (e.g. pm_card_visa) or leave confirm out and confirm later.",
            ));
        }
        Ok(CreatePaymentIntentParams { amount, currency, capture_method, confirm, payment_method, description, metadata, payment_method_types, automatic_payment_methods })
    }
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdatePaymentIntentParams {
    /// Only before confirmation.
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount: Option<Amount>,
    #[schema(value_type = Option<String>, nullable = false, schema_with = currency_param)]
    pub currency: Option<Currency>,
    #[schema(value_type = Option<CaptureMethodParam>, nullable = false)]
    pub capture_method: Option<CaptureMethod>,
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// "" removes it.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false, schema_with = metadata_param)]
    pub metadata: MetadataPatch,
    // Only `card`: checked, nothing else to keep.
    #[allow(dead_code)]
    #[schema(nullable = false, min_items = 1)]
    pub payment_method_types: Option<Vec<PaymentMethodType>>,
}

impl FromParams for UpdatePaymentIntentParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(UpdatePaymentIntentParams {
            amount: p.amount("amount")?,
            currency: p.currency("currency")?,
            capture_method: capture_method(p)?,
            payment_method: p.id("payment_method", "pm_")?,
            description: p.description()?,
            metadata: p.metadata_patch()?,
            payment_method_types: payment_method_types(p)?,
        })
    }
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfirmPaymentIntentParams {
    /// Needed unless the intent already has one.
    #[schema(nullable = false, pattern = "^(pm_[A-Za-z0-9_]*)?$", max_length = 255, example = "pm_card_visa")]
    pub payment_method: Option<String>,
    /// The intent's client_secret: needed with a publishable key (a browser confirming), checked
    /// with a secret key.
    #[schema(nullable = false, max_length = 255)]
    pub client_secret: Option<String>,
}

impl FromParams for ConfirmPaymentIntentParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(ConfirmPaymentIntentParams { payment_method: p.id("payment_method", "pm_")?, client_secret: p.str("client_secret")? })
    }
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CapturePaymentIntentParams {
    /// At most amount_capturable; the rest is released. Default: all.
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount_to_capture: Option<Amount>,
}

impl FromParams for CapturePaymentIntentParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(CapturePaymentIntentParams { amount_to_capture: p.amount("amount_to_capture")? })
    }
}

// Documents the values; the parsed value is the core's own type.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReasonParam {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
    Abandoned,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelPaymentIntentParams {
    #[schema(value_type = Option<CancellationReasonParam>, nullable = false)]
    pub cancellation_reason: Option<CancellationReason>,
}

impl FromParams for CancelPaymentIntentParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let reason = p.one_of("cancellation_reason", CancellationReason::ALL)?.and_then(|r| CancellationReason::parse(&r));
        Ok(CancelPaymentIntentParams { cancellation_reason: reason })
    }
}

/// `GET /v1/payment_intents`: a page.
pub struct ListPaymentIntentsQuery {
    pub page: ListQuery,
    pub expand: Expand,
}

impl FromParams for ListPaymentIntentsQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(ListPaymentIntentsQuery { page: ListQuery::take(p, "pi_")?, expand: Expand::take(p, Kind::PaymentIntent, true)? })
    }
}

impl App {
    /// A PaymentIntent's client secret ([`client_secret::derive`] under the data dir's key).
    pub(crate) fn client_secret(&self, id: &str) -> String {
        client_secret::derive(&self.cfg.webhook_key, id)
    }

    /// The intent as the API shows it: its wire object with its client secret.
    pub(crate) fn intent_object(&self, pi: &PaymentIntent) -> PaymentIntentObject {
        let mut o = wire::payment_intent(pi);
        o.client_secret = Some(self.client_secret(&pi.id));
        o
    }

    /// A publishable key acts on an intent only with its client secret; a secret key may send
    /// one too, and then it must match. Compared in constant time.
    fn check_client_secret(&self, caller: &Caller, id: &str, given: Option<&str>) -> Result<(), ApiError> {
        let Some(given) = given else {
            return match caller.publishable {
                false => Ok(()),
                true => Err(ApiError::missing("client_secret")),
            };
        };
        if client_secret::matches(&self.cfg.webhook_key, id, given) {
            return Ok(());
        }
        Err(ApiError::invalid(
            "parameter_invalid",
            "client_secret",
            format!("The client_secret provided does not match the client_secret of the PaymentIntent {}; send the client_secret it was created with.", crate::error::truncate(id, 64)),
        ))
    }

    pub(crate) async fn load_intent(&self, m: &Merchant, id: &str) -> Result<PaymentIntent, ApiError> {
        self.store
            .payment_intent(&m.id, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("payment_intent", id, None))
    }

    pub(crate) async fn load_latest_charge(&self, m: &Merchant, pi: &PaymentIntent) -> Result<Option<Charge>, ApiError> {
        match &pi.latest_charge {
            None => Ok(None),
            Some(id) => self.store.charge(&m.id, id).await.map_err(ApiError::internal),
        }
    }

    /// The charge of an authorized or succeeded intent, which always has one.
    pub(crate) async fn latest_charge_of_settled(&self, m: &Merchant, pi: &PaymentIntent) -> Result<Charge, ApiError> {
        self.load_latest_charge(m, pi)
            .await?
            .ok_or_else(|| ApiError::internal(format!("{} is {} but its charge is missing", pi.id, pi.status.as_str())))
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
        let object = self.intent_object(&confirmed.intent);
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
}

struct Create;

#[async_trait::async_trait]
impl WriteOp for Create {
    type Params = CreatePaymentIntentParams;
    const PAYMENT: bool = true;

    async fn run(&self, app: &App, m: &Caller, p: CreatePaymentIntentParams, now: i64) -> Result<Outcome, ApiError> {
        let mut batch = WriteBatch::new();
        let pm = match &p.payment_method {
            Some(id) => Some(app.resolve_payment_method(m, id, now, &mut batch).await?),
            None => None,
        };
        let intent = PaymentIntent::new(NewIntent {
            id: new_id("pi"),
            merchant: m.id.clone(),
            amount: p.amount,
            currency: p.currency,
            capture_method: p.capture_method.unwrap_or(CaptureMethod::Automatic),
            payment_method: pm.as_ref().map(|pm| pm.id.clone()),
            description: p.description,
            metadata: p.metadata,
            created: now,
        });
        match (p.confirm.unwrap_or(false), pm) {
            (true, Some(pm)) => app.authorize(intent, &pm, now, batch, true).await,
            _ => {
                batch.push(Write::InsertIntent(intent.clone()));
                Ok(Outcome::ok(&app.intent_object(&intent), batch))
            }
        }
    }
}

#[utoipa::path(post, path = "/v1/payment_intents", operation_id = "create_payment_intent", request_body(content = CreatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("UpdateIntent" = (operation_id = "update_payment_intent", parameters(("id" = "$response.body#/id")))), ("ConfirmIntent" = (operation_id = "confirm_payment_intent", parameters(("id" = "$response.body#/id")), request_body = json!({"payment_method": "pm_card_visa"}))), ("CaptureIntent" = (operation_id = "capture_payment_intent", parameters(("id" = "$response.body#/id")))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))), ("ListIntentRefunds" = (operation_id = "list_refunds", parameters(("payment_intent" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Declined; the intent is in requires_payment_method", body = ErrorEnvelope)))]
pub(crate) async fn create(State(app): State<Arc<App>>, req: Request) -> Response {
    app.post(Create, req).await
}

struct Update(String);

#[async_trait::async_trait]
impl WriteOp for Update {
    type Params = UpdatePaymentIntentParams;
    const PAYMENT: bool = true;

    async fn run(&self, app: &App, m: &Caller, p: UpdatePaymentIntentParams, now: i64) -> Result<Outcome, ApiError> {
        let _lock = app.lock_for(&self.0).lock().await;
        let pi = app.load_intent(m, &self.0).await?;
        let metadata = p.metadata.pairs(&pi.metadata);
        let mut batch = WriteBatch::new();
        let payment_method = match p.payment_method {
            Some(pm) => Some(app.resolve_payment_method(m, &pm, now, &mut batch).await?.id),
            None => None,
        };
        let update = IntentUpdate { amount: p.amount, currency: p.currency, capture_method: p.capture_method, payment_method, description: p.description, metadata };
        let next = pi.update(update).map_err(state_error)?;
        batch.push(Write::UpdateIntent(next.clone()));
        Ok(Outcome::ok(&app.intent_object(&next), batch))
    }
}

#[utoipa::path(post, path = "/v1/payment_intents/{id}", operation_id = "update_payment_intent", params(("id" = String, Path)), request_body(content = UpdatePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("ConfirmIntent" = (operation_id = "confirm_payment_intent", parameters(("id" = "$response.body#/id")), request_body = json!({"payment_method": "pm_card_visa"}))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.post(Update(id), req)).await
}

struct Confirm(String);

#[async_trait::async_trait]
impl WriteOp for Confirm {
    type Params = ConfirmPaymentIntentParams;
    const PAYMENT: bool = true;
    const EVENTS: EventSource = EventSource::IntentChange;
    const PUBLISHABLE: bool = true;

    async fn run(&self, app: &App, m: &Caller, p: ConfirmPaymentIntentParams, now: i64) -> Result<Outcome, ApiError> {
        app.check_client_secret(m, &self.0, p.client_secret.as_deref())?;
        let _lock = app.lock_for(&self.0).lock().await;
        let pi = app.load_intent(m, &self.0).await?;
        let target = pi.confirm_target(p.payment_method.as_deref()).map_err(state_error)?.to_string();
        let mut batch = WriteBatch::new();
        let pm = app.resolve_payment_method(m, &target, now, &mut batch).await?;
        app.authorize(pi, &pm, now, batch, false).await
    }
}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/confirm", operation_id = "confirm_payment_intent", params(("id" = String, Path)), request_body(content = ConfirmPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("CaptureIntent" = (operation_id = "capture_payment_intent", parameters(("id" = "$response.body#/id")))), ("CancelIntent" = (operation_id = "cancel_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Declined; the intent is back in requires_payment_method", body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn confirm(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.post(Confirm(id), req)).await
}

struct Capture(String);

#[async_trait::async_trait]
impl WriteOp for Capture {
    type Params = CapturePaymentIntentParams;
    const PAYMENT: bool = true;
    const EVENTS: EventSource = EventSource::IntentChange;

    async fn run(&self, app: &App, m: &Caller, p: CapturePaymentIntentParams, now: i64) -> Result<Outcome, ApiError> {
        let _lock = app.lock_for(&self.0).lock().await;
        let pi = app.load_intent(m, &self.0).await?;
        pi.can_capture().map_err(state_error)?;
        let charge = app.latest_charge_of_settled(m, &pi).await?;
        let (next, charge, postings) = pi.capture(p.amount_to_capture, &charge, now).map_err(state_error)?;
        let auth = charge.authorization.clone().unwrap_or_default();
        app.acquirer.capture(&auth, charge.amount_captured, pi.currency).await.map_err(acquirer_error)?;
        let mut batch = WriteBatch::new();
        batch.push(Write::UpdateIntent(next.clone())).push(Write::Charge(charge)).push(Write::Postings(postings));
        Ok(Outcome::ok(&app.intent_object(&next), batch))
    }
}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/capture", operation_id = "capture_payment_intent", params(("id" = String, Path)), request_body(content = CapturePaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))), ("RetrieveLatestCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/latest_charge")))), ("ListIntentRefunds" = (operation_id = "list_refunds", parameters(("payment_intent" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn capture(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.post(Capture(id), req)).await
}

struct Cancel(String);

#[async_trait::async_trait]
impl WriteOp for Cancel {
    type Params = CancelPaymentIntentParams;
    const PAYMENT: bool = true;
    const EVENTS: EventSource = EventSource::IntentChange;

    async fn run(&self, app: &App, m: &Caller, p: CancelPaymentIntentParams, now: i64) -> Result<Outcome, ApiError> {
        let _lock = app.lock_for(&self.0).lock().await;
        let pi = app.load_intent(m, &self.0).await?;
        let charge = app.load_latest_charge(m, &pi).await?;
        let (next, released, postings) = pi.cancel(p.cancellation_reason, charge.as_ref(), now).map_err(state_error)?;
        let mut batch = WriteBatch::new();
        if let Some(c) = released {
            app.acquirer.void(c.authorization.as_deref().unwrap_or_default()).await.map_err(acquirer_error)?;
            batch.push(Write::Charge(c));
        }
        batch.push(Write::UpdateIntent(next.clone()));
        if !postings.is_empty() {
            batch.push(Write::Postings(postings));
        }
        Ok(Outcome::ok(&app.intent_object(&next), batch))
    }
}

#[utoipa::path(post, path = "/v1/payment_intents/{id}/cancel", operation_id = "cancel_payment_intent", params(("id" = String, Path)), request_body(content = CancelPaymentIntentParams, content_type = FORM),
    responses((status = 200, body = PaymentIntentObject, links(("RetrieveIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/id")))), ("RefundIntent" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/id"}))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn cancel(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.post(Cancel(id), req)).await
}

/// `GET /v1/payment_intents/{id}`: with a publishable key, the intent's client secret.
pub struct RetrievePaymentIntentQuery {
    pub client_secret: Option<String>,
    pub expand: Expand,
}

impl FromParams for RetrievePaymentIntentQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(RetrievePaymentIntentQuery { client_secret: p.str("client_secret")?, expand: Expand::take(p, Kind::PaymentIntent, false)? })
    }
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = RetrievePaymentIntentQuery;
    const PUBLISHABLE: bool = true;

    async fn run(&self, app: &App, m: &Caller, q: RetrievePaymentIntentQuery, _: &str) -> Result<Vec<u8>, ApiError> {
        app.check_client_secret(m, &self.0, q.client_secret.as_deref())?;
        let object = app.intent_object(&app.load_intent(m, &self.0).await?);
        q.expand.render(app, m, Kind::PaymentIntent, &object).await
    }
}

#[utoipa::path(get, path = "/v1/payment_intents/{id}", operation_id = "retrieve_payment_intent", params(("id" = String, Path), ExpandPaymentIntent, ("client_secret" = Option<String>, Query, nullable = false, max_length = 255, description = "The intent's client_secret: needed with a publishable key, checked with a secret key")),
    responses((status = 200, body = PaymentIntentObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

struct List;

#[async_trait::async_trait]
impl ReadOp for List {
    type Query = ListPaymentIntentsQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListPaymentIntentsQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.list_payment_intents(&m.id, &q.page.page()).await.map_err(q.page.map_error())?;
        let list = ListObject { object: "list", data: r.data.iter().map(|pi| app.intent_object(pi)).collect(), has_more: r.has_more, url: path.to_string() };
        q.expand.render_list(app, m, Kind::PaymentIntent, &list).await
    }
}

#[utoipa::path(get, path = "/v1/payment_intents", operation_id = "list_payment_intents", params(ListQuery, ExpandPaymentIntents),
    responses((status = 200, body = ListObject<PaymentIntentObject>, links(("RetrieveNewestIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    app.get(List, req).await
}

//! PaymentMethods: a card tokenized by the acquirer (the number leaves with the request; the
//! stored object keeps brand, last 4, expiry and the acquirer's token), retrieve and list.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use paywarden_acquirer::{CardInput, Tokenized};
use paywarden_core::{Metadata, PaymentMethod};
use paywarden_store::{Merchant, Write, WriteBatch};
use utoipa::ToSchema;

use crate::error::card_error;
use crate::schema::{metadata_param, ErrorEnvelope, FORM};
use crate::params::{FromParams, ListQuery, NoParams, Params};
use crate::auth::Caller;
use crate::pipeline::{json, with_id, Outcome, ReadOp, WriteOp};
use crate::wire::{self, ListObject, PaymentMethodObject};
use crate::{new_id, ApiError, App};

// Request parameters. Every optional field is `nullable = false`: a form cannot send a null,
// and an absent field is what "not given" means. The bounds are the ones the parsers enforce
// (crate::params, paywarden_core), so a request the schema allows is never refused for its
// shape, and one it forbids is always refused with a 4xx.

// Never `Debug`: it holds the number and the CVC until the acquirer has them.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CardParams {
    /// The card number (12 to 19 digits; spaces and dashes between them are ignored); sent
    /// to the acquirer and never stored. Stripe's test numbers work, e.g. 4242424242424242.
    #[schema(min_length = 1, max_length = 64, example = "4242424242424242")]
    pub number: String,
    /// 1 to 12.
    #[schema(value_type = u8, minimum = 1, maximum = 12, example = 12)]
    pub exp_month: String,
    /// Four digits, or two (34 is 2034); a past month is refused (402 expired_card).
    #[schema(value_type = u16, minimum = 0, maximum = 9999, example = 2034)]
    pub exp_year: String,
    /// 3 or 4 digits. Never stored.
    #[schema(nullable = false, pattern = "^[0-9]{3,4}$", example = "123")]
    pub cvc: Option<String>,
}

impl FromParams for CardParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(CardParams { number: p.required_str("number")?, exp_month: p.required_str("exp_month")?, exp_year: p.required_str("exp_year")?, cvc: p.str("cvc")? })
    }
}

/// Only `card`.
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PaymentMethodType {
    Card,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreatePaymentMethodParams {
    #[allow(dead_code)]
    #[serde(rename = "type")]
    pub kind: PaymentMethodType,
    pub card: CardParams,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false, schema_with = metadata_param)]
    pub metadata: Metadata,
}

impl FromParams for CreatePaymentMethodParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        p.one_of("type", &["card"])?.ok_or_else(|| ApiError::missing("type"))?;
        let mut card = p.object("card")?.ok_or_else(|| ApiError::missing("card"))?;
        let parsed = CardParams::from_params(&mut card)?;
        card.finish()?;
        Ok(CreatePaymentMethodParams { kind: PaymentMethodType::Card, card: parsed, metadata: p.metadata_new()? })
    }
}

/// `GET /v1/payment_methods`: a page, and `type` (only `card`).
pub struct ListPaymentMethodsQuery {
    pub page: ListQuery,
}

impl FromParams for ListPaymentMethodsQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        p.one_of("type", &["card"])?;
        Ok(ListPaymentMethodsQuery { page: ListQuery::take(p, "pm_")? })
    }
}

pub(crate) fn payment_method_from(m: &Merchant, t: Tokenized, metadata: Metadata, now: i64) -> PaymentMethod {
    PaymentMethod { id: new_id("pm"), merchant: m.id.clone(), card: t.summary, acquirer_token: t.token, metadata, created: now }
}

impl App {
    /// A stored payment method, or one of Stripe's test ids made into a new one.
    pub(crate) async fn resolve_payment_method(&self, m: &Merchant, id: &str, now: i64, batch: &mut WriteBatch) -> Result<PaymentMethod, ApiError> {
        if let Some(t) = self.acquirer.test_payment_method(id, now).await {
            let pm = payment_method_from(m, t, Metadata::default(), now);
            batch.push(Write::PaymentMethod(pm.clone()));
            return Ok(pm);
        }
        self.store
            .payment_method(&m.id, id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("PaymentMethod", id, Some("payment_method")))
    }
}

struct Create;

#[async_trait::async_trait]
impl WriteOp for Create {
    type Params = CreatePaymentMethodParams;
    const PUBLISHABLE: bool = true;

    async fn run(&self, app: &App, m: &Caller, p: CreatePaymentMethodParams, now: i64) -> Result<Outcome, ApiError> {
        let CardParams { number, exp_month, exp_year, cvc } = p.card;
        let input = CardInput::parse(&number, &exp_month, &exp_year, cvc.as_deref()).map_err(card_error)?;
        drop((number, cvc));
        let tokenized = app.acquirer.tokenize(input, now).await.map_err(card_error)?;
        let pm = payment_method_from(m, tokenized, p.metadata, now);
        let mut batch = WriteBatch::new();
        batch.push(Write::PaymentMethod(pm.clone()));
        Ok(Outcome::ok(&wire::payment_method(&pm), batch))
    }
}

#[utoipa::path(post, path = "/v1/payment_methods", operation_id = "create_payment_method", request_body(content = CreatePaymentMethodParams, content_type = FORM),
    responses((status = 200, body = PaymentMethodObject, links(("RetrievePaymentMethod" = (operation_id = "retrieve_payment_method", parameters(("id" = "$response.body#/id")))), ("PayWithPaymentMethod" = (operation_id = "create_payment_intent", request_body = json!({"payment_method": "$response.body#/id", "confirm": true}))), ("AuthorizeWithPaymentMethod" = (operation_id = "create_payment_intent", request_body = json!({"payment_method": "$response.body#/id", "confirm": true, "capture_method": "manual"}))))), (status = 400, body = ErrorEnvelope), (status = 402, description = "Card refused", body = ErrorEnvelope)))]
pub(crate) async fn create(State(app): State<Arc<App>>, req: Request) -> Response {
    app.post(Create, req).await
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = NoParams;

    async fn run(&self, app: &App, m: &Caller, _: NoParams, _: &str) -> Result<Vec<u8>, ApiError> {
        let pm = app.store.payment_method(&m.id, &self.0).await.map_err(ApiError::internal)?;
        Ok(json(&wire::payment_method(&pm.ok_or_else(|| ApiError::no_such("PaymentMethod", &self.0, None))?)))
    }
}

#[utoipa::path(get, path = "/v1/payment_methods/{id}", operation_id = "retrieve_payment_method", params(("id" = String, Path)),
    responses((status = 200, body = PaymentMethodObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

struct List;

#[async_trait::async_trait]
impl ReadOp for List {
    type Query = ListPaymentMethodsQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListPaymentMethodsQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.list_payment_methods(&m.id, &q.page.page()).await.map_err(q.page.map_error())?;
        Ok(json(&ListObject { object: "list", data: r.data.iter().map(wire::payment_method).collect(), has_more: r.has_more, url: path.to_string() }))
    }
}

#[utoipa::path(get, path = "/v1/payment_methods", operation_id = "list_payment_methods", params(ListQuery, ("type" = Option<String>, Query, nullable = false, pattern = "^card$", description = "Only card, the one type paywarden has")),
    responses((status = 200, body = ListObject<PaymentMethodObject>, links(("RetrieveNewestPaymentMethod" = (operation_id = "retrieve_payment_method", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    app.get(List, req).await
}

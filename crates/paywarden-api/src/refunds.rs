//! Refunds of a succeeded PaymentIntent's charge (all or part, several up to the captured
//! amount), retrieve and list.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use paywarden_core::{Amount, Metadata};
use paywarden_store::{Write, WriteBatch};
use utoipa::ToSchema;

use crate::error::{acquirer_error, state_error};
use crate::schema::{metadata_param, ErrorEnvelope, FORM};
use crate::expand::{Expand, ExpandRefund, ExpandRefunds, Kind};
use crate::params::{FromParams, ListQuery, Params};
use crate::auth::Caller;
use crate::pipeline::{with_id, Outcome, ReadOp, WriteOp};
use crate::webhooks::EventSource;
use crate::wire::{self, ListObject, RefundObject};
use crate::{new_id, ApiError, App};

// Documents the values; the parsed value is the core's own type.
#[allow(dead_code)]
#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RefundReasonParam {
    Duplicate,
    Fraudulent,
    RequestedByCustomer,
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRefundParams {
    /// `pi_...` (or pass charge); one of the two is needed.
    #[schema(nullable = false, pattern = "^(pi_[A-Za-z0-9_]*)?$", max_length = 255)]
    pub payment_intent: Option<String>,
    /// `ch_...` (or pass payment_intent).
    #[schema(nullable = false, pattern = "^(ch_[A-Za-z0-9_]*)?$", max_length = 255)]
    pub charge: Option<String>,
    /// Default: everything not yet refunded.
    #[schema(value_type = Option<u64>, nullable = false, minimum = 1, maximum = 99_999_999)]
    pub amount: Option<Amount>,
    #[schema(value_type = Option<RefundReasonParam>, nullable = false)]
    pub reason: Option<String>,
    #[schema(value_type = Option<std::collections::BTreeMap<String, String>>, nullable = false, schema_with = metadata_param)]
    pub metadata: Metadata,
}

impl FromParams for CreateRefundParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let payment_intent = p.id("payment_intent", "pi_")?;
        let charge = p.id("charge", "ch_")?;
        let amount = p.amount("amount")?;
        let reason = p.one_of("reason", paywarden_core::Refund::REASONS)?;
        let metadata = p.metadata_new()?;
        match (&payment_intent, &charge) {
            (None, None) => Err(ApiError::invalid("parameter_missing", "payment_intent", "Missing required param: payment_intent (or charge).")),
            (Some(_), Some(_)) => Err(ApiError::invalid("parameter_invalid", "charge", "Pass payment_intent or charge, not both.")),
            _ => Ok(CreateRefundParams { payment_intent, charge, amount, reason, metadata }),
        }
    }
}

/// `GET /v1/refunds`: a page, and optionally one PaymentIntent's refunds only.
pub struct ListRefundsQuery {
    pub page: ListQuery,
    pub payment_intent: Option<String>,
    pub expand: Expand,
}

impl FromParams for ListRefundsQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let payment_intent = p.id("payment_intent", "pi_")?;
        Ok(ListRefundsQuery { page: ListQuery::take(p, "re_")?, payment_intent, expand: Expand::take(p, Kind::Refund, true)? })
    }
}

/// `GET /v1/refunds/{id}`: what to expand.
pub struct RetrieveRefundQuery {
    pub expand: Expand,
}

impl FromParams for RetrieveRefundQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(RetrieveRefundQuery { expand: Expand::take(p, Kind::Refund, false)? })
    }
}

struct Create;

#[async_trait::async_trait]
impl WriteOp for Create {
    type Params = CreateRefundParams;
    const EVENTS: EventSource = EventSource::Refund;

    async fn run(&self, app: &App, m: &Caller, p: CreateRefundParams, now: i64) -> Result<Outcome, ApiError> {
        let named_charge = p.charge.clone();
        let pi_id = match (p.payment_intent, p.charge) {
            (Some(pi), _) => pi,
            (None, Some(ch)) => {
                app.store
                    .charge(&m.id, &ch)
                    .await
                    .map_err(ApiError::internal)?
                    .ok_or_else(|| ApiError::no_such("charge", &ch, Some("charge")))?
                    .payment_intent
            }
            (None, None) => return Err(ApiError::missing("payment_intent")),
        };
        let _lock = app.lock_for(&pi_id).lock().await;
        let pi = app
            .store
            .payment_intent(&m.id, &pi_id)
            .await
            .map_err(ApiError::internal)?
            .ok_or_else(|| ApiError::no_such("payment_intent", &pi_id, Some("payment_intent")))?;
        // Only the intent's latest charge can have succeeded; an earlier attempt failed and
        // has nothing to refund (refunding the latest one instead would not be what was asked).
        if let Some(ch) = named_charge.filter(|ch| pi.latest_charge.as_deref() != Some(ch.as_str())) {
            return Err(ApiError::invalid(
                "charge_not_refundable",
                "charge",
                format!("Charge {ch} is a failed attempt with nothing to refund; refund payment_intent={pi_id} (its latest charge) instead."),
            ));
        }
        pi.can_refund().map_err(state_error)?;
        let charge = app.latest_charge_of_settled(m, &pi).await?;
        let (next, charge, refund, posting) = pi.refund(&charge, p.amount, new_id("re"), p.reason, p.metadata, now).map_err(state_error)?;
        let auth = charge.authorization.clone().unwrap_or_default();
        app.acquirer.refund(&auth, refund.amount, pi.currency).await.map_err(acquirer_error)?;
        let object = wire::refund(&refund);
        let mut batch = WriteBatch::new();
        batch
            .push(Write::UpdateIntent(next))
            .push(Write::Charge(charge))
            .push(Write::InsertRefund(refund))
            .push(Write::Postings(vec![posting]));
        Ok(Outcome::ok(&object, batch))
    }
}

#[utoipa::path(post, path = "/v1/refunds", operation_id = "create_refund", request_body(content = CreateRefundParams, content_type = FORM),
    responses((status = 200, body = RefundObject, links(("RetrieveRefund" = (operation_id = "retrieve_refund", parameters(("id" = "$response.body#/id")))), ("RetrieveRefundedIntent" = (operation_id = "retrieve_payment_intent", parameters(("id" = "$response.body#/payment_intent")))), ("RetrieveRefundedCharge" = (operation_id = "retrieve_charge", parameters(("id" = "$response.body#/charge")))), ("RefundAgain" = (operation_id = "create_refund", request_body = json!({"payment_intent": "$response.body#/payment_intent"}))))), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn create(State(app): State<Arc<App>>, req: Request) -> Response {
    app.post(Create, req).await
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = RetrieveRefundQuery;

    async fn run(&self, app: &App, m: &Caller, q: RetrieveRefundQuery, _: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.refund(&m.id, &self.0).await.map_err(ApiError::internal)?;
        let object = wire::refund(&r.ok_or_else(|| ApiError::no_such("refund", &self.0, None))?);
        q.expand.render(app, m, Kind::Refund, &object).await
    }
}

#[utoipa::path(get, path = "/v1/refunds/{id}", operation_id = "retrieve_refund", params(("id" = String, Path), ExpandRefund),
    responses((status = 200, body = RefundObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

struct List;

#[async_trait::async_trait]
impl ReadOp for List {
    type Query = ListRefundsQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListRefundsQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.list_refunds(&m.id, q.payment_intent.as_deref(), &q.page.page()).await.map_err(q.page.map_error())?;
        let list = ListObject { object: "list", data: r.data.iter().map(wire::refund).collect(), has_more: r.has_more, url: path.to_string() };
        q.expand.render_list(app, m, Kind::Refund, &list).await
    }
}

#[utoipa::path(get, path = "/v1/refunds", operation_id = "list_refunds", params(ListQuery, ExpandRefunds, ("payment_intent" = Option<String>, Query, nullable = false, pattern = "^(pi_[A-Za-z0-9_]*)?$", max_length = 255, description = "Only refunds of this PaymentIntent")),
    responses((status = 200, body = ListObject<RefundObject>, links(("RetrieveNewestRefund" = (operation_id = "retrieve_refund", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    app.get(List, req).await
}

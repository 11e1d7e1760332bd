//! Events: what changed, as Stripe's event objects (retrieve, with each endpoint's delivery
//! attempts; list, by type). They are written with the change that makes them
//! ([`crate::webhooks::records`]) and delivered by [`crate::webhooks`].

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;
use serde::Serialize;
use utoipa::ToSchema;

use crate::schema::ErrorEnvelope;
use crate::params::{FromParams, ListQuery, NoParams, Params};
use crate::auth::Caller;
use crate::pipeline::{json, with_id, ReadOp};
use crate::webhook_endpoints::WebhookDeliveryObject;
use crate::wire::ListObject;
use crate::{webhooks, ApiError, App};

/// Delivery attempts shown on a retrieved event at most.
pub const ATTEMPTS_SHOWN_MAX: u32 = 100;

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

/// `GET /v1/events`: a page, and optionally one type only.
pub struct ListEventsQuery {
    pub page: ListQuery,
    pub kind: Option<String>,
}

impl FromParams for ListEventsQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let kind = p.one_of("type", webhooks::EVENT_TYPES)?;
        Ok(ListEventsQuery { page: ListQuery::take(p, "evt_")?, kind })
    }
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = NoParams;

    async fn run(&self, app: &App, m: &Caller, _: NoParams, _: &str) -> Result<Vec<u8>, ApiError> {
        let id = &self.0;
        let e = app.store.event(&m.id, id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("event", id, None))?;
        let attempts = app.store.deliveries(&m.id, Some(id), None, ATTEMPTS_SHOWN_MAX).await.map_err(ApiError::internal)?;
        let pending = app.store.pending_webhooks(&m.id, id).await.map_err(ApiError::internal)?;
        let mut v: serde_json::Value = serde_json::from_str(&e.json).map_err(ApiError::internal)?;
        v["pending_webhooks"] = serde_json::json!(pending);
        v["delivery_attempts"] = serde_json::json!(attempts.iter().map(webhooks::delivery_object).collect::<Vec<_>>());
        Ok(json(&v))
    }
}

#[utoipa::path(get, path = "/v1/events/{id}", operation_id = "retrieve_event", params(("id" = String, Path)),
    responses((status = 200, body = EventObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

struct List;

#[async_trait::async_trait]
impl ReadOp for List {
    type Query = ListEventsQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListEventsQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.list_events(&m.id, q.kind.as_deref(), &q.page.page()).await.map_err(q.page.map_error())?;
        let data: Vec<serde_json::Value> = r.data.iter().filter_map(|e| serde_json::from_str(&e.json).ok()).collect();
        Ok(json(&serde_json::json!({"object": "list", "data": data, "has_more": r.has_more, "url": path})))
    }
}

#[utoipa::path(get, path = "/v1/events", operation_id = "list_events", params(ListQuery, ("type" = Option<String>, Query, nullable = false, description = "Only events of this type")),
    responses((status = 200, body = ListObject<EventObject>, links(("RetrieveNewestEvent" = (operation_id = "retrieve_event", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    app.get(List, req).await
}

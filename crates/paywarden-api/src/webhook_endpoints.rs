//! Webhook endpoints: where a merchant's events are delivered (create, update, delete,
//! retrieve, list) and each endpoint's deliveries. The delivery itself is
//! [`crate::webhooks`].

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use paywarden_store::{EndpointStatus, Merchant, Page, WebhookEndpointRecord, Write, WriteBatch};
use serde::Serialize;
use utoipa::ToSchema;

use crate::schema::{enabled_events_param, ErrorEnvelope, FORM};
use crate::params::{parse, FromParams, ListQuery, NoParams, Params};
use crate::auth::Caller;
use crate::pipeline::{json, respond, with_id, Outcome, ReadOp, WriteOp};
use crate::wire::ListObject;
use crate::{new_id, webhooks, ApiError, App};

/// Deliveries listed per endpoint at most.
pub const DELIVERIES_LIMIT_MAX: i64 = 100;

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

fn checked_url(url: String) -> Result<String, ApiError> {
    webhooks::check_url(&url).map_err(|why| ApiError::invalid("url_invalid", "url", format!("Invalid url: {why}.")))?;
    Ok(url)
}

fn events_param(p: &mut Params) -> Result<Option<Vec<String>>, ApiError> {
    match p.list("enabled_events")? {
        None => Ok(None),
        Some(e) => webhooks::check_events(&e).map(Some).map_err(|why| ApiError::invalid("parameter_invalid", "enabled_events", why)),
    }
}

#[derive(ToSchema)]
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

impl FromParams for CreateWebhookEndpointParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        let url = checked_url(p.required_str("url")?)?;
        let enabled_events = events_param(p)?.ok_or_else(|| ApiError::missing("enabled_events"))?;
        let description = p.description()?.filter(|d| !d.is_empty());
        Ok(CreateWebhookEndpointParams { url, enabled_events, description })
    }
}

#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhookEndpointParams {
    #[schema(nullable = false, min_length = 1, max_length = 2048)]
    pub url: Option<String>,
    #[schema(nullable = false, schema_with = enabled_events_param)]
    pub enabled_events: Option<Vec<String>>,
    /// "" removes it.
    #[schema(nullable = false, max_length = 1000)]
    pub description: Option<String>,
    /// true stops deliveries; false re-enables an endpoint (also one paywarden disabled).
    #[schema(nullable = false)]
    pub disabled: Option<bool>,
}

impl FromParams for UpdateWebhookEndpointParams {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(UpdateWebhookEndpointParams {
            url: p.str("url")?.map(checked_url).transpose()?,
            enabled_events: events_param(p)?,
            description: p.description()?,
            disabled: p.bool("disabled")?,
        })
    }
}

/// `GET /v1/webhook_endpoints`: a page.
pub struct ListWebhookEndpointsQuery {
    pub page: ListQuery,
}

impl FromParams for ListWebhookEndpointsQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(ListWebhookEndpointsQuery { page: ListQuery::take(p, "we_")? })
    }
}

/// `GET /v1/webhook_endpoints/{id}/deliveries`: the newest `limit`.
pub struct ListDeliveriesQuery {
    pub limit: u32,
}

impl FromParams for ListDeliveriesQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(ListDeliveriesQuery { limit: p.integer("limit", 1, DELIVERIES_LIMIT_MAX)?.map_or(ListQuery::LIMIT_DEFAULT, |l| l as u32) })
    }
}

impl App {
    async fn load_endpoint(&self, m: &Merchant, id: &str) -> Result<WebhookEndpointRecord, ApiError> {
        self.store.webhook_endpoint(&m.id, id).await.map_err(ApiError::internal)?.ok_or_else(|| ApiError::no_such("webhook_endpoint", id, None))
    }
}

struct Create;

#[async_trait::async_trait]
impl WriteOp for Create {
    type Params = CreateWebhookEndpointParams;
    const SECRET_IN_RESPONSE: bool = true;

    async fn run(&self, app: &App, m: &Caller, p: CreateWebhookEndpointParams, now: i64) -> Result<Outcome, ApiError> {
        let existing = app.store.list_webhook_endpoints(&m.id, &Page { limit: 100, starting_after: None, ending_before: None }).await.map_err(ApiError::internal)?;
        if existing.data.len() >= webhooks::ENDPOINTS_PER_MERCHANT_MAX {
            return Err(ApiError::invalid(
                "webhook_endpoints_limit",
                "url",
                format!("An account has at most {} webhook endpoints; delete one first.", webhooks::ENDPOINTS_PER_MERCHANT_MAX),
            ));
        }
        let ep = WebhookEndpointRecord {
            id: new_id("we"),
            merchant: m.id.clone(),
            url: p.url,
            enabled_events: p.enabled_events,
            description: p.description,
            status: EndpointStatus::Enabled,
            disabled_reason: None,
            failing_since_ms: None,
            created: now,
        };
        let secret = webhooks::endpoint_secret(&app.cfg.webhook_key, &ep.id);
        let object = webhooks::endpoint_object(&ep, Some(secret));
        let mut batch = WriteBatch::new();
        batch.push(Write::WebhookEndpoint(ep));
        Ok(Outcome::ok(&object, batch))
    }
}

#[utoipa::path(post, path = "/v1/webhook_endpoints", operation_id = "create_webhook_endpoint", request_body(content = CreateWebhookEndpointParams, content_type = FORM),
    responses((status = 200, description = "The endpoint, with its secret (shown this once)", body = WebhookEndpointObject, links(("RetrieveEndpoint" = (operation_id = "retrieve_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("UpdateEndpoint" = (operation_id = "update_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("DeleteEndpoint" = (operation_id = "delete_webhook_endpoint", parameters(("id" = "$response.body#/id")))), ("ListEndpointDeliveries" = (operation_id = "list_webhook_deliveries", parameters(("id" = "$response.body#/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn create(State(app): State<Arc<App>>, req: Request) -> Response {
    app.post(Create, req).await
}

struct Update(String);

#[async_trait::async_trait]
impl WriteOp for Update {
    type Params = UpdateWebhookEndpointParams;

    async fn run(&self, app: &App, m: &Caller, p: UpdateWebhookEndpointParams, _now: i64) -> Result<Outcome, ApiError> {
        let mut ep = app.load_endpoint(m, &self.0).await?;
        if let Some(url) = p.url {
            ep.url = url;
        }
        if let Some(events) = p.enabled_events {
            ep.enabled_events = events;
        }
        if p.description.is_some() {
            ep.description = p.description.filter(|d| !d.is_empty());
        }
        match p.disabled {
            Some(true) => {
                ep.status = EndpointStatus::Disabled;
                ep.disabled_reason = Some("disabled through the API".into());
            }
            Some(false) => {
                ep.status = EndpointStatus::Enabled;
                ep.disabled_reason = None;
                ep.failing_since_ms = None;
            }
            None => {}
        }
        let object = webhooks::endpoint_object(&ep, None);
        let mut batch = WriteBatch::new();
        batch.push(Write::WebhookEndpoint(ep));
        Ok(Outcome::ok(&object, batch))
    }
}

#[utoipa::path(post, path = "/v1/webhook_endpoints/{id}", operation_id = "update_webhook_endpoint", params(("id" = String, Path)), request_body(content = UpdateWebhookEndpointParams, content_type = FORM),
    responses((status = 200, body = WebhookEndpointObject), (status = 400, body = ErrorEnvelope), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn update(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.post(Update(id), req)).await
}

#[utoipa::path(delete, path = "/v1/webhook_endpoints/{id}", operation_id = "delete_webhook_endpoint", params(("id" = String, Path)),
    responses((status = 200, body = DeletedObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn delete(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| async move {
        let run = async {
            let (parts, _) = req.into_parts();
            let m = app.authenticate(&parts.headers, false).await?;
            parse::<NoParams>(Params::from_form(parts.uri.query().unwrap_or_default().as_bytes())?)?;
            app.load_endpoint(&m, &id).await?;
            let mut batch = WriteBatch::new();
            batch.push(Write::DeleteWebhookEndpoint { merchant: m.id.clone(), id: id.clone() });
            app.write_alone(batch).await?;
            Ok::<_, ApiError>(respond(StatusCode::OK, json(&DeletedObject { id: id.clone(), object: "webhook_endpoint".into(), deleted: true }), false))
        };
        run.await.unwrap_or_else(IntoResponse::into_response)
    })
    .await
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = NoParams;

    async fn run(&self, app: &App, m: &Caller, _: NoParams, _: &str) -> Result<Vec<u8>, ApiError> {
        Ok(json(&webhooks::endpoint_object(&app.load_endpoint(m, &self.0).await?, None)))
    }
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}", operation_id = "retrieve_webhook_endpoint", params(("id" = String, Path)),
    responses((status = 200, body = WebhookEndpointObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

struct List;

#[async_trait::async_trait]
impl ReadOp for List {
    type Query = ListWebhookEndpointsQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListWebhookEndpointsQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        let r = app.store.list_webhook_endpoints(&m.id, &q.page.page()).await.map_err(q.page.map_error())?;
        let data: Vec<serde_json::Value> = r.data.iter().map(|e| webhooks::endpoint_object(e, None)).collect();
        Ok(json(&serde_json::json!({"object": "list", "data": data, "has_more": r.has_more, "url": path})))
    }
}

#[utoipa::path(get, path = "/v1/webhook_endpoints", operation_id = "list_webhook_endpoints", params(ListQuery),
    responses((status = 200, body = ListObject<WebhookEndpointObject>, links(("RetrieveNewestEndpoint" = (operation_id = "retrieve_webhook_endpoint", parameters(("id" = "$response.body#/data/0/id")))))), (status = 400, body = ErrorEnvelope)))]
pub(crate) async fn list(State(app): State<Arc<App>>, req: Request) -> Response {
    app.get(List, req).await
}

struct Deliveries(String);

#[async_trait::async_trait]
impl ReadOp for Deliveries {
    type Query = ListDeliveriesQuery;

    async fn run(&self, app: &App, m: &Caller, q: ListDeliveriesQuery, path: &str) -> Result<Vec<u8>, ApiError> {
        app.load_endpoint(m, &self.0).await?;
        let d = app.store.deliveries(&m.id, None, Some(&self.0), q.limit).await.map_err(ApiError::internal)?;
        let data: Vec<serde_json::Value> = d.iter().map(webhooks::delivery_object).collect();
        Ok(json(&serde_json::json!({"object": "list", "data": data, "has_more": false, "url": path})))
    }
}

#[utoipa::path(get, path = "/v1/webhook_endpoints/{id}/deliveries", operation_id = "list_webhook_deliveries", params(("id" = String, Path), ("limit" = Option<u32>, Query, nullable = false, minimum = 1, maximum = 100, description = "1 to 100, default 10")),
    responses((status = 200, description = "The endpoint's deliveries, newest first", body = ListObject<WebhookDeliveryObject>), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn deliveries(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Deliveries(id), req)).await
}

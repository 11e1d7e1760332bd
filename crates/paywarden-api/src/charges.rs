//! Charges: one authorization attempt of a PaymentIntent (the core makes them on confirm),
//! retrieved by id.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;

use crate::schema::ErrorEnvelope;
use crate::params::NoParams;
use crate::auth::Caller;
use crate::pipeline::{json, with_id, ReadOp};
use crate::wire::{self, ChargeObject};
use crate::{ApiError, App};

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = NoParams;

    async fn run(&self, app: &App, m: &Caller, _: NoParams, _: &str) -> Result<Vec<u8>, ApiError> {
        let c = app.store.charge(&m.id, &self.0).await.map_err(ApiError::internal)?;
        Ok(json(&wire::charge(&c.ok_or_else(|| ApiError::no_such("charge", &self.0, None))?)))
    }
}

#[utoipa::path(get, path = "/v1/charges/{id}", operation_id = "retrieve_charge", params(("id" = String, Path)),
    responses((status = 200, body = ChargeObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

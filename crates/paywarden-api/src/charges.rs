//! Charges: one authorization attempt of a PaymentIntent (the core makes them on confirm),
//! retrieved by id.

use std::sync::Arc;

use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::response::Response;

use crate::schema::ErrorEnvelope;
use crate::expand::{Expand, ExpandCharge, Kind};
use crate::params::{FromParams, Params};
use crate::auth::Caller;
use crate::pipeline::{with_id, ReadOp};
use crate::wire::{self, ChargeObject};
use crate::{ApiError, App};

/// `GET /v1/charges/{id}`: what to expand.
pub struct RetrieveChargeQuery {
    pub expand: Expand,
}

impl FromParams for RetrieveChargeQuery {
    fn from_params(p: &mut Params) -> Result<Self, ApiError> {
        Ok(RetrieveChargeQuery { expand: Expand::take(p, Kind::Charge, false)? })
    }
}

struct Retrieve(String);

#[async_trait::async_trait]
impl ReadOp for Retrieve {
    type Query = RetrieveChargeQuery;

    async fn run(&self, app: &App, m: &Caller, q: RetrieveChargeQuery, _: &str) -> Result<Vec<u8>, ApiError> {
        let c = app.store.charge(&m.id, &self.0).await.map_err(ApiError::internal)?;
        let object = wire::charge(&c.ok_or_else(|| ApiError::no_such("charge", &self.0, None))?);
        q.expand.render(app, m, Kind::Charge, &object).await
    }
}

#[utoipa::path(get, path = "/v1/charges/{id}", operation_id = "retrieve_charge", params(("id" = String, Path), ExpandCharge),
    responses((status = 200, body = ChargeObject), (status = 404, body = ErrorEnvelope)))]
pub(crate) async fn retrieve(State(app): State<Arc<App>>, id: Result<Path<String>, PathRejection>, req: Request) -> Response {
    with_id(id, |id| app.get(Retrieve(id), req)).await
}

//! Integration tests of paywarden's HTTP API, driven in-process through the axum router.

mod admin;
mod auth;
mod card_data;
mod declines;
mod idempotency;
mod limits;
mod metrics;
mod lists;
mod routes;
mod state;
mod support;
mod validation;
mod webhooks;

//! What operators and orchestrators call: liveness and readiness probes, `/metrics`, and the
//! memory guard's admin and debug endpoints (the admin token, never a merchant key; answered
//! by the [`AdminHooks`] the binary installs).

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::schema::ErrorEnvelope;
use crate::{AdminHooks, ApiError, App, ErrorType};

#[utoipa::path(get, operation_id = "healthz", path = "/healthz", responses((status = 200, description = "The process is alive (no I/O)", body = String)))]
pub(crate) async fn healthz() -> &'static str {
    "ok\n"
}

// Readiness: the store answers a read and the writer's queue has room. A rollout controller
// sends traffic to an instance only after this says 200.
#[utoipa::path(get, operation_id = "readyz", path = "/readyz", responses(
    (status = 200, description = "Ready for traffic: the store answers and the writer's queue has room", body = String),
    (status = 503, description = "Not ready", body = String)
))]
pub(crate) async fn readyz(State(app): State<Arc<App>>) -> Response {
    let stats = app.store.stats();
    if stats.writer_queue_len >= stats.writer_queue_max {
        return (StatusCode::SERVICE_UNAVAILABLE, "not ready: the writer's queue is full\n").into_response();
    }
    match app.store.merchants_count().await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check: the store did not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "not ready: the store did not answer\n").into_response()
        }
    }
}

#[utoipa::path(get, operation_id = "metrics", path = "/metrics", responses((status = 200, description = "Prometheus metrics (OpenMetrics text); every series has a version label", content_type = "application/openmetrics-text", body = String)))]
pub(crate) async fn metrics(State(app): State<Arc<App>>) -> Response {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], app.render_metrics()).into_response()
}

/// The admin hooks, after the admin token is checked.
fn admin_hooks(app: &App, headers: &HeaderMap) -> Result<Arc<dyn AdminHooks>, ApiError> {
    app.admin(headers)?;
    app.admin_hooks.get().cloned().ok_or_else(|| {
        ApiError::new(StatusCode::NOT_FOUND, ErrorType::InvalidRequestError, Some("resource_missing"), "This instance runs no memory guard.")
    })
}

#[utoipa::path(get, operation_id = "leak_report", path = "/admin/memory/leak-report", responses(
    (status = 200, description = "The memory guard's verdict: JSON with state (ok, suspect or leaking), rates, confidence, time to exhaustion", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope)))]
pub(crate) async fn leak_report(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match admin_hooks(&app, &headers) {
        Ok(h) => axum::Json(h.leak_report()).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, operation_id = "alerts", path = "/admin/alerts", responses(
    (status = 200, description = "Active alerts (memory leak, payment failure burn rate) and the recent firing/resolved events, in Alertmanager's alert shape", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope)))]
pub(crate) async fn alerts(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    match admin_hooks(&app, &headers) {
        Ok(h) => axum::Json(h.alerts()).into_response(),
        Err(e) => e.into_response(),
    }
}

#[utoipa::path(get, operation_id = "pprof_heap", path = "/debug/pprof/heap", responses(
    (status = 200, description = "The live heap profile from jemalloc's sampler, pprof format (gzipped protobuf, inuse_space in bytes), not symbolized: its mappings carry the binary's path and build ID and its locations file-relative addresses; read it with `go tool pprof ./paywarden heap.pb.gz` next to the same binary", content_type = "application/octet-stream"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "Heap profiling is off in this process (jemalloc started without prof:true)", body = ErrorEnvelope)))]
pub(crate) async fn pprof_heap(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.heap_profile().await {
        Ok(bytes) => (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"heap.pb.gz\""),
            ],
            bytes,
        )
            .into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("heap_profiling_off"), format!("No heap profile: {why}.")).into_response(),
    }
}

#[utoipa::path(post, operation_id = "mark_heap", path = "/admin/memory/profile/reference", responses(
    (status = 200, description = "A heap profile was taken and kept as the reference for /admin/memory/profile/diff", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "jemalloc heap profiling is off in this process", body = ErrorEnvelope)))]
pub(crate) async fn mark_heap(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.mark_heap().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("heap_profiling_off"), format!("No heap profile: {why}.")).into_response(),
    }
}

#[utoipa::path(get, operation_id = "heap_diff", path = "/admin/memory/profile/diff", responses(
    (status = 200, description = "The allocation sites that grew since the reference profile, largest first: function, growth bytes and rate, share, stack", content_type = "application/json"),
    (status = 401, description = "Missing or wrong admin token (merchant keys never work here)", body = ErrorEnvelope),
    (status = 404, description = "Admin endpoints are off (no --admin-token) or no memory guard runs", body = ErrorEnvelope),
    (status = 409, description = "No reference profile yet (POST /admin/memory/profile/reference first), or heap profiling is off", body = ErrorEnvelope)))]
pub(crate) async fn heap_diff(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    let hooks = match admin_hooks(&app, &headers) {
        Ok(h) => h,
        Err(e) => return e.into_response(),
    };
    match hooks.heap_diff().await {
        Ok(v) => axum::Json(v).into_response(),
        Err(why) => ApiError::new(StatusCode::CONFLICT, ErrorType::InvalidRequestError, Some("no_heap_reference"), format!("No heap diff: {why}.")).into_response(),
    }
}

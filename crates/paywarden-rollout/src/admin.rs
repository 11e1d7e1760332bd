//! The admin API: bound to loopback on its own port, every route behind `Authorization:
//! Bearer ADMIN_TOKEN` (compared as SHA-256 digests in constant time; merchant keys are
//! refused by name).
//!
//! | route | what |
//! |---|---|
//! | `GET /admin/status` | stable, canary (with weight), baseline, last deployment with traffic figures, the schema's history |
//! | `GET /admin/canary/verdict` | the judge's current verdict (Argo Rollouts' Web metric provider reads `score`) |
//! | `GET /admin/history` | every deployment's record, oldest first |
//! | `GET /admin/events?deployment=ID` | the event log (the last 10 000 events) |
//! | `POST /admin/deployments` | `{"version", "binary"?, "plan"?: "default"\|"fast", "plan_toml"?, "args"?: [..], "auto_rollback"?: bool, "allow_contract"?: bool}` → 202 `{"id"}` once the schema gate let it through |
//! | `POST /admin/rollback` | rolls back the deployment in progress; answers when done |
//! | `GET /admin/instances` | the instances running now: role, version, pid, address |
//! | `GET /admin/instances/ROLE/memory/leak-report`, `.../alerts`, `.../memory/profile/diff`, `.../pprof/heap`; `POST .../memory/profile/reference` | that instance's memory guard (ROLE: `stable`, `canary`, `baseline`), answered as it answers |
//! | `GET /healthz` | no token: the controller is alive |
//!
//! Errors are JSON `{"error": {"message": ...}}` with 400 (bad request: what to change), 401
//! (no or wrong token), 404, 409 (a deployment is or is not in progress; the schema gate refused
//! the release, or the previous release cannot run on the schema), 413 (body over
//! [`ADMIN_BODY_BYTES_MAX`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::controller::{ControlError, Controller, DeployRequest, InstanceEndpoint};
use crate::plan::Plan;
use crate::pods::{self, PodJudge};

/// Largest admin request body.
pub const ADMIN_BODY_BYTES_MAX: usize = 128 * 1024;

struct AdminState {
    controller: Controller,
    token_sha256: [u8; 32],
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

impl From<ControlError> for Response {
    fn from(e: ControlError) -> Response {
        match e {
            ControlError::BadRequest(m) => error(StatusCode::BAD_REQUEST, m),
            ControlError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
            ControlError::Conflict(m) => error(StatusCode::CONFLICT, m),
            ControlError::Failed(m) => error(StatusCode::SERVICE_UNAVAILABLE, m),
        }
    }
}

/// The admin router. `token_sha256_hex` is the SHA-256 of the admin token, hex.
pub fn router(controller: Controller, token_sha256_hex: &str) -> anyhow::Result<Router> {
    let state = Arc::new(AdminState { controller, token_sha256: token_digest(token_sha256_hex)? });
    Ok(Router::new()
        .route("/admin/status", get(status))
        .route("/admin/canary/verdict", get(verdict))
        .route("/admin/history", get(history))
        .route("/admin/events", get(events))
        .route("/admin/deployments", post(deploy))
        .route("/admin/rollback", post(rollback))
        .route("/admin/instances", get(instances))
        .route("/admin/instances/{role}/{*endpoint}", get(instance_get).post(instance_post))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such admin route; see GET /admin/status") })
        .layer(axum::extract::DefaultBodyLimit::max(ADMIN_BODY_BYTES_MAX))
        .with_state(state))
}

/// The admin API of `paywarden judge` (no controller: pods something else runs):
/// `GET /admin/canary/verdict` (bearer token) and `GET /healthz`.
pub fn judge_router(judge: Arc<Mutex<PodJudge>>, token_sha256_hex: &str) -> anyhow::Result<Router> {
    let token_sha256 = token_digest(token_sha256_hex)?;
    let verdict = move |headers: HeaderMap| {
        let judge = judge.clone();
        async move {
            if let Err(r) = check_token(&token_sha256, &headers) {
                return r;
            }
            Json(pods::lock(&judge).verdict_json()).into_response()
        }
    };
    Ok(Router::new()
        .route("/admin/canary/verdict", get(verdict))
        .route("/healthz", get(|| async { "ok\n" }))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "the judge serves GET /admin/canary/verdict and GET /healthz only") }))
}

fn token_digest(token_sha256_hex: &str) -> anyhow::Result<[u8; 32]> {
    let mut digest = [0u8; 32];
    hex::decode_to_slice(token_sha256_hex, &mut digest).map_err(|e| anyhow::anyhow!("admin token hash: {e}"))?;
    Ok(digest)
}

#[allow(clippy::result_large_err)] // a Response is what the handlers return anyway
fn authorize(state: &AdminState, headers: &HeaderMap) -> Result<(), Response> {
    check_token(&state.token_sha256, headers)
}

#[allow(clippy::result_large_err)]
fn check_token(token_sha256: &[u8; 32], headers: &HeaderMap) -> Result<(), Response> {
    let Some(value) = headers.get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(error(StatusCode::UNAUTHORIZED, "send the admin token: Authorization: Bearer TOKEN"));
    };
    let token = value.strip_prefix("Bearer ").unwrap_or("").trim();
    if token.starts_with("sk_") || token.starts_with("rk_") {
        return Err(error(StatusCode::UNAUTHORIZED, "merchant keys do not work on the admin API; use the admin token `paywarden up` printed"));
    }
    let digest = Sha256::digest(token.as_bytes());
    if bool::from(digest.as_slice().ct_eq(token_sha256)) {
        Ok(())
    } else {
        Err(error(StatusCode::UNAUTHORIZED, "wrong admin token"))
    }
}

async fn status(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    Json(s.controller.status_with_memory().await).into_response()
}

async fn verdict(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    Json(s.controller.verdict()).into_response()
}

async fn history(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    Json(json!({"deployments": s.controller.history()})).into_response()
}

#[derive(Deserialize)]
struct EventsQuery {
    deployment: Option<String>,
}

async fn events(State(s): State<Arc<AdminState>>, headers: HeaderMap, q: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let Ok(Query(q)) = q else {
        return error(StatusCode::BAD_REQUEST, "the only query parameter is deployment=ID");
    };
    match s.controller.events().read(q.deployment.as_deref()) {
        Ok(ev) => Json(json!({"events": ev})).into_response(),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, format!("reading the event log: {e}")),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    version: String,
    binary: Option<PathBuf>,
    /// `default` or `fast`.
    plan: Option<String>,
    /// A plan file's text (instead of `plan`).
    plan_toml: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    /// false: a failed analysis holds the deployment for an operator (training).
    auto_rollback: Option<bool>,
    /// true: deploy even if the release applies a contract migration (the schema gate's
    /// override; the plan's `allow_contract`).
    allow_contract: Option<bool>,
}

async fn deploy(State(s): State<Arc<AdminState>>, headers: HeaderMap, body: Result<Json<DeployBody>, axum::extract::rejection::JsonRejection>) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let body = match body {
        Ok(Json(b)) => b,
        Err(e) => return error(e.status(), format!("the body must be JSON {{\"version\", \"binary\"?, \"plan\"?, \"plan_toml\"?, \"args\"?}}: {}", e.body_text())),
    };
    let plan = match (body.plan.as_deref(), body.plan_toml.as_deref()) {
        (Some(_), Some(_)) => return error(StatusCode::BAD_REQUEST, "send plan (a name) or plan_toml (a file's text), not both"),
        (None, Some(t)) => match Plan::from_toml(t, "plan") {
            Ok(p) => p,
            Err(e) => return error(StatusCode::BAD_REQUEST, e.0),
        },
        (name, None) => match Plan::builtin(name.unwrap_or("default")) {
            Some(p) => p,
            None => return error(StatusCode::BAD_REQUEST, format!("plan {:?}: use default, fast, or send a plan file", name.unwrap_or(""))),
        },
    };
    let mut plan = plan;
    if let Some(auto) = body.auto_rollback {
        plan.auto_rollback = auto;
    }
    if let Some(allow) = body.allow_contract {
        plan.allow_contract = allow;
    }
    let req = DeployRequest { version: body.version, binary: body.binary, plan, args: body.args };
    match s.controller.deploy(req).await {
        Ok(id) => (StatusCode::ACCEPTED, Json(json!({"id": id}))).into_response(),
        Err(e) => e.into(),
    }
}

async fn rollback(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    match s.controller.rollback("requested through the admin API").await {
        Ok(record) => Json(json!({"rolled_back": record})).into_response(),
        Err(e) => e.into(),
    }
}

async fn instances(State(s): State<Arc<AdminState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    Json(s.controller.instances()).into_response()
}

async fn instance_get(State(s): State<Arc<AdminState>>, headers: HeaderMap, Path((role, endpoint)): Path<(String, String)>) -> Response {
    instance_call(s, headers, "GET", role, endpoint).await
}

async fn instance_post(State(s): State<Arc<AdminState>>, headers: HeaderMap, Path((role, endpoint)): Path<(String, String)>) -> Response {
    instance_call(s, headers, "POST", role, endpoint).await
}

/// `/admin/instances/ROLE/ENDPOINT`: an instance's memory guard through `up`'s admin API
/// (the instances' own admin token never leaves the controller).
async fn instance_call(s: Arc<AdminState>, headers: HeaderMap, method: &str, role: String, endpoint: String) -> Response {
    if let Err(r) = authorize(&s, &headers) {
        return r;
    }
    let known = || InstanceEndpoint::ALL.iter().map(|(_, m, p)| format!("{m} /admin/instances/{{stable|canary|baseline}}/{p}")).collect::<Vec<_>>().join(", ");
    let Some((e, _, _)) = InstanceEndpoint::ALL.iter().find(|(_, m, p)| *m == method && *p == endpoint) else {
        return error(StatusCode::NOT_FOUND, format!("no such instance endpoint {method} {endpoint}; there are: {}", known()));
    };
    match s.controller.ask_instance(&role, *e).await {
        Ok(f) => {
            let status = StatusCode::from_u16(f.status).unwrap_or(StatusCode::BAD_GATEWAY);
            (status, [(http::header::CONTENT_TYPE, f.content_type)], f.body).into_response()
        }
        Err(e) => e.into(),
    }
}

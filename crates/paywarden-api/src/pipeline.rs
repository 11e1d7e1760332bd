//! Every request's path through the API. A write ([`WriteOp`]) goes through [`App::post`]:
//! authenticate the key, read the body within [`crate::ApiConfig::body_bytes_max`], parse it
//! into the operation's typed parameters, check the `Idempotency-Key` (replay, conflict or in
//! flight), run the operation (validate everything, then call the acquirer, then compute the
//! new state in the core), and hand one [`WriteBatch`] — the objects, the ledger postings,
//! the events and the idempotent response together — to the store's writer. The response is
//! sent only after that batch is durable. A read ([`ReadOp`]) is authenticated, its query
//! parsed whole, and answered from the store.
//!
//! Also the middleware every route shares: admission control and metrics ([`track`]), a
//! `Request-Id` on every response, Stripe's 404 for unknown URLs and undecodable ids.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use paywarden_store::{ConflictKind, IdempotencyRecord, Write, WriteBatch, WriteError};
use serde::Serialize;

use crate::auth::Caller;
use crate::idempotency::{fingerprint, idempotency_key, InFlight};
use crate::params::{parse, FromParams, Params};
use crate::{error, metrics, new_id, now, webhooks, ApiError, App, ErrorType};

/// What a write operation produced: the response and everything to write with it.
pub(crate) struct Outcome {
    pub(crate) status: StatusCode,
    pub(crate) body: Vec<u8>,
    pub(crate) batch: WriteBatch,
    /// The acquirer approved a payment (it is authorized or captured once this is durable).
    pub(crate) confirmed: bool,
}

impl Outcome {
    pub(crate) fn ok(object: &impl Serialize, batch: WriteBatch) -> Outcome {
        Outcome { status: StatusCode::OK, body: json(object), batch, confirmed: false }
    }
}

pub(crate) fn json(v: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn respond(status: StatusCode, body: Vec<u8>, replayed: bool) -> Response {
    let mut res = (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
    if replayed {
        res.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    res
}

/// One POST operation: its typed parameters and what it does with them. It reads what it
/// needs and returns the response with its writes; it writes nothing itself.
#[async_trait::async_trait]
pub(crate) trait WriteOp: Send + Sync {
    type Params: FromParams + Send;
    /// A request on a PaymentIntent: what `--fault errors` and `--fault latency` act on, and
    /// what the payment counters count.
    const PAYMENT: bool = false;
    /// Which events the batch makes ([`webhooks::events_of`]).
    const EVENTS: webhooks::EventSource = webhooks::EventSource::Other;
    /// The response carries a secret that is derived again on replay, never stored.
    const SECRET_IN_RESPONSE: bool = false;
    /// A browser may call it with the publishable key ([`crate::auth`]).
    const PUBLISHABLE: bool = false;

    async fn run(&self, app: &App, m: &Caller, p: Self::Params, now: i64) -> Result<Outcome, ApiError>;
}

/// One GET operation: its typed query and the object it answers with.
#[async_trait::async_trait]
pub(crate) trait ReadOp: Send + Sync {
    type Query: FromParams + Send;
    /// A browser may call it with the publishable key ([`crate::auth`]).
    const PUBLISHABLE: bool = false;

    /// The response body; `path` is the list's `url`.
    async fn run(&self, app: &App, m: &Caller, q: Self::Query, path: &str) -> Result<Vec<u8>, ApiError>;
}

/// The body, whole, within `limit` and `timeout`.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<bytes::Bytes, ApiError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(_)) => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorType::InvalidRequestError,
            Some("body_too_large"),
            format!("The request body is larger than body_bytes_max ({limit} bytes); send fewer or shorter parameters."),
        )),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            ErrorType::InvalidRequestError,
            Some("body_timeout"),
            format!("The request body did not arrive within body_read_timeout ({} s); send it whole, at once.", timeout.as_secs_f64()),
        )),
    }
}

fn parse_body(headers: &HeaderMap, bytes: &[u8]) -> Result<Params, ApiError> {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match mime.as_str() {
        "application/x-www-form-urlencoded" => Params::from_form(bytes),
        "application/json" => Params::from_json(bytes),
        _ if bytes.iter().all(u8::is_ascii_whitespace) => Ok(Params::empty()),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorType::InvalidRequestError,
            Some("unsupported_content_type"),
            format!(
                "Content-Type '{}' is not supported; send application/x-www-form-urlencoded (as Stripe's SDKs do) or application/json.",
                error::truncate(ct, 64)
            ),
        )),
    }
}

impl App {
    /// Runs a write operation, counting it if it is a payment request.
    pub(crate) async fn post<O: WriteOp>(self: Arc<Self>, op: O, req: Request) -> Response {
        let res = match self.post_inner(&op, req).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
        if O::PAYMENT {
            let status = res.status().as_u16();
            self.metrics.payment(status);
            self.payment_requests_total.fetch_add(1, Ordering::Relaxed);
            if status >= 500 {
                self.payment_failures_total.fetch_add(1, Ordering::Relaxed);
            }
        }
        res
    }

    async fn post_inner<O: WriteOp>(&self, op: &O, req: Request) -> Result<Response, ApiError> {
        let (parts, body) = req.into_parts();
        let merchant = self.authenticate(&parts.headers, O::PUBLISHABLE).await?;
        if O::PAYMENT && self.faults.before_payment_request().await {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorType::ApiError,
                Some("injected_fault"),
                "paywarden answered with an injected fault (serve --fault errors=RATE); nothing was read or written.",
            ));
        }
        let bytes = read_body(body, self.cfg.body_bytes_max, self.cfg.body_read_timeout).await?;
        let params = parse_body(&parts.headers, &bytes)?;
        let idem_key = idempotency_key(&parts.headers, self.cfg.idempotency_key_chars_max)?;
        let fingerprint = fingerprint(&parts.method, parts.uri.path(), &params);

        let _guard = match &idem_key {
            Some(key) => {
                let guard = self.enter(&merchant.id, key)?;
                if let Some((status, body)) = self.replay(&merchant.id, key, &fingerprint).await? {
                    return Ok(respond(status, body, true));
                }
                guard
            }
            None => InFlight::none(self),
        };

        let now = now();
        let mut attempt = 0;
        loop {
            let typed = parse::<O::Params>(params.clone())?;
            let mut out = op.run(self, &merchant, typed, now).await?;
            // The events this change makes, in its own transaction (the outbox).
            let events = webhooks::events_of(O::EVENTS, &out.batch);
            for e in webhooks::records(&merchant.id, now, idem_key.as_deref(), events) {
                out.batch.push(Write::Event(e));
            }
            if let Some(key) = &idem_key {
                out.batch.push(Write::Idempotency {
                    record: IdempotencyRecord {
                        merchant: merchant.id.clone(),
                        key: key.clone(),
                        request_hash: fingerprint,
                        status: out.status.as_u16(),
                        // A new endpoint's secret is never stored: a replay derives it again.
                        body: if O::SECRET_IN_RESPONSE { webhooks::without_secret(&out.body) } else { crate::client_secret::strip(&out.body) },
                        created: now,
                    },
                    replaces_before: now - self.cfg.idempotency_ttl_s,
                });
            }
            match self.store.write(out.batch).await {
                Ok(()) => {
                    if out.confirmed {
                        self.payments_total.fetch_add(1, Ordering::Relaxed);
                        self.faults.after_confirmed_payment();
                    }
                    return Ok(respond(out.status, out.body, false));
                }
                Err(WriteError::Conflict(ConflictKind::IntentVersion)) if attempt < self.cfg.write_conflict_retries_max => {
                    attempt += 1;
                    continue;
                }
                Err(WriteError::Conflict(ConflictKind::IntentVersion)) => {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        ErrorType::InvalidRequestError,
                        Some("lock_timeout"),
                        "This object is being changed by other requests right now; retry the request.",
                    ));
                }
                Err(WriteError::Conflict(ConflictKind::IdempotencyKey)) => {
                    // Another process finished a request with this key first: answer as it did.
                    let key = idem_key.as_deref().unwrap_or_default();
                    return match self.replay(&merchant.id, key, &fingerprint).await? {
                        Some((status, body)) => Ok(respond(status, body, true)),
                        None => Err(ApiError::internal("idempotency conflict without a stored record")),
                    };
                }
                Err(e) => return Err(write_error(e)),
            }
        }
    }

    /// Runs a read operation.
    pub(crate) async fn get<O: ReadOp>(self: Arc<Self>, op: O, req: Request) -> Response {
        let run = async {
            let (parts, _) = req.into_parts();
            let m = self.authenticate(&parts.headers, O::PUBLISHABLE).await?;
            let q = parse::<O::Query>(Params::from_form(parts.uri.query().unwrap_or_default().as_bytes())?)?;
            op.run(&self, &m, q, parts.uri.path()).await
        };
        match run.await {
            Ok(body) => respond(StatusCode::OK, body, false),
            Err(e) => e.into_response(),
        }
    }

    /// Writes `batch` on its own (a write that needs no idempotency record: a DELETE).
    pub(crate) async fn write_alone(&self, batch: WriteBatch) -> Result<(), ApiError> {
        self.store.write(batch).await.map_err(write_error)
    }
}

/// A write the store refused for a reason other than a race.
fn write_error(e: WriteError) -> ApiError {
    match e {
        WriteError::QueueFull { limit } => ApiError::unavailable(
            "writer_queue_full",
            format!("paywarden is at its write capacity ({limit} batches queued); retry after a second with the same Idempotency-Key."),
        ),
        e => ApiError::internal(e),
    }
}

/// Runs `f` with the id from the URL, or answers Stripe's 404 for one axum cannot decode.
pub(crate) async fn with_id<F, Fut>(id: Result<Path<String>, PathRejection>, f: F) -> Response
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Response>,
{
    match id {
        Ok(Path(id)) => f(id).await,
        Err(e) => ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorType::InvalidRequestError,
            Some("resource_missing"),
            format!("{}. Use an id as paywarden returned it (e.g. pi_...).", error::truncate(&e.body_text(), 128)),
        )
        .param("id")
        .into_response(),
    }
}

pub(crate) async fn request_id(mut res: Response) -> Response {
    if let Ok(v) = HeaderValue::from_str(&new_id("req")) {
        res.headers_mut().insert("request-id", v);
    }
    res
}

pub(crate) async fn fallback(method: Method, uri: axum::http::Uri) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::NOT_FOUND,
        ErrorType::InvalidRequestError,
        None,
        format!("Unrecognized request URL ({method}: {}). See /v1/openapi.json for the endpoints paywarden serves.", error::truncate(uri.path(), 128)),
    );
    e.code = Some("resource_missing".into());
    e
}

/// One API request admitted: counted while it lives.
struct Admitted<'a>(&'a App);

impl<'a> Admitted<'a> {
    fn enter(app: &'a App) -> Option<Admitted<'a>> {
        let max = app.cfg.requests_in_flight_max;
        app.admitted.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < max).then_some(n + 1)).ok().map(|_| Admitted(app))
    }
}

impl Drop for Admitted<'_> {
    fn drop(&mut self) {
        self.0.admitted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Admission control for `/v1/*` and `/admin/*` (past `requests_in_flight_max`, a 429 at
/// once), and every request counted and timed by its route template (never the raw path:
/// bounded labels).
pub(crate) async fn track(State(app): State<Arc<App>>, req: Request, next: axum::middleware::Next) -> Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let started = Instant::now();
    let res = if route.starts_with("/v1/") || route.starts_with("/admin/") || route == "unmatched" {
        match Admitted::enter(&app) {
            Some(_admitted) => next.run(req).await,
            None => {
                let max = app.cfg.requests_in_flight_max;
                let mut e = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorType::InvalidRequestError,
                    Some("rate_limit"),
                    format!("paywarden is handling requests_in_flight_max ({max}) requests already; retry after a second, with the same Idempotency-Key for a POST."),
                );
                e.retry_after = Some(1);
                e.into_response()
            }
        }
    } else {
        next.run(req).await
    };
    app.requests_total.fetch_add(1, Ordering::Relaxed);
    let m = &app.metrics;
    m.http_duration.get_or_create(&metrics::RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    m.http_requests.get_or_create(&metrics::HttpLabels { route, status: res.status().as_str().to_string() }).inc();
    res
}

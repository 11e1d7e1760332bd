//! The public listener: a generic HTTP/1.1 reverse proxy that splits requests between gateway
//! instances by weight, retries only when it is safe, counts per instance what the canary judge
//! needs, never loses a request to a route switch, and drains instances before they are stopped.
//!
//! It knows nothing of payments: it forwards bytes, and the only thing it adds to an answer is
//! a `paywarden-version: <label>` header naming the instance that answered.
//!
//! # A request's path
//!
//! 1. The request body is read **fully**, within `body_bytes_max` (a bigger body is answered
//!    `413` and nothing is sent upstream), so that the request can be sent again.
//! 2. A backend is picked by weighted random among the routes with weight > 0 (weights are
//!    relative; the controller uses basis points out of 10 000). None: `503` with
//!    `Retry-After: 1`. The pick and the backend's in-flight increment happen under the routing
//!    table's read lock, so once [`Proxy::set_routes`] has returned, every request that chose
//!    from the old table is already visible to [`Proxy::in_flight`] and [`Proxy::drain`].
//! 3. The request goes upstream with its method, path and query, and headers minus the
//!    hop-by-hop ones (`Connection` and the headers it names, `Keep-Alive`, `Proxy-*`, `TE`,
//!    `Trailer`, `Transfer-Encoding`, `Upgrade`; `Expect` too, since the body is already here),
//!    with the client's address appended to `x-forwarded-for`. The `Host` header is kept.
//! 4. The upstream answer is read fully (within `response_bytes_max`) and sent back with its
//!    status and headers minus the hop-by-hop ones, plus `paywarden-version`.
//!
//! # When a request is retried
//!
//! An attempt that failed is tried again (at most `retries_max` times) only when that cannot
//! make the request happen twice:
//!
//! - the request was **never sent**: the connection to the instance could not be made, or hyper
//!   reports the request canceled before it was written (hyper-util's client also resends, by
//!   itself, a request whose pooled keep-alive connection turned out closed before anything was
//!   written); any method;
//! - or the request is **idempotent**: its method is `GET`, `HEAD`, `OPTIONS`, `PUT` or
//!   `DELETE`, or it carries an `Idempotency-Key` header (the instance deduplicates it).
//!
//! A request that was sent and may have been processed (the instance dropped the connection
//! before answering, or its answer broke off) and is neither is answered `502` at once, with a
//! message telling the client to retry with an `Idempotency-Key`. A retry goes to another route
//! with weight > 0 when there is one (chosen by weight among the backends not yet tried, else
//! among those other than the one that just failed), else to the same one; the routing table
//! is read again for it, so a backend set to weight 0 meanwhile is not chosen. An answer
//! bigger than `response_bytes_max` is not retried (it would be as big again), and neither is a
//! timeout (the deadline covers all attempts). **A `5xx` from an instance is passed through as
//! is and never retried**: hiding a canary's errors would blind the judge.
//!
//! Answers made by the proxy itself carry a small Stripe-shaped JSON body,
//! `{"error":{"type":"api_error","message":"..."}}`: `502` when no attempt got an answer,
//! `504` when the deadline passed, `503` when there is no route, `413` for a too-large body.
//!
//! # What is counted
//!
//! Per backend ([`BackendStats`], cumulative since the backend was first routed, until
//! [`Proxy::forget`]): `requests` = attempts sent to it (retries included), `errors` = its `5xx`
//! answers plus failed attempts charged to it (no connection, connection dropped, answer too
//! big, timeout), `in_flight`, and a reservoir sample (Algorithm R) of the latencies of the
//! requests it answered, measured from the request's arrival at the proxy to the end of the
//! upstream answer, in milliseconds. A backend's in-flight count covers its upstream exchange
//! (a guard decrements it whatever happens, client disconnects included); once it is 0 with
//! the backend unrouted, nothing more is owed by that instance. A request abandoned by its
//! client is no longer counted even if the instance is still working on it.
//!
//! Totals ([`ProxyTotals`]): client requests, those answered `5xx` (by an instance or by the
//! proxy), retry attempts, requests that found no route, and bodies over the limit.
//!
//! # Limits
//!
//! | what | limit | past it |
//! |---|---|---|
//! | request body | `body_bytes_max`, default 1 MiB | `413`, nothing sent upstream |
//! | upstream answer body | `response_bytes_max`, default 16 MiB | `502`, charged to the backend, not retried |
//! | upstream exchange, all attempts together | `upstream_timeout`, default 30 s | `504`, charged to the backend |
//! | retries per request | `retries_max`, default 2 | the last failure's `502` |
//! | latency samples per backend | `latency_samples_max`, default 5 000 (the judge reads 5 000) | reservoir replacement |
//! | connect to an instance | [`CONNECT_TIMEOUT`] (5 s, or the deadline if sooner) | a connect error (retried) |
//! | client connections | `connections_max`, default 10 000 | accepting pauses until one closes |
//! | client request head | read within [`HEADER_READ_TIMEOUT`] (30 s); hyper's 100 headers, ~400 KiB buffer | the connection is closed / `431` |
//! | idle upstream connections | [`POOL_IDLE_PER_BACKEND`] per backend, closed after [`POOL_IDLE_TIMEOUT`] | closed |
//! | graceful shutdown | `grace` given to [`Proxy::serve`] | remaining connections are closed |
//! | routes | a few (linear scan per pick); per-backend stats are fixed size and live until [`Proxy::forget`] | |
//!
//! Memory is therefore bounded by connections × (body + answer limits) plus, per backend,
//! `latency_samples_max` × 8 bytes.
//!
//! # Cost
//!
//! Per request: one read of the routing table (`RwLock<Arc<_>>`, held for the pick), atomics
//! for the counters, one short lock of the answering backend's reservoir, and the allocations
//! hyper needs (plus one clone of the request's header map, kept for a retry). Connections to
//! instances are pooled keep-alive connections with `TCP_NODELAY`.

use std::collections::HashMap;
use std::hash::BuildHasher as _;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rand::Rng;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

/// Longest wait for a TCP connection to an instance (loopback: a refused connection fails at
/// once; this bounds a full accept backlog).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a client's request head.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Idle keep-alive connections kept per instance.
pub const POOL_IDLE_PER_BACKEND: usize = 1024;
/// An idle upstream connection is closed after this long: before an instance closes it itself
/// (`serve --header-read-timeout`, 65 s by default), so that a request is never written to a
/// connection the instance is closing.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// The response header naming the instance (route label) that answered.
pub const VERSION_HEADER: &str = "paywarden-version";

/// The proxy's limits; see the module docs.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// Request body limit; past it: `413` and nothing sent upstream. Default 1 MiB.
    pub body_bytes_max: usize,
    /// Upstream answer body limit; past it: `502`. Default 16 MiB.
    pub response_bytes_max: usize,
    /// Deadline of the whole upstream exchange (all attempts, answer read); past it: `504`.
    /// Default 30 s.
    pub upstream_timeout: Duration,
    /// Retries per request when retrying is safe. Default 2.
    pub retries_max: u32,
    /// Latency reservoir size per backend. Default 5 000.
    pub latency_samples_max: usize,
    /// Client connections served at once; accepting pauses at the limit. Default 10 000.
    pub connections_max: usize,
    /// Terminate TLS on the public listener (`up --tls-cert --tls-key`); None: plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            body_bytes_max: 1 << 20,
            response_bytes_max: 16 << 20,
            upstream_timeout: Duration::from_secs(30),
            retries_max: 2,
            latency_samples_max: 5_000,
            connections_max: 10_000,
            tls: None,
        }
    }
}

/// One instance in the routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The backend's identity; stats are kept per id.
    pub id: u64,
    pub addr: SocketAddr,
    /// Relative weight; 0 = no new requests.
    pub weight: u32,
    /// Sent back in `paywarden-version`.
    pub label: Arc<str>,
}

/// A backend's cumulative figures since it was first routed.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BackendStats {
    /// Attempts sent to it, retries included.
    pub requests: u64,
    /// Its `5xx` answers plus failed attempts charged to it.
    pub errors: u64,
    /// Upstream exchanges under way now.
    pub in_flight: u64,
    /// Reservoir sample (Algorithm R) of the latencies of the requests it answered, ms.
    pub latencies_ms: Vec<f64>,
    /// Distinct merchant keys (`Authorization` values) it was sent, at most
    /// [`DISTINCT_KEYS_MAX`].
    pub distinct_keys: u64,
}

/// The proxy's cumulative figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProxyTotals {
    /// Client requests.
    pub requests: u64,
    /// Client requests answered `5xx`, by an instance or by the proxy.
    pub failed: u64,
    /// Of those, requests to `/v1/payment_intents...` (payments that failed).
    pub failed_payment_requests: u64,
    /// Retry attempts (attempts after a request's first).
    pub retried: u64,
    /// Requests answered `503` for want of a route with weight > 0.
    pub no_route: u64,
    /// Requests answered `413`.
    pub too_large: u64,
}

/// The traffic-splitting reverse proxy. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct Proxy {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: ProxyConfig,
    client: Client<HttpConnector, Full<Bytes>>,
    table: RwLock<Arc<Table>>,
    backends: Mutex<HashMap<u64, Arc<Backend>>>,
    totals: Totals,
    /// Randomly keyed per process: the hashes of merchant keys mean nothing elsewhere.
    key_hasher: std::collections::hash_map::RandomState,
}

#[derive(Default)]
struct Totals {
    requests: AtomicU64,
    failed: AtomicU64,
    failed_payment_requests: AtomicU64,
    retried: AtomicU64,
    no_route: AtomicU64,
    too_large: AtomicU64,
}

#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
}

struct Entry {
    route: Route,
    authority: Authority,
    version: HeaderValue,
    backend: Arc<Backend>,
}

struct Backend {
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicU64,
    /// `drain` calls waiting; the last request out notifies only when there are some.
    drainers: AtomicUsize,
    idle: Notify,
    latencies: Mutex<Reservoir>,
    /// Keyed hashes of the distinct `Authorization` values (merchant keys) it was sent, at
    /// most [`DISTINCT_KEYS_MAX`]: how many merchants a bad instance reached. Never the keys.
    keys: Mutex<std::collections::HashSet<u64>>,
}

/// Most distinct merchant keys counted per backend (past it the count reads "at least").
pub const DISTINCT_KEYS_MAX: usize = 10_000;

struct Reservoir {
    seen: u64,
    cap: usize,
    samples: Vec<f64>,
    /// Since the last [`Proxy::take_recent_latencies`]: its own reservoir of at most
    /// [`RECENT_LATENCIES_MAX`].
    recent_seen: u64,
    recent: Vec<f64>,
}

/// Most latencies kept per backend between two [`Proxy::take_recent_latencies`] calls.
pub const RECENT_LATENCIES_MAX: usize = 1024;

fn reservoir_add(samples: &mut Vec<f64>, seen: u64, cap: usize, x: f64) {
    if samples.len() < cap {
        samples.push(x);
    } else if cap > 0 {
        let j = rand::rng().random_range(0..seen);
        if let Ok(j) = usize::try_from(j)
            && j < cap
        {
            samples[j] = x;
        }
    }
}

impl Reservoir {
    fn add(&mut self, x: f64) {
        self.seen += 1;
        reservoir_add(&mut self.samples, self.seen, self.cap, x);
        self.recent_seen += 1;
        reservoir_add(&mut self.recent, self.recent_seen, RECENT_LATENCIES_MAX, x);
    }
}

impl Backend {
    fn new(cap: usize) -> Backend {
        Backend {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            drainers: AtomicUsize::new(0),
            idle: Notify::new(),
            keys: Mutex::new(std::collections::HashSet::new()),
            latencies: Mutex::new(Reservoir {
                seen: 0,
                cap,
                samples: Vec::new(),
                recent_seen: 0,
                recent: Vec::new(),
            }),
        }
    }
}

/// Counts an upstream exchange as in flight until dropped (completion, failure or
/// cancellation alike).
struct InFlight<'a>(&'a Backend);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1
            && self.0.drainers.load(Ordering::SeqCst) > 0
        {
            self.0.idle.notify_waiters();
        }
    }
}

struct Drainer<'a>(&'a Backend);

impl Drop for Drainer<'_> {
    fn drop(&mut self) {
        self.0.drainers.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Table {
    /// Weighted random pick among entries with weight > 0 whose id is not in `exclude`.
    fn pick(&self, exclude: &[u64]) -> Option<usize> {
        let eligible = |e: &Entry| e.route.weight > 0 && !exclude.contains(&e.route.id);
        let total: u64 = self
            .entries
            .iter()
            .filter(|e| eligible(e))
            .map(|e| u64::from(e.route.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut r = rand::rng().random_range(0..total);
        for (i, e) in self.entries.iter().enumerate() {
            if !eligible(e) {
                continue;
            }
            let w = u64::from(e.route.weight);
            if r < w {
                return Some(i);
            }
            r -= w;
        }
        None
    }
}

/// Why an attempt failed.
enum Failure {
    /// Nothing was sent: safe to retry whatever the method.
    NotSent,
    /// Sent; the instance may have processed it.
    Broken,
    /// The answer was bigger than `response_bytes_max`.
    TooLarge,
}

const MSG_NOT_SENT: &str = r#"{"error":{"type":"api_error","message":"no gateway instance could be reached; nothing was processed; retry the request"}}"#;
const MSG_BROKEN: &str = r#"{"error":{"type":"api_error","message":"the gateway instance closed the connection before answering; the request may have been processed; retry with the same Idempotency-Key"}}"#;
const MSG_BROKEN_RETRIED: &str = r#"{"error":{"type":"api_error","message":"no gateway instance answered; retry with the same Idempotency-Key"}}"#;
const MSG_TOO_LARGE_ANSWER: &str = r#"{"error":{"type":"api_error","message":"the gateway instance's answer exceeded the proxy's size limit; the request may have been processed"}}"#;
const MSG_TIMEOUT: &str = r#"{"error":{"type":"api_error","message":"no gateway instance answered in time; the request may have been processed; retry with the same Idempotency-Key"}}"#;
const MSG_NO_ROUTE: &str =
    r#"{"error":{"type":"api_error","message":"no gateway instance is available; retry shortly"}}"#;
const MSG_BODY_TOO_LARGE: &str = r#"{"error":{"type":"invalid_request_error","message":"the request body exceeds the size limit"}}"#;
const MSG_BAD_BODY: &str =
    r#"{"error":{"type":"invalid_request_error","message":"the request body could not be read"}}"#;
const MSG_BAD_TARGET: &str =
    r#"{"error":{"type":"invalid_request_error","message":"unsupported request target"}}"#;

fn error_response(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Removes hop-by-hop headers (and those named by `Connection`).
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    match headers.get_all(header::CONNECTION).iter().count() {
        0 => {}
        1 => {
            if let Some(v) = headers.remove(header::CONNECTION) {
                remove_listed(headers, &v);
            }
        }
        _ => {
            let vals: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            headers.remove(header::CONNECTION);
            for v in &vals {
                remove_listed(headers, v);
            }
        }
    }
    for name in [
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    if headers.keys().any(|k| k.as_str().starts_with("proxy-")) {
        let names: Vec<HeaderName> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("proxy-"))
            .cloned()
            .collect();
        for n in names {
            headers.remove(n);
        }
    }
}

fn remove_listed(headers: &mut HeaderMap, connection: &HeaderValue) {
    let Ok(s) = connection.to_str() else { return };
    for token in s.split(',') {
        let token = token.trim();
        if token.is_empty() {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            headers.remove(name);
        }
    }
}

fn is_idempotent(method: &Method, headers: &HeaderMap) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE
    ) || headers.contains_key("idempotency-key")
}

fn xff_value(ip: IpAddr) -> HeaderValue {
    HeaderValue::try_from(ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Was the request certainly not sent? A connect error, or hyper's "canceled" (it hands the
/// request back unsent).
fn not_sent(e: &hyper_util::client::legacy::Error) -> bool {
    e.is_connect()
        || std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<hyper::Error>())
            .is_some_and(hyper::Error::is_canceled)
}

impl Proxy {
    pub fn new(cfg: ProxyConfig) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT.min(cfg.upstream_timeout)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_IDLE_PER_BACKEND)
            .retry_canceled_requests(true)
            .build(connector);
        Proxy {
            inner: Arc::new(Inner {
                cfg,
                client,
                table: RwLock::new(Arc::new(Table::default())),
                backends: Mutex::new(HashMap::new()),
                totals: Totals::default(),
                key_hasher: std::collections::hash_map::RandomState::new(),
            }),
        }
    }

    /// The configuration the proxy was made with.
    pub fn config(&self) -> &ProxyConfig {
        &self.inner.cfg
    }

    /// Replaces the routing table at once. Weights are relative (the controller uses basis
    /// points out of 10 000); weight 0 = no new requests. Registers stats for new ids.
    ///
    /// When this returns, every request that picked a backend from the previous table counts
    /// in that backend's [`in_flight`](Proxy::in_flight).
    pub fn set_routes(&self, routes: Vec<Route>) {
        let mut entries = Vec::with_capacity(routes.len());
        {
            let mut backends = self
                .inner
                .backends
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            for route in routes {
                let backend =
                    Arc::clone(backends.entry(route.id).or_insert_with(|| {
                        Arc::new(Backend::new(self.inner.cfg.latency_samples_max))
                    }));
                let authority = Authority::try_from(route.addr.to_string())
                    .expect("a socket address is a valid authority");
                let version = HeaderValue::from_str(&route.label)
                    .unwrap_or_else(|_| HeaderValue::from_static("invalid-label"));
                entries.push(Entry {
                    route,
                    authority,
                    version,
                    backend,
                });
            }
        }
        let table = Arc::new(Table { entries });
        let old = std::mem::replace(
            &mut *self
                .inner
                .table
                .write()
                .unwrap_or_else(PoisonError::into_inner),
            table,
        );
        drop(old);
    }

    /// The routing table.
    pub fn routes(&self) -> Vec<Route> {
        let table = Arc::clone(
            &self
                .inner
                .table
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        );
        table.entries.iter().map(|e| e.route.clone()).collect()
    }

    fn backend(&self, id: u64) -> Option<Arc<Backend>> {
        self.inner
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// Cumulative figures for a backend since it was first routed; `None` for an id never
    /// routed or forgotten.
    pub fn stats(&self, id: u64) -> Option<BackendStats> {
        let b = self.backend(id)?;
        let latencies_ms = b
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .samples
            .clone();
        Some(BackendStats {
            requests: b.requests.load(Ordering::Relaxed),
            errors: b.errors.load(Ordering::Relaxed),
            in_flight: b.in_flight.load(Ordering::SeqCst),
            latencies_ms,
            distinct_keys: b.keys.lock().unwrap_or_else(PoisonError::into_inner).len() as u64,
        })
    }

    /// The latencies (ms) of the requests `id` answered since the last call (a reservoir of
    /// at most [`RECENT_LATENCIES_MAX`]), for per-interval percentiles; empty for an unknown id.
    pub fn take_recent_latencies(&self, id: u64) -> Vec<f64> {
        let Some(b) = self.backend(id) else { return Vec::new() };
        let mut r = b.latencies.lock().unwrap_or_else(PoisonError::into_inner);
        r.recent_seen = 0;
        std::mem::take(&mut r.recent)
    }

    /// Upstream exchanges under way to `id` now.
    pub fn in_flight(&self, id: u64) -> u64 {
        self.backend(id)
            .map_or(0, |b| b.in_flight.load(Ordering::SeqCst))
    }

    /// Waits until no request is in flight to `id` (call after its weight went to 0 or its
    /// route was removed); false if `timeout` passed first. True at once for an unknown id.
    pub async fn drain(&self, id: u64, timeout: Duration) -> bool {
        let Some(b) = self.backend(id) else {
            return true;
        };
        let deadline = Instant::now() + timeout;
        b.drainers.fetch_add(1, Ordering::SeqCst);
        let _drainer = Drainer(&b);
        loop {
            let mut notified = pin!(b.idle.notified());
            notified.as_mut().enable();
            if b.in_flight.load(Ordering::SeqCst) == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return b.in_flight.load(Ordering::SeqCst) == 0;
            }
        }
    }

    /// Drops a backend's stats (after it is stopped).
    pub fn forget(&self, id: u64) {
        self.inner
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
    }

    /// The proxy's cumulative figures.
    pub fn totals(&self) -> ProxyTotals {
        let t = &self.inner.totals;
        ProxyTotals {
            requests: t.requests.load(Ordering::Relaxed),
            failed: t.failed.load(Ordering::Relaxed),
            failed_payment_requests: t.failed_payment_requests.load(Ordering::Relaxed),
            retried: t.retried.load(Ordering::Relaxed),
            no_route: t.no_route.load(Ordering::Relaxed),
            too_large: t.too_large.load(Ordering::Relaxed),
        }
    }

    /// Serves until `shutdown` resolves, then stops accepting and waits (bounded by `grace`)
    /// for in-flight requests; connections still open after `grace` are closed.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> std::io::Result<()> {
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).keep_alive(true);
        let how = crate::listener::Listening {
            http,
            tls: self.inner.cfg.tls.clone(),
            connections_max: self.inner.cfg.connections_max,
            grace,
            name: "proxy",
        };
        let inner = Arc::clone(&self.inner);
        let service = move |peer: std::net::SocketAddr| {
            let inner = Arc::clone(&inner);
            let xff = xff_value(peer.ip());
            service_fn(move |req| {
                let inner = Arc::clone(&inner);
                let xff = xff.clone();
                async move { Ok::<_, Infallible>(inner.handle(req, xff).await) }
            })
        };
        crate::listener::serve(listener, how, service, shutdown).await
    }
}

/// A finished upstream answer.
type Answer = (http::response::Parts, Bytes);

impl Inner {
    async fn handle(&self, req: Request<Incoming>, xff: HeaderValue) -> Response<Full<Bytes>> {
        let arrival = Instant::now();
        self.totals.requests.fetch_add(1, Ordering::Relaxed);
        let payment = req.uri().path().starts_with("/v1/payment_intents");
        let resp = self.proxy(req, xff, arrival).await;
        if resp.status().is_server_error() {
            self.totals.failed.fetch_add(1, Ordering::Relaxed);
            if payment {
                self.totals.failed_payment_requests.fetch_add(1, Ordering::Relaxed);
            }
        }
        resp
    }

    fn too_large(&self) -> Response<Full<Bytes>> {
        self.totals.too_large.fetch_add(1, Ordering::Relaxed);
        error_response(StatusCode::PAYLOAD_TOO_LARGE, MSG_BODY_TOO_LARGE)
    }

    async fn proxy(
        &self,
        req: Request<Incoming>,
        xff: HeaderValue,
        arrival: Instant,
    ) -> Response<Full<Bytes>> {
        let (mut parts, body) = req.into_parts();
        if parts.method == Method::CONNECT {
            return error_response(StatusCode::METHOD_NOT_ALLOWED, MSG_BAD_TARGET);
        }
        let path = match parts.uri.path_and_query() {
            Some(pq) if pq.as_str().starts_with('/') => pq.clone(),
            Some(_) => return error_response(StatusCode::BAD_REQUEST, MSG_BAD_TARGET),
            None => PathAndQuery::from_static("/"),
        };

        // The body, whole, within the limit.
        let limit = self.cfg.body_bytes_max;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return self.too_large();
        }
        let body = match Limited::new(body, limit).collect().await {
            Ok(c) => c.to_bytes(),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => return self.too_large(),
            Err(_) => return error_response(StatusCode::BAD_REQUEST, MSG_BAD_BODY),
        };

        // The headers to forward.
        let mut headers = std::mem::take(&mut parts.headers);
        strip_hop_by_hop(&mut headers);
        headers.remove(header::EXPECT);
        append_xff(&mut headers, xff);
        let retry_safe = is_idempotent(&parts.method, &headers);

        let deadline = Instant::now() + self.cfg.upstream_timeout;
        let mut attempt: u32 = 0;
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let Some((table, idx)) = self.pick(&tried) else {
                if attempt == 0 {
                    self.totals.no_route.fetch_add(1, Ordering::Relaxed);
                    let mut resp = error_response(StatusCode::SERVICE_UNAVAILABLE, MSG_NO_ROUTE);
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    return resp;
                }
                // The routes vanished between attempts: the last failure stands.
                return error_response(StatusCode::BAD_GATEWAY, MSG_BROKEN_RETRIED);
            };
            let entry = &table.entries[idx];
            let guard = InFlight(&entry.backend);

            let mut uri_parts = http::uri::Parts::default();
            uri_parts.scheme = Some(Scheme::HTTP);
            uri_parts.authority = Some(entry.authority.clone());
            uri_parts.path_and_query = Some(path.clone());
            let Ok(uri) = Uri::from_parts(uri_parts) else {
                drop(guard);
                return error_response(StatusCode::BAD_REQUEST, MSG_BAD_TARGET);
            };
            entry.backend.requests.fetch_add(1, Ordering::Relaxed);
            if let Some(auth) = headers.get(header::AUTHORIZATION) {
                let h = self.key_hasher.hash_one(auth.as_bytes());
                let mut keys = entry.backend.keys.lock().unwrap_or_else(PoisonError::into_inner);
                if keys.len() < DISTINCT_KEYS_MAX {
                    keys.insert(h);
                }
            }
            let last = attempt >= self.cfg.retries_max;
            let mut up = Request::new(Full::new(body.clone()));
            *up.method_mut() = parts.method.clone();
            *up.uri_mut() = uri;
            *up.headers_mut() = if last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };

            let outcome = tokio::time::timeout_at(deadline, self.exchange(up)).await;
            let failure = match outcome {
                Ok(Ok((mut rparts, rbody))) => {
                    let ms = arrival.elapsed().as_secs_f64() * 1e3;
                    drop(guard);
                    let b = &entry.backend;
                    if rparts.status.is_server_error() {
                        b.errors.fetch_add(1, Ordering::Relaxed);
                    }
                    b.latencies
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .add(ms);
                    strip_hop_by_hop(&mut rparts.headers);
                    rparts.headers.insert(
                        HeaderName::from_static(VERSION_HEADER),
                        entry.version.clone(),
                    );
                    return Response::from_parts(rparts, Full::new(rbody));
                }
                Ok(Err(f)) => f,
                Err(_elapsed) => {
                    drop(guard);
                    entry.backend.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(backend = entry.route.id, "proxy: upstream timed out");
                    return error_response(StatusCode::GATEWAY_TIMEOUT, MSG_TIMEOUT);
                }
            };
            drop(guard);
            entry.backend.errors.fetch_add(1, Ordering::Relaxed);
            let (retryable, msg) = match failure {
                Failure::NotSent => (true, MSG_NOT_SENT),
                Failure::Broken if retry_safe => (true, MSG_BROKEN_RETRIED),
                Failure::Broken => (false, MSG_BROKEN),
                Failure::TooLarge => (false, MSG_TOO_LARGE_ANSWER),
            };
            tracing::debug!(
                backend = entry.route.id,
                attempt,
                retryable,
                "proxy: upstream attempt failed"
            );
            if !retryable || last || Instant::now() >= deadline {
                return error_response(StatusCode::BAD_GATEWAY, msg);
            }
            tried.push(entry.route.id);
            attempt += 1;
            self.totals.retried.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Picks a backend and counts the request in flight there, under the table's read lock (so
    /// that `set_routes` + `drain` cannot miss it). For a retry, prefers a backend not tried
    /// yet, then one other than the last that failed, then any.
    fn pick(&self, tried: &[u64]) -> Option<(Arc<Table>, usize)> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let idx = table.pick(tried).or_else(|| {
            if tried.is_empty() {
                None
            } else {
                table
                    .pick(&tried[tried.len() - 1..])
                    .or_else(|| table.pick(&[]))
            }
        })?;
        table.entries[idx]
            .backend
            .in_flight
            .fetch_add(1, Ordering::SeqCst);
        Some((Arc::clone(&table), idx))
    }

    /// One upstream attempt: send, read the whole answer within the limit.
    async fn exchange(&self, req: Request<Full<Bytes>>) -> Result<Answer, Failure> {
        let resp = self.client.request(req).await.map_err(|e| {
            if not_sent(&e) {
                tracing::debug!(error = ?e, "proxy: request not sent");
                Failure::NotSent
            } else {
                tracing::debug!(error = ?e, "proxy: exchange failed");
                Failure::Broken
            }
        })?;
        let (parts, body) = resp.into_parts();
        let max = self.cfg.response_bytes_max;
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.parse::<u64>().ok());
        if declared.is_some_and(|n| n > max as u64) {
            return Err(Failure::TooLarge);
        }
        match Limited::new(body, max).collect().await {
            Ok(c) => Ok((parts, c.to_bytes())),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(Failure::TooLarge),
            Err(_) => Err(Failure::Broken),
        }
    }
}

fn append_xff(headers: &mut HeaderMap, ip: HeaderValue) {
    const XFF: &str = "x-forwarded-for";
    if !headers.contains_key(XFF) {
        headers.insert(HeaderName::from_static(XFF), ip);
        return;
    }
    // Join the previous values and the client's address into one header.
    let mut joined: Vec<u8> = Vec::new();
    for v in headers.get_all(XFF) {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(ip.as_bytes());
    if let Ok(v) = HeaderValue::from_maybe_shared(Bytes::from(joined)) {
        headers.insert(HeaderName::from_static(XFF), v);
    }
}

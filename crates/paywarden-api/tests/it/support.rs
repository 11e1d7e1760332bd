//! The in-process harness: a fresh SQLite store in a temp dir, the sandbox acquirer and the
//! router, driven with `tower::ServiceExt::oneshot` (no sockets), plus the assertions every
//! module shares.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode};
use axum::Router;
use base64::Engine;
use http_body_util::BodyExt;
use paywarden_acquirer::{SandboxAcquirer, SandboxConfig};
use paywarden_api::{hash_key, new_secret_key, router, ApiConfig, App};
use paywarden_core::{Charge, PaymentIntent, PaymentMethod, Refund};
use paywarden_store::{ApiKeyRecord, Merchant, Page, SqliteOptions, SqliteStore, Store, Write, WriteBatch};
use serde_json::Value;
use tempfile::TempDir;
use tower::ServiceExt;

pub const FORM: &str = "application/x-www-form-urlencoded";

/// Header value that means "send no Authorization header at all".
pub const NO_AUTH: &str = "\u{0}none";

pub struct Harness {
    pub dir: TempDir,
    /// The database of this harness when the tests run on PostgreSQL (see `postgres_mode`).
    pub pg: Option<paywarden_store::testing::PgDb>,
    pub app: Arc<App>,
    pub router: Router,
    /// The first merchant's id and secret key.
    pub merchant: String,
    pub key: String,
}

/// A response, decoded.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub bytes: Vec<u8>,
    pub json: Value,
}

impl Resp {
    pub fn err(&self) -> &Value {
        &self.json["error"]
    }

    pub fn id(&self) -> String {
        self.json["id"].as_str().unwrap_or_else(|| panic!("no id in {}", self.text())).to_string()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub fn is_replay(&self) -> bool {
        self.headers.get("idempotent-replayed").and_then(|v| v.to_str().ok()) == Some("true")
    }

    /// Asserts a 200 and returns self.
    #[track_caller]
    pub fn ok(self) -> Resp {
        assert_eq!(self.status, 200, "expected 200, got {}: {}", self.status, self.text());
        self
    }
}

/// What an error response must look like.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    pub status: u16,
    pub kind: &'a str,
    pub code: Option<&'a str>,
    pub param: Option<&'a str>,
    /// A piece of the message that tells the client what to change.
    pub hint: &'a str,
}

/// A 400 invalid_request_error with `code`, `param` and a message containing `hint`.
pub fn bad<'a>(code: &'a str, param: &'a str, hint: &'a str) -> Expect<'a> {
    Expect { status: 400, kind: "invalid_request_error", code: Some(code), param: Some(param), hint }
}

/// The same without a param.
pub fn bad_state<'a>(code: &'a str, hint: &'a str) -> Expect<'a> {
    Expect { status: 400, kind: "invalid_request_error", code: Some(code), param: None, hint }
}

#[track_caller]
pub fn assert_error(r: &Resp, e: Expect<'_>, ctx: &str) {
    assert_eq!(r.status, e.status, "[{ctx}] status; body: {}", r.text());
    assert_eq!(
        r.headers.get("content-type").and_then(|v| v.to_str().ok()),
        Some("application/json"),
        "[{ctx}] content-type"
    );
    let err = r.err();
    assert!(err.is_object(), "[{ctx}] no error object in {}", r.text());
    assert_eq!(err["type"].as_str(), Some(e.kind), "[{ctx}] type; body: {}", r.text());
    assert_eq!(err["code"].as_str(), e.code, "[{ctx}] code; body: {}", r.text());
    assert_eq!(err["param"].as_str(), e.param, "[{ctx}] param; body: {}", r.text());
    let msg = err["message"].as_str().unwrap_or_default();
    assert!(msg.len() > 10, "[{ctx}] message too short: {msg:?}");
    assert!(
        msg.to_lowercase().contains(&e.hint.to_lowercase()),
        "[{ctx}] message {msg:?} does not mention {:?}",
        e.hint
    );
}

/// Everything a request could have written, for one merchant.
#[derive(Debug, PartialEq)]
pub struct Snapshot {
    pub intents: Vec<PaymentIntent>,
    pub payment_methods: Vec<PaymentMethod>,
    pub refunds: Vec<Refund>,
    pub charges: Vec<Charge>,
    pub postings: u64,
}

fn page100() -> Page {
    Page { limit: 100, starting_after: None, ending_before: None }
}

pub fn sandbox(latency: Duration) -> SandboxAcquirer {
    SandboxAcquirer::new(SandboxConfig { latency, fingerprint_key: [7; 32] })
}

/// The environment variable that runs this binary's tests on PostgreSQL (set by
/// `every_api_test_runs_on_postgresql_too`, which runs the binary again with it).
pub const BACKEND_ENV: &str = "PAYWARDEN_TEST_BACKEND";

pub fn postgres_mode() -> bool {
    std::env::var(BACKEND_ENV).is_ok_and(|v| v == "postgres")
}

/// Writes blocked behind another session: SQLite's write lock, or PostgreSQL's lock on the
/// payment_intents table (a payment's first insert waits for it).
pub enum HeldWrites {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl HeldWrites {
    pub async fn release(self) {
        match self {
            HeldWrites::Sqlite(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
            HeldWrites::Postgres(mut c) => {
                sqlx::query("COMMIT").execute(&mut c).await.unwrap();
            }
        }
    }
}

impl Harness {
    pub async fn hold_writes(&self) -> HeldWrites {
        use sqlx::Connection;
        match &self.pg {
            Some(db) => {
                let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query("BEGIN").execute(&mut c).await.unwrap();
                sqlx::query("LOCK TABLE payment_intents IN EXCLUSIVE MODE").execute(&mut c).await.unwrap();
                HeldWrites::Postgres(c)
            }
            None => {
                let url = format!("sqlite://{}", self.dir.path().join("paywarden.db").display());
                let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("BEGIN IMMEDIATE").execute(&mut c).await.unwrap();
                HeldWrites::Sqlite(c)
            }
        }
    }

    pub async fn new() -> Harness {
        Harness::with(Duration::ZERO, ApiConfig::default()).await
    }

    pub async fn with(latency: Duration, cfg: ApiConfig) -> Harness {
        Harness::with_store(latency, cfg, SqliteOptions::default()).await
    }

    pub async fn with_store(latency: Duration, cfg: ApiConfig, opts: SqliteOptions) -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, pg): (Arc<dyn Store>, _) = if postgres_mode() {
            let db = paywarden_store::testing::PgDb::create("api test").await.expect("the parent run checked that PostgreSQL answers");
            let pg_opts = paywarden_store::PgOptions { writes_max: opts.writer_queue_max, ..paywarden_store::PgOptions::default() };
            (Arc::new(paywarden_store::PgStore::open(&db.url, pg_opts).await.expect("open the postgres store")), Some(db))
        } else {
            (Arc::new(SqliteStore::open(dir.path(), opts).await.expect("open store")), None)
        };
        let app = App::new(store, Arc::new(sandbox(latency)), cfg);
        let router = router(app.clone());
        let mut h = Harness { dir, pg, app, router, merchant: String::new(), key: String::new() };
        let (merchant, key) = h.add_merchant("first").await;
        h.merchant = merchant;
        h.key = key;
        h
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.app.store()
    }

    /// Writes a merchant and a test key for it; returns (merchant id, key).
    pub async fn add_merchant(&self, name: &str) -> (String, String) {
        let id = format!("acct_{name}");
        let key = new_secret_key();
        let mut batch = WriteBatch::new();
        batch
            .push(Write::Merchant(Merchant { id: id.clone(), name: name.to_string(), created: 1_700_000_000 }))
            .push(Write::ApiKey(ApiKeyRecord {
                hash: hash_key(&key),
                merchant: id.clone(),
                prefix: key[..12].to_string(),
                created: 1_700_000_000,
            }));
        self.store().write(batch).await.expect("write merchant");
        (id, key)
    }

    /// Sends one request. `headers` are sent as given; an Authorization header with the
    /// first merchant's key is added unless `headers` has one (value [`NO_AUTH`]: none at
    /// all), and a form Content-Type is added to a non-empty body unless `headers` has one.
    pub async fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: impl Into<Vec<u8>>) -> Resp {
        let body = body.into();
        let mut req = Request::builder().method(Method::from_bytes(method.as_bytes()).expect("method")).uri(path);
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        if !has("authorization") {
            req = req.header("authorization", format!("Bearer {}", self.key));
        }
        if !has("content-type") && !body.is_empty() {
            req = req.header("content-type", FORM);
        }
        for (k, v) in headers {
            if *v != NO_AUTH {
                req = req.header(*k, *v);
            }
        }
        let req = req.body(Body::from(body)).expect("request");
        send(&self.router, req).await
    }

    pub async fn post(&self, path: &str, form: &str) -> Resp {
        self.call("POST", path, &[], form).await
    }

    pub async fn post_as(&self, key: &str, path: &str, form: &str) -> Resp {
        let auth = format!("Bearer {key}");
        self.call("POST", path, &[("authorization", &auth)], form).await
    }

    pub async fn post_idem(&self, path: &str, key: &str, form: &str) -> Resp {
        self.call("POST", path, &[("idempotency-key", key)], form).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call("GET", path, &[], "").await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> Resp {
        let auth = format!("Bearer {key}");
        self.call("GET", path, &[("authorization", &auth)], "").await
    }

    /// A new intent (200 asserted) from a form body; returns its JSON.
    pub async fn intent(&self, form: &str) -> Value {
        self.post("/v1/payment_intents", form).await.ok().json
    }

    /// An intent in `succeeded`, amount 1000 usd.
    pub async fn succeeded(&self) -> String {
        let pi = self.intent("amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true").await;
        assert_eq!(pi["status"], "succeeded");
        pi["id"].as_str().unwrap().to_string()
    }

    /// An intent in `requires_capture`, amount 1000 usd.
    pub async fn authorized(&self) -> String {
        let pi = self
            .intent("amount=1000&currency=usd&capture_method=manual&payment_method=pm_card_visa&confirm=true")
            .await;
        assert_eq!(pi["status"], "requires_capture");
        pi["id"].as_str().unwrap().to_string()
    }

    /// An intent in `requires_confirmation` (payment method attached, not confirmed).
    pub async fn unconfirmed(&self) -> String {
        let pi = self.intent("amount=1000&currency=usd&payment_method=pm_card_visa").await;
        assert_eq!(pi["status"], "requires_confirmation");
        pi["id"].as_str().unwrap().to_string()
    }

    /// An intent in `canceled`.
    pub async fn canceled(&self) -> String {
        let id = self.unconfirmed().await;
        let r = self.post(&format!("/v1/payment_intents/{id}/cancel"), "").await.ok();
        assert_eq!(r.json["status"], "canceled");
        id
    }

    /// Everything stored for `merchant` (or the first merchant).
    pub async fn snapshot_of(&self, merchant: &str) -> Snapshot {
        let s = self.store();
        let intents = s.list_payment_intents(merchant, &page100()).await.expect("list intents").data;
        let payment_methods = s.list_payment_methods(merchant, &page100()).await.expect("list pms").data;
        let refunds = s.list_refunds(merchant, None, &page100()).await.expect("list refunds").data;
        let mut charges = Vec::new();
        for pi in &intents {
            if let Some(ch) = &pi.latest_charge {
                charges.push(s.charge(merchant, ch).await.expect("charge").expect("latest charge exists"));
            }
        }
        let postings = s.audit().await.expect("audit").postings;
        Snapshot { intents, payment_methods, refunds, charges, postings }
    }

    pub async fn snapshot(&self) -> Snapshot {
        self.snapshot_of(&self.merchant).await
    }

    /// Sends a request that must be refused as `e` and must leave the store unchanged.
    pub async fn refuses(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Vec<u8>>,
        e: Expect<'_>,
        ctx: &str,
    ) -> Resp {
        let before = self.snapshot().await;
        let r = self.call(method, path, headers, body).await;
        assert_error(&r, e, ctx);
        let after = self.snapshot().await;
        assert!(before == after, "[{ctx}] a refused request wrote something:\nbefore {before:#?}\nafter {after:#?}");
        r
    }

    /// Runs a table of form bodies POSTed to `path`, each refused as its [`Expect`].
    pub async fn refuses_all(&self, path: &str, cases: &[(String, Expect<'_>)]) {
        for (body, e) in cases {
            let ctx = format!("POST {path} {}", short(body));
            self.refuses("POST", path, &[], body.as_str(), *e, &ctx).await;
        }
    }
}

pub async fn send(router: &Router, req: Request<Body>) -> Resp {
    let res = router.clone().oneshot(req).await.expect("router is infallible");
    let status = res.status();
    let headers = res.headers().clone();
    let bytes = res.into_body().collect().await.expect("body").to_bytes().to_vec();
    let json = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
    assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "500: {}", String::from_utf8_lossy(&bytes));
    Resp { status: status.as_u16(), headers, bytes, json }
}

pub fn basic(user: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:")))
}

/// `metadata[k0]=v&...` with `n` keys.
pub fn metadata_keys(n: usize) -> String {
    (0..n).map(|i| format!("metadata[k{i}]=v")).collect::<Vec<_>>().join("&")
}

/// A body shortened for assertion messages.
pub fn short(s: &str) -> String {
    if s.len() > 80 { format!("{}... ({} bytes)", s.chars().take(80).collect::<String>(), s.len()) } else { s.to_string() }
}

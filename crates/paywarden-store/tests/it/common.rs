//! Builders and helpers shared by the tests.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use paywarden_core::payment::NewIntent;
use paywarden_core::{
    Amount, CaptureMethod, CardSummary, Currency, Metadata, PaymentIntent, PaymentMethod,
};
use std::sync::Arc;

use paywarden_store::{
    Merchant, Page, SqliteOptions, SqliteStore, Store, Write, WriteBatch, WriteError,
};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;
use tokio::task::JoinHandle;

/// Every test's upper bound: nothing here may hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f)
        .await
        .expect("test timed out")
}

pub async fn open(dir: &TempDir) -> SqliteStore {
    open_with(dir, SqliteOptions::default()).await
}

pub async fn open_with(dir: &TempDir, opts: SqliteOptions) -> SqliteStore {
    SqliteStore::open(dir.path(), opts)
        .await
        .expect("open store")
}

/// A second, independent connection to the store's file (as another process would have).
pub async fn raw(db: &Path) -> SqliteConnection {
    let opts = SqliteConnectOptions::new()
        .filename(db)
        .busy_timeout(Duration::from_secs(30));
    SqliteConnection::connect_with(&opts)
        .await
        .expect("raw connection")
}

pub async fn write(store: &dyn Store, ops: Vec<Write>) -> Result<(), WriteError> {
    store.write(WriteBatch { ops }).await
}

pub fn merchant(id: &str) -> Merchant {
    Merchant {
        id: id.to_string(),
        name: format!("{id} inc"),
        created: 1_700_000_000,
    }
}

pub fn intent(
    id: &str,
    merchant: &str,
    amount: u64,
    currency: Currency,
    capture_method: CaptureMethod,
) -> PaymentIntent {
    PaymentIntent::new(NewIntent {
        id: id.to_string(),
        merchant: merchant.to_string(),
        amount: Amount::new(amount).expect("valid amount"),
        currency,
        capture_method,
        payment_method: Some("pm_card".to_string()),
        description: Some(format!("order {id}")),
        metadata: Metadata::from_pairs([("order".to_string(), id.to_string())])
            .expect("valid metadata"),
        created: 1_700_000_100,
    })
}

pub fn usd_intent(id: &str, merchant: &str) -> PaymentIntent {
    intent(id, merchant, 1000, Currency::USD, CaptureMethod::Automatic)
}

pub fn payment_method(id: &str, merchant: &str) -> PaymentMethod {
    PaymentMethod {
        id: id.to_string(),
        merchant: merchant.to_string(),
        card: CardSummary {
            brand: "visa".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2034,
            funding: "credit".into(),
            fingerprint: "fp_abc".into(),
        },
        acquirer_token: format!("tok_{id}"),
        metadata: Metadata::default(),
        created: 1_700_000_050,
    }
}

pub fn page(limit: u32, starting_after: Option<&str>, ending_before: Option<&str>) -> Page {
    Page {
        limit,
        starting_after: starting_after.map(str::to_string),
        ending_before: ending_before.map(str::to_string),
    }
}

/// Polls `cond` every few milliseconds until it holds (bounded by the caller's timeout).
pub async fn wait_until(mut cond: impl FnMut() -> bool) {
    while !cond() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Takes SQLite's write lock from a second connection, so the store's writer blocks in its
/// `BEGIN IMMEDIATE` (for up to its busy_timeout) until [`release`] is called.
pub async fn hold_write_lock(store: &SqliteStore) -> SqliteConnection {
    let mut conn = raw(store.path()).await;
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

pub async fn release(mut conn: SqliteConnection) {
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
}

pub fn spawn_write(
    store: &Arc<SqliteStore>,
    ops: Vec<Write>,
) -> JoinHandle<Result<(), WriteError>> {
    let store = store.clone();
    tokio::spawn(async move { write(&*store, ops).await })
}

/// Sends one batch and waits until the writer has taken it and is stuck behind the lock.
pub async fn park_writer(store: &Arc<SqliteStore>, id: &str) -> JoinHandle<Result<(), WriteError>> {
    let commits_before = store.stats().commits;
    let parked = spawn_write(store, vec![Write::InsertIntent(usd_intent(id, "acct_1"))]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        store.stats().writer_queue_len,
        0,
        "the writer has taken the batch"
    );
    assert!(
        !parked.is_finished(),
        "the writer must be blocked by the lock"
    );
    assert_eq!(store.stats().commits, commits_before, "nothing committed");
    parked
}

/// The backends every store test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub use paywarden_store::testing::PgDb;

/// A store of either backend.
pub enum AnyStore {
    Sqlite(SqliteStore),
    Postgres(paywarden_store::PgStore, PgDb),
}

impl std::ops::Deref for AnyStore {
    type Target = dyn Store;
    fn deref(&self) -> &(dyn Store + 'static) {
        match self {
            AnyStore::Sqlite(s) => s,
            AnyStore::Postgres(s, _) => s,
        }
    }
}

impl AnyStore {
    pub async fn close(self) {
        match self {
            AnyStore::Sqlite(s) => s.close().await,
            AnyStore::Postgres(s, db) => {
                s.close().await;
                drop(db);
            }
        }
    }

    /// Closes the store and opens it again on the same data.
    pub async fn reopen(self, dir: &TempDir) -> AnyStore {
        match self {
            AnyStore::Sqlite(s) => {
                s.close().await;
                AnyStore::Sqlite(open(dir).await)
            }
            AnyStore::Postgres(s, db) => {
                s.close().await;
                let s = paywarden_store::PgStore::open(&db.url, paywarden_store::PgOptions::default()).await.expect("reopen");
                AnyStore::Postgres(s, db)
            }
        }
    }

    /// A number read behind the store's back (`SELECT` of one BIGINT).
    pub async fn scalar(&self, sql: &str) -> i64 {
        match self {
            AnyStore::Sqlite(s) => {
                let mut db = raw(s.path()).await;
                sqlx::query_scalar(sql).fetch_one(&mut db).await.unwrap()
            }
            AnyStore::Postgres(_, db) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
            }
        }
    }

    /// Runs SQL behind the store's back (a test tampering with the books).
    pub async fn tamper(&self, sql: &str) {
        match self {
            AnyStore::Sqlite(s) => {
                let mut db = raw(s.path()).await;
                sqlx::query(sql).execute(&mut db).await.unwrap();
            }
            AnyStore::Postgres(_, db) => {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&db.url).await.unwrap();
                sqlx::query(sql).execute(&mut conn).await.unwrap();
            }
        }
    }
}

/// Opens a fresh store of `backend`: SQLite in `dir`, PostgreSQL in a database of its own.
/// None when PostgreSQL is not there and not required (the test is skipped).
pub async fn open_backend(backend: Backend, dir: &TempDir) -> Option<AnyStore> {
    match backend {
        Backend::Sqlite => Some(AnyStore::Sqlite(open(dir).await)),
        Backend::Postgres => {
            let db = PgDb::create(&format!("{dir:?}")).await?;
            let store =
                paywarden_store::PgStore::open(&db.url, paywarden_store::PgOptions::default())
                    .await
                    .expect("open the postgres store");
            Some(AnyStore::Postgres(store, db))
        }
    }
}

/// Runs each named `async fn(Backend)` as two tests, `NAME::sqlite` and `NAME::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    )*};
}

//! Builders and helpers shared by the tests.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use paywarden_core::payment::NewIntent;
use paywarden_core::{Amount, CaptureMethod, CardSummary, Currency, Metadata, PaymentIntent, PaymentMethod};
use std::sync::Arc;

use paywarden_store::{Merchant, Page, SqliteOptions, SqliteStore, Store, Write, WriteBatch, WriteError};
use tokio::task::JoinHandle;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, SqliteConnection};
use tempfile::TempDir;

/// Every test's upper bound: nothing here may hang.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(60);

pub async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TEST_TIMEOUT, f).await.expect("test timed out")
}

pub async fn open(dir: &TempDir) -> SqliteStore {
    open_with(dir, SqliteOptions::default()).await
}

pub async fn open_with(dir: &TempDir, opts: SqliteOptions) -> SqliteStore {
    SqliteStore::open(dir.path(), opts).await.expect("open store")
}

/// A second, independent connection to the store's file (as another process would have).
pub async fn raw(db: &Path) -> SqliteConnection {
    let opts = SqliteConnectOptions::new().filename(db).busy_timeout(Duration::from_secs(30));
    SqliteConnection::connect_with(&opts).await.expect("raw connection")
}

pub async fn write(store: &SqliteStore, ops: Vec<Write>) -> Result<(), WriteError> {
    store.write(WriteBatch { ops }).await
}

pub fn merchant(id: &str) -> Merchant {
    Merchant { id: id.to_string(), name: format!("{id} inc"), created: 1_700_000_000 }
}

pub fn intent(id: &str, merchant: &str, amount: u64, currency: Currency, capture_method: CaptureMethod) -> PaymentIntent {
    PaymentIntent::new(NewIntent {
        id: id.to_string(),
        merchant: merchant.to_string(),
        amount: Amount::new(amount).expect("valid amount"),
        currency,
        capture_method,
        payment_method: Some("pm_card".to_string()),
        description: Some(format!("order {id}")),
        metadata: Metadata::from_pairs([("order".to_string(), id.to_string())]).expect("valid metadata"),
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
    sqlx::query("BEGIN IMMEDIATE").execute(&mut conn).await.unwrap();
    conn
}

pub async fn release(mut conn: SqliteConnection) {
    sqlx::query("COMMIT").execute(&mut conn).await.unwrap();
}

pub fn spawn_write(store: &Arc<SqliteStore>, ops: Vec<Write>) -> JoinHandle<Result<(), WriteError>> {
    let store = store.clone();
    tokio::spawn(async move { write(&store, ops).await })
}


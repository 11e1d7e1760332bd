//! The writer queue's limit and the idempotency window, at their edges.

use std::time::Duration;

use paywarden_api::{now, ApiConfig};
use paywarden_store::{IdempotencyRecord, SqliteOptions, Write, WriteBatch};

use crate::support::*;

const PAY: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_writer_queue_is_a_503_with_retry_after_and_writes_nothing() {
    // SQLite: one batch in the writer and a queue of one. PostgreSQL: two batches in flight.
    let max = if postgres_mode() { 2 } else { 1 };
    let opts = SqliteOptions { writer_queue_max: max, busy_timeout: Duration::from_secs(30), ..SqliteOptions::default() };
    let h = Harness::with_store(Duration::ZERO, ApiConfig::default(), opts).await;
    // Another connection holds the writes back, so the first write blocks.
    let lock = h.hold_writes().await;

    let router = h.router.clone();
    let key = h.key.clone();
    let send_one = |n: usize| {
        let (router, key) = (router.clone(), key.clone());
        tokio::spawn(async move {
            let req = axum::http::Request::post("/v1/payment_intents")
                .header("authorization", format!("Bearer {key}"))
                .header("content-type", FORM)
                .header("idempotency-key", format!("q{n}"))
                .body(axum::body::Body::from(PAY))
                .unwrap();
            send(&router, req).await
        })
    };
    // The first is taken by the writer (stuck), the second fills the queue of one.
    let first = send_one(0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = send_one(1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let refused = send_one(2).await.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.err()["code"], "writer_queue_full");
    assert_eq!(refused.headers.get("retry-after").and_then(|v| v.to_str().ok()), Some("1"));
    assert!(refused.err()["message"].as_str().unwrap().contains("retry"));

    lock.release().await;
    first.await.unwrap().ok();
    second.await.unwrap().ok();
    // Nothing of the refused request was stored: its key is free and makes a new payment.
    let retried = h.post_idem("/v1/payment_intents", "q2", PAY).await.ok();
    assert!(!retried.is_replay());
    let all = h.get("/v1/payment_intents?limit=100").await.ok();
    assert_eq!(all.json["data"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn an_idempotency_key_older_than_24_hours_is_free_again() {
    let h = Harness::new().await;
    let ttl = ApiConfig::default().idempotency_ttl_s;
    let record = |key: &str, age: i64| IdempotencyRecord {
        merchant: h.merchant.clone(),
        key: key.to_string(),
        request_hash: [9; 32],
        status: 200,
        body: br#"{"stale":true}"#.to_vec(),
        created: now() - age,
    };
    let mut batch = WriteBatch::new();
    batch
        .push(Write::Idempotency { record: record("expired", ttl + 5), replaces_before: 0 })
        .push(Write::Idempotency { record: record("live", ttl - 60), replaces_before: 0 });
    h.store().write(batch).await.unwrap();

    // Past the window: the old response is neither replayed nor compared; a new payment is made.
    let r = h.post_idem("/v1/payment_intents", "expired", PAY).await.ok();
    assert!(!r.is_replay());
    assert_eq!(r.json["status"], "succeeded");
    let again = h.post_idem("/v1/payment_intents", "expired", PAY).await.ok();
    assert!(again.is_replay());
    assert_eq!(again.id(), r.id());

    // Inside the window, the stored request (other parameters) still owns the key.
    let r = h.post_idem("/v1/payment_intents", "live", PAY).await;
    assert_eq!(r.status, 400);
    assert_eq!(r.err()["type"], "idempotency_error");
}

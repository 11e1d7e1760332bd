//! The writer queue's limit and the idempotency window, at their edges.

use std::time::Duration;

use futures::StreamExt;
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

/// Admission control: past `requests_in_flight_max` API requests at once, a 429 with
/// Retry-After and Stripe's error shape, nothing written; probes and `/metrics` still answer;
/// once the load is gone, requests are admitted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_requests_in_flight_max_a_429_with_retry_after_and_nothing_written() {
    // Each payment takes 300 ms at the acquirer; two may be handled at once.
    let cfg = ApiConfig { requests_in_flight_max: 2, ..ApiConfig::default() };
    let h = Harness::with(Duration::from_millis(300), cfg).await;
    let before = h.snapshot().await.intents.len();
    let sends: Vec<_> = (0..6)
        .map(|n| {
            let (router, key) = (h.router.clone(), h.key.clone());
            tokio::spawn(async move {
                let req = axum::http::Request::post("/v1/payment_intents")
                    .header("authorization", format!("Bearer {key}"))
                    .header("content-type", FORM)
                    .header("idempotency-key", format!("adm{n}"))
                    .body(axum::body::Body::from(PAY))
                    .unwrap();
                send(&router, req).await
            })
        })
        .collect();
    // While they run, the probes and /metrics are never refused.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for probe in ["/healthz", "/readyz", "/metrics"] {
        let r = h.call("GET", probe, &[("authorization", NO_AUTH)], "").await;
        assert_eq!(r.status, 200, "{probe} under admission control");
    }
    let mut answers = Vec::new();
    for s in sends {
        answers.push(s.await.unwrap());
    }
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Resp> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!((ok, refused.len()), (2, 4), "two admitted, four refused: {:?}", answers.iter().map(|r| r.status).collect::<Vec<_>>());
    for r in refused {
        assert_error(r, Expect { status: 429, kind: "invalid_request_error", code: Some("rate_limit"), param: None, hint: "requests_in_flight_max (2)" }, "429");
        assert_eq!(r.headers.get("retry-after").map(|v| v.to_str().unwrap()), Some("1"));
    }
    assert_eq!(h.snapshot().await.intents.len(), before + 2, "a refused request writes nothing");
    // The load is gone: the refused keys were not used up, and their retries go through.
    for (n, r) in answers.iter().enumerate() {
        let again = h.post_idem("/v1/payment_intents", &format!("adm{n}"), PAY).await;
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.is_replay(), r.status == 200, "adm{n}: a replay exactly when the first try was admitted");
    }
    assert_eq!(h.snapshot().await.intents.len(), before + 6);
}

/// A body that does not arrive within `body_read_timeout`: 408, nothing written.
#[tokio::test]
async fn a_trickled_body_past_body_read_timeout_is_a_408_and_writes_nothing() {
    let cfg = ApiConfig { body_read_timeout: Duration::from_millis(200), ..ApiConfig::default() };
    let h = Harness::with(Duration::ZERO, cfg).await;
    let before = h.snapshot().await.intents.len();
    // The first bytes, then nothing.
    let stream = futures::stream::iter([Ok::<_, std::io::Error>(bytes::Bytes::from_static(b"amount=1000&"))]).chain(futures::stream::pending());
    let req = axum::http::Request::post("/v1/payment_intents")
        .header("authorization", format!("Bearer {}", h.key))
        .header("content-type", FORM)
        .header("idempotency-key", "slow-body")
        .body(axum::body::Body::from_stream(stream))
        .unwrap();
    let started = std::time::Instant::now();
    let r = send(&h.router, req).await;
    assert_error(&r, Expect { status: 408, kind: "invalid_request_error", code: Some("body_timeout"), param: None, hint: "body_read_timeout" }, "408");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(h.snapshot().await.intents.len(), before);
    // The key was not used up: the same key with a whole body works.
    let ok = h.post_idem("/v1/payment_intents", "slow-body", PAY).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
}

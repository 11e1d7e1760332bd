//! Several `paywarden serve` processes over one PostgreSQL database: requests racing on one
//! Idempotency-Key, one capture, or refunds that together pass the captured amount, split
//! between the replicas. Exactly one wins each race, the others get the right error, and
//! `ledger verify --database` passes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use paywarden_store::testing::PgDb;
use serde_json::Value;

use crate::server::{paywarden, Server};

const RACERS: usize = 12;

/// POSTs `body` to `path` on one of the replicas; returns (status, body).
async fn post(client: &reqwest::Client, srv: &Server, key: &str, path: &str, idem: &str, body: &str) -> (u16, Value) {
    let res = client
        .post(format!("{}{path}", srv.url))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .timeout(Duration::from_secs(20))
        .send()
        .await
        .expect("request");
    (res.status().as_u16(), res.json().await.unwrap_or(Value::Null))
}

/// Sends RACERS requests at once, alternating between the replicas; `idem(i)` and `body` per racer.
async fn race(client: &reqwest::Client, replicas: &[Arc<Server>; 2], key: &str, path: &str, idem: impl Fn(usize) -> String, body: &str) -> Vec<(u16, Value)> {
    let start = Arc::new(tokio::sync::Barrier::new(RACERS));
    let mut tasks = Vec::new();
    for i in 0..RACERS {
        let (client, srv, key, path, idem, body, start) =
            (client.clone(), replicas[i % 2].clone(), key.to_string(), path.to_string(), idem(i), body.to_string(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            post(&client, &srv, &key, &path, &idem, &body).await
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_on_one_postgresql_database_race_and_the_books_balance() {
    let Some(db) = PgDb::create("replicas_on_one_postgresql_database").await else { return };
    let dir = tempfile::tempdir().unwrap();
    let a = Server::spawn(dir.path(), None, &["--database", &db.url]).await;
    let b = Server::spawn(dir.path(), Some(a.key.clone()), &["--database", &db.url]).await;
    let key = a.key.clone();
    let replicas = [Arc::new(a), Arc::new(b)];
    let client = reqwest::Client::new();

    // One Idempotency-Key, sent by every racer: one payment, every answer the same payment
    // (or "in use" from a replica that was still working on it).
    let answers = race(&client, &replicas, &key, "/v1/payment_intents", |_| "race-key".into(), "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true").await;
    let ids: BTreeSet<&str> = answers.iter().filter(|(s, _)| *s == 200).map(|(_, v)| v["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1, "one payment for one key: {answers:?}");
    for (s, v) in &answers {
        assert!(*s == 200 || (*s == 409 && code(v) == "idempotency_key_in_use"), "{s} {v}");
        if *s == 200 {
            assert_eq!(v["status"], "succeeded", "{v}");
        }
    }
    let listed = client.get(format!("{}/v1/payment_intents?limit=100", replicas[1].url)).bearer_auth(&key).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 1, "{listed}");

    // One capture, attempted by every racer (each with its own key): one capture happens.
    let (s, pi) = post(&client, &replicas[0], &key, "/v1/payment_intents", "manual-1", "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true&capture_method=manual").await;
    assert_eq!((s, pi["status"].as_str()), (200, Some("requires_capture")), "{pi}");
    let pi_id = pi["id"].as_str().unwrap().to_string();
    let answers = race(&client, &replicas, &key, &format!("/v1/payment_intents/{pi_id}/capture"), |i| format!("cap-{i}"), "").await;
    let won: Vec<_> = answers.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(won.len(), 1, "{answers:?}");
    assert_eq!(won[0].1["amount_received"], 1000);
    for (s, v) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!((*s, code(v)), (400, "payment_intent_unexpected_state"), "a loser is told the payment is captured already: {v}");
    }

    // Refunds of 300 against 1,000 captured, by every racer: three fit, the rest are refused.
    let answers = race(&client, &replicas, &key, "/v1/refunds", |i| format!("ref-{i}"), &format!("payment_intent={pi_id}&amount=300")).await;
    let won = answers.iter().filter(|(s, _)| *s == 200).count();
    assert_eq!(won, 3, "{answers:?}");
    for (s, v) in answers.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(*s, 400, "{v}");
        assert!(v["error"]["message"].as_str().unwrap_or("").contains("100"), "the refusal says what is left to refund: {v}");
    }
    let get = |path: String| {
        let (client, url, key) = (client.clone(), replicas[1].url.clone(), key.clone());
        async move { client.get(format!("{url}{path}")).bearer_auth(&key).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let pi = get(format!("/v1/payment_intents/{pi_id}")).await;
    let charge = get(format!("/v1/charges/{}", pi["latest_charge"].as_str().unwrap())).await;
    assert_eq!(charge["amount_refunded"], 900, "{charge}");

    drop(replicas);
    let out = paywarden(&["ledger", "verify", "--database", &db.url]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ledger verify --database failed:\n{report}\n{}", String::from_utf8_lossy(&out.stderr));
    eprintln!("ledger verify --database after the races:\n{report}");
}

#[tokio::test]
async fn migrate_keys_and_ledger_take_a_database_url() {
    let Some(db) = PgDb::create("migrate_keys_and_ledger_take_a_database_url").await else { return };
    for _ in 0..2 {
        let out = paywarden(&["migrate", "--database", &db.url]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("schema up to date"), "{text}");
        assert!(!text.contains("password"), "{text}");
    }
    let out = paywarden(&["keys", "create", "--database", &db.url, "--merchant", "shop two"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let key = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(key.starts_with("sk_test_"), "{key}");
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), Some(key.clone()), &["--database", &db.url]).await;
    let (s, v) = srv.create_intent(&reqwest::Client::new(), &key, "k1", "amount=500&currency=eur&payment_method=pm_card_visa&confirm=true").await;
    assert_eq!((s, v["status"].as_str()), (200, Some("succeeded")), "{v}");
    drop(srv);
    let out = paywarden(&["ledger", "verify", "--database", &db.url]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));

    // Bad input: a clear error, exit 2.
    for args in [
        vec!["migrate", "--database", "mysql://x@y/z"],
        vec!["ledger", "verify", "--database", "sqlite:///tmp/x.db"],
        vec!["keys", "create", "--merchant", "m"],
    ] {
        let out = paywarden(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("--database") || err.contains("--data-dir"), "{args:?} says what to pass: {err}");
    }
    let out = paywarden(&["migrate", "--database", "postgres://postgres:s3cret@127.0.0.1:1/none"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(!err.contains("s3cret"), "the password is never printed: {err}");
}

//! `serve --fault`: injected regressions are announced and do what they say.

use std::time::{Duration, Instant};

use crate::server::Server;

const PAY: &str = "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true";

#[tokio::test]
async fn errors_fault_fails_payment_requests_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), None, &["--fault", "errors=1"]).await;
    let client = reqwest::Client::new();
    for i in 0..5 {
        let (status, body) = srv.create_intent(&client, &srv.key, &format!("e{i}"), PAY).await;
        assert_eq!(status, 500);
        assert_eq!(body["error"]["code"], "injected_fault");
    }
    // Reads and payment methods are not payment requests.
    let list: serde_json::Value =
        client.get(format!("{}/v1/payment_intents", srv.url)).bearer_auth(&srv.key).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0, "a failed request wrote nothing");
}

#[tokio::test]
async fn latency_fault_delays_payment_requests() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), None, &["--fault", "latency=300ms"]).await;
    let client = reqwest::Client::new();
    let started = Instant::now();
    let (status, _) = srv.create_intent(&client, &srv.key, "slow", PAY).await;
    assert_eq!(status, 200);
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    let started = Instant::now();
    let res = client.get(format!("{}/healthz", srv.url)).send().await.unwrap();
    assert!(res.status().is_success());
    assert!(started.elapsed() < Duration::from_millis(300), "health checks are not payment requests");
}

#[test]
fn a_bad_fault_is_refused_with_what_to_write() {
    let out = crate::server::paywarden(&["serve", "--data-dir", "/nonexistent", "--fault", "leak=lots"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("leak=lots") && err.contains("whole number of bytes"), "{err}");
}

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

/// The 2024 incident's first signal: payments failing. Half of them failing burns the error
/// budget 500x faster than sustainable; the failure-rate alert fires within seconds, is listed
/// at /admin/alerts and reaches the webhook in Alertmanager's format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_payments_fire_the_burn_rate_alert() {
    const TOKEN: &str = "admin-token-for-tests-0123456789";
    let hook = crate::receiver::Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), None, &["--fault", "errors=0.5", "--admin-token", TOKEN, "--alert-webhook", &hook.url]).await;
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in 0..300 {
        let (client, url, key) = (client.clone(), srv.url.clone(), srv.key.clone());
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{url}/v1/payment_intents"))
                .bearer_auth(&key)
                .header("Idempotency-Key", format!("burn-{i}"))
                .header("content-type", "application/x-www-form-urlencoded")
                .body(PAY)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0)
        }));
    }
    let mut failed = 0;
    for t in tasks {
        if t.await.unwrap() == 500 {
            failed += 1;
        }
    }
    assert!((90..=210).contains(&failed), "about half of 300 fail: {failed}");
    let Some(body) = hook.wait_for(Duration::from_secs(15), |b| crate::receiver::alert(b, "PaymentFailureBurnRate", "firing").is_some()).await
    else {
        let alerts = client.get(format!("{}/admin/alerts", srv.url)).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
        panic!("no PaymentFailureBurnRate at the webhook: {:?}; /admin/alerts: {alerts}", hook.bodies());
    };
    let a = crate::receiver::alert(&body, "PaymentFailureBurnRate", "firing").unwrap();
    assert!(a["annotations"]["summary"].as_str().unwrap().contains("failure rate"), "{a}");
    assert!(a["startsAt"].as_str().unwrap().ends_with('Z'));
    let alerts: serde_json::Value =
        client.get(format!("{}/admin/alerts", srv.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let active = alerts["active"].as_array().unwrap();
    assert!(active.iter().any(|x| x["name"] == "PaymentFailureBurnRate"), "{alerts}");
    assert!(alerts["failure_rate"]["short"]["failures"].as_u64().unwrap() >= 90, "{alerts}");
    assert_eq!(alerts["events"].as_array().unwrap().len(), 1, "one firing event, not one per sample: {alerts}");
}

#[test]
fn serve_and_drill_refuse_flags_out_of_range_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let d = dir.to_str().unwrap();
    for (flags, says) in [
        (vec!["--webhook-concurrency", "0"], "--webhook-concurrency must be 1 to 1024"),
        (vec!["--webhook-concurrency", "1025"], "--webhook-concurrency must be 1 to 1024"),
        (vec!["--webhook-timeout", "0s"], "--webhook-timeout must be above zero and at most 1h"),
        (vec!["--webhook-timeout", "3601s"], "--webhook-timeout must be above zero and at most 1h"),
        (vec!["--webhook-backoff-base", "0s"], "--webhook-backoff-base must be above zero"),
        (vec!["--webhook-backoff-base", "2s", "--webhook-retry-horizon", "1s"], "--webhook-retry-horizon must be at least"),
        (vec!["--memory-sample-interval", "0s"], "--memory-sample-interval must be above zero"),
        (vec!["--admin-token", "short"], "--admin-token must be at least 16"),
        (vec!["--pool-max", "0", "--database", "postgres://x@127.0.0.1:1/x"], "--pool-max must be 1 to 1000"),
        (vec!["--pool-max", "1001", "--database", "postgres://x@127.0.0.1:1/x"], "--pool-max must be 1 to 1000"),
        (vec!["--database", "mysql://x@y/z"], "--database must be a postgres:// URL"),
        (vec!["--requests-in-flight-max", "0"], "--requests-in-flight-max must be 1 to 100000"),
        (vec!["--requests-in-flight-max", "100001"], "--requests-in-flight-max must be 1 to 100000"),
        (vec!["--connections-max", "0"], "--connections-max must be 1 to 1000000"),
        (vec!["--connections-max", "1000001"], "--connections-max must be 1 to 1000000"),
        (vec!["--header-read-timeout", "999ms"], "--header-read-timeout must be 1s to 1h"),
        (vec!["--header-read-timeout", "3601s"], "--header-read-timeout must be 1s to 1h"),
    ] {
        let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--data-dir", d];
        args.extend(flags.iter().copied());
        let out = crate::server::paywarden(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flags:?}: {err}");
        assert!(err.contains(says), "{flags:?} must say {says:?}: {err}");
        assert!(!dir.exists(), "{flags:?} created the data dir");
    }
    let out_dir = tmp.path().join("drill");
    for rate in ["0", "-1", "NaN", "2000.5"] {
        let rate_flag = format!("--rate={rate}");
        let out = crate::server::paywarden(&["drill", "--scenario", "aug12", &rate_flag, "--out", out_dir.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--rate {rate}: {err}");
        assert!(err.contains("--rate must be above 0 and at most 2000"), "--rate {rate}: {err}");
        assert!(!out_dir.exists(), "--rate {rate} wrote the drill's output");
    }
}

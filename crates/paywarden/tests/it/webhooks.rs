//! Webhooks end to end: a real `paywarden serve` delivering signed events to a real receiver
//! (tests/sdk/webhook_receiver.py, which checks each signature with the official stripe-python
//! `stripe.Webhook.construct_event`), across a `kill -9`, and to an endpoint that never answers.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::server::Server;

/// Fast retries, so a test sees several attempts in a few seconds.
const FAST: [&str; 2] = ["--webhook-backoff-base", "200ms"];

/// Whether stripe-python is importable; CI must have it, elsewhere the test is skipped.
fn has_sdk(test: &str) -> bool {
    let ok = Command::new("python3").args(["-c", "import stripe"]).status().map(|s| s.success()).unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have the stripe package: python3 -m pip install -r tests/requirements.txt"
        );
        eprintln!("SKIPPED {test}: `pip install -r tests/requirements.txt` to run it");
    }
    ok
}

/// The python receiver; killed (and reaped) when dropped, also when the test panics.
struct Receiver {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Receiver {
    /// Starts it on `port` (0: any free port) and waits for its `listening PORT` line.
    async fn start(secret: &str, out: &Path, port: u16, wrong_secret: Option<&str>) -> Receiver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/webhook_receiver.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(secret).arg(out).arg(port.to_string());
        if let Some(w) = wrong_secret {
            cmd.args(["--wrong-secret", w]);
        }
        let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn python3 webhook_receiver.py");
        let stdout = child.stdout.take().expect("stdout");
        // The guard exists before the wait, so a receiver that never says it listens is killed.
        let mut rx = Receiver { child, port: 0, out: out.to_path_buf() };
        let line = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::task::spawn_blocking(move || {
                let mut line = String::new();
                BufReader::new(stdout).read_line(&mut line).ok();
                line
            }),
        )
        .await
        .expect("the receiver did not say it listens within 20 s")
        .unwrap();
        rx.port = line.trim().strip_prefix("listening ").and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("receiver said {line:?}"));
        rx
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    /// Every delivery it has recorded so far (a line being written is skipped).
    fn lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

/// A port nothing listens on (yet): bound, then released.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn get(client: &reqwest::Client, srv: &Server, path: &str) -> Value {
    let res = client.get(format!("{}{path}", srv.url)).bearer_auth(&srv.key).timeout(Duration::from_secs(10)).send().await.unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

async fn post(client: &reqwest::Client, srv: &Server, path: &str, form: &str) -> Value {
    let res = client
        .post(format!("{}{path}", srv.url))
        .bearer_auth(&srv.key)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(form.to_string())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let v: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "POST {path} {form}: {v}");
    v
}

/// Creates an endpoint; returns its id and its `whsec_` secret.
async fn create_endpoint(client: &reqwest::Client, srv: &Server, url: &str, events: &str) -> (String, String) {
    let v = post(client, srv, "/v1/webhook_endpoints", &format!("url={url}&enabled_events[]={events}")).await;
    let id = v["id"].as_str().unwrap().to_string();
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(id.starts_with("we_"), "{v}");
    assert!(secret.starts_with("whsec_"), "{v}");
    assert_eq!(v["status"], "enabled", "{v}");
    (id, secret)
}

/// A confirmed card payment; returns the intent id.
async fn pay(client: &reqwest::Client, srv: &Server, idem: &str) -> String {
    let (status, v) = srv.create_intent(client, &srv.key, idem, "amount=1000&currency=usd&payment_method=pm_card_visa&confirm=true").await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    v["id"].as_str().unwrap().to_string()
}

async fn deliveries(client: &reqwest::Client, srv: &Server, endpoint: &str) -> Vec<Value> {
    get(client, srv, &format!("/v1/webhook_endpoints/{endpoint}/deliveries?limit=100")).await["data"].as_array().unwrap().clone()
}

/// Every event of the merchant, newest first, through the list's pagination.
async fn all_events(client: &reqwest::Client, srv: &Server) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut path = "/v1/events?limit=100".to_string();
        if let Some(a) = &after {
            path.push_str(&format!("&starting_after={a}"));
        }
        let v = get(client, srv, &path).await;
        let data = v["data"].as_array().unwrap();
        out.extend(data.iter().cloned());
        after = data.last().map(|e| e["id"].as_str().unwrap().to_string());
        if !v["has_more"].as_bool().unwrap() || data.is_empty() {
            return out;
        }
    }
}

#[tokio::test]
async fn a_local_receiver_gets_payment_intent_succeeded_verified_by_stripe_python_and_a_wrong_secret_fails() {
    if !has_sdk("a_local_receiver_gets_payment_intent_succeeded_verified_by_stripe_python_and_a_wrong_secret_fails") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(&dir.path().join("data"), None, &FAST).await;
    let client = reqwest::Client::new();

    // The secret is shown at creation, so the endpoint comes first (no events exist yet),
    // then the receiver with that secret, then the endpoint is pointed at it.
    let (we, secret) = create_endpoint(&client, &srv, "http://127.0.0.1:9/not-yet", "payment_intent.succeeded").await;
    let wrong = format!("whsec_wrong{}", &secret["whsec_".len()..]);
    let rx = Receiver::start(&secret, &dir.path().join("out.jsonl"), 0, Some(&wrong)).await;
    let updated = post(&client, &srv, &format!("/v1/webhook_endpoints/{we}"), &format!("url={}", rx.url())).await;
    assert_eq!(updated["url"], rx.url());
    assert!(updated["secret"].is_null(), "the secret is shown only at creation: {updated}");

    let pi = pay(&client, &srv, "wh-a-1").await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let line = loop {
        if let Some(l) = rx.lines().into_iter().find(|l| l["type"] == "payment_intent.succeeded") {
            break l;
        }
        assert!(Instant::now() < deadline, "no payment_intent.succeeded within 20 s; receiver has {:?}", rx.lines());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(line["verified"], true, "stripe-python must accept paywarden's signature: {line}");
    assert_eq!(line["wrong_secret_rejected"], true, "a wrong secret must not verify: {line}");
    assert_eq!(line["object"], "payment_intent", "{line}");
    let evt = line["id"].as_str().unwrap().to_string();

    // The API agrees: delivered on the first attempt, nothing pending.
    let deadline = Instant::now() + Duration::from_secs(10);
    let e = loop {
        let e = get(&client, &srv, &format!("/v1/events/{evt}")).await;
        if e["pending_webhooks"] == 0 {
            break e;
        }
        assert!(Instant::now() < deadline, "the delivery was not recorded: {e}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(e["type"], "payment_intent.succeeded");
    assert_eq!(e["data"]["object"]["id"], pi.as_str(), "{e}");
    let attempts = e["delivery_attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "one endpoint, one delivery: {e}");
    assert_eq!(attempts[0]["state"], "delivered", "{e}");
    assert_eq!(attempts[0]["webhook_endpoint"], we.as_str(), "{e}");
    assert_eq!(attempts[0]["last_status"], 200, "{e}");
    assert!(attempts[0]["attempts"].as_u64().unwrap() >= 1, "{e}");

    // The filter: payment_intent.created happened too, but is not queued for this endpoint
    // and never arrives.
    let created: Vec<Value> = all_events(&client, &srv).await.into_iter().filter(|e| e["type"] == "payment_intent.created").collect();
    assert_eq!(created.len(), 1, "{created:?}");
    let c = get(&client, &srv, &format!("/v1/events/{}", created[0]["id"].as_str().unwrap())).await;
    assert_eq!(c["pending_webhooks"], 0, "{c}");
    assert!(c["delivery_attempts"].as_array().unwrap().is_empty(), "a filtered-out type gets no delivery: {c}");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let all = rx.lines();
    assert_eq!(all.len(), 1, "only payment_intent.succeeded may arrive, once: {all:?}");
}

#[tokio::test]
async fn events_pending_at_kill_9_are_delivered_after_restart_each_at_least_once() {
    if !has_sdk("events_pending_at_kill_9_are_delivered_after_restart_each_at_least_once") {
        return;
    }
    const N: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let srv = Server::spawn(&data, None, &FAST).await;
    let key = srv.key.clone();
    let client = reqwest::Client::new();

    // Nothing listens there until after the crash.
    let port = free_port();
    let (we, secret) = create_endpoint(&client, &srv, &format!("http://127.0.0.1:{port}/hook"), "*").await;
    let mut intents = BTreeSet::new();
    for i in 0..N {
        intents.insert(pay(&client, &srv, &format!("wh-b-{i}")).await);
    }

    let events = all_events(&client, &srv).await;
    assert_eq!(events.len(), 2 * N, "created + succeeded per payment, listed over pages");
    let before: BTreeSet<String> = events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(before.len(), 2 * N, "event ids are unique");
    for kind in ["payment_intent.created", "payment_intent.succeeded"] {
        let of: BTreeSet<&str> = events.iter().filter(|e| e["type"] == kind).map(|e| e["data"]["object"]["id"].as_str().unwrap()).collect();
        assert_eq!(of, intents.iter().map(String::as_str).collect(), "one {kind} per payment");
    }
    let two = get(&client, &srv, "/v1/events?limit=2").await;
    assert_eq!(two["data"].as_array().unwrap().len(), 2);
    assert_eq!(two["has_more"], true);

    // Queued, and being retried against the closed port.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = deliveries(&client, &srv, &we).await;
        assert!(d.len() <= 2 * N, "at most one delivery per event: {d:?}");
        assert!(d.iter().all(|d| d["state"] == "pending"), "nothing listens, nothing is delivered: {d:?}");
        if d.len() == 2 * N && d.iter().any(|d| d["attempts"].as_u64().unwrap() >= 1 && !d["last_error"].is_null()) {
            break;
        }
        assert!(Instant::now() < deadline, "not every event claimed, or no failed attempt recorded, within 10 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one = get(&client, &srv, &format!("/v1/events/{}", events[0]["id"].as_str().unwrap())).await;
    assert_eq!(one["pending_webhooks"], 1, "{one}");

    srv.kill9();

    let rx = Receiver::start(&secret, &dir.path().join("out.jsonl"), port, None).await;
    assert_eq!(rx.port, port);
    let srv = Server::spawn(&data, Some(key), &FAST).await;

    let deadline = Instant::now() + Duration::from_secs(40);
    let lines = loop {
        let lines = rx.lines();
        let got: BTreeSet<String> = lines.iter().filter_map(|l| l["id"].as_str().map(String::from)).collect();
        if before.is_subset(&got) {
            break lines;
        }
        let missing = before.difference(&got).count();
        assert!(Instant::now() < deadline, "{missing} of {} events not delivered 40 s after the restart", before.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(lines.iter().all(|l| l["verified"] == true), "every delivery verifies with stripe-python: {lines:?}");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        *per_id.entry(l["id"].as_str().unwrap()).or_default() += 1;
    }
    let unexpected: Vec<&&str> = per_id.keys().filter(|id| !before.contains(**id)).collect();
    assert!(unexpected.is_empty(), "no event was made after the crash: {unexpected:?}");
    let duplicates = lines.len() - per_id.len();

    // The API agrees once the attempts are recorded.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = deliveries(&client, &srv, &we).await;
        if d.len() == 2 * N && d.iter().all(|d| d["state"] == "delivered") {
            break;
        }
        assert!(Instant::now() < deadline, "deliveries not all marked delivered: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "webhooks after kill -9: {} events pending at the crash, all delivered and verified after the restart; {} deliveries, {duplicates} duplicate(s)",
        before.len(),
        lines.len()
    );
}

#[tokio::test]
async fn an_endpoint_that_keeps_failing_is_retried_with_backoff_and_visible_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let srv = Server::spawn(dir.path(), None, &["--webhook-backoff-base", "200ms", "--webhook-retry-horizon", "3s"]).await;
    let client = reqwest::Client::new();
    let (we, _secret) = create_endpoint(&client, &srv, &format!("http://127.0.0.1:{}/hook", free_port()), "*").await;
    let first_paid = Instant::now();
    pay(&client, &srv, "wh-c-1").await;

    // Retried: several attempts, each refused, the reason visible.
    let deadline = Instant::now() + Duration::from_secs(15);
    let d = loop {
        let d = deliveries(&client, &srv, &we).await;
        assert!(d.len() <= 2, "created + succeeded: {d:?}");
        if d.len() == 2 && d.iter().all(|d| d["attempts"].as_u64().unwrap() >= 2) {
            break d;
        }
        assert!(Instant::now() < deadline, "not retried within 15 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for x in &d {
        let err = x["last_error"].as_str().unwrap_or_default().to_lowercase();
        assert!(err.contains("connect"), "the error says the connection failed: {x}");
        assert!(x["last_status"].is_null(), "no HTTP answer: {x}");
        assert!(x["last_attempt_at"].as_i64().is_some(), "{x}");
    }

    // Given up after the 3 s horizon.
    let deadline = Instant::now() + Duration::from_secs(15);
    let d = loop {
        let d = deliveries(&client, &srv, &we).await;
        if d.iter().all(|d| d["state"] == "failed") {
            break d;
        }
        assert!(Instant::now() < deadline, "not given up within 15 s: {d:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let attempts: Vec<u64> = d.iter().map(|d| d["attempts"].as_u64().unwrap()).collect();
    // With a 200 ms base doubling to a 3 s horizon there is room for a handful of attempts,
    // not dozens: the delays grow.
    assert!(attempts.iter().all(|&a| (2..=8).contains(&a)), "backoff, not a hot loop: {attempts:?}");
    assert!(d.iter().all(|d| d["next_attempt_at"].is_null()), "a failed delivery has no next attempt: {d:?}");

    // The endpoint is disabled by the first attempt made once it has failed, without a
    // success, for the whole horizon (3 s after its first failure). The first payment's
    // deliveries give up within the horizon of their event, so a later event's attempt is what
    // finds the endpoint failing that long: another payment, 4 s after the first.
    tokio::time::sleep_until((first_paid + Duration::from_secs(4)).into()).await;
    let second = pay(&client, &srv, "wh-c-2").await;
    let deadline = Instant::now() + Duration::from_secs(15);
    let ep = loop {
        let ep = get(&client, &srv, &format!("/v1/webhook_endpoints/{we}")).await;
        if ep["status"] == "disabled" {
            break ep;
        }
        assert!(Instant::now() < deadline, "endpoint not disabled within 15 s: {ep}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let reason = ep["disabled_reason"].as_str().unwrap_or_default();
    assert!(reason.to_lowercase().contains("connect"), "the reason names the last error: {ep}");
    assert!(ep["secret"].is_null(), "{ep}");

    // A disabled endpoint gets no more attempts: the second payment's deliveries stay queued
    // (re-enabling the endpoint resumes them) and new events queue nothing for it. (A moment
    // first, for an attempt that was in flight when the endpoint was disabled to be recorded.)
    tokio::time::sleep(Duration::from_millis(300)).await;
    let evts = get(&client, &srv, "/v1/events?limit=2").await;
    let queued = |e: &Value| (e["pending_webhooks"].clone(), e["delivery_attempts"][0]["attempts"].clone());
    let mut before = Vec::new();
    for e in evts["data"].as_array().unwrap() {
        assert_eq!(e["data"]["object"]["id"], second.as_str());
        let one = get(&client, &srv, &format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
        assert_eq!(one["pending_webhooks"], 1, "queued while disabled: {one}");
        before.push(one);
    }
    let third = pay(&client, &srv, "wh-c-3").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    for e in &before {
        let now = get(&client, &srv, &format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
        assert_eq!(queued(&now), queued(e), "no attempt while disabled: {now}");
    }
    let evts = get(&client, &srv, "/v1/events?limit=2").await;
    for e in evts["data"].as_array().unwrap() {
        assert_eq!(e["data"]["object"]["id"], third.as_str());
        let one = get(&client, &srv, &format!("/v1/events/{}", e["id"].as_str().unwrap())).await;
        assert_eq!(one["pending_webhooks"], 0, "a disabled endpoint is sent no new events: {one}");
    }

    let text = client.get(format!("{}/metrics", srv.url)).send().await.unwrap().text().await.unwrap();
    let count = |outcome: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with("paywarden_webhook_attempts_total{") && l.contains(&format!("outcome=\"{outcome}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(count("retry") > 0.0, "retries are counted:\n{text}");
    assert!(count("gave_up") >= 2.0, "both given-up deliveries are counted:\n{text}");
    assert_eq!(count("delivered"), 0.0, "nothing was delivered");
}

#[tokio::test]
async fn two_instances_on_one_data_dir_send_each_event_once() {
    // As under `paywarden up`, where stable, canary and baseline share the data dir: each runs a
    // delivery loop, and an endpoint's events are claimed by one of them (its cursor moves in
    // the claim), so a healthy receiver sees every event once, not once per instance.
    if !has_sdk("two_instances_on_one_data_dir_send_each_event_once") {
        return;
    }
    const N: usize = 30;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Supervised by this process, as `up`'s instances are by `up`: they share the data dir
    // (a lone `serve` would refuse a data dir another one holds).
    let pid = std::process::id().to_string();
    let supervised = [("PAYWARDEN_SUPERVISOR_PID", pid.as_str())];
    let a = Server::spawn_with_env(&data, None, &FAST, &supervised).await;
    let b = Server::spawn_with_env(&data, Some(a.key.clone()), &FAST, &supervised).await;
    let client = reqwest::Client::new();
    let (we, secret) = create_endpoint(&client, &a, "http://127.0.0.1:9/not-yet", "*").await;
    let rx = Receiver::start(&secret, &dir.path().join("out.jsonl"), 0, None).await;
    post(&client, &b, &format!("/v1/webhook_endpoints/{we}"), &format!("url={}", rx.url())).await;
    for i in 0..N {
        pay(&client, if i % 2 == 0 { &a } else { &b }, &format!("wh-d-{i}")).await;
    }
    let events: BTreeSet<String> = all_events(&client, &a).await.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(events.len(), 2 * N);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: BTreeSet<String> = rx.lines().iter().filter_map(|l| l["id"].as_str().map(String::from)).collect();
        if events.is_subset(&got) {
            break;
        }
        assert!(Instant::now() < deadline, "{} of {} events not delivered within 30 s", events.difference(&got).count(), events.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A moment for a duplicate, were there one, to arrive.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lines = rx.lines();
    assert!(lines.iter().all(|l| l["verified"] == true), "{lines:?}");
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &lines {
        *per_id.entry(l["id"].as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once by the two instances: {twice:?}");
    assert_eq!(per_id.len(), 2 * N);
}

//! The crash harness: `kill -9` at random moments during a stream of confirmations and
//! captures, `CYCLES` times (20 here; `PAYWARDEN_CRASH_CYCLES=200` for a long run, figures
//! in RELIABILITY.md), restarting each time. After every restart: every acknowledged payment
//! and capture is there in its acknowledged state, and every request sent (acknowledged or
//! cut off) retried twice with its Idempotency-Key converges on one answer, the second a
//! replay. At the end: one payment per key, no payment captured twice (a capture with a new
//! key is refused), and `ledger verify` passes. It prints the counts.
//!
//! Run alone: `PAYWARDEN_CRASH_CYCLES=200 cargo test -p paywarden --test it crash -- --nocapture`

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::Value;

use crate::server::{paywarden, Server};

const CLIENTS: usize = 8;
/// Kill -9 cycles in CI (the issue asks for at least 20).
const CYCLES_DEFAULT: usize = 20;
/// The load runs this long (uniformly at random) before the kill.
const LOAD_MS: std::ops::Range<u64> = 50..800;

/// What a request was and what came back.
#[derive(Clone)]
struct Sent {
    cycle: usize,
    path: String,
    body: String,
}

/// Idempotency-Key -> (intent id, status, amount_received).
type Acks = BTreeMap<String, (String, String, u64)>;

#[derive(Default)]
struct Log {
    /// Idempotency-Key -> the request, for every request sent.
    sent: BTreeMap<String, Sent>,
    /// Idempotency-Key -> (intent id, status, amount_received) for every 200 received.
    acked: Acks,
    /// Intents a capture was acknowledged for, with the amount captured.
    captured: BTreeMap<String, u64>,
}

fn body_for(n: usize) -> String {
    if n.is_multiple_of(3) {
        format!("amount={}&currency=usd&payment_method=pm_card_visa&confirm=true&capture_method=manual", 100 + n)
    } else {
        format!("amount={}&currency=usd&payment_method=pm_card_visa&confirm=true", 100 + n)
    }
}

fn cycles() -> usize {
    std::env::var("PAYWARDEN_CRASH_CYCLES").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(CYCLES_DEFAULT)
}

fn ack_of(v: &Value) -> (String, String, u64) {
    (v["id"].as_str().unwrap().to_string(), v["status"].as_str().unwrap().to_string(), v["amount_received"].as_u64().unwrap())
}

/// One client's stream until the server dies: create and confirm; a manual-capture payment
/// that comes back `requires_capture` is captured next, with its own Idempotency-Key.
async fn stream(url: String, key: String, log: Arc<Mutex<Log>>, client: reqwest::Client, cycle: usize, c: usize) {
    for n in 0.. {
        let idem = format!("crash-{cycle}-{c}-{n}");
        let sent = Sent { cycle, path: "/v1/payment_intents".into(), body: body_for(n * CLIENTS + c) };
        let Some(v) = send(&url, &key, &client, &log, &idem, sent).await else { return };
        if v["status"] == "requires_capture" {
            let id = v["id"].as_str().unwrap();
            let sent = Sent { cycle, path: format!("/v1/payment_intents/{id}/capture"), body: String::new() };
            if send(&url, &key, &client, &log, &format!("{idem}-capture"), sent).await.is_none() {
                return;
            }
        }
    }
}

/// Sends and logs; None once the server is gone.
async fn send(url: &str, key: &str, client: &reqwest::Client, log: &Mutex<Log>, idem: &str, sent: Sent) -> Option<Value> {
    log.lock().unwrap().sent.insert(idem.to_string(), sent.clone());
    let res = client
        .post(format!("{url}{}", sent.path))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(sent.body)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    assert_eq!(res.status(), 200, "{idem}: unexpected status before the crash");
    let v = res.json::<Value>().await.ok()?;
    let mut l = log.lock().unwrap();
    if idem.ends_with("-capture") {
        l.captured.insert(v["id"].as_str().unwrap().to_string(), v["amount_received"].as_u64().unwrap());
    }
    l.acked.insert(idem.to_string(), ack_of(&v));
    Some(v)
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path()).await;
    let key = srv.key.clone();
    let log = Arc::new(Mutex::new(Log::default()));
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();
    let cycles = cycles();
    let started = Instant::now();
    let mut cut_off = 0;

    for cycle in 0..cycles {
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|c| tokio::spawn(stream(srv.url.clone(), key.clone(), log.clone(), client.clone(), cycle, c)))
            .collect();
        // Pull the plug at a random moment, mid-flight.
        let wait = rand::rng().random_range(LOAD_MS);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        srv.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        srv = Server::restart(dir.path(), &key).await;
        cut_off += check(&srv, &key, &log, &client, cycle).await;
    }

    // Every acknowledged answer, once more after the last restart.
    let (creates, acked, captured) = {
        let l = log.lock().unwrap();
        (l.sent.keys().filter(|k| !k.ends_with("-capture")).count(), l.acked.clone(), l.captured.clone())
    };
    for (idem, (id, status, received)) in acked.iter().filter(|(k, _)| !k.ends_with("-capture")) {
        let v = get(&srv, &key, &client, id).await;
        let (status, received) = match captured.get(id) {
            Some(amount) => ("succeeded", *amount),
            None => (status.as_str(), *received),
        };
        assert_eq!((v["status"].as_str(), v["amount_received"].as_u64()), (Some(status), Some(received)), "{idem}: {v}");
    }
    let listed = count_intents(&srv, &key, &client).await;
    assert_eq!(listed, creates, "every create's key must map to exactly one payment");
    // Nothing is captured twice: a capture with a new key is refused.
    for id in captured.keys().take(20) {
        let res = client
            .post(format!("{}/v1/payment_intents/{id}/capture", srv.url))
            .bearer_auth(&key)
            .header("Idempotency-Key", format!("again-{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{id}: a second capture");
        let v: Value = res.json().await.unwrap();
        assert_eq!(v["error"]["code"], "payment_intent_unexpected_state", "{v}");
    }
    drop(srv);
    let out = paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!(
        "crash harness: {cycles} kill -9 cycles in {:.0} s; {creates} payments, {} captures acknowledged, {cut_off} requests cut off by a kill and retried to one outcome; every acknowledged answer intact; ledger balanced",
        started.elapsed().as_secs_f64(),
        captured.len()
    );
}

/// After the restart that followed `cycle`: that cycle's acknowledged answers are intact, and
/// each of its requests retried twice converges on one answer, the second a replay. Returns
/// how many had no answer before the kill.
async fn check(srv: &Server, key: &str, log: &Arc<Mutex<Log>>, client: &reqwest::Client, cycle: usize) -> usize {
    let (sent, acked): (Vec<(String, Sent)>, Acks) = {
        let l = log.lock().unwrap();
        (l.sent.iter().filter(|(_, s)| s.cycle == cycle).map(|(k, s)| (k.clone(), s.clone())).collect(), l.acked.clone())
    };
    let mut cut_off = 0;
    for (idem, s) in &sent {
        let (first, replayed_a) = post(srv, key, client, idem, s).await;
        let (second, replayed_b) = post(srv, key, client, idem, s).await;
        assert_eq!(first, second, "{idem}: retries must converge");
        assert!(replayed_b, "{idem}: the second retry must be a replay");
        match acked.get(idem) {
            Some((id, status, received)) => {
                assert!(replayed_a, "{idem}: an acknowledged request must replay");
                assert_eq!(ack_of(&first), (id.clone(), status.clone(), *received), "{idem}: the acknowledged answer must survive");
            }
            None => {
                cut_off += 1;
                let mut l = log.lock().unwrap();
                if idem.ends_with("-capture") {
                    l.captured.insert(first["id"].as_str().unwrap().to_string(), first["amount_received"].as_u64().unwrap());
                }
                l.acked.insert(idem.clone(), ack_of(&first));
            }
        }
    }
    cut_off
}

async fn post(srv: &Server, key: &str, client: &reqwest::Client, idem: &str, s: &Sent) -> (Value, bool) {
    let res = client
        .post(format!("{}{}", srv.url, s.path))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(s.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{idem}");
    let replayed = res.headers().get("idempotent-replayed").is_some();
    (res.json().await.unwrap(), replayed)
}

async fn get(srv: &Server, key: &str, client: &reqwest::Client, id: &str) -> Value {
    client.get(format!("{}/v1/payment_intents/{id}", srv.url)).bearer_auth(key).send().await.unwrap().json().await.unwrap()
}

async fn count_intents(srv: &Server, key: &str, client: &reqwest::Client) -> usize {
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/payment_intents?limit=100", srv.url);
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let v: Value = client.get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        let data = v["data"].as_array().unwrap();
        n += data.len();
        after = data.last().map(|d| d["id"].as_str().unwrap().to_string());
        if !v["has_more"].as_bool().unwrap() {
            return n;
        }
    }
}

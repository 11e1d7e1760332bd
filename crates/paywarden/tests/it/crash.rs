//! `kill -9` during a stream of confirmations: every acknowledged payment survives with its
//! acknowledged state, retries with the same Idempotency-Key converge on one payment, and
//! the ledger balances.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::server::{paywarden, Server};

const CLIENTS: usize = 8;
const CYCLES: usize = 3;

#[derive(Default)]
struct Log {
    /// Idempotency-Key -> request body, for every request sent.
    sent: BTreeMap<String, String>,
    /// Idempotency-Key -> (intent id, status, amount_received) for every 200 received.
    acked: BTreeMap<String, (String, String, u64)>,
}

fn body_for(n: usize) -> String {
    if n.is_multiple_of(4) {
        format!("amount={}&currency=usd&payment_method=pm_card_visa&confirm=true&capture_method=manual", 100 + n)
    } else {
        format!("amount={}&currency=usd&payment_method=pm_card_visa&confirm=true", 100 + n)
    }
}

#[tokio::test]
async fn kill_9_during_confirmations_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut srv = Server::start(dir.path()).await;
    let key = srv.key.clone();
    let log = Arc::new(Mutex::new(Log::default()));
    let client = reqwest::Client::builder().pool_max_idle_per_host(0).build().unwrap();

    for cycle in 0..CYCLES {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            let (url, key, log, client) = (srv.url.clone(), key.clone(), log.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0.. {
                    let idem = format!("crash-{cycle}-{c}-{n}");
                    let body = body_for(n * CLIENTS + c);
                    log.lock().unwrap().sent.insert(idem.clone(), body.clone());
                    let res = client
                        .post(format!("{url}/v1/payment_intents"))
                        .bearer_auth(&key)
                        .header("Idempotency-Key", &idem)
                        .header("Content-Type", "application/x-www-form-urlencoded")
                        .body(body)
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    let Ok(res) = res else { return };
                    assert_eq!(res.status(), 200, "unexpected status before the crash");
                    let Ok(v) = res.json::<serde_json::Value>().await else { return };
                    let ack = (
                        v["id"].as_str().unwrap().to_string(),
                        v["status"].as_str().unwrap().to_string(),
                        v["amount_received"].as_u64().unwrap(),
                    );
                    log.lock().unwrap().acked.insert(idem, ack);
                }
            }));
        }
        // Let the stream run, then pull the plug mid-flight.
        let before = log.lock().unwrap().acked.len();
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if log.lock().unwrap().acked.len() >= before + 60 {
                break;
            }
        }
        srv.kill9();
        for t in tasks {
            t.await.unwrap();
        }
        srv = Server::restart(dir.path(), &key).await;
        check(&srv, &key, &log, &client).await;
    }
    let total = log.lock().unwrap().sent.len();
    let listed = count_intents(&srv, &key, &client).await;
    assert_eq!(listed, total, "every key must map to exactly one intent");
    drop(srv);
    let out = paywarden(&["ledger", "verify", "--data-dir", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    eprintln!("crash test: {CYCLES} kill -9 cycles, {total} payments, all acknowledged ones intact, ledger balanced");
}

/// After a restart: acknowledged payments are intact, and every request sent is retried
/// until it converges on one answer.
async fn check(srv: &Server, key: &str, log: &Arc<Mutex<Log>>, client: &reqwest::Client) {
    let (sent, acked) = {
        let l = log.lock().unwrap();
        (l.sent.clone(), l.acked.clone())
    };
    assert!(!acked.is_empty());
    for (idem, (id, status, received)) in &acked {
        let v: serde_json::Value = client
            .get(format!("{}/v1/payment_intents/{id}", srv.url))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["status"].as_str(), Some(status.as_str()), "{idem}: {v}");
        assert_eq!(v["amount_received"].as_u64(), Some(*received), "{idem}");
    }
    for (idem, body) in &sent {
        let (first, replayed_a) = post(srv, key, client, idem, body).await;
        let (second, replayed_b) = post(srv, key, client, idem, body).await;
        assert_eq!(first, second, "{idem}: retries must converge");
        assert!(replayed_b, "{idem}: the second retry must be a replay");
        if let Some((id, _, _)) = acked.get(idem) {
            assert!(replayed_a, "{idem}: an acknowledged request must replay");
            assert_eq!(first["id"].as_str(), Some(id.as_str()));
        }
        log.lock().unwrap().acked.entry(idem.clone()).or_insert((
            first["id"].as_str().unwrap().to_string(),
            first["status"].as_str().unwrap().to_string(),
            first["amount_received"].as_u64().unwrap(),
        ));
    }
}

async fn post(srv: &Server, key: &str, client: &reqwest::Client, idem: &str, body: &str) -> (serde_json::Value, bool) {
    let res = client
        .post(format!("{}/v1/payment_intents", srv.url))
        .bearer_auth(key)
        .header("Idempotency-Key", idem)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{idem}");
    let replayed = res.headers().get("idempotent-replayed").is_some();
    (res.json().await.unwrap(), replayed)
}

async fn count_intents(srv: &Server, key: &str, client: &reqwest::Client) -> usize {
    let mut n = 0;
    let mut after: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/payment_intents?limit=100", srv.url);
        if let Some(a) = &after {
            url.push_str(&format!("&starting_after={a}"));
        }
        let v: serde_json::Value = client.get(url).bearer_auth(key).send().await.unwrap().json().await.unwrap();
        let data = v["data"].as_array().unwrap();
        n += data.len();
        after = data.last().map(|d| d["id"].as_str().unwrap().to_string());
        if !v["has_more"].as_bool().unwrap() {
            return n;
        }
    }
}

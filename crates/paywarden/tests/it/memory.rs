//! The memory guard end to end: under steady payment traffic, `serve --fault leak=4096` is
//! reported `leaking` at /admin/memory/leak-report (and on /metrics); the same traffic without
//! the fault stays `ok`. Both servers run side by side for the same time.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::server::Server;

const TOKEN: &str = "admin-token-for-tests-0123456789";
const RATE_PER_S: u64 = 150;
const DEADLINE: Duration = Duration::from_secs(90);

async fn state(client: &reqwest::Client, srv: &Server) -> serde_json::Value {
    client
        .get(format!("{}/admin/memory/leak-report", srv.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Open-loop-ish steady traffic: RATE_PER_S payments a second until `stop`.
fn drive(srv: &Server, stop: Arc<AtomicBool>, done: Arc<AtomicU64>) -> tokio::task::JoinHandle<()> {
    let (url, key) = (srv.url.clone(), srv.key.clone());
    tokio::spawn(async move {
        let client = reqwest::Client::new();
        let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE_PER_S));
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            tick.tick().await;
            n += 1;
            let (client, url, key, done) = (client.clone(), url.clone(), key.clone(), done.clone());
            tokio::spawn(async move {
                let res = client
                    .post(format!("{url}/v1/payment_intents"))
                    .bearer_auth(&key)
                    .header("Idempotency-Key", format!("mem-{n}"))
                    .form(&[("amount", "1000"), ("currency", "usd"), ("payment_method", "pm_card_visa"), ("confirm", "true")])
                    .send()
                    .await;
                if res.map(|r| r.status().is_success()).unwrap_or(false) {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leaking_build_is_reported_leaking_and_a_clean_one_stays_ok() {
    let (leaky_dir, clean_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let leaky = Server::spawn(leaky_dir.path(), None, &["--fault", "leak=4096", "--admin-token", TOKEN]).await;
    let clean = Server::spawn(clean_dir.path(), None, &["--admin-token", TOKEN]).await;
    let client = reqwest::Client::new();
    let stop = Arc::new(AtomicBool::new(false));
    let (leaky_done, clean_done) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let loads = [drive(&leaky, stop.clone(), leaky_done.clone()), drive(&clean, stop.clone(), clean_done.clone())];

    let started = Instant::now();
    let mut detected = None;
    while started.elapsed() < DEADLINE {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let clean_state = state(&client, &clean).await;
        assert_eq!(clean_state["state"], "ok", "the clean build must stay ok: {clean_state}");
        let leaky_state = state(&client, &leaky).await;
        if leaky_state["state"] == "leaking" {
            detected = Some((started.elapsed(), leaky_state));
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let (after, report) = detected.unwrap_or_else(|| panic!("no leak reported within {DEADLINE:?}"));
    eprintln!(
        "memguard: leak=4096 reported leaking after {:.1} s ({} payments; clean build {} payments, stayed ok): {}",
        after.as_secs_f64(),
        leaky_done.load(Ordering::Relaxed),
        clean_done.load(Ordering::Relaxed),
        report["assessment"]["summary"]
    );
    assert!(report["assessment"]["bytes_per_second"].as_f64().unwrap() > 0.0);
    // Per payment the heap grows by about the leak (the detector's work unit is requests here).
    let per_work = report["assessment"]["bytes_per_work"].as_f64().unwrap();
    assert!((2048.0..16384.0).contains(&per_work), "bytes per request {per_work}");

    let metrics = client.get(format!("{}/metrics", leaky.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("memguard_leak_state{") && l.ends_with(" 2")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("paywarden_heap_allocated_bytes{")));
}

//! The memory guard end to end: under steady payment traffic, `serve --fault leak=4096` is
//! reported `leaking` at /admin/memory/leak-report (and on /metrics) within 60 s, the heap
//! diff names the injecting function, the MemoryLeak alert reaches a webhook receiver in
//! Alertmanager's format, and /debug/pprof/heap serves a profile that `go tool pprof` can
//! symbolize against the binary (its path and build id, file-relative addresses); the same
//! traffic without the fault stays `ok` with no alert. Both servers run side by side.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use std::io::Read as _;

use crate::receiver::{alert, Receiver};
use crate::server::Server;

const TOKEN: &str = "admin-token-for-tests-0123456789";
const RATE_PER_S: u64 = 150;
/// The bound: a 4 KiB-per-payment leak is `leaking` within 60 s.
const DEADLINE: Duration = Duration::from_secs(60);
/// How long the clean build is watched.
const CLEAN_RUN: Duration = Duration::from_secs(70);
/// The injecting function, as the heap diff must name it.
const LEAK_FN: &str = "paywarden_api::faults::leak_on_confirmed_payment";

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
    let _heavy = crate::HEAVY.lock().await;
    let (leaky_dir, clean_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let hook = Receiver::start().await;
    let leaky = Server::spawn(leaky_dir.path(), None, &["--fault", "leak=4096", "--admin-token", TOKEN, "--alert-webhook", &hook.url]).await;
    // The clean build carries the benign patterns: a 4 MiB cache that fills at 1 KiB per
    // payment (in about 27 s) and stays full, and a 2 MiB buffer filled and freed every 14 s.
    // (A cache that fills at a leak's pace for minutes is `suspect` until it levels off; the
    // crate's synthetic tests bound that case.)
    let clean = Server::spawn(clean_dir.path(), None, &["--admin-token", TOKEN, "--fault", "cache=4194304", "--fault", "sawtooth=2097152"]).await;
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
    // Keep the load on while the heap diff (profiles 10 s apart) names the site.
    let mut sites = serde_json::Value::Null;
    let diff_deadline = Instant::now() + Duration::from_secs(45);
    while Instant::now() < diff_deadline {
        let r = state(&client, &leaky).await;
        if r["sites"].as_array().is_some_and(|s| !s.is_empty()) {
            sites = r["sites"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let named = started.elapsed();
    // The clean build runs on with its cache full and its sawtooth cycling, staying ok.
    while started.elapsed() < CLEAN_RUN {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let clean_state = state(&client, &clean).await;
        assert_eq!(clean_state["state"], "ok", "the clean build must stay ok: {clean_state}");
    }
    let clean_alerts = admin(&client, &clean, "/admin/alerts").await;
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.await.unwrap();
    }
    let (after, report) = detected.unwrap_or_else(|| panic!("no leak reported within {DEADLINE:?}"));
    eprintln!(
        "memguard: leak=4096 reported leaking after {:.1} s, site named after {:.1} s ({} payments; clean build {} payments, stayed ok): {}",
        after.as_secs_f64(),
        named.as_secs_f64(),
        leaky_done.load(Ordering::Relaxed),
        clean_done.load(Ordering::Relaxed),
        report["assessment"]["summary"]
    );
    assert!(report["assessment"]["bytes_per_second"].as_f64().unwrap() > 0.0);
    // Per payment the heap grows by about the leak (the detector's work unit is requests here).
    let per_work = report["assessment"]["bytes_per_work"].as_f64().unwrap();
    assert!((2048.0..16384.0).contains(&per_work), "bytes per request {per_work}");

    // The heap diff names the injecting function first, growing at about 4 KiB x the rate.
    let top = &sites[0];
    assert_eq!(top["function"], LEAK_FN, "sites: {sites}");
    let rate = top["bytes_per_second"].as_f64().unwrap();
    let expected = (4096 * RATE_PER_S) as f64;
    assert!(rate > expected / 4.0 && rate < expected * 4.0, "site growth {rate} B/s, leak about {expected} B/s");
    assert!(top["stack"].as_array().unwrap().len() > 1, "the site comes with its callers: {top}");

    let metrics = client.get(format!("{}/metrics", leaky.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.lines().any(|l| l.starts_with("memguard_leak_state{") && l.ends_with(" 2")), "{metrics}");
    assert!(metrics.lines().any(|l| l.starts_with("paywarden_heap_allocated_bytes{")));
    // Every bounded structure reports its length and its limit, the guard's own included.
    for component in ["writer_queue", "store_readers", "idempotency_in_flight", "api_key_cache", "alert_events", "alerts_active", "alert_webhook_queue"] {
        let limit = metrics
            .lines()
            .find(|l| l.starts_with("paywarden_component_limit{") && l.contains(&format!("component=\"{component}\"")))
            .unwrap_or_else(|| panic!("no limit for {component}"));
        assert!(!limit.ends_with(" 0"), "{limit}");
        assert!(metrics.lines().any(|l| l.starts_with("paywarden_component_length{") && l.contains(&format!("component=\"{component}\""))));
    }

    // The alert: active at /admin/alerts, POSTed to the webhook once it fired, and again
    // (same fingerprint) with the site in its annotations.
    let alerts = admin(&client, &leaky, "/admin/alerts").await;
    let active = alerts["active"].as_array().unwrap();
    assert!(active.iter().any(|a| a["name"] == "MemoryLeak"), "{alerts}");
    let firing = hook
        .wait_for(Duration::from_secs(10), |b| alert(b, "MemoryLeak", "firing").is_some_and(|a| a["annotations"]["leak_site"] == LEAK_FN))
        .await
        .unwrap_or_else(|| panic!("no firing MemoryLeak naming {LEAK_FN} at the webhook: {:?}", hook.bodies()));
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    let a = alert(&firing, "MemoryLeak", "firing").unwrap();
    assert_eq!(a["labels"]["severity"], "critical");
    assert_eq!(a["labels"]["instance"], leaky.url.trim_start_matches("http://"));
    assert_eq!(a["endsAt"], "0001-01-01T00:00:00Z");
    let fingerprints: std::collections::HashSet<String> =
        hook.bodies().iter().filter_map(|b| alert(b, "MemoryLeak", "firing")).map(|a| a["fingerprint"].as_str().unwrap().to_string()).collect();
    assert_eq!(fingerprints.len(), 1, "one alert, however many messages");
    assert!(hook.bodies().len() <= 3, "de-duplicated: a firing message and at most one update per new site, not one per sample: {:?}", hook.bodies());

    // The clean build raised nothing.
    assert_eq!(clean_alerts["active"].as_array().map(Vec::len), Some(0), "{clean_alerts}");
    assert_eq!(clean_alerts["events"].as_array().map(Vec::len), Some(0), "{clean_alerts}");

    // /debug/pprof/heap: a gzipped pprof profile, symbolized offline (`go tool pprof BINARY
    // FILE`): it names the binary and its build id, and its samples have locations in it.
    let res = client.get(format!("{}/debug/pprof/heap", leaky.url)).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let gz = res.bytes().await.unwrap();
    assert_eq!(&gz[..2], &[0x1f, 0x8b], "gzip");
    let mut proto = Vec::new();
    flate2::read::GzDecoder::new(&gz[..]).read_to_end(&mut proto).unwrap();
    let profile = pprof::Profile::parse(&proto);
    // One mapping per loaded segment of the binary; the code is in one of them.
    let binary: Vec<&pprof::Mapping> = profile.mappings.iter().filter(|m| profile.string(m.filename) == crate::server::BIN).collect();
    assert!(!binary.is_empty(), "a mapping names {}: {:?}", crate::server::BIN, profile.mappings.iter().map(|m| profile.string(m.filename)).collect::<Vec<_>>());
    for m in &binary {
        let build_id = profile.string(m.build_id);
        assert!(build_id.len() >= 16 && build_id.bytes().all(|b| b.is_ascii_hexdigit()), "the binary's build id: {build_id:?}");
    }
    let in_binary = profile.location_mappings.iter().filter(|&&id| binary.iter().any(|m| m.id == id)).count();
    assert!(in_binary > 10, "the samples' frames lie in the binary: {in_binary} of {} locations", profile.location_mappings.len());
    let res = client.get(format!("{}/debug/pprof/heap", leaky.url)).bearer_auth(&leaky.key).send().await.unwrap();
    assert_eq!(res.status(), 401, "a merchant key never opens debug endpoints");
}

async fn admin(client: &reqwest::Client, srv: &Server, path: &str) -> serde_json::Value {
    client.get(format!("{}{path}", srv.url)).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap()
}

/// Just enough of pprof's protobuf (`profile.proto`) to read what a user relies on.
mod pprof {
    pub struct Mapping {
        pub id: u64,
        pub filename: u64,
        pub build_id: u64,
    }

    pub struct Profile {
        pub strings: Vec<String>,
        pub mappings: Vec<Mapping>,
        /// The mapping id of every location.
        pub location_mappings: Vec<u64>,
    }

    impl Profile {
        pub fn parse(buf: &[u8]) -> Profile {
            let mut p = Profile { strings: Vec::new(), mappings: Vec::new(), location_mappings: Vec::new() };
            for (field, value) in fields(buf) {
                match (field, value) {
                    (3, Value::Bytes(m)) => {
                        let mut mapping = Mapping { id: 0, filename: 0, build_id: 0 };
                        for f in fields(m) {
                            match f {
                                (1, Value::Varint(v)) => mapping.id = v,
                                (5, Value::Varint(v)) => mapping.filename = v,
                                (6, Value::Varint(v)) => mapping.build_id = v,
                                _ => {}
                            }
                        }
                        p.mappings.push(mapping);
                    }
                    (4, Value::Bytes(l)) => {
                        p.location_mappings.extend(fields(l).into_iter().filter_map(|f| match f {
                            (2, Value::Varint(v)) => Some(v),
                            _ => None,
                        }));
                    }
                    (6, Value::Bytes(s)) => p.strings.push(String::from_utf8(s.to_vec()).expect("UTF-8 string")),
                    _ => {}
                }
            }
            p
        }

        pub fn string(&self, index: u64) -> &str {
            self.strings.get(index as usize).map(String::as_str).unwrap_or("")
        }
    }

    pub enum Value<'a> {
        Varint(u64),
        Bytes(&'a [u8]),
        Fixed,
    }

    fn varint(buf: &[u8], at: &mut usize) -> u64 {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = buf[*at];
            *at += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                break;
            }
        }
        v
    }

    pub fn fields(buf: &[u8]) -> Vec<(u64, Value<'_>)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let key = varint(buf, &mut at);
            let value = match key & 7 {
                0 => Value::Varint(varint(buf, &mut at)),
                1 => {
                    at += 8;
                    Value::Fixed
                }
                2 => {
                    let len = varint(buf, &mut at) as usize;
                    at += len;
                    Value::Bytes(&buf[at - len..at])
                }
                5 => {
                    at += 4;
                    Value::Fixed
                }
                w => panic!("wire type {w} in a pprof profile"),
            };
            out.push((key >> 3, value));
        }
        out
    }
}

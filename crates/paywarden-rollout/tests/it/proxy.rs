//! The weighted proxy against small axum backends on loopback: the split follows the weights
//! and is counted per backend, route swaps take effect at once, limits answer 413/503/502/504,
//! retries happen only when safe, 5xx pass through, drain waits for in-flight requests, and
//! serve's shutdown lets in-flight requests finish within the grace period.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use paywarden_rollout::proxy::{Proxy, ProxyConfig, Route};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const SLOW: Duration = Duration::from_millis(500);

/// A backend that answers with its own name.
struct Upstream {
    addr: SocketAddr,
    st: Arc<UpState>,
}

struct UpState {
    name: &'static str,
    /// Requests seen.
    hits: AtomicUsize,
    /// `/slow` requests completed.
    slow_done: AtomicUsize,
}

impl Upstream {
    fn hits(&self) -> usize {
        self.st.hits.load(Ordering::SeqCst)
    }
}

/// `/slow`: sleeps 500 ms; `/fail`: 500; `/echo`: the request's headers as JSON, with a
/// hop-by-hop header in the answer; `/big`: 64 KiB; anything else: the name.
async fn upstream_handler(
    State(st): State<Arc<UpState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    st.hits.fetch_add(1, Ordering::SeqCst);
    match uri.path() {
        "/slow" => {
            tokio::time::sleep(SLOW).await;
            st.slow_done.fetch_add(1, Ordering::SeqCst);
            st.name.into_response()
        }
        "/fail" => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("boom from {}", st.name),
        )
            .into_response(),
        "/echo" => {
            let mut seen: HashMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("?").to_owned()))
                .collect();
            seen.insert(":method".into(), method.to_string());
            seen.insert(":uri".into(), uri.to_string());
            seen.insert(":body".into(), String::from_utf8_lossy(&body).into_owned());
            (
                [
                    ("connection", "x-private"),
                    ("x-private", "1"),
                    ("keep-alive", "timeout=5"),
                    ("x-kept", "yes"),
                ],
                serde_json::to_string(&seen).unwrap(),
            )
                .into_response()
        }
        "/big" => vec![b'x'; 64 * 1024].into_response(),
        _ => st.name.into_response(),
    }
}

async fn upstream(name: &'static str) -> Upstream {
    let st = Arc::new(UpState {
        name,
        hits: AtomicUsize::new(0),
        slow_done: AtomicUsize::new(0),
    });
    let app = axum::Router::new()
        .fallback(upstream_handler)
        .with_state(Arc::clone(&st));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Upstream { addr, st }
}

/// A backend that reads a request's head, then closes the connection without answering.
async fn dropper() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    if buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        s.fetch_add(1, Ordering::SeqCst);
                        return; // drops the socket, no answer
                    }
                }
            });
        }
    });
    (addr, seen)
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    addr
}

fn route(id: u64, addr: SocketAddr, weight: u32, label: &str) -> Route {
    Route {
        id,
        addr,
        weight,
        label: label.into(),
    }
}

struct Running {
    proxy: Proxy,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
}

impl Running {
    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

async fn start(cfg: ProxyConfig, grace: Duration) -> Running {
    let proxy = Proxy::new(cfg);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let p = proxy.clone();
    // Spawned: the serve future must be Send.
    let task = tokio::spawn(async move {
        p.serve(
            listener,
            async move {
                let _ = rx.await;
            },
            grace,
        )
        .await
    });
    Running {
        proxy,
        addr,
        stop: Some(tx),
        task,
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

fn version(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("paywarden-version")
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn split_follows_weights_and_is_counted() {
    let a = upstream("stable").await;
    let b = upstream("canary").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, a.addr, 9000, "stable"),
        route(2, b.addr, 1000, "canary"),
    ]);
    assert_eq!(run.proxy.routes().len(), 2);

    const WORKERS: usize = 20;
    const EACH: usize = 100;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..WORKERS {
        let c = client();
        let url = run.url("/v1/things?x=1");
        tasks.spawn(async move {
            let mut seen: HashMap<String, usize> = HashMap::new();
            for _ in 0..EACH {
                let resp = c.get(&url).send().await.unwrap();
                assert_eq!(resp.status(), 200);
                let v = version(&resp).expect("paywarden-version header");
                let body = resp.text().await.unwrap();
                assert_eq!(v, body, "the header names the backend that answered");
                *seen.entry(v).or_default() += 1;
            }
            seen
        });
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    while let Some(r) = tasks.join_next().await {
        for (k, n) in r.unwrap() {
            *seen.entry(k).or_default() += n;
        }
    }
    let total = WORKERS * EACH;
    let (na, nb) = (
        seen.get("stable").copied().unwrap_or(0),
        seen.get("canary").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, total);
    let share = nb as f64 / total as f64;
    // Binomial(2000, 0.1): sd ≈ 0.0067; ±0.03 is ~4.5 sd.
    assert!(
        (share - 0.10).abs() < 0.03,
        "canary share {share} ({seen:?})"
    );

    let sa = run.proxy.stats(1).unwrap();
    let sb = run.proxy.stats(2).unwrap();
    assert_eq!(sa.requests as usize, na);
    assert_eq!(sb.requests as usize, nb);
    assert_eq!((sa.errors, sb.errors), (0, 0));
    assert_eq!((sa.in_flight, sb.in_flight), (0, 0));
    assert_eq!(
        sa.latencies_ms.len(),
        na,
        "reservoir holds every sample below its size"
    );
    assert_eq!(sb.latencies_ms.len(), nb);
    assert!(sa.latencies_ms.iter().all(|&ms| ms > 0.0 && ms < 10_000.0));
    assert_eq!(
        (a.hits(), b.hits()),
        (na, nb),
        "backends saw what clients saw"
    );

    let t = run.proxy.totals();
    assert_eq!(t.requests as usize, total);
    assert_eq!((t.failed, t.retried, t.no_route, t.too_large), (0, 0, 0, 0));
    assert!(run.proxy.stats(3).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weight_zero_gets_nothing_and_swaps_take_effect() {
    let a = upstream("a").await;
    let b = upstream("b").await;
    let c = upstream("c").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, a.addr, 5000, "a"),
        route(2, b.addr, 5000, "b"),
        route(3, c.addr, 0, "c"),
    ]);

    // Background load across the swaps: never an error.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let (cl, url, stop) = (client(), run.url("/"), Arc::clone(&stop));
        load.spawn(async move {
            let mut n = 0usize;
            while !stop.load(Ordering::SeqCst) {
                let resp = cl.post(&url).body("x").send().await.unwrap();
                assert_eq!(resp.status(), 200);
                n += 1;
            }
            n
        });
    }

    let cl = client();
    for _ in 0..200 {
        let resp = cl.get(run.url("/")).send().await.unwrap();
        assert_ne!(version(&resp).as_deref(), Some("c"));
    }
    assert_eq!(c.hits(), 0, "weight 0 gets nothing");
    assert!(a.hits() > 0 && b.hits() > 0);

    // Swap mid-run: everything new goes to c.
    run.proxy.set_routes(vec![
        route(1, a.addr, 0, "a"),
        route(2, b.addr, 0, "b"),
        route(3, c.addr, 10_000, "c"),
    ]);
    let (ha, hb) = (a.hits(), b.hits());
    for _ in 0..100 {
        let resp = cl.get(run.url("/")).send().await.unwrap();
        assert_eq!(version(&resp).as_deref(), Some("c"));
    }
    // Requests in flight at the swap may still land on a or b (at most one per worker).
    assert!(a.hits() + b.hits() <= ha + hb + 4);

    // And back, with a removed altogether.
    run.proxy.set_routes(vec![route(2, b.addr, 10_000, "b")]);
    for _ in 0..50 {
        let resp = cl.get(run.url("/")).send().await.unwrap();
        assert_eq!(version(&resp).as_deref(), Some("b"));
    }
    assert_eq!(run.proxy.routes(), vec![route(2, b.addr, 10_000, "b")]);

    stop.store(true, Ordering::SeqCst);
    let mut n = 0;
    while let Some(r) = load.join_next().await {
        n += r.unwrap();
    }
    assert!(n > 0);
    let t = run.proxy.totals();
    assert_eq!((t.failed, t.retried), (0, 0));
    assert_eq!(t.requests as usize, 350 + n);
    // Stats stay for unrouted ids until forgotten.
    assert!(run.proxy.stats(1).is_some());
    run.proxy.forget(1);
    assert!(run.proxy.stats(1).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_route_is_503_and_big_body_is_413() {
    let a = upstream("a").await;
    let cfg = ProxyConfig {
        body_bytes_max: 1024,
        ..ProxyConfig::default()
    };
    let run = start(cfg, Duration::from_secs(1)).await;
    let cl = client();

    // No table at all, then only weight 0.
    for routes in [vec![], vec![route(1, a.addr, 0, "a")]] {
        run.proxy.set_routes(routes);
        let resp = cl
            .post(run.url("/v1/charges"))
            .body("amount=1")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers().get("retry-after").unwrap(), "1");
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "api_error");
    }
    assert_eq!(a.hits(), 0);

    run.proxy.set_routes(vec![route(1, a.addr, 10_000, "a")]);
    // Exactly the limit passes.
    let resp = cl
        .post(run.url("/"))
        .body(vec![b'a'; 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(a.hits(), 1);
    // Over it (Content-Length): 413, nothing upstream.
    let resp = cl
        .post(run.url("/"))
        .body(vec![b'a'; 1025])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    // Over it, chunked (no Content-Length): 413 too.
    let mut sock = tokio::net::TcpStream::connect(run.addr).await.unwrap();
    let chunk = vec![b'b'; 600];
    let mut req = b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..2 {
        req.extend_from_slice(b"258\r\n");
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    sock.write_all(&req).await.unwrap();
    let mut buf = [0u8; 12];
    sock.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"HTTP/1.1 413");
    assert_eq!(a.hits(), 1, "the backend never saw the big bodies");

    let t = run.proxy.totals();
    assert_eq!(
        (t.requests, t.no_route, t.too_large, t.failed),
        (5, 2, 2, 2)
    );
    assert_eq!(run.proxy.stats(1).unwrap().requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_errors_are_retried_even_for_posts() {
    let dead = closed_port();
    let ok = upstream("ok").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, dead, 9000, "dead"),
        route(2, ok.addr, 1000, "ok"),
    ]);
    let cl = client();
    for i in 0..20 {
        let resp = cl
            .post(run.url("/v1/payment_intents"))
            .body(format!("n={i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(version(&resp).as_deref(), Some("ok"));
    }
    assert_eq!(ok.hits(), 20);
    let sd = run.proxy.stats(1).unwrap();
    let t = run.proxy.totals();
    assert!(
        sd.errors >= 1,
        "with weight 9000 of 10000, some of 20 requests went to the dead backend"
    );
    assert_eq!(
        sd.errors, sd.requests,
        "every attempt on the dead backend is its error"
    );
    assert_eq!(
        t.retried, sd.errors,
        "each was retried once, on the healthy backend"
    );
    assert_eq!(run.proxy.stats(2).unwrap().errors, 0);
    assert_eq!(t.failed, 0);
    assert!(sd.latencies_ms.is_empty());
    assert_eq!(sd.in_flight, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sent_requests_are_retried_only_when_idempotent() {
    let (drop_addr, drop_seen) = dropper().await;
    let ok = upstream("ok").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, drop_addr, 9000, "dropper"),
        route(2, ok.addr, 1000, "ok"),
    ]);
    let cl = client();

    // POST without Idempotency-Key: a 502, never a second attempt.
    let mut bad = 0;
    for _ in 0..20 {
        let (d0, o0) = (drop_seen.load(Ordering::SeqCst), ok.hits());
        let resp = cl
            .post(run.url("/v1/charges"))
            .body("amount=100")
            .send()
            .await
            .unwrap();
        let (d1, o1) = (drop_seen.load(Ordering::SeqCst), ok.hits());
        if resp.status() == 502 {
            bad += 1;
            assert_eq!(
                (d1 - d0, o1 - o0),
                (1, 0),
                "seen once by the dropper, not retried"
            );
            let body: serde_json::Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["type"], "api_error");
            assert!(
                body["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("Idempotency-Key")
            );
        } else {
            assert_eq!(resp.status(), 200);
            assert_eq!(
                (d1 - d0, o1 - o0),
                (0, 1),
                "went straight to the healthy backend"
            );
        }
    }
    assert!(bad >= 1);
    assert_eq!(run.proxy.totals().retried, 0);
    assert_eq!(run.proxy.stats(1).unwrap().errors, bad);

    // The same with an Idempotency-Key: retried on the other backend.
    let mut retried = 0;
    for i in 0..20 {
        let d0 = drop_seen.load(Ordering::SeqCst);
        let resp = cl
            .post(run.url("/v1/charges"))
            .header("Idempotency-Key", format!("key-{i}"))
            .body("amount=100")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(version(&resp).as_deref(), Some("ok"));
        retried += drop_seen.load(Ordering::SeqCst) - d0;
    }
    assert!(retried >= 1);
    let t = run.proxy.totals();
    assert_eq!(t.retried as usize, retried);
    assert_eq!(
        run.proxy.stats(1).unwrap().errors as usize,
        bad as usize + retried
    );
    assert_eq!(t.failed, bad);
    assert_eq!(ok.hits(), 40 - bad as usize);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_500_passes_through_unretried() {
    let bad = upstream("bad").await;
    let good = upstream("good").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, bad.addr, 5000, "bad"),
        route(2, good.addr, 5000, "good"),
    ]);
    let cl = client();
    let mut fives = 0u64;
    for _ in 0..30 {
        // GET: idempotent, so only the 5xx rule stops a retry.
        let resp = cl.get(run.url("/fail")).send().await.unwrap();
        match version(&resp).as_deref() {
            Some("bad") => {
                assert_eq!(resp.status(), 500);
                assert_eq!(resp.text().await.unwrap(), "boom from bad");
                fives += 1;
            }
            Some("good") => {
                assert_eq!(resp.status(), 500);
                assert_eq!(resp.text().await.unwrap(), "boom from good");
                fives += 1;
            }
            other => panic!("unexpected version {other:?}"),
        }
    }
    assert_eq!(fives, 30);
    assert_eq!(bad.hits() + good.hits(), 30, "no retries");
    let (sb, sg) = (run.proxy.stats(1).unwrap(), run.proxy.stats(2).unwrap());
    assert_eq!(sb.errors as usize, bad.hits());
    assert_eq!(sg.errors as usize, good.hits());
    assert_eq!(
        sb.latencies_ms.len(),
        bad.hits(),
        "a 5xx answer is still a completed request"
    );
    let t = run.proxy.totals();
    assert_eq!((t.requests, t.failed, t.retried), (30, 30, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_waits_for_in_flight_requests() {
    let slow = upstream("slow").await;
    let fast = upstream("fast").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![
        route(1, slow.addr, 10_000, "slow"),
        route(2, fast.addr, 0, "fast"),
    ]);

    let cl = client();
    let url = run.url("/slow");
    let req = tokio::spawn(async move {
        let resp = cl.get(url).send().await.unwrap();
        (resp.status(), version(&resp))
    });
    let p = run.proxy.clone();
    wait_for(|| p.in_flight(1) == 1, "the request to be in flight").await;
    let t0 = Instant::now();
    run.proxy.set_routes(vec![
        route(1, slow.addr, 0, "slow"),
        route(2, fast.addr, 10_000, "fast"),
    ]);

    // New requests go elsewhere while it drains.
    let resp = client().get(run.url("/")).send().await.unwrap();
    assert_eq!(version(&resp).as_deref(), Some("fast"));

    assert!(
        !run.proxy.drain(1, Duration::from_millis(50)).await,
        "too short a timeout"
    );
    assert_eq!(slow.st.slow_done.load(Ordering::SeqCst), 0);

    // Spawned: the drain future must be Send.
    let p = run.proxy.clone();
    let drained = tokio::spawn(async move { p.drain(1, Duration::from_secs(5)).await })
        .await
        .unwrap();
    assert!(drained);
    assert!(
        t0.elapsed() >= SLOW - Duration::from_millis(100),
        "drain returned after {:?}",
        t0.elapsed()
    );
    assert_eq!(
        slow.st.slow_done.load(Ordering::SeqCst),
        1,
        "the backend finished first"
    );
    assert_eq!(run.proxy.in_flight(1), 0);
    let (status, v) = req.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(v.as_deref(), Some("slow"));
    assert_eq!(slow.hits(), 1);

    // Nothing in flight: at once. Unknown id: at once.
    assert!(run.proxy.drain(1, Duration::from_millis(1)).await);
    assert!(run.proxy.drain(99, Duration::from_millis(1)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_lets_in_flight_requests_finish() {
    let slow = upstream("slow").await;
    let mut run = start(ProxyConfig::default(), Duration::from_secs(5)).await;
    run.proxy
        .set_routes(vec![route(1, slow.addr, 10_000, "slow")]);

    // An idle keep-alive connection must not hold the shutdown up.
    let idle = client();
    assert_eq!(idle.get(run.url("/")).send().await.unwrap().status(), 200);

    let cl = client();
    let url = run.url("/slow");
    let req = tokio::spawn(async move { cl.get(url).send().await.map(|r| r.status()) });
    let p = run.proxy.clone();
    wait_for(|| p.in_flight(1) == 1, "the request to be in flight").await;

    let t0 = Instant::now();
    run.stop.take().unwrap().send(()).unwrap();
    let status = req
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(status, 200);
    tokio::time::timeout(Duration::from_secs(2), &mut run.task)
        .await
        .expect("serve returns")
        .unwrap()
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "serve waited for the idle connection"
    );
    assert!(
        tokio::net::TcpStream::connect(run.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_is_bounded_by_grace() {
    let slow = upstream("slow").await;
    let mut run = start(ProxyConfig::default(), Duration::from_millis(100)).await;
    run.proxy
        .set_routes(vec![route(1, slow.addr, 10_000, "slow")]);
    let cl = client();
    let url = run.url("/slow");
    let req = tokio::spawn(async move { cl.get(url).send().await.map(|r| r.status()) });
    let p = run.proxy.clone();
    wait_for(|| p.in_flight(1) == 1, "the request to be in flight").await;

    let t0 = Instant::now();
    run.stop.take().unwrap().send(()).unwrap();
    (&mut run.task).await.unwrap().unwrap();
    let took = t0.elapsed();
    assert!(
        took < Duration::from_millis(400),
        "serve took {took:?} with a 100 ms grace"
    );
    assert!(
        req.await.unwrap().is_err(),
        "the connection was closed after the grace"
    );
    // The in-flight guard went with the aborted connection.
    assert_eq!(run.proxy.in_flight(1), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_and_big_answers() {
    let slow = upstream("slow").await;
    let cfg = ProxyConfig {
        upstream_timeout: Duration::from_millis(150),
        response_bytes_max: 1024,
        ..ProxyConfig::default()
    };
    let run = start(cfg, Duration::from_secs(1)).await;
    run.proxy
        .set_routes(vec![route(1, slow.addr, 10_000, "slow")]);
    let cl = client();

    let t0 = Instant::now();
    let resp = cl.get(run.url("/slow")).send().await.unwrap();
    assert_eq!(resp.status(), 504);
    assert!(t0.elapsed() < SLOW);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    let resp = cl.get(run.url("/big")).send().await.unwrap();
    assert_eq!(resp.status(), 502);
    assert!(resp.text().await.unwrap().contains("size limit"));

    let s = run.proxy.stats(1).unwrap();
    assert_eq!((s.requests, s.errors), (2, 2));
    assert_eq!(slow.hits(), 2, "neither was retried");
    let t = run.proxy.totals();
    assert_eq!((t.failed, t.retried), (2, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwards_without_hop_by_hop_headers() {
    let a = upstream("a").await;
    let run = start(ProxyConfig::default(), Duration::from_secs(1)).await;
    run.proxy.set_routes(vec![route(1, a.addr, 10_000, "a")]);
    let cl = client();
    let resp = cl
        .put(run.url("/echo?q=1&r=2"))
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-secret")
        .header("x-secret", "s")
        .header("proxy-authorization", "Basic eA==")
        .header("te", "trailers")
        .header("idempotency-key", "k1")
        .header("authorization", "Bearer sk_test_1")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(version(&resp).as_deref(), Some("a"));
    assert_eq!(resp.headers().get("x-kept").unwrap(), "yes");
    assert!(
        resp.headers().get("x-private").is_none(),
        "named by the upstream's Connection"
    );
    assert!(resp.headers().get("keep-alive").is_none());
    let seen: HashMap<String, String> = resp.json().await.unwrap();
    assert_eq!(seen[":method"], "PUT");
    assert_eq!(seen[":uri"], "/echo?q=1&r=2");
    assert_eq!(seen[":body"], "hello");
    assert_eq!(seen["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen["idempotency-key"], "k1");
    assert_eq!(seen["authorization"], "Bearer sk_test_1");
    assert_eq!(seen["host"], run.addr.to_string());
    for h in ["x-secret", "proxy-authorization", "te", "transfer-encoding"] {
        assert!(!seen.contains_key(h), "{h} was forwarded: {seen:?}");
    }

    // HEAD: the upstream's Content-Length comes back, no body.
    let resp = cl.head(run.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers().get("content-length").unwrap(), "1");
    assert_eq!(version(&resp).as_deref(), Some("a"));
    assert!(resp.bytes().await.unwrap().is_empty());
    // The connection is still usable after it.
    assert_eq!(
        cl.get(run.url("/"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "a"
    );
}
